"""Read models: what the control service shows of users, clusters, nodes, tasks, devices and volumes.

Plain dataclasses built from the store, with the rules of presentation (a brick on a node that is
not Online is Unreachable) decided here, so that the REST layer only copies fields.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from broker.messages import BrickState, NodeState
from control.services import tasks as task_service
from control.services import users
from control.services.capacity import BrickSpace, VolumeShape, volume_capacity
from control.services.health import volume_health
from control.services.volfiles import bricks_of
from control.store.models import ApiToken, Brick, Cluster, Device, Node, SelfHealDaemon, Task, TaskEvent, User, Volume

ONLINE = NodeState.ONLINE.value


@dataclass
class UserView:
    name: str
    admin: bool
    created_at: float


@dataclass
class SessionView:
    id: int
    user: str
    created_at: float
    last_used_at: float | None
    expires_at: float
    current: bool  # the session of the token that asked


@dataclass
class DeviceView:
    node: str
    path: str
    device: str
    state: str
    reason: str
    total_bytes: int
    free_bytes: int


@dataclass
class NodeView:
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
    devices: list[DeviceView] = field(default_factory=list)
    # the filesystems of its bricks that are not on a registered device, each counted once
    brick_fs_total_bytes: int | None = None
    brick_fs_free_bytes: int | None = None


@dataclass
class ClusterSummary:
    name: str
    created_at: float
    nodes: int
    nodes_online: int


@dataclass
class ClusterView:
    name: str
    created_at: float
    nodes: list[NodeView]


@dataclass
class TaskEventView:
    state: str
    at: float
    reason: str


@dataclass
class TaskView:
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
    fix: str | None = None
    events: list[TaskEventView] | None = None


@dataclass
class BrickView:
    index: int
    node: str
    path: str
    port: int
    pid: int | None
    state: str  # Online, Offline, or Unreachable when its node is not Online
    # its filesystem, as last reported (None: not reported yet)
    total_bytes: int | None = None
    free_bytes: int | None = None
    used_bytes: int | None = None
    inodes_total: int | None = None
    inodes_free: int | None = None
    inodes_used: int | None = None


@dataclass
class SelfHealView:
    node: str
    pid: int | None
    state: str  # Online, Offline, or Unreachable when its node is not Online


@dataclass
class VolfileServerView:
    """An online node holding bricks of the volume: its agent serves the volume's client volfile."""

    node: str
    address: str
    port: int


@dataclass
class VolumeView:
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
    bricks: list[BrickView]
    self_heal: list[SelfHealView]
    volfile_servers: list[VolfileServerView]
    # derived from the layout and the bricks' filesystems (None until every subvolume reported)
    size: int | None = None
    used: int | None = None
    free: int | None = None
    percent: float | None = None
    health: str | None = None  # Healthy, Degraded, Down; None when not started


@dataclass
class OperationView:
    """An operation that was requested: the volume as it is now (None once deleted) and its task ids."""

    volume: VolumeView | None
    tasks: list[str]


# ---- users, clusters, nodes, devices --------------------------------------------------------
def user_view(user: User) -> UserView:
    return UserView(name=user.name, admin=user.is_admin, created_at=user.created_at)


def session_views(actor: User, token: str) -> list[SessionView]:
    """The live sessions the actor may see (their own; an admin's: everyone's), marking the token's own."""
    current: ApiToken | None = users.session_of(token)
    return [
        SessionView(
            id=row.id,
            user=row.user.name,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            expires_at=users.expires_at(row),
            current=current is not None and current.id == row.id,
        )
        for row in users.list_sessions(actor)
    ]


def device_view(dev: Device) -> DeviceView:
    return DeviceView(
        node=dev.node_name,
        path=dev.path,
        device=dev.device,
        state=dev.state,
        reason=dev.reason,
        total_bytes=dev.total_bytes,
        free_bytes=dev.free_bytes,
    )


