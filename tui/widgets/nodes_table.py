"""Nodes: state, address, last seen, agent and glusterfs versions, free space."""

from __future__ import annotations

from typing import Any

from control.client.format import ago, node_free
from tui.model import Dashboard
from tui.widgets.model_table import ModelTable, state_text


class NodesTable(ModelTable):
    COLUMNS = [
        ("cluster", "CLUSTER"),
        ("name", "NODE"),
        ("state", "STATE"),
        ("address", "ADDRESS"),
        ("last_seen", "LAST SEEN"),
        ("since", "SINCE"),
        ("agent", "AGENT"),
        ("glusterfs", "GLUSTERFS"),
        ("free", "FREE"),
    ]

    def model_rows(self, model: Dashboard) -> list[tuple[str, dict[str, Any]]]:
        now = model.clock()
        return [
            (
                f"{n['cluster']}/{n['name']}",
                {
                    "cluster": n["cluster"],
                    "name": n["name"],
                    "state": state_text(n["state"]),
                    "address": n.get("address") or "-",
                    "last_seen": ago(n.get("last_seen_at"), now),
                    "since": ago(n.get("state_changed_at"), now),
                    "agent": n.get("agent_version") or "-",
                    "glusterfs": n.get("glusterfs_version") or "-",
                    "free": node_free(n),
                },
            )
            for n in model.node_rows()
        ]
