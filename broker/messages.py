"""Payloads exchanged over MQTT (JSON), the enums they use and the join-token helpers.

Both sides validate what they receive with these models (invariant 5 of the design); a
payload that fails validation is logged with its sender and dropped.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MAX_PAYLOAD_BYTES = 256 * 1024

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


class TaskState(str, enum.Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    STARTING = "STARTING"
    STOPPING = "STOPPING"
    DONE = "DONE"
    FAILED = "FAILED"

    @property
    def final(self) -> bool:
        return self in (TaskState.DONE, TaskState.FAILED)


ACTIVE_TASK_STATES = (TaskState.RUNNING, TaskState.STARTING, TaskState.STOPPING)

# One transition table for tasks: from-state -> allowed next states.
TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.QUEUED: frozenset({*ACTIVE_TASK_STATES, TaskState.DONE, TaskState.FAILED}),
    **{s: frozenset({*ACTIVE_TASK_STATES, TaskState.DONE, TaskState.FAILED}) for s in ACTIVE_TASK_STATES},
    TaskState.DONE: frozenset(),
    TaskState.FAILED: frozenset(),
}


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


# Task states after which nothing more happens to a task.
FINAL_TASK_STATES = frozenset({TaskState.DONE, TaskState.FAILED})


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
    """Agent -> control, after every connect: who I am and proof that I hold the join token."""

    agent_id: str = Field(min_length=8, max_length=64)
    epoch: int = Field(ge=1)
    proof: str = Field(min_length=64, max_length=64)
    facts: NodeFacts = NodeFacts()


class Registration(_Msg):
    """Control -> agent, the answer to a Hello."""

    accepted: bool
    epoch: int
    reason: str = ""


class Presence(_Msg):
    """Agent's retained presence; its last-will has the same shape with state 'offline'."""

    state: str = Field(pattern="^(online|offline)$")
    epoch: int = Field(ge=1)
    at: float = 0.0


class ControlPresence(_Msg):
    state: str = Field(pattern="^(online|offline)$")
    instance: str = ""
    at: float = 0.0


class BrickReport(_Msg):
    volume_id: str
    index: int = Field(ge=0)
    port: int = 0
    pid: int | None = None
    online: bool


class ShdReport(_Msg):
    volume_id: str
    pid: int | None = None
    online: bool


class DeviceReport(_Msg):
    path: str
    total_bytes: int = Field(ge=0)
    free_bytes: int = Field(ge=0)


class Heartbeat(_Msg):
    epoch: int = Field(ge=1)
    seq: int = Field(ge=0)
    at: float
    facts: NodeFacts = NodeFacts()
    bricks: list[BrickReport] = []
    shds: list[ShdReport] = []
    devices: list[DeviceReport] = []


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
