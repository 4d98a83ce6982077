"""HTTP routes for devices, volumes, client volfiles and the failure report."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from broker.messages import NodeState
from control.api.deps import CurrentUser
from control.api.routes import task_public
from control.api.schemas import TaskPublic
from control.errors import InvalidInput
from control.services import clusters, failures
from control.services.volumes import (
    DeviceService,
    VolumeRequest,
    VolumeService,
    bricks_of,
    client_volfile_text,
)
from control.store.models import Device, Node, Volume

router = APIRouter(prefix="/api/v1")


def volume_service(request: Request) -> VolumeService:
    return request.app.state.volumes


def device_service(request: Request) -> DeviceService:
    return request.app.state.devices


Volumes = Annotated[VolumeService, Depends(volume_service)]
Devices = Annotated[DeviceService, Depends(device_service)]

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


# ---- schemas ------------------------------------------------------------------------------
class DeviceCreate(BaseModel):
    node: str
    path: str | None = Field(default=None, description="a directory whose parent exists on the node")
    device: str | None = Field(default=None, description="an empty block device: the agent makes XFS and mounts it")


class DevicePublic(BaseModel):
    node: str
    path: str
    device: str
    state: str
    reason: str
    total_bytes: int
    free_bytes: int


class DeviceAdded(BaseModel):
    device: DevicePublic
    task: TaskPublic


class VolumeCreate(BaseModel):
    name: str
    bricks: list[str] = Field(
        default=[], description="NODE:/path, in order; consecutive bricks form replica/disperse sets"
    )
    replica: int = Field(default=0, ge=0)
    arbiter: int = Field(default=0, ge=0)
    disperse: int = Field(default=0, ge=0)
    redundancy: int = Field(default=0, ge=0)
    size: str | None = Field(
        default=None, description="dynamic provisioning: place bricks on registered devices, e.g. 100GiB"
    )
    force: bool = False
    start: bool = True
    options: dict[str, str] = {}


class BrickPublic(BaseModel):
    index: int
    node: str
    path: str
    port: int
    pid: int | None
    state: str


class ShdPublic(BaseModel):
    node: str
    pid: int | None
    state: str


class VolumePublic(BaseModel):
    name: str
    cluster: str
    id: str
    type: str
    state: str
    replica: int
    arbiter: int
    disperse: int
    redundancy: int
    size_bytes: int
    created_at: float
    options: dict[str, str]
    bricks_online: int
    bricks_total: int
    bricks: list[BrickPublic]
    self_heal: list[ShdPublic]


class VolumeOperation(BaseModel):
    volume: VolumePublic | None
    tasks: list[str]


def device_public(dev: Device) -> DevicePublic:
    return DevicePublic(
        node=dev.node_name,
        path=dev.path,
        device=dev.device,
        state=dev.state,
        reason=dev.reason,
        total_bytes=dev.total_bytes,
        free_bytes=dev.free_bytes,
    )


def volume_public(volume: Volume) -> VolumePublic:
    nodes = {n.name: n for n in Node.select().where(Node.cluster == volume.cluster_id)}
    bricks = []
    for b in bricks_of(volume):
        node = nodes.get(b.node_name)
        reachable = node is not None and node.state == NodeState.ONLINE.value
        bricks.append(
            BrickPublic(
                index=b.index,
                node=b.node_name,
                path=b.path,
                port=b.port,
                pid=b.pid if reachable else None,
                state=b.state if reachable else "Unreachable",
            )
        )
    shds = []
    if volume.type != "distribute":
        for name in sorted({b.node for b in bricks}):
            node = nodes.get(name)
            info = ((node.facts or {}).get("shds") or {}).get(volume.id, {}) if node else {}
            if node is None or node.state != NodeState.ONLINE.value:
                shds.append(ShdPublic(node=name, pid=None, state="Unreachable"))
            else:
                shds.append(
                    ShdPublic(node=name, pid=info.get("pid"), state="Online" if info.get("online") else "Offline")
                )
    return VolumePublic(
        name=volume.name,
        cluster=volume.cluster.name,
        id=volume.id,
        type=volume.type,
        state=volume.state,
        replica=volume.replica,
        arbiter=volume.arbiter,
        disperse=volume.disperse,
        redundancy=volume.redundancy,
        size_bytes=volume.size_bytes,
        created_at=volume.created_at,
        options=volume.options or {},
        bricks_online=sum(1 for b in bricks if b.state == "Online"),
        bricks_total=len(bricks),
        bricks=bricks,
        self_heal=shds,
    )


def operation(volume: Volume | None, tasks: list) -> VolumeOperation:
    return VolumeOperation(volume=volume_public(volume) if volume is not None else None, tasks=[t.id for t in tasks])


# ---- devices ------------------------------------------------------------------------------
@router.post(
    "/clusters/{name}/devices",
    response_model=DeviceAdded,
    status_code=202,
    tags=["devices"],
    description="Register a brick home on a node: a directory (`path`) or an empty block device (`device`), "
    "which the agent formats with XFS and mounts. Runs as a task on the node.",
)
def add_device(name: str, body: DeviceCreate, actor: CurrentUser, service: Devices):
    dev, task = service.add(clusters.get(name), body.node, body.path, body.device)
    return DeviceAdded(device=device_public(dev), task=task_public(task))


@router.get("/clusters/{name}/devices", response_model=list[DevicePublic], tags=["devices"])
def list_devices(name: str, actor: CurrentUser, service: Devices, node: str | None = None):
    return [device_public(d) for d in service.list(clusters.get(name), node)]


@router.delete(
    "/clusters/{name}/devices/{node}",
    status_code=204,
    tags=["devices"],
    description="Forget a registered path or device; refused while a brick uses it.",
)
def remove_device(name: str, node: str, actor: CurrentUser, service: Devices, path: str = Query(...)):
    service.remove(clusters.get(name), node, path)
    return Response(status_code=204)


# ---- volumes ------------------------------------------------------------------------------
@router.post(
    "/clusters/{name}/volumes",
    response_model=VolumeOperation,
    status_code=202,
    tags=["volumes"],
    description="Create a volume (and start it unless `start` is false). Bricks are NODE:/path in order; "
    "or give `size` to place them on registered devices.",
)
def create_volume(name: str, body: VolumeCreate, actor: CurrentUser, service: Volumes):
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


@router.get("/clusters/{name}/volumes", response_model=list[VolumePublic], tags=["volumes"])
def list_volumes(name: str, actor: CurrentUser, service: Volumes):
    return [volume_public(v) for v in service.list(clusters.get(name))]


@router.get(
    "/clusters/{name}/volumes/{volume}",
    response_model=VolumePublic,
    tags=["volumes"],
    description="The volume with each brick's node, path, port, pid and Online/Offline/Unreachable "
    "(from the agents' heartbeats) and the self-heal daemon per node.",
)
def get_volume(name: str, volume: str, actor: CurrentUser, service: Volumes):
    return volume_public(service.get(clusters.get(name), volume))


@router.post(
    "/clusters/{name}/volumes/{volume}/start", response_model=VolumeOperation, status_code=202, tags=["volumes"]
)
def start_volume(name: str, volume: str, actor: CurrentUser, service: Volumes):
    return operation(*service.start(clusters.get(name), volume))


@router.post(
    "/clusters/{name}/volumes/{volume}/stop", response_model=VolumeOperation, status_code=202, tags=["volumes"]
)
def stop_volume(name: str, volume: str, actor: CurrentUser, service: Volumes):
    return operation(*service.stop(clusters.get(name), volume))


@router.delete(
    "/clusters/{name}/volumes/{volume}",
    response_model=VolumeOperation,
    status_code=202,
    tags=["volumes"],
    description="Delete a stopped volume. With purge=true the agents also remove GlusterFS metadata "
    "(volume-id xattr, .glusterfs) from the brick directories; data files stay.",
)
def delete_volume(name: str, volume: str, actor: CurrentUser, service: Volumes, purge: bool = False):
    return operation(*service.delete(clusters.get(name), volume, purge))


@router.get(
    "/clusters/{name}/volumes/{volume}/volfile",
    response_class=PlainTextResponse,
    tags=["volumes"],
    description="The FUSE client volfile: mount with `glusterfs -f FILE --volfile-id NAME MOUNTPOINT`.",
)
def client_volfile(name: str, volume: str, actor: CurrentUser, service: Volumes):
    return PlainTextResponse(client_volfile_text(service.get(clusters.get(name), volume)))


# ---- failure report -------------------------------------------------------------------------
@router.get(
    "/failures",
    response_model=list[dict[str, Any]],
    tags=["failures"],
    description="The last failed tasks with node, error, the reason and how to fix it.",
)
def failure_report(actor: CurrentUser, cluster: str | None = None, limit: int = Query(20, ge=1, le=500)):
    return failures.recent(clusters.get(cluster) if cluster else None, limit)