def brick_filesystems(cluster_ids: set[int]) -> dict[tuple[int, str], tuple[int, int]]:
    """Per (cluster, node): total and free bytes of the filesystems holding bricks that are not on a
    registered device, each filesystem (fsid) counted once (one query for all nodes)."""
    seen: dict[tuple[int, str], dict[str, tuple[int, int]]] = {}
    if not cluster_ids:
        return {}
    query = (
        Brick.select(Brick.node_name, Brick.path, Brick.fsid, Brick.total_bytes, Brick.free_bytes, Volume.cluster)
        .join(Volume)
        .where(Volume.cluster.in_(cluster_ids) & Brick.device.is_null() & Brick.total_bytes.is_null(False))
    )
    for brick in query:
        key = (brick.volume.cluster_id, brick.node_name)
        seen.setdefault(key, {})[brick.fsid or f"brick-{brick.path}"] = (brick.total_bytes or 0, brick.free_bytes or 0)
    return {
        key: (sum(t for t, _ in filesystems.values()), sum(f for _, f in filesystems.values()))
        for key, filesystems in seen.items()
    }


def node_views(rows: list[Node]) -> list[NodeView]:
    """Nodes with their registered devices and brick filesystems (one query each for all of them)."""
    devices: dict[tuple[int, str], list[DeviceView]] = {}
    filesystems: dict[tuple[int, str], tuple[int, int]] = {}
    if rows:
        clusters = {n.cluster_id for n in rows}
        query = Device.select().where(Device.cluster.in_(clusters)).order_by(Device.path)
        for dev in query:
            devices.setdefault((dev.cluster_id, dev.node_name), []).append(device_view(dev))
        filesystems = brick_filesystems(clusters)
    return [
        NodeView(
            cluster=node.cluster.name,
            name=node.name,
            state=node.state,
            state_changed_at=node.state_changed_at,
            last_seen_at=node.last_seen_at,
            address=node.address,
            hostname=node.hostname,
            agent_version=node.agent_version,
            glusterfs_version=node.glusterfs_version,
            facts=node_facts(node),
            devices=devices.get((node.cluster_id, node.name), []),
            brick_fs_total_bytes=filesystems.get((node.cluster_id, node.name), (None, None))[0],
            brick_fs_free_bytes=filesystems.get((node.cluster_id, node.name), (None, None))[1],
        )
        for node in rows
    ]


def node_facts(node: Node) -> dict[str, Any]:
    """The node's facts as of its last heartbeat: heartbeats that change only the uptime do not
    rewrite the stored facts, so the uptime is the stored one plus the time since it was stored."""
    facts = dict(node.facts or {})
    uptime = facts.get("uptime_seconds")
    if isinstance(uptime, int | float) and node.facts_at is not None and node.last_seen_at > node.facts_at:
        facts["uptime_seconds"] = round(uptime + node.last_seen_at - node.facts_at, 1)
    return facts


def cluster_summary(cluster: Cluster) -> ClusterSummary:
    states = [n.state for n in Node.select(Node.state).where(Node.cluster == cluster)]
    return ClusterSummary(
        name=cluster.name,
        created_at=cluster.created_at,
        nodes=len(states),
        nodes_online=sum(1 for state in states if state == ONLINE),
    )


def cluster_view(cluster: Cluster, nodes: list[Node]) -> ClusterView:
    return ClusterView(name=cluster.name, created_at=cluster.created_at, nodes=node_views(nodes))


# ---- tasks ------------------------------------------------------------------------------------
def public_params(params: dict[str, Any]) -> dict[str, Any]:
    """A task's parameters as readers see them: volfiles (brick and self-heal daemon volfiles carry the
    volume's login password) are shown by size and digest, never by content."""
    volfiles = params.get("volfiles")
    if not isinstance(volfiles, dict):
        return params
    summary = {
        key: f"<volfile: {len(text)} bytes, sha256 {hashlib.sha256(text.encode()).hexdigest()[:16]}>"
        for key, text in volfiles.items()
        if isinstance(text, str)
    }
    return {**params, "volfiles": summary}


