"""Volume layout: the volume type from a request, brick arguments, and the rules a set of bricks must follow."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from broker.paths import MAX_PATH, PathRefused, check_path, normalise
from control.errors import InvalidInput, NotFound
from control.store.models import Cluster, Device, Node, Volume

__all__ = ["MAX_PATH", "Layout", "VolumeRequest", "check_layout", "parse_bricks", "volume_type"]


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
    # dynamic placement: the registered devices the requesting user may put bricks on (None: all)
    usable_device: Callable[[Device], bool] | None = None


@dataclass(frozen=True)
class Layout:
    """What a volume's bricks form: ``type`` with replica/arbiter/disperse/redundancy counts."""

    type: str
    replica: int
    arbiter: int
    disperse: int
    redundancy: int

    @property
    def set_size(self) -> int:
        """Bricks per replica or disperse set (1 for a plain distribute volume)."""
        return self.disperse if self.type == "disperse" else self.replica


def volume_type(req: VolumeRequest) -> Layout:
    """The layout the request asks for, with glusterd's rules."""
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
        return Layout("disperse", 1, 0, disperse, redundancy)
    if req.arbiter:
        if req.arbiter != 1:
            raise InvalidInput("--arbiter must be 1 (one arbiter brick per replica set)")
        if req.replica not in (2, 3):
            raise InvalidInput(
                "an arbiter volume is --replica 2 --arbiter 1 or --replica 3 --arbiter 1 (2 data bricks + 1 arbiter)"
            )
        return Layout("arbiter", 3, 1, 0, 0)
    if req.replica:
        if req.replica not in (2, 3):
            raise InvalidInput(f"replica {req.replica} is not supported: use --replica 2 or --replica 3")
        return Layout("replicate", req.replica, 0, 0, 0)
    return Layout("distribute", 1, 0, 0, 0)


def _device_mounts(cluster: Cluster) -> dict[str, list[str]]:
    """Per node, the mount points of registered block devices (the agent mounts them in its state dir)."""
    mounts: dict[str, list[str]] = {}
    query = Device.select(Device.node_name, Device.path).where(
        (Device.cluster == cluster) & (Device.device != "") & (Device.state == "Ready")
    )
    for dev in query:
        mounts.setdefault(dev.node_name, []).append(dev.path)
    return mounts


def parse_bricks(cluster: Cluster, items: list[str]) -> list[tuple[str, str]]:
    """NODE:/path arguments as (node, normalised path); every node must be registered.

    System directories are refused (``broker.paths``), except inside the mount point of a block
    device the agent formatted, which lies in its state directory.
    """
    out = []
    mounts = _device_mounts(cluster) if items else {}
    for item in items:
        node, sep, path = item.partition(":")
        if not sep or not node or not path:
            raise InvalidInput(f"invalid brick {item!r}: use NODE:/absolute/path")
        path = normalise(path)
        on_mount = any(path.startswith(m.rstrip("/") + "/") for m in mounts.get(node, []))
        if len(path) > MAX_PATH or not on_mount:
            try:
                check_path(path, f"brick path on {node}")
            except PathRefused as exc:
                raise InvalidInput(str(exc)) from None
        if not Node.select().where((Node.cluster == cluster) & (Node.name == node)).exists():
            raise NotFound(
                f"no node {node!r} in cluster {cluster.name!r}: start its agent with the cluster's join token first"
            )
        out.append((node, path))
    return out


def check_layout(kind: str, set_size: int, bricks: list[tuple[str, str]], force: bool) -> None:
    """Whole sets, no brick twice, and (unless forced) no two bricks of a set on one node."""
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


def layout_of(volume: Volume) -> Layout:
    """The layout a stored volume was made with."""
    return Layout(volume.type, volume.replica, volume.arbiter, volume.disperse, volume.redundancy)
