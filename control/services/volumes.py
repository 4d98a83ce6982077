"""Volumes: layout rules, brick placement, ports, and the per-node tasks of each operation.

A volume's state is derived from the tasks of its current operation: when the last task of
the operation is final, the volume moves to the operation's success or failure state (one
transition table, one log line and one event per transition).
"""

from __future__ import annotations

import logging
import posixpath
import secrets
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from broker.messages import NodeState, TaskKind, VolumeState, check_name
from control.errors import Conflict, InvalidInput, NotFound
from control.services import events
from control.services.tasks import TaskEngine
from control.store.db import locked
from control.store.models import Brick, Cluster, Device, Node, Task, Volume
from control.store.models import database_proxy as db
from control.volgen import (
    BrickSpec,
    VolumeSpec,
    brick_volfile,
    brick_volfile_name,
    client_volfile,
    shd_volfile,
)
from control.volgen.spec import VolgenError

log = logging.getLogger(__name__)

DEFAULT_PORT_RANGE = (49152, 60999)
MAX_PATH = 1024  # brick and device paths (the store's column size)
MAX_START_ATTEMPTS = 3  # a brick whose port is taken moves to a new port this many times


S = VolumeState
TRANSITIONS: dict[VolumeState, frozenset[VolumeState]] = {
    S.CREATING: frozenset({S.CREATED, S.CREATE_FAILED}),
    S.CREATED: frozenset({S.STARTING, S.DELETING}),
    S.CREATE_FAILED: frozenset({S.CREATING, S.DELETING}),
    S.STARTING: frozenset({S.STARTED, S.START_FAILED}),
    S.STARTED: frozenset({S.STOPPING}),
    S.START_FAILED: frozenset({S.STARTING, S.STOPPING}),
    S.STOPPING: frozenset({S.STOPPED, S.STOP_FAILED}),
    S.STOPPED: frozenset({S.STARTING, S.DELETING}),
    S.STOP_FAILED: frozenset({S.STOPPING, S.STARTING}),
    S.DELETING: frozenset({S.DELETE_FAILED}),
    S.DELETE_FAILED: frozenset({S.DELETING}),
}
# operation task kind -> (state while it runs, state when all tasks are DONE, state when one FAILED)
OPERATIONS = {
    "volume.create": (S.CREATING, S.CREATED, S.CREATE_FAILED),
    "volume.start": (S.STARTING, S.STARTED, S.START_FAILED),
    "volume.stop": (S.STOPPING, S.STOPPED, S.STOP_FAILED),
    "volume.delete": (S.DELETING, None, S.DELETE_FAILED),
}


@dataclass
class VolumeRequest:
    name: str
    bricks: list[str] = field(default_factory=list)  # NODE:/path
    replica: int = 0
    arbiter: int = 0
    disperse: int = 0
    redundancy: int = 0
    size_bytes: int = 0
    force: bool = False
    start: bool = True
    options: dict[str, str] = field(default_factory=dict)


def _move(volume: Volume, new: VolumeState, why: str = "") -> None:
    old = VolumeState(volume.state)
    if new == old:
        return
    if new not in TRANSITIONS[old]:
        raise Conflict(f"volume {volume.name!r} is {old.value}: it cannot go to {new.value}")
    volume.state = new.value
    volume.updated_at = time.time()
    volume.save()
    log.info(
        "cluster %s volume %s: %s -> %s%s",
        volume.cluster.name,
        volume.name,
        old.value,
        new.value,
        f" ({why})" if why else "",
    )
    events.record("volume.state", cluster=volume.cluster.name, subject=volume.name, state=new.value, reason=why)


