"""Alerts: what is wrong in a cluster, evaluated in one place, stored with a lifecycle.

``evaluate`` is pure: from a ``Snapshot`` of the current state (nodes, started volumes with their
bricks, health and capacity, recently failed tasks) it returns the alerts that should fire now.
``sync`` makes the store agree: it opens a row (``firing``, ``since``) for each alert that should
fire and has none, and resolves (``resolved``, ``until``) each firing row that should not; each
transition is one event (``alert.firing``, ``alert.resolved``). ``run`` does both for some or all
clusters; the server runs it on every reconciler pass and shortly after the events that change
an alert (node, brick, volume and task state), serialised with the bridge's handlers.

Kinds and severities follow the shipped Prometheus rules (docs/prometheus/alerts.yml).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from broker.messages import BrickState, Health, NodeState, TaskKind, TaskState, VolumeState
from control.services import events
from control.services.authz import Scope
from control.services.capacity import BrickSpace, VolumeShape, volume_capacity
from control.services.health import volume_health
from control.store.models import Alert, Brick, Cluster, Node, Task, Volume
from control.store.models import database_proxy as db

log = logging.getLogger(__name__)

CAPACITY_WARNING_PERCENT = 80.0
CAPACITY_CRITICAL_PERCENT = 90.0
FAILED_TASK_WINDOW_SECONDS = 3600.0  # a failed task is an alert for this long after it failed
HEAL_INFO_MAX_AGE_SECONDS = 3600.0  # heal counts older than this are not known any more
ONLINE = NodeState.ONLINE.value


class Kind(str, enum.Enum):
    NODE_UNREACHABLE = "node.unreachable"
    BRICK_OFFLINE = "brick.offline"
    VOLUME_DEGRADED = "volume.degraded"
    VOLUME_DOWN = "volume.down"
    CAPACITY_WARNING = "volume.capacity-warning"
    CAPACITY_CRITICAL = "volume.capacity-critical"
    HEAL_BACKLOG = "volume.heal-backlog"
    TASK_FAILED = "task.failed"


class Severity(str, enum.Enum):
    WARNING = "warning"
    CRITICAL = "critical"


SEVERITY: dict[Kind, Severity] = {
    Kind.NODE_UNREACHABLE: Severity.CRITICAL,
    Kind.BRICK_OFFLINE: Severity.CRITICAL,
    Kind.VOLUME_DEGRADED: Severity.WARNING,
    Kind.VOLUME_DOWN: Severity.CRITICAL,
    Kind.CAPACITY_WARNING: Severity.WARNING,
    Kind.CAPACITY_CRITICAL: Severity.CRITICAL,
    Kind.HEAL_BACKLOG: Severity.WARNING,
    Kind.TASK_FAILED: Severity.WARNING,
}


class AlertState(str, enum.Enum):
    FIRING = "firing"
    RESOLVED = "resolved"


TRANSITIONS: dict[AlertState, frozenset[AlertState]] = {
    AlertState.FIRING: frozenset({AlertState.RESOLVED}),
    AlertState.RESOLVED: frozenset(),  # a condition that comes back is a new alert
}


class IllegalTransition(Exception):
    pass


def check_transition(old: AlertState, new: AlertState) -> None:
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"an alert cannot go from {old.value} to {new.value}")


# ---- what evaluation sees -----------------------------------------------------------------------
@dataclass(frozen=True)
class NodeFact:
    name: str
    state: str


@dataclass(frozen=True)
class BrickFact:
    node: str
    path: str
    state: str  # Online, Offline, Lost (as stored)


@dataclass(frozen=True)
class VolumeFact:
    name: str
    state: str
    health: Health | None
    percent: float | None  # used, of the size from the layout; None: not known
    bricks: tuple[BrickFact, ...] = ()
    heal_pending: int | None = None  # entries waiting for self-heal, from a recent heal info; None: unknown
    bricks_up: int = 0  # Online on an Online node
    size: int | None = None  # bytes, from the layout; None: not known
    used: int | None = None
    free: int | None = None


@dataclass(frozen=True)
class FailedTask:
    id: str
    kind: str
    node: str
    target: str
    reason: str
    finished_at: float


@dataclass
class Snapshot:
    """One cluster's state as evaluation needs it."""

    cluster: str
    nodes: list[NodeFact] = field(default_factory=list)
    volumes: list[VolumeFact] = field(default_factory=list)
    failed_tasks: list[FailedTask] = field(default_factory=list)


