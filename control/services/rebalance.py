"""Rebalance: GlusterFS's rebalance process on every node holding bricks, its status kept per node.

- start: one ``volume.rebalance`` task (op start) per node with the rebalance volfile, the run id
  and the commit hash (the same on every node, as glusterd sends them); each agent starts and
  supervises its node's process (agent/rebalance.py).
- stop: op stop on every node of the run; status: op status on every node (a live poll).

Every finished task's result updates that node's ``RebalanceNode`` row, so the last known status
survives a control-service restart and ``status`` reads it from the database; the volume's state
is the aggregate of its nodes' (in progress while one runs; failed, stopped or completed after).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from broker.messages import NodeState, RebalanceState, TaskKind, TaskState, VolumeState
from control.errors import Conflict, InvalidInput
from control.services import events
from control.services.tasks import TaskEngine
from control.services.volfiles import bricks_of, spec_of
from control.store.db import delete_where
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
        volume_id = str((task.params or {}).get("volume", {}).get("id", ""))
        op = (task.params or {}).get("op")
        result = task.result or {}
        with db.atomic():
            row = RebalanceNode.get_or_none(
                (RebalanceNode.volume == volume_id) & (RebalanceNode.node_name == task.node_name)
            )
            if row is None or row.run != task.operation:
                return  # a task of an older run
            if task.state != TaskState.DONE.value:
                row.error = task.reason or "the task failed"
                if op == "start":
                    row.state = R.FAILED.value
            elif result.get("run") not in (None, row.run):
                return
            else:
                try:
                    state = R(result.get("state") or R.NOT_STARTED.value)
                except ValueError:
                    state = R.FAILED
                if state == R.NOT_STARTED and row.state != R.NOT_STARTED.value:
                    return  # the node lost its record: keep what it reported before
                row.state = state.value
                for key in COUNTERS:
                    setattr(row, key, int(result.get(key) or 0))
                row.run_time = float(result.get("run_time") or 0)
                row.error = str(result.get("error") or "")
            old_state = RebalanceNode.get_by_id(row.id).state
            row.updated_at = time.time()
            row.save()
            if old_state != row.state:
                events.record(
                    "rebalance.state",
                    cluster=task.cluster.name,
                    subject=f"{(task.params or {}).get('volume', {}).get('name', '')}@{task.node_name}",
                    run=row.run,
                    state=row.state,
                    files=row.files,
                    failures=row.failures,
                )
                log.info(
                    "cluster %s volume %s node %s: rebalance %s %s -> %s",
                    task.cluster.name,
                    volume_id,
                    task.node_name,
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
