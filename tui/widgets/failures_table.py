"""The failure report: failed tasks, unreachable nodes, failed or degraded volumes, with fixes."""

from __future__ import annotations

from control.cli.output import ago
from tui.model import Dashboard
from tui.widgets.model_table import ModelTable


class FailuresTable(ModelTable):
    COLUMNS = [("when", "WHEN"), ("cluster", "CLUSTER"), ("what", "WHAT"), ("reason", "REASON"), ("fix", "FIX")]

    def model_rows(self, model: Dashboard):
        now = model.clock()
        return [
            (
                f"{i}:{f.what}",
                {"when": ago(f.at, now), "cluster": f.cluster, "what": f.what, "reason": f.reason, "fix": f.fix},
            )
            for i, f in enumerate(model.failures())
        ]
