"""Payloads exchanged over MQTT (JSON), the enums they use and the join-token helpers.

Both sides validate what they receive with these models (invariant 5 of the design); a
payload that fails validation is logged with its sender and dropped.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import re
import secrets
import time
import zlib
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MAX_PAYLOAD_BYTES = 256 * 1024
# the metadata topics only (the retained document and the agents' copies): a 10,000-node cluster's document,
# compressed, is 1.2-1.7 MiB (docs/recovery.md); every other payload stays under MAX_PAYLOAD_BYTES
METADATA_MAX_BYTES = 4 * 1024 * 1024
# a compressed document is inflated to at most this many bytes (a small payload cannot balloon a reader's memory)
METADATA_MAX_TEXT_BYTES = 64 * 1024 * 1024

NAME_RULE = "1-64 characters: letters, digits, '-' and '_', starting with a letter or digit"
NODE_NAME_RULE = (
    "a host name: 1-253 characters, letters, digits, '-' and '.', starting and ending with a letter or digit"
)
CLUSTER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
USER_NAME_RE = CLUSTER_NAME_RE
NODE_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def check_name(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid cluster/user/volume/node name, else raise ValueError saying what is allowed."""
    if kind == "node":
        if not NODE_NAME_RE.match(value or "") or ".." in value:
            raise ValueError(f"invalid node name {value!r}: use {NODE_NAME_RULE}")
        return value
    if not CLUSTER_NAME_RE.match(value or ""):
        raise ValueError(f"invalid {kind} name {value!r}: use {NAME_RULE}")
    return value


class NodeState(str, enum.Enum):
    ONLINE = "Online"
    UNREACHABLE = "Unreachable"


class BrickState(str, enum.Enum):
    """A brick's (or a self-heal daemon's) process, as its node reports it."""

    ONLINE = "Online"
    OFFLINE = "Offline"
    LOST = "Lost"  # a brick whose node was removed with --force

    @classmethod
    def of(cls, online: bool) -> BrickState:
        return cls.ONLINE if online else cls.OFFLINE


class TaskState(str, enum.Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    STARTING = "STARTING"
    STOPPING = "STOPPING"
    DONE = "DONE"
    FAILED = "FAILED"

    @property
    def final(self) -> bool:
        return self in FINAL_TASK_STATES


ACTIVE_TASK_STATES = (TaskState.RUNNING, TaskState.STARTING, TaskState.STOPPING)

# One transition table for tasks: from-state -> allowed next states.
TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.QUEUED: frozenset({*ACTIVE_TASK_STATES, TaskState.DONE, TaskState.FAILED}),
    **{s: frozenset({*ACTIVE_TASK_STATES, TaskState.DONE, TaskState.FAILED}) for s in ACTIVE_TASK_STATES},
    TaskState.DONE: frozenset(),
    TaskState.FAILED: frozenset(),
}
# Task states after which nothing more happens to a task: those the table leads nowhere from.
FINAL_TASK_STATES = frozenset(state for state, following in TASK_TRANSITIONS.items() if not following)


class VolumeState(str, enum.Enum):
    """A volume's state: the intermediate and final states of each operation (seen on the event stream)."""

    CREATING = "Creating"
    CREATED = "Created"
    CREATE_FAILED = "CreateFailed"
    STARTING = "Starting"
    STARTED = "Started"
    START_FAILED = "StartFailed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    STOP_FAILED = "StopFailed"
    DELETING = "Deleting"
    DELETE_FAILED = "DeleteFailed"
    EXPANDING = "Expanding"
    EXPAND_FAILED = "ExpandFailed"
    REPLACING = "Replacing"  # a brick is being replaced (replace-brick); back to the previous state when done
    REPLACE_FAILED = "ReplaceFailed"

    @property
    def failed(self) -> bool:
        return self.value.endswith("Failed")


# not a VolumeState: the volume is gone (its last volume.state event, or a 404 from REST)
VOLUME_DELETED = "Deleted"

# States a volume rests in (no operation running); reset-state takes a stuck volume back to the last one it was in.
STABLE_VOLUME_STATES = frozenset({VolumeState.CREATED, VolumeState.STARTED, VolumeState.STOPPED})


