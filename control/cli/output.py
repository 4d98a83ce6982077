"""Tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

# piped output is never cut to 80 columns: scripts and logs get whole names
console = Console(highlight=False, width=None if sys.stdout.isatty() else 240)


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


def node_free(node: dict) -> str:
    """Free space of a node's registered devices and paths (REST's NodePublic.devices)."""
    ready = [d["free_bytes"] for d in node.get("devices") or [] if d.get("state") == "Ready"]
    return size(sum(ready)) if ready else "-"


STATE_STYLES = {"Online": "green", "Unreachable": "red", "DONE": "green", "FAILED": "red", "QUEUED": "yellow"}


def styled(state: str) -> str:
    style = STATE_STYLES.get(state)
    return f"[{style}]{state}[/{style}]" if style else state


def emit(data: Any, fmt: str, columns: Sequence[tuple[str, Any]], title: str | None = None) -> None:
    """Print ``data`` (a list of dicts) as JSON or as a table of ``columns`` (header, key or function)."""
    if fmt == "json":
        json.dump(data, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
        return
    if not data:
        console.print(f"no {title or 'entries'}")
        return
    table = Table(title=None, box=None, header_style="bold", pad_edge=False)
    for header, _ in columns:
        table.add_column(header)
    for row in data:
        table.add_row(*(str(get(row) if callable(get) else row.get(get, "")) for _, get in columns))
    console.print(table)
