"""HTTP routes for volume options: get, set and reset (`gluster volume get/set/reset`)."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import APIRouter, Body, Depends, Request

from control.api import schemas as s
from control.api.deps import VOLUME, CurrentUser, permit
from control.services import clusters
from control.services.authz import Action
from control.services.options import RESET_ALL, OptionChange, OptionService, OptionValue

router = APIRouter(prefix="/api/v1/clusters/{name}/volumes/{volume}/options", tags=["options"])


def option_service(request: Request) -> OptionService:
    return cast(OptionService, request.app.state.options)


Options = Annotated[OptionService, Depends(option_service)]


def _public(row: OptionValue) -> s.OptionPublic:
    return s.OptionPublic(
        key=row.key,
        value=row.value,
        default=row.default,
        source=row.source,
        is_default=row.is_default,
        supported=row.supported,
        description=row.description,
    )


def _changed(change: OptionChange) -> s.OptionsChanged:
    return s.OptionsChanged(volume=change.volume.name, changed=change.changed, tasks=[t.id for t in change.tasks])


@router.get(
    "",
    response_model=list[s.OptionPublic],
    description="Every option with its effective value and where it comes from (set, create, default), "
    "like `gluster volume get VOL all`; `?key=` for one (full key, alias or unique short form).",
    dependencies=[permit(Action.READ, VOLUME)],
)
def get_options(
    name: str, volume: str, actor: CurrentUser, service: Options, key: str | None = None
) -> list[s.OptionPublic]:
    return [_public(r) for r in service.get(clusters.get(name), volume, key)]


@router.get(
    "/{key}",
    response_model=s.OptionPublic,
    description="One option's effective value (full key, alias or unique short form). `all` is not an option: "
    "404, list them with `GET .../options`.",
    dependencies=[permit(Action.READ, VOLUME)],
)
def get_option(name: str, volume: str, key: str, actor: CurrentUser, service: Options) -> s.OptionPublic:
    return _public(service.get_one(clusters.get(name), volume, key))


_SET_DESCRIPTION = (
    "Set options, `{KEY: VALUE, ...}`, checked as glusterd checks them for this volume. The new volfiles "
    "go to every node with bricks (`volume.volfiles` tasks, listed in `tasks`); running processes reload them."
)


@router.put(
    "",
    response_model=s.OptionsChanged,
    status_code=202,
    description=_SET_DESCRIPTION,
    dependencies=[permit(Action.OPERATE, VOLUME)],
)
@router.post(
    "",
    response_model=s.OptionsChanged,
    status_code=202,
    description=_SET_DESCRIPTION,
    dependencies=[permit(Action.OPERATE, VOLUME)],
)
def set_options(
    name: str, volume: str, actor: CurrentUser, service: Options, body: Annotated[dict[str, str], Body()]
) -> s.OptionsChanged:
    return _changed(service.set(clusters.get(name), volume, body))


@router.delete(
    "",
    response_model=s.OptionsChanged,
    status_code=202,
    description="Reset every option set on the volume.",
    dependencies=[permit(Action.OPERATE, VOLUME)],
)
def reset_all(name: str, volume: str, actor: CurrentUser, service: Options) -> s.OptionsChanged:
    return _changed(service.reset(clusters.get(name), volume, RESET_ALL))


@router.delete(
    "/{key}",
    response_model=s.OptionsChanged,
    status_code=202,
    description="Reset one option (its value goes back to the default; `changed` is empty if it was not set).",
    dependencies=[permit(Action.OPERATE, VOLUME)],
)
def reset_option(name: str, volume: str, key: str, actor: CurrentUser, service: Options) -> s.OptionsChanged:
    return _changed(service.reset(clusters.get(name), volume, key))
