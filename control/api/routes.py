"""HTTP routes: translate HTTP to service calls and service results to schemas, nothing more."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response

from broker.messages import NodeState, TaskKind
from control.api import schemas as s
from control.api.deps import CurrentUser, Engine, OptionalUser, Token
from control.services import clusters, nodes, tasks, users
from control.store.models import Device, Node, Task

router = APIRouter(prefix="/api/v1")


def nodes_public(rows: list[Node]) -> list[s.NodePublic]:
    """Nodes with their registered devices (one query for all of them)."""
    devices: dict[tuple[int, str], list[s.NodeDevice]] = {}
    if rows:
        query = Device.select().where(Device.cluster.in_({n.cluster_id for n in rows})).order_by(Device.path)
        for dev in query:
            devices.setdefault((dev.cluster_id, dev.node_name), []).append(
                s.NodeDevice(
                    path=dev.path,
                    device=dev.device,
                    state=dev.state,
                    total_bytes=dev.total_bytes,
                    free_bytes=dev.free_bytes,
                )
            )
    return [
        s.NodePublic(
            cluster=node.cluster.name,
            name=node.name,
            state=node.state,
            state_changed_at=node.state_changed_at,
            last_seen_at=node.last_seen_at,
            address=node.address,
            hostname=node.hostname,
            agent_version=node.agent_version,
            glusterfs_version=node.glusterfs_version,
            facts=node.facts or {},
            devices=devices.get((node.cluster_id, node.name), []),
        )
        for node in rows
    ]


def task_public(task: Task, with_events: bool = False) -> s.TaskPublic:
    return s.TaskPublic(
        id=task.id,
        cluster=task.cluster.name,
        node=task.node_name,
        kind=task.kind,
        params=task.params or {},
        state=task.state,
        reason=task.reason,
        result=task.result,
        created_at=task.created_at,
        updated_at=task.updated_at,
        finished_at=task.finished_at,
        fix=tasks.failure_fix(task),
        events=[
            s.TaskEventPublic(state=e.state, at=e.at, reason=e.reason) for e in task.events.order_by(tasks.TaskEvent.id)
        ]
        if with_events
        else None,
    )


# ---- users --------------------------------------------------------------------------------
@router.post("/login", response_model=s.LoginPublic, tags=["users"])
def login(body: s.LoginRequest):
    token = users.login(body.username, body.password)
    user = users.resolve_token(token)
    return s.LoginPublic(token=token, user=user.name, admin=user.is_admin)


@router.post("/logout", status_code=204, tags=["users"])
def logout(user: CurrentUser, token: Token):
    users.revoke_token(token)
    return Response(status_code=204)


@router.post(
    "/users",
    response_model=s.UserPublic,
    status_code=201,
    tags=["users"],
    description="Create a user. Needs no token while the server has no users: the first user is admin.",
)
def create_user(body: s.UserCreate, actor: OptionalUser):
    user = users.create_user(body.name, body.password, body.admin, actor)
    return s.UserPublic(name=user.name, admin=user.is_admin, created_at=user.created_at)


@router.get("/users", response_model=list[s.UserPublic], tags=["users"])
def list_users(actor: CurrentUser):
    return [s.UserPublic(name=u.name, admin=u.is_admin, created_at=u.created_at) for u in users.list_users()]


@router.delete("/users/{name}", status_code=204, tags=["users"])
def delete_user(name: str, actor: CurrentUser):
    users.delete_user(name, actor)
    return Response(status_code=204)


# ---- clusters -----------------------------------------------------------------------------
def cluster_public(cluster) -> s.ClusterPublic:
    members = list(cluster.nodes)
    return s.ClusterPublic(
        name=cluster.name,
        created_at=cluster.created_at,
        nodes=len(members),
        nodes_online=sum(1 for n in members if n.state == NodeState.ONLINE.value),
    )


@router.get("/clusters", response_model=list[s.ClusterPublic], tags=["clusters"])
def list_clusters(actor: CurrentUser):
    return [cluster_public(c) for c in clusters.list_all()]


@router.post("/clusters", response_model=s.JoinTokenPublic, status_code=201, tags=["clusters"])
def add_cluster(body: s.ClusterCreate, actor: CurrentUser):
    cluster = clusters.add(body.name)
    return s.JoinTokenPublic(cluster=cluster.name, token=clusters.join_token(cluster))


@router.get("/clusters/{name}", response_model=s.ClusterStatus, tags=["clusters"])
def cluster_status(name: str, actor: CurrentUser):
    cluster = clusters.get(name)
    return s.ClusterStatus(
        name=cluster.name, created_at=cluster.created_at, nodes=nodes_public(nodes.list_nodes(cluster))
    )


@router.delete("/clusters/{name}", status_code=204, tags=["clusters"])
def delete_cluster(name: str, actor: CurrentUser):
    clusters.delete(name, actor)
    return Response(status_code=204)


@router.get("/clusters/{name}/token", response_model=s.JoinTokenPublic, tags=["clusters"])
def cluster_token(name: str, actor: CurrentUser):
    cluster = clusters.get(name)
    return s.JoinTokenPublic(cluster=cluster.name, token=clusters.join_token(cluster))


@router.post(
    "/clusters/{name}/token/rotate",
    response_model=s.JoinTokenPublic,
    tags=["clusters"],
    description="Issue a new join token. Connected agents stay connected; new connections need the new token.",
)
def rotate_token(name: str, actor: CurrentUser):
    cluster = clusters.rotate_token(name, actor)
    return s.JoinTokenPublic(cluster=cluster.name, token=clusters.join_token(cluster))


# ---- nodes --------------------------------------------------------------------------------
@router.get("/nodes", response_model=list[s.NodePublic], tags=["nodes"])
def list_all_nodes(actor: CurrentUser):
    return nodes_public(nodes.list_nodes())


@router.get("/clusters/{name}/nodes", response_model=list[s.NodePublic], tags=["nodes"])
def list_nodes(name: str, actor: CurrentUser):
    return nodes_public(nodes.list_nodes(clusters.get(name)))


@router.get("/clusters/{name}/nodes/{node}", response_model=s.NodePublic, tags=["nodes"])
def get_node(name: str, node: str, actor: CurrentUser):
    return nodes_public([nodes.get(clusters.get(name), node)])[0]


@router.delete("/clusters/{name}/nodes/{node}", status_code=204, tags=["nodes"])
def remove_node(name: str, node: str, actor: CurrentUser, force: bool = False):
    nodes.remove(clusters.get(name), node, force=force)
    return Response(status_code=204)


@router.post(
    "/clusters/{name}/nodes/{node}/probe",
    response_model=s.TaskPublic,
    status_code=202,
    tags=["nodes"],
    description="Queue a probe task: the agent reports glusterfs version, kernel, free space of PATH "
    "and whether trusted xattrs work there.",
)
def probe_node(name: str, node: str, body: s.ProbeRequest, actor: CurrentUser, engine: Engine):
    cluster = clusters.get(name)
    nodes.get(cluster, node)
    task = engine.submit(cluster, node, TaskKind.NODE_PROBE.value, body.model_dump(exclude_none=True))
    return task_public(task)


# ---- tasks --------------------------------------------------------------------------------
@router.get("/tasks", response_model=list[s.TaskPublic], tags=["tasks"])
def list_tasks(
    actor: CurrentUser,
    cluster: str | None = None,
    node: str | None = None,
    state: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
):
    c = clusters.get(cluster) if cluster else None
    return [task_public(t) for t in tasks.list_tasks(c, node, state, limit)]


@router.get("/tasks/{task_id}", response_model=s.TaskPublic, tags=["tasks"])
def get_task(task_id: str, actor: CurrentUser):
    return task_public(tasks.get(task_id), with_events=True)
