"""The audit log over HTTP: the middleware that records every change, and GET /api/v1/audit.

The middleware is the one place changes are recorded, so no route records its own: for each
request that is not a GET, HEAD or OPTIONS it notes the status the application answered (a 500
when a handler raised), the actor the route's permission resolved, the route template and its
parameters, and hands them to ``control.services.audit`` after the answer went out.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control.api import schemas as s
from control.api.deps import GLOBAL, permit
from control.services import audit
from control.services.authz import Action

log = logging.getLogger(__name__)

READS = ("GET", "HEAD", "OPTIONS")
PROBLEM_TYPE = b"application/problem+json"

router = APIRouter(prefix="/api/v1")


@router.get(
    "/audit",
    response_model=list[s.AuditPublic],
    tags=["audit"],
    summary="The audit log (admins only)",
    description="Every change asked of the REST API (every request but GET), newest first: who (`actor`, "
    "empty when not logged in, and `address`), what (`method`, `route`), on what (`path`, `cluster`, "
    "`params`: path and query parameters and the named, non-secret fields of the body; never passwords or "
    "tokens) and how it ended (`status`, and `detail` for refusals and failures). Each entry is also an "
    "`audit` event on `/api/v1/events?kind=audit`, for global admins only.",
    dependencies=[permit(Action.ADMIN, GLOBAL)],
)
def list_audit(
    user: str | None = Query(None, description="only changes by this user"),
    cluster: str | None = Query(None, description="only changes in this cluster"),
    since: float | None = Query(None, description="only changes at or after this Unix time"),
    limit: int = Query(audit.DEFAULT_LIMIT, ge=1, le=audit.MAX_LIMIT, description="at most this many entries"),
) -> list[s.AuditPublic]:
    return [s.AuditPublic.model_validate(row) for row in audit.entries(user, cluster, since, limit)]


def _header(message: Message, name: bytes) -> bytes:
    for key, value in message.get("headers", []):
        if key.lower() == name:
            return bytes(value)
    return b""


class AuditMiddleware:
    """Records every non-GET request in the audit log once it has been answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in READS:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        answer: dict[str, Any] = {"status": 0, "problem": None}

        async def tee_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) <= audit.MAX_BODY_BYTES:
                body.extend(message.get("body", b""))
            return message

        async def watch_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = int(message["status"])
                if _header(message, b"content-type").startswith(PROBLEM_TYPE):
                    answer["problem"] = bytearray()
            elif (
                message["type"] == "http.response.body"
                and answer["problem"] is not None
                and len(answer["problem"]) < audit.MAX_BODY_BYTES
            ):
                answer["problem"].extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, tee_receive, watch_send)
        except Exception:
            answer["status"] = answer["status"] or 500
            raise
        finally:
            await self._record(scope, bytes(body), answer)

    async def _record(self, scope: Scope, body: bytes, answer: dict[str, Any]) -> None:
        try:
            change = _change(scope, body, answer)
            await run_in_threadpool(audit.record, change)
        except Exception:  # the audit must never turn an answered request into an error
            log.exception("audit: recording %s %s failed", scope.get("method"), scope.get("path"))


def _change(scope: Scope, body: bytes, answer: dict[str, Any]) -> audit.Change:
    route = scope.get("route")
    template = str(getattr(route, "path", "")) or "(no route)"
    user = scope.get("state", {}).get("user")
    client = scope.get("client")
    headers = {k.lower(): v for k, v in scope.get("headers", [])}
    detail = ""
    if answer["problem"]:
        try:
            detail = str(json.loads(bytes(answer["problem"])).get("detail", ""))
        except (ValueError, AttributeError):
            detail = ""
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
    return audit.Change(
        actor=str(getattr(user, "name", "") or ""),
        address=str(client[0]) if client else "",
        method=str(scope["method"]),
        route=template,
        path=str(scope.get("path", "")),
        status=int(answer["status"]),
        path_params={str(k): str(v) for k, v in (scope.get("path_params") or {}).items()},
        query=query,
        body=audit.body_fields(body, headers.get(b"content-type", b"").decode("latin-1")),
        detail=detail,
    )
