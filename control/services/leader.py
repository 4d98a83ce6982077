"""Which control server does the periodic work and handles the agents' messages (docs/ha.md).

Several ``glusterctl server`` processes may share one PostgreSQL database and one external
broker. Each serves REST and the event stream; exactly one of them, the leader, subscribes to
the agents' topics and runs the periodic work (silence sweep, reconciler passes, task
republishing, alert evaluation, monitoring and metadata publishing, event and audit pruning).

The leader is whoever holds a PostgreSQL session advisory lock, taken on a connection of its
own that does nothing else. The lock lives exactly as long as that session: a leader that is
killed (even ``kill -9``) closes its socket, PostgreSQL ends the session and the lock is free at
once; a leader that loses the database loses the lock with the session. Every ``interval``
seconds each server checks: the leader that its session still holds the lock (a failed or slow
check steps it down at once), the others whether the lock is free (the first to take it leads).
A takeover therefore takes at most about ``interval`` seconds plus one connection attempt.
A leader that stops checking without dying (frozen, cut off from the database) is ended by
PostgreSQL's ``idle_session_timeout`` on that session (``idle_timeout_ms``, PostgreSQL 14 and
later; older servers: TCP keepalives), which frees the lock.

On SQLite (one server by design) the single server always leads; ``DataDirLock`` refuses a
second server on the same data directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg2

log = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0  # seconds between two checks of the lock (the takeover bound, plus a connect)
INELIGIBLE_GRACE_SECONDS = 10.0  # a leader without its broker link gives up the lock after this long
CHECK_TIMEOUT_MS = 2000  # a check that takes longer steps the leader down
IDLE_TIMEOUT_SECONDS = 5.0  # the least idle_session_timeout of the lock's session
IDLE_TIMEOUT_CHECKS = 5  # ... and at least this many check intervals
LOCK_CLASS = 0x67637463  # the advisory lock's first key: "gctc"; the second comes from the topic root
LOCK_FILE = "server.lock"


class LeadershipError(Exception):
    """This server cannot run as configured (another one holds what it needs)."""


def lock_key(root: str) -> int:
    """The advisory lock's second key: one control plane (topic root) per lock in a database."""
    return int.from_bytes(hashlib.sha256(root.encode()).digest()[:4], "big", signed=True)


class Leadership:
    """Leader election over a PostgreSQL session advisory lock (or a fixed leader: ``connect`` None).

    ``on_gain`` callbacks run (in the election thread) when this server becomes the leader,
    ``on_lose`` ones when it stops being it; ``is_leader`` is cheap and thread-safe.
    """

    def __init__(
        self,
        connect: Callable[[], Any] | None,
        root: str,
        interval: float = CHECK_INTERVAL,
    ) -> None:
        self._connect = connect
        self.key = lock_key(root)
        self.interval = interval
        self._leader = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self.on_gain: list[Callable[[], object]] = []
        self.on_lose: list[Callable[[], object]] = []
        self.since = 0.0  # time.time() when this server last became the leader
        # whether this server can do the leader's work (its broker link is up): one that cannot does not
        # take the lock, and a leader that could not for ``grace`` seconds gives it up
        self.eligible: Callable[[], bool] = lambda: True
        self.grace = INELIGIBLE_GRACE_SECONDS
        self._ineligible_since: float | None = None
        if connect is None:
            self._leader.set()
            self.since = time.time()

    @property
    def elected(self) -> bool:
        """True when the leader is chosen by the database (several servers may run)."""
        return self._connect is not None

    def is_leader(self) -> bool:
        return self._leader.is_set()

    def try_once(self) -> bool:
        """One check now (the server's first, before it serves): True if this server leads."""
        if self._connect is not None:
            self._round()
        return self.is_leader()

    def start(self) -> None:
        if self._connect is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="leader-election", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Step down (the lock is released with the session) and stop checking."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._drop("the server stops")

    # ---- the election thread ------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._round()

    def _round(self) -> None:
        if not self.eligible():
            now = time.monotonic()
            if self._ineligible_since is None:
                self._ineligible_since = now
            if not self.is_leader():
                return  # another server, with a broker link, should lead
            if now - self._ineligible_since > self.grace:
                self._drop(f"its broker link has been down for {self.grace:.0f}s: another server may lead")
                return
        else:
            self._ineligible_since = None
        try:
            if self._conn is None:
                self._conn = self._open()
            with self._conn.cursor() as cur:
                if self.is_leader():
                    cur.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                        "AND granted AND classid = %s::oid AND objid = %s::oid AND objsubid = 2",
                        (LOCK_CLASS & 0xFFFFFFFF, self.key & 0xFFFFFFFF),
                    )
                    held = bool(cur.fetchone()[0])
                    if not held:
                        self._drop("its database session no longer holds the leader lock")
                    return
                cur.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, self.key))
                got = bool(cur.fetchone()[0])
        except (psycopg2.Error, OSError) as exc:
            self._drop(f"the leader lock's database connection failed: {' '.join(str(exc).split())[:200]}")
            return
        if got and not self._stop.is_set():
            self.since = time.time()
            self._leader.set()
            log.info("this server is now the leader (PostgreSQL advisory lock %d/%d)", LOCK_CLASS, self.key)
            for callback in list(self.on_gain):
                try:
                    callback()
                except Exception:
                    log.exception("taking over as the leader: %s failed", getattr(callback, "__qualname__", callback))

    def _open(self) -> Any:
        assert self._connect is not None
        conn = self._connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"SET statement_timeout = {CHECK_TIMEOUT_MS}")
            cur.execute("SET application_name = 'glusterctl leader lock'")
            # a leader that stops checking (frozen, cut off) loses its session, and the lock, this fast
            cur.execute("SELECT current_setting('server_version_num')::int")
            if int(cur.fetchone()[0]) >= 140000:
                cur.execute(f"SET idle_session_timeout = {self.idle_timeout_ms()}")
        return conn

    def idle_timeout_ms(self) -> int:
        """How long PostgreSQL keeps the session of a server that stopped checking (PostgreSQL 14 and later)."""
        return int(max(IDLE_TIMEOUT_SECONDS, IDLE_TIMEOUT_CHECKS * self.interval) * 1000)

    def _drop(self, why: str) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()  # ends the session: PostgreSQL releases the lock if it still held it
            except psycopg2.Error:
                pass
        if not self._leader.is_set() or self._connect is None:
            return
        self._leader.clear()
        log.warning("this server is no longer the leader: %s", why)
        for callback in list(self.on_lose):
            try:
                callback()
            except Exception:
                log.exception("stepping down: %s failed", getattr(callback, "__qualname__", callback))


def postgres_connector(database: Any) -> Callable[[], Any] | None:
    """A function opening a new psycopg2 connection like ``database``'s (None when it is not PostgreSQL)."""
    import peewee as pw

    db = getattr(database, "obj", database)
    if not isinstance(db, pw.PostgresqlDatabase):
        return None
    params = {
        **db.connect_params,
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
    }
    name = db.database

    def connect() -> Any:
        return psycopg2.connect(dbname=name, **params)

    return connect


class DataDirLock:
    """An exclusive ``flock`` on DATA_DIR/server.lock for as long as the server runs (SQLite, embedded broker)."""

    def __init__(self, data_dir: str) -> None:
        self.path = os.path.join(data_dir, LOCK_FILE)
        self._fd: int | None = None

    def acquire(self, why: str) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise LeadershipError(
                f"another glusterctl server (pid {holder}) is running on the data directory "
                f"{os.path.dirname(self.path)}: {why}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
