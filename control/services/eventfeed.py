"""The event feed behind the live stream: reading Event rows in order, waking streams, pruning.

Every stream re-reads the Event table by id at its own pace; nothing is queued per client. The
thread that records an event only schedules wake-ups (``WakeHub``) and counts towards the next
prune (``Pruner``), never waits. The server wires both to the recorder at start
(``EventFeed.start``) and unwires them at stop.

Id gaps (``GapWatch``): a stream delivers ids in order, so when it reads id N+2 but not N+1 it
must tell "N+1 is not committed yet" from "N+1 will never exist" (its transaction rolled back)
before moving past it.

- SQLite serialises writers: ids are taken and committed in one write transaction at a time, so
  a row is visible by the time any later id is. A gap is a rollback; the stream waits
  ``wait_seconds`` (for a wake-up that raced the commit) and then skips it, as it always did.
- PostgreSQL hands out ids from a sequence outside the transaction that uses them: the
  transaction holding N+1 may commit long after N+2 did (a slow handler, a lock wait). Any
  transaction that took N+1 started before the stream first saw the gap (it took N+1 before
  N+2 was taken, and N+2 had committed when the stream read it). So the stream notes the
  database's clock when it first sees the gap and skips the gap only after a check finds no
  other open transaction of this database and role (``pg_stat_activity``: ``xact_start`` at or
  before that moment) *and* a read after that check still misses the ids: whatever held them has
  then committed (and that read returned it) or rolled back. A transaction left open for good
  holds the stream back (a warning names its backend) rather than losing an event. Event
  writers are the control service's own connections (one role), whose rows in
  ``pg_stat_activity`` every connection of that role may read.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import peewee as pw

from control.services import events
from control.store.db import delete_where
from control.store.models import Event

log = logging.getLogger(__name__)

GAP_WARN_SECONDS = 60.0  # a gap held open this long by a transaction gets a warning (once)

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


def _postgres() -> bool:
    database: Any = Event._meta.database
    return isinstance(getattr(database, "obj", database), pw.PostgresqlDatabase)


def db_clock() -> Any:
    """The database server's clock (PostgreSQL), to compare with ``pg_stat_activity.xact_start``."""
    return Event._meta.database.execute_sql("SELECT clock_timestamp()").fetchone()[0]


def open_transactions_since(moment: Any) -> list[int]:
    """Backend pids of other open transactions of this database and role that began at or before ``moment``."""
    cursor = Event._meta.database.execute_sql(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND usename = current_user "
        "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL AND xact_start <= %s ORDER BY pid",
        (moment,),
    )
    return [int(row[0]) for row in cursor.fetchall()]


class GapWatch:
    """Decides, for one stream, when an id gap may be skipped (see the module docstring).

    ``may_skip`` blocks on the database: call it from a worker thread. It returns True only once
    the ids can no longer appear; the caller re-reads until then and delivers them if they do.
    """

    def __init__(self, wait_seconds: float, postgres: bool | None = None) -> None:
        self.wait_seconds = wait_seconds
        self.postgres = _postgres() if postgres is None else postgres
        self.first_missing: int | None = None
        self._since = 0.0  # monotonic, when the stream first saw this gap
        self._since_db: Any = None  # the database's clock then (PostgreSQL)
        self._settled = False  # a check found no transaction that could hold the ids
        self._warned = False

    def may_skip(self, first_missing: int, last_missing: int, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if first_missing != self.first_missing:
            self.first_missing, self._since, self._settled, self._warned = first_missing, now, False, False
            self._since_db = db_clock() if self.postgres else None
            return False
        if not self.postgres:
            return now - self._since >= self.wait_seconds
        if self._settled:
            return True  # the read after the check still missed the ids: rolled back
        holders = open_transactions_since(self._since_db)
        if not holders:
            self._settled = True  # skip only if the next read (after this check) misses them too
        elif now - self._since >= GAP_WARN_SECONDS and not self._warned:
            self._warned = True
            log.warning(
                "event ids %d..%d are held back for %.0f s by open transactions (backend pids %s): "
                "event streams wait for them to commit or roll back",
                first_missing,
                last_missing,
                now - self._since,
                ", ".join(map(str, holders)),
            )
        return False

    def clear(self) -> None:
        self.first_missing = None

    @property
    def waiting(self) -> bool:
        return self.first_missing is not None


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
    """Counts recorded events and prunes in its own thread, never in the recording one (on the leader only,
    when several servers share the database: ``leads``)."""

    def __init__(self, backlog: int = DEFAULT_BACKLOG, leads: Callable[[], bool] = lambda: True) -> None:
        self.leads = leads
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
            if not self.leads():
                continue
            try:
                prune(self.backlog)
            except Exception:  # the database may be briefly locked
                log.exception("pruning events failed")


class EventFeed:
    """The hub and the pruner, wired to the event recorder between ``start`` and ``stop``."""

    def __init__(self, backlog: int = DEFAULT_BACKLOG, leads: Callable[[], bool] = lambda: True) -> None:
        self.hub = WakeHub()
        self.pruner = Pruner(backlog, leads)
        self._unsubscribe: Callable[[], None] | None = None

    def prune(self) -> int:
        """Prune now (the leader's periodic pass: other servers' events are not counted here)."""
        return prune(self.pruner.backlog)

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


# ---- other servers' events (PostgreSQL LISTEN/NOTIFY) ------------------------------------------------
NOTIFY_CHANNEL = "glusterctl_events"
LISTEN_RETRY_SECONDS = 2.0


class EventListener:
    """Wakes this server's streams when another server (sharing the PostgreSQL database) records events.

    Every event's transaction sends ``NOTIFY glusterctl_events`` (``events.record``), delivered at its
    commit; a dedicated connection LISTENs and calls ``notify``. Streams also poll, so a lost
    connection only delays them until it is back (retried every ``LISTEN_RETRY_SECONDS``).
    ``connect`` None (SQLite: one server): nothing to listen to.
    """

    def __init__(self, connect: Callable[[], Any] | None, notify: Callable[[], None]) -> None:
        self._connect = connect
        self._notify = notify
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._connect is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="event-listener", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_SECONDS)

    def _run(self) -> None:
        import select

        import psycopg2

        assert self._connect is not None
        while not self._stop.is_set():
            conn: Any = None
            try:
                conn = self._connect()
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(f"LISTEN {NOTIFY_CHANNEL}")
                self._notify()  # events recorded while not listening: the streams read them now
                while not self._stop.is_set():
                    ready, _, _ = select.select([conn], [], [], 0.5)
                    if not ready:
                        continue
                    conn.poll()
                    if conn.notifies:
                        conn.notifies.clear()
                        self._notify()
            except (psycopg2.Error, OSError) as exc:
                log.warning(
                    "listening for other servers' events failed (retrying in %.0fs): %s",
                    LISTEN_RETRY_SECONDS,
                    " ".join(str(exc).split())[:200],
                )
            finally:
                if conn is not None:
                    try:
                        conn.close()
                    except psycopg2.Error:
                        pass
            self._stop.wait(LISTEN_RETRY_SECONDS)
