"""The agent's task journal: what it started and finished, kept across restarts.

Delivery is at-least-once; the journal makes execution exactly-once: a task whose id is
recorded as finished is acknowledged again with its recorded outcome, never run again. A task
recorded as RUNNING when the agent starts was interrupted by the restart (kill -9, power loss):
``interrupted()`` lists those, and the agent decides per kind (see agent/node.py) whether it
may resume or is reported FAILED.

The journal is bounded by age, not by count: final entries are kept for ``KEEP_SECONDS``
(long after the control service stopped delivering the task: its reconciler fails an open task
past its deadline, see control/services/reconciler.py), so a burst of tasks cannot push out an
entry whose task may still be redelivered. The file is compacted on open and whenever it holds
more than twice as many lines as live entries.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from agent import clock
from broker.messages import FINAL_TASK_STATES

KEEP_SECONDS = 7 * 86400.0  # final entries remembered this long
COMPACT_MIN_LINES = 1000  # never rewrite the file for fewer stale lines than this


class Journal:
    def __init__(self, path: str, now: float | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}
        self._lines = 0
        torn = False
        if os.path.exists(path):
            with open(path) as fh:
                for line in fh:
                    try:
                        entry = json.loads(line)
                        self._entries[entry["id"]] = entry
                        self._lines += 1
                    except (ValueError, KeyError, TypeError):
                        torn = True  # a torn last line after a crash: rewritten, or the next line would join it
        self._fh = open(path, "a")
        with self._lock:
            self._compact(now, force=torn)

    def get(self, task_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._entries.get(task_id)

    def interrupted(self) -> list[dict[str, Any]]:
        """Entries whose task was running when the agent stopped (only meaningful right after opening)."""
        with self._lock:
            return [e for e in self._entries.values() if e["state"] not in FINAL_TASK_STATES]

    def record(
        self,
        task_id: str,
        state: str,
        reason: str = "",
        result: dict[str, Any] | None = None,
        kind: str = "",
        now: float | None = None,
    ) -> None:
        with self._lock:
            kind = kind or self._entries.get(task_id, {}).get("kind", "")
            entry = {"id": task_id, "kind": kind, "state": state, "reason": reason, "result": result}
            entry["at"] = clock.now() if now is None else now
            self._entries[task_id] = entry
            self._fh.write(json.dumps(entry) + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._lines += 1
            if self._lines > max(2 * len(self._entries), COMPACT_MIN_LINES):
                self._compact(now)

    def _compact(self, now: float | None = None, force: bool = False) -> None:
        """Drop final entries older than KEEP_SECONDS and rewrite the file with one line per entry
        (atomically: a crash leaves the old file or the new one)."""
        cutoff = (clock.now() if now is None else now) - KEEP_SECONDS
        keep = sorted(
            (e for e in self._entries.values() if e["state"] not in FINAL_TASK_STATES or e.get("at", 0) >= cutoff),
            key=lambda e: e.get("at", 0),
        )
        if not force and len(keep) == self._lines == len(self._entries):
            return  # nothing stale: leave the file alone
        self._entries = {e["id"]: e for e in keep}
        tmp = self.path + ".tmp"
        with open(tmp, "w") as fh:
            for entry in keep:
                fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self._fh.close()
        self._fh = open(self.path, "a")
        self._lines = len(keep)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def close(self) -> None:
        with self._lock:
            self._fh.close()
