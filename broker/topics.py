"""Every MQTT topic glusterctl uses is built here and nowhere else; topics.md documents each.

Topics live under ``{root}/v1/`` where ``root`` defaults to ``glusterctl``. Several control
planes can share one broker by giving each its own root (``--mqtt-root``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VERSION = "v1"
DEFAULT_ROOT = "glusterctl"

# What an agent publishes under its node prefix, and what it may subscribe to.
AGENT_PUBLISHES = ("hello", "presence", "heartbeat", "task-status")
AGENT_SUBSCRIBES = ("registration", "tasks/+")

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

    # what the control service subscribes to
    def agent_filters(self) -> list[str]:
        return [f"{self.base}/clusters/+/nodes/+/{leaf}" for leaf in AGENT_PUBLISHES]

    def parse_node_topic(self, topic: str) -> tuple[str, str, str] | None:
        """Split ``{base}/clusters/C/nodes/N/LEAF...`` into (C, N, LEAF); None if not such a topic."""
        prefix = f"{self.base}/clusters/"
        if not topic.startswith(prefix):
            return None
        parts = topic[len(prefix) :].split("/")
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
