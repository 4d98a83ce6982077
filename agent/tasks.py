"""Task handlers: one function per task kind, ``handler(ctx, params) -> result``.

A handler raises ``TaskFailed(reason)`` for an expected failure; the reason starts with the
errno name when there is one (ENOENT, EACCES, ...) so the failure report can explain it.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent import facts
from agent.bricks import BrickError, BrickManager, oserror
from agent.devices import DeviceManager, check_xattrs
from broker.messages import TaskKind


class TaskFailed(Exception):
    def __init__(self, reason: str, **details: Any) -> None:
        super().__init__(reason)
        self.details = details


@dataclass
class TaskContext:
    node: str
    task_id: str
    report: Callable[[str], None]  # report(step_state), e.g. "STARTING"
    bricks: BrickManager
    devices: DeviceManager


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
        if not os.path.isabs(path):
            raise TaskFailed(f"EINVAL: path {path!r} is not absolute")
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


@_brick_errors
def volume_create(ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    vol = params["volume"]
    return ctx.bricks.prepare(vol["id"], vol["name"], params["bricks"])


@_brick_errors
def volume_start(ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    vol = params["volume"]
    ctx.report("STARTING")
    return ctx.bricks.start(vol["id"], vol["name"], params["bricks"], params.get("shd_volfile"))


@_brick_errors
def volume_stop(ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    vol = params["volume"]
    ctx.report("STOPPING")
    return ctx.bricks.stop(vol["id"], vol["name"])


@_brick_errors
def volume_delete(ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    vol = params["volume"]
    return ctx.bricks.delete(vol["id"], vol["name"], params["bricks"], bool(params.get("purge")))


HANDLERS: dict[str, Handler] = {
    TaskKind.NODE_PROBE.value: probe,
    TaskKind.DEVICE_ADD.value: device_add,
    TaskKind.VOLUME_CREATE.value: volume_create,
    TaskKind.VOLUME_START.value: volume_start,
    TaskKind.VOLUME_STOP.value: volume_stop,
    TaskKind.VOLUME_DELETE.value: volume_delete,
}
