"""The audit log: every change asked of the REST API, who asked, on what, and how it ended.

The API records one entry per non-GET request (``control.api.audit``), whatever its outcome:
refused (401, 403), invalid (422), conflicting (409), accepted or failed. An entry holds the
actor, the client address, the method, the route template, the concrete path, the path and
query parameters, and only the request body fields named in ``BODY_FIELDS`` (never passwords
or tokens: a name that looks secret is dropped even when listed). Each entry is also an
``audit`` event on the event stream, which only global admins see, on streams that ask for
``kind=audit``.

Entries are kept ``--audit-keep-days`` (default KEEP_DAYS): ``AuditPruner`` deletes older ones at
most every PRUNE_SECONDS, from the reconciler's pass. Their ``audit`` events live in the event
table with every other event and share its backlog (``--event-backlog``), so a stream can
replay only the recent ones; the audit table is the record.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from control.errors import InvalidInput
from control.services import events
from control.store.db import delete_where
from control.store.models import AuditEntry
from control.store.models import database_proxy as db

log = logging.getLogger(__name__)

# Request body fields an entry keeps: names of what the change is on, never free text or secrets.
BODY_FIELDS = (
    "name",
    "username",
    "node",
    "path",
    "device",
    "role",
    "cluster",
    "volume",
    "admin",
    "force",
    "purge",
    "op",
    "type",
    "replica",
    "arbiter",
    "disperse",
    "redundancy",
    "size",
    "bricks",
    "start",
)
SECRET_WORDS = ("password", "passwd", "token", "secret", "credential", "auth")
MAX_BODY_BYTES = 64 * 1024  # larger bodies are not parsed for their fields
MAX_VALUE_CHARS = 256
MAX_LIST_ITEMS = 64
MAX_DETAIL_CHARS = 500
DEFAULT_LIMIT = 100
MAX_LIMIT = 10000
CLUSTER_ROUTES = "/api/v1/clusters/{name}"  # routes under it name their cluster in the path parameter "name"
LOGIN_ROUTE = "/api/v1/login"
KEEP_DAYS = 90.0  # default of --audit-keep-days
PRUNE_SECONDS = 3600.0  # at most one pruning delete per this many seconds


def is_secret(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


def _value(value: Any) -> Any:
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, str):
        return value[:MAX_VALUE_CHARS]
    if isinstance(value, list):
        return [_value(v) for v in value[:MAX_LIST_ITEMS] if isinstance(v, str | int | float | bool)]
    return None  # nested objects (option maps) are not kept


def body_fields(raw: bytes, content_type: str) -> dict[str, Any]:
    """The named, non-secret fields of a JSON object body; {} for anything else."""
    if not raw or len(raw) > MAX_BODY_BYTES or "json" not in content_type:
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict):
        return {}
    out = {}
    for name in BODY_FIELDS:
        if name in data and not is_secret(name):
            value = _value(data[name])
            if value is not None:
                out[name] = value
    return out


def public_params(params: Mapping[str, str]) -> dict[str, str]:
    """Path or query parameters without the ones whose names look secret."""
    return {k[:64]: str(v)[:MAX_VALUE_CHARS] for k, v in params.items() if not is_secret(k)}


@dataclass
class Change:
    """One finished non-GET request, as the API saw it."""

    actor: str
    address: str
    method: str
    route: str
    path: str
    status: int
    path_params: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)
    detail: str = ""

    def cluster(self) -> str:
        if self.route == CLUSTER_ROUTES or self.route.startswith(CLUSTER_ROUTES + "/"):
            return self.path_params.get("name", "")
        if self.route == "/api/v1/clusters":
            return str(self.body.get("name", ""))
        return str(self.body.get("cluster") or self.query.get("cluster") or "")

    def who(self) -> str:
        """The logged-in actor; for a successful login the user who logged in."""
        if not self.actor and self.route == LOGIN_ROUTE and self.status < 400:
            return str(self.body.get("username", ""))
        return self.actor


def record(change: Change) -> AuditEntry:
    """Store one entry and its ``audit`` event, in one transaction."""
    params: dict[str, Any] = {}
    if change.path_params:
        params["path"] = public_params(change.path_params)
    if change.query:
        params["query"] = public_params(change.query)
    if change.body:
        params["body"] = change.body
    actor, cluster = change.who()[:64], change.cluster()[:64]
    with db.atomic():
        entry = AuditEntry.create(
            actor=actor,
            address=change.address[:64],
            method=change.method[:8],
            route=change.route[:255],
            path=change.path,
            cluster=cluster,
            params=params,
            status=change.status,
            detail=change.detail[:MAX_DETAIL_CHARS],
        )
        events.record(
            "audit",
            cluster=cluster,
            subject=actor,
            audit_id=entry.id,
            method=entry.method,
            route=entry.route,
            path=entry.path,
            status=entry.status,
        )
    log.info(
        "audit %d: %s %s (cluster %r) by %r: %d", entry.id, change.method, change.path, cluster, actor, change.status
    )
    return entry


def entries(
    user: str | None = None, cluster: str | None = None, since: float | None = None, limit: int = DEFAULT_LIMIT
) -> list[AuditEntry]:
    """The newest entries first, optionally only of one actor, one cluster, or since a Unix time."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    query = AuditEntry.select()
    if user is not None:
        query = query.where(AuditEntry.actor == user)
    if cluster is not None:
        query = query.where(AuditEntry.cluster == cluster)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    return list(query.order_by(AuditEntry.id.desc()).limit(limit))


def prune(keep_days: float, now: float | None = None) -> int:
    """Delete the entries older than ``keep_days``; how many went."""
    if keep_days <= 0:
        raise InvalidInput(f"keep_days must be above 0, not {keep_days}")
    cutoff = (time.time() if now is None else now) - keep_days * 86400
    deleted = delete_where(AuditEntry, AuditEntry.at < cutoff)
    if deleted:
        log.info("audit: pruned %d entries older than %g days", deleted, keep_days)
    return deleted


class AuditPruner:
    """Prunes the audit log when called (each reconciler pass), at most once per ``every`` seconds."""

    def __init__(self, keep_days: float = KEEP_DAYS, every: float = PRUNE_SECONDS) -> None:
        self.keep_days = keep_days
        self.every = every
        self._last: float | None = None

    def run(self, now: float | None = None) -> int | None:
        """Entries deleted, or None when the last pruning is too recent."""
        now = time.time() if now is None else now
        if self._last is not None and 0 <= now - self._last < self.every:
            return None
        self._last = now
        return prune(self.keep_days, now)
