"""Alerts, newest first: firing ones, or (``show_resolved``) resolved ones too."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from control.client.format import ago
from tui.model import ALERT_FIRING, Dashboard
from tui.widgets.model_table import ModelTable

SEVERITY_STYLES = {"critical": "bold red", "warning": "yellow"}


def severity_text(severity: str) -> Text:
    return Text(severity, style=SEVERITY_STYLES.get(severity, ""))


class AlertsTable(ModelTable):
    COLUMNS = [
        ("since", "SINCE"),
        ("cluster", "CLUSTER"),
        ("severity", "SEVERITY"),
        ("state", "STATE"),
        ("kind", "KIND"),
        ("subject", "SUBJECT"),
        ("summary", "SUMMARY"),
    ]

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.show_resolved = False

    def model_rows(self, model: Dashboard) -> list[tuple[str, dict[str, Any]]]:
        now = model.clock()
        out = []
        for a in model.alert_rows(self.show_resolved):
            firing = a.get("state") == ALERT_FIRING
            state = Text("firing", style="bold red") if firing else Text(f"resolved {ago(a.get('until'), now)}")
            out.append(
                (
                    str(a["id"]),
                    {
                        "since": ago(a.get("since"), now),
                        "cluster": a.get("cluster", ""),
                        "severity": severity_text(a.get("severity", "")) if firing else Text(a.get("severity", "")),
                        "state": state,
                        "kind": a.get("kind", ""),
                        "subject": a.get("subject", ""),
                        "summary": a.get("summary", ""),
                    },
                )
            )
        return out
