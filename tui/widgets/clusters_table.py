"""Clusters overview: nodes online/unreachable, volumes by state, recent failures, firing alerts."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from tui.model import Dashboard
from tui.widgets.model_table import ModelTable


class ClustersTable(ModelTable):
    COLUMNS = [
        ("name", "CLUSTER"),
        ("nodes", "NODES"),
        ("online", "ONLINE"),
        ("unreachable", "UNREACHABLE"),
        ("volumes", "VOLUMES"),
        ("failures", "FAILED TASKS (24h)"),
        ("critical", "CRITICAL ALERTS"),
        ("warning", "WARNING ALERTS"),
    ]

    def model_rows(self, model: Dashboard) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for r in model.cluster_rows():
            out.append(
                (
                    r["name"],
                    {
                        **r,
                        "online": Text(str(r["online"]), style="green" if r["online"] else ""),
                        "unreachable": Text(str(r["unreachable"]), style="bold red" if r["unreachable"] else ""),
                        "failures": Text(str(r["failures"]), style="bold red" if r["failures"] else ""),
                        "critical": Text(str(r["critical"]), style="bold red" if r["critical"] else ""),
                        "warning": Text(str(r["warning"]), style="yellow" if r["warning"] else ""),
                        "volumes": r["volumes"] if model.volumes_supported else "n/a",
                    },
                )
            )
        return out
