"""HTTP route to send a volume's volfiles to its nodes again (they apply what changed without restarts)."""

from __future__ import annotations

from fastapi import APIRouter

from control.api import schemas as s
from control.api.deps import VOLUME, CurrentUser, Engine, Volumes, permit
from control.services import clusters
from control.services.authz import Action
from control.services.volfiles import push_volfiles

router = APIRouter(prefix="/api/v1")


@router.post(
    "/clusters/{name}/volumes/{volume}/volfiles",
    response_model=s.VolfilesPushed,
    status_code=202,
    tags=["volumes"],
    description="Generate the volume's volfiles from its current settings and send every node holding "
    "bricks its set (task volume.volfiles). Each agent serves them and tells the running bricks, self-heal "
    "daemons and clients whose volfile changed, which reconfigure without a restart.",
    dependencies=[permit(Action.OPERATE, VOLUME)],
)
def push(name: str, volume: str, actor: CurrentUser, service: Volumes, engine: Engine) -> s.VolfilesPushed:
    tasks = push_volfiles(engine, service.get(clusters.get(name), volume))
    return s.VolfilesPushed(tasks=[t.id for t in tasks])
