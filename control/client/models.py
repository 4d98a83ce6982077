"""What the client library hands out: event-stream items and the dashboard's REST snapshot."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Hello:
    """The stream is up: every change with an id above ``last_id`` follows (read state through REST now)."""

    last_id: int
    oldest_id: int


@dataclass(frozen=True)
class Reset:
    """Events after ``after`` were pruned: reload state through REST; the stream goes on from ``oldest_id``."""

    after: int
    oldest_id: int


@dataclass(frozen=True)
class Event:
    """One persisted state change (``kind`` e.g. ``task.state``, ``subject`` e.g. a task id)."""

    id: int
    at: float
    cluster: str
    kind: str
    subject: str
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Event:
        return cls(
            id=int(raw.get("id") or 0),
            at=float(raw.get("at") or 0.0),
            cluster=str(raw.get("cluster") or ""),
            kind=str(raw.get("kind") or ""),
            subject=str(raw.get("subject") or ""),
            data=dict(raw.get("data") or {}),
        )


@dataclass(frozen=True)
class Down:
    """The connection ended (``error`` says why); the stream reconnects by itself with ``Last-Event-ID``."""

    error: str


StreamItem = Hello | Reset | Event | Down


@dataclass
class Snapshot:
    """Everything the REST API says at one moment (in its JSON shapes)."""

    clusters: list[dict[str, Any]]
    nodes: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    volumes: list[dict[str, Any]] | None  # None: the server has no volume endpoints
    alerts: list[dict[str, Any]] = field(default_factory=list)  # firing ones and the newest resolved ones
