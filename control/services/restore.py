"""Rebuild a lost control service's clusters from the metadata copies its agents kept (docs/recovery.md).

A server started with ``--restore-from-agents`` on an empty database lets agents log in with
their existing credentials (provisionally: their verifiers come from the copies), collects the
copy each agent offers, keeps per cluster the newest whose signature verifies with the signing
key the operator gave (``--restore-key``: the lost server's ``metadata.key``), and rebuilds the
cluster's records from it. Running bricks and mounts are not touched: nothing is sent to the
agents but the usual hello answers and, later, the new metadata document.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from broker.messages import (
    BrickState,
    MetadataCopy,
    MetadataDocument,
    MetadataRefused,
    NodeState,
    check_metadata_signature,
    node_key,
)
from control.services import events
from control.services.metadata import MetadataError, verify
from control.store.models import Brick, Cluster, Device, Node, Volume
from control.store.models import database_proxy as db

log = logging.getLogger(__name__)

NOT_RESTORED = (
    "users, API tokens and sessions (create the first admin again: 'glusterctl user create')",
    "the join tokens (each restored cluster has a new one: 'glusterctl cluster token CLUSTER')",
    "task history and the event feed",
)


class RestoreError(Exception):
    """The restore cannot go on; the message says why and what to do."""


@dataclass
class Offer:
    node: str
    envelope: MetadataDocument
    document: dict[str, Any]


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        log.info("restore: %s", line)
        self.lines.append(line)


def check_empty() -> None:
    """Refuse to restore over a database that already holds a cluster's nodes, devices or volumes."""
    held = [
        name for name, model in (("nodes", Node), ("devices", Device), ("volumes", Volume)) if model.select().exists()
    ]
    if held:
        raise RestoreError(
            f"the database already holds {', '.join(held)}: --restore-from-agents needs an empty data directory "
            "(or an empty --db)"
        )


class AgentRestore:
    def __init__(self, public_key: str) -> None:
        self.public_key = public_key
        self.best: dict[str, Offer] = {}
        self.refused: list[str] = []
        self.first_offer_at: float | None = None
        self.done = threading.Event()
        self._logins: dict[tuple[str, str], str] = {}  # (cluster, node) -> verifier of the provisional login
        self._lock = threading.Lock()

    # ---- while collecting ----------------------------------------------------------------------
    def holds(self, cluster: str, node: str) -> bool:
        """True while hellos wait (a refusal would make the agent exit)."""
        return not self.done.is_set()

    def provisional_login(self, cluster: str, node: str, secret: str) -> bool:
        """A node login the database cannot check yet: let it in to offer its copy; checked once restored."""
        if self.done.is_set():
            return False
        with self._lock:
            self._logins[(cluster, node)] = node_key(secret)
        return True

    def offer(self, cluster: str, node: str, message: MetadataCopy) -> None:
        if self.done.is_set():
            return
        envelope = message.copy_
        if envelope is None:
            if message.header is not None:  # answering an earlier, ordinary presence: the whole copy follows ours
                log.info(
                    "restore: cluster %s node %s offered only the header of metadata version %d; waiting for the copy",
                    cluster,
                    node,
                    message.header.version,
                )
            else:
                log.info("restore: cluster %s node %s has no metadata copy", cluster, node)
            return
        with self._lock:
            best = self.best.get(cluster)
        if best is not None and envelope.version <= best.envelope.version and envelope.cluster == cluster:
            try:  # not newer than the best copy so far: its signature is checked (its header's, when it has one),
                # but it is not inflated or parsed
                check_metadata_signature(envelope.header() or envelope, self.public_key)
            except MetadataRefused as exc:
                self._refuse(cluster, node, envelope.version, str(exc))
                return
            log.info("restore: cluster %s node %s offered metadata version %d", cluster, node, envelope.version)
            return
        try:
            if envelope.cluster != cluster:
                raise MetadataError(f"it is cluster {envelope.cluster}'s")
            document = verify(envelope, self.public_key)
            if node not in {n.get("name") for n in document.get("nodes", [])}:
                raise MetadataError("the node is not in it")
        except MetadataError as exc:
            self._refuse(cluster, node, envelope.version, str(exc))
            return
        with self._lock:
            self.first_offer_at = self.first_offer_at or time.monotonic()
            best = self.best.get(cluster)
            if best is None or envelope.version > best.envelope.version:
                self.best[cluster] = Offer(node, envelope, document)
        log.info("restore: cluster %s node %s offered metadata version %d", cluster, node, envelope.version)

    def _refuse(self, cluster: str, node: str, version: int, reason: str) -> None:
        why = f"cluster {cluster} node {node}: copy version {version} refused: {reason}"
        log.warning("restore: %s", why)
        with self._lock:
            self.refused.append(why)

    def wait(self, settle: float, timeout: float) -> None:
        """Until ``settle`` seconds passed since the first usable copy (more agents offer theirs meanwhile)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            first_at = self.first_offer_at
            if first_at is not None and time.monotonic() - first_at >= settle:
                return
            time.sleep(0.2)
        if self.first_offer_at is None:
            refused = f"; refused: {'; '.join(self.refused[:5])}" if self.refused else ""
            raise RestoreError(
                f"no agent offered a metadata copy signed by the given key within {timeout:.0f}s{refused}: "
                "check that the agents reach this server's MQTT broker and that --restore-key is the lost "
                "server's metadata.key"
            )

    # ---- rebuilding ----------------------------------------------------------------------------
    def finish(self) -> Report:
        """Rebuild every cluster from its newest copy; the report says what came from where."""
        report = Report()
        with self._lock:
            offers = dict(self.best)
        with db.atomic():
            check_empty()
            for name, offer in sorted(offers.items()):
                counts = _rebuild(offer.document)
                report.add(
                    f"cluster {name}: restored from node {offer.node}, metadata version {offer.envelope.version} "
                    f"({counts})"
                )
                grants = offer.document.get("grants") or []
                if grants:
                    lost = ", ".join(f"{g['user']}: {g['grant']}" for g in grants)
                    report.add(f"cluster {name}: grants not restored (their users are not kept): {lost}")
        for line in self.refused:
            report.add(line)
        for item in NOT_RESTORED:
            report.add(f"not restored: {item}")
        self.done.set()
        return report

    def impostors(self) -> list[tuple[str, str]]:
        """Provisional logins whose credential is not the restored node's: their sessions must close."""
        out = []
        with self._lock:
            logins = dict(self._logins)
        for (cluster, node), verifier in sorted(logins.items()):
            row = Node.select(Node.credential_hash).join(Cluster).where((Cluster.name == cluster) & (Node.name == node))
            stored = next(iter(row), None)
            if (
                stored is None
                or not stored.credential_hash
                or not hmac.compare_digest(stored.credential_hash, verifier)
            ):
                out.append((cluster, node))
        return out


