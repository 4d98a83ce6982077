"""HTTP routes for devices, volumes, client volfiles and the failure report.

Every route declares its permission (``permit``); lists show only what the caller may see.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import PlainTextResponse

from control.api import schemas as s
from control.api.deps import (
    DEVICE,
    IN_CLUSTER,
    LOGIN,
    NODE,
    VOLUME,
    CurrentScope,
    CurrentUser,
    Devices,
    Volumes,
    permit,
)
from control.errors import InvalidInput
from control.services import authz, clusters, failures, views
from control.services.authz import Action
from control.services.layout import VolumeRequest
from control.services.volfiles import client_volfile_text
from control.store.models import Task, Volume

router = APIRouter(prefix="/api/v1")
READ, OPERATE, ADMIN = Action.READ, Action.OPERATE, Action.ADMIN

MAX_SCAN = 2000  # failures a filtered report looks through for the caller's own
SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]i?B?|B)?\s*$", re.IGNORECASE)
UNITS = {
    "": 1,
    "B": 1,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "KI": 2**10,
    "MI": 2**20,
    "GI": 2**30,
    "TI": 2**40,
    "PI": 2**50,
}


def parse_size(text: str) -> int:
    match = SIZE_RE.match(text or "")
    if not match:
        raise InvalidInput(f"invalid size {text!r}: use a number with a unit, e.g. 100GiB, 500MiB or 1TB")
    unit = (match.group(2) or "").upper().rstrip("B")
    return int(float(match.group(1)) * UNITS[unit])


def operation(volume: Volume | None, tasks: list[Task]) -> s.VolumeOperation:
    return s.VolumeOperation.model_validate(views.operation_view(volume, tasks))


def volume_public(volume: Volume) -> s.VolumePublic:
    return s.VolumePublic.model_validate(views.volume_view(volume))


# ---- devices ------------------------------------------------------------------------------
@router.post(
    "/clusters/{name}/devices",
    response_model=s.DeviceAdded,
    status_code=202,
    tags=["devices"],
    description="Register a brick home on a node: a directory (`path`) or an empty block device (`device`), "
    "which the agent formats with XFS and mounts. Runs as a task on the node. Admins only (of the node); "
    "system directories (/etc, /usr, /var/lib, ...) are refused.",
    dependencies=[permit(ADMIN, NODE)],
)
def add_device(name: str, body: s.DeviceCreate, service: Devices) -> s.DeviceAdded:
    dev, task = service.add(clusters.get(name), body.node, body.path, body.device)
    return s.DeviceAdded(
        device=s.DevicePublic.model_validate(views.device_view(dev)),
        task=s.TaskPublic.model_validate(views.task_view(task)),
    )


@router.get(
    "/clusters/{name}/devices",
    response_model=list[s.DevicePublic],
    tags=["devices"],
    dependencies=[permit(READ, IN_CLUSTER)],
)
def list_devices(name: str, scope: CurrentScope, service: Devices, node: str | None = None) -> list[s.DevicePublic]:
    rows = service.list_devices(clusters.get(name), node)
    return [
        s.DevicePublic.model_validate(views.device_view(d))
        for d in rows
        if scope.sees_device(name, d.node_name, d.path)
    ]


@router.delete(
    "/clusters/{name}/devices/{node}",
    status_code=204,
    tags=["devices"],
    description="Forget a registered path or device (admins only); refused while a brick uses it.",
    dependencies=[permit(ADMIN, DEVICE)],
)
def remove_device(name: str, node: str, service: Devices, path: str = Query(...)) -> Response:
    service.remove(clusters.get(name), node, path)
    return Response(status_code=204)


# ---- volumes ------------------------------------------------------------------------------
@router.post(
    "/clusters/{name}/volumes",
    response_model=s.VolumeOperation,
    status_code=202,
    tags=["volumes"],
    description="Create a volume (and start it unless `start` is false). Bricks are NODE:/path in order; "
    "or give `size` to place them on registered devices. Needs operator on the cluster, or on the nodes or "
    "devices of every brick; bricks must lie under a registered path or device of their node unless the "
    "caller is admin of that node; system directories are refused.",
    dependencies=[permit(OPERATE, IN_CLUSTER)],
)
def create_volume(name: str, body: s.VolumeCreate, scope: CurrentScope, service: Volumes) -> s.VolumeOperation:
    req = VolumeRequest(
        name=body.name,
        bricks=body.bricks,
        replica=body.replica,
        arbiter=body.arbiter,
        disperse=body.disperse,
        redundancy=body.redundancy,
        force=body.force,
        start=body.start,
        options=body.options,
        size_bytes=parse_size(body.size) if body.size else 0,
    )
    cluster = clusters.get(name)
    authz.check_volume_create(scope, cluster, req)
    volume, tasks = service.create(cluster, req)
    return operation(volume, tasks)


@router.get(
    "/clusters/{name}/volumes",
    response_model=list[s.VolumePublic],
    tags=["volumes"],
    dependencies=[permit(READ, IN_CLUSTER)],
)
def list_volumes(name: str, scope: CurrentScope, service: Volumes) -> list[s.VolumePublic]:
    return [volume_public(v) for v in service.list_volumes(clusters.get(name)) if scope.sees_volume(name, v.name)]


@router.get(
    "/clusters/{name}/volumes/{volume}",
    response_model=s.VolumePublic,
    tags=["volumes"],
    description="The volume with each brick's node, path, port, pid and Online/Offline/Unreachable "
    "(from the agents' heartbeats) and the self-heal daemon per node.",
    dependencies=[permit(READ, VOLUME)],
)
def get_volume(name: str, volume: str, service: Volumes) -> s.VolumePublic:
    return volume_public(service.get(clusters.get(name), volume))


@router.post(
    "/clusters/{name}/volumes/{volume}/start",
    response_model=s.VolumeOperation,
    status_code=202,
    tags=["volumes"],
    dependencies=[permit(OPERATE, VOLUME)],
)
def start_volume(name: str, volume: str, service: Volumes) -> s.VolumeOperation:
    return operation(*service.start(clusters.get(name), volume))


@router.post(
    "/clusters/{name}/volumes/{volume}/stop",
    response_model=s.VolumeOperation,
    status_code=202,
    tags=["volumes"],
    dependencies=[permit(OPERATE, VOLUME)],
)
def stop_volume(name: str, volume: str, service: Volumes) -> s.VolumeOperation:
    return operation(*service.stop(clusters.get(name), volume))


@router.delete(
    "/clusters/{name}/volumes/{volume}",
    response_model=s.VolumeOperation,
    status_code=202,
    tags=["volumes"],
    description="Delete a stopped volume. With purge=true the agents also remove GlusterFS metadata "
    "(volume-id xattr, .glusterfs) from the brick directories; data files stay.",
    dependencies=[permit(OPERATE, VOLUME)],
)
def delete_volume(name: str, volume: str, service: Volumes, purge: bool = False) -> s.VolumeOperation:
    return operation(*service.delete(clusters.get(name), volume, purge))


@router.post(
    "/clusters/{name}/volumes/{volume}/reset-state",
    response_model=s.VolumeOperation,
    tags=["volumes"],
    description="Take a stuck volume (Starting, Deleting, a failed state, ...) back to its last stable state "
    "(Created, Started or Stopped; a volume never created fully goes to CreateFailed). The open tasks of its "
    "operation fail with reason RESET; `reason` is recorded in the volume's event. Needs `force: true` and "
    "admin on the volume: the reset overrides the state machine, and the bricks may not be in that state.",
    dependencies=[permit(ADMIN, VOLUME)],
)
def reset_volume_state(
    name: str, volume: str, body: s.VolumeResetState, actor: CurrentUser, service: Volumes
) -> s.VolumeOperation:
    if not body.force:
        raise InvalidInput("reset-state overrides the volume's state machine: confirm with force=true (--force)")
    return operation(*service.reset_state(clusters.get(name), volume, body.reason, actor.name))


@router.get(
    "/clusters/{name}/volumes/{volume}/volfile",
    response_class=PlainTextResponse,
    tags=["volumes"],
    description="The FUSE client volfile: mount with `glusterfs -f FILE --volfile-id NAME MOUNTPOINT`. "
    "It carries the volume's client credentials, so it needs operator on the volume.",
    dependencies=[permit(OPERATE, VOLUME)],
)
def client_volfile(name: str, volume: str, service: Volumes) -> PlainTextResponse:
    return PlainTextResponse(client_volfile_text(service.get(clusters.get(name), volume)))


# ---- failure report -------------------------------------------------------------------------
@router.get(
    "/failures",
    response_model=list[dict[str, Any]],
    tags=["failures"],
    description="The last failed tasks with node, error, the reason and how to fix it (those the caller may see).",
    dependencies=[permit(READ, LOGIN)],
)
def failure_report(
    scope: CurrentScope, cluster: str | None = None, limit: int = Query(20, ge=1, le=500)
) -> list[dict[str, Any]]:
    if cluster and not scope.sees_cluster(cluster):
        return []
    everything = scope.allows(READ, authz.EVERYTHING) or bool(cluster and scope.allows(READ, authz.on_cluster(cluster)))
    rows = failures.recent(clusters.get(cluster) if cluster else None, limit if everything else MAX_SCAN)
    return [r for r in rows if everything or scope.sees_task(r["cluster"], r["node"], r["target"])][:limit]
