"""The reconciler: what the database says should happen, made to happen, at start and periodically.

One pass (``run_once``):
- fails every open task past its kind's deadline with reason ``TIMEOUT: ...`` (a node that never
  answers cannot hold a volume in ``Starting`` for good); the task's final hooks run as for an
  agent's report;
- publishes every open task again (retained, QoS 1): a task never waits only for a broker
  reconnect; agents deduplicate by task id through their journal;
- replays the final hooks of operations whose tasks are all final but that did not conclude
  (a hook raised after the task's commit, or the server died in between): hooks are idempotent,
  a volume records the operation that concluded, so a replay after a conclusion is a no-op;
- fails the operation of a volume that is in a running state with no task at all.

The server runs passes in the bridge's worker thread (``Bridge.call_soon``), serialised with the
handling of agents' reports, so a pass never races a report of the same task.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from broker.messages import TaskKind
from control.services.tasks import FINAL_STATES, OPEN_STATES, TaskEngine
from control.services.volumes import OPERATIONS, VolumeService
from control.store.models import Cluster, Device, Task, Volume

log = logging.getLogger(__name__)

RECONCILE_INTERVAL = 30.0  # seconds between two passes
STOP_TIMEOUT_SECONDS = 5.0
# seconds from QUEUED to a final state before a task fails with TIMEOUT; a setting overrides per kind
DEFAULT_DEADLINE = 3600.0
DEFAULT_DEADLINES: dict[str, float] = {
    TaskKind.NODE_PROBE.value: 300.0,
    TaskKind.DEVICE_ADD.value: 1800.0,  # mkfs of a large disk
    TaskKind.VOLUME_CREATE.value: 1800.0,
    TaskKind.VOLUME_START.value: 3600.0,
    TaskKind.VOLUME_STOP.value: 1800.0,
    TaskKind.VOLUME_DELETE.value: 3600.0,  # a purge walks every brick
    TaskKind.VOLUME_VOLFILES.value: 600.0,
    TaskKind.VOLUME_HEAL.value: 6 * 3600.0,
    TaskKind.VOLUME_REBALANCE.value: 7 * 24 * 3600.0,
}


class Report(NamedTuple):
    timed_out: int
    republished: int
    replayed: int
    concluded: int


def parse_deadlines(text: str) -> dict[str, float]:
    """``kind=seconds,kind=seconds`` (e.g. ``node.probe=60,volume.start=7200``) -> {kind: seconds}."""
    out: dict[str, float] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        kind, sep, value = part.partition("=")
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not sep or not kind.strip() or seconds <= 0:
            raise ValueError(f"invalid task deadline {part!r}: use KIND=SECONDS, e.g. node.probe=300,volume.start=3600")
        out[kind.strip()] = seconds
    return out


class Reconciler:
    def __init__(
        self,
        engine: TaskEngine,
        volumes: VolumeService,
        deadlines: dict[str, float] | None = None,
        interval: float = RECONCILE_INTERVAL,
    ) -> None:
        self.engine = engine
        self.volumes = volumes
        self.deadlines = {**DEFAULT_DEADLINES, **(deadlines or {})}
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # more work for every pass, after the reconciler's own (alert evaluation and monitoring topics)
        self.after_pass: list[Callable[[], object]] = []

    def deadline(self, kind: str) -> float:
        return self.deadlines.get(kind, DEFAULT_DEADLINE)

    # ---- one pass ---------------------------------------------------------------------------
    def run_once(self, now: float | None = None) -> Report:
        now = time.time() if now is None else now
        report = Report(
            timed_out=self.fail_overdue(now),
            republished=self.engine.republish_open(logging.DEBUG),
            replayed=self.replay_unconcluded(),
            concluded=self.conclude_empty(),
        )
        if report.timed_out or report.replayed or report.concluded:
            log.info(
                "reconciled: %d tasks timed out, %d open tasks republished, %d final hooks replayed, "
                "%d operations without tasks failed",
                *report,
            )
        for step in self.after_pass:
            try:
                step()
            except Exception:
                log.exception("reconciler pass: %s failed", getattr(step, "__qualname__", step))
        return report

    def fail_overdue(self, now: float) -> int:
        count = 0
        for task in Task.select(Task, Cluster).join(Cluster).where(Task.state.in_(OPEN_STATES)):
            limit = self.deadline(task.kind)
            age = now - task.created_at
            if age <= limit:
                continue
            reason = f"TIMEOUT: not finished {age:.0f}s after it was queued (the limit for {task.kind} is {limit:.0f}s)"
            if self.engine.fail(task, reason) is not None:
                count += 1
        return count

    def replay_unconcluded(self) -> int:
        """Final hooks again for operations whose tasks are all final but whose volume or device did not move."""
        count = 0
        running = [r.value for r, _, _ in OPERATIONS.values()]
        for volume in Volume.select().where(Volume.state.in_(running) & (Volume.operation != "")):
            if volume.concluded_operation == volume.operation:
                continue
            tasks = [
                *Task.select(Task, Cluster)
                .join(Cluster)
                .where(Task.operation == volume.operation)
                .order_by(Task.created_at)
            ]
            if not tasks or any(t.state not in FINAL_STATES for t in tasks):
                continue
            log.warning(
                "cluster %s volume %s: operation %s has only final tasks but did not conclude; replaying its hooks",
                tasks[-1].cluster.name,
                volume.name,
                volume.operation,
            )
            self.engine.run_final_hooks(tasks[-1])
            count += 1
        pending = Device.select(Device.task_id).where((Device.state == "Pending") & (Device.task_id != ""))
        for task in Task.select(Task, Cluster).join(Cluster).where(Task.id.in_(pending) & Task.state.in_(FINAL_STATES)):
            log.warning(
                "cluster %s task %s: device still Pending after its task ended; replaying", task.cluster.name, task.id
            )
            self.engine.run_final_hooks(task)
            count += 1
        return count

    def conclude_empty(self) -> int:
        running = [r.value for r, _, _ in OPERATIONS.values()]
        candidates = Volume.select().where(
            Volume.state.in_(running) & ~Volume.operation.in_(Task.select(Task.operation))
        )
        return sum(1 for volume in candidates if self.volumes.conclude_without_tasks(volume))

    # ---- the periodic thread --------------------------------------------------------------------
    def start(self, schedule: Callable[[Callable[[], object]], bool]) -> None:
        """Hand a pass to ``schedule`` now and every ``interval`` seconds (it returns False when it could not)."""
        if self._thread is not None:
            return

        def loop() -> None:
            while True:
                if not schedule(self.run_once):
                    log.warning("reconciler pass skipped: the bridge's worker is busy; next in %.0fs", self.interval)
                if self._stop.wait(self.interval):
                    return

        self._thread = threading.Thread(target=loop, name="reconciler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_SECONDS)
