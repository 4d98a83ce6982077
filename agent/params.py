"""Task params, checked before any handler runs: nothing from a task message reaches a path, a
process argument or a file name unchecked.

``check_params(kind, params)`` applies the same rules to every kind (a key means the same thing
in every task): ``volume`` {id: UUID, name: a valid name}, ``bricks`` [{index >= 0, unique;
path absolute and normalised; port 1-65535 when given}], ``path``/``device`` absolute and
normalised, ``io_seconds`` 0-60, flags booleans, ``volfiles`` {KEY: TEXT}; then the keys each
known kind requires. A kind not listed (a newer one) still gets the common rules.
"""

from __future__ import annotations

import uuid
from typing import Any

from broker.messages import CLUSTER_NAME_RE, TaskKind
from broker.paths import MAX_PATH, normalise

MAX_IO_SECONDS = 60
FLAGS = ("force", "purge", "start", "keep")
# keys each kind needs (beyond the common rules); device.add needs one of path/device (checked below)
REQUIRED: dict[str, tuple[str, ...]] = {
    TaskKind.VOLUME_CREATE.value: ("volume", "bricks"),
    TaskKind.VOLUME_START.value: ("volume", "bricks", "volfiles"),
    TaskKind.VOLUME_STOP.value: ("volume",),
    TaskKind.VOLUME_DELETE.value: ("volume", "bricks"),
    TaskKind.VOLUME_VOLFILES.value: ("volume", "volfiles"),
    TaskKind.VOLUME_HEAL.value: ("volume", "op"),
    TaskKind.VOLUME_EXPAND.value: ("volume", "bricks", "volfiles"),
    TaskKind.METADATA_KEEP.value: ("keep",),
}
WITH_PORTS = (TaskKind.VOLUME_START.value, TaskKind.VOLUME_EXPAND.value)


class TaskFailed(Exception):
    """An expected task failure; the reason starts with a code (EINVAL, ENOENT, ETIMEDOUT, ...)."""

    def __init__(self, reason: str, **details: Any) -> None:
        super().__init__(reason)
        self.details = details


def check_abs_path(value: Any, what: str) -> str:
    """An absolute, normalised path (no ``.``/``..``, no repeated or trailing slash, no NUL)."""
    if not isinstance(value, str) or not value or "\0" in value or len(value) > MAX_PATH:
        raise TaskFailed(f"EINVAL: {what} must be a path of at most {MAX_PATH} characters")
    if not value.startswith("/") or normalise(value) != value:
        raise TaskFailed(f"EINVAL: {what} {value[:80]!r} must be absolute and normalised (e.g. {normalise(value)!r})")
    return value


def volume_ref(params: dict[str, Any]) -> tuple[str, str]:
    """(id, name) of the task's volume, checked: both end up in paths and volfile keys."""
    vol = params.get("volume")
    if not isinstance(vol, dict):
        raise TaskFailed("EINVAL: params.volume must be an object {id, name, type}")
    volume_id, name = str(vol.get("id", "")), str(vol.get("name", ""))
    try:
        if str(uuid.UUID(volume_id)) != volume_id:
            raise ValueError
    except ValueError:
        raise TaskFailed(f"EINVAL: volume id {volume_id!r} is not a UUID") from None
    if not CLUSTER_NAME_RE.match(name):
        raise TaskFailed(f"EINVAL: invalid volume name {name!r}")
    return volume_id, name


def brick_list(params: dict[str, Any], with_port: bool = False) -> list[dict[str, Any]]:
    bricks = params.get("bricks")
    if not isinstance(bricks, list):
        raise TaskFailed("EINVAL: params.bricks must be a list")
    seen: set[int] = set()
    for b in bricks:
        if not isinstance(b, dict) or type(b.get("index")) is not int or b["index"] < 0:
            raise TaskFailed("EINVAL: each brick needs an index (a number >= 0)")
        if b["index"] in seen:
            raise TaskFailed(f"EINVAL: brick index {b['index']} appears twice")
        seen.add(b["index"])
        check_abs_path(b.get("path"), f"brick {b['index']}: path")
        port = b.get("port")
        if (with_port or port is not None) and not (type(port) is int and 0 < port < 65536):
            raise TaskFailed(f"EINVAL: brick {b['index']}: port must be 1-65535")
        key = b.get("volfile_id")
        if key is not None and (not isinstance(key, str) or not key or "\0" in key):
            raise TaskFailed(f"EINVAL: brick {b['index']}: volfile_id must be a volfile key")
    return bricks


def check_params(kind: str, params: dict[str, Any]) -> None:
    """TaskFailed (EINVAL, saying what is allowed) unless ``params`` follow the rules above."""
    if not isinstance(params, dict):
        raise TaskFailed("EINVAL: params must be an object")
    missing = [key for key in REQUIRED.get(kind, ()) if params.get(key) is None]
    if missing:
        raise TaskFailed(f"EINVAL: task {kind} needs params {', '.join(missing)}")
    if "volume" in params:
        volume_ref(params)
    if "bricks" in params:
        brick_list(params, with_port=kind in WITH_PORTS)
    for key in ("path", "device"):
        if params.get(key):
            check_abs_path(params[key], key)
    if kind == TaskKind.DEVICE_ADD.value and bool(params.get("path")) == bool(params.get("device")):
        raise TaskFailed("EINVAL: device.add needs exactly one of path (a directory) or device (a block device)")
    seconds = params.get("io_seconds")
    if seconds is not None and (
        type(seconds) not in (int, float) or not 0 <= seconds <= MAX_IO_SECONDS or seconds != seconds
    ):
        raise TaskFailed(f"EINVAL: io_seconds must be a number from 0 to {MAX_IO_SECONDS}")
    for flag in FLAGS:
        if flag in params and params[flag] is not None and not isinstance(params[flag], bool):
            raise TaskFailed(f"EINVAL: {flag} must be true or false")
    volfiles = params.get("volfiles")
    if volfiles is not None and (
        not isinstance(volfiles, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in volfiles.items())
    ):
        raise TaskFailed("EINVAL: volfiles must be an object {KEY: TEXT}")
    for key in ("shd", "op"):
        if params.get(key) is not None and not isinstance(params[key], str):
            raise TaskFailed(f"EINVAL: {key} must be a string")