def _rebuild(doc: dict[str, Any]) -> str:
    name = str(doc["cluster"])
    cluster = Cluster.get_or_none(Cluster.name == name)
    if cluster is None:
        cluster = Cluster.create(name=name, join_secret=secrets.token_urlsafe(24))
    cluster.created_at = doc.get("created_at") or cluster.created_at
    cluster.metadata_version = int(doc["version"])
    cluster.save()
    for n in doc.get("nodes", []):
        Node.create(
            cluster=cluster,
            name=n["name"],
            state=NodeState.UNREACHABLE.value,  # until its agent says hello to this server
            agent_id=n.get("agent_id") or "",
            epoch=0,
            address=n.get("address") or "",
            hostname=n.get("hostname") or "",
            credential_hash=n.get("credential_hash"),
            created_at=n.get("created_at") or time.time(),
            facts={},
        )
    devices: dict[tuple[str, str], Device] = {}
    for d in doc.get("devices", []):
        devices[(d["node"], d["path"])] = Device.create(
            cluster=cluster,
            node_name=d["node"],
            path=d["path"],
            device=d.get("device") or "",
            state=d["state"],
            reason=d.get("reason") or "",
            total_bytes=d.get("total_bytes") or 0,
            free_bytes=d.get("free_bytes") or 0,
            created_at=d.get("created_at") or time.time(),
        )
    bricks = 0
    for v in doc.get("volumes", []):
        volume = Volume.create(
            id=v["id"],
            cluster=cluster,
            name=v["name"],
            type=v["type"],
            replica=v["replica"],
            arbiter=v["arbiter"],
            disperse=v["disperse"],
            redundancy=v["redundancy"],
            state=v["state"],
            stable_state=v.get("stable_state") or "",
            operation=v.get("operation") or "",
            concluded_operation=v.get("concluded_operation") or "",
            start_after_create=v.get("start_after_create", True),
            options=v.get("options") or {},
            auth_username=v["auth_username"],
            auth_password=v["auth_password"],
            size_bytes=v.get("size_bytes") or 0,
            created_at=v.get("created_at") or time.time(),
            updated_at=v.get("updated_at") or time.time(),
        )
        for b in v.get("bricks", []):
            device = devices.get(tuple(b["device"])) if b.get("device") else None
            Brick.create(
                volume=volume,
                index=b["index"],
                node_name=b["node"],
                path=b["path"],
                port=b["port"],
                device=device,
                state=b.get("state") or BrickState.OFFLINE.value,
                pid=b.get("pid"),
            )
            bricks += 1
    # one version above the copy's: agents keep the restored server's document as the newest
    events.record("cluster.restored", cluster=name, subject=name, version=int(doc["version"]))
    events.bump(name)
    return (
        f"{len(doc.get('nodes', []))} nodes, {len(devices)} devices, {len(doc.get('volumes', []))} volumes, "
        f"{bricks} bricks"
    )
