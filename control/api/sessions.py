"""HTTP routes for sessions (API tokens): list your own (admins: everyone's), revoke one."""

from __future__ import annotations

from fastapi import APIRouter, Response

from control.api import schemas as s
from control.api.deps import LOGIN, CurrentUser, Token, permit
from control.services import users, views

router = APIRouter(prefix="/api/v1")


@router.get(
    "/sessions",
    response_model=list[s.SessionPublic],
    tags=["users"],
    description="Live sessions (tokens): the caller's own, or everyone's for an admin. Tokens expire a fixed "
    "time after their login (the server's --token-ttl-days).",
    dependencies=[permit(None, LOGIN)],
)
def list_sessions(actor: CurrentUser, token: Token) -> list[s.SessionPublic]:
    return [s.SessionPublic.model_validate(view) for view in views.session_views(actor, token or "")]


@router.delete(
    "/sessions/{session_id}",
    status_code=204,
    tags=["users"],
    description="Revoke a session: the caller's own, or anyone's for an admin (others' sessions answer 404).",
    dependencies=[permit(None, LOGIN)],
)
def revoke_session(session_id: int, actor: CurrentUser) -> Response:
    users.revoke_session(session_id, actor)
    return Response(status_code=204)
