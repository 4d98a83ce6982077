"""The failure report: recent failed tasks, explained from a knowledge base kept as data."""

from __future__ import annotations

import functools
import json
import posixpath
import re
from pathlib import Path
from typing import Any, cast

from broker.messages import TaskState
from control.store.models import Cluster, Task

KB_PATH = Path(__file__).with_name("failure_kb.json")
CODE_RE = re.compile(r"^([A-Z][A-Z0-9_]{2,}):\s*")


@functools.lru_cache(maxsize=1)
def knowledge_base() -> dict[str, dict[str, str]]:
    with open(KB_PATH) as fh:
        return cast(dict[str, dict[str, str]], json.load(fh))


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return f"<{key}>"


def explain(reason: str, node: str, details: dict[str, Any] | None = None) -> dict[str, str]:
    """Turn a task's failure reason ('CODE: message') into code, title, reason and fix."""
    match = CODE_RE.match(reason or "")
    code = match.group(1) if match else "UNKNOWN"
    details = dict(details or {})
    path = details.get("path") or _first_path(reason) or ""
    values = _Blank(
        node=node,
        path=path or "<path>",
        parent=posixpath.dirname(path.rstrip("/")) or "/",
        port=details.get("port", "<port>"),
    )
    entry = knowledge_base().get(code)
    if entry is None:
        return {
            "code": code,
            "title": "unexpected failure",
            "reason": reason,
            "fix": f"Read the agent log on node {node}; the message above is what it reported.",
        }
    return {
        "code": code,
        "title": entry["title"],
        "reason": entry["reason"].format_map(values),
        "fix": entry["fix"].format_map(values),
    }


def _first_path(text: str) -> str | None:
    match = re.search(r"(/[^\s:'\"]+)", text or "")
    return match.group(1) if match else None


def recent(cluster: Cluster | None = None, limit: int = 20) -> list[dict[str, Any]]:
    query = Task.select(Task, Cluster).join(Cluster).where(Task.state == TaskState.FAILED.value)
    if cluster is not None:
        query = query.where(Task.cluster == cluster)
    out = []
    for task in query.order_by(Task.updated_at.desc()).limit(limit):
        details = (task.result or {}).get("failure") or {}
        out.append(
            {
                "task": task.id,
                "cluster": task.cluster.name,
                "node": task.node_name,
                "kind": task.kind,
                "target": task.target,
                "operation": task.operation,
                "at": task.updated_at,
                "error": task.reason,
                **explain(task.reason, task.node_name, details),
            }
        )
    return out


__all__ = ["explain", "knowledge_base", "recent"]
