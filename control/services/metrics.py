"""Prometheus metrics, collected from the database on each scrape.

Nothing on a hot path updates a gauge: a scrape runs a handful of grouped queries (volumes with
their bricks, nodes, task counts, task durations per bucket) and builds the families then. The
few figures the database does not hold (heartbeats received and dropped, metadata copies offered,
event-stream clients, the broker link) are plain counters that the code paths bump.

Names and meanings follow gluster-prometheus (the GlusterFS exporter) where it has a metric,
with a ``cluster`` label added (the cluster's name); the control plane's own figures are
``glusterctl_*``. ``gluster_brick_up`` leaves out gluster-prometheus's ``pid`` and ``peer_id``
labels: a pid label starts a new series on every brick restart, which breaks alerts' ``for``.
``gluster_volume_heal_count`` comes from each started volume's latest heal info or summary (the
alerts' heal-backlog query): no series for a volume without a recent one, nor for a brick glfsheal
could not reach.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import peewee as pw
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from broker.messages import BrickState, Health, NodeState, TaskState, VolumeState
from control.services import alerts
from control.services.capacity import BrickSpace, VolumeShape, subvolume_capacities, volume_capacity
from control.services.health import volume_health
from control.store.models import Brick, Cluster, Node, Task, Volume

# task durations (created to finished), seconds: from a quick probe to a large volume create
TASK_DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


@dataclass
class Counts:
    """Figures the database does not hold, bumped where they happen (thread-safe)."""

    heartbeats_received: int = 0
    heartbeats_dropped: int = 0
    event_stream_clients: int = 0
    metadata_copies_received: int = 0
    metadata_copy_bytes: int = 0
    embedded_broker_restarts: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)


COUNTS = Counts()


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


BRICK_LABELS = ["cluster", "host", "id", "brick_path", "volume", "subvolume"]
HEAL_LABELS = ["cluster", "volume", "brick_path", "host"]


class StoreCollector(Collector):
    """gluster_* and glusterctl_* families from the store; ``mqtt_connected`` reports the broker link."""

    def __init__(
        self,
        mqtt_connected: Callable[[], bool] | None = None,
        mqtt_dropped: Callable[[], dict[str, int]] | None = None,
        leader: Callable[[], bool] | None = None,
    ) -> None:
        self.mqtt_connected = mqtt_connected
        self.mqtt_dropped = mqtt_dropped
        self.leader = leader

    def collect(self) -> Iterator[Metric]:
        yield from self._volumes()
        yield from self._heal()
        yield from self._nodes()
        yield from self._tasks()
        yield from self._alerts()
        yield from self._control()

    # ---- volumes and bricks ------------------------------------------------------------------
    def _volumes(self) -> Iterator[Metric]:
        brick_up = _gauge(
            "gluster_brick_up", "Brick up (1-up, 0-down)", ["cluster", "volume", "hostname", "brick_path"]
        )
        brick_fams = {
            "used_bytes": _gauge("gluster_brick_capacity_used_bytes", "Used capacity of gluster bricks in bytes", BRICK_LABELS),
            "free_bytes": _gauge("gluster_brick_capacity_free_bytes", "Free capacity of gluster bricks in bytes", BRICK_LABELS),
            "total_bytes": _gauge("gluster_brick_capacity_bytes_total", "Total capacity of gluster bricks in bytes", BRICK_LABELS),
            "inodes_total": _gauge("gluster_brick_inodes_total", "Total no of inodes of gluster brick disk", BRICK_LABELS),
            "inodes_free": _gauge("gluster_brick_inodes_free", "Free no of inodes of gluster brick disk", BRICK_LABELS),
            "inodes_used": _gauge("gluster_brick_inodes_used", "Used no of inodes of gluster brick disk", BRICK_LABELS),
        }  # fmt: skip
        sub_labels = ["cluster", "volume", "subvolume"]
        sub_used = _gauge(
            "gluster_subvol_capacity_used_bytes", "Effective used capacity of gluster subvolume in bytes", sub_labels
        )
        sub_total = _gauge(
            "gluster_subvol_capacity_total_bytes", "Effective total capacity of gluster subvolume in bytes", sub_labels
        )
        vol_labels = ["cluster", "volume"]
        brick_count = _gauge("gluster_volume_brick_count", "Total no of bricks in volume", vol_labels)
        vol_up = _gauge("gluster_volume_up", "Volume is started and serving (1) or not (0)", vol_labels)
        health = _gauge(
            "glusterctl_volume_health",
            "Volume health (1 for the current one): Healthy, Degraded, Down",
            [*vol_labels, "health"],
        )
        size = _gauge(
            "glusterctl_volume_capacity_bytes_total", "Bytes the volume can hold, from its layout", vol_labels
        )
        used = _gauge("glusterctl_volume_capacity_used_bytes", "Bytes used in the volume, from its layout", vol_labels)
        free = _gauge("glusterctl_volume_capacity_free_bytes", "Bytes free in the volume, from its layout", vol_labels)
        counts = {name: _gauge(f"gluster_volume_{name}_count", doc, ["cluster"]) for name, doc in (
            ("total", "Total no of volumes"), ("started", "Total no of started volumes"),
            ("created", "Freshly created no of volumes"),
        )}  # fmt: skip

        reachable = {
            (n.cluster_id, n.name)
            for n in Node.select(Node.cluster, Node.name).where(Node.state == NodeState.ONLINE.value)
        }
        volumes = list(Volume.select(Volume, Cluster).join(Cluster))
        bricks: dict[str, list[Brick]] = {}
        for brick in Brick.select().order_by(Brick.volume, Brick.index):
            bricks.setdefault(brick.volume_id, []).append(brick)
        per_cluster: dict[str, dict[str, int]] = {}
        for volume in volumes:
            cluster = volume.cluster.name
            tally = per_cluster.setdefault(cluster, {"total": 0, "started": 0, "created": 0})
            tally["total"] += 1
            tally["started"] += volume.state == VolumeState.STARTED.value
            tally["created"] += volume.state == VolumeState.CREATED.value
            rows = bricks.get(volume.id, [])
            shape = VolumeShape(volume.type, volume.replica, volume.disperse, volume.redundancy)
            up = [b.state == BrickState.ONLINE and (volume.cluster_id, b.node_name) in reachable for b in rows]
            brick_count.add_metric([cluster, volume.name], len(rows))
            groups = shape.subvolumes(len(rows))
            subvol_of = {i: shape.subvolume_name(volume.name, n) for n, group in enumerate(groups) for i in group}
            started = volume.state == VolumeState.STARTED.value
            for brick, is_up in zip(rows, up, strict=True):
                if started:
                    brick_up.add_metric([cluster, volume.name, brick.node_name, brick.path], 1 if is_up else 0)
                if brick.total_bytes is None:
                    continue
                labels = [cluster, brick.node_name, f"{volume.id}/{brick.index}", brick.path, volume.name]
                labels.append(subvol_of.get(brick.index, ""))
                for column, family in brick_fams.items():
                    family.add_metric(labels, getattr(brick, column) or 0)
            spaces = [BrickSpace(b.total_bytes, b.used_bytes) for b in rows]
            for number, part in enumerate(subvolume_capacities(shape, spaces)):
                if part is not None:
                    name = shape.subvolume_name(volume.name, number)
                    sub_used.add_metric([cluster, volume.name, name], part.used)
                    sub_total.add_metric([cluster, volume.name, name], part.size)
            capacity = volume_capacity(shape, spaces)
            if capacity is not None:
                size.add_metric([cluster, volume.name], capacity.size)
                used.add_metric([cluster, volume.name], capacity.used)
                free.add_metric([cluster, volume.name], capacity.free)
            state = volume_health(shape, volume.state, up, volume.options or {})
            vol_up.add_metric([cluster, volume.name], 1 if state in (Health.HEALTHY, Health.DEGRADED) else 0)
            if state is not None:
                for value in Health:
                    health.add_metric([cluster, volume.name, value.value], 1 if value == state else 0)
        for cluster, tally in per_cluster.items():
            for name, family in counts.items():
                family.add_metric([cluster], tally[name])
        yield from (brick_up, *brick_fams.values(), sub_used, sub_total, brick_count, vol_up, health)
        yield from (size, used, free, *counts.values())

    # ---- self-heal backlog -----------------------------------------------------------------------
    def _heal(self) -> Iterator[Metric]:
        heal = _gauge("gluster_volume_heal_count", "self heal count for volume", HEAL_LABELS)
        started = {
            v.id: v
            for v in Volume.select(Volume, Cluster).join(Cluster).where(Volume.state == VolumeState.STARTED.value)
        }
        counts = alerts.latest_heal_counts(list(started), time.time())
        if counts:
            # glfsheal names a brick ADDRESS:/path by its node's address in the client volfile (nodes may share
            # one address): label it with the node holding that path
            address = {
                (n.cluster_id, n.name): n.address or n.name
                for n in Node.select(Node.cluster, Node.name, Node.address).where(
                    Node.cluster.in_(list({v.cluster_id for v in started.values()}))
                )
            }
            holder: dict[tuple[str, str], str] = {}
            for b in Brick.select(Brick.volume, Brick.node_name, Brick.path).where(Brick.volume.in_(list(counts))):
                cluster_id = started[b.volume_id].cluster_id
                holder[(b.volume_id, f"{address.get((cluster_id, b.node_name), b.node_name)}:{b.path}")] = b.node_name
                holder.setdefault((b.volume_id, f"{b.node_name}:{b.path}"), b.node_name)
            for volume_id, bricks in counts.items():
                volume = started[volume_id]
                for brick in bricks:
                    host, sep, path = brick.brick.partition(":/")
                    if brick.entries is None or not sep:
                        continue
                    node = holder.get((volume_id, brick.brick), host)
                    heal.add_metric([volume.cluster.name, volume.name, "/" + path, node], brick.entries)
        yield heal

    # ---- nodes ---------------------------------------------------------------------------------
    def _nodes(self) -> Iterator[Metric]:
        by_state = _gauge("glusterctl_nodes", "Nodes by state", ["cluster", "state"])
        node_up = _gauge(
            "glusterctl_node_up", "Node's agent connected and heartbeating (1) or Unreachable (0)", ["cluster", "node"]
        )
        agents = _gauge("glusterctl_agents_connected", "Agents connected to the broker and registered", ["cluster"])
        tally: dict[str, dict[str, int]] = {c.name: {} for c in Cluster.select(Cluster.name)}
        for node in Node.select(Node.name, Node.state, Cluster.name).join(Cluster):
            cluster = node.cluster.name
            tally.setdefault(cluster, {})
            tally[cluster][node.state] = tally[cluster].get(node.state, 0) + 1
            node_up.add_metric([cluster, node.name], 1 if node.state == NodeState.ONLINE.value else 0)
        for cluster, states in tally.items():
            for state in NodeState:
                by_state.add_metric([cluster, state.value], states.get(state.value, 0))
            agents.add_metric([cluster], states.get(NodeState.ONLINE.value, 0))
        yield from (by_state, node_up, agents)

    # ---- tasks ---------------------------------------------------------------------------------
    def _tasks(self) -> Iterator[Metric]:
        tasks = _gauge("glusterctl_tasks", "Tasks by kind and state", ["cluster", "kind", "state"])
        query = (
            Task.select(Cluster.name.alias("cluster"), Task.kind, Task.state, pw.fn.COUNT(Task.id).alias("n"))
            .join(Cluster)
            .group_by(Cluster.name, Task.kind, Task.state)
            .dicts()
        )
        for row in cast(Iterable[dict[str, Any]], query):
            tasks.add_metric([row["cluster"], row["kind"], row["state"]], row["n"])
        yield tasks

        duration = Task.finished_at - Task.created_at
        columns = [
            pw.fn.SUM(pw.Case(None, [(duration <= bound, 1)], 0)).alias(f"le{i}")
            for i, bound in enumerate(TASK_DURATION_BUCKETS)
        ]
        query = (
            Task.select(Task.kind, pw.fn.COUNT(Task.id).alias("n"), pw.fn.SUM(duration).alias("total"), *columns)
            .where(Task.finished_at.is_null(False) & Task.state.in_([TaskState.DONE.value, TaskState.FAILED.value]))
            .group_by(Task.kind)
            .dicts()
        )
        histogram = HistogramMetricFamily(
            "glusterctl_task_duration_seconds",
            "Time from a task's creation to its end (DONE or FAILED)",
            labels=["kind"],
        )
        for row in cast(Iterable[dict[str, Any]], query):
            buckets = [(str(bound), float(row[f"le{i}"] or 0)) for i, bound in enumerate(TASK_DURATION_BUCKETS)]
            buckets.append(("+Inf", float(row["n"])))
            histogram.add_metric([row["kind"]], buckets, float(row["total"] or 0))
        yield histogram

    # ---- alerts ---------------------------------------------------------------------------------------
    def _alerts(self) -> Iterator[Metric]:
        firing = _gauge("glusterctl_alerts_firing", "Alerts firing, by cluster and severity", ["cluster", "severity"])
        counts = alerts.firing_counts()
        for cluster in Cluster.select(Cluster.name):
            for severity in alerts.Severity:
                firing.add_metric([cluster.name, severity.value], counts.get((cluster.name, severity.value), 0))
        yield firing

    # ---- the control service itself ----------------------------------------------------------------
    def _control(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "glusterctl_heartbeats_received", "Heartbeats accepted from agents", value=COUNTS.heartbeats_received
        )
        yield CounterMetricFamily(
            "glusterctl_heartbeats_dropped",
            "Heartbeats refused (unknown node or stale connection epoch)",
            value=COUNTS.heartbeats_dropped,
        )
        yield CounterMetricFamily(
            "glusterctl_metadata_copies_received",
            "Metadata copies the agents offered (whole or their signed header; at each online control presence)",
            value=COUNTS.metadata_copies_received,
        )
        yield CounterMetricFamily(
            "glusterctl_metadata_copy_bytes",
            "Bytes of the metadata copies the agents offered",
            value=COUNTS.metadata_copy_bytes,
        )
        yield CounterMetricFamily(
            "glusterctl_embedded_broker_restarts",
            "Times the embedded MQTT broker's process died and the server started it again",
            value=COUNTS.embedded_broker_restarts,
        )
        yield GaugeMetricFamily(
            "glusterctl_event_stream_clients", "Clients following the event stream", value=COUNTS.event_stream_clients
        )
        if self.mqtt_connected is not None:
            yield GaugeMetricFamily(
                "glusterctl_mqtt_connected",
                "The control service's connection to the MQTT broker (1 connected)",
                value=1 if self.mqtt_connected() else 0,
            )
        if self.leader is not None:
            yield GaugeMetricFamily(
                "glusterctl_leader",
                "This server handles the agents' messages and runs the periodic work (1; several servers: docs/ha.md)",
                value=1 if self.leader() else 0,
            )
        if self.mqtt_dropped is not None:
            dropped = CounterMetricFamily(
                "glusterctl_mqtt_messages_dropped",
                "Agent messages the control service dropped, by reason (stopping, oversized, malformed, handler-error)",
                labels=["reason"],
            )
            counts = self.mqtt_dropped()
            for reason in ("stopping", "oversized", "malformed", "handler-error"):
                dropped.add_metric([reason], counts.get(reason, 0))
            yield dropped


def make_registry(
    mqtt_connected: Callable[[], bool] | None = None,
    mqtt_dropped: Callable[[], dict[str, int]] | None = None,
    leader: Callable[[], bool] | None = None,
) -> CollectorRegistry:
    """A registry of its own per application (tests run several in one process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(mqtt_connected, mqtt_dropped, leader))
    return registry
