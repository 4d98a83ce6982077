"""Errors as RFC 9457 problem details, the same JSON shape everywhere, and their place in the OpenAPI document.

Every error answer is ``application/problem+json``: ``type`` (``about:blank``: the status says it
all), ``title`` (the status phrase), ``status``, ``detail`` (what went wrong and what to do; the
field clients always read) and ``instance`` (the request path); validation errors add ``errors``.

``document_errors`` adds each route's possible error answers to the OpenAPI document, derived
from its permission and shape, so no route has to list them itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

import peewee as pw
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from control.api import schemas as s
from control.api.deps import LOGIN, PUBLIC, Permission
from control.errors import GlusterctlError, TooManyRequests
from control.store.db import outage

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
DATABASE_FULL = (
    "the control service's database is out of disk space: nothing was changed. Free space on the "
    "database's filesystem (SQLite: the server's --data-dir; PostgreSQL: its data directory) and try again"
)
DATABASE_DOWN = "the control service's database does not answer (restarting?): nothing was changed; try again shortly"
BODY_UNREADABLE = "There was an error parsing the body"  # FastAPI's 400 for a body that does not decode


def title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem(
    request: Request,
    status: int,
    detail: str,
    errors: list[s.ProblemError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = s.Problem(title=title(status), status=status, detail=detail, instance=request.url.path, errors=errors)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers, media_type=MEDIA_TYPE)


def _where(loc: Iterable[Any]) -> str:
    return ".".join(str(p) for p in loc)


def install_handlers(app: FastAPI) -> None:
    """Map domain errors, HTTP errors, validation errors and surprises to problem details."""

    @app.exception_handler(GlusterctlError)
    async def domain_error(request: Request, exc: GlusterctlError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if isinstance(exc, TooManyRequests):
            headers = {"Retry-After": str(exc.retry_after)}
        return problem(request, exc.status, str(exc), headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else title(exc.status_code)
        if exc.status_code == 400 and detail == BODY_UNREADABLE:
            detail = "the request body could not be read: send UTF-8 encoded JSON (Content-Type: application/json)"
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"Not Found: no route {request.url.path} (see /docs)"
        return problem(request, exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors, parts = [], []
        for err in exc.errors():
            loc = tuple(err.get("loc", ()))
            msg = str(err.get("msg", "invalid"))
            errors.append(s.ProblemError(loc=_where(loc), msg=msg))
            where = _where(p for p in loc if p != "body")
            parts.append(f"{where}: {msg}" if where else msg)
        return problem(request, 422, "; ".join(parts), errors=errors)

    @app.exception_handler(pw.OperationalError)
    @app.exception_handler(pw.InterfaceError)
    async def database_error(request: Request, exc: Exception) -> JSONResponse:
        why = await run_in_threadpool(outage, exc)
        if why == "full":
            log.error("%s %s failed: the database is out of disk space (%s)", request.method, request.url.path, exc)
            return problem(request, 507, DATABASE_FULL)
        if why == "down":
            log.error("%s %s failed: the database does not answer (%s)", request.method, request.url.path, exc)
            return problem(request, 503, DATABASE_DOWN, headers={"Retry-After": "5"})
        return await unexpected(request, exc)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        detail = f"internal error ({type(exc).__name__}) in {request.method} {request.url.path}: see the server log"
        return problem(request, 500, detail)


# ---- the OpenAPI side ------------------------------------------------------------------------
ERROR_TEXT = {
    400: "The request body could not be read: it is not UTF-8 encoded JSON",
    401: "No token, or an invalid, expired or revoked one: log in again",
    403: "The caller lacks the permission the detail names",
    404: "An object the request names does not exist",
    409: "The request conflicts with the object's current state",
    422: "Invalid input: the detail (and for malformed requests the errors list) says what is allowed",
    429: "Too many failed logins: wait the Retry-After seconds",
    503: "The database does not answer (restarting?): nothing was changed; try again after Retry-After seconds",
    507: "The database is out of disk space: nothing was changed; free space and try again",
}


def api_routes(app: FastAPI) -> list[APIRoute]:
    """Every API route of the application, also inside included routers."""
    out: list[APIRoute] = []
    pending = list(app.routes)
    while pending:
        route = pending.pop()
        inner = getattr(route, "original_router", None)
        if inner is not None:
            pending.extend(inner.routes)
        elif isinstance(route, APIRoute):
            out.append(route)
    return out


def permission_of(route: APIRoute) -> Permission | None:
    found = [d.call for d in route.dependant.dependencies if isinstance(d.call, Permission)]
    return found[0] if len(found) == 1 else None


def error_statuses(route: APIRoute, method: str) -> list[int]:
    """The error answers a route can give: from its permission kind, its parameters and its method."""
    permission = permission_of(route)
    kind = permission.target if permission else PUBLIC
    dependant = route.dependant
    has_input = bool(dependant.path_params or dependant.query_params or dependant.body_params)
    changes = method != "GET"
    codes: set[int] = set()
    if kind != PUBLIC:
        codes.add(401)
        if kind != LOGIN or changes:
            codes.add(403)
    if dependant.path_params or changes or dependant.query_params:
        codes.add(404)
    if changes:
        codes.add(409)
    if has_input or changes:
        codes.add(422)
    if dependant.body_params:
        codes.add(400)  # a body that does not decode (not UTF-8) never reaches validation
    if route.path == "/api/v1/login":
        codes |= {401, 429}
    codes.add(503)  # the database does not answer (restarting)
    if changes:
        codes.add(507)  # the database is out of disk space
    codes |= {int(c) for c in route.responses if str(c).isdigit() and int(c) >= 400}
    return sorted(codes)


def document_errors(app: FastAPI) -> None:
    """Generate the OpenAPI document once with every route's error answers as problem details."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes, tags=app.openapi_tags
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Problem"] = s.Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in components["Problem"].pop("$defs", {}).items():
            components[name] = sub
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        paths = schema.get("paths", {})
        for route in api_routes(app):
            for method in (route.methods or set()) - {"HEAD"}:
                operation = paths.get(route.path, {}).get(method.lower())
                if operation is None:
                    continue
                responses = operation.setdefault("responses", {})
                for code in error_statuses(route, method):
                    responses[str(code)] = {
                        "description": ERROR_TEXT.get(code, title(code)),
                        "content": {MEDIA_TYPE: {"schema": PROBLEM_REF}},
                    }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
