"""HTTP routes that grow and repair volumes: expand (add bricks), rebalance."""

from __future__ import annotations

from fastapi import APIRouter

from control.api import schemas as s
from control.api.deps import VOLUME, CurrentScope, Volumes, permit
from control.api.volumes import operation, parse_size
from control.services import authz, clusters, rebalance
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


@router.post(
    "/clusters/{name}/volumes/{volume}/rebalance/start",
    response_model=s.RebalanceRequested,
    status_code=202,
    tags=["volumes"],
    description="Start a rebalance (`gluster volume rebalance VOL start`; with `fix_layout` only the directory "
    "layouts, no data moves): GlusterFS's rebalance process runs on every node holding bricks of the Started "
    "volume, which needs more than one set. Answers with the run id and task ids; read the status with GET "
    "on .../rebalance. Needs operator on the volume.",
    dependencies=[permit(Action.OPERATE, VOLUME)],
)
def start_rebalance(name: str, volume: str, body: s.RebalanceStart, service: Volumes) -> s.RebalanceRequested:
    cluster = clusters.get(name)
    run, tasks = service.rebalancing.start(cluster, service.get(cluster, volume), body.fix_layout)
    return s.RebalanceRequested(action="start", run=run, tasks=[t.id for t in tasks])


@router.post(
    "/clusters/{name}/volumes/{volume}/rebalance/stop",
    response_model=s.RebalanceRequested,
    status_code=202,
    tags=["volumes"],
    description="Stop the rebalance process on every node of the last run (files already moved stay where they "
    "are). Needs operator on the volume.",
    dependencies=[permit(Action.OPERATE, VOLUME)],
)
def stop_rebalance(name: str, volume: str, service: Volumes) -> s.RebalanceRequested:
    cluster = clusters.get(name)
    tasks = service.rebalancing.stop(cluster, service.get(cluster, volume))
    return s.RebalanceRequested(action="stop", run=tasks[0].operation, tasks=[t.id for t in tasks])


@router.post(
    "/clusters/{name}/volumes/{volume}/rebalance/refresh",
    response_model=s.RebalanceRequested,
    status_code=202,
    tags=["volumes"],
    description="Ask every node of the last run for a live poll of its rebalance status; GET on .../rebalance "
    "shows it once the tasks are done (it follows the heartbeats without this too). Needs viewer on the volume.",
    dependencies=[permit(Action.READ, VOLUME)],
)
def refresh_rebalance(name: str, volume: str, service: Volumes) -> s.RebalanceRequested:
    cluster = clusters.get(name)
    tasks = service.rebalancing.refresh(cluster, service.get(cluster, volume))
    return s.RebalanceRequested(action="refresh", run=tasks[0].operation, tasks=[t.id for t in tasks])


@router.get(
    "/clusters/{name}/volumes/{volume}/rebalance",
    response_model=s.RebalanceStatus,
    tags=["volumes"],
    description="The last known rebalance status per node (files migrated, bytes, files scanned, failures, "
    "skipped, run time, state) and summed; kept by the control service, which follows each run from the agents' "
    "heartbeats (every few seconds while it runs, then its end) and every finished rebalance task (POST on "
    ".../refresh asks the nodes for a live poll now).",
    dependencies=[permit(Action.READ, VOLUME)],
)
def rebalance_status(name: str, volume: str, service: Volumes) -> s.RebalanceStatus:
    return s.RebalanceStatus.model_validate(rebalance.status(service.get(clusters.get(name), volume)))
