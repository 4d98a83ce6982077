"""Task handlers: one function per task kind, ``handler(ctx, params) -> result``.

A handler raises ``TaskFailed(reason)`` for an expected failure; the reason starts with the
errno name when there is one (ENOENT, EACCES, ...) so the failure report can explain it.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent import facts, heal, replace
from agent.bricks import BrickError, BrickManager, oserror
from agent.devices import DeviceManager, check_xattrs
from agent.params import TaskFailed, brick_list, check_params, volume_ref
from agent.rebalance import RebalanceError, RebalanceManager
from agent.volfiles import SHD_PREFIX, VolfileError, Volfiles
from broker.messages import TaskKind

__all__ = ["HANDLERS", "RESUMABLE_KINDS", "TaskContext", "TaskFailed", "check_params"]

# Kinds an agent may run again after a restart interrupted them (kill -9, power loss) instead of
# reporting them FAILED (INTERRUPTED): running them twice gives the same outcome as once.
# volume.volfiles stores the complete set atomically and tells only the processes whose volfile
# changed (a second run changes nothing); volume.heal reads heal info, or asks the self-heal
# daemon for an index heal, which it may be asked for any number of times. Every other kind
# formats, writes, measures or starts/stops processes midway and is reported, never run blindly.
RESUMABLE_KINDS = frozenset({TaskKind.VOLUME_VOLFILES.value, TaskKind.VOLUME_HEAL.value})


@dataclass
class TaskContext:
    node: str
    task_id: str
    report: Callable[[str], None]  # report(step_state), e.g. "STARTING"
    bricks: BrickManager
    devices: DeviceManager
    volfiles: Volfiles
    rebalance: RebalanceManager | None = None
    keep_metadata: Callable[[bool], bool] | None = None  # subscribe to the cluster's metadata, or stop


def _fs_type(path: str) -> str:
    best, fstype = "", ""
    try:
        with open("/proc/mounts") as fh:
            for line in fh:
                parts = line.split()
                mnt = parts[1].replace("\\040", " ")
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, fstype = mnt, parts[2]
    except OSError:
        pass
    return fstype


def _write_speed(path: str, seconds: float) -> float:
    block = os.urandom(1 << 20)
    fd, tmp = tempfile.mkstemp(prefix=".glusterctl-io-", dir=path)
    written = 0
    start = time.monotonic()
    try:
        while time.monotonic() - start < seconds:
            os.write(fd, block)
            written += len(block)
            if written % (16 << 20) == 0:
                os.fsync(fd)
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(tmp)
    return written / (1 << 20) / max(time.monotonic() - start, 1e-6)


def probe(ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "glusterfs_version": facts.glusterfs_version(),
        "kernel": os.uname().release,
        "hostname": os.uname().nodename,
    }
    path = params.get("path")
    if path:
        if not os.path.isdir(path):
            raise TaskFailed(f"ENOENT: directory {path} does not exist on node {ctx.node}")
        st = os.statvfs(path)
        try:
            check_xattrs(path, ctx.node)
            ok, why = True, ""
        except BrickError as exc:
            ok, why = False, str(exc)
        result.update(
            path=path,
            filesystem=_fs_type(path),
            free_bytes=st.f_bavail * st.f_frsize,
            total_bytes=st.f_blocks * st.f_frsize,
            xattrs=ok,
            xattrs_error=why,
        )
        seconds = float(params.get("io_seconds") or 0)
        if seconds > 0:
            try:
                result["write_mib_per_second"] = round(_write_speed(path, min(seconds, 60.0)), 1)
            except OSError as exc:
                raise TaskFailed(str(oserror(exc, f"writing in {path}"))) from None
    return result


def metadata_keep(ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    """Start or stop keeping copies of the cluster's metadata (the control service names the nodes that keep)."""
    if ctx.keep_metadata is None:
        raise TaskFailed(f"ENOTSUP: node {ctx.node} cannot change what it keeps while it is not connected")
    keep = bool(params["keep"])
    return {"keep": keep, "changed": ctx.keep_metadata(keep)}


Handler = Callable[[TaskContext, dict[str, Any]], dict[str, Any]]


