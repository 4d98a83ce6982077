"""Tasks, newest first, live: per-node state and failure reason."""

from __future__ import annotations

from typing import Any

from control.client.format import ago
from tui.model import Dashboard
from tui.widgets.model_table import ModelTable, state_text


class TasksTable(ModelTable):
    COLUMNS = [
        ("updated", "UPDATED"),
        ("id", "ID"),
        ("cluster", "CLUSTER"),
        ("node", "NODE"),
        ("kind", "KIND"),
        ("state", "STATE"),
        ("reason", "REASON"),
    ]

    def model_rows(self, model: Dashboard) -> list[tuple[str, dict[str, Any]]]:
        now = model.clock()
        return [
            (
                t["id"],
                {
                    "updated": ago(t.get("updated_at"), now),
                    "id": t["id"][:12],
                    "cluster": t.get("cluster", ""),
                    "node": t.get("node", ""),
                    "kind": t.get("kind", ""),
                    "state": state_text(t.get("state", "")),
                    "reason": t.get("reason") or "",
                },
            )
            for t in model.task_rows()
        ]
