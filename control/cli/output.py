"""Tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from broker.messages import Health, NodeState, TaskState

# piped output is never cut to 80 columns: scripts and logs get whole names
console = Console(highlight=False, width=None if sys.stdout.isatty() else 240)


STATE_STYLES = {
    NodeState.ONLINE: "green",
    NodeState.UNREACHABLE: "red",
    TaskState.DONE: "green",
    TaskState.FAILED: "red",
    TaskState.QUEUED: "yellow",
    Health.HEALTHY: "green",
    Health.DEGRADED: "yellow",
    Health.DOWN: "red",
    # alerts: state and severity
    "firing": "red",
    "critical": "red",
    "warning": "yellow",
}


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
