"""REST request and response bodies."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class LoginRequest(BaseModel):
    username: str
    password: str


class LoginPublic(BaseModel):
    token: str
    user: str
    admin: bool


class UserCreate(BaseModel):
    name: str
    password: str
    admin: bool = False


class UserPublic(BaseModel):
    name: str
    admin: bool
    created_at: float


class ClusterCreate(BaseModel):
    name: str


class ClusterPublic(BaseModel):
    name: str
    created_at: float
    nodes: int
    nodes_online: int


class JoinTokenPublic(BaseModel):
    cluster: str
    token: str


class NodeDevice(BaseModel):
    path: str
    device: str
    state: str
    total_bytes: int
    free_bytes: int


class NodePublic(BaseModel):
    cluster: str
    name: str
    state: str
    state_changed_at: float
    last_seen_at: float
    address: str
    hostname: str
    agent_version: str
    glusterfs_version: str | None
    facts: dict[str, Any]
    devices: list[NodeDevice] = []  # registered brick homes with their space, from the heartbeats


class ClusterStatus(BaseModel):
    name: str
    created_at: float
    nodes: list[NodePublic]


class ProbeRequest(BaseModel):
    path: str | None = Field(
        default=None,
        description="Absolute path on the node: report its free space and whether trusted xattrs work there",
    )
    io_seconds: float = Field(
        default=0, ge=0, le=60, description="Also measure write throughput in PATH for this many seconds"
    )


class TaskEventPublic(BaseModel):
    state: str
    at: float
    reason: str


class TaskPublic(BaseModel):
    id: str
    cluster: str
    node: str
    kind: str
    params: dict[str, Any]
    state: str
    reason: str
    result: dict[str, Any] | None
    created_at: float
    updated_at: float
    finished_at: float | None
    fix: str | None = None  # for FAILED tasks: what to do, from the failure knowledge base
    events: list[TaskEventPublic] | None = None


class Health(BaseModel):
    status: str
    version: str
    mqtt_connected: bool