class TaskKind(str, enum.Enum):
    NODE_PROBE = "node.probe"
    DEVICE_ADD = "device.add"
    VOLUME_CREATE = "volume.create"
    VOLUME_START = "volume.start"
    VOLUME_STOP = "volume.stop"
    VOLUME_DELETE = "volume.delete"
    VOLUME_VOLFILES = "volume.volfiles"  # the node's complete volfile set of a volume: store, serve, notify
    VOLUME_HEAL = "volume.heal"  # heal info / split-brain / summary through glfsheal, or an index heal
    VOLUME_EXPAND = "volume.expand"  # prepare (and start) a node's new bricks of a growing volume
    VOLUME_REBALANCE = "volume.rebalance"  # start, stop or read the node's rebalance process
    VOLUME_REPLACE_BRICK = "volume.replace-brick"  # stop a replaced brick; prepare and start the one taking its place
    METADATA_KEEP = "metadata.keep"  # start (or stop) keeping the cluster's metadata copies


class RebalanceState(str, enum.Enum):
    """A node's rebalance process, as dht reports it (GF_DEFRAG_STATUS_*, fix-layout or not)."""

    NOT_STARTED = "not started"
    IN_PROGRESS = "in progress"
    STOPPED = "stopped"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        return self in (RebalanceState.STOPPED, RebalanceState.COMPLETED, RebalanceState.FAILED)


class Health(str, enum.Enum):
    """A volume's health beside its state: served by all its bricks, by some, or not at all."""

    HEALTHY = "Healthy"
    DEGRADED = "Degraded"
    DOWN = "Down"


class _Msg(BaseModel):
    model_config = ConfigDict(extra="ignore")


class NodeFacts(_Msg):
    hostname: str = Field(default="", max_length=255)
    address: str = Field(default="", max_length=255)
    agent_version: str = Field(default="", max_length=32)
    glusterfs_version: str | None = Field(default=None, max_length=64)
    kernel: str = Field(default="", max_length=255)
    uptime_seconds: float | None = None
    heartbeat_interval: float | None = None
    volfile_port: int | None = Field(default=None, ge=0, le=65535)  # the agent's volfile server (TCP)


class Hello(_Msg):
    """Agent -> control, after every connect: who I am, and proof of the right to be that node.

    An enrolment hello (``node_secret`` set) comes from the cluster's enrolment identity:
    ``proof`` is keyed with the join token's secret (``join_proof``) and ``node_secret`` is the
    secret the agent made for itself, its credential from then on. Any other hello comes from
    the node's own identity: ``proof`` is keyed with the node key (``node_proof``), which the
    join token's holders do not know. A node certificate can stand in for the join token at
    enrolment (``certificate``, ``signature``). ``nonce`` is echoed in the Registration so that the agent
    can tell the answer to its own hello from one to someone else's.
    """

    agent_id: str = Field(min_length=8, max_length=64)
    epoch: int = Field(ge=1)
    proof: str = Field(min_length=64, max_length=64)
    nonce: str = Field(default="", max_length=64)
    node_secret: str | None = Field(default=None, min_length=32, max_length=128)
    # enrolment with a node certificate instead of the join token: the certificate (PEM, issued by
    # the control service's CA for this node) and a signature with its key over
    # ``certificate_enrolment_message``; ``proof`` is then the certificate's SHA-256 (hex)
    certificate: str | None = Field(default=None, max_length=8192)
    signature: str = Field(default="", max_length=1024)
    facts: NodeFacts = NodeFacts()


class Registration(_Msg):
    """Control -> agent, the answer to a Hello (``nonce`` and ``epoch`` are the hello's)."""

    accepted: bool
    epoch: int
    nonce: str = ""
    reason: str = ""
    # the control service's metadata signing key (Ed25519, base64 of the 32 raw bytes): agents pin it
    metadata_key: str = Field(default="", max_length=64)
    # accepted answers: whether this node keeps copies of the cluster's metadata (subscribes to its topic);
    # only the cluster's oldest --metadata-copies nodes do, so a version is not sent to every node
    keep_metadata: bool = True


class Presence(_Msg):
    """Agent's retained presence; its last-will has the same shape with state 'offline'."""

    state: str = Field(pattern="^(online|offline)$")
    epoch: int = Field(ge=1)
    at: float = 0.0


class ControlPresence(_Msg):
    state: str = Field(pattern="^(online|offline)$")
    instance: str = ""
    at: float = 0.0
    # "copies": the server is restoring and wants every agent's full metadata copy; "" (any other server):
    # the copies' signed headers are enough (MetadataCopy)
    want: str = Field(default="", pattern="^(copies)?$")


