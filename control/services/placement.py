"""Where bricks go: dynamic placement on registered devices by size, and brick path conflicts."""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Callable

from broker.messages import NodeState
from control.errors import Conflict, Forbidden, InvalidInput
from control.services.layout import Layout
from control.store.models import Brick, Cluster, Device, Node, Volume


def place_by_size(
    cluster: Cluster,
    name: str,
    layout: Layout,
    size: int,
    usable: Callable[[Device], bool] | None = None,
    brick_name: str | None = None,
) -> list[tuple[str, str, Device]]:
    """Dynamic provisioning: one set of bricks on Ready devices with room, each on a distinct node.

    Nodes that are Online come first, then the devices with the most free space. ``usable``:
    only the devices the requesting user may put bricks on. Each brick is DEVICE/``brick_name``
    (default: the volume name; an expansion names its set apart from the volume's first one).
    """
    set_size = layout.set_size
    per_brick = size if layout.type != "disperse" else -(-size // (set_size - layout.redundancy))
    candidates: dict[str, Device] = {}
    for dev in (
        Device.select()
        .where((Device.cluster == cluster) & (Device.state == "Ready"))
        .order_by(Device.free_bytes.desc())
    ):
        if usable is not None and not usable(dev):
            continue
        if dev.free_bytes >= per_brick and dev.node_name not in candidates:
            candidates[dev.node_name] = dev
    online = {n.name for n in Node.select().where((Node.cluster == cluster) & (Node.state == NodeState.ONLINE.value))}
    ranked = sorted(candidates.values(), key=lambda d: (d.node_name not in online, -d.free_bytes))
    if len(ranked) < set_size:
        raise InvalidInput(
            f"--size {size} needs {set_size} nodes with a registered device or path with {per_brick} bytes free; "
            f"found {len(ranked)}: register more with 'glusterctl device add -c {cluster.name} NODE --path /exports/...'"
        )
    return [(d.node_name, posixpath.join(d.path, brick_name or name), d) for d in ranked[:set_size]]


def check_paths_free(cluster: Cluster, bricks: list[tuple[str, str]], exclude_volume: str | None = None) -> None:
    """A path already used by a brick (or nested in/around one) on that node is refused."""
    query = Brick.select(Brick, Volume).join(Volume).where(Volume.cluster == cluster)
    used: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for brick in query:
        if brick.volume.id != exclude_volume:
            used[brick.node_name].append((brick.path, brick.volume.name))
    for node, path in bricks:
        for other, vol in used[node]:
            if path == other or path.startswith(other + "/") or other.startswith(path + "/"):
                raise Conflict(f"brick path {node}:{path} is already used by volume {vol!r} ({node}:{other})")


def under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def check_brick_homes(cluster: Cluster, bricks: list[tuple[str, str]], free_choice: Callable[[str], bool]) -> None:
    """Each brick lies under a registered Ready path or device of its node, unless ``free_choice(node)`` (admins)."""
    roots: dict[str, list[str]] = defaultdict(list)
    for dev in Device.select(Device.node_name, Device.path).where(
        (Device.cluster == cluster) & (Device.state == "Ready")
    ):
        roots[dev.node_name].append(dev.path)
    for node, path in bricks:
        if free_choice(node) or any(under(path, root) for root in roots[node]):
            continue
        known = ", ".join(sorted(roots[node])) or "none registered"
        raise Forbidden(
            f"brick {node}:{path} is not under a registered brick home of node {node} ({known}): put it under one, "
            f"use --size, or ask an admin to register one ('glusterctl device add -c {cluster.name} {node} --path DIR')"
        )
