"""A volume as volgen sees it (its spec), and the volfiles that go into the agents' tasks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from broker.messages import NodeState, TaskKind
from control.services.tasks import TaskEngine
from control.store.models import Brick, Node, Task, Volume
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


# not a key of its own: the local peers' text for the client key NAME ('/' is in no volume name)
TRUSTED_PREFIX = "trusted/"


def shd_key(volume: Volume) -> str:
    """The self-heal daemon's volfile key (its --volfile-id), as glusterd names it."""
    return f"shd/{volume.name}"


def node_volfiles(volume: Volume, spec: VolumeSpec, node_bricks: list[Brick]) -> dict[str, str]:
    """A node's complete set of volfiles for `volume`, by key: its bricks, its self-heal daemon
    (not for distribute) and the client volfile: key NAME holds the plain one (for remote
    peers), TRUSTED_PREFIX + NAME the trusted one with the volume's credentials, which the
    agent serves under NAME to local peers only (glfsheal, mounts on the node itself)."""
    files = {brick_volfile_name(spec, b.index)[:-4]: brick_volfile(spec, b.index) for b in node_bricks}
    if volume.type != "distribute":
        files[shd_key(volume)] = shd_volfile(spec, node_bricks[0].node_name)
    files[volume.name] = client_volfile(spec)
    files[TRUSTED_PREFIX + volume.name] = client_volfile(spec, trusted=True)
    return files


def start_params(volume: Volume, rows: list[Brick]) -> ParamsFor:
    """volume.start parameters per node: each brick's port and volfile key, and the node's volfiles."""
    spec = spec_of(volume, rows)

    def params(node_bricks: list[Brick]) -> dict[str, Any]:
        return {
            "bricks": [
                {
                    "index": b.index,
                    "path": b.path,
                    "port": b.port,
                    "volfile_id": brick_volfile_name(spec, b.index)[:-4],
                }
                for b in node_bricks
            ],
            "volfiles": node_volfiles(volume, spec, node_bricks),
            "shd": shd_key(volume) if volume.type != "distribute" else None,
        }

    return params


def volfiles_params(volume: Volume, rows: list[Brick]) -> ParamsFor:
    """volume.volfiles parameters per node: the node's complete volfile set for the volume."""
    spec = spec_of(volume, rows)
    return lambda node_bricks: {"volfiles": node_volfiles(volume, spec, node_bricks)}


def push_volfiles(engine: TaskEngine, volume: Volume, operation: str = "", publish: bool = True) -> list[Task]:
    """Send every node holding bricks of `volume` its complete volfile set (`volume.volfiles`):
    the agents serve them and tell the running processes whose volfile changed, which pick the
    change up without a restart. Publishes the tasks (unless not `publish`: inside a transaction,
    the caller publishes after commit) and returns them.

    `operation`: the volume operation the tasks of Online nodes belong to. A node that is not Online
    gets its task outside the operation (it waits QUEUED and applies when the node is back), so the
    operation never waits for it; a node that was removed (its bricks Lost) gets none.
    """
    rows = bricks_of(volume)
    params_for = volfiles_params(volume, rows)
    by_node: dict[str, list[Brick]] = {}
    for brick in rows:
        by_node.setdefault(brick.node_name, []).append(brick)
    states = {n.name: n.state for n in Node.select(Node.name, Node.state).where(Node.cluster == volume.cluster)}
    ref = {"id": volume.id, "name": volume.name, "type": volume.type}
    tasks = [
        engine.submit(
            volume.cluster,
            node,
            TaskKind.VOLUME_VOLFILES.value,
            {"volume": ref, **params_for(node_bricks)},
            operation=operation if states[node] == NodeState.ONLINE.value else "",
            target=f"volume:{volume.name}",
        )
        for node, node_bricks in sorted(by_node.items())
        if node in states
    ]
    if publish:
        engine.publish(tasks)
    return tasks