class BrickReport(_Msg):
    volume_id: str
    index: int = Field(ge=0)
    port: int = 0
    pid: int | None = None
    online: bool
    # statvfs of the brick path (None: not measured, e.g. an older agent or a missing directory);
    # free is the filesystem's free blocks, as gluster-prometheus reports it, and used = total - free
    total_bytes: int | None = Field(default=None, ge=0)
    free_bytes: int | None = Field(default=None, ge=0)
    used_bytes: int | None = Field(default=None, ge=0)
    inodes_total: int | None = Field(default=None, ge=0)
    inodes_free: int | None = Field(default=None, ge=0)
    inodes_used: int | None = Field(default=None, ge=0)
    fsid: str = Field(default="", max_length=32)  # which filesystem: bricks sharing one are counted once per node


class ShdReport(_Msg):
    volume_id: str
    pid: int | None = None
    online: bool


class DeviceReport(_Msg):
    path: str
    total_bytes: int = Field(ge=0)
    free_bytes: int = Field(ge=0)


class RebalanceReport(_Msg):
    """The node's last known status of a volume's rebalance run (its process polled while it runs, then final)."""

    volume_id: str = Field(max_length=64)
    run: str = Field(min_length=1, max_length=64)
    state: RebalanceState
    final: bool = False
    files: int = Field(default=0, ge=0)
    size: int = Field(default=0, ge=0)
    lookups: int = Field(default=0, ge=0)
    failures: int = Field(default=0, ge=0)
    skipped: int = Field(default=0, ge=0)
    run_time: float = Field(default=0.0, ge=0)
    error: str = Field(default="", max_length=2000)


class Heartbeat(_Msg):
    epoch: int = Field(ge=1)
    seq: int = Field(ge=0)
    at: float
    facts: NodeFacts = NodeFacts()
    bricks: list[BrickReport] = []
    shds: list[ShdReport] = []
    devices: list[DeviceReport] = []
    rebalances: list[RebalanceReport] = []  # the control service follows runs from these, without polling


class TaskMessage(_Msg):
    """Control -> agent: one task, retained on the node's task topic until it is final."""

    id: str = Field(min_length=1, max_length=64)
    kind: str
    params: dict[str, Any] = {}
    created_at: float = 0.0


class TaskStatus(_Msg):
    """Agent -> control: a task moved to ``state``."""

    task_id: str = Field(min_length=1, max_length=64)
    state: TaskState
    epoch: int = Field(ge=1)
    at: float = Field(default_factory=time.time)
    reason: str = ""
    result: dict[str, Any] | None = None


# ---- join tokens -------------------------------------------------------------------------


def make_join_token(cluster: str, secret: str) -> str:
    return f"{cluster}.{secret}"


def parse_join_token(token: str) -> tuple[str, str]:
    """Split a join token into (cluster, secret); ValueError when it is not one."""
    cluster, sep, secret = (token or "").strip().rpartition(".")
    if not sep or not CLUSTER_NAME_RE.match(cluster) or len(secret) < 16:
        raise ValueError("malformed join token: expected CLUSTER.SECRET as printed by 'glusterctl cluster token'")
    return cluster, secret


def join_proof(token: str, node: str, agent_id: str, epoch: int) -> str:
    """HMAC that proves possession of the join token without sending it over the broker."""
    cluster, secret = parse_join_token(token)
    msg = f"{cluster}\n{node}\n{agent_id}\n{epoch}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def check_proof(token: str, node: str, agent_id: str, epoch: int, proof: str) -> bool:
    return hmac.compare_digest(join_proof(token, node, agent_id, epoch), proof)


# ---- node credentials --------------------------------------------------------------------


def new_node_secret() -> str:
    """A node's own secret (256 random bits), made by the agent at enrolment."""
    return secrets.token_urlsafe(32)


def node_key(secret: str) -> str:
    """The verifier of a node secret the control service stores; also the key of the node's hello proofs."""
    return hashlib.sha256(secret.encode()).hexdigest()


def node_proof(key: str, cluster: str, node: str, agent_id: str, epoch: int) -> str:
    """HMAC of a node's hello keyed with its node key: only the node and the control service know the key."""
    msg = f"node\n{cluster}\n{node}\n{agent_id}\n{epoch}".encode()
    return hmac.new(key.encode(), msg, hashlib.sha256).hexdigest()


def check_node_proof(key: str, cluster: str, node: str, agent_id: str, epoch: int, proof: str) -> bool:
    return hmac.compare_digest(node_proof(key, cluster, node, agent_id, epoch), proof)


NODE_URI_PREFIX = "urn:glusterctl:node:"


def node_uri(cluster: str, node: str) -> str:
    """The URI in a node certificate's subjectAltName that names the one node it may enrol."""
    return f"{NODE_URI_PREFIX}{cluster}:{node}"


