"""The failure report: failed tasks, unreachable nodes, failed or degraded volumes, with fixes."""

from __future__ import annotations

from typing import Any

from control.client.format import ago
from tui.model import Dashboard
from tui.widgets.model_table import ModelTable


class FailuresTable(ModelTable):
    COLUMNS = [("when", "WHEN"), ("cluster", "CLUSTER"), ("what", "WHAT"), ("reason", "REASON"), ("fix", "FIX")]

    def model_rows(self, model: Dashboard) -> list[tuple[str, dict[str, Any]]]:
        now = model.clock()
        return [
            (
                f"{i}:{f.what}",
                {"when": ago(f.at, now), "cluster": f.cluster, "what": f.what, "reason": f.reason, "fix": f.fix},
            )
            for i, f in enumerate(model.failures())
        ]
