"""The FastAPI application: routes, error mapping, health."""

from __future__ import annotations

import logging
from collections.abc import Callable
from threading import Event
from typing import Protocol

from fastapi import FastAPI

from broker import __version__
from control.api import schemas as s
from control.api.alerts import router as alerts_router
from control.api.audit import AuditMiddleware
from control.api.audit import router as audit_router
from control.api.backup import router as backup_router
from control.api.deps import PUBLIC, permit
from control.api.events import router as events_router
from control.api.grow import router as grow_router
from control.api.heal import router as heal_router
from control.api.metrics import router as metrics_router
from control.api.options import router as options_router
from control.api.problems import document_errors, install_handlers
from control.api.replace import router as replace_router
from control.api.routes import router
from control.api.sessions import router as sessions_router
from control.api.volfiles import router as volfiles_router
from control.api.volumes import router as volumes_router
from control.services.devices import DeviceService
from control.services.eventfeed import WakeHub
from control.services.metrics import make_registry
from control.services.options import OptionService
from control.services.status import server_health
from control.services.tasks import TaskEngine
from control.services.volumes import VolumeService

log = logging.getLogger(__name__)

DESCRIPTION = """
The REST API of glusterctl, the external control plane for GlusterFS.

Every call except `POST /api/v1/login`, the first `POST /api/v1/users`, `/healthz` and `/metrics`
(which needs the metrics token when the server has one) needs
`Authorization: Bearer TOKEN` (get a token with `glusterctl login` or `POST /api/v1/login`).
Errors are RFC 9457 problem details (`application/problem+json`): `type`, `title`, `status`,
`instance` and `detail` (what went wrong and what to do); invalid requests add `errors`
(one `loc` and `msg` per invalid field). Each operation lists the error statuses it can answer.
"""


class BrokerLink(Protocol):
    @property
    def connected(self) -> Event: ...

    def dropped_counts(self) -> dict[str, int]: ...


def create_app(
    engine: TaskEngine,
    bridge: BrokerLink | None = None,
    volumes: VolumeService | None = None,
    devices: DeviceService | None = None,
    hub: WakeHub | None = None,
    options: OptionService | None = None,
    metrics_token: str | None = None,
) -> FastAPI:
    """The application over the server's services; without a wired ``hub`` event streams only poll."""
    app = FastAPI(title="glusterctl", version=__version__, description=DESCRIPTION)
    app.state.engine = engine
    app.state.bridge = bridge
    app.state.volumes = volumes or VolumeService(engine)
    app.state.devices = devices or DeviceService(engine)
    app.state.hub = hub or WakeHub()
    app.state.options = options or OptionService(engine)
    app.state.metrics_token = metrics_token
    leads: Callable[[], bool] | None = getattr(bridge, "is_leader", None)
    app.state.metrics = (
        make_registry(bridge.connected.is_set, bridge.dropped_counts, leads) if bridge is not None else make_registry()
    )
    app.include_router(router)
    app.include_router(volumes_router)
    app.include_router(events_router)
    app.include_router(options_router)
    app.include_router(heal_router)
    app.include_router(volfiles_router)
    app.include_router(grow_router)
    app.include_router(metrics_router)
    app.include_router(alerts_router)

    app.include_router(replace_router)

    app.include_router(sessions_router)
    app.include_router(audit_router)
    app.include_router(backup_router)
    app.add_middleware(AuditMiddleware)  # every change (non-GET request) goes to the audit log

    install_handlers(app)
    document_errors(app)

    @app.get("/healthz", response_model=s.Health, tags=["health"], dependencies=[permit(None, PUBLIC)])
    def healthz() -> s.Health:
        connected = bool(bridge and bridge.connected.is_set())
        return s.Health.model_validate(server_health(connected, leads() if leads is not None else True))

    return app
