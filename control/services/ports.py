"""Brick ports: a free port per brick, unique per host address, within the server's range."""

from __future__ import annotations

import logging
from collections import defaultdict

from control.errors import Conflict
from control.store.models import Brick, Cluster, Node, Volume

log = logging.getLogger(__name__)

DEFAULT_PORT_RANGE = (49152, 60999)


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


def move_to_new_ports(volume: Volume, moving: list[Brick], port_range: tuple[int, int]) -> None:
    """Give ``moving`` bricks new ports above their current ones (after EADDRINUSE on their node).

    The ports that just failed are skipped as well as those in use by other bricks.
    """
    if not moving:
        return
    old = {b.index: b.port for b in moving}
    for brick in moving:
        Brick.update(port=0).where(Brick.id == brick.id).execute()
    above = (max(old.values()) + 1, port_range[1])
    for brick, port in zip(moving, allocate_ports(volume.cluster, [b.node_name for b in moving], above)):
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
