"""systemd's notify protocol (sd_notify): READY=1 when really ready, WATCHDOG=1 while healthy.

No-ops when the process was not started by systemd with Type=notify (no NOTIFY_SOCKET).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def notify(message: str) -> bool:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(path)
            sock.sendall(message.encode())
        return True
    except OSError as exc:
        log.warning("sd_notify %r failed: %s", message, exc)
        return False


def watchdog_interval() -> float | None:
    """Half of systemd's WatchdogSec, or None when no watchdog is set for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None


_watchdog_started = threading.Event()


def ready(status: str, healthy: Callable[[], bool]) -> None:
    """Send READY=1 now, then WATCHDOG=1 every half watchdog period while ``healthy()``.

    Safe to call again (an agent calls it after each re-registration): one watchdog thread only.
    """
    notify(f"READY=1\nSTATUS={status}")
    interval = watchdog_interval()
    if interval is None or _watchdog_started.is_set():
        return
    _watchdog_started.set()

    def loop() -> None:
        stop = threading.Event()
        while not stop.wait(interval):
            try:
                if healthy():
                    notify("WATCHDOG=1")
            except Exception:
                log.exception("watchdog health check failed")

    threading.Thread(target=loop, name="sd-watchdog", daemon=True).start()
