"""A volume as volgen sees it (its spec), and the volfiles that go into the agents' tasks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from control.store.models import Brick, Node, Volume
from control.volgen import (
    BrickSpec,
    VolumeSpec,
    brick_volfile,
    brick_volfile_name,
    client_volfile,
    shd_volfile,
)

# the task parameters for one node, from that node's bricks
ParamsFor = Callable[[list[Brick]], dict[str, Any]]


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


def start_params(volume: Volume, rows: list[Brick]) -> ParamsFor:
    """volume.start parameters per node: each brick's volfile and port, and the node's self-heal daemon volfile."""
    spec = spec_of(volume, rows)
    shd = volume.type != "distribute"

    def params(node_bricks: list[Brick]) -> dict[str, Any]:
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
