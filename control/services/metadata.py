"""A cluster's metadata as one signed, versioned document: what agents keep and a restore rebuilds from.

The document holds what a new control service needs to take over a running cluster: its nodes
(names, addresses, agent ids and the verifiers of their credentials, so enrolled agents log in
again), devices, and volumes with their bricks, ports, options, state and the volumes' own
login (the bricks need it). What never leaves the server: user passwords, API tokens, sessions
and the join token's secret (a restored cluster gets a new join token). Grants within the cluster
are listed by user name so a restore can say which it could not bring back (users are not kept).

The control service signs each document with its Ed25519 key (``DATA_DIR/metadata.key``, mode
0600); agents learn the public key at registration, pin it, and keep only documents it signed.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.messages import MetadataDocument, metadata_signed_bytes
from control.services import authz
from control.store.models import Brick, Cluster, Device, Grant, Node, Volume

log = logging.getLogger(__name__)

FORMAT = 1
KEY_FILE = "metadata.key"


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
    """The document of ``envelope`` if ``public_key`` signed it and it says what the envelope says."""
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key, validate=True))
        signature = base64.b64decode(envelope.signature, validate=True)
    except ValueError as exc:
        raise MetadataError(f"unusable key or signature: {exc}") from None
    try:
        key.verify(signature, metadata_signed_bytes(envelope.cluster, envelope.version, envelope.document))
    except InvalidSignature:
        raise MetadataError("the signature does not verify with the pinned key (forged, or another server's)") from None
    try:
        document = json.loads(envelope.document)
    except ValueError:
        raise MetadataError("the signed document is not JSON") from None
    if not isinstance(document, dict) or (document.get("cluster"), document.get("version")) != (
        envelope.cluster,
        envelope.version,
    ):
        raise MetadataError("the envelope's cluster or version differs from the signed document's")
    return document


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
    cluster, version = str(document["cluster"]), int(document["version"])
    signature = key.sign(metadata_signed_bytes(cluster, version, text))
    return MetadataDocument(
        cluster=cluster,
        version=version,
        issued_at=now or time.time(),
        document=text,
        key=public_key_text(key),
        signature=base64.b64encode(signature).decode(),
    )
