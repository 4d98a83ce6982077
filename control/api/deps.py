"""FastAPI dependencies: the current user from the bearer token, every route's permission, and the services.

Every route declares its permission with ``dependencies=[permit(...)]`` (a test refuses a route
without one). The permission names an action (read, operate, admin) and where the target comes
from: the path parameters ``name`` (cluster), ``volume``, ``node``, ``task_id``, the query
parameter ``path`` (a device) or the body's ``node``. ``control.services.authz`` answers.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from control.errors import Unauthorized
from control.services import authz, tasks, users
from control.services.authz import Action, Scope, Target
from control.services.devices import DeviceService
from control.services.eventfeed import WakeHub
from control.services.tasks import TaskEngine
from control.services.volumes import VolumeService
from control.store.models import User

_bearer = HTTPBearer(auto_error=False)


def bearer_token(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str | None:
    return creds.credentials if creds else None


MISSING_TOKEN = "missing token: log in with 'glusterctl login' (header 'Authorization: Bearer TOKEN')"


def current_user(request: Request, token: Annotated[str | None, Depends(bearer_token)]) -> User:
    known = getattr(request.state, "user", None)  # resolved by the route's Permission
    if known is not None:
        return cast(User, known)
    if not token:
        raise Unauthorized(MISSING_TOKEN)
    return users.resolve_token(token)


def current_scope(request: Request, user: Annotated[User, Depends(current_user)]) -> Scope:
    """The caller's grants, for routes whose lists show only what the caller may see."""
    known = getattr(request.state, "scope", None)
    return cast(Scope, known) if known is not None else Scope.of(user)


# What a Permission's target is, and where it comes from.
PUBLIC = "public"  # no token needed
BOOTSTRAP = "bootstrap"  # no token while the server has no users; then global admin
LOGIN = "login"  # any logged-in user; the route shows only what the caller may see
GLOBAL = "global"
CLUSTER = "cluster"  # path {name}
IN_CLUSTER = "in-cluster"  # path {name}: some grant in the cluster reaches the action's rank
VOLUME = "volume"  # path {name}, {volume}
NODE = "node"  # path {name}, {node} or the body's "node"
DEVICE = "device"  # path {name}, {node}, query ?path=
TASK = "task"  # path {task_id}: the task's node, volume or device
SELF = "self"  # path {name} is the caller, or the action on everything
KINDS = (PUBLIC, BOOTSTRAP, LOGIN, GLOBAL, CLUSTER, IN_CLUSTER, VOLUME, NODE, DEVICE, TASK, SELF)


class Permission:
    """A route's permission, declared next to the route: ``dependencies=[permit(Action.OPERATE, VOLUME)]``."""

    def __init__(self, action: Action | None, target: str) -> None:
        if target not in KINDS:
            raise ValueError(f"unknown permission target {target!r}")
        self.action = action
        self.target = target

    def __repr__(self) -> str:
        return f"Permission({self.action.value if self.action else None}, {self.target})"

    async def __call__(self, request: Request, token: Annotated[str | None, Depends(bearer_token)]) -> None:
        if self.target == PUBLIC:
            return
        body: Any = None
        if self.target == NODE and "node" not in request.path_params:
            try:
                body = await request.json()
            except ValueError:
                body = None  # the route's validation answers 422
        await run_in_threadpool(self._check, request, token, body)

    def _check(self, request: Request, token: str | None, body: Any) -> None:
        if self.target == BOOTSTRAP and not users.has_users():
            return
        if not token:
            raise Unauthorized(MISSING_TOKEN)
        user = users.resolve_token(token)
        scope = Scope.of(user)
        request.state.user, request.state.scope = user, scope
        if self.target == LOGIN or self.action is None:
            return
        params = request.path_params
        if self.target == SELF and params.get("name") == user.name:
            return
        if self.target == IN_CLUSTER:
            scope.require_in_cluster(self.action, params["name"])
            return
        if self.target == TASK:
            task = tasks.get(params["task_id"])
            scope.require_task(self.action, task.cluster.name, task.node_name, task.target)
            return
        scope.require(self.action, self._target(request, body))

    def _target(self, request: Request, body: Any) -> Target:
        params = request.path_params
        cluster = params.get("name", "")
        if self.target == CLUSTER:
            return authz.on_cluster(cluster)
        if self.target == VOLUME:
            return authz.on_volume(cluster, params["volume"])
        if self.target == NODE:
            node = params.get("node") or (body.get("node") if isinstance(body, dict) else None)
            return authz.on_node(cluster, node) if isinstance(node, str) and node else authz.on_cluster(cluster)
        if self.target == DEVICE:
            return authz.on_device(cluster, params["node"], request.query_params.get("path", ""))
        return authz.EVERYTHING


def optional_user(token: Annotated[str | None, Depends(bearer_token)]) -> User | None:
    return users.resolve_token(token) if token else None


def task_engine(request: Request) -> TaskEngine:
    return cast(TaskEngine, request.app.state.engine)


def volume_service(request: Request) -> VolumeService:
    return cast(VolumeService, request.app.state.volumes)


def device_service(request: Request) -> DeviceService:
    return cast(DeviceService, request.app.state.devices)


def wake_hub(request: Request) -> WakeHub:
    return cast(WakeHub, request.app.state.hub)


def permit(action: Action | None, target: str) -> Any:
    """The dependency a route declares: ``@router.get(..., dependencies=[permit(Action.READ, VOLUME)])``."""
    return Depends(Permission(action, target))


CurrentUser = Annotated[User, Depends(current_user)]
CurrentScope = Annotated[Scope, Depends(current_scope)]
OptionalUser = Annotated[User | None, Depends(optional_user)]
Token = Annotated[str | None, Depends(bearer_token)]
Engine = Annotated[TaskEngine, Depends(task_engine)]
Volumes = Annotated[VolumeService, Depends(volume_service)]
Devices = Annotated[DeviceService, Depends(device_service)]
Hub = Annotated[WakeHub, Depends(wake_hub)]
