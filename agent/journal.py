"""The agent's task journal: what it started and finished, kept across restarts.

Delivery is at-least-once; the journal makes execution exactly-once: a task whose id is
recorded as finished is acknowledged again with its recorded outcome, never run again.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

KEEP = 2000  # finished tasks remembered; a task older than that is long cleared from the broker


class Journal:
    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}
        self._lines = 0
        if os.path.exists(path):
            with open(path) as fh:
                for line in fh:
                    try:
                        entry = json.loads(line)
                        self._entries[entry["id"]] = entry
                        self._lines += 1
                    except (ValueError, KeyError, TypeError):
                        continue  # a torn last line after a crash
        self._fh = open(path, "a")

    def get(self, task_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._entries.get(task_id)

    def record(self, task_id: str, state: str, reason: str = "", result: dict[str, Any] | None = None) -> None:
        entry = {"id": task_id, "state": state, "reason": reason, "result": result, "at": time.time()}
        with self._lock:
            self._entries[task_id] = entry
            self._fh.write(json.dumps(entry) + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._lines += 1
            if self._lines > 2 * KEEP:
                self._compact()

    def _compact(self) -> None:
        keep = sorted(self._entries.values(), key=lambda e: e["at"])[-KEEP:]
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

    def close(self) -> None:
        with self._lock:
            self._fh.close()
