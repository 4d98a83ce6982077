"""Replace a brick (glusterd's ``replace-brick ... commit force``): a new brick takes a failed one's place.

For when a disk died or a node is gone. The new brick takes the old one's index, so it sits in
the same replica or disperse set (and, on arbiter volumes, keeps the arbiter's role); self-heal
then fills it from the other bricks of its set. One operation, on the volume's operation id:

1. ``volume.replace-brick`` to the new brick's node: stop the old brick there if it is the same
   node, prepare the new one (directory, volume-id xattr, .glusterfs) and, on a Started volume,
   serve its volfile, start it and mark the volume's root as pending heal towards it (glusterd's
   ``trusted.replace-brick`` virtual xattr through a short self-heal-daemon mount). A separate
   ``volume.replace-brick`` to the old node, when that is another node still registered, stops
   the old brick's process there; it belongs to the operation only when the node is Online (an
   Unreachable node runs it when it returns; a removed node gets nothing).
2. ``volume.volfiles`` to every Online node holding bricks: the new graph; bricks, self-heal
   daemons and mounts switch to it without a restart. Unreachable nodes get theirs outside the
   operation, when they return.
3. The volume returns to the state it had; a Started replicate/disperse volume gets an index
   heal (``volume.heal`` op ``index``), as ``gluster volume heal VOL`` would.

A failed task moves the volume to ReplaceFailed; the same replace-brick command retries it.
Distribute-only volumes are refused: the old brick's files exist nowhere else.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from broker.messages import BrickState, NodeState, TaskKind, VolumeState
from broker.paths import normalise
from control.errors import Conflict, GlusterctlError, InvalidInput, NotFound
from control.services import events, heal, phases
from control.services.layout import layout_of, parse_bricks
from control.services.lifecycle import move
from control.services.placement import check_paths_free
from control.services.ports import allocate_ports
from control.services.tasks import TaskEngine
from control.services.volfiles import bricks_of, node_volfiles, push_volfiles, shd_key, spec_of
from control.store.db import first, locked
from control.store.models import Brick, Cluster, Node, Task, Volume
from control.store.models import database_proxy as db
from control.volgen import VolgenError, VolumeSpec, brick_volfile, brick_volfile_name

log = logging.getLogger(__name__)

S = VolumeState
REPLACE = TaskKind.VOLUME_REPLACE_BRICK.value
VOLFILES = TaskKind.VOLUME_VOLFILES.value
# the states a volume may replace a brick from; it returns to the same state afterwards
REPLACEABLE = (S.STARTED, S.STOPPED, S.CREATED)
# replicate volumes get glusterd's pending mark on the root towards the new brick (afr's
# trusted.replace-brick); disperse heals the empty brick from ec's own checks
MARKED_TYPES = ("replicate", "arbiter")


def _split(item: str, what: str) -> tuple[str, str]:
    node, sep, path = item.partition(":")
    if not sep or not node or not path.startswith("/"):
        raise InvalidInput(f"invalid {what} brick {item!r}: use NODE:/absolute/path")
    return node, normalise(path)


def _online(cluster: Cluster) -> set[str]:
    query = Node.select(Node.name).where((Node.cluster == cluster) & (Node.state == NodeState.ONLINE.value))
    return {n.name for n in query}


class ReplaceService:
    def __init__(self, engine: TaskEngine, port_range: tuple[int, int]) -> None:
        self.engine = engine
        self.port_range = port_range
        engine.on_final.append(self.task_finished)

    def replace(
        self, cluster: Cluster, volume: Volume, old_item: str, new_item: str, force: bool = False
    ) -> tuple[Volume, list[Task]]:
        """Replace brick `old_item` (NODE:/path of the volume) with the new brick `new_item`."""
        layout = layout_of(volume)
        if layout.type == "distribute":
            raise InvalidInput(
                f"volume {volume.name!r} is distribute-only: its bricks have no replica, so replacing one would "
                "lose the files on it (nothing heals the new brick); add bricks with 'volume expand' and move "
                "the data with 'volume rebalance start', or recreate the volume with --replica or --disperse"
            )
        old_node, old_path = _split(old_item, "old")
        (new_node, new_path), *_ = parse_bricks(cluster, [new_item])
        with db.atomic():
            volume = first(locked(Volume.select().where(Volume.id == volume.id))) or volume
            tasks = None
            if volume.state == S.REPLACE_FAILED.value:
                tasks = self._retry(volume, f"{old_node}:{old_path}", f"{new_node}:{new_path}")
            if tasks is None:
                tasks = self._request(cluster, volume, (old_node, old_path), (new_node, new_path), force)
        self.engine.publish(tasks)
        return volume, [t for t in tasks if t.operation]  # what the caller follows

    def _request(
        self, cluster: Cluster, volume: Volume, old: tuple[str, str], new: tuple[str, str], force: bool
    ) -> list[Task]:
        """Checks, the brick row moved to the new place, phase 1 submitted (inside the caller's transaction)."""
        (old_node, old_path), (new_node, new_path) = old, new
        if volume.state not in {s.value for s in REPLACEABLE}:
            raise Conflict(
                f"volume {volume.name!r} is {volume.state}: a brick is replaced when it is Started, Stopped or Created"
                + (
                    " (repeat the failed replace-brick with the same bricks to retry it)"
                    if volume.state == S.REPLACE_FAILED.value
                    else ""
                )
            )
        rows = bricks_of(volume)
        target = next((b for b in rows if b.node_name == old_node and b.path == old_path), None)
        if target is None:
            listed = ", ".join(f"{b.node_name}:{b.path}" for b in rows)
            raise NotFound(f"volume {volume.name!r} has no brick {old_node}:{old_path}; its bricks: {listed}")
        check_paths_free(cluster, [(new_node, new_path)])
        layout = layout_of(volume)
        size = layout.set_size
        start = target.index - target.index % size
        mates = [b for b in rows[start : start + size] if b.index != target.index]
        if not force and any(b.node_name == new_node for b in mates):
            raise InvalidInput(
                f"brick {new_node}:{new_path} would put two bricks of one {layout.type} set on node {new_node} "
                f"({', '.join(f'{b.node_name}:{b.path}' for b in mates)}): this is not fault tolerant; pick "
                "another node, or pass --force to override"
            )
        if new_node not in _online(cluster):
            raise Conflict(f"node {new_node!r} is not Online: the new brick needs its agent running")
        old_spec = spec_of(volume, rows)
        (port,) = allocate_ports(cluster, [new_node], self.port_range)
        replaced = {"index": target.index, "node": old_node, "path": old_path, "port": target.port}
        target.node_name, target.path, target.port, target.device = new_node, new_path, port, None
        target.state, target.pid = BrickState.OFFLINE.value, None
        target.save()
        try:
            spec_of(volume, rows)
        except VolgenError as exc:
            raise InvalidInput(str(exc)) from None
        resume = volume.state
        volume.operation = uuid.uuid4().hex
        volume.save()
        move(volume, S.REPLACING, f"replacing brick {old_node}:{old_path} with {new_node}:{new_path}")
        events.record(
            "volume.replace-brick",
            cluster=cluster.name,
            subject=volume.name,
            old=f"{old_node}:{old_path}",
            new=f"{new_node}:{new_path}",
            index=target.index,
        )
        log.info(
            "cluster %s volume %s: replace-brick %s:%s -> %s:%s requested (brick %d)",
            cluster.name,
            volume.name,
            old_node,
            old_path,
            new_node,
            new_path,
            target.index,
        )
        return self._submit(volume, old_spec, rows, replaced, resume, force)

    def _submit(
        self,
        volume: Volume,
        old_spec: VolumeSpec,
        rows: list[Brick],
        replaced: dict[str, Any],
        resume: str,
        force: bool,
    ) -> list[Task]:
        """Phase 1: the new brick's node (and the old brick's node, when another) get volume.replace-brick."""
        index = int(replaced["index"])
        new = next(b for b in rows if b.index == index)
        new_spec = spec_of(volume, rows)
        ref = {"id": volume.id, "name": volume.name, "type": volume.type}
        started = resume == S.STARTED.value
        online = _online(volume.cluster)
        drop = {"index": index, "path": replaced["path"]}
        node_old = [b for b in rows if b.node_name == new.node_name and b.index != index]
        if node_old:
            # the node's current graph for everything running, plus the new brick's own volfile
            volfiles = node_volfiles(volume, old_spec, node_old)
        else:
            volfiles = node_volfiles(volume, new_spec, [new])
        key = brick_volfile_name(new_spec, index)[:-4]
        volfiles[key] = brick_volfile(new_spec, index)
        common = {
            "volume": ref,
            "resume": resume,
            "force": force,
            "replaced": replaced,
            "new": f"{new.node_name}:{new.path}",
        }
        params = {
            **common,
            "drop": drop if replaced["node"] == new.node_name else None,
            "bricks": [{"index": index, "path": new.path, "port": new.port, "volfile_id": key}],
            "volfiles": volfiles,
            "shd": shd_key(volume),
            "start": started,
            "mark": f"{volume.name}-client-{index}" if started and volume.type in MARKED_TYPES else None,
        }
        target = f"volume:{volume.name}"
        tasks = [
            self.engine.submit(
                volume.cluster, new.node_name, REPLACE, params, operation=volume.operation, target=target
            )
        ]
        old_node = str(replaced["node"])
        registered = Node.select().where((Node.cluster == volume.cluster) & (Node.name == old_node)).exists()
        if old_node != new.node_name and registered:
            # an Unreachable node stops the old brick when it returns: outside the operation, which goes on
            operation = volume.operation if old_node in online else ""
            drop_params = {**common, "drop": drop, "bricks": [], "start": False}
            tasks.append(
                self.engine.submit(volume.cluster, old_node, REPLACE, drop_params, operation=operation, target=target)
            )
        return tasks

    def _retry(self, volume: Volume, old: str, new: str) -> list[Task] | None:
        """ReplaceFailed and the same bricks as the failed replace: run it again from phase 1."""
        last = [t for t in Task.select().where((Task.operation == volume.operation) & (Task.kind == REPLACE))]
        params = next((t.params or {} for t in last if (t.params or {}).get("bricks")), None)
        if params is None:
            return None
        replaced = params.get("replaced") or {}
        if f"{replaced.get('node')}:{replaced.get('path')}" != old or params.get("new") != new:
            return None
        rows = bricks_of(volume)
        previous = [b if b.index != replaced["index"] else None for b in rows]
        stand_in = Brick(
            volume=volume,
            index=replaced["index"],
            node_name=replaced["node"],
            path=replaced["path"],
            port=replaced["port"],
        )
        old_spec = spec_of(volume, [b if b is not None else stand_in for b in previous])
        resume = str(params.get("resume") or S.STARTED.value)
        volume.operation = uuid.uuid4().hex
        volume.save()
        move(volume, S.REPLACING, f"retrying the replacement of brick {old} with {new}")
        return self._submit(volume, old_spec, rows, replaced, resume, bool(params.get("force")))

    # -- progress -------------------------------------------------------------------------
    def task_finished(self, task: Task) -> None:
        if task.kind not in (REPLACE, VOLFILES) or not task.operation:
            return
        publish: list[Task] = []
        healing: Volume | None = None
        with db.atomic():
            progress = phases.settled(task.operation, REPLACE, S.REPLACING)
            if progress is None:
                return
            volume = progress.volume
            if progress.failed:
                step = progress.step("replacing the brick")
                move(volume, S.REPLACE_FAILED, f"{step} failed on {', '.join(progress.failed)}")
                return
            if not progress.second:
                publish = self._push_volfiles(volume)
            else:
                params = progress.first_params("bricks")
                resume = S(str(params.get("resume") or S.STARTED.value))
                move(volume, resume, f"brick {params.get('new', '?')} replaced: every node serves the new volfiles")
                if resume == S.STARTED:
                    healing = volume
        self.engine.publish(publish)
        if healing is not None:
            self._heal(healing)

    def _push_volfiles(self, volume: Volume) -> list[Task]:
        """Phase 2: every node holding bricks gets its new volfile set; only Online nodes count."""
        tasks = push_volfiles(self.engine, volume, operation=volume.operation, publish=False)
        log.info(
            "cluster %s volume %s: new brick ready, volfiles go to %d nodes",
            volume.cluster.name,
            volume.name,
            len(tasks),
        )
        return tasks

    def _heal(self, volume: Volume) -> None:
        """Phase 3: an index heal on every Online node (the self-heal daemons also crawl when the new brick connects)."""
        try:
            tasks = heal.request(self.engine, volume.cluster, volume.name, "index")
        except GlusterctlError as exc:
            log.warning(
                "cluster %s volume %s: no index heal after replace-brick: %s", volume.cluster.name, volume.name, exc
            )
            return
        events.record(
            "volume.heal", cluster=volume.cluster.name, subject=volume.name, op="index", tasks=[t.id for t in tasks]
        )
