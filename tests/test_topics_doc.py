"""topics.md documents every topic the code builds, and the code builds every topic it documents."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from broker.topics import Topics

DOC = Path(__file__).resolve().parent.parent / "topics.md"


def code_topics() -> set[str]:
    t = Topics("glusterctl")
    out = set()
    for name, fn in inspect.getmembers(t, inspect.ismethod):
        params = [p for p in inspect.signature(fn).parameters if p != "self"]
        if name.startswith("_") or name in ("parse_node_topic", "agent_filters", "node_prefix"):
            continue
        args = {"cluster": "{cluster}", "node": "{node}", "task_id": "{task_id}"}
        out.add(fn(*(args[p] for p in params)))
    return out


def test_every_topic_is_documented_and_every_documented_topic_exists():
    doc = DOC.read_text()
    documented = set(re.findall(r"`(glusterctl/v1/[^`\s]+)`", doc))
    built = code_topics()
    assert built - documented == set(), f"topics the code uses but topics.md lacks: {sorted(built - documented)}"
    concrete = {d for d in documented if "+" not in d and "#" not in d}
    assert concrete - built == set(), f"topics.md documents topics the code never builds: {sorted(concrete - built)}"
