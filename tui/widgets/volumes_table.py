"""Volumes: type, state, health, bricks online/total, capacity (size, used, free)."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from control.client.format import size
from tui.model import Dashboard
from tui.widgets.model_table import ModelTable, state_text


def volume_type(v: dict[str, Any]) -> str:
    kind = v.get("type") or "-"
    if v.get("replica"):
        kind += f" ({v['replica']}{' + arbiter' if v.get('arbiter') else ''})"
    elif v.get("disperse"):
        kind += f" ({v['disperse']}, redundancy {v.get('redundancy') or 0})"
    return kind


def used_text(v: dict[str, Any]) -> Text:
    """Used bytes and percent, yellow from 80% and red from 90% (the alert thresholds)."""
    if v.get("percent") is None:
        return Text("-")
    percent = float(v["percent"])
    style = "bold red" if percent >= 90 else "yellow" if percent >= 80 else ""
    return Text(f"{size(v.get('used'))} ({percent:.0f}%)", style=style)


class VolumesTable(ModelTable):
    COLUMNS = [
        ("cluster", "CLUSTER"),
        ("name", "VOLUME"),
        ("type", "TYPE"),
        ("state", "STATE"),
        ("health", "HEALTH"),
        ("bricks", "BRICKS ONLINE"),
        ("size", "SIZE"),
        ("used", "USED"),
        ("free", "FREE"),
    ]

    def model_rows(self, model: Dashboard) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for v in model.volume_rows():
            online, total = v.get("bricks_online", 0), v.get("bricks_total", 0)
            out.append(
                (
                    f"{v['cluster']}/{v['name']}",
                    {
                        "cluster": v["cluster"],
                        "name": v["name"],
                        "type": volume_type(v),
                        "state": state_text(v["state"]),
                        "bricks": Text(f"{online}/{total}", style="green" if online == total else "bold red"),
                        "health": state_text(v.get("health") or "-"),
                        "size": size(v.get("size")),
                        "used": used_text(v),
                        "free": size(v.get("free")),
                    },
                )
            )
        return out
