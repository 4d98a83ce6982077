"""Nodes: state, address, last seen, agent and glusterfs versions, free space."""

from __future__ import annotations

from control.cli.output import ago, size
from tui.model import Dashboard
from tui.widgets.model_table import ModelTable, state_text


def free_space(node: dict) -> str:
    facts = node.get("facts") or {}
    devices = facts.get("devices") or []
    if isinstance(devices, list) and devices:
        free = [d.get("free_bytes") for d in devices if isinstance(d, dict) and d.get("free_bytes") is not None]
        if free:
            return size(sum(free))
    return size(facts["free_bytes"]) if facts.get("free_bytes") is not None else "-"


class NodesTable(ModelTable):
    COLUMNS = [("cluster", "CLUSTER"), ("name", "NODE"), ("state", "STATE"), ("address", "ADDRESS"),
               ("last_seen", "LAST SEEN"), ("since", "SINCE"), ("agent", "AGENT"), ("glusterfs", "GLUSTERFS"),
               ("free", "FREE")]

    def model_rows(self, model: Dashboard):
        now = model.clock()
        return [(f"{n['cluster']}/{n['name']}", {
            "cluster": n["cluster"], "name": n["name"], "state": state_text(n["state"]), "address": n.get("address") or "-",
            "last_seen": ago(n.get("last_seen_at"), now), "since": ago(n.get("state_changed_at"), now),
            "agent": n.get("agent_version") or "-", "glusterfs": n.get("glusterfs_version") or "-",
            "free": free_space(n),
        }) for n in model.node_rows()]
