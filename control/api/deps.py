"""FastAPI dependencies: the current user from the bearer token, the task engine."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from control.errors import Unauthorized
from control.services import users
from control.services.tasks import TaskEngine
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
    return request.app.state.engine


CurrentUser = Annotated[User, Depends(current_user)]
OptionalUser = Annotated[User | None, Depends(optional_user)]
Token = Annotated[str | None, Depends(bearer_token)]
Engine = Annotated[TaskEngine, Depends(task_engine)]
