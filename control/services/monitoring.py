"""Alerts kept current, and the retained MQTT topics third-party monitoring follows.

``Monitor.run`` evaluates alerts (``control.services.alerts``) for some clusters or all, and
publishes what changed, retained at QoS 1 (topics.md documents each payload):

- ``.../clusters/{cluster}/volumes/{volume}/status``: state, health, bricks up/total, capacity;
  cleared (empty retained payload) when the volume is deleted;
- ``.../clusters/{cluster}/alerts/{alert_id}``: a firing alert; cleared when it is resolved;
- ``.../clusters/{cluster}/summary``: nodes, volumes by health, firing alerts by severity.

A payload goes out only when it differs from the last one published (not on every heartbeat).
After every broker (re)connect everything is published again from the database, which is the
source of truth (retained messages are a cache), and the alerts resolved recently are cleared
again, in case their clearing was lost while the broker was away.

The server runs ``run`` in the monitor's own thread, off the bridge's worker (an evaluation of a
large cluster takes tens of milliseconds, which agents' task statuses must not wait for): for
all clusters after every reconciler pass (capacity moves only show there), and ``TRIGGER_DELAY``
after an event that can change an alert (node, brick, volume or task state) for that event's
cluster, coalescing bursts. Alert rows are written in short transactions of their own; a state
change that lands during an evaluation triggers the next one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from pydantic import BaseModel

from broker.messages import Health, TaskKind, TaskState, VolumeState
from broker.topics import ANY, Topics, filter_matches
from control.services import alerts, events
from control.services.alerts import AlertState, Change, Snapshot
from control.store.db import outage
from control.store.models import Alert, Cluster, Event

log = logging.getLogger(__name__)

TRIGGER_DELAY = 0.5  # seconds from a state change to its evaluation (its transaction commits meanwhile)
# a run waits this many times the previous run's length after it: while thousands of nodes register,
# back-to-back runs over the whole fleet would take the CPU the registrations need
PACE = 4.0
RECLEAR_SECONDS = 24 * 3600.0  # alerts resolved this recently are cleared again after a reconnect
TRIGGER_KINDS = ("node.state", "node.removed", "brick.state", "volume.state", "task.state")
STOP_TIMEOUT_SECONDS = 5.0
RETRY_SECONDS = 2.0  # after a failed evaluation (the database out), before the next try


class Publisher(Protocol):
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None: ...


# ---- payloads -----------------------------------------------------------------------------------
class VolumeStatusMessage(BaseModel):
    cluster: str
    volume: str
    state: str
    health: str | None  # Healthy, Degraded, Down; None when not started
    bricks_up: int
    bricks_total: int
    size: int | None  # bytes, from the layout; None until every subvolume reported
    used: int | None
    free: int | None
    percent: float | None


class AlertMessage(BaseModel):
    id: int
    cluster: str
    kind: str
    subject: str
    severity: str
    summary: str
    state: str
    since: float


class ClusterSummaryMessage(BaseModel):
    cluster: str
    nodes: int
    nodes_online: int
    volumes: int
    volumes_started: int
    volumes_by_health: dict[str, int]  # Healthy, Degraded, Down
    alerts_firing: dict[str, int]  # warning, critical


def volume_status(cluster: str, vol: alerts.VolumeFact) -> VolumeStatusMessage:
    return VolumeStatusMessage(
        cluster=cluster,
        volume=vol.name,
        state=vol.state,
        health=vol.health.value if vol.health else None,
        bricks_up=vol.bricks_up,
        bricks_total=len(vol.bricks),
        size=vol.size,
        used=vol.used,
        free=vol.free,
        percent=vol.percent,
    )


def alert_message(cluster: str, alert: Alert) -> AlertMessage:
    return AlertMessage(
        id=alert.id,
        cluster=cluster,
        kind=alert.kind,
        subject=alert.subject,
        severity=alert.severity,
        summary=alert.summary,
        state=alert.state,
        since=alert.since,
    )


def cluster_summary(snap: Snapshot, firing: dict[tuple[str, str], int]) -> ClusterSummaryMessage:
    by_health = {h.value: 0 for h in Health}
    for vol in snap.volumes:
        if vol.health is not None:
            by_health[vol.health.value] += 1
    return ClusterSummaryMessage(
        cluster=snap.cluster,
        nodes=len(snap.nodes),
        nodes_online=sum(1 for n in snap.nodes if n.state == alerts.ONLINE),
        volumes=len(snap.volumes),
        volumes_started=sum(1 for v in snap.volumes if v.state == VolumeState.STARTED),
        volumes_by_health=by_health,
        alerts_firing={s.value: firing.get((snap.cluster, s.value), 0) for s in alerts.Severity},
    )


# ---- the monitor ----------------------------------------------------------------------------------
class Monitor:
    def __init__(self, topics: Topics, publisher: Publisher | None = None, delay: float = TRIGGER_DELAY) -> None:
        self.topics = topics
        self.publisher = publisher
        self.delay = delay
        self._published: dict[str, bytes] = {}  # retained topic -> the payload last published there
        self._lock = threading.Lock()  # run() is called from the monitor's thread, and from tests
        self._dirty: set[str] = set()
        self._all = False  # every cluster is due (a reconciler pass asked)
        self._dirty_lock = threading.Lock()  # held only for a moment: recording threads take it
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None

    # ---- one evaluation ---------------------------------------------------------------------------
    def run(self, clusters: set[str] | None = None, now: float | None = None) -> list[Change]:
        """Evaluate the alerts of ``clusters`` (all when None) and publish what changed."""
        now = time.time() if now is None else now
        with self._lock:
            snaps = alerts.snapshots(clusters, now)
            changes: list[Change] = []
            for snap in snaps:
                changes.extend(alerts.sync(snap.cluster, alerts.evaluate(snap, now), now))
            self._publish_state(snaps, clusters, changes)
        return changes

    def republish(self) -> None:
        """Publish every monitoring topic again from the database (after a broker (re)connect)."""
        now = time.time()
        with self._lock:
            self._published.clear()
            snaps = alerts.snapshots(None, now)
            for alert in alerts.list_alerts():
                self._send(
                    self.topics.alert(alert.cluster.name, str(alert.id)),
                    _json(alert_message(alert.cluster.name, alert)),
                )
            recent = (
                Alert.select(Alert.id, Cluster.name)
                .join(Cluster)
                .where((Alert.state == AlertState.RESOLVED.value) & (Alert.until > now - RECLEAR_SECONDS))
            )
            for alert in recent:
                self._send(self.topics.alert(alert.cluster.name, str(alert.id)), b"")
            self._publish_state(snaps, None, [])
        log.info("monitoring topics published again for %d clusters", len(snaps))

    def _publish_state(self, snaps: list[Snapshot], asked: set[str] | None, changes: list[Change]) -> None:
        for change in changes:
            cluster = change.alert.cluster.name
            topic = self.topics.alert(cluster, str(change.alert.id))
            if change.state == AlertState.FIRING:
                self._send(topic, _json(alert_message(cluster, change.alert)))
            else:
                self._send(topic, b"")
        firing = alerts.firing_counts()
        current: set[str] = set()
        for snap in snaps:
            summary = self.topics.cluster_summary(snap.cluster)
            self._send_if_changed(summary, _json(cluster_summary(snap, firing)))
            current.add(summary)
            for vol in snap.volumes:
                topic = self.topics.volume_status(snap.cluster, vol.name)
                self._send_if_changed(topic, _json(volume_status(snap.cluster, vol)))
                current.add(topic)
        # volumes (and clusters) that went away since their last publication: clear their topics
        covered = {s.cluster for s in snaps} | (asked or set())
        for topic in [t for t in self._published if t not in current]:
            parsed = self.topics.parse_cluster_topic(topic)
            if parsed is None:
                continue
            cluster = parsed[0]
            if filter_matches(self.topics.alert(cluster, ANY), topic):
                continue  # an alert's topic is cleared when the alert resolves
            if asked is None or cluster in covered:
                self._send(topic, b"")
                del self._published[topic]

    def _send_if_changed(self, topic: str, payload: bytes) -> None:
        if self._published.get(topic) != payload:
            self._send(topic, payload)
            self._published[topic] = payload

    def _send(self, topic: str, payload: bytes) -> None:
        if self.publisher is None:
            return
        try:
            self.publisher.publish(topic, payload, qos=1, retain=True)
        except Exception:  # the broker link may be down: the next (re)connect publishes everything again
            log.warning("could not publish %s (%d bytes); published again at the next reconnect", topic, len(payload))

    # ---- triggers ----------------------------------------------------------------------------------
    def start(self, may_run: Callable[[], bool] = lambda: True) -> None:
        """Evaluate, in a thread of the monitor's own, the cluster of each state-changing event ``delay``
        later, and every cluster after ``evaluate_all``; only while ``may_run()`` (this server leads)."""
        if self._thread is not None:
            return
        self._unsubscribe = events.subscribe(self._on_event)

        def loop() -> None:
            took = 0.0  # the previous run's length
            while not self._stop.is_set():
                self._wake.wait()
                if self._stop.wait(max(self.delay, PACE * took)):
                    return
                self._wake.clear()
                with self._dirty_lock:
                    dirty, every, self._dirty, self._all = self._dirty, self._all, set(), False
                if not (dirty or every) or not may_run():
                    continue
                started = time.monotonic()
                try:
                    self.run(None if every else dirty)
                    took = time.monotonic() - started
                except Exception as exc:  # the database may be out: evaluate again after a wait
                    what = "all clusters" if every else ",".join(sorted(dirty))
                    if outage(exc) is None:
                        log.exception("alert evaluation of %s failed", what)
                    else:
                        log.warning("alert evaluation of %s waits for the database: %s", what, str(exc)[:200])
                    with self._dirty_lock:
                        self._dirty |= dirty
                        self._all = self._all or every
                    self._stop.wait(RETRY_SECONDS)
                    self._wake.set()

        self._thread = threading.Thread(target=loop, name="monitor", daemon=True)
        self._thread.start()

    def evaluate_all(self) -> None:
        """Ask for an evaluation of every cluster in the monitor's thread (after a reconciler pass)."""
        with self._dirty_lock:
            self._all = True
        self._wake.set()

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_SECONDS)

    def _on_event(self, event: Event) -> None:
        # runs in the recording thread, inside its transaction: note and wake, never wait
        if event.kind not in TRIGGER_KINDS or not event.cluster:
            return
        if event.kind == "task.state" and not _task_event_counts(event.data or {}):
            return
        with self._dirty_lock:
            self._dirty.add(event.cluster)
        self._wake.set()


def _task_event_counts(data: dict[str, object]) -> bool:
    """A task's end matters to health when it failed (a failed-task alert), or when it is a heal whose
    result is the volume's self-heal backlog; every other task's end changes nothing evaluated here."""
    state = data.get("state")
    return state == TaskState.FAILED.value or (
        state == TaskState.DONE.value and data.get("kind") == TaskKind.VOLUME_HEAL.value
    )


def _json(message: BaseModel) -> bytes:
    return message.model_dump_json().encode()
