"""Every MQTT topic glusterctl uses is built here and nowhere else; topics.md documents each.

Topics live under ``{root}/v1/`` where ``root`` defaults to ``glusterctl``. Several control
planes can share one broker by giving each its own root (``--mqtt-root``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VERSION = "v1"
DEFAULT_ROOT = "glusterctl"

# A topic level that any cluster or node name matches, in a filter.
ANY = "+"

ROOT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Topics:
    root: str = DEFAULT_ROOT

    def __post_init__(self) -> None:
        if not ROOT_RE.match(self.root):
            raise ValueError(f"invalid MQTT topic root {self.root!r}: use 1-64 letters, digits, '-' or '_'")

    @property
    def base(self) -> str:
        return f"{self.root}/{VERSION}"

    # control service
    def control_presence(self) -> str:
        return f"{self.base}/control/presence"

    # per node
    def node_prefix(self, cluster: str, node: str) -> str:
        return f"{self.base}/clusters/{cluster}/nodes/{node}"

    def hello(self, cluster: str, node: str) -> str:
        return f"{self.node_prefix(cluster, node)}/hello"

    def registration(self, cluster: str, node: str) -> str:
        return f"{self.node_prefix(cluster, node)}/registration"

    def presence(self, cluster: str, node: str) -> str:
        return f"{self.node_prefix(cluster, node)}/presence"

    def heartbeat(self, cluster: str, node: str) -> str:
        return f"{self.node_prefix(cluster, node)}/heartbeat"

    def task(self, cluster: str, node: str, task_id: str) -> str:
        return f"{self.node_prefix(cluster, node)}/tasks/{task_id}"

    def tasks_filter(self, cluster: str, node: str) -> str:
        return f"{self.node_prefix(cluster, node)}/tasks/+"

    def task_status(self, cluster: str, node: str) -> str:
        return f"{self.node_prefix(cluster, node)}/task-status"

    # published by the control service for third-party monitoring (retained)
    def cluster_summary(self, cluster: str) -> str:
        return f"{self.base}/clusters/{cluster}/summary"

    def volume_status(self, cluster: str, volume: str) -> str:
        return f"{self.base}/clusters/{cluster}/volumes/{volume}/status"

    def alert(self, cluster: str, alert_id: str) -> str:
        return f"{self.base}/clusters/{cluster}/alerts/{alert_id}"

    def monitoring_filters(self, cluster: str = ANY) -> tuple[str, ...]:
        """The monitoring topics of one cluster (or all): summary, every volume's status, every alert."""
        return (self.cluster_summary(cluster), self.volume_status(cluster, ANY), self.alert(cluster, ANY))

    # cluster metadata and its copies on the agents (docs/recovery.md)
    def cluster_metadata(self, cluster: str) -> str:
        """The cluster's signed metadata document, retained; read by the cluster's nodes."""
        return f"{self.base}/clusters/{cluster}/metadata"

    def metadata_copy(self, cluster: str, node: str) -> str:
        """An agent offers the newest metadata copy it kept (a restoring control service reads them)."""
        return f"{self.node_prefix(cluster, node)}/metadata-copy"

    # what each client may publish and subscribe to (the embedded broker's ACL)
    def agent_publish_topics(self, cluster: str, node: str) -> tuple[str, ...]:
        """An agent publishes only its own hello, presence, heartbeat and task status."""
        return (
            self.hello(cluster, node),
            self.presence(cluster, node),
            self.heartbeat(cluster, node),
            self.task_status(cluster, node),
            self.metadata_copy(cluster, node),
        )

    def agent_subscribe_filters(self, cluster: str, node: str) -> tuple[str, ...]:
        """An agent reads only its own registration and tasks, the control presence and its cluster's metadata."""
        return (
            self.registration(cluster, node),
            self.tasks_filter(cluster, node),
            self.control_presence(),
            self.cluster_metadata(cluster),
        )

    def monitor_filters(self, cluster: str = ANY) -> tuple[str, ...]:
        """Read-only monitoring users see the nodes' presence, heartbeat and task status, and the monitoring
        topics (summary, volume status, alerts), of one cluster or all."""
        return (
            self.presence(cluster, ANY),
            self.heartbeat(cluster, ANY),
            self.task_status(cluster, ANY),
            *self.monitoring_filters(cluster),
            self.control_presence(),
        )

    def cluster_hellos_filter(self, cluster: str) -> str:
        """Every node's hello in ``cluster``: what the cluster's enrolment identity may publish."""
        return self.hello(cluster, ANY)

    def cluster_registrations_filter(self, cluster: str) -> str:
        """Every node's registration answer in ``cluster``: what the enrolment identity may read."""
        return self.registration(cluster, ANY)

    def everything_filter(self) -> str:
        """Every topic under this root and version: what the control service may publish and read."""
        return f"{self.base}/#"

    # what the control service subscribes to: everything every agent publishes
    def agent_filters(self) -> list[str]:
        return list(self.agent_publish_topics(ANY, ANY))

    def parse_cluster_topic(self, topic: str) -> tuple[str, str] | None:
        """Split ``{base}/clusters/C/REST...`` into (C, REST); None if not such a topic."""
        prefix = f"{self.base}/clusters/"
        if not topic.startswith(prefix):
            return None
        cluster, slash, rest = topic[len(prefix) :].partition("/")
        return (cluster, rest) if slash else None

    def parse_node_topic(self, topic: str) -> tuple[str, str, str] | None:
        """Split ``{base}/clusters/C/nodes/N/LEAF...`` into (C, N, LEAF); None if not such a topic."""
        parsed = self.parse_cluster_topic(topic)
        if parsed is None:
            return None
        parts = [parsed[0], *parsed[1].split("/")]
        if len(parts) < 4 or parts[1] != "nodes":
            return None
        return parts[0], parts[2], "/".join(parts[3:])


def filter_matches(pattern: str, topic: str) -> bool:
    """MQTT topic filter matching with ``+`` and ``#``."""
    pat = pattern.split("/")
    top = topic.split("/")
    for i, level in enumerate(pat):
        if level == "#":
            return True
        if i >= len(top):
            return False
        if level != "+" and level != top[i]:
            return False
    return len(pat) == len(top)