def node_of_uri(uri: str) -> tuple[str, str] | None:
    """(cluster, node) of a node certificate's URI, or None when it is not one."""
    if not uri.startswith(NODE_URI_PREFIX):
        return None
    cluster, sep, node = uri[len(NODE_URI_PREFIX) :].partition(":")
    try:
        check_name("cluster", cluster)
        check_name("node", node)
    except ValueError:
        return None
    return (cluster, node) if sep else None


def node_named_by(uris: Iterable[str]) -> tuple[str, str] | None:
    """The one (cluster, node) a certificate's URI names name, or None when they name none or several."""
    named = {n for uri in uris if (n := node_of_uri(uri))}
    return named.pop() if len(named) == 1 else None


def certificate_enrolment_message(cluster: str, node: str, agent_id: str, epoch: int, node_secret: str) -> bytes:
    """What an agent signs with its node certificate's key to enrol: binds the hello to its new secret."""
    return f"certificate-enrolment\n{cluster}\n{node}\n{agent_id}\n{epoch}\n{node_key(node_secret)}".encode()


# ---- signed cluster metadata (docs/recovery.md) ----------------------------------------------

METADATA_SIGNATURE_CONTEXT = b"glusterctl-metadata-v1\n"  # documents without a digest (kept before v2)
METADATA_DIGEST_CONTEXT = b"glusterctl-metadata-v2\n"  # documents with a digest: the header alone verifies
DIGEST_PATTERN = "^[0-9a-f]{64}$"


class MetadataEncoding(str, enum.Enum):
    """How ``MetadataDocument.document`` carries the JSON text."""

    PLAIN = ""  # the JSON text itself
    ZLIB = "zlib"  # base64 of the zlib-compressed JSON text


class MetadataDocument(_Msg):
    """Control -> agents (retained per cluster), and agent -> control as a copy: the cluster's metadata.

    ``document`` is what is signed, exactly as sent: the JSON text, or (``encoding`` zlib) base64 of it
    compressed. The signature covers the encoding too; a reader verifies before it inflates anything.
    ``cluster`` and ``version`` repeat what the document holds, and a reader checks they agree.
    ``digest`` is sha256 (hex) of ``document`` as sent; the signature then covers the digest instead of the
    document (metadata_signed_bytes), so the header alone (MetadataHeader) proves the version. "": a document
    signed before digests existed, whose signature covers the document itself.
    """

    cluster: str = Field(min_length=1, max_length=64)
    version: int = Field(ge=1)
    issued_at: float = 0.0
    encoding: MetadataEncoding = MetadataEncoding.PLAIN
    digest: str = Field(default="", pattern=f"^$|{DIGEST_PATTERN}")
    document: str = Field(min_length=2, max_length=METADATA_MAX_BYTES)
    key: str = Field(default="", max_length=64)  # the signing key, base64 (a reader trusts only its pinned key)
    signature: str = Field(min_length=1, max_length=128)  # Ed25519, base64

    def header(self) -> MetadataHeader | None:
        """The signed header without the document (None for a document without a digest: it has no header)."""
        if not self.digest:
            return None
        return MetadataHeader.model_validate(self.model_dump(exclude={"document"}))


class MetadataHeader(_Msg):
    """A MetadataDocument without its document: the signature covers the digest, so it verifies alone."""

    cluster: str = Field(min_length=1, max_length=64)
    version: int = Field(ge=1)
    issued_at: float = 0.0
    encoding: MetadataEncoding = MetadataEncoding.PLAIN
    digest: str = Field(pattern=DIGEST_PATTERN)
    key: str = Field(default="", max_length=64)
    signature: str = Field(min_length=1, max_length=128)


class MetadataCopy(_Msg):
    """Agent -> control: the newest metadata the agent verified and kept, whole (``copy``: when the control
    presence wants copies, or a document without a digest) or as its signed header (``header``: at any other
    online presence); neither: it keeps none."""

    epoch: int = Field(ge=1)
    copy_: MetadataDocument | None = Field(default=None, alias="copy")
    header: MetadataHeader | None = None

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    def signed_header(self) -> MetadataHeader | MetadataDocument | None:
        """What proves the offered version: the header, else the whole copy (None: nothing offered)."""
        if self.header is not None:
            return self.header
        if self.copy_ is not None:
            return self.copy_.header() or self.copy_
        return None


class MetadataRefused(ValueError):
    """A metadata document that its reader does not accept; the message says why."""


