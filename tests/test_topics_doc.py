"""topics.md documents every topic and filter the code builds, and the code builds every topic it documents."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from broker.topics import Topics

DOC = Path(__file__).resolve().parent.parent / "topics.md"
PLACEHOLDER_RE = re.compile(r"\{[a-z_]+\}")


def code_topics() -> set[str]:
    """Every topic and filter a Topics method builds, with placeholders for the names it takes."""
    t = Topics("glusterctl")
    out: set[str] = set()
    for name, fn in inspect.getmembers(t, inspect.ismethod):
        params = [p for p in inspect.signature(fn).parameters if p != "self"]
        if name.startswith(("_", "parse_")) or name == "node_prefix":
            continue
        args = {
            "cluster": "{cluster}",
            "node": "{node}",
            "task_id": "{task_id}",
            "leaf": "hello",
            "volume": "{volume}",
            "alert_id": "{alert_id}",
        }
        built = fn(*(args[p] for p in params))
        out.update([built] if isinstance(built, str) else built)
    assert out, "no topics built"
    return out


def _as_filter_pattern(documented_topic: str) -> re.Pattern[str]:
    """A documented topic, where each placeholder ({cluster}, {node}, ...) may also be the wildcard `+`."""
    parts = PLACEHOLDER_RE.split(documented_topic)
    names = PLACEHOLDER_RE.findall(documented_topic)
    pattern = re.escape(parts[0])
    for name, rest in zip(names, parts[1:], strict=True):
        pattern += f"(?:{re.escape(name)}|\\+)" + re.escape(rest)
    return re.compile(pattern + "$")


def is_documented(topic: str, documented: set[str]) -> bool:
    """Listed as such, or a filter with `+` where a documented topic names a cluster, node or task."""
    return topic in documented or any(_as_filter_pattern(d).match(topic) for d in documented)


def test_every_topic_is_documented_and_every_documented_topic_exists():
    doc = DOC.read_text()
    documented = set(re.findall(r"`(glusterctl/v1/[^`\s]+)`", doc))
    built = code_topics()
    undocumented = {b for b in built if not is_documented(b, documented)}
    assert undocumented == set(), f"topics the code uses but topics.md lacks: {sorted(undocumented)}"
    concrete = {d for d in documented if "+" not in d and "#" not in d}
    assert concrete - built == set(), f"topics.md documents topics the code never builds: {sorted(concrete - built)}"


def test_filters_are_checked_against_the_doc():
    documented = {"glusterctl/v1/clusters/{cluster}/nodes/{node}/heartbeat"}
    assert is_documented("glusterctl/v1/clusters/+/nodes/+/heartbeat", documented)
    assert not is_documented("glusterctl/v1/clusters/+/nodes/+/secrets", documented)
    assert not is_documented("glusterctl/v1/#", documented)
    assert is_documented("glusterctl/v1/clusters/{cluster}/nodes/+/heartbeat", documented)
    assert not is_documented("glusterctl/v1/clusters/{cluster}/nodes/+/heartbeat/x", documented)
