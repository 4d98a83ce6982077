"""The fault matrix: faults injected in the middle of a replica-3 volume create (which starts the
volume) on three real agents, and what must hold afterwards.

Shared by tests/test_faults_matrix.py and bench/fault_matrix.py (which prints a table). Each
scenario gets a fresh stack (server, three agents, brick folders) and returns a ``Outcome``:
every task final, none executed twice (every agent log across its restarts names each task id
at most once in "executing task"), the volume Started with every brick Online, or, when a task
was interrupted by the fault (``INTERRUPTED``), failed with a way out that works (start again),
and the time from the fault to that state.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.helpers import wait_until

NODES = ("n1", "n2", "n3")
SETTLE_TIMEOUT = 60.0
OPEN_STATES = ("QUEUED", "RUNNING", "STARTING", "STOPPING")


@dataclass
class Outcome:
    scenario: str
    volume_state: str = ""
    tasks: int = 0
    failed: list[str] = field(default_factory=list)  # reasons of FAILED tasks
    executed_twice: list[str] = field(default_factory=list)
    recovery_seconds: float = 0.0
    retried: bool = False

    @property
    def ok(self) -> bool:
        interrupted_only = all(r.startswith("INTERRUPTED") for r in self.failed)
        return self.volume_state == "Started" and not self.executed_twice and interrupted_only


def _agents(st) -> list[Any]:
    return [p for p in st.procs if getattr(p, "node", None) in NODES]


def start_trio(st) -> None:
    for node in NODES:
        st.agent(node)
        (st.tmp / "bricks" / node).mkdir(parents=True, exist_ok=True)
    wait_until(lambda: all(st.node_state(n) == "Online" for n in NODES), timeout=30, what="three nodes Online")


def _tasks(st) -> list[dict[str, Any]]:
    return st.cli.json("task", "list", "--limit", "500")


def _volume(st, name: str) -> dict[str, Any]:
    return st.cli.json("volume", "status", name)


def _executions(st) -> dict[str, int]:
    counts: dict[str, int] = {}
    for agent in _agents(st):
        for task_id in re.findall(r"executing task ([0-9a-f]{32})", agent.log()):
            counts[task_id] = counts.get(task_id, 0) + 1
    return counts


def _settled(st, name: str) -> dict[str, Any] | None:
    if any(t["state"] in OPEN_STATES for t in _tasks(st)):
        return None
    volume = _volume(st, name)
    if volume["state"] == "Started" and all(b["state"] == "Online" for b in volume["bricks"]):
        return volume
    if volume["state"].endswith("Failed"):
        return volume
    return None


def run(st, scenario: str, fault: Callable[[Any], None], name: str = "fm") -> Outcome:
    """Create a replica-3 volume, inject ``fault(st)`` right away (during the create) or, for a
    scenario named "... (start)", once the volume is Starting, and check what follows."""
    bricks = [f"{n}:{st.tmp / 'bricks' / n / name}" for n in NODES]
    st.cli.run("volume", "create", name, "--replica", "3", *bricks)
    if scenario.endswith("(start)"):
        wait_until(
            lambda: _volume(st, name)["state"] in ("Starting", "Started", "StartFailed"),
            timeout=30,
            interval=0.02,
            what="volume Starting",
        )
    fault_at = time.monotonic()
    fault(st)
    volume = wait_until(lambda: _settled(st, name), timeout=SETTLE_TIMEOUT, what=f"{scenario}: volume settled")
    outcome = Outcome(scenario)
    if volume["state"].endswith("Failed"):  # a task was interrupted: the way out must work
        outcome.retried = True
        st.cli.run("volume", "start", name, "--wait", timeout=90)
        volume = wait_until(lambda: _settled(st, name), timeout=SETTLE_TIMEOUT, what=f"{scenario}: started again")
    outcome.recovery_seconds = time.monotonic() - fault_at
    outcome.volume_state = volume["state"]
    tasks = _tasks(st)
    outcome.tasks = len(tasks)
    outcome.failed = [t.get("reason") or "" for t in tasks if t["state"] == "FAILED"]
    outcome.executed_twice = sorted(t for t, n in _executions(st).items() if n > 1)
    return outcome


# ---- faults ----------------------------------------------------------------------------------
def kill_agent(st) -> None:
    agent = next(a for a in _agents(st) if a.node == "n2")
    agent.kill9()
    agent.start()


def kill_server(st) -> None:
    st.server.kill9()
    st.server.start()


def restart_broker(st) -> None:
    """The embedded broker lives in the server process: a clean stop and start restarts it."""
    st.server.stop()
    st.server.start()


FAULTS: dict[str, Callable[[Any], None]] = {
    "agent kill -9 (create)": kill_agent,
    "agent kill -9 (start)": kill_agent,
    "server kill -9 (create)": kill_server,
    "server kill -9 (start)": kill_server,
    "embedded broker restart (create)": restart_broker,
}


def table(outcomes: list[Outcome]) -> str:
    rows = [("scenario", "volume", "tasks", "failed", "run twice", "retried", "recovery", "ok")]
    for o in outcomes:
        rows.append(
            (
                o.scenario,
                o.volume_state,
                str(o.tasks),
                str(len(o.failed)),
                str(len(o.executed_twice)),
                "yes" if o.retried else "no",
                f"{o.recovery_seconds:.1f} s",
                "ok" if o.ok else "FAIL",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)
