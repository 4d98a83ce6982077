"""Expand: add bricks to a volume (glusterd's add-brick) while its clients keep running.

One operation, two phases, on the volume's operation id:

1. ``volume.expand`` to every node that gets new bricks: prepare them (directory, volume-id
   xattr, .glusterfs) and, on a Started volume, serve their volfiles and start them. Nodes that
   already hold bricks keep serving their old graph for everything else, so no running process
   sees the new bricks before they listen.
2. ``volume.volfiles`` to every node holding bricks: the complete new set; the agents notify the
   bricks, self-heal daemons and clients whose volfile changed, which switch graphs in place
   (FUSE mounts stay mounted, open files move to the new graph).

When every task is DONE the volume returns to the state it had (Started, Stopped or Created);
a failed task moves it to ExpandFailed, and ``expand`` without bricks retries the same bricks.
New directories spread over every set at once; existing ones take the new sets after a
fix-layout or a rebalance.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Callable

from broker.messages import TaskKind, VolumeState
from control.errors import Conflict, InvalidInput
from control.services import events, phases
from control.services.layout import check_layout, layout_of, parse_bricks
from control.services.lifecycle import move
from control.services.placement import check_paths_free, place_by_size
from control.services.ports import allocate_ports
from control.services.tasks import TaskEngine
from control.services.volfiles import bricks_of, node_volfiles, push_volfiles, shd_key, spec_of
from control.store.db import first, locked
from control.store.models import Brick, Cluster, Device, Task, Volume
from control.store.models import database_proxy as db
from control.volgen import VolgenError, brick_volfile, brick_volfile_name

log = logging.getLogger(__name__)

S = VolumeState
EXPAND = TaskKind.VOLUME_EXPAND.value
VOLFILES = TaskKind.VOLUME_VOLFILES.value
# the states a volume may grow from; it returns to the same state afterwards
GROWABLE = (S.STARTED, S.STOPPED, S.CREATED)
SET_NAMES = {"replicate": "replica", "arbiter": "replica", "disperse": "disperse"}


def describe_sets(volume: Volume) -> str:
    """What a valid set of new bricks is for `volume`, in words."""
    layout = layout_of(volume)
    if layout.type == "distribute":
        return f"volume {volume.name!r} is distribute: add any number of bricks"
    what = SET_NAMES[layout.type]
    text = (
        f"volume {volume.name!r} is {what} {layout.set_size}: add bricks in multiples of {layout.set_size} "
        f"(each {layout.set_size} consecutive bricks form a new {what} set"
    )
    if layout.type == "arbiter":
        text += "; the third brick of each set is its arbiter"
    return text + ")"


class ExpandService:
    def __init__(self, engine: TaskEngine, port_range: tuple[int, int]) -> None:
        self.engine = engine
        self.port_range = port_range
        engine.on_final.append(self.task_finished)

    def expand(
        self,
        cluster: Cluster,
        volume: Volume,
        items: list[str],
        size_bytes: int = 0,
        force: bool = False,
        usable: Callable[[Device], bool] | None = None,
    ) -> tuple[Volume, list[Task]]:
        """Add the bricks NODE:/path (or one set placed by `size_bytes`); without either, retry a failed expand."""
        if items and size_bytes:
            raise InvalidInput("give either bricks (NODE:/path) or --size, not both")
        if not items and not size_bytes:
            if volume.state != S.EXPAND_FAILED.value:
                raise InvalidInput(f"no bricks: give NODE:/path arguments or --size; {describe_sets(volume)}")
            return self._retry(volume)
        layout = layout_of(volume)
        devices: list[Device | None]
        if size_bytes:
            first_index = len(bricks_of(volume))
            placed = place_by_size(
                cluster, volume.name, layout, size_bytes, usable, brick_name=f"{volume.name}-b{first_index}"
            )
            new = [(n, p) for n, p, _ in placed]
            devices = [d for _, _, d in placed]
        else:
            new = parse_bricks(cluster, items)
            devices = [None] * len(new)
        try:
            check_layout(layout.type, layout.set_size, new, force)
        except InvalidInput as exc:
            raise InvalidInput(f"{exc}; {describe_sets(volume)}") from None
        with db.atomic():
            volume = first(locked(Volume.select().where(Volume.id == volume.id))) or volume
            if volume.state not in {s.value for s in GROWABLE}:
                raise Conflict(
                    f"volume {volume.name!r} is {volume.state}: it grows when Started, Stopped or Created"
                    + (
                        " (run 'volume expand' without bricks to retry the failed one)"
                        if volume.state == S.EXPAND_FAILED.value
                        else ""
                    )
                )
            check_paths_free(cluster, new)
            old = bricks_of(volume)
            ports = allocate_ports(cluster, [n for n, _ in new], self.port_range)
            start = len(old)
            rows = [
                Brick.create(volume=volume, index=start + i, node_name=n, path=p, port=port, device=dev)
                for i, ((n, p), port, dev) in enumerate(zip(new, ports, devices))
            ]
            try:
                spec_of(volume, old + rows)
            except VolgenError as exc:
                raise InvalidInput(str(exc)) from None
            resume = volume.state
            if size_bytes:
                volume.size_bytes = (volume.size_bytes or 0) + size_bytes
            volume.operation = uuid.uuid4().hex
            volume.save()
            move(volume, S.EXPANDING, f"adding {len(rows)} bricks")
            events.record(
                "volume.expand",
                cluster=cluster.name,
                subject=volume.name,
                bricks=[f"{b.node_name}:{b.path}" for b in rows],
            )
            tasks = self._submit_bricks(volume, old, rows, resume, force)
        log.info(
            "cluster %s volume %s: expand requested (%d new bricks on %s)",
            cluster.name,
            volume.name,
            len(rows),
            ",".join(sorted({b.node_name for b in rows})),
        )
        self.engine.publish(tasks)
        return volume, tasks

    def _submit_bricks(
        self, volume: Volume, old: list[Brick], new: list[Brick], resume: str, force: bool
    ) -> list[Task]:
        """Phase 1: one volume.expand task per node with new bricks."""
        old_spec = spec_of(volume, old) if old else None
        new_spec = spec_of(volume, old + new)
        by_node: dict[str, list[Brick]] = defaultdict(list)
        for brick in new:
            by_node[brick.node_name].append(brick)
        ref = {"id": volume.id, "name": volume.name, "type": volume.type}
        start = resume == S.STARTED.value
        tasks = []
        for node, node_new in sorted(by_node.items()):
            node_old = [b for b in old if b.node_name == node]
            if node_old and old_spec is not None:
                # the old graph for everything running, plus the new bricks' own volfiles
                volfiles = node_volfiles(volume, old_spec, node_old)
                volfiles.update(
                    {brick_volfile_name(new_spec, b.index)[:-4]: brick_volfile(new_spec, b.index) for b in node_new}
                )
            else:
                volfiles = node_volfiles(volume, new_spec, node_new)
            params = {
                "volume": ref,
                "bricks": [
                    {
                        "index": b.index,
                        "path": b.path,
                        "port": b.port,
                        "volfile_id": brick_volfile_name(new_spec, b.index)[:-4],
                    }
                    for b in node_new
                ],
                "volfiles": volfiles,
                "shd": shd_key(volume) if volume.type != "distribute" else None,
                "start": start,
                "force": force,
                "resume": resume,
            }
            tasks.append(
                self.engine.submit(
                    volume.cluster, node, EXPAND, params, operation=volume.operation, target=f"volume:{volume.name}"
                )
            )
        return tasks

    def _retry(self, volume: Volume) -> tuple[Volume, list[Task]]:
        """ExpandFailed: run the failed expand again (same new bricks), from phase 1."""
        with db.atomic():
            volume = first(locked(Volume.select().where(Volume.id == volume.id))) or volume
            if volume.state != S.EXPAND_FAILED.value:
                raise Conflict(f"volume {volume.name!r} is {volume.state}: there is no failed expand to retry")
            last = [t for t in Task.select().where((Task.operation == volume.operation) & (Task.kind == EXPAND))]
            indexes = {int(b["index"]) for t in last for b in (t.params or {}).get("bricks", [])}
            if not last or not indexes:
                raise Conflict(f"volume {volume.name!r}: the failed expand left nothing to retry")
            resume = str((last[0].params or {}).get("resume") or S.STARTED.value)
            force = bool((last[0].params or {}).get("force"))
            rows = bricks_of(volume)
            old = [b for b in rows if b.index not in indexes]
            new = [b for b in rows if b.index in indexes]
            volume.operation = uuid.uuid4().hex
            volume.save()
            move(volume, S.EXPANDING, f"retrying the expand of {len(new)} bricks")
            tasks = self._submit_bricks(volume, old, new, resume, force)
        self.engine.publish(tasks)
        return volume, tasks

    # -- progress -------------------------------------------------------------------------
    def task_finished(self, task: Task) -> None:
        if task.kind not in (EXPAND, VOLFILES) or not task.operation:
            return
        publish: list[Task] = []
        with db.atomic():
            progress = phases.settled(task.operation, EXPAND, S.EXPANDING)
            if progress is None:
                return
            volume = progress.volume
            if progress.failed:
                step = progress.step("adding the bricks")
                move(volume, S.EXPAND_FAILED, f"{step} failed on {', '.join(progress.failed)}")
                return
            if not progress.second:
                publish = push_volfiles(self.engine, volume, operation=volume.operation, publish=False)
                log.info(
                    "cluster %s volume %s: new bricks ready, volfiles go to %d nodes",
                    volume.cluster.name,
                    volume.name,
                    len(publish),
                )
            else:
                resume = str(progress.first_params("resume").get("resume") or S.STARTED.value)
                move(volume, S(resume), "expanded: every node serves the new volfiles")
        self.engine.publish(publish)
