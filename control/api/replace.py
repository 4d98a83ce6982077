"""HTTP route that repairs a volume: replace-brick."""

from __future__ import annotations

from fastapi import APIRouter

from control.api import schemas as s
from control.api.deps import VOLUME, CurrentScope, Volumes, permit
from control.api.volumes import operation
from control.services import authz, clusters
from control.services.authz import Action
from control.services.layout import VolumeRequest

router = APIRouter(prefix="/api/v1")


@router.post(
    "/clusters/{name}/volumes/{volume}/replace-brick",
    response_model=s.VolumeOperation,
    status_code=202,
    tags=["volumes"],
    description="Replace a failed brick (`gluster volume replace-brick VOL OLD NEW commit force`): the new brick "
    "takes the old one's place in its replica or disperse set, is prepared and (on a Started volume) started; "
    "the old brick's process stops if its node is reachable; every node gets the new volfiles (bricks, self-heal "
    "daemons and mounts switch graphs without a restart) and an index heal fills the new brick. Refused on "
    "distribute-only volumes (the old brick's files exist nowhere else). The volume is Replacing, then back in its "
    "state, or ReplaceFailed (the same request retries). Needs operator on the volume; the new brick follows the "
    "same placement rules as for create.",
    dependencies=[permit(Action.OPERATE, VOLUME)],
)
def replace_brick(
    name: str, volume: str, body: s.VolumeReplaceBrick, scope: CurrentScope, service: Volumes
) -> s.VolumeOperation:
    cluster = clusters.get(name)
    vol = service.get(cluster, volume)
    authz.check_volume_create(scope, cluster, VolumeRequest(name=vol.name, bricks=[body.new]))
    return operation(*service.replacement.replace(cluster, vol, body.old, body.new, body.force))
