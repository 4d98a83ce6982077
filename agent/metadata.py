"""The cluster's signed metadata, as this node keeps it (docs/recovery.md).

The control service signs each version of the cluster's metadata; the agent pins the signing
key from its first registration that carries one (``STATE_DIR/metadata.pub``), keeps the last
KEEP documents that key verifies (``STATE_DIR/metadata/``, mode 0600) and refuses, with a log
line, a document that is forged, of another cluster, or not newer than the newest it kept. At
each online control presence the agent offers the newest one: its signed header (the version is
all a running server reads), or the whole document when a restoring server asks for copies.
"""

from __future__ import annotations

import logging
import os

from pydantic import ValidationError

from broker.messages import MetadataDocument, MetadataRefused, check_metadata_signature, verify_metadata

log = logging.getLogger(__name__)

KEEP = 5  # documents kept per node
KEY_FILE = "metadata.pub"
DIR_NAME = "metadata"


def _write_private(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class MetadataStore:
    def __init__(self, state_dir: str, cluster: str) -> None:
        self.cluster = cluster
        self.key_path = os.path.join(state_dir, KEY_FILE)
        self.dir = os.path.join(state_dir, DIR_NAME)

    # ---- the pinned key ------------------------------------------------------------------------
    def pinned(self) -> str | None:
        try:
            with open(self.key_path) as fh:
                return fh.read().strip() or None
        except FileNotFoundError:
            return None

    def pin(self, key: str) -> None:
        """Pin the control service's signing key the first time one is offered; a different one later is refused."""
        if not key:
            return
        pinned = self.pinned()
        if pinned is None:
            _write_private(self.key_path, (key + "\n").encode())
            log.info(
                "cluster %s: pinned the control service's metadata key %s... (%s)",
                self.cluster,
                key[:12],
                self.key_path,
            )
        elif pinned != key:
            log.warning(
                "cluster %s: the control service offers metadata key %s..., but %s... is pinned (%s): documents "
                "signed by the new key are refused; if the server's key was replaced on purpose, delete that file",
                self.cluster,
                key[:12],
                pinned[:12],
                self.key_path,
            )

    # ---- documents -------------------------------------------------------------------------------
    def _files(self) -> list[str]:
        try:
            names = [n for n in os.listdir(self.dir) if n.startswith("v") and n.endswith(".json")]
        except FileNotFoundError:
            return []
        return sorted(names)  # zero-padded versions: the newest last

    def newest(self) -> MetadataDocument | None:
        """The newest kept document whose digest and signature still verify with the pinned key (its content was
        checked when it was received; it is not inflated again here)."""
        key = self.pinned()
        for name in reversed(self._files()):
            path = os.path.join(self.dir, name)
            try:
                with open(path, "rb") as fh:
                    envelope = MetadataDocument.model_validate_json(fh.read())
                if key is not None:
                    check_metadata_signature(envelope, key)
                    return envelope
            except (OSError, ValidationError, MetadataRefused) as exc:
                log.warning("cluster %s: kept metadata %s is unusable (%s); skipped", self.cluster, path, exc)
        return None

    def receive(self, payload: bytes) -> bool:
        """Verify and keep a document from the metadata topic; False (and a log line) when refused."""
        try:
            envelope = MetadataDocument.model_validate_json(payload)
        except ValidationError as exc:
            log.warning(
                "cluster %s: malformed metadata document refused: %s", self.cluster, " ".join(str(exc).split())[:300]
            )
            return False
        key = self.pinned()
        if key is None:
            log.warning(
                "cluster %s: metadata version %d refused: no signing key pinned yet", self.cluster, envelope.version
            )
            return False
        if envelope.cluster != self.cluster:
            log.warning("metadata of cluster %s refused: this node is in cluster %s", envelope.cluster, self.cluster)
            return False
        try:
            verify_metadata(envelope, key)
        except MetadataRefused as exc:
            log.warning("cluster %s: metadata version %d refused: %s", self.cluster, envelope.version, exc)
            return False
        newest = self.newest()
        if newest is not None and envelope.version <= newest.version:
            if envelope.version < newest.version or (envelope.encoding, envelope.document) != (
                newest.encoding,
                newest.document,
            ):
                log.warning(
                    "cluster %s: metadata version %d refused: version %d is kept already (an older or replayed document)",
                    self.cluster,
                    envelope.version,
                    newest.version,
                )
                return False
            return True  # the same document again (retained, redelivered)
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        _write_private(os.path.join(self.dir, f"v{envelope.version:015d}.json"), payload)
        for old in self._files()[:-KEEP]:
            os.unlink(os.path.join(self.dir, old))
        log.info("cluster %s: metadata version %d verified and kept", self.cluster, envelope.version)
        return True
