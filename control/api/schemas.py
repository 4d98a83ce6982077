"""REST request and response bodies, all of them.

Response bodies are filled from the services' read models (``control.services.views``) by
attribute: ``VolumePublic.model_validate(view)``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Public(BaseModel):
    """A response body, read from a read model's attributes."""

    model_config = ConfigDict(from_attributes=True)


class LoginRequest(BaseModel):
    username: str
    password: str


class LoginPublic(Public):
    token: str
    user: str
    admin: bool


class UserCreate(BaseModel):
    name: str
    password: str
    admin: bool = False


class UserPublic(Public):
    name: str
    admin: bool
    created_at: float


class ClusterCreate(BaseModel):
    name: str


class ClusterPublic(Public):
    name: str
    created_at: float
    nodes: int
    nodes_online: int


class JoinTokenPublic(Public):
    cluster: str
    token: str


class NodeDevice(Public):
    path: str
    device: str
    state: str
    total_bytes: int
    free_bytes: int


class NodePublic(Public):
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
    brick_fs_total_bytes: int | None = None  # filesystems of bricks not on a registered device, once each
    brick_fs_free_bytes: int | None = None


class ClusterStatus(Public):
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


class TaskEventPublic(Public):
    state: str
    at: float
    reason: str


class TaskPublic(Public):
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


class Health(Public):
    status: str
    version: str
    mqtt_connected: bool
    database_ok: bool = True  # a real round trip (SELECT 1) answered in time
    # this server handles the agents' messages and runs the periodic work (several servers: docs/ha.md)
    leader: bool = True


# ---- devices ------------------------------------------------------------------------------
class DeviceCreate(BaseModel):
    node: str
    path: str | None = Field(default=None, description="a directory whose parent exists on the node")
    device: str | None = Field(default=None, description="an empty block device: the agent makes XFS and mounts it")


class DevicePublic(Public):
    node: str
    path: str
    device: str
    state: str
    reason: str
    total_bytes: int
    free_bytes: int


class DeviceAdded(Public):
    device: DevicePublic
    task: TaskPublic


# ---- volumes ------------------------------------------------------------------------------
class VolumeResetState(BaseModel):
    force: bool = Field(default=False, description="must be true: the reset overrides the volume's state machine")
    reason: str = Field(min_length=1, max_length=500, description="why; recorded in the volume's event")


class VolumeCreate(BaseModel):
    name: str
    bricks: list[str] = Field(
        default=[], description="NODE:/path, in order; consecutive bricks form replica/disperse sets"
    )
    replica: int = Field(default=0, ge=0)
    arbiter: int = Field(default=0, ge=0)
    disperse: int = Field(default=0, ge=0)
    redundancy: int = Field(default=0, ge=0)
    size: str | None = Field(
        default=None, description="dynamic provisioning: place bricks on registered devices, e.g. 100GiB"
    )
    force: bool = False
    start: bool = True
    options: dict[str, str] = {}


class BrickPublic(Public):
    index: int
    node: str
    path: str
    port: int
    pid: int | None
    state: str
    total_bytes: int | None = None  # the brick filesystem, as last reported
    free_bytes: int | None = None
    used_bytes: int | None = None
    inodes_total: int | None = None
    inodes_free: int | None = None
    inodes_used: int | None = None


class ShdPublic(Public):
    node: str
    pid: int | None
    state: str


class VolumePublic(Public):
    name: str
    cluster: str
    id: str
    type: str
    state: str
    replica: int
    arbiter: int
    disperse: int
    redundancy: int
    size_bytes: int
    created_at: float
    options: dict[str, str]
    bricks_online: int
    bricks_total: int
    bricks: list[BrickPublic]
    self_heal: list[ShdPublic]
    volfile_servers: list[VolfileServerPublic] = []
    size: int | None = Field(default=None, description="bytes the volume can hold, from its layout and bricks")
    used: int | None = None
    free: int | None = None
    percent: float | None = Field(default=None, description="used, in percent of size")
    health: str | None = Field(default=None, description="Healthy, Degraded or Down; null when not started")


class VolumeOperation(Public):
    volume: VolumePublic | None
    tasks: list[str]


# ---- volume options ---------------------------------------------------------------------------
class OptionPublic(Public):
    key: str
    value: str | None
    default: str | None
    source: str  # set | create | default
    is_default: bool
    supported: bool  # False: glusterd knows the key, glusterctl refuses to set it (see the error)
    description: str | None = None


class OptionsChanged(Public):
    volume: str
    changed: dict[str, str | None]  # key -> new value; None for a reset
    tasks: list[str]  # the volume.volfiles tasks that push the new volfiles, one per node with bricks


class VolfileServerPublic(Public):
    """A node whose agent serves the volume's client volfile (`mount -t glusterfs ADDRESS:/VOLUME`)."""

    node: str
    address: str
    port: int


# ---- heal ------------------------------------------------------------------------------------
class HealRequest(BaseModel):
    op: Literal["info", "split-brain", "summary", "index"] = Field(
        default="info", description="info, split-brain or summary (heal information), index (start an index heal)"
    )


class HealRequested(BaseModel):
    op: str
    tasks: list[str]


class HealBrick(BaseModel):
    brick: str  # NODE:/path
    status: str
    entries: int | None = None  # None when the brick could not be read
    files: list[str] = []  # the first 100 entries
    pending: int | None = None  # summary only
    split_brain: int | None = None
    healing: int | None = None


class HealNode(BaseModel):
    node: str
    task: str
    state: str
    reason: str
    triggered: bool | None = None  # index heal only
    status: dict[str, list[str]] | None = None  # index heal: per replica set, each brick's answer


