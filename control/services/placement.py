"""Where bricks go: dynamic placement on registered devices by size, and brick path conflicts."""

from __future__ import annotations

import posixpath
from collections import defaultdict

from broker.messages import NodeState
from control.errors import Conflict, InvalidInput
from control.services.layout import Layout
from control.store.models import Brick, Cluster, Device, Node, Volume


def place_by_size(cluster: Cluster, name: str, layout: Layout, size: int) -> list[tuple[str, str, Device]]:
    """Dynamic provisioning: one set of bricks on Ready devices with room, each on a distinct node.

    Nodes that are Online come first, then the devices with the most free space.
    """
    set_size = layout.set_size
    per_brick = size if layout.type != "disperse" else -(-size // (set_size - layout.redundancy))
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
