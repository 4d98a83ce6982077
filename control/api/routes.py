"""HTTP routes for users, clusters, nodes and tasks: parse, call a service, return a schema.

Services raise the errors of ``control.errors``; the application maps them to HTTP in one place.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from control.api import schemas as s
from control.api.deps import CurrentUser, Engine, OptionalUser, Token
from control.services import clusters, enrolment, nodes, tasks, users, views

router = APIRouter(prefix="/api/v1")


# ---- users --------------------------------------------------------------------------------
@router.post("/login", response_model=s.LoginPublic, tags=["users"])
def login(body: s.LoginRequest) -> s.LoginPublic:
    token = users.login(body.username, body.password)
    user = views.user_view(users.resolve_token(token))
    return s.LoginPublic(token=token, user=user.name, admin=user.admin)


@router.post("/logout", status_code=204, tags=["users"])
def logout(user: CurrentUser, token: Token) -> Response:
    users.revoke_token(token or "")
    return Response(status_code=204)


@router.post(
    "/users",
    response_model=s.UserPublic,
    status_code=201,
    tags=["users"],
    description="Create a user. Needs no token while the server has no users: the first user is admin.",
)
def create_user(body: s.UserCreate, actor: OptionalUser) -> s.UserPublic:
    user = users.create_user(body.name, body.password, body.admin, actor)
    return s.UserPublic.model_validate(views.user_view(user))


@router.get("/users", response_model=list[s.UserPublic], tags=["users"])
def list_users(actor: CurrentUser) -> list[s.UserPublic]:
    return [s.UserPublic.model_validate(views.user_view(u)) for u in users.list_users()]


@router.delete("/users/{name}", status_code=204, tags=["users"])
def delete_user(name: str, actor: CurrentUser) -> Response:
    users.delete_user(name, actor)
    return Response(status_code=204)


# ---- clusters -----------------------------------------------------------------------------
@router.get("/clusters", response_model=list[s.ClusterPublic], tags=["clusters"])
def list_clusters(actor: CurrentUser) -> list[s.ClusterPublic]:
    return [s.ClusterPublic.model_validate(views.cluster_summary(c)) for c in clusters.list_all()]


@router.post("/clusters", response_model=s.JoinTokenPublic, status_code=201, tags=["clusters"])
def add_cluster(body: s.ClusterCreate, actor: CurrentUser) -> s.JoinTokenPublic:
    cluster = clusters.add(body.name)
    enrolment.accounts().clusters_changed()  # the broker's enrolment user, before the token is shown
    return s.JoinTokenPublic(cluster=cluster.name, token=clusters.join_token(cluster))


@router.get("/clusters/{name}", response_model=s.ClusterStatus, tags=["clusters"])
def cluster_status(name: str, actor: CurrentUser) -> s.ClusterStatus:
    cluster = clusters.get(name)
    return s.ClusterStatus.model_validate(views.cluster_view(cluster, nodes.list_nodes(cluster)))


@router.delete("/clusters/{name}", status_code=204, tags=["clusters"])
def delete_cluster(name: str, actor: CurrentUser) -> Response:
    clusters.delete(name, actor)
    enrolment.accounts().clusters_changed()
    return Response(status_code=204)


@router.get("/clusters/{name}/token", response_model=s.JoinTokenPublic, tags=["clusters"])
def cluster_token(name: str, actor: CurrentUser) -> s.JoinTokenPublic:
    cluster = clusters.get(name)
    return s.JoinTokenPublic(cluster=cluster.name, token=clusters.join_token(cluster))


@router.post(
    "/clusters/{name}/token/rotate",
    response_model=s.JoinTokenPublic,
    tags=["clusters"],
    description="Issue a new join token. Connected agents stay connected; new connections need the new token.",
)
def rotate_token(name: str, actor: CurrentUser) -> s.JoinTokenPublic:
    cluster = clusters.rotate_token(name, actor)
    enrolment.accounts().clusters_changed()  # the broker takes the new token before it is shown
    return s.JoinTokenPublic(cluster=cluster.name, token=clusters.join_token(cluster))


# ---- nodes --------------------------------------------------------------------------------
def _nodes_public(rows: list[views.NodeView]) -> list[s.NodePublic]:
    return [s.NodePublic.model_validate(row) for row in rows]


@router.get("/nodes", response_model=list[s.NodePublic], tags=["nodes"])
def list_all_nodes(actor: CurrentUser) -> list[s.NodePublic]:
    return _nodes_public(views.node_views(nodes.list_nodes()))


@router.get("/clusters/{name}/nodes", response_model=list[s.NodePublic], tags=["nodes"])
def list_nodes(name: str, actor: CurrentUser) -> list[s.NodePublic]:
    return _nodes_public(views.node_views(nodes.list_nodes(clusters.get(name))))


@router.get("/clusters/{name}/nodes/{node}", response_model=s.NodePublic, tags=["nodes"])
def get_node(name: str, node: str, actor: CurrentUser) -> s.NodePublic:
    return _nodes_public(views.node_views([nodes.get(clusters.get(name), node)]))[0]


@router.delete("/clusters/{name}/nodes/{node}", status_code=204, tags=["nodes"])
def remove_node(name: str, node: str, actor: CurrentUser, force: bool = False) -> Response:
    nodes.remove(clusters.get(name), node, force=force)
    return Response(status_code=204)


class ReenrolPublic(BaseModel):
    cluster: str
    node: str
    reenrol_until: float


@router.post(
    "/clusters/{name}/nodes/{node}/reenrol",
    response_model=ReenrolPublic,
    tags=["nodes"],
    description="Allow an enrolled node name to enrol once more with the join token within 15 minutes "
    "(admins only). The node's current credential stays valid until the new enrolment replaces it.",
)
def reenrol_node(name: str, node: str, actor: CurrentUser) -> ReenrolPublic:
    row = enrolment.allow_reenrol(clusters.get(name), node, actor)
    return ReenrolPublic(cluster=name, node=row.name, reenrol_until=float(row.reenrol_until or 0))


@router.post(
    "/clusters/{name}/nodes/{node}/probe",
    response_model=s.TaskPublic,
    status_code=202,
    tags=["nodes"],
    description="Queue a probe task: the agent reports glusterfs version, kernel, free space of PATH "
    "and whether trusted xattrs work there.",
)
def probe_node(name: str, node: str, body: s.ProbeRequest, actor: CurrentUser, engine: Engine) -> s.TaskPublic:
    task = nodes.probe(engine, clusters.get(name), node, body.model_dump(exclude_none=True))
    return s.TaskPublic.model_validate(views.task_view(task))


# ---- tasks --------------------------------------------------------------------------------
@router.get("/tasks", response_model=list[s.TaskPublic], tags=["tasks"])
def list_tasks(
    actor: CurrentUser,
    cluster: str | None = None,
    node: str | None = None,
    state: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> list[s.TaskPublic]:
    c = clusters.get(cluster) if cluster else None
    return [s.TaskPublic.model_validate(views.task_view(t)) for t in tasks.list_tasks(c, node, state, limit)]


@router.get("/tasks/{task_id}", response_model=s.TaskPublic, tags=["tasks"])
def get_task(task_id: str, actor: CurrentUser) -> s.TaskPublic:
    return s.TaskPublic.model_validate(views.task_view(tasks.get(task_id), with_events=True))