@dataclass(frozen=True)
class Wanted:
    """An alert that should fire now."""

    kind: Kind
    subject: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def severity(self) -> Severity:
        return SEVERITY[self.kind]


def evaluate(snap: Snapshot, now: float) -> dict[tuple[str, str], Wanted]:
    """The alerts that should fire in ``snap``'s cluster, by (kind, subject)."""
    out: list[Wanted] = []
    online = {n.name for n in snap.nodes if n.state == ONLINE}
    for node in snap.nodes:
        if node.state == NodeState.UNREACHABLE.value:
            out.append(
                Wanted(Kind.NODE_UNREACHABLE, node.name, f"node {node.name} is Unreachable", {"node": node.name})
            )
    for vol in snap.volumes:
        if vol.state != VolumeState.STARTED.value:
            continue
        for brick in vol.bricks:
            # a brick on a node that is away is covered by the node's alert
            if brick.state != BrickState.ONLINE and brick.node in online:
                where = f"{brick.node}:{brick.path}"
                out.append(
                    Wanted(
                        Kind.BRICK_OFFLINE,
                        f"{vol.name}:{where}",
                        f"brick {where} of volume {vol.name} is {brick.state}",
                        {"volume": vol.name, "node": brick.node, "path": brick.path},
                    )
                )
        if vol.health == Health.DEGRADED:
            text = f"volume {vol.name} is Degraded: bricks are down, every subvolume still serves"
            out.append(Wanted(Kind.VOLUME_DEGRADED, vol.name, text, {"volume": vol.name}))
        elif vol.health == Health.DOWN:
            text = f"volume {vol.name} is Down: a subvolume lost its quorum or its only brick"
            out.append(Wanted(Kind.VOLUME_DOWN, vol.name, text, {"volume": vol.name}))
        if vol.percent is not None and vol.percent >= CAPACITY_WARNING_PERCENT:
            kind = Kind.CAPACITY_CRITICAL if vol.percent >= CAPACITY_CRITICAL_PERCENT else Kind.CAPACITY_WARNING
            limit = CAPACITY_CRITICAL_PERCENT if kind == Kind.CAPACITY_CRITICAL else CAPACITY_WARNING_PERCENT
            text = f"volume {vol.name} is {vol.percent:.1f}% full (at least {limit:.0f}%)"
            out.append(Wanted(kind, vol.name, text, {"volume": vol.name, "percent": vol.percent}))
        if vol.heal_pending:
            text = f"volume {vol.name} has {vol.heal_pending} entries waiting for self-heal"
            out.append(Wanted(Kind.HEAL_BACKLOG, vol.name, text, {"volume": vol.name, "pending": vol.heal_pending}))
    for task in snap.failed_tasks:
        if now - task.finished_at > FAILED_TASK_WINDOW_SECONDS:
            continue
        text = f"task {task.kind} on node {task.node} failed: {task.reason[:200]}"
        details = {"node": task.node, "task": task.id, "task_kind": task.kind, "target": task.target}
        out.append(Wanted(Kind.TASK_FAILED, task.id, text, details))
    return {(w.kind.value, w.subject): w for w in out}


