"""HTTP routes for heal: request heal info or an index heal, then read the merged results."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from control.api import schemas as s
from control.api.deps import VOLUME, CurrentScope, CurrentUser, Engine, permit
from control.services import authz, clusters, heal
from control.services.authz import Action

router = APIRouter(prefix="/api/v1")


@router.post(
    "/clusters/{name}/volumes/{volume}/heal",
    response_model=s.HealRequested,
    status_code=202,
    tags=["volumes"],
    description="Request heal information (`info`, `split-brain`, `summary`: glfsheal on one node holding a "
    "brick) or an index heal (`index`: the self-heal daemon of every node holding bricks). Answers with the "
    "task ids at once; read the merged results with GET on the same path and `task=ID` for each id.",
    dependencies=[permit(Action.READ, VOLUME)],
)
def request_heal(name: str, volume: str, body: s.HealRequest, scope: CurrentScope, engine: Engine) -> s.HealRequested:
    if body.op == "index":  # heal information needs viewer, starting a heal operator
        scope.require(Action.OPERATE, authz.on_volume(name, volume))
    tasks = heal.request(engine, clusters.get(name), volume, body.op)
    return s.HealRequested(op=body.op, tasks=[t.id for t in tasks])


@router.get(
    "/clusters/{name}/volumes/{volume}/heal",
    response_model=s.HealResult,
    tags=["volumes"],
    description="The results of heal tasks merged per brick (NODE:/path): `done` is true once every task is "
    "final; `nodes` has each task's state, and for an index heal whether it was triggered.",
    dependencies=[permit(Action.READ, VOLUME)],
)
def heal_results(
    name: str, volume: str, actor: CurrentUser, task: Annotated[list[str] | None, Query(max_length=64)] = None
) -> s.HealResult:
    return s.HealResult.model_validate(heal.results(clusters.get(name), volume, task or []))
