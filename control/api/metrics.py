"""``GET /metrics``: Prometheus's text format, collected from the store on each scrape.

Public unless the server has a metrics token (``--metrics-token`` / ``GLUSTERCTL_METRICS_TOKEN``);
then Prometheus sends it as ``Authorization: Bearer TOKEN`` (its ``authorization`` scrape setting).
User API tokens are not accepted here: the scraper needs no user.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from starlette.concurrency import run_in_threadpool

from control.api.deps import PUBLIC, Token, permit
from control.errors import Unauthorized

router = APIRouter(tags=["health"])

METRICS_TOKEN_MISSING = (
    "this server's /metrics needs its metrics token: send 'Authorization: Bearer TOKEN' "
    "(Prometheus: authorization.credentials in the scrape config)"
)


def require_metrics_token(request: Request, token: Token) -> None:
    expected: str | None = getattr(request.app.state, "metrics_token", None)
    if not expected:
        return
    if not token or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Unauthorized(METRICS_TOKEN_MISSING)


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[permit(None, PUBLIC), Depends(require_metrics_token)],
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"},
        401: {"description": "the server has a metrics token (--metrics-token) and the request did not send it"},
    },
)
async def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics
    body = await run_in_threadpool(generate_latest, registry)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
