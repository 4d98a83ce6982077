"""Display formatters shared by the CLI and the dashboard."""

from __future__ import annotations

import time
from typing import Any


def ago(ts: float | None, now: float | None = None) -> str:
    if not ts:
        return "-"
    delta = max(0.0, (now or time.time()) - ts)
    if delta < 60:
        return f"{delta:.0f}s ago"
    if delta < 3600:
        return f"{delta / 60:.0f}m ago"
    if delta < 86400:
        return f"{delta / 3600:.1f}h ago"
    return f"{delta / 86400:.1f}d ago"


def size(num: float | None) -> str:
    if num is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(num) < 1024 or unit == "PiB":
            return f"{num:.0f} {unit}" if unit == "B" else f"{num:.1f} {unit}"
        num /= 1024
    return str(num)


def node_free(node: dict[str, Any]) -> str:
    """Free space of a node's registered devices and paths (REST's NodePublic.devices), plus the
    filesystems of its bricks that are on no registered device (``brick_fs_free_bytes``)."""
    ready = [d["free_bytes"] for d in node.get("devices") or [] if d.get("state") == "Ready"]
    if node.get("brick_fs_free_bytes") is not None:
        ready.append(node["brick_fs_free_bytes"])
    return size(sum(ready)) if ready else "-"


def capacity(volume: dict[str, Any]) -> str:
    """A volume's "used / size (percent)", or "-" until its bricks reported their filesystems."""
    if volume.get("size") is None:
        return "-"
    return f"{size(volume['used'])} / {size(volume['size'])} ({volume.get('percent') or 0:.0f}%)"


def capacity_free(volume: dict[str, Any]) -> str:
    """``capacity`` with the free bytes: "used / size (percent), free free", or "-" until known."""
    if volume.get("size") is None:
        return "-"
    return f"{capacity(volume)}, {size(volume.get('free'))} free"