# ---- layout -------------------------------------------------------------------------------
def volume_type(req: VolumeRequest) -> tuple[str, int, int, int, int]:
    """(type, replica, arbiter, disperse, redundancy) from the request, with glusterd's rules."""
    if req.disperse or req.redundancy:
        if req.replica or req.arbiter:
            raise InvalidInput(
                "choose either --replica (with optional --arbiter 1) or --disperse/--redundancy, not both"
            )
        disperse, redundancy = req.disperse, req.redundancy or (1 if req.disperse else 0)
        if disperse < 3 or redundancy < 1 or disperse <= 2 * redundancy:
            raise InvalidInput(
                f"disperse {disperse} redundancy {redundancy} is not allowed: use at least 3 bricks "
                "per set and 1 <= redundancy < disperse/2 (e.g. --disperse 3 --redundancy 1)"
            )
        return "disperse", 1, 0, disperse, redundancy
    if req.arbiter:
        if req.arbiter != 1:
            raise InvalidInput("--arbiter must be 1 (one arbiter brick per replica set)")
        if req.replica not in (2, 3):
            raise InvalidInput(
                "an arbiter volume is --replica 2 --arbiter 1 or --replica 3 --arbiter 1 (2 data bricks + 1 arbiter)"
            )
        return "arbiter", 3, 1, 0, 0
    if req.replica:
        if req.replica not in (2, 3):
            raise InvalidInput(f"replica {req.replica} is not supported: use --replica 2 or --replica 3")
        return "replicate", req.replica, 0, 0, 0
    return "distribute", 1, 0, 0, 0


