"""FastAPI dependencies: the current user from the bearer token, and the services the server built."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from control.errors import Unauthorized
from control.services import users
from control.services.devices import DeviceService
from control.services.eventfeed import WakeHub
from control.services.tasks import TaskEngine
from control.services.volumes import VolumeService
from control.store.models import User

_bearer = HTTPBearer(auto_error=False)


def bearer_token(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str | None:
    return creds.credentials if creds else None


def current_user(token: Annotated[str | None, Depends(bearer_token)]) -> User:
    if not token:
        raise Unauthorized("missing token: log in with 'glusterctl login' (header 'Authorization: Bearer TOKEN')")
    return users.resolve_token(token)


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


CurrentUser = Annotated[User, Depends(current_user)]
OptionalUser = Annotated[User | None, Depends(optional_user)]
Token = Annotated[str | None, Depends(bearer_token)]
Engine = Annotated[TaskEngine, Depends(task_engine)]
Volumes = Annotated[VolumeService, Depends(volume_service)]
Devices = Annotated[DeviceService, Depends(device_service)]
Hub = Annotated[WakeHub, Depends(wake_hub)]