# ---- reading the store --------------------------------------------------------------------------
def snapshots(cluster_names: set[str] | None = None, now: float | None = None) -> list[Snapshot]:
    """The current state of the named clusters (all when None), a few grouped queries for all of them."""
    now = time.time() if now is None else now
    query = Cluster.select(Cluster.id, Cluster.name)
    if cluster_names is not None:
        query = query.where(Cluster.name.in_(list(cluster_names)))
    by_id = {c.id: Snapshot(c.name) for c in query}
    if not by_id:
        return []
    ids = list(by_id)
    online: set[tuple[int, str]] = set()
    # tuples, not model instances: at thousands of nodes building the instances was most of a run
    query_nodes = Node.select(Node.cluster, Node.name, Node.state).where(Node.cluster.in_(ids)).order_by(Node.name)
    node_rows: Iterable[tuple[int, str, str]] = query_nodes.tuples()  # type: ignore[assignment]  # peewee's stubs
    for cluster_id, name, state in node_rows:
        by_id[cluster_id].nodes.append(NodeFact(name, state))
        if state == ONLINE:
            online.add((cluster_id, name))
    volumes = list(Volume.select().where(Volume.cluster.in_(ids)).order_by(Volume.name))
    bricks: dict[str, list[Brick]] = {}
    if volumes:
        for brick in Brick.select().where(Brick.volume.in_([v.id for v in volumes])).order_by(Brick.index):
            bricks.setdefault(brick.volume_id, []).append(brick)
    pending = heal_pending([v.id for v in volumes if v.state == VolumeState.STARTED.value], now)
    for volume in volumes:
        rows = bricks.get(volume.id, [])
        shape = VolumeShape(volume.type, volume.replica, volume.disperse, volume.redundancy)
        up = [b.state == BrickState.ONLINE and (volume.cluster_id, b.node_name) in online for b in rows]
        health = volume_health(shape, volume.state, up, volume.options or {})
        capacity = volume_capacity(shape, [BrickSpace(b.total_bytes, b.used_bytes) for b in rows])
        by_id[volume.cluster_id].volumes.append(
            VolumeFact(
                name=volume.name,
                state=volume.state,
                health=health,
                percent=capacity.percent if capacity and capacity.size else None,
                bricks=tuple(BrickFact(b.node_name, b.path, b.state) for b in rows),
                heal_pending=pending.get(volume.id),
                bricks_up=sum(up),
                size=capacity.size if capacity else None,
                used=capacity.used if capacity else None,
                free=capacity.free if capacity else None,
            )
        )
    recent = Task.select(
        Task.id, Task.cluster, Task.kind, Task.node_name, Task.target, Task.reason, Task.finished_at
    ).where(
        Task.cluster.in_(ids)
        & (Task.state == TaskState.FAILED.value)
        & (Task.finished_at > now - FAILED_TASK_WINDOW_SECONDS)
    )
    for task in recent:
        by_id[task.cluster_id].failed_tasks.append(
            FailedTask(task.id, task.kind, task.node_name, task.target, task.reason, float(task.finished_at or now))
        )
    return list(by_id.values())


@dataclass(frozen=True)
class BrickHeal:
    """One brick's count from a heal info or summary: entries waiting for self-heal."""

    brick: str  # as glfsheal names it: ADDRESS:/path (ADDRESS as in the client volfile)
    entries: int | None  # None: glfsheal could not tell (the brick was not connected)


def latest_heal_counts(volume_ids: list[str], now: float) -> dict[str, list[BrickHeal]]:
    """Per volume id, each brick's count from the volume's latest heal info or summary, if it finished within
    ``HEAL_INFO_MAX_AGE_SECONDS``; volumes without one are left out."""
    if not volume_ids:
        return {}
    volumes = Volume.select(Volume.id, Volume.name, Volume.cluster).where(Volume.id.in_(volume_ids))
    targets = {(v.cluster_id, f"volume:{v.name}"): v.id for v in volumes}
    if not targets:
        return {}
    query = (
        Task.select(Task.cluster, Task.target, Task.params, Task.result, Task.finished_at)
        .where(
            (Task.kind == TaskKind.VOLUME_HEAL.value)
            & (Task.state == TaskState.DONE.value)
            & Task.cluster.in_(list({c for c, _ in targets}))
            & Task.target.in_(list({t for _, t in targets}))
            & (Task.finished_at > now - HEAL_INFO_MAX_AGE_SECONDS)
        )
        .order_by(Task.finished_at.desc())
    )
    out: dict[str, list[BrickHeal]] = {}
    for task in query:
        volume_id = targets.get((task.cluster_id, task.target))
        if volume_id is None or volume_id in out or (task.params or {}).get("op") not in ("info", "summary"):
            continue
        out[volume_id] = [
            BrickHeal(str(brick.get("brick") or ""), _pending_entries(brick))
            for brick in (task.result or {}).get("bricks") or []
            if isinstance(brick, dict)
        ]
    return out


