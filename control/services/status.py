"""The server's own health, as /healthz shows it: the broker link, a database round trip, leadership."""

from __future__ import annotations

from dataclasses import dataclass

from broker import __version__
from control.store.db import ping


@dataclass
class ServerHealth:
    status: str  # "ok", or "degraded" while the broker link is down or the database does not answer
    version: str
    mqtt_connected: bool
    database_ok: bool  # a real round trip (SELECT 1) answered in time
    leader: bool  # this server handles the agents' messages and runs the periodic work (docs/ha.md)


def server_health(mqtt_connected: bool, leader: bool) -> ServerHealth:
    database_ok = ping()
    return ServerHealth(
        status="ok" if mqtt_connected and database_ok else "degraded",
        version=__version__,
        mqtt_connected=mqtt_connected,
        database_ok=database_ok,
        leader=leader,
    )