def encode_metadata(text: str) -> tuple[MetadataEncoding, str]:
    """The encoding and ``document`` to send for the JSON ``text``: compressed whenever that is smaller."""
    packed = base64.b64encode(zlib.compress(text.encode(), 6)).decode()
    if len(packed) < len(text.encode()):
        return MetadataEncoding.ZLIB, packed
    return MetadataEncoding.PLAIN, text


def decode_metadata(envelope: MetadataDocument, limit: int = METADATA_MAX_TEXT_BYTES) -> str:
    """The JSON text of ``envelope`` (inflated to at most ``limit`` bytes): call only on a verified envelope."""
    if envelope.encoding == MetadataEncoding.PLAIN:
        return envelope.document
    try:
        packed = base64.b64decode(envelope.document, validate=True)
        inflater = zlib.decompressobj()
        raw = inflater.decompress(packed, limit)
    except (ValueError, zlib.error) as exc:
        raise MetadataRefused(f"the compressed document does not inflate: {exc}") from None
    if inflater.unconsumed_tail:
        raise MetadataRefused(f"the compressed document inflates to more than {limit} bytes")
    if not inflater.eof or inflater.unused_data:
        raise MetadataRefused("the compressed document is truncated or followed by other data")
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise MetadataRefused("the compressed document is not UTF-8 text") from None


def metadata_digest(document: str) -> str:
    """sha256 (hex) of a MetadataDocument's ``document`` as sent."""
    return hashlib.sha256(document.encode()).hexdigest()


def check_metadata_signature(envelope: MetadataDocument | MetadataHeader, public_key: str) -> None:
    """MetadataRefused unless ``public_key`` (base64 Ed25519) signed ``envelope`` as it is (nothing inflated).

    A header is checked alone (its version is then proven, the document unseen); a document with a digest is
    checked against its digest first, then the signature over the digest; one without, over the document."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key, validate=True))
        signature = base64.b64decode(envelope.signature, validate=True)
    except ValueError as exc:
        raise MetadataRefused(f"unusable key or signature: {exc}") from None
    if not envelope.digest:  # a document signed before digests (a header always has one)
        assert isinstance(envelope, MetadataDocument)
        signed = metadata_signed_bytes(envelope.cluster, envelope.version, envelope.document, envelope.encoding)
    elif isinstance(envelope, MetadataDocument) and not hmac.compare_digest(
        metadata_digest(envelope.document), envelope.digest
    ):
        raise MetadataRefused("the document does not verify: its sha256 is not the signed digest")
    else:
        signed = metadata_digest_signed_bytes(envelope.cluster, envelope.version, envelope.encoding, envelope.digest)
    try:
        key.verify(signature, signed)
    except InvalidSignature:
        raise MetadataRefused(
            "the signature does not verify with the pinned key (forged, or another server's)"
        ) from None


def verify_metadata(envelope: MetadataDocument, public_key: str) -> dict[str, Any]:
    """The document of ``envelope`` if ``public_key`` (base64 Ed25519) signed it and it says what the envelope says."""
    check_metadata_signature(envelope, public_key)  # before anything is inflated or parsed
    text = decode_metadata(envelope)
    try:
        document = json.loads(text)
    except ValueError:
        raise MetadataRefused("the signed document is not JSON") from None
    if not isinstance(document, dict) or (document.get("cluster"), document.get("version")) != (
        envelope.cluster,
        envelope.version,
    ):
        raise MetadataRefused("the envelope's cluster or version differs from the signed document's")
    return document


def metadata_signed_bytes(
    cluster: str, version: int, document: str, encoding: MetadataEncoding = MetadataEncoding.PLAIN
) -> bytes:
    """What the control service signed before digests: a fixed context (naming the encoding unless plain), the
    cluster, the version and the document as sent. Only verified now (copies kept then); a plain document
    signs as it did before encodings existed."""
    encoding = MetadataEncoding(encoding)
    context = METADATA_SIGNATURE_CONTEXT
    if encoding != MetadataEncoding.PLAIN:
        context = context[:-1] + f"+{encoding.value}\n".encode()
    return context + f"{cluster}\n{version}\n".encode() + document.encode()


def metadata_digest_signed_bytes(cluster: str, version: int, encoding: MetadataEncoding, digest: str) -> bytes:
    """What the control service signs: a fixed context, the cluster, the version, the encoding and the sha256
    of the document as sent, one a line; small, so a copy's header verifies without its document."""
    return METADATA_DIGEST_CONTEXT + f"{cluster}\n{version}\n{MetadataEncoding(encoding).value}\n{digest}".encode()
