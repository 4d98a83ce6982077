"""The event feed behind the live stream: reading Event rows in order, waking streams, pruning.

Every stream re-reads the Event table by id at its own pace; nothing is queued per client. The
thread that records an event only schedules wake-ups (``WakeHub``) and counts towards the next
prune (``Pruner``), never waits. The server wires both to the recorder at start
(``EventFeed.start``) and unwires them at stop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import peewee as pw

from control.services import events
from control.store.db import delete_where
from control.store.models import Event

log = logging.getLogger(__name__)

# Event rows kept: older ones are pruned (a client that asks for them gets a `reset` first).
DEFAULT_BACKLOG = 10000
MIN_BACKLOG = 10
PRUNE_DELAY_SECONDS = 0.5  # let the recording transaction commit before pruning
STOP_TIMEOUT_SECONDS = 5.0


# ---- reading ----------------------------------------------------------------------------------
class FeedEvent(NamedTuple):
    id: int
    at: float
    cluster: str
    kind: str
    subject: str
    data: dict[str, Any]


def bounds() -> tuple[int, int]:
    """(oldest id, newest id) of the stored events; (0, 0) when there are none."""
    row = Event.select(pw.fn.MIN(Event.id), pw.fn.MAX(Event.id)).tuples().first()
    return (row[0] or 0, row[1] or 0) if row else (0, 0)


def read_after(cursor: int, limit: int) -> list[FeedEvent]:
    """Up to ``limit`` events with ids above ``cursor``, oldest first."""
    query = (
        Event.select(Event.id, Event.at, Event.cluster, Event.kind, Event.subject, Event.data)
        .where(Event.id > cursor)
        .order_by(Event.id)
        .limit(limit)
    )
    return [FeedEvent(r.id, r.at, r.cluster, r.kind, r.subject, r.data) for r in query]


def kind_matches(kind: str, filters: list[str]) -> bool:
    """A filter matches its kind exactly or as a prefix: `task.` and `task` match every `task.*`."""
    if not filters:
        return True
    return any(kind == f or kind.startswith(f if f.endswith(".") else f + ".") for f in filters)


def prune(keep: int = DEFAULT_BACKLOG) -> int:
    """Delete all but the newest ``keep`` Event rows; returns how many were deleted.

    The newest row is never deleted, so SQLite's rowid-based ids keep increasing.
    """
    keep = max(1, keep)
    newest: int | None = Event.select(pw.fn.MAX(Event.id)).scalar()
    if not newest or newest <= keep:
        return 0
    deleted = delete_where(Event, Event.id <= newest - keep)
    if deleted:
        log.info("pruned %d events (kept ids above %d)", deleted, newest - keep)
    return deleted


# ---- wake-ups from the recording thread --------------------------------------------------------
class LoopWaker:
    """Wakes the streams of one event loop when an event is recorded (from any thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._wake = asyncio.Event()
        self._pending = False

    def notify_threadsafe(self) -> None:
        if self._pending:  # one scheduled wake-up covers a burst
            return
        self._pending = True
        try:
            self.loop.call_soon_threadsafe(self._fire)
        except RuntimeError:  # the loop is closed: the server is stopping
            self._pending = False

    def _fire(self) -> None:
        self._pending = False
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    async def wait(self, timeout: float) -> bool:
        """Wait for the next wake-up; False after ``timeout`` seconds without one."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
            return True
        except TimeoutError:
            return False


class WakeHub:
    """One ``LoopWaker`` per event loop that streams from; ``notify`` wakes them all."""

    def __init__(self) -> None:
        self._wakers: dict[asyncio.AbstractEventLoop, LoopWaker] = {}
        self._lock = threading.Lock()

    def waker(self) -> LoopWaker:
        """The waker of the running event loop."""
        loop = asyncio.get_running_loop()
        with self._lock:
            for old in [lp for lp in self._wakers if lp.is_closed()]:
                del self._wakers[old]
            waker = self._wakers.get(loop)
            if waker is None:
                waker = self._wakers[loop] = LoopWaker(loop)
            return waker

    def notify(self) -> None:
        with self._lock:
            wakers = list(self._wakers.values())
        for waker in wakers:
            waker.notify_threadsafe()


# ---- pruning: keep the newest rows -----------------------------------------------------------
class Pruner:
    """Counts recorded events and prunes in its own thread, never in the recording one."""

    def __init__(self, backlog: int = DEFAULT_BACKLOG) -> None:
        self.backlog = max(MIN_BACKLOG, backlog)
        self.prune_every = max(1, self.backlog // 10)  # recorded events between two prunes
        self._count = 0
        self._due = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def on_event(self) -> None:
        with self._lock:
            self._count += 1
            if self._count < self.prune_every or self._stop.is_set():
                return
            self._count = 0
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="event-pruner", daemon=True)
                self._thread.start()
        self._due.set()

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            thread = self._thread
        self._due.set()
        if thread is not None:
            thread.join(STOP_TIMEOUT_SECONDS)

    def _run(self) -> None:
        while True:
            self._due.wait()
            self._due.clear()
            if self._stop.wait(PRUNE_DELAY_SECONDS):
                return
            try:
                prune(self.backlog)
            except Exception:  # the database may be briefly locked
                log.exception("pruning events failed")


class EventFeed:
    """The hub and the pruner, wired to the event recorder between ``start`` and ``stop``."""

    def __init__(self, backlog: int = DEFAULT_BACKLOG) -> None:
        self.hub = WakeHub()
        self.pruner = Pruner(backlog)
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        if self._unsubscribe is None:
            self._unsubscribe = events.subscribe(self._on_event)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.pruner.stop()

    def _on_event(self, event: Event) -> None:
        # runs in the recording thread inside its transaction: schedule, never wait
        self.hub.notify()
        self.pruner.on_event()