def parse_bricks(cluster: Cluster, items: list[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        node, sep, path = item.partition(":")
        if not sep or not node or not path:
            raise InvalidInput(f"invalid brick {item!r}: use NODE:/absolute/path")
        path = posixpath.normpath(path)
        if not path.startswith("/") or path == "/" or len(path) > MAX_PATH:
            raise InvalidInput(
                f"invalid brick path {path[:80]!r} on {node}: use an absolute path other than /, "
                f"at most {MAX_PATH} characters"
            )
        if not Node.select().where((Node.cluster == cluster) & (Node.name == node)).exists():
            raise NotFound(
                f"no node {node!r} in cluster {cluster.name!r}: start its agent with the cluster's join token first"
            )
        out.append((node, path))
    return out


def check_layout(kind: str, set_size: int, bricks: list[tuple[str, str]], force: bool) -> None:
    if not bricks:
        raise InvalidInput("no bricks: give NODE:/path arguments, or --size to place them on registered devices")
    seen = set()
    for node, path in bricks:
        if (node, path) in seen:
            raise InvalidInput(f"brick {node}:{path} is listed more than once")
        seen.add((node, path))
    if len(bricks) % set_size:
        what = {"replicate": "replica", "arbiter": "replica", "disperse": "disperse"}.get(kind, "set")
        raise InvalidInput(
            f"{len(bricks)} bricks do not make whole {what} sets of {set_size}: give a multiple of {set_size} bricks"
        )
    if set_size > 1 and not force:
        for start in range(0, len(bricks), set_size):
            nodes = [n for n, _ in bricks[start : start + set_size]]
            if len(set(nodes)) < len(nodes):
                raise InvalidInput(
                    f"multiple bricks of a {kind} set are on the same node ({', '.join(nodes)}): this is not "
                    "fault tolerant; put each brick of a set on a different node, or pass --force to override"
                )


def check_paths_free(cluster: Cluster, bricks: list[tuple[str, str]], exclude_volume: str | None = None) -> None:
    """A path already used by a brick (or nested in/around one) on that node is refused."""
    query = Brick.select(Brick, Volume).join(Volume).where(Volume.cluster == cluster)
    used = defaultdict(list)
    for brick in query:
        if brick.volume.id != exclude_volume:
            used[brick.node_name].append((brick.path, brick.volume.name))
    for node, path in bricks:
        for other, vol in used[node]:
            if path == other or path.startswith(other + "/") or other.startswith(path + "/"):
                raise Conflict(f"brick path {node}:{path} is already used by volume {vol!r} ({node}:{other})")


def allocate_ports(cluster: Cluster, nodes: list[str], port_range: tuple[int, int]) -> list[int]:
    """A free port per entry of ``nodes`` (one entry per brick), lowest first.

    Ports are unique per address, not per node name: several agents may share a host.
    """
    address = {n.name: n.address or n.name for n in Node.select(Node.name, Node.address).where(Node.cluster == cluster)}
    taken: dict[str, set[int]] = defaultdict(set)
    for brick in Brick.select(Brick.node_name, Brick.port).join(Volume).where(Volume.cluster == cluster):
        taken[address.get(brick.node_name, brick.node_name)].add(brick.port)
    ports = []
    for node in nodes:
        host = address.get(node, node)
        port = next((p for p in range(port_range[0], port_range[1] + 1) if p not in taken[host]), None)
        if port is None:
            raise Conflict(f"node {node} has no free brick port left in {port_range[0]}-{port_range[1]}")
        taken[host].add(port)
        ports.append(port)
    return ports


def place_by_size(
    cluster: Cluster, name: str, kind: str, set_size: int, redundancy: int, size: int
) -> list[tuple[str, str, Device]]:
    """Dynamic provisioning: one set of bricks on Ready devices with room, each on a distinct node."""
    per_brick = size if kind != "disperse" else -(-size // (set_size - redundancy))
    candidates: dict[str, Device] = {}
    for dev in (
        Device.select()
        .where((Device.cluster == cluster) & (Device.state == "Ready"))
        .order_by(Device.free_bytes.desc())
    ):
        if dev.free_bytes >= per_brick and dev.node_name not in candidates:
            candidates[dev.node_name] = dev
    online = {n.name for n in Node.select().where((Node.cluster == cluster) & (Node.state == NodeState.ONLINE.value))}
    ranked = sorted(candidates.values(), key=lambda d: (d.node_name not in online, -d.free_bytes))
    if len(ranked) < set_size:
        raise InvalidInput(
            f"--size {size} needs {set_size} nodes with a registered device or path with {per_brick} bytes free; "
            f"found {len(ranked)}: register more with 'glusterctl device add -c {cluster.name} NODE --path /exports/...'"
        )
    return [(d.node_name, posixpath.join(d.path, name), d) for d in ranked[:set_size]]


# ---- spec and volfiles ----------------------------------------------------------------------
def bricks_of(volume: Volume) -> list[Brick]:
    return list(Brick.select().where(Brick.volume == volume).order_by(Brick.index))


def spec_of(volume: Volume, bricks: list[Brick] | None = None) -> VolumeSpec:
    bricks = bricks if bricks is not None else bricks_of(volume)
    addresses = {n.name: n.address or n.name for n in Node.select().where(Node.cluster == volume.cluster_id)}
    return VolumeSpec(
        name=volume.name,
        id=volume.id,
        type=volume.type,
        replica=volume.replica,
        disperse=volume.disperse,
        redundancy=volume.redundancy,
        options=volume.options or {},
        auth_username=volume.auth_username,
        auth_password=volume.auth_password,
        bricks=tuple(
            BrickSpec(
                node=b.node_name,
                address=addresses.get(b.node_name, b.node_name),
                path=b.path,
                port=b.port,
                device=str(b.device_id or ""),
            )
            for b in bricks
        ),
    )


def client_volfile_text(volume: Volume) -> str:
    return client_volfile(spec_of(volume))


# ---- the service ---------------------------------------------------------------------------
class VolumeService:
    def __init__(self, engine: TaskEngine, port_range: tuple[int, int] = DEFAULT_PORT_RANGE) -> None:
        self.engine = engine
        self.port_range = port_range
        engine.on_final.append(self.task_finished)

    @staticmethod
    def get(cluster: Cluster, name: str) -> Volume:
        volume = Volume.get_or_none((Volume.cluster == cluster) & (Volume.name == name))
        if volume is None:
            raise NotFound(
                f"no volume {name!r} in cluster {cluster.name!r}; see 'glusterctl volume list -c {cluster.name}'"
            )
        return volume

    @staticmethod
    def list(cluster: Cluster) -> list[Volume]:
        return list(Volume.select().where(Volume.cluster == cluster).order_by(Volume.name))

    # -- create ---------------------------------------------------------------------------
    def create(self, cluster: Cluster, req: VolumeRequest) -> tuple[Volume, list[Task]]:
        try:
            check_name("volume", req.name)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        kind, replica, arbiter, disperse, redundancy = volume_type(req)
        set_size = disperse if kind == "disperse" else replica
        devices: list[Device | None]
        if req.size_bytes:
            if req.bricks:
                raise InvalidInput("give either bricks (NODE:/path) or --size, not both")
            placed = place_by_size(cluster, req.name, kind, set_size, redundancy, req.size_bytes)
            bricks = [(n, p) for n, p, _ in placed]
            devices = [d for _, _, d in placed]
        else:
            bricks = parse_bricks(cluster, req.bricks)
            devices = [None] * len(bricks)
        check_layout(kind, set_size, bricks, req.force)
        with db.atomic():
            if Volume.select().where((Volume.cluster == cluster) & (Volume.name == req.name)).exists():
                raise Conflict(f"volume {req.name!r} already exists in cluster {cluster.name!r}")
            check_paths_free(cluster, bricks)
            ports = allocate_ports(cluster, [n for n, _ in bricks], self.port_range)
            volume = Volume.create(
                id=str(uuid.uuid4()),
                cluster=cluster,
                name=req.name,
                type=kind,
                replica=replica,
                arbiter=arbiter,
                disperse=disperse,
                redundancy=redundancy,
                state=S.CREATING.value,
                options=req.options,
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
                spec_of(volume, rows)  # volgen's own validation (options, layout)
            except VolgenError as exc:
                raise InvalidInput(str(exc)) from None
            events.record(
                "volume.state", cluster=cluster.name, subject=volume.name, state=S.CREATING.value, reason="created"
            )
            tasks = self._submit(
                volume,
                "volume.create",
                rows,
                lambda node_bricks: {
                    "bricks": [{"index": b.index, "path": b.path} for b in node_bricks],
                    "force": req.force,
                },
            )
        log.info("cluster %s volume %s: create requested (%s, %d bricks)", cluster.name, req.name, kind, len(rows))
        self.engine.publish(tasks)
        return volume, tasks

    def _submit(
        self, volume: Volume, kind: str, rows: list[Brick], params_for, operation: str | None = None
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
    def _start_params(self, volume: Volume, rows: list[Brick]):
        spec = spec_of(volume, rows)
        shd = volume.type != "distribute"

        def params(node_bricks: list[Brick]) -> dict:
            return {
                "bricks": [
                    {
                        "index": b.index,
                        "path": b.path,
                        "port": b.port,
                        "volfile": brick_volfile(spec, b.index),
                        "volfile_id": brick_volfile_name(spec, b.index)[:-4],
                    }
                    for b in node_bricks
                ],
                "shd_volfile": shd_volfile(spec, node_bricks[0].node_name) if shd else None,
            }

        return params

    def start(self, cluster: Cluster, name: str) -> tuple[Volume, list[Task]]:
        with db.atomic():
            volume = self.get(cluster, name)
            if volume.state == S.STARTED.value:
                raise Conflict(f"volume {name!r} is already Started")
            _move(volume, S.STARTING, "start requested")
            rows = bricks_of(volume)
            tasks = self._submit(volume, "volume.start", rows, self._start_params(volume, rows))
        self.engine.publish(tasks)
        return volume, tasks

    def stop(self, cluster: Cluster, name: str) -> tuple[Volume, list[Task]]:
        with db.atomic():
            volume = self.get(cluster, name)
            if volume.state in (S.STOPPED.value, S.CREATED.value):
                raise Conflict(f"volume {name!r} is not started ({volume.state})")
            _move(volume, S.STOPPING, "stop requested")
            tasks = self._submit(
                volume,
                "volume.stop",
                bricks_of(volume),
                lambda bs: {"bricks": [{"index": b.index, "path": b.path} for b in bs]},
            )
        self.engine.publish(tasks)
        return volume, tasks

    def delete(self, cluster: Cluster, name: str, purge: bool = False) -> tuple[Volume, list[Task]]:
        with db.atomic():
            volume = self.get(cluster, name)
            if volume.state in (S.STARTED.value, S.STARTING.value, S.START_FAILED.value, S.STOP_FAILED.value):
                raise Conflict(
                    f"volume {name!r} is {volume.state}: stop it first (glusterctl volume stop -c {cluster.name} {name})"
                )
            _move(volume, S.DELETING, "delete requested" + (" with purge" if purge else ""))
            tasks = self._submit(
                volume,
                "volume.delete",
                bricks_of(volume),
                lambda bs: {"bricks": [{"index": b.index, "path": b.path} for b in bs], "purge": purge},
            )
        self.engine.publish(tasks)
        return volume, tasks

    # -- progress -------------------------------------------------------------------------
    def task_finished(self, task: Task) -> None:
        if task.kind not in OPERATIONS or not task.operation:
            return
        publish: list[Task] = []
        with db.atomic():
            volume = locked(Volume.select().where(Volume.operation == task.operation)).first()
            if volume is None:
                return
            if task.kind == "volume.start" and task.state == "FAILED" and task.reason.startswith("EADDRINUSE"):
                publish = self._retry_on_new_ports(volume, task)
            latest: dict[str, str] = {}  # a retried node counts with its newest task
            for t in (
                Task.select(Task.node_name, Task.state)
                .where(Task.operation == task.operation)
                .order_by(Task.created_at)
            ):
                latest[t.node_name] = t.state
            states = latest
            if publish or any(s not in ("DONE", "FAILED") for s in states.values()):
                pass  # the operation goes on
            else:
                publish = self._conclude(volume, task, states)
        self.engine.publish(publish)

    def _conclude(self, volume: Volume, task: Task, states: dict[str, str]) -> list[Task]:
        """All tasks of the volume's operation are final: move the volume on; returns tasks to publish."""
        _, ok, failed = OPERATIONS[task.kind]
        if any(s != "DONE" for s in states.values()):
            nodes = sorted(n for n, s in states.items() if s != "DONE")
            _move(volume, failed, f"failed on {', '.join(nodes)}")
            return []
        if ok is None:  # deleted
            name, cluster = volume.name, volume.cluster.name
            volume.delete_instance(recursive=True)
            events.record("volume.state", cluster=cluster, subject=name, state="Deleted", reason="deleted")
            log.info("cluster %s volume %s: deleted", cluster, name)
            return []
        _move(volume, ok, f"{task.kind.split('.')[1]} done on all nodes")
        if ok == S.CREATED and volume.start_after_create:
            _move(volume, S.STARTING, "starting after create")
            rows = bricks_of(volume)
            return self._submit(volume, "volume.start", rows, self._start_params(volume, rows))
        return []

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
        rows = bricks_of(volume)
        moving = [b for b in rows if b.index in conflicts and b.node_name == task.node_name]
        old = {b.index: b.port for b in moving}
        for brick in moving:
            Brick.update(port=0).where(Brick.id == brick.id).execute()
        # skip the ports that just failed as well as those in use by bricks
        taken_range = (max(old.values()) + 1, self.port_range[1])
        for brick, port in zip(moving, allocate_ports(volume.cluster, [b.node_name for b in moving], taken_range)):
            brick.port = port
            brick.save()
            log.warning(
                "cluster %s volume %s: brick %d on %s moves from port %d to %d (EADDRINUSE)",
                volume.cluster.name,
                volume.name,
                brick.index,
                brick.node_name,
                old[brick.index],
                port,
            )
        rows = bricks_of(volume)
        # every node gets the new volfiles (its shd must reach the moved brick); running bricks stay
        return self._submit(volume, "volume.start", rows, self._start_params(volume, rows), operation=volume.operation)

    # -- what agents report -------------------------------------------------------------------
    @staticmethod
    def apply_heartbeat(cluster_name: str, node: Node, bricks: list, shds: list, devices: list) -> None:
        """Brick Online/Offline, self-heal daemons and device space, from one node's heartbeat."""
        reported = {(b.volume_id, b.index): b for b in bricks}
        now = time.time()
        rows = (
            Brick.select(Brick, Volume)
            .join(Volume)
            .where((Volume.cluster == node.cluster_id) & (Brick.node_name == node.name))
        )
        for brick in rows:
            rep = reported.get((brick.volume.id, brick.index))
            state = "Online" if rep is not None and rep.online else "Offline"
            pid = rep.pid if rep is not None else None
            if state != brick.state or pid != brick.pid:
                if state != brick.state:
                    log.info(
                        "cluster %s volume %s brick %s:%s: %s -> %s",
                        cluster_name,
                        brick.volume.name,
                        node.name,
                        brick.path,
                        brick.state,
                        state,
                    )
                    events.record(
                        "brick.state",
                        cluster=cluster_name,
                        subject=f"{brick.volume.name}:{node.name}:{brick.path}",
                        state=state,
                        pid=pid,
                    )
                    brick.state_changed_at = now
                brick.state, brick.pid = state, pid
                brick.save()
        node.facts = {**(node.facts or {}), "shds": {s.volume_id: {"pid": s.pid, "online": s.online} for s in shds}}
        for dev in devices:
            Device.update(total_bytes=dev.total_bytes, free_bytes=dev.free_bytes).where(
                (Device.cluster == node.cluster_id)
                & (Device.node_name == node.name)
                & (Device.path == dev.path)
                & ((Device.free_bytes != dev.free_bytes) | (Device.total_bytes != dev.total_bytes))
            ).execute()


# ---- devices -------------------------------------------------------------------------------
class DeviceService:
    def __init__(self, engine: TaskEngine) -> None:
        self.engine = engine
        engine.on_final.append(self.task_finished)

    def add(self, cluster: Cluster, node: str, path: str | None, device: str | None) -> tuple[Device, Task]:
        if bool(path) == bool(device):
            raise InvalidInput("give exactly one of --path DIR or --device /dev/DISK")
        target = posixpath.normpath(path or device)
        if not target.startswith("/") or target == "/" or len(target) > MAX_PATH:
            raise InvalidInput(
                f"{target[:80]!r} is not allowed: use an absolute path other than /, at most {MAX_PATH} characters"
            )
        if device and not target.startswith("/dev/"):
            raise InvalidInput(f"--device {target!r} must be a block device under /dev")
        with db.atomic():
            if not Node.select().where((Node.cluster == cluster) & (Node.name == node)).exists():
                raise NotFound(f"no node {node!r} in cluster {cluster.name!r}")
            if (
                Device.select()
                .where(
                    (Device.cluster == cluster)
                    & (Device.node_name == node)
                    & ((Device.path == target) | ((Device.device == target) & (Device.device != "")))
                )
                .exists()
            ):
                raise Conflict(f"{target} is already registered on node {node}")
            # a block device's path becomes its mount point once the agent mounted it
            dev = Device.create(
                cluster=cluster, node_name=node, path=target, device=target if device else "", state="Pending"
            )
            task = self.engine.submit(
                cluster,
                node,
                TaskKind.DEVICE_ADD.value,
                {"path": None if device else target, "device": target if device else None},
                operation=uuid.uuid4().hex,
                target=f"device:{target}",
            )
            dev.task_id = task.id
            dev.save()
            events.record("device.state", cluster=cluster.name, subject=f"{node}:{target}", state="Pending")
        self.engine.publish([task])
        return dev, task

    def task_finished(self, task: Task) -> None:
        if task.kind != TaskKind.DEVICE_ADD.value:
            return
        with db.atomic():
            dev = Device.get_or_none(Device.task_id == task.id)
            if dev is None:
                return
            result = task.result or {}
            if task.state == "DONE":
                dev.state, dev.reason = "Ready", ""
                dev.path = result.get("path") or dev.path
                dev.total_bytes, dev.free_bytes = result.get("total_bytes", 0), result.get("free_bytes", 0)
            else:
                dev.state, dev.reason = "Failed", task.reason
            dev.save()
            events.record(
                "device.state",
                cluster=task.cluster.name,
                subject=f"{dev.node_name}:{dev.device or dev.path}",
                state=dev.state,
                reason=dev.reason,
            )

    @staticmethod
    def list(cluster: Cluster, node: str | None = None) -> list[Device]:
        query = Device.select().where(Device.cluster == cluster)
        if node:
            query = query.where(Device.node_name == node)
        return list(query.order_by(Device.node_name, Device.path))

    @staticmethod
    def remove(cluster: Cluster, node: str, target: str) -> None:
        target = posixpath.normpath(target)
        with db.atomic():
            dev = Device.get_or_none(
                (Device.cluster == cluster)
                & (Device.node_name == node)
                & ((Device.path == target) | (Device.device == target))
            )
            if dev is None:
                raise NotFound(f"no device or path {target} registered on node {node}")
            users = (
                Brick.select(Brick, Volume)
                .join(Volume)
                .where((Brick.device == dev) | ((Brick.node_name == node) & (Brick.path.startswith(dev.path + "/"))))
            )
            names = sorted({b.volume.name for b in users})
            if names:
                raise Conflict(f"{target} on {node} holds bricks of volume(s) {', '.join(names)}: delete them first")
            dev.delete_instance()
            events.record("device.removed", cluster=cluster.name, subject=f"{node}:{target}")