def _brick_errors(fn: Handler) -> Handler:
    def wrapped(ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return fn(ctx, params)
        except BrickError as exc:
            raise TaskFailed(str(exc), **exc.details) from None

    return wrapped


@_brick_errors
def device_add(ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    if params.get("device"):
        return ctx.devices.add_device(params["device"])
    return ctx.devices.add_path(params["path"])


# the handlers' names for the shared checks (agent/params.py)
_volume = volume_ref
_brick_list = brick_list


@_brick_errors
def volume_create(ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    volume_id, name = _volume(params)
    return ctx.bricks.prepare(volume_id, name, _brick_list(params))


def _apply_volfiles(ctx: TaskContext, volume_id: str, name: str, params: dict[str, Any]) -> tuple[list[str], int]:
    """Store and serve the node's volfile set of the volume; tell the processes whose volfile changed."""
    try:
        changed = ctx.volfiles.apply(volume_id, name, params.get("volfiles"))  # type: ignore[arg-type]
    except VolfileError as exc:
        raise TaskFailed(str(exc)) from None
    except OSError as exc:
        raise TaskFailed(str(oserror(exc, f"storing the volfiles of volume {name}"))) from None
    return changed, ctx.volfiles.notify(changed)


@_brick_errors
def volume_start(ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    volume_id, name = _volume(params)
    bricks = _brick_list(params, with_port=True)
    shd = params.get("shd")
    if shd is not None and shd != SHD_PREFIX + name:
        raise TaskFailed(f"EINVAL: shd must be {SHD_PREFIX + name!r} or null")
    keys = set((params.get("volfiles") or {}).keys())
    missing = [k for k in [*(b.get("volfile_id") for b in bricks), shd] if k and k not in keys]
    if missing or any(not b.get("volfile_id") for b in bricks):
        raise TaskFailed(f"EINVAL: every brick needs a volfile_id with its volfile in volfiles (missing: {missing})")
    ctx.report("STARTING")
    _apply_volfiles(ctx, volume_id, name, params)
    return ctx.bricks.start(volume_id, name, bricks, shd)


@_brick_errors
def volume_expand(ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    """New bricks of a growing volume: prepare them; on a started volume serve the node's volfiles
    (its old graph plus the new bricks' own) and start them. Running processes keep their graph
    until the control service pushes the new set (volume.volfiles) once every node is ready."""
    volume_id, name = _volume(params)
    bricks = _brick_list(params, with_port=True)
    shd = params.get("shd")
    if shd is not None and shd != SHD_PREFIX + name:
        raise TaskFailed(f"EINVAL: shd must be {SHD_PREFIX + name!r} or null")
    keys = set((params.get("volfiles") or {}).keys())
    missing = [b.get("volfile_id") for b in bricks if not b.get("volfile_id") or b["volfile_id"] not in keys]
    if missing:
        raise TaskFailed(f"EINVAL: every brick needs a volfile_id with its volfile in volfiles (missing: {missing})")
    prepared = ctx.bricks.prepare(volume_id, name, bricks)
    changed, _ = _apply_volfiles(ctx, volume_id, name, params)
    if not params.get("start"):
        return {**prepared, "changed": changed}
    ctx.report("STARTING")
    return {**prepared, **ctx.bricks.start(volume_id, name, bricks, shd), "changed": changed}


CLIENT_XLATOR_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}-client-[0-9]{1,6}$")


@_brick_errors
def volume_replace_brick(ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    """Replace a brick on this node: with `drop`, stop and forget the old brick (if brick `index` is still
    that path here); with `bricks` (the new one), prepare it, serve the node's volfiles and, with `start`,
    start it and, with `mark` (its client xlator), mark the volume's root pending heal towards it."""
    volume_id, name = _volume(params)
    drop = params.get("drop")
    if drop is not None:
        if not isinstance(drop, dict) or not isinstance(drop.get("index"), int) or drop["index"] < 0:
            raise TaskFailed("EINVAL: drop must be {index, path} of the replaced brick")
        if not isinstance(drop.get("path"), str) or not os.path.isabs(drop["path"]):
            raise TaskFailed("EINVAL: drop.path must be absolute")
    bricks = _brick_list(params, with_port=True) if params.get("bricks") else []
    shd, mark = params.get("shd"), params.get("mark")
    if shd is not None and shd != SHD_PREFIX + name:
        raise TaskFailed(f"EINVAL: shd must be {SHD_PREFIX + name!r} or null")
    if mark is not None and (
        not isinstance(mark, str) or not CLIENT_XLATOR_RE.match(mark) or not mark.startswith(name)
    ):
        raise TaskFailed(f"EINVAL: mark must be the new brick's client xlator ({name}-client-N) or null")
    keys = set((params.get("volfiles") or {}).keys())
    missing = [b.get("volfile_id") for b in bricks if not b.get("volfile_id") or b["volfile_id"] not in keys]
    if missing:
        raise TaskFailed(f"EINVAL: every brick needs a volfile_id with its volfile in volfiles (missing: {missing})")
    result: dict[str, Any] = {}
    if drop is not None:
        ctx.report("STOPPING")
        result["dropped"] = ctx.bricks.release(volume_id, name, drop["index"], drop["path"], last_goes=not bricks)
        if not bricks and not result["dropped"]["left"] and result["dropped"]["released"]:
            ctx.volfiles.remove_volume(volume_id)  # no brick of the volume left here
    if not bricks:
        return result
    result.update(ctx.bricks.prepare(volume_id, name, bricks))
    result["changed"], _ = _apply_volfiles(ctx, volume_id, name, params)
    if not params.get("start"):
        return result
    ctx.report("STARTING")
    result.update(ctx.bricks.start(volume_id, name, bricks, shd))
    if mark:
        log_file = os.path.join(ctx.bricks.logs, f"{name}-replace-brick.log")
        host, port = ctx.bricks.volfile_host, ctx.bricks.volfile_port
        result.update(replace.mark_empty_brick(name, mark, host, port, ctx.bricks.state_dir, log_file))
    return result


def volume_volfiles(ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    volume_id, name = _volume(params)
    changed, notified = _apply_volfiles(ctx, volume_id, name, params)
    return {"changed": changed, "notified": notified}


HEAL_OPS = ("info", "split-brain", "summary", "index")


def volume_heal(ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    volume_id, name = _volume(params)
    op = params.get("op")
    if op not in HEAL_OPS:
        raise TaskFailed(f"EINVAL: heal op {op!r}: use one of {', '.join(HEAL_OPS)}")
    if name not in ctx.volfiles.stored(volume_id):
        raise TaskFailed(f"ENOENT: node {ctx.node} serves no volfiles of volume {name}: start the volume first")
    try:
        if op != "index":
            return {"bricks": heal.heal_info(name, op, ctx.volfiles.unix_path)}
        desired = ctx.bricks.desired(volume_id) or {}
        if not desired.get("started") or not desired.get("shd"):
            raise TaskFailed(f"ENOENT: volume {name} runs no self-heal daemon on node {ctx.node}")
        shd_text = ctx.volfiles.stored(volume_id).get(SHD_PREFIX + name, "")
        local = {int(i) for i in desired.get("bricks", {})}
        xlators = heal.local_heal_xlators(shd_text, local)
        if not xlators:
            raise TaskFailed(f"ENOENT: no replica set of volume {name} has a brick on node {ctx.node}")
        return heal.index_heal(ctx.bricks.control_socket(volume_id, name, "shd"), xlators)
    except heal.HealError as exc:
        raise TaskFailed(str(exc)) from None


REBALANCE_OPS = ("start", "stop", "status")


@_brick_errors
def volume_rebalance(ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    """Start (full or fix-layout), stop or read the node's rebalance process of the volume."""
    volume_id, name = _volume(params)
    op = params.get("op")
    if op not in REBALANCE_OPS:
        raise TaskFailed(f"EINVAL: rebalance op {op!r}: use one of {', '.join(REBALANCE_OPS)}")
    if ctx.rebalance is None:
        raise TaskFailed(f"ENOTSUP: the agent of node {ctx.node} runs no rebalance manager")
    try:
        if op == "status":
            return ctx.rebalance.status(volume_id, name)
        if op == "stop":
            ctx.report("STOPPING")
            return ctx.rebalance.stop(volume_id, name)
        volfile, run, commit_hash = params.get("volfile"), params.get("run"), params.get("commit_hash")
        if not isinstance(volfile, str) or not volfile or not isinstance(run, str) or not run:
            raise TaskFailed("EINVAL: rebalance start needs volfile (text) and run (id)")
        if not isinstance(commit_hash, int) or not 0 < commit_hash < 2**32:
            raise TaskFailed("EINVAL: commit_hash must be a number from 1 to 2^32-1")
        desired = ctx.bricks.desired(volume_id) or {}
        if not desired.get("started"):
            raise TaskFailed(f"ENOENT: volume {name} is not started on node {ctx.node}")
        ctx.report("STARTING")
        return ctx.rebalance.start(volume_id, name, volfile, str(params.get("command") or "full"), run, commit_hash)
    except RebalanceError as exc:
        raise TaskFailed(str(exc)) from None


@_brick_errors
def volume_stop(ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    volume_id, name = _volume(params)
    ctx.report("STOPPING")
    return ctx.bricks.stop(volume_id, name)


@_brick_errors
def volume_delete(ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    volume_id, name = _volume(params)
    ctx.volfiles.remove_volume(volume_id)
    return ctx.bricks.delete(volume_id, name, _brick_list(params), bool(params.get("purge")))


HANDLERS: dict[str, Handler] = {
    TaskKind.NODE_PROBE.value: probe,
    TaskKind.DEVICE_ADD.value: device_add,
    TaskKind.VOLUME_CREATE.value: volume_create,
    TaskKind.VOLUME_START.value: volume_start,
    TaskKind.VOLUME_STOP.value: volume_stop,
    TaskKind.VOLUME_DELETE.value: volume_delete,
    TaskKind.VOLUME_VOLFILES.value: volume_volfiles,
    TaskKind.VOLUME_HEAL.value: volume_heal,
    TaskKind.VOLUME_EXPAND.value: volume_expand,
    TaskKind.VOLUME_REBALANCE.value: volume_rebalance,
    TaskKind.VOLUME_REPLACE_BRICK.value: volume_replace_brick,
    TaskKind.METADATA_KEEP.value: metadata_keep,
}
