"""The dashboard's domain model: what the server told us, updated by events. Knows no widgets.

Everything is plain dicts in the REST API's shapes, keyed for quick event application. ``apply``
returns which areas changed (and which need a reload from REST), so views redraw once per batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from broker.messages import VOLUME_DELETED, BrickState, NodeState, TaskState, VolumeState
from control.client import Event, Snapshot
from control.client.states import task_failed, task_final, volume_failed

TASK_LIMIT = 2000  # newest tasks kept in memory
RESOLVED_ALERT_LIMIT = 1000  # newest resolved alerts kept in memory (every firing one is kept)
ALERT_FIRING = "firing"
ALERT_RESOLVED = "resolved"
RECENT_FAILURE_SECONDS = 24 * 3600

UNREACHABLE_FIX = "start the node's agent again; its tasks wait QUEUED until it returns"


@dataclass
class Changes:
    areas: set[str] = field(default_factory=set)  # "clusters", "nodes", "volumes", "tasks", "alerts"
    reload: set[str] = field(default_factory=set)  # areas whose rows must be fetched again
    rebalance: set[tuple[str, str]] = field(default_factory=set)  # volumes whose rebalance status changed

    def __bool__(self) -> bool:
        return bool(self.areas or self.reload or self.rebalance)

    def merge(self, other: Changes) -> None:
        self.areas |= other.areas
        self.reload |= other.reload
        self.rebalance |= other.rebalance


@dataclass
class Failure:
    at: float
    cluster: str
    what: str
    reason: str
    fix: str


class Dashboard:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.clusters: dict[str, dict[str, Any]] = {}
        self.nodes: dict[tuple[str, str], dict[str, Any]] = {}
        self.volumes: dict[tuple[str, str], dict[str, Any]] = {}
        self.volumes_supported = False
        self.tasks: dict[str, dict[str, Any]] = {}
        self.alerts: dict[int, dict[str, Any]] = {}  # by alert id, in GET /api/v1/alerts's shape
        # by volume, in GET .../volumes/V/rebalance's shape; read for the volumes a screen shows
        self.rebalance: dict[tuple[str, str], dict[str, Any]] = {}
        self.last_event_id: int | None = None
        self.events_applied = 0
        self.loaded = False

    # ---- loading --------------------------------------------------------------------------
    def load(
        self, snap: Snapshot, areas: Iterable[str] = ("clusters", "nodes", "tasks", "volumes", "alerts")
    ) -> Changes:
        wanted = set(areas)
        if "clusters" in wanted:
            self.clusters = {c["name"]: dict(c) for c in snap.clusters}
        if "nodes" in wanted:
            self.nodes = {(n["cluster"], n["name"]): dict(n) for n in snap.nodes}
        if "tasks" in wanted:
            self.tasks = {t["id"]: dict(t) for t in snap.tasks}
        if "volumes" in wanted:
            self.volumes_supported = snap.volumes is not None
            self.volumes = {(v["cluster"], v["name"]): dict(v) for v in snap.volumes or []}
        if "alerts" in wanted:
            self.alerts = {a["id"]: dict(a) for a in snap.alerts}
        self.loaded = True
        return Changes(areas={"clusters", "nodes", "tasks", "volumes", "alerts"} & (wanted | {"clusters"}))

    # ---- events -----------------------------------------------------------------------------
    def apply(self, event: Event) -> Changes:
        """Apply one event from the stream; returns what changed."""
        self.last_event_id = max(self.last_event_id or 0, event.id)
        self.events_applied += 1
        kind, cluster, subject = event.kind, event.cluster, event.subject
        data, at = event.data, event.at or self.clock()
        ch = Changes()
        if kind == "node.state":
            node = self.nodes.get((cluster, subject))
            if node is None:
                ch.reload.add("nodes")
            else:
                node["state"] = data.get("state", node["state"])
                node["state_changed_at"] = at
                if node["state"] == NodeState.ONLINE:
                    node["last_seen_at"] = at
                ch.areas.add("nodes")
            ch.areas.add("clusters")
        elif kind == "node.registered":
            ch.reload |= {"nodes"}
            ch.areas.add("clusters")
        elif kind == "node.removed":
            self.nodes.pop((cluster, subject), None)
            ch.areas |= {"nodes", "clusters"}
        elif kind == "task.state":
            task = self.tasks.get(subject)
            if task is None:
                task = self.tasks[subject] = {
                    "id": subject,
                    "cluster": cluster,
                    "node": data.get("node", ""),
                    "kind": data.get("kind", ""),
                    "params": {},
                    "created_at": at,
                    "result": None,
                    "finished_at": None,
                }
                if len(self.tasks) > TASK_LIMIT:
                    for old in sorted(self.tasks, key=lambda k: self.tasks[k].get("updated_at", 0))[
                        : len(self.tasks) - TASK_LIMIT
                    ]:
                        del self.tasks[old]
            task["state"] = data.get("state", task.get("state", ""))
            task["reason"] = data.get("reason", "")
            task["fix"] = data.get("fix")
            task["updated_at"] = at
            if task_final(task["state"]):
                task["finished_at"] = at
            ch.areas |= {"tasks", "clusters"}
        elif kind == "volume.state":
            vol = self.volumes.get((cluster, subject))
            state = data.get("state", "")
            if state == VOLUME_DELETED:
                self.volumes.pop((cluster, subject), None)
                ch.areas |= {"volumes", "clusters"}
            elif vol is None:
                ch.reload.add("volumes")
            else:
                vol["state"] = state
                vol["state_changed_at"] = at
                ch.areas |= {"volumes", "clusters"}
        elif kind == "brick.state":
            volume, _, rest = subject.partition(":")
            brick_node, _, path = rest.partition(":")
            vol = self.volumes.get((cluster, volume))
            if vol is None:
                ch.reload.add("volumes")
            else:
                for brick in vol.get("bricks") or []:
                    if brick.get("node") == brick_node and brick.get("path") == path:
                        brick["state"] = data.get("state", brick.get("state"))
                vol["bricks_online"] = sum(1 for b in vol.get("bricks") or [] if b.get("state") == BrickState.ONLINE)
                ch.areas.add("volumes")
        elif kind == "volume.option":
            vol = self.volumes.get((cluster, subject))
            if vol is None:
                ch.reload.add("volumes")
            else:
                options = vol["options"] = dict(vol.get("options") or {})
                if data.get("reset") or data.get("value") is None:
                    options.pop(data.get("key", ""), None)
                else:
                    options[data["key"]] = data["value"]
                ch.areas.add("volumes")
        elif kind == "volume.rebalance":
            ch.rebalance.add((cluster, subject))
        elif kind == "rebalance.state":
            volume, _, on_node = subject.rpartition("@")
            self._apply_rebalance_state((cluster, volume), on_node, data)
            ch.rebalance.add((cluster, volume))
        elif kind in ("alert.firing", "alert.resolved"):
            self._apply_alert(event, at)
            ch.areas |= {"alerts", "clusters"}
        elif kind in ("cluster.created", "cluster.deleted"):
            ch.reload.add("clusters")
            if kind == "cluster.deleted":
                self.clusters.pop(subject, None)
                ch.areas.add("clusters")
        return ch

    def set_rebalance(self, key: tuple[str, str], status: dict[str, Any] | None) -> None:
        """Store a volume's rebalance status as read from REST (None: the server has no rebalance)."""
        if status is None:
            self.rebalance.pop(key, None)
        else:
            self.rebalance[key] = status

    def _apply_rebalance_state(self, key: tuple[str, str], node: str, data: dict[str, Any]) -> None:
        """What a ``rebalance.state`` event carries, until the status is read again."""
        status = self.rebalance.get(key)
        if status is None or status.get("run") != data.get("run"):
            return  # not shown, or another run: the reload brings it
        for row in status.get("nodes") or []:
            if row.get("node") == node:
                row.update({k: data[k] for k in ("state", "files", "failures") if k in data})

    def rebalance_status(self, key: tuple[str, str]) -> dict[str, Any] | None:
        """The volume's rebalance status when it was ever rebalanced, else None."""
        status = self.rebalance.get(key)
        return status if status and status.get("nodes") else None

    def _apply_alert(self, event: Event, at: float) -> None:
        data = event.data
        try:
            alert_id = int(data["id"])
        except (KeyError, TypeError, ValueError):
            return  # not an alert this model can key
        alert = self.alerts.setdefault(alert_id, {"id": alert_id, "since": data.get("since") or at, "until": None})
        alert.update(
            cluster=event.cluster,
            subject=event.subject,
            kind=data.get("kind", alert.get("kind", "")),
            severity=data.get("severity", alert.get("severity", "")),
            summary=data.get("summary", alert.get("summary", "")),
        )
        if event.kind == "alert.firing":
            alert["state"] = ALERT_FIRING
        else:
            alert["state"], alert["until"] = ALERT_RESOLVED, data.get("until") or at
            resolved = [a for a in self.alerts.values() if a["state"] == ALERT_RESOLVED]
            if len(resolved) > RESOLVED_ALERT_LIMIT:
                resolved.sort(key=lambda a: (a.get("until") or 0, a["id"]))
                for old in resolved[: len(resolved) - RESOLVED_ALERT_LIMIT]:
                    del self.alerts[old["id"]]

    # ---- views --------------------------------------------------------------------------------
    def cluster_rows(self) -> list[dict[str, Any]]:
        now = self.clock()
        names = sorted(set(self.clusters) | {c for c, _ in self.nodes} | {c for c, _ in self.volumes})
        firing: dict[tuple[str, str], int] = {}
        for alert in self.alerts.values():
            if alert.get("state") == ALERT_FIRING:
                key = (alert.get("cluster", ""), alert.get("severity", ""))
                firing[key] = firing.get(key, 0) + 1
        rows = []
        for name in names:
            nodes = [n for (c, _), n in self.nodes.items() if c == name]
            vols = [v for (c, _), v in self.volumes.items() if c == name]
            by_state: dict[str, int] = {}
            for v in vols:
                by_state[v["state"]] = by_state.get(v["state"], 0) + 1
            failed = [
                t
                for t in self.tasks.values()
                if t["cluster"] == name
                and task_failed(t.get("state"))
                and now - (t.get("updated_at") or 0) < RECENT_FAILURE_SECONDS
            ]
            rows.append(
                {
                    "name": name,
                    "nodes": len(nodes),
                    "online": sum(1 for n in nodes if n["state"] == NodeState.ONLINE),
                    "unreachable": sum(1 for n in nodes if n["state"] != NodeState.ONLINE),
                    "volumes": ", ".join(f"{count} {state}" for state, count in sorted(by_state.items())) or "-",
                    "failures": len(failed),
                    "critical": firing.get((name, "critical"), 0),
                    "warning": firing.get((name, "warning"), 0),
                }
            )
        return rows

    def node_rows(self) -> list[dict[str, Any]]:
        return [self.nodes[k] for k in sorted(self.nodes)]

    def volume_rows(self) -> list[dict[str, Any]]:
        return [self.volumes[k] for k in sorted(self.volumes)]

    def alert_rows(self, include_resolved: bool = False) -> list[dict[str, Any]]:
        """Firing alerts (``include_resolved``: resolved ones too), newest first."""
        rows = [a for a in self.alerts.values() if include_resolved or a.get("state") == ALERT_FIRING]
        return sorted(rows, key=lambda a: (a.get("since") or 0, a["id"]), reverse=True)

    def task_rows(self) -> list[dict[str, Any]]:
        return sorted(self.tasks.values(), key=lambda t: (t.get("updated_at") or 0, t["id"]), reverse=True)

    def failures(self) -> list[Failure]:
        out: list[Failure] = []
        for t in self.tasks.values():
            if task_failed(t.get("state")):
                out.append(
                    Failure(
                        t.get("updated_at") or 0,
                        t["cluster"],
                        f"task {t['kind']} on {t['node']} ({t['id'][:8]})",
                        t.get("reason") or "",
                        t.get("fix") or "",
                    )
                )
        for n in self.nodes.values():
            if n["state"] != NodeState.ONLINE:
                out.append(
                    Failure(
                        n.get("state_changed_at") or 0,
                        n["cluster"],
                        f"node {n['name']} {n['state']}",
                        "no heartbeat or last-will from its agent",
                        UNREACHABLE_FIX,
                    )
                )
        for v in self.volumes.values():
            if volume_failed(v["state"]):
                out.append(
                    Failure(
                        v.get("state_changed_at") or v.get("created_at") or 0,
                        v["cluster"],
                        f"volume {v['name']} {v['state']}",
                        "see its tasks",
                        "",
                    )
                )
            elif (
                v.get("bricks_total")
                and v.get("bricks_online", 0) < v["bricks_total"]
                and v["state"] == VolumeState.STARTED
            ):
                out.append(
                    Failure(
                        v.get("state_changed_at") or 0,
                        v["cluster"],
                        f"volume {v['name']} degraded",
                        f"{v['bricks_online']}/{v['bricks_total']} bricks online",
                        "check the Offline bricks' nodes",
                    )
                )
        return sorted(out, key=lambda f: f.at, reverse=True)

    def task_progress(self, task_ids: Iterable[str]) -> list[dict[str, Any]]:
        return [
            self.tasks.get(tid, {"id": tid, "node": "?", "kind": "", "state": TaskState.QUEUED.value, "reason": ""})
            for tid in task_ids
        ]