class HealResult(BaseModel):
    op: str
    done: bool
    bricks: list[HealBrick]
    nodes: list[HealNode]


class VolfilesPushed(BaseModel):
    tasks: list[str]  # one volume.volfiles task per node holding bricks


# ---- grants -------------------------------------------------------------------------------
class GrantRequest(BaseModel):
    role: str = Field(description="admin, operator or viewer")
    cluster: str | None = Field(default=None, description="the cluster; without it the grant covers everything")
    volume: str | None = Field(default=None, description="only this volume of the cluster")
    node: str | None = Field(default=None, description="only this node of the cluster (and its devices)")
    device: str | None = Field(default=None, description="only this registered path or device, as NODE:PATH")

    def scope_and_name(self) -> tuple[str, str]:
        """(scope, object name) from the fields given; a request naming two objects is refused."""
        from control.errors import InvalidInput

        given = [(k, v) for k, v in (("volume", self.volume), ("node", self.node), ("device", self.device)) if v]
        if len(given) > 1:
            raise InvalidInput("a grant covers one object: give at most one of --volume, --node, --device")
        if given:
            if not self.cluster:
                raise InvalidInput(f"a {given[0][0]} grant needs its cluster (-c CLUSTER)")
            return given[0]
        return ("cluster", "") if self.cluster else ("global", "")


class GrantPublic(Public):
    role: str
    scope: str  # global, cluster, volume, node, device
    cluster: str | None
    name: str | None  # the volume, node, or NODE:PATH
    text: str  # e.g. "operator on volume gv1 in cluster prod"


class UserGrants(Public):
    name: str
    admin: bool
    grants: list[GrantPublic]


class ReenrolPublic(BaseModel):
    cluster: str
    node: str
    reenrol_until: float


class NodeCertificateRequest(BaseModel):
    csr: str = Field(
        max_length=16384,
        description="PEM certificate signing request; only its key is used (the control service names the node)",
    )
    days: int = Field(default=365, ge=1, le=1095, description="validity in days")


class NodeCertificatePublic(BaseModel):
    cluster: str
    node: str
    certificate: str = Field(description="PEM client certificate that enrols this node (agent --mqtt-cert)")
    ca: str = Field(description="PEM certificate of the control service's CA (agent --mqtt-ca)")
    not_after: float


# ---- growing volumes ------------------------------------------------------------------------
class VolumeExpand(BaseModel):
    bricks: list[str] = Field(
        default=[],
        description="new NODE:/path bricks, in order: each replica/disperse set count of consecutive bricks forms "
        "a new set (for arbiter volumes the third of each set is the arbiter); empty with no size retries a "
        "failed expand",
    )
    size: str | None = Field(default=None, description="add one set placed on registered devices, e.g. 100GiB")
    force: bool = False


# ---- errors (RFC 9457 problem details) ---------------------------------------------------
class ProblemError(BaseModel):
    """One invalid field of a request: where (``body.name``, ``query.limit``) and why."""

    loc: str
    msg: str


class Problem(BaseModel):
    """Every error answer (``application/problem+json``); ``detail`` says what went wrong and what to do."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str
    errors: list[ProblemError] | None = None  # validation errors (422) only


# ---- sessions ------------------------------------------------------------------------------
class SessionPublic(Public):
    id: int
    user: str
    created_at: float
    last_used_at: float | None
    expires_at: float
    current: bool  # the session of the token that asked


class RebalanceStart(BaseModel):
    fix_layout: bool = Field(default=False, description="only fix the directory layouts, move no data")


class RebalanceRequested(BaseModel):
    action: str
    run: str | None = None
    tasks: list[str]


class RebalanceCounters(BaseModel):
    files: int = Field(description="files migrated (fix-layout: none)")
    size: int = Field(description="bytes migrated")
    lookups: int = Field(description="files scanned")
    failures: int
    skipped: int
    run_time: float = Field(description="seconds")


class RebalanceNodeStatus(RebalanceCounters):
    node: str
    state: str = Field(description="not started, in progress, stopped, completed or failed")
    error: str
    updated_at: float


class RebalanceStatus(BaseModel):
    volume: str
    run: str | None
    command: str | None = Field(description="full or fix-layout")
    state: str = Field(description="in progress while any node runs; else failed, stopped or completed")
    nodes: list[RebalanceNodeStatus]
    total: RebalanceCounters


class AlertPublic(Public):
    """An alert: ``firing`` from ``since``; ``resolved`` at ``until``."""

    id: int
    cluster: str
    kind: str  # node.unreachable, brick.offline, volume.degraded, volume.down, volume.capacity-warning, ...
    subject: str  # the node, VOLUME:NODE:PATH for a brick, the volume, or the task id
    severity: str  # warning, critical
    summary: str
    state: str  # firing, resolved
    since: float
    until: float | None


# ---- audit ---------------------------------------------------------------------------------
class AuditPublic(Public):
    """One change asked of the REST API; ``actor`` is empty when the caller was not logged in."""

    id: int
    at: float
    actor: str
    address: str
    method: str
    route: str  # the route's template
    path: str  # the concrete path: the target
    cluster: str
    params: dict[str, Any]  # "path", "query" and "body" (named, non-secret body fields only)
    status: int
    detail: str  # the problem detail of a refused or failed change


class VolumeReplaceBrick(BaseModel):
    old: str = Field(description="the brick to replace, NODE:/path as the volume lists it (its node may be gone)")
    new: str = Field(description="the new brick NODE:/path; it takes the old one's place in its replica/disperse set")
    force: bool = Field(default=False, description="allow the new brick on a node that holds another brick of the set")
