"""HTTP routes for devices, volumes, client volfiles and the failure report."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import PlainTextResponse

from control.api import schemas as s
from control.api.deps import CurrentUser, Devices, Volumes
from control.errors import InvalidInput
from control.services import clusters, failures, views
from control.services.layout import VolumeRequest
from control.services.volfiles import client_volfile_text
from control.store.models import Task, Volume

router = APIRouter(prefix="/api/v1")

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
    "which the agent formats with XFS and mounts. Runs as a task on the node.",
)
def add_device(name: str, body: s.DeviceCreate, actor: CurrentUser, service: Devices) -> s.DeviceAdded:
    dev, task = service.add(clusters.get(name), body.node, body.path, body.device)
    return s.DeviceAdded(
        device=s.DevicePublic.model_validate(views.device_view(dev)),
        task=s.TaskPublic.model_validate(views.task_view(task)),
    )


@router.get("/clusters/{name}/devices", response_model=list[s.DevicePublic], tags=["devices"])
def list_devices(name: str, actor: CurrentUser, service: Devices, node: str | None = None) -> list[s.DevicePublic]:
    return [s.DevicePublic.model_validate(views.device_view(d)) for d in service.list_devices(clusters.get(name), node)]


@router.delete(
    "/clusters/{name}/devices/{node}",
    status_code=204,
    tags=["devices"],
    description="Forget a registered path or device; refused while a brick uses it.",
)
def remove_device(name: str, node: str, actor: CurrentUser, service: Devices, path: str = Query(...)) -> Response:
    service.remove(clusters.get(name), node, path)
    return Response(status_code=204)


# ---- volumes ------------------------------------------------------------------------------
@router.post(
    "/clusters/{name}/volumes",
    response_model=s.VolumeOperation,
    status_code=202,
    tags=["volumes"],
    description="Create a volume (and start it unless `start` is false). Bricks are NODE:/path in order; "
    "or give `size` to place them on registered devices.",
)
def create_volume(name: str, body: s.VolumeCreate, actor: CurrentUser, service: Volumes) -> s.VolumeOperation:
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
    volume, tasks = service.create(clusters.get(name), req)
    return operation(volume, tasks)


@router.get("/clusters/{name}/volumes", response_model=list[s.VolumePublic], tags=["volumes"])
def list_volumes(name: str, actor: CurrentUser, service: Volumes) -> list[s.VolumePublic]:
    return [volume_public(v) for v in service.list_volumes(clusters.get(name))]


@router.get(
    "/clusters/{name}/volumes/{volume}",
    response_model=s.VolumePublic,
    tags=["volumes"],
    description="The volume with each brick's node, path, port, pid and Online/Offline/Unreachable "
    "(from the agents' heartbeats) and the self-heal daemon per node.",
)
def get_volume(name: str, volume: str, actor: CurrentUser, service: Volumes) -> s.VolumePublic:
    return volume_public(service.get(clusters.get(name), volume))


@router.post(
    "/clusters/{name}/volumes/{volume}/start", response_model=s.VolumeOperation, status_code=202, tags=["volumes"]
)
def start_volume(name: str, volume: str, actor: CurrentUser, service: Volumes) -> s.VolumeOperation:
    return operation(*service.start(clusters.get(name), volume))


@router.post(
    "/clusters/{name}/volumes/{volume}/stop", response_model=s.VolumeOperation, status_code=202, tags=["volumes"]
)
def stop_volume(name: str, volume: str, actor: CurrentUser, service: Volumes) -> s.VolumeOperation:
    return operation(*service.stop(clusters.get(name), volume))


@router.delete(
    "/clusters/{name}/volumes/{volume}",
    response_model=s.VolumeOperation,
    status_code=202,
    tags=["volumes"],
    description="Delete a stopped volume. With purge=true the agents also remove GlusterFS metadata "
    "(volume-id xattr, .glusterfs) from the brick directories; data files stay.",
)
def delete_volume(
    name: str, volume: str, actor: CurrentUser, service: Volumes, purge: bool = False
) -> s.VolumeOperation:
    return operation(*service.delete(clusters.get(name), volume, purge))


@router.get(
    "/clusters/{name}/volumes/{volume}/volfile",
    response_class=PlainTextResponse,
    tags=["volumes"],
    description="The FUSE client volfile: mount with `glusterfs -f FILE --volfile-id NAME MOUNTPOINT`.",
)
def client_volfile(name: str, volume: str, actor: CurrentUser, service: Volumes) -> PlainTextResponse:
    return PlainTextResponse(client_volfile_text(service.get(clusters.get(name), volume)))


# ---- failure report -------------------------------------------------------------------------
@router.get(
    "/failures",
    response_model=list[dict[str, Any]],
    tags=["failures"],
    description="The last failed tasks with node, error, the reason and how to fix it.",
)
def failure_report(
    actor: CurrentUser, cluster: str | None = None, limit: int = Query(20, ge=1, le=500)
) -> list[dict[str, Any]]:
    return failures.recent(clusters.get(cluster) if cluster else None, limit)
