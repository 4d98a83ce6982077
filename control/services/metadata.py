"""A cluster's metadata as one signed, versioned document: what agents keep and a restore rebuilds from.

The document holds what a new control service needs to take over a running cluster: its nodes
(names, addresses, agent ids and the verifiers of their credentials, so enrolled agents log in
again), devices, and volumes with their bricks, ports, options, state and the volumes' own
login (the bricks need it). What never leaves the server: user passwords, API tokens, sessions
and the join token's secret (a restored cluster gets a new join token). Grants within the cluster
are listed by user name so a restore can say which it could not bring back (users are not kept).

The control service signs each document with its Ed25519 key (``DATA_DIR/metadata.key``, mode
0600); agents learn the public key at registration, pin it, and keep only documents it signed.
Documents go out zlib-compressed (a 10,000-node cluster's is 1.2-1.7 MiB so; docs/recovery.md): the
signature covers the sha256 of the compressed text and its encoding, so a copy's small header proves its
version without the document (what agents offer a server that is not restoring), and readers check the
digest and the signature before inflating.

Only the cluster's oldest ``copies`` nodes (the keepers, ``--metadata-copies``) keep copies: the
registration answer tells each agent whether to subscribe to the document, so a version goes to
a few nodes, not to every node of a large cluster. When a keeper is removed, the next oldest node
is told to keep copies (task ``metadata.keep``).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

import peewee as pw
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError

from broker.messages import (
    METADATA_MAX_BYTES,
    MetadataCopy,
    MetadataDocument,
    MetadataRefused,
    TaskKind,
    check_metadata_signature,
    encode_metadata,
    metadata_digest,
    metadata_digest_signed_bytes,
    verify_metadata,
)
from broker.topics import Topics
from control.services import authz, events
from control.store.db import first, locked
from control.store.models import Brick, Cluster, ControlSetting, Device, Grant, Node, Volume
from control.store.models import database_proxy as db

if TYPE_CHECKING:
    from control.services.tasks import TaskEngine

log = logging.getLogger(__name__)

FORMAT = 1
KEY_FILE = "metadata.key"
DEBOUNCE_SECONDS = 0.5  # a burst of changes (a volume create) goes out as one document, this long after the last
CHECK_INTERVAL = 5.0  # and every this often the versions are compared anyway (a change whose event came early)
# every keeper receives each version: after publishing one, a cluster's next waits until its fan-out (bytes x
# keepers) would have taken this long at FANOUT_BYTES_PER_SECOND, at most FANOUT_PAUSE_MAX seconds. A few
# keepers never wait; with --metadata-copies in the thousands a version goes out a minute, not per debounce.
FANOUT_BYTES_PER_SECOND = 50e6
FANOUT_PAUSE_MAX = 60.0
DEFAULT_COPIES = 16  # nodes per cluster that keep copies (--metadata-copies)
# a cluster's keepers are remembered this long (one read per cluster, not per hello): a node removed through
# another server (docs/ha.md) is noticed after at most this, a removal through this one at once
KEEPERS_TTL = 10.0


class MetadataError(Exception):
    """A document or key that cannot be used; the message says why."""


# ---- the signing key -------------------------------------------------------------------------
def load_key(path: str) -> Ed25519PrivateKey:
    """The private key in ``path`` (PEM, PKCS#8); MetadataError when it is not one."""
    try:
        with open(path, "rb") as fh:
            key = serialization.load_pem_private_key(fh.read(), password=None)
    except OSError as exc:
        raise MetadataError(f"cannot read the metadata signing key {path}: {exc.strerror}") from None
    except ValueError:
        raise MetadataError(f"{path} is not a PEM private key (expected the server's {KEY_FILE})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise MetadataError(f"{path} is not an Ed25519 key (expected the server's {KEY_FILE})")
    return key


def save_key(path: str, key: Ed25519PrivateKey) -> None:
    """Write ``key`` to ``path`` with mode 0600 (refusing to overwrite)."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def load_or_create_key(data_dir: str) -> Ed25519PrivateKey:
    """The server's signing key, made once in the data dir."""
    path = os.path.join(data_dir, KEY_FILE)
    if not os.path.exists(path):
        save_key(path, Ed25519PrivateKey.generate())
        log.info("made the metadata signing key %s: keep a copy off this machine (docs/recovery.md)", path)
    return load_key(path)


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public key as base64 of its 32 raw bytes (what Registration carries and agents pin)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def verify(envelope: MetadataDocument, public_key: str) -> dict[str, Any]:
    """The document of ``envelope`` if ``public_key`` signed it (MetadataError says why not)."""
    try:
        return verify_metadata(envelope, public_key)
    except MetadataRefused as exc:
        raise MetadataError(str(exc)) from None


# ---- the document ----------------------------------------------------------------------------
def snapshot(cluster: Cluster) -> dict[str, Any]:
    """The cluster's metadata document (read in one transaction by the caller for a consistent view)."""
    nodes = [
        {
            "name": n.name,
            "address": n.address,
            "hostname": n.hostname,
            "agent_id": n.agent_id,
            # sha256 of the node's secret: lets the node log in to a restored server; see docs/recovery.md
            "credential_hash": n.credential_hash,
            "created_at": n.created_at,
        }
        for n in Node.select().where(Node.cluster == cluster).order_by(Node.name)
    ]
    devices = [
        {
            "node": d.node_name,
            "path": d.path,
            "device": d.device,
            "state": d.state,
            "reason": d.reason,
            "total_bytes": d.total_bytes,
            "free_bytes": d.free_bytes,
            "created_at": d.created_at,
        }
        for d in Device.select().where(Device.cluster == cluster).order_by(Device.node_name, Device.path)
    ]
    device_keys = {d.id: (d.node_name, d.path) for d in Device.select().where(Device.cluster == cluster)}
    volumes = []
    for v in Volume.select().where(Volume.cluster == cluster).order_by(Volume.name):
        bricks = [
            {
                "index": b.index,
                "node": b.node_name,
                "path": b.path,
                "port": b.port,
                "device": list(device_keys[b.device_id]) if b.device_id in device_keys else None,
                "state": b.state,
                "pid": b.pid,
            }
            for b in Brick.select().where(Brick.volume == v).order_by(Brick.index)
        ]
        volumes.append(
            {
                "id": v.id,
                "name": v.name,
                "type": v.type,
                "replica": v.replica,
                "arbiter": v.arbiter,
                "disperse": v.disperse,
                "redundancy": v.redundancy,
                "state": v.state,
                "stable_state": v.stable_state,
                "operation": v.operation,
                "concluded_operation": v.concluded_operation,
                "start_after_create": v.start_after_create,
                "options": v.options or {},
                "auth_username": v.auth_username,
                "auth_password": v.auth_password,
                "size_bytes": v.size_bytes,
                "created_at": v.created_at,
                "updated_at": v.updated_at,
                "bricks": bricks,
            }
        )
    grants = []
    for g in Grant.select().where(Grant.cluster == cluster):
        held = authz.held(g)
        if held is not None:
            grants.append({"user": g.user.name, "grant": str(held)})
    return {
        "format": FORMAT,
        "cluster": cluster.name,
        "version": cluster.metadata_version,
        "created_at": cluster.created_at,
        "nodes": nodes,
        "devices": devices,
        "volumes": volumes,
        "grants": sorted(grants, key=lambda g: (g["user"], g["grant"])),
    }


def sign(document: dict[str, Any], key: Ed25519PrivateKey, now: float | None = None) -> MetadataDocument:
    """The signed envelope of ``document``."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    encoding, sent = encode_metadata(text)
    cluster, version, digest = str(document["cluster"]), int(document["version"]), metadata_digest(sent)
    signature = key.sign(metadata_digest_signed_bytes(cluster, version, encoding, digest))
    return MetadataDocument(
        cluster=cluster,
        version=version,
        issued_at=now or time.time(),
        encoding=encoding,
        digest=digest,
        document=sent,
        key=public_key_text(key),
        signature=base64.b64encode(signature).decode(),
    )


# ---- one key for every server of the control plane ----------------------------------------------
SHARED_KEY = "metadata_key"


def check_shared_key(key: Ed25519PrivateKey) -> None:
    """The first server records its key's public half in the database; every later one must sign with the same
    key (agents pin the first key they see and refuse documents signed by another): MetadataError if not."""
    text = public_key_text(key)
    for _ in range(2):  # two first servers at once: the slower one's insert fails, and it reads the other's
        try:
            with db.atomic():
                row = ControlSetting.get_or_none(ControlSetting.name == SHARED_KEY)
                if row is None:
                    ControlSetting.create(name=SHARED_KEY, value=text)
                    return
        except pw.IntegrityError:
            continue
        if row.value != text:
            raise MetadataError(
                f"this server's metadata signing key ({KEY_FILE} in its data directory) is not the key the other "
                "servers of this database sign with: copy DATA_DIR/metadata.key from one of them into this "
                "server's data directory (or start it once with --restore-key FILE); see docs/ha.md"
            )
        return


# ---- publishing ----------------------------------------------------------------------------
class Publisher(Protocol):
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None: ...


def current(cluster_name: str) -> dict[str, Any] | None:
    """The cluster's document read in one transaction; a cluster never versioned gets version 1 first."""
    with db.atomic():
        cluster = first(locked(Cluster.select().where(Cluster.name == cluster_name)))
        if cluster is None:
            return None
        if cluster.metadata_version < 1:  # made before versions existed
            events.bump(cluster.name)
            cluster = Cluster.get_by_id(cluster.id)
        return snapshot(cluster)


class MetadataPublisher:
    """Publishes each cluster's signed document (retained) at start and, debounced, after each change."""

    def __init__(
        self,
        topics: Topics,
        publisher: Publisher,
        key: Ed25519PrivateKey,
        copies: int = DEFAULT_COPIES,
        engine: TaskEngine | None = None,
    ) -> None:
        self.topics, self.publisher, self.key = topics, publisher, key
        self.copies, self.engine = copies, engine
        self.public_key = public_key_text(key)
        self._keepers: dict[str, tuple[float, frozenset[str]]] = {}  # cluster -> (when read, its keepers)
        self._removed_from: set[str] = set()  # clusters that lost a node since the loop last looked
        self._published: dict[str, int] = {}  # cluster -> version last published
        self._too_large: dict[str, int] = {}  # cluster -> version found over the size limit (logged once)
        self._next_at: dict[str, float] = {}  # cluster -> monotonic time before which its next version waits
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._paused = False
        self._thread: threading.Thread | None = None
        self._unsubscribe = events.subscribe(self._on_event)

    def start(self, paused: bool = False) -> None:
        """Start the loop; ``paused`` (a restore): nothing goes out until ``resume``."""
        self._paused = paused
        self._thread = threading.Thread(target=self._loop, name="metadata-publisher", daemon=True)
        self._thread.start()

    def pause(self) -> None:
        """Publish nothing until ``resume`` (another server leads)."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self.republish_all()

    def stop(self) -> None:
        self._unsubscribe()
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def republish_all(self) -> None:
        """Publish every cluster's document again (after a broker reconnect: its retained copy may be gone)."""
        self._published.clear()
        self._next_at.clear()
        self._wake.set()

    def offered(self, cluster: str, node: str, message: MetadataCopy) -> bool:
        """An agent's kept copy (its header, offered at each online presence): when its version is above the
        database's (the server was restored from an older backup), move the version past it so agents keep this
        server's documents again, and a later restore from the agents cannot pick a copy this database no longer
        matches.
        """
        envelope = message.signed_header()
        if envelope is None or envelope.cluster != cluster:
            return False
        try:  # only a copy this key signed counts; its version is all that is read (from its header when it has one)
            check_metadata_signature(envelope, self.public_key)
        except MetadataRefused:
            return False
        with db.atomic():
            row = first(locked(Cluster.select().where(Cluster.name == cluster)))
            if row is None or row.metadata_version >= envelope.version:
                return False
            before = row.metadata_version
            Cluster.update(metadata_version=envelope.version + 1).where(Cluster.id == row.id).execute()
        log.warning(
            "cluster %s: node %s keeps metadata version %d, newer than this server's %d (restored from an older "
            "backup?): the metadata now has version %d, and the agents keep it",
            cluster,
            node,
            envelope.version,
            before,
            envelope.version + 1,
        )
        self._wake.set()
        return True

    def keeps(self, cluster: str, node: str) -> bool:
        """Whether ``node`` is one of the cluster's keepers: its ``copies`` oldest nodes (the registration answer).

        Node ids only grow, so a node that enrols later is never a keeper of a cluster that has ``copies`` nodes
        already; a smaller cluster is read again at each hello (every node of it keeps copies).
        """
        now = time.monotonic()
        with self._lock:
            known = self._keepers.get(cluster)
        if known is not None and now - known[0] < KEEPERS_TTL:
            return node in known[1]
        names = self._oldest(cluster)
        if len(names) < self.copies:
            return True
        with self._lock:
            self._keepers[cluster] = (now, frozenset(names))
        return node in names

    def _oldest(self, cluster: str) -> list[str]:
        query = Node.select(Node.name).join(Cluster).where(Cluster.name == cluster).order_by(Node.id)
        return [node.name for node in query.limit(self.copies)]

    def _promote(self, cluster: str) -> None:
        """A node left ``cluster``: the oldest ``copies`` nodes keep copies again (one task, to the last of them:
        whether the node removed kept copies is not known here, and a node told twice subscribes once)."""
        names = self._oldest(cluster)
        if len(names) < self.copies or self.engine is None:
            return  # every node keeps copies already
        row = Cluster.get_or_none(Cluster.name == cluster)
        if row is None:
            return
        task = self.engine.submit(row, names[-1], TaskKind.METADATA_KEEP.value, {"keep": True})
        log.info(
            "cluster %s: a node was removed; node %s keeps metadata copies now (task %s)", cluster, names[-1], task.id
        )

    def _on_event(self, event: object) -> None:
        if getattr(event, "kind", "") == "node.removed":
            cluster = str(getattr(event, "cluster", ""))
            with self._lock:
                self._keepers.pop(cluster, None)
                self._removed_from.add(cluster)
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            woke = self._wake.wait(CHECK_INTERVAL)
            if self._stop.is_set():
                return
            if woke:  # let the burst end and its transaction commit
                self._wake.clear()
                while self._wake.wait(DEBOUNCE_SECONDS) and not self._stop.is_set():
                    self._wake.clear()
            with self._lock:
                lost, self._removed_from = self._removed_from, set()
            for cluster in sorted(lost):  # a removal through this server, led or not
                try:
                    self._promote(cluster)
                except Exception:
                    log.exception("cluster %s: could not name the next node to keep metadata copies", cluster)
            if self._paused:
                continue
            try:
                self.publish_changed()
            except Exception:
                log.exception("publishing cluster metadata failed; retried in %.0fs", CHECK_INTERVAL)

    def publish_changed(self) -> int:
        """Publish the document of each cluster whose version differs from the last published; the count."""
        count = 0
        versions = {c.name: c.metadata_version for c in Cluster.select(Cluster.name, Cluster.metadata_version)}
        for name in sorted(set(self._published) - set(versions)):  # deleted clusters: clear their document
            self.publisher.publish(self.topics.cluster_metadata(name), b"", qos=1, retain=True)
            del self._published[name]
            log.info("cluster %s: metadata document cleared (cluster deleted)", name)
        for name, version in sorted(versions.items()):
            if self._published.get(name) == version or time.monotonic() < self._next_at.get(name, 0.0):
                continue  # published, or its last version's fan-out still counts (checked again every CHECK_INTERVAL)
            document = current(name)
            if document is None:
                continue
            try:
                envelope = sign(document, self.key)
            except ValidationError:  # the document alone is over the limit: as below, without a traceback
                envelope = None
            payload = envelope.model_dump_json().encode() if envelope is not None else b""
            if envelope is None or len(payload) > METADATA_MAX_BYTES:
                if self._too_large.get(name) == document["version"]:
                    continue
                self._too_large[name] = document["version"]
                log.error(
                    "cluster %s: metadata document version %d is over the limit of %d bytes (%d nodes); not published",
                    name,
                    document["version"],
                    METADATA_MAX_BYTES,
                    len(document.get("nodes", [])),
                )
                continue
            self.publisher.publish(self.topics.cluster_metadata(name), payload, qos=1, retain=True)
            self._published[name] = envelope.version
            fanout = len(payload) * min(self.copies, len(document.get("nodes", [])))
            self._next_at[name] = time.monotonic() + min(FANOUT_PAUSE_MAX, fanout / FANOUT_BYTES_PER_SECOND)
            log.info(
                "cluster %s: metadata version %d published (%d bytes, %s)",
                name,
                envelope.version,
                len(payload),
                envelope.encoding.value or "plain",
            )
            count += 1
        return count