def task_view(task: Task, with_events: bool = False) -> TaskView:
    history = None
    if with_events:
        query = TaskEvent.select().where(TaskEvent.task == task).order_by(TaskEvent.id)
        history = [TaskEventView(state=e.state, at=e.at, reason=e.reason) for e in query]
    return TaskView(
        id=task.id,
        cluster=task.cluster.name,
        node=task.node_name,
        kind=task.kind,
        params=public_params(task.params or {}),
        state=task.state,
        reason=task.reason,
        result=task.result,
        created_at=task.created_at,
        updated_at=task.updated_at,
        finished_at=task.finished_at,
        fix=task_service.failure_fix(task),
        events=history,
    )


# ---- volumes ----------------------------------------------------------------------------------
def volume_view(volume: Volume) -> VolumeView:
    """The volume with each brick's and self-heal daemon's state; on a node that is not Online: Unreachable."""
    nodes = {n.name: n for n in Node.select().where(Node.cluster == volume.cluster_id)}

    def reachable(name: str) -> bool:
        node = nodes.get(name)
        return node is not None and node.state == ONLINE

    rows = bricks_of(volume)
    bricks = [
        BrickView(
            index=b.index,
            node=b.node_name,
            path=b.path,
            port=b.port,
            pid=b.pid if reachable(b.node_name) else None,
            state=b.state if reachable(b.node_name) or b.state == BrickState.LOST else NodeState.UNREACHABLE.value,
            total_bytes=b.total_bytes,
            free_bytes=b.free_bytes,
            used_bytes=b.used_bytes,
            inodes_total=b.inodes_total,
            inodes_free=b.inodes_free,
            inodes_used=b.inodes_used,
        )
        for b in rows
    ]
    shape = shape_of(volume)
    capacity = volume_capacity(shape, [BrickSpace(b.total_bytes, b.used_bytes) for b in rows])
    health = volume_health(shape, volume.state, [b.state == BrickState.ONLINE for b in bricks], volume.options or {})
    shds = []
    if volume.type != "distribute":
        daemons = {d.node_name: d for d in SelfHealDaemon.select().where(SelfHealDaemon.volume == volume)}
        for name in sorted({b.node for b in bricks}):
            daemon = daemons.get(name)
            if not reachable(name):
                shds.append(SelfHealView(node=name, pid=None, state=NodeState.UNREACHABLE.value))
            elif daemon is None:
                shds.append(SelfHealView(node=name, pid=None, state="Offline"))
            else:
                shds.append(SelfHealView(node=name, pid=daemon.pid, state=daemon.state))
    return VolumeView(
        name=volume.name,
        cluster=volume.cluster.name,
        id=volume.id,
        type=volume.type,
        state=volume.state,
        replica=volume.replica,
        arbiter=volume.arbiter,
        disperse=volume.disperse,
        redundancy=volume.redundancy,
        size_bytes=volume.size_bytes,
        created_at=volume.created_at,
        options=volume.options or {},
        bricks_online=sum(1 for b in bricks if b.state == BrickState.ONLINE),
        bricks_total=len(bricks),
        bricks=bricks,
        self_heal=shds,
        volfile_servers=volfile_servers(nodes, [b.node for b in bricks]),
        size=capacity.size if capacity else None,
        used=capacity.used if capacity else None,
        free=capacity.free if capacity else None,
        percent=capacity.percent if capacity else None,
        health=health.value if health else None,
    )


def shape_of(volume: Volume) -> VolumeShape:
    return VolumeShape(volume.type, volume.replica, volume.disperse, volume.redundancy)


DEFAULT_VOLFILE_PORT = 24007  # an agent that does not report its port yet


def volfile_servers(nodes: dict[str, Node], brick_nodes: list[str]) -> list[VolfileServerView]:
    """The online nodes among `brick_nodes` (in brick order, once each) with their volfile server."""
    servers = []
    for name in dict.fromkeys(brick_nodes):
        node = nodes.get(name)
        if node is None or node.state != ONLINE:
            continue
        port = (node.facts or {}).get("volfile_port") or DEFAULT_VOLFILE_PORT
        servers.append(VolfileServerView(node=name, address=node.address or name, port=int(port)))
    return servers


def operation_view(volume: Volume | None, tasks: list[Task]) -> OperationView:
    return OperationView(volume=volume_view(volume) if volume is not None else None, tasks=[t.id for t in tasks])