def _pending_entries(brick: dict[str, Any]) -> int | None:
    counts = brick.get("files") if isinstance(brick.get("files"), dict) else {}
    value = counts.get("pending", brick.get("entries")) if counts else brick.get("entries")
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def heal_pending(volume_ids: list[str], now: float) -> dict[str, int]:
    """Entries waiting for self-heal per volume, from each volume's latest heal info or summary (if recent)."""
    return {
        volume_id: sum(b.entries or 0 for b in bricks)
        for volume_id, bricks in latest_heal_counts(volume_ids, now).items()
    }


# ---- making the store agree ----------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    """One transition ``sync`` made: the row as it is now."""

    alert: Alert
    state: AlertState


def sync(cluster: str, wanted: dict[tuple[str, str], Wanted], now: float) -> list[Change]:
    """Open the wanted alerts that have no firing row, resolve the firing rows no longer wanted."""
    changes: list[Change] = []
    with db.atomic():
        row = Cluster.get_or_none(Cluster.name == cluster)
        if row is None:
            return []
        firing = {
            (a.kind, a.subject): a
            for a in Alert.select().where((Alert.cluster == row) & (Alert.state == AlertState.FIRING.value))
        }
        for key, alert in firing.items():
            want = wanted.get(key)
            if want is None:
                check_transition(AlertState(alert.state), AlertState.RESOLVED)
                alert.state, alert.until = AlertState.RESOLVED.value, now
                alert.save()
                log.info("cluster %s alert %d %s %s: resolved", cluster, alert.id, alert.kind, alert.subject)
                events.record("alert.resolved", cluster=cluster, subject=alert.subject, **_event_data(alert))
                changes.append(Change(alert, AlertState.RESOLVED))
            elif want.summary != alert.summary or want.details != alert.details:
                alert.summary, alert.details = want.summary, want.details
                alert.save()
        for key, want in wanted.items():
            if key in firing:
                continue
            alert = Alert.create(
                cluster=row,
                kind=want.kind.value,
                subject=want.subject,
                severity=want.severity.value,
                summary=want.summary,
                details=want.details,
                state=AlertState.FIRING.value,
                since=now,
            )
            log.info(
                "cluster %s alert %d %s %s: firing (%s)", cluster, alert.id, alert.kind, alert.subject, want.summary
            )
            events.record("alert.firing", cluster=cluster, subject=alert.subject, **_event_data(alert))
            changes.append(Change(alert, AlertState.FIRING))
    return changes


def _event_data(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "kind": alert.kind,
        "severity": alert.severity,
        "summary": alert.summary,
        "since": alert.since,
        "until": alert.until,
        **{k: v for k, v in (alert.details or {}).items() if k in ("node", "volume")},
    }


def run(clusters: set[str] | None = None, now: float | None = None) -> list[Change]:
    """Evaluate and sync the named clusters (all when None); the transitions made."""
    now = time.time() if now is None else now
    changes: list[Change] = []
    for snap in snapshots(clusters, now):
        changes.extend(sync(snap.cluster, evaluate(snap, now), now))
    return changes


# ---- reading alerts -------------------------------------------------------------------------------
def list_alerts(cluster: str | None = None, include_resolved: bool = False, limit: int = 1000) -> list[Alert]:
    """Firing alerts (with ``include_resolved`` also resolved ones), newest first."""
    query = Alert.select(Alert, Cluster).join(Cluster)
    if cluster:
        query = query.where(Cluster.name == cluster)
    if not include_resolved:
        query = query.where(Alert.state == AlertState.FIRING.value)
    return list(query.order_by(Alert.since.desc(), Alert.id.desc()).limit(limit))


def visible_to(scope: Scope, alert: Alert) -> bool:
    """Cluster readers see every alert of the cluster; others those of the nodes, volumes and tasks they see."""
    return scope.sees_event(alert.cluster.name, alert.kind, alert.subject, alert.details or {})


def firing_counts() -> dict[tuple[str, str], int]:
    """Firing alerts per (cluster, severity)."""
    out: dict[tuple[str, str], int] = {}
    query = Alert.select(Alert.severity, Cluster.name).join(Cluster).where(Alert.state == AlertState.FIRING.value)
    for alert in query:
        key = (alert.cluster.name, alert.severity)
        out[key] = out.get(key, 0) + 1
    return out
