"""Volume layout: the volume type from a request, brick arguments, and the rules a set of bricks must follow."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from control.errors import InvalidInput, NotFound
from control.store.models import Cluster, Node

MAX_PATH = 1024  # brick and device paths (the store's column size)


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


def parse_bricks(cluster: Cluster, items: list[str]) -> list[tuple[str, str]]:
    """NODE:/path arguments as (node, normalised path); every node must be registered."""
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
