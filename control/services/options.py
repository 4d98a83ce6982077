"""Volume options: set, reset and get, as `gluster volume set/reset/get` do, and pushing the new volfiles.

Values are checked with GlusterFS's own option table against the volume as it is (its type, counts and
the xlators its graphs hold); keys are stored under their canonical name. A change regenerates the
volume's volfiles and, when the volume has bricks on its nodes, sends each node holding bricks its full
set in one `volume.volfiles` task; the agent serves them and makes the processes whose volfile text
changed refetch it (FETCHSPEC), so running bricks, self-heal daemons and mounts pick the change up in
place. Texts are deterministic, so only the daemons whose graph holds the option's xlator change.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace

from broker.messages import VolumeState
from control.errors import Conflict, InvalidInput, NotFound
from control.services import events
from control.services.tasks import TaskEngine
from control.services.volfiles import bricks_of, node_volfiles, spec_of
from control.store.db import first, locked
from control.store.models import Cluster, Task, Volume
from control.store.models import database_proxy as db
from control.volgen import (
    OptionError,
    VolgenError,
    VolumeSpec,
    check_option,
    create_defaults,
    unsupported_reason,
    volume_context,
)
from control.volgen.optiontable import USER_KEY_PREFIX, OptionSpec, all_options, lookup

log = logging.getLogger(__name__)

VOLFILES_TASK = "volume.volfiles"
RESET_ALL = "all"
S = VolumeState
# bricks exist on the nodes and no operation is changing them: new volfiles go out at once
PUSH_STATES = frozenset({S.CREATED, S.STARTED, S.STOPPED, S.START_FAILED, S.STOP_FAILED})
# the options are stored; the next create/start carries them
STORE_ONLY_STATES = frozenset({S.CREATE_FAILED})
VALUE_PREVIEW = 200  # characters of a value in log lines


@dataclass(frozen=True)
class OptionValue:
    """One row of `volume get`: the value in effect and where it comes from."""

    key: str
    value: str | None
    default: str | None
    source: str  # "set" (volume set), "create" (glusterd's create-time value), "default"
    description: str | None
    supported: bool

    @property
    def is_default(self) -> bool:
        return self.source == "default"


@dataclass(frozen=True)
class OptionChange:
    """What a set or reset did: the keys changed and the volfile tasks sent."""

    volume: Volume
    changed: dict[str, str | None]  # key -> new value (None: reset)
    tasks: list[Task]


def checked_options(spec: VolumeSpec, values: Mapping[str, str]) -> dict[str, str]:
    """`values` ({KEY: VALUE}, keys as full names, aliases or unique short forms) checked as glusterd
    checks `volume set` on the volume `spec` describes (with the options it already has), one after the
    other; returns {canonical key: stored value}. InvalidInput says what is allowed. `volume set` and
    `volume create --option` both go through here."""
    options: dict[str, str] = dict(spec.options)
    checked: dict[str, str] = {}
    for key, value in values.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidInput(f"option {key!r}: the value must be a string, got {type(value).__name__}")
        try:
            canonical, stored = check_option(key, value, volume_context(replace(spec, options=options)))
        except VolgenError as exc:
            raise InvalidInput(f"volume {spec.name!r}: {exc}") from None
        options[canonical] = stored
        checked[canonical] = stored
    return checked


def _short(value: str) -> str:
    return value if len(value) <= VALUE_PREVIEW else value[:VALUE_PREVIEW] + "..."


class OptionService:
    def __init__(self, engine: TaskEngine) -> None:
        self.engine = engine

    # -- read ------------------------------------------------------------------------------
    @staticmethod
    def _volume(cluster: Cluster, name: str, *, lock: bool = False) -> Volume:
        query = Volume.select().where((Volume.cluster == cluster) & (Volume.name == name))
        volume = first(locked(query)) if lock else query.first()
        if volume is None:
            raise NotFound(
                f"no volume {name!r} in cluster {cluster.name!r}; see 'glusterctl volume list -c {cluster.name}'"
            )
        return volume

    def get(self, cluster: Cluster, name: str, key: str | None = None) -> list[OptionValue]:
        """Every option with its effective value (`key` None or "all"), or the one named."""
        volume = self._volume(cluster, name)
        stored: dict[str, str] = dict(volume.options or {})
        created = create_defaults(volume.type)
        if key is not None and key != RESET_ALL:
            if key.startswith(USER_KEY_PREFIX):
                if key not in stored:
                    raise NotFound(f"option {key!r} is not set on volume {name!r}")
                return [OptionValue(key, stored[key], None, "set", None, True)]
            return [self._row(_lookup(key), stored, created)]
        rows = [self._row(spec, stored, created) for spec in all_options()]
        rows += [OptionValue(k, v, None, "set", None, True) for k, v in stored.items() if k.startswith(USER_KEY_PREFIX)]
        return sorted(rows, key=lambda r: r.key)

    def get_one(self, cluster: Cluster, name: str, key: str) -> OptionValue:
        """One option's row; "all" names no single option (the list is `get` without a key)."""
        if key == RESET_ALL:
            raise NotFound(
                f"'{RESET_ALL}' is not one option: list every option of volume {name!r} without a key "
                f"(GET .../volumes/{name}/options, or 'glusterctl volume get -c {cluster.name} {name} all')"
            )
        return self.get(cluster, name, key)[0]

    @staticmethod
    def _row(spec: OptionSpec, stored: dict[str, str], created: dict[str, str]) -> OptionValue:
        value: str | None
        if spec.key in stored:
            value, source = stored[spec.key], "set"
        elif spec.key in created:
            value, source = created[spec.key], "create"
        else:
            value, source = spec.default, "default"
        return OptionValue(spec.key, value, spec.default, source, spec.description, unsupported_reason(spec) is None)

    # -- write -----------------------------------------------------------------------------
    def set(self, cluster: Cluster, name: str, values: dict[str, str]) -> OptionChange:
        """Check every (key, value) as glusterd would for this volume, store them, push the volfiles."""
        if not values:
            raise InvalidInput("give at least one option: {KEY: VALUE}")
        with db.atomic():
            volume = self._volume(cluster, name, lock=True)
            self._check_state(volume, "set options on")
            spec = spec_of(volume)
            checked = checked_options(spec, values)
            changed: dict[str, str | None] = {**checked}
            tasks = self._save(volume, {**(volume.options or {}), **checked}, changed)
        self.engine.publish(tasks)
        return OptionChange(volume, changed, tasks)

    def reset(self, cluster: Cluster, name: str, key: str) -> OptionChange:
        """Forget one option (its canonical key, alias or short form) or all of them ("all")."""
        with db.atomic():
            volume = self._volume(cluster, name, lock=True)
            self._check_state(volume, "reset options on")
            options: dict[str, str] = dict(volume.options or {})
            if key == RESET_ALL:
                keys = list(options)
            else:
                canonical = key if key.startswith(USER_KEY_PREFIX) else _lookup(key).key
                keys = [canonical] if canonical in options else []
            if not keys:
                return OptionChange(volume, {}, [])
            for k in keys:
                del options[k]
            tasks = self._save(volume, options, dict.fromkeys(keys))
        self.engine.publish(tasks)
        return OptionChange(volume, dict.fromkeys(keys), tasks)

    @staticmethod
    def _check_state(volume: Volume, what: str) -> None:
        state = VolumeState(volume.state)
        if state not in PUSH_STATES | STORE_ONLY_STATES:
            raise Conflict(
                f"volume {volume.name!r} is {state.value}: cannot {what} it until that operation ends "
                f"(options can change while it is Created, Started, Stopped or after a failed operation)"
            )

    def _save(self, volume: Volume, options: dict[str, str], changed: dict[str, str | None]) -> list[Task]:
        """Store the options, record the events and submit the volfile tasks (published by the caller)."""
        rows = bricks_of(volume)
        volume.options = options
        try:
            spec = spec_of(volume, rows)
            by_node = {
                node: node_volfiles(volume, spec, [b for b in rows if b.node_name == node])
                for node in sorted({b.node_name for b in rows})
            }
        except VolgenError as exc:
            raise InvalidInput(f"volume {volume.name!r}: {exc}") from None
        volume.save()
        cluster = volume.cluster.name
        for key, value in changed.items():
            events.record(
                "volume.option", cluster=cluster, subject=volume.name, key=key, value=value, reset=value is None
            )
            log.info(
                "cluster %s volume %s: option %s %s",
                cluster,
                volume.name,
                key,
                "reset" if value is None else f"set to {_short(value)!r}",
            )
        if VolumeState(volume.state) not in PUSH_STATES:
            return []
        return [
            self.engine.submit(
                volume.cluster,
                node,
                VOLFILES_TASK,
                {"volume": {"id": volume.id, "name": volume.name, "type": volume.type}, "volfiles": volfiles},
                target=f"volume:{volume.name}",
            )
            for node, volfiles in by_node.items()
        ]


def _lookup(key: str) -> OptionSpec:
    try:
        return lookup(key)
    except OptionError as exc:
        raise NotFound(str(exc)) from None
