"""HTTP routes that grow and repair volumes: expand (add bricks)."""

from __future__ import annotations

from fastapi import APIRouter

from control.api import schemas as s
from control.api.deps import VOLUME, CurrentScope, Volumes, permit
from control.api.volumes import operation, parse_size
from control.services import authz, clusters
from control.services.authz import Action
from control.services.layout import VolumeRequest

router = APIRouter(prefix="/api/v1")


@router.post(
    "/clusters/{name}/volumes/{volume}/expand",
    response_model=s.VolumeOperation,
    status_code=202,
    tags=["volumes"],
    description="Add bricks to a volume (`gluster volume add-brick`): a multiple of the replica or disperse set "
    "size, each set on distinct nodes unless `force`; or `size` to place one set on registered devices. The new "
    "bricks are prepared and started (on a Started volume), then every node gets the new volfiles and running "
    "bricks, self-heal daemons and mounts switch graphs without a restart. The volume is Expanding, then back "
    "in its state, or ExpandFailed (an empty request retries). Needs operator on the volume; the bricks follow "
    "the same placement rules as for create.",
    dependencies=[permit(Action.OPERATE, VOLUME)],
)
def expand_volume(
    name: str, volume: str, body: s.VolumeExpand, scope: CurrentScope, service: Volumes
) -> s.VolumeOperation:
    cluster = clusters.get(name)
    vol = service.get(cluster, volume)
    size = parse_size(body.size) if body.size else 0
    req = VolumeRequest(name=vol.name, bricks=body.bricks, size_bytes=size)
    if body.bricks or size:
        authz.check_volume_create(scope, cluster, req)  # brick homes and device grants, as for create
    return operation(*service.expansion.expand(cluster, vol, body.bricks, size, body.force, req.usable_device))
