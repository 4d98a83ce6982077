"""Volumes: the operations (create, start, stop, delete) as per-node tasks.

A volume's state is derived from the tasks of its current operation: when the last task of
the operation is final, the volume moves to the operation's success or failure state through
the state machine in control/services/lifecycle.py.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections import defaultdict
from typing import Any

from broker.messages import STABLE_VOLUME_STATES, VOLUME_DELETED, TaskState, VolumeState, check_name
from control.errors import Conflict, InvalidInput, NotFound
from control.services import events
from control.services.expand import ExpandService
from control.services.layout import VolumeRequest, check_layout, parse_bricks, volume_type
from control.services.lifecycle import OPERATIONS, TRANSITIONS, move
from control.services.options import checked_options
from control.services.placement import check_paths_free, place_by_size
from control.services.ports import DEFAULT_PORT_RANGE, allocate_ports, move_to_new_ports
from control.services.rebalance import RebalanceService
from control.services.replace import ReplaceService
from control.services.tasks import FINAL_STATES, TaskEngine
from control.services.volfiles import ParamsFor, bricks_of, spec_of, start_params
from control.store.db import first, locked
from control.store.models import Brick, Cluster, Device, Task, Volume
from control.store.models import database_proxy as db
from control.volgen import VolgenError

log = logging.getLogger(__name__)

MAX_START_ATTEMPTS = 3  # a brick whose port is taken moves to a new port this many times

S = VolumeState
MAX_REASON_LENGTH = 500

__all__ = ["DEFAULT_PORT_RANGE", "OPERATIONS", "TRANSITIONS", "VolumeRequest", "VolumeService"]


def _brick_params(node_bricks: list[Brick]) -> list[dict[str, Any]]:
    return [{"index": b.index, "path": b.path} for b in node_bricks]


class VolumeService:
    def __init__(self, engine: TaskEngine, port_range: tuple[int, int] = DEFAULT_PORT_RANGE) -> None:
        self.engine = engine
        self.port_range = port_range
        engine.on_final.append(self.task_finished)
        self.expansion = ExpandService(engine, port_range)
        self.rebalancing = RebalanceService(engine)
        self.replacement = ReplaceService(engine, port_range)

    @staticmethod
    def get(cluster: Cluster, name: str) -> Volume:
        volume = Volume.get_or_none((Volume.cluster == cluster) & (Volume.name == name))
        if volume is None:
            raise NotFound(
                f"no volume {name!r} in cluster {cluster.name!r}; see 'glusterctl volume list -c {cluster.name}'"
            )
        return volume

    @staticmethod
    def list_volumes(cluster: Cluster) -> list[Volume]:
        return [*Volume.select().where(Volume.cluster == cluster).order_by(Volume.name)]

    # -- create ---------------------------------------------------------------------------
    def create(self, cluster: Cluster, req: VolumeRequest) -> tuple[Volume, list[Task]]:
        try:
            check_name("volume", req.name)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        layout = volume_type(req)
        devices: list[Device | None]
        if req.size_bytes:
            if req.bricks:
                raise InvalidInput("give either bricks (NODE:/path) or --size, not both")
            placed = place_by_size(cluster, req.name, layout, req.size_bytes, req.usable_device)
            bricks = [(n, p) for n, p, _ in placed]
            devices = [d for _, _, d in placed]
        else:
            bricks = parse_bricks(cluster, req.bricks)
            devices = [None] * len(bricks)
        check_layout(layout.type, layout.set_size, bricks, req.force)
        with db.atomic():
            if Volume.select().where((Volume.cluster == cluster) & (Volume.name == req.name)).exists():
                raise Conflict(f"volume {req.name!r} already exists in cluster {cluster.name!r}")
            check_paths_free(cluster, bricks)
            ports = allocate_ports(cluster, [n for n, _ in bricks], self.port_range)
            volume = Volume.create(
                id=str(uuid.uuid4()),
                cluster=cluster,
                name=req.name,
                type=layout.type,
                replica=layout.replica,
                arbiter=layout.arbiter,
                disperse=layout.disperse,
                redundancy=layout.redundancy,
                state=S.CREATING.value,
                options={},  # checked below, against the volume's graphs
                auth_username=str(uuid.uuid4()),
                auth_password=secrets.token_hex(16),
                size_bytes=req.size_bytes,
                start_after_create=req.start,
            )
            rows = [
                Brick.create(volume=volume, index=i, node_name=n, path=p, port=port, device=dev)
                for i, ((n, p), port, dev) in enumerate(zip(bricks, ports, devices))
            ]
            try:
                # spec_of: volgen's own validation (layout); then the options as `volume set` checks them,
                # short keys and aliases stored under their full names
                volume.options = checked_options(spec_of(volume, rows), req.options)
                volume.save()
            except VolgenError as exc:
                raise InvalidInput(str(exc)) from None
            events.record(
                "volume.state", cluster=cluster.name, subject=volume.name, state=S.CREATING.value, reason="created"
            )
            tasks = self._submit(
                volume,
                "volume.create",
                rows,
                lambda node_bricks: {"bricks": _brick_params(node_bricks), "force": req.force},
            )
        log.info(
            "cluster %s volume %s: create requested (%s, %d bricks)", cluster.name, req.name, layout.type, len(rows)
        )
        self.engine.publish(tasks)
        return volume, tasks

    def _submit(
        self, volume: Volume, kind: str, rows: list[Brick], params_for: ParamsFor, operation: str | None = None
    ) -> list[Task]:
        """One task per node holding bricks, in a new operation (or, for a retry, the given one)."""
        if operation is None:
            operation = uuid.uuid4().hex
            volume.operation = operation
            volume.save()
        by_node: dict[str, list[Brick]] = defaultdict(list)
        for brick in rows:
            by_node[brick.node_name].append(brick)
        return [
            self.engine.submit(
                volume.cluster,
                node,
                kind,
                {"volume": {"id": volume.id, "name": volume.name, "type": volume.type}, **params_for(node_bricks)},
                operation=operation,
                target=f"volume:{volume.name}",
            )
            for node, node_bricks in sorted(by_node.items())
        ]

    # -- start / stop / delete -------------------------------------------------------------
    def start(self, cluster: Cluster, name: str) -> tuple[Volume, list[Task]]:
        with db.atomic():
            volume = self.get(cluster, name)
            if volume.state == S.STARTED.value:
                raise Conflict(f"volume {name!r} is already Started")
            move(volume, S.STARTING, "start requested")
            rows = bricks_of(volume)
            tasks = self._submit(volume, "volume.start", rows, start_params(volume, rows))
        self.engine.publish(tasks)
        return volume, tasks

    def stop(self, cluster: Cluster, name: str) -> tuple[Volume, list[Task]]:
        with db.atomic():
            volume = self.get(cluster, name)
            if volume.state in (S.STOPPED.value, S.CREATED.value):
                raise Conflict(f"volume {name!r} is not started ({volume.state})")
            running = self.rebalancing.running_nodes(volume)
            if running:  # as glusterd: its bricks going away would fail the rebalance half-way
                raise Conflict(
                    f"a rebalance of volume {name!r} is in progress on {', '.join(running)}: stop it first "
                    f"(glusterctl volume rebalance stop -c {cluster.name} {name}) or wait for it to complete"
                )
            move(volume, S.STOPPING, "stop requested")
            tasks = self._submit(volume, "volume.stop", bricks_of(volume), lambda bs: {"bricks": _brick_params(bs)})
        self.engine.publish(tasks)
        return volume, tasks

    def delete(self, cluster: Cluster, name: str, purge: bool = False) -> tuple[Volume, list[Task]]:
        with db.atomic():
            volume = self.get(cluster, name)
            if volume.state in (S.STARTED.value, S.STARTING.value, S.START_FAILED.value, S.STOP_FAILED.value):
                raise Conflict(
                    f"volume {name!r} is {volume.state}: stop it first (glusterctl volume stop -c {cluster.name} {name})"
                )
            move(volume, S.DELETING, "delete requested" + (" with purge" if purge else ""))
            tasks = self._submit(
                volume,
                "volume.delete",
                bricks_of(volume),
                lambda bs: {"bricks": _brick_params(bs), "purge": purge},
            )
        self.engine.publish(tasks)
        return volume, tasks

    # -- progress -------------------------------------------------------------------------
    def task_finished(self, task: Task) -> None:
        if task.kind not in OPERATIONS or not task.operation:
            return
        publish: list[Task] = []
        with db.atomic():
            volume = first(locked(Volume.select().where(Volume.operation == task.operation)))
            if volume is None or volume.concluded_operation == task.operation:
                return  # not this volume's current operation, or concluded already (a replayed hook)
            if (
                task.kind == "volume.start"
                and task.state == TaskState.FAILED.value
                and task.reason.startswith("EADDRINUSE")
            ):
                publish = self._retry_on_new_ports(volume, task)
            latest: dict[str, str] = {}  # a retried node counts with its newest task
            for t in (
                Task.select(Task.node_name, Task.state)
                .where(Task.operation == task.operation)
                .order_by(Task.created_at)
            ):
                latest[t.node_name] = t.state
            if not publish and all(s in FINAL_STATES for s in latest.values()):
                publish = self._conclude(volume, task, latest)
        self.engine.publish(publish)

    def _conclude(self, volume: Volume, task: Task, states: dict[str, str]) -> list[Task]:
        """All tasks of the volume's operation are final: move the volume on; returns tasks to publish."""
        _, ok, failed = OPERATIONS[task.kind]
        volume.concluded_operation = task.operation  # saved by the move below
        if any(s != TaskState.DONE.value for s in states.values()):
            nodes = sorted(n for n, s in states.items() if s != TaskState.DONE.value)
            move(volume, failed, f"failed on {', '.join(nodes)}")
            return []
        if ok is None:  # deleted
            name, cluster = volume.name, volume.cluster.name
            volume.delete_instance(recursive=True)
            events.record("volume.state", cluster=cluster, subject=name, state=VOLUME_DELETED, reason="deleted")
            log.info("cluster %s volume %s: deleted", cluster, name)
            return []
        move(volume, ok, f"{task.kind.split('.')[1]} done on all nodes")
        if ok == S.CREATED and volume.start_after_create:
            move(volume, S.STARTING, "starting after create")
            rows = bricks_of(volume)
            return self._submit(volume, "volume.start", rows, start_params(volume, rows))
        return []

    # -- recovery -------------------------------------------------------------------------
    def conclude_without_tasks(self, volume: Volume) -> bool:
        """A volume in an operation's running state whose operation has no task (none was ever
        stored, or they were deleted) fails that operation; True when it moved."""
        with db.atomic():
            row = first(locked(Volume.select(Volume, Cluster).join(Cluster).where(Volume.id == volume.id), of=Volume))
            if row is None or Task.select().where(Task.operation == row.operation).exists():
                return False
            for _, (running, _, failed) in OPERATIONS.items():
                if row.state == running.value:
                    row.concluded_operation = row.operation
                    move(row, failed, "the operation has no tasks")
                    return True
        return False

    def reset_state(self, cluster: Cluster, name: str, reason: str, actor: str) -> tuple[Volume, list[Task]]:
        """An admin's way out of a stuck state: back to the last stable state (or the running
        operation's failure state when there was none), the operation's open tasks FAILED.

        The operation is marked concluded first, so the failed tasks' hooks do not move the volume again.
        """
        reason = " ".join((reason or "").split())
        if not reason:
            raise InvalidInput("give a reason (--reason TEXT): it is recorded in the volume's event")
        if len(reason) > MAX_REASON_LENGTH:
            raise InvalidInput(f"the reason is {len(reason)} characters; at most {MAX_REASON_LENGTH} are allowed")
        with db.atomic():
            volume = first(
                locked(
                    Volume.select(Volume, Cluster)
                    .join(Cluster)
                    .where((Volume.cluster == cluster) & (Volume.name == name)),
                    of=Volume,
                )
            )
            if volume is None:
                self.get(cluster, name)  # raises NotFound with the usual hint
                raise NotFound(name)
            old = VolumeState(volume.state)
            if old in STABLE_VOLUME_STATES:
                raise Conflict(f"volume {name!r} is {old.value}: a stable state, nothing to reset")
            target = VolumeState(volume.stable_state) if volume.stable_state else None
            if target is None:
                target = next((f for r, _, f in OPERATIONS.values() if r == old), None)
            if target is None or target == old:
                raise Conflict(
                    f"volume {name!r} is {old.value} and was never in a stable state: retry the operation or delete it"
                )
            open_tasks = [
                *Task.select(Task, Cluster)
                .join(Cluster)
                .where((Task.operation == volume.operation) & (Task.state.not_in(FINAL_STATES)))
            ]
            volume.concluded_operation = volume.operation
            volume.state = target.value
            volume.updated_at = time.time()
            volume.save()
            why = f"reset-state by {actor}: {reason}"
            log.warning("cluster %s volume %s: %s -> %s (%s)", cluster.name, name, old.value, target.value, why)
            events.record("volume.state", cluster=cluster.name, subject=name, state=target.value, reason=why)
        failed = [t for t in (self.engine.fail(t, f"RESET: {why}") for t in open_tasks) if t is not None]
        return volume, failed

    def _retry_on_new_ports(self, volume: Volume, task: Task) -> list[Task]:
        attempts = (
            Task.select()
            .where(
                (Task.target == task.target)
                & (Task.kind == "volume.start")
                & (Task.node_name == task.node_name)
                & (Task.operation == task.operation)
            )
            .count()
        )
        conflicts = set(((task.result or {}).get("failure") or {}).get("port_conflicts") or [])
        if attempts >= MAX_START_ATTEMPTS or not conflicts:
            return []
        moving = [b for b in bricks_of(volume) if b.index in conflicts and b.node_name == task.node_name]
        if not moving:
            return []  # the conflicts name no brick of this node: nothing to move, the start failed
        move_to_new_ports(volume, moving, self.port_range)
        rows = bricks_of(volume)
        # every node gets the new volfiles (its shd must reach the moved brick); running bricks stay
        return self._submit(volume, "volume.start", rows, start_params(volume, rows), operation=volume.operation)
