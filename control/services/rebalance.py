"""Rebalance: GlusterFS's rebalance process on every node holding bricks, its status kept per node.

- start: one ``volume.rebalance`` task (op start) per node with the rebalance volfile, the run id
  and the commit hash (the same on every node, as glusterd sends them); each agent starts and
  supervises its node's process (agent/rebalance.py).
- stop: op stop on every node of the run; status: op status on every node (a live poll on demand).

The control service follows a run without asking: every agent heartbeat carries the node's status
of each run it recorded (its process polled every few seconds, then final), and each report, like
every finished task's result, updates that node's ``RebalanceNode`` row. So progress, completion
and the ``rebalance.state`` events come without any client polling; the last known status survives
a control-service restart (rows in the database; a run that ended while the server was down is
learnt from the next heartbeat), and ``status`` reads it from the database. The volume's state is
the aggregate of its nodes' (in progress while one runs; failed, stopped or completed after).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from broker.messages import NodeState, RebalanceReport, RebalanceState, TaskKind, TaskState, VolumeState
from control.errors import Conflict, InvalidInput
from control.services import events
from control.services.tasks import TaskEngine
from control.services.volfiles import bricks_of, spec_of
from control.store.db import delete_where, first, locked
from control.store.models import Cluster, Node, RebalanceNode, Task, Volume
from control.store.models import database_proxy as db
from control.volgen import VolgenError, rebalance_volfile

log = logging.getLogger(__name__)

REBALANCE = TaskKind.VOLUME_REBALANCE.value
R = RebalanceState
COUNTERS = ("files", "size", "lookups", "failures", "skipped")
# the volume's state from its nodes': the first of these any node is in
AGGREGATE_ORDER = (R.IN_PROGRESS, R.NOT_STARTED, R.FAILED, R.STOPPED, R.COMPLETED)


def commit_hash(now: float | None = None) -> int:
    """A new layout commit hash as glusterd makes it (gd_set_commit_hash): seconds << 3, with one of
    the low three bits set, so two runs never share one."""
    now = time.time() if now is None else now
    seconds, usec = int(now), int((now % 1) * 1_000_000)
    return ((seconds << 3) & 0xFFFFFFFF) | (1 << ((usec >> 10) % 3))


def _ref(volume: Volume) -> dict[str, str]:
    return {"id": volume.id, "name": volume.name, "type": volume.type}


def _nodes(volume: Volume) -> list[str]:
    return list(dict.fromkeys(b.node_name for b in bricks_of(volume)))


class RebalanceService:
    def __init__(self, engine: TaskEngine) -> None:
        self.engine = engine
        engine.on_final.append(self.task_finished)

    # ---- requests -------------------------------------------------------------------------
    def start(self, cluster: Cluster, volume: Volume, fix_layout: bool = False) -> tuple[str, list[Task]]:
        """Start a rebalance (or only a fix-layout) on every node holding bricks; returns (run, tasks)."""
        if volume.state != VolumeState.STARTED.value:
            raise Conflict(
                f"volume {volume.name!r} is {volume.state}: rebalance runs on a Started volume "
                f"(glusterctl volume start -c {cluster.name} {volume.name})"
            )
        rows = bricks_of(volume)
        spec = spec_of(volume, rows)
        try:
            volfile = rebalance_volfile(spec)
        except VolgenError as exc:
            raise InvalidInput(
                f"{exc}; add bricks with 'glusterctl volume expand -c {cluster.name} {volume.name} NODE:/path ...'"
            ) from None
        nodes = _nodes(volume)
        online = {
            n.name
            for n in Node.select(Node.name).where((Node.cluster == cluster) & (Node.state == NodeState.ONLINE.value))
        }
        offline = [n for n in nodes if n not in online]
        if offline:
            raise Conflict(
                f"rebalance needs every node holding bricks of {volume.name!r} Online; not Online: {', '.join(offline)}"
            )
        command = "fix-layout" if fix_layout else "full"
        run = uuid.uuid4().hex
        params: dict[str, Any] = {
            "volume": _ref(volume),
            "op": "start",
            "command": command,
            "run": run,
            "commit_hash": commit_hash(),
            "volfile": volfile,
        }
        with db.atomic():
            running = self.running_nodes(volume)
            if running:
                raise Conflict(
                    f"a rebalance of volume {volume.name!r} is in progress on {', '.join(running)}: "
                    f"wait for it or stop it (glusterctl volume rebalance stop -c {cluster.name} {volume.name})"
                )
            delete_where(RebalanceNode, RebalanceNode.volume == volume)
            for node in nodes:
                RebalanceNode.create(volume=volume, node_name=node, run=run, command=command, state=R.NOT_STARTED.value)
            events.record(
                "volume.rebalance", cluster=cluster.name, subject=volume.name, op="start", command=command, run=run
            )
            tasks = [
                self.engine.submit(cluster, node, REBALANCE, params, operation=run, target=f"volume:{volume.name}")
                for node in nodes
            ]
        log.info(
            "cluster %s volume %s: rebalance %s (%s) requested on %s",
            cluster.name,
            volume.name,
            run,
            command,
            ",".join(nodes),
        )
        self.engine.publish(tasks)
        return run, tasks

    @staticmethod
    def running_nodes(volume: Volume) -> list[str]:
        """The nodes whose rebalance process of ``volume`` is in progress, sorted."""
        query = RebalanceNode.select(RebalanceNode.node_name).where(
            (RebalanceNode.volume == volume) & (RebalanceNode.state == R.IN_PROGRESS.value)
        )
        return sorted(r.node_name for r in query)

    def _each_node(self, cluster: Cluster, volume: Volume, op: str) -> list[Task]:
        rows = list(RebalanceNode.select().where(RebalanceNode.volume == volume))
        if not rows:
            raise Conflict(
                f"volume {volume.name!r} was never rebalanced: start one "
                f"(glusterctl volume rebalance start -c {cluster.name} {volume.name})"
            )
        params = {"volume": _ref(volume), "op": op}
        with db.atomic():
            if op == "stop":
                events.record("volume.rebalance", cluster=cluster.name, subject=volume.name, op="stop", run=rows[0].run)
            tasks = [
                self.engine.submit(
                    cluster, r.node_name, REBALANCE, params, operation=r.run, target=f"volume:{volume.name}"
                )
                for r in rows
            ]
        self.engine.publish(tasks)
        return tasks

    def stop(self, cluster: Cluster, volume: Volume) -> list[Task]:
        """Stop the rebalance process on every node of the last run."""
        tasks = self._each_node(cluster, volume, "stop")
        log.info("cluster %s volume %s: rebalance stop requested", cluster.name, volume.name)
        return tasks

    def refresh(self, cluster: Cluster, volume: Volume) -> list[Task]:
        """Ask every node of the last run for its live status (the rows update as the tasks finish)."""
        return self._each_node(cluster, volume, "status")

    # ---- results ------------------------------------------------------------------------------
    def task_finished(self, task: Task) -> None:
        if task.kind != REBALANCE:
            return
        volume = (task.params or {}).get("volume", {})
        op = (task.params or {}).get("op")
        result = task.result or {}
        with db.atomic():
            row = _row(str(volume.get("id", "")), task.node_name, task.operation)
            if row is None:
                return  # a task of an older run
            if task.state != TaskState.DONE.value:
                _save(
                    row,
                    task.cluster.name,
                    str(volume.get("name", "")),
                    state=R.FAILED if op == "start" else None,
                    error=task.reason or "the task failed",
                )
            elif result.get("run") in (None, row.run):
                _apply(row, task.cluster.name, str(volume.get("name", "")), result)


RECHECK_SECONDS = 60.0  # an unchanged report is written again at most this often (a check after another leader's)
_reported: dict[tuple[str, str, str], tuple[RebalanceReport, float]] = {}
_reported_lock = threading.Lock()


def apply_reports(cluster_name: str, node_name: str, reports: list[RebalanceReport], now: float | None = None) -> int:
    """Apply the rebalance runs that a trusted heartbeat of ``node_name`` reports.

    A report of its volume's last run updates that node's row (progress, the final state, and a
    ``rebalance.state`` event when the state changed); reports of older runs are ignored. Agents
    report every run on each heartbeat, final ones too, so a restarted server (or a new leader)
    learns how a run ended. A report equal to the last one seen is skipped for ``RECHECK_SECONDS``.
    Returns the number of reports applied to a row."""
    now = time.time() if now is None else now
    applied = 0
    for report in reports:
        key = (cluster_name, node_name, report.volume_id)
        with _reported_lock:
            seen = _reported.get(key)
        if seen is not None and seen[0] == report and now - seen[1] < RECHECK_SECONDS:
            continue
        # only a volume of the reporting node's own cluster: an id from another cluster is never touched
        volume = first(
            Volume.select(Volume.id, Volume.name)
            .join(Cluster)
            .where((Volume.id == report.volume_id) & (Cluster.name == cluster_name))
        )
        if volume is None:
            continue  # not remembered either: the agent cannot fill the server's memory with made-up ids
        with db.atomic():
            row = _row(volume.id, node_name, report.run)
            if row is not None:
                _apply(row, cluster_name, volume.name, report.model_dump(mode="json"))
                applied += 1
        with _reported_lock:
            _reported[key] = (report, now)
    return applied


def forget_reports() -> None:
    """Drop the reports seen (tests; a server that becomes the leader again checks every run anew)."""
    with _reported_lock:
        _reported.clear()


def _row(volume_id: str, node_name: str, run: str) -> RebalanceNode | None:
    """The node's row of ``run`` (locked for the update), or None when the volume's last run is another."""
    row = first(
        locked(
            RebalanceNode.select().where((RebalanceNode.volume == volume_id) & (RebalanceNode.node_name == node_name))
        )
    )
    return row if row is not None and row.run == run else None


def _apply(row: RebalanceNode, cluster: str, volume_name: str, result: dict[str, Any]) -> None:
    """A node's status of the row's run (a task's result or a heartbeat's report) into its row."""
    try:
        state = R(result.get("state") or R.NOT_STARTED.value)
    except ValueError:
        state = R.FAILED
    if state == R.NOT_STARTED and row.state != R.NOT_STARTED.value:
        return  # the node lost its record: keep what it reported before
    if R(row.state).final and not state.final:
        return  # a run does not resume: an older status (a late start task's answer) after the final one
    counters = {k: int(result.get(k) or 0) for k in COUNTERS}
    _save(
        row,
        cluster,
        volume_name,
        state=state,
        error=str(result.get("error") or ""),
        counters=counters,
        run_time=float(result.get("run_time") or 0),
    )


def _figures(row: RebalanceNode) -> tuple[Any, ...]:
    return (row.state, row.error, row.run_time, *(getattr(row, k) for k in COUNTERS))


def _save(
    row: RebalanceNode,
    cluster: str,
    volume_name: str,
    state: R | None,
    error: str,
    counters: dict[str, int] | None = None,
    run_time: float | None = None,
) -> None:
    """Write what changed (nothing when nothing did); a state change is logged and recorded as an event."""
    old_state, before = row.state, _figures(row)
    if state is not None:
        row.state = state.value
    row.error = error
    for key, value in (counters or {}).items():
        setattr(row, key, value)
    if run_time is not None:
        row.run_time = run_time
    if _figures(row) == before:
        return
    row.updated_at = time.time()
    row.save()
    if old_state == row.state:
        return
    events.record(
        "rebalance.state",
        cluster=cluster,
        subject=f"{volume_name}@{row.node_name}",
        run=row.run,
        state=row.state,
        files=row.files,
        failures=row.failures,
    )
    log.info(
        "cluster %s volume %s node %s: rebalance %s %s -> %s",
        cluster,
        volume_name,
        row.node_name,
        row.run,
        old_state,
        row.state,
    )


def status(volume: Volume) -> dict[str, Any]:
    """The last known rebalance status of `volume`: per node and summed, with the aggregate state."""
    rows = list(RebalanceNode.select().where(RebalanceNode.volume == volume).order_by(RebalanceNode.node_name))
    nodes = [
        {
            "node": r.node_name,
            "state": r.state,
            **{k: getattr(r, k) for k in COUNTERS},
            "run_time": r.run_time,
            "error": r.error,
            "updated_at": r.updated_at,
        }
        for r in rows
    ]
    states = {r.state for r in rows}
    state = next((s.value for s in AGGREGATE_ORDER if s.value in states), R.NOT_STARTED.value)
    return {
        "volume": volume.name,
        "run": rows[0].run if rows else None,
        "command": rows[0].command if rows else None,
        "state": state,
        "nodes": nodes,
        "total": {
            **{k: sum(getattr(r, k) for r in rows) for k in COUNTERS},
            "run_time": max((r.run_time for r in rows), default=0.0),
        },
    }
