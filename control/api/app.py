"""The FastAPI application: routes, error mapping, health."""

from __future__ import annotations

import logging
from threading import Event
from typing import Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from broker import __version__
from control.api import schemas as s
from control.api.deps import PUBLIC, permit
from control.api.events import router as events_router
from control.api.grow import router as grow_router
from control.api.heal import router as heal_router
from control.api.options import router as options_router
from control.api.replace import router as replace_router
from control.api.routes import router
from control.api.volfiles import router as volfiles_router
from control.api.volumes import router as volumes_router
from control.errors import GlusterctlError
from control.services.devices import DeviceService
from control.services.eventfeed import WakeHub
from control.services.options import OptionService
from control.services.tasks import TaskEngine
from control.services.volumes import VolumeService

log = logging.getLogger(__name__)

DESCRIPTION = """
The REST API of glusterctl, the external control plane for GlusterFS.

Every call except `POST /api/v1/login`, the first `POST /api/v1/users` and `/healthz` needs
`Authorization: Bearer TOKEN` (get a token with `glusterctl login` or `POST /api/v1/login`).
Errors are JSON objects `{"detail": "what went wrong and what to do"}`.
"""


class BrokerLink(Protocol):
    @property
    def connected(self) -> Event: ...


def create_app(
    engine: TaskEngine,
    bridge: BrokerLink | None = None,
    volumes: VolumeService | None = None,
    devices: DeviceService | None = None,
    hub: WakeHub | None = None,
    options: OptionService | None = None,
) -> FastAPI:
    """The application over the server's services; without a wired ``hub`` event streams only poll."""
    app = FastAPI(title="glusterctl", version=__version__, description=DESCRIPTION)
    app.state.engine = engine
    app.state.bridge = bridge
    app.state.volumes = volumes or VolumeService(engine)
    app.state.devices = devices or DeviceService(engine)
    app.state.hub = hub or WakeHub()
    app.state.options = options or OptionService(engine)
    app.include_router(router)
    app.include_router(volumes_router)
    app.include_router(events_router)
    app.include_router(options_router)
    app.include_router(heal_router)
    app.include_router(volfiles_router)
    app.include_router(grow_router)
    app.include_router(replace_router)

    @app.exception_handler(GlusterctlError)
    async def domain_error(request: Request, exc: GlusterctlError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(status_code=exc.status, content={"detail": str(exc)}, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            status_code=500,
            content={
                "detail": f"internal error ({type(exc).__name__}) in {request.method} {request.url.path}: see the server log"
            },
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return JSONResponse(status_code=422, content={"detail": "; ".join(parts)})

    @app.get("/healthz", response_model=s.Health, tags=["health"], dependencies=[permit(None, PUBLIC)])
    def healthz() -> s.Health:
        connected = bool(bridge and bridge.connected.is_set())
        return s.Health(status="ok" if connected else "degraded", version=__version__, mqtt_connected=connected)

    return app
