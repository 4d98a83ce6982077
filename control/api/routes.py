"""HTTP routes for users, clusters, nodes and tasks: parse, call a service, return a schema.

Services raise the errors of ``control.errors``; the application maps them to HTTP in one place.
Every route declares its permission (``permit``); lists show only what the caller may see.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response

from control.api import schemas as s
from control.api.deps import (
    BOOTSTRAP,
    CLUSTER,
    GLOBAL,
    IN_CLUSTER,
    LOGIN,
    NODE,
    PUBLIC,
    SELF,
    TASK,
    CurrentScope,
    CurrentUser,
    Engine,
    OptionalUser,
    Token,
    permit,
)
from control.services import authz, clusters, enrolment, nodes, tasks, users, views
from control.services.authz import Action, Held
from control.store.models import Cluster

READ, OPERATE, ADMIN = Action.READ, Action.OPERATE, Action.ADMIN
MAX_SCAN = 10000  # rows a filtered task list looks through for the caller's own

router = APIRouter(prefix="/api/v1")


# ---- users --------------------------------------------------------------------------------
@router.post("/login", response_model=s.LoginPublic, tags=["users"], dependencies=[permit(None, PUBLIC)])
def login(body: s.LoginRequest, request: Request) -> s.LoginPublic:
    token = users.login(body.username, body.password, request.client.host if request.client else "")
    user = views.user_view(users.resolve_token(token))
    return s.LoginPublic(token=token, user=user.name, admin=user.admin)


@router.post("/logout", status_code=204, tags=["users"], dependencies=[permit(None, LOGIN)])
def logout(user: CurrentUser, token: Token) -> Response:
    users.revoke_token(token or "")
    return Response(status_code=204)


@router.post(
    "/users",
    response_model=s.UserPublic,
    status_code=201,
    tags=["users"],
    description="Create a user (admins only). Needs no token while the server has no users: the first user is admin.",
    dependencies=[permit(ADMIN, BOOTSTRAP)],
)
def create_user(body: s.UserCreate, actor: OptionalUser) -> s.UserPublic:
    user = users.create_user(body.name, body.password, body.admin, actor)
    return s.UserPublic.model_validate(views.user_view(user))


@router.get("/users", response_model=list[s.UserPublic], tags=["users"], dependencies=[permit(ADMIN, GLOBAL)])
def list_users(actor: CurrentUser) -> list[s.UserPublic]:
    return [s.UserPublic.model_validate(views.user_view(u)) for u in users.list_users()]


@router.delete("/users/{name}", status_code=204, tags=["users"], dependencies=[permit(ADMIN, GLOBAL)])
def delete_user(name: str, actor: CurrentUser) -> Response:
    users.delete_user(name, actor)
    return Response(status_code=204)


# ---- clusters -----------------------------------------------------------------------------
@router.get("/clusters", response_model=list[s.ClusterPublic], tags=["clusters"], dependencies=[permit(READ, LOGIN)])
def list_clusters(scope: CurrentScope) -> list[s.ClusterPublic]:
    return [
        s.ClusterPublic.model_validate(views.cluster_summary(c))
        for c in clusters.list_all()
        if scope.sees_cluster(c.name)
    ]


@router.post(
    "/clusters",
    response_model=s.JoinTokenPublic,
    status_code=201,
    tags=["clusters"],
    dependencies=[permit(ADMIN, GLOBAL)],
)
def add_cluster(body: s.ClusterCreate, actor: CurrentUser) -> s.JoinTokenPublic:
    cluster = clusters.add(body.name)
    enrolment.accounts().clusters_changed()  # the broker's enrolment user, before the token is shown
    return s.JoinTokenPublic(cluster=cluster.name, token=clusters.join_token(cluster))


@router.get(
    "/clusters/{name}", response_model=s.ClusterStatus, tags=["clusters"], dependencies=[permit(READ, IN_CLUSTER)]
)
def cluster_status(name: str, scope: CurrentScope) -> s.ClusterStatus:
    cluster = clusters.get(name)
    shown = [n for n in nodes.list_nodes(cluster) if scope.sees_node(name, n.name)]
    return s.ClusterStatus.model_validate(views.cluster_view(cluster, shown))


@router.delete("/clusters/{name}", status_code=204, tags=["clusters"], dependencies=[permit(ADMIN, CLUSTER)])
def delete_cluster(name: str, actor: CurrentUser) -> Response:
    clusters.delete(name, actor)
    enrolment.accounts().clusters_changed()
    return Response(status_code=204)


@router.get(
    "/clusters/{name}/token",
    response_model=s.JoinTokenPublic,
    tags=["clusters"],
    description="The join token that enrols agents into the cluster (admins only).",
    dependencies=[permit(ADMIN, CLUSTER)],
)
def cluster_token(name: str, actor: CurrentUser) -> s.JoinTokenPublic:
    cluster = clusters.get(name)
    return s.JoinTokenPublic(cluster=cluster.name, token=clusters.join_token(cluster))


@router.post(
    "/clusters/{name}/token/rotate",
    response_model=s.JoinTokenPublic,
    tags=["clusters"],
    description="Issue a new join token (admins only). Connected agents stay connected; new connections need "
    "the new token.",
    dependencies=[permit(ADMIN, CLUSTER)],
)
def rotate_token(name: str, actor: CurrentUser) -> s.JoinTokenPublic:
    cluster = clusters.rotate_token(name, actor)
    enrolment.accounts().clusters_changed()  # the broker takes the new token before it is shown
    return s.JoinTokenPublic(cluster=cluster.name, token=clusters.join_token(cluster))


# ---- nodes --------------------------------------------------------------------------------
def _nodes_public(rows: list[views.NodeView]) -> list[s.NodePublic]:
    return [s.NodePublic.model_validate(row) for row in rows]


@router.get("/nodes", response_model=list[s.NodePublic], tags=["nodes"], dependencies=[permit(READ, LOGIN)])
def list_all_nodes(scope: CurrentScope) -> list[s.NodePublic]:
    return _nodes_public(views.node_views([n for n in nodes.list_nodes() if scope.sees_node(n.cluster.name, n.name)]))


@router.get(
    "/clusters/{name}/nodes",
    response_model=list[s.NodePublic],
    tags=["nodes"],
    dependencies=[permit(READ, IN_CLUSTER)],
)
def list_nodes(name: str, scope: CurrentScope) -> list[s.NodePublic]:
    rows = nodes.list_nodes(clusters.get(name))
    return _nodes_public(views.node_views([n for n in rows if scope.sees_node(name, n.name)]))


@router.get(
    "/clusters/{name}/nodes/{node}", response_model=s.NodePublic, tags=["nodes"], dependencies=[permit(READ, NODE)]
)
def get_node(name: str, node: str, actor: CurrentUser) -> s.NodePublic:
    return _nodes_public(views.node_views([nodes.get(clusters.get(name), node)]))[0]


@router.delete("/clusters/{name}/nodes/{node}", status_code=204, tags=["nodes"], dependencies=[permit(ADMIN, NODE)])
def remove_node(name: str, node: str, actor: CurrentUser, engine: Engine, force: bool = False) -> Response:
    nodes.remove(clusters.get(name), node, force=force, engine=engine)
    return Response(status_code=204)


@router.post(
    "/clusters/{name}/nodes/{node}/reenrol",
    response_model=s.ReenrolPublic,
    tags=["nodes"],
    description="Allow an enrolled node name to enrol once more with the join token within 15 minutes "
    "(needs admin on the node). The node's current credential stays valid until the new enrolment replaces it.",
    dependencies=[permit(ADMIN, NODE)],
)
def reenrol_node(name: str, node: str, actor: CurrentUser) -> s.ReenrolPublic:
    row = enrolment.allow_reenrol(clusters.get(name), node, actor)
    return s.ReenrolPublic(cluster=name, node=row.name, reenrol_until=float(row.reenrol_until or 0))


@router.post(
    "/clusters/{name}/nodes/{node}/certificate",
    response_model=s.NodeCertificatePublic,
    status_code=201,
    tags=["nodes"],
    description="Sign a node certificate from a certificate signing request (needs admin on the node). The agent "
    "then enrols over the embedded broker's TLS listener with --mqtt-cert/--mqtt-key instead of the join token; "
    "an enrolled name still needs 'node reenrol' or 'node remove' first.",
    dependencies=[permit(ADMIN, NODE)],
)
def node_certificate(
    name: str, node: str, body: s.NodeCertificateRequest, actor: CurrentUser
) -> s.NodeCertificatePublic:
    pem, ca, until = enrolment.issue_certificate(clusters.get(name), node, body.csr, body.days, actor)
    return s.NodeCertificatePublic(cluster=name, node=node, certificate=pem, ca=ca, not_after=until)


@router.post(
    "/clusters/{name}/nodes/{node}/probe",
    response_model=s.TaskPublic,
    status_code=202,
    tags=["nodes"],
    description="Queue a probe task: the agent reports glusterfs version, kernel, free space of PATH "
    "and whether trusted xattrs work there. Operators of the node may probe; `path` and `io_seconds` "
    "need admin on the node.",
    dependencies=[permit(OPERATE, NODE)],
)
def probe_node(name: str, node: str, body: s.ProbeRequest, scope: CurrentScope, engine: Engine) -> s.TaskPublic:
    params = body.model_dump(exclude_none=True)
    authz.check_probe(scope, name, node, params)
    task = nodes.probe(engine, clusters.get(name), node, params)
    return s.TaskPublic.model_validate(views.task_view(task))


# ---- tasks --------------------------------------------------------------------------------
@router.get("/tasks", response_model=list[s.TaskPublic], tags=["tasks"], dependencies=[permit(READ, LOGIN)])
def list_tasks(
    scope: CurrentScope,
    cluster: str | None = None,
    node: str | None = None,
    state: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> list[s.TaskPublic]:
    if cluster and not scope.sees_cluster(cluster):
        return []
    c = clusters.get(cluster) if cluster else None
    everything = scope.allows(READ, authz.EVERYTHING) or (
        cluster is not None and scope.allows(READ, authz.on_cluster(cluster))
    )
    rows = tasks.list_tasks(c, node, state, limit if everything else MAX_SCAN)
    shown = [t for t in rows if everything or scope.sees_task(t.cluster.name, t.node_name, t.target)][:limit]
    return [s.TaskPublic.model_validate(views.task_view(t)) for t in shown]


@router.get("/tasks/{task_id}", response_model=s.TaskPublic, tags=["tasks"], dependencies=[permit(READ, TASK)])
def get_task(task_id: str) -> s.TaskPublic:
    return s.TaskPublic.model_validate(views.task_view(tasks.get(task_id), with_events=True))


# ---- grants -------------------------------------------------------------------------------
def _grant_args(body: s.GrantRequest) -> tuple[str, Cluster | None, str, str]:
    scope, name = body.scope_and_name()
    return body.role, clusters.get(body.cluster) if body.cluster else None, scope, name


def _grant_public(held: Held) -> s.GrantPublic:
    return s.GrantPublic(
        role=held.role.value,
        scope=held.scope,
        cluster=held.cluster or None,
        name=(f"{held.name}:{held.device or held.path}" if held.scope == "device" else held.name) or None,
        text=str(held),
    )


@router.get(
    "/users/{name}/grants",
    response_model=s.UserGrants,
    tags=["users"],
    description="A user's roles and where they apply (admins, or the user itself).",
    dependencies=[permit(ADMIN, SELF)],
)
def user_grants(name: str) -> s.UserGrants:
    user = users.get(name)
    return s.UserGrants(name=user.name, admin=user.is_admin, grants=[_grant_public(g) for g in users.grants(name)])


@router.post(
    "/users/{name}/grants",
    response_model=s.GrantPublic,
    status_code=201,
    tags=["users"],
    description="Give a user a role (admin, operator, viewer) over everything, or over one cluster, volume, "
    "node or registered device (NODE:PATH) of a cluster (admins only).",
    dependencies=[permit(ADMIN, GLOBAL)],
)
def grant(name: str, body: s.GrantRequest, actor: CurrentUser) -> s.GrantPublic:
    return _grant_public(users.grant(name, *_grant_args(body), actor))


@router.delete(
    "/users/{name}/grants",
    status_code=204,
    tags=["users"],
    description="Take back a grant given with the same role and scope (admins only).",
    dependencies=[permit(ADMIN, GLOBAL)],
)
def revoke(
    name: str,
    actor: CurrentUser,
    role: str,
    cluster: str | None = None,
    volume: str | None = None,
    node: str | None = None,
    device: str | None = None,
) -> Response:
    body = s.GrantRequest(role=role, cluster=cluster, volume=volume, node=node, device=device)
    users.revoke(name, *_grant_args(body), actor)
    return Response(status_code=204)
