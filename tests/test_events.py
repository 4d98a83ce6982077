"""GET /api/v1/events: filters, resume across a server restart, reset after pruning, slow clients."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from pathlib import Path

import httpx

from control.client import parse_sse
from tests.helpers import wait_until

SLOW_CLIENT_EVENTS = 20000


def db_path(stack) -> Path:
    return stack.server.data_dir / "glusterctl.db"


def insert_events(path: Path, rows: list[tuple[str, str, str, dict]]) -> None:
    """Write Event rows straight into the server's SQLite (another process: the stream polls them)."""
    con = sqlite3.connect(path, timeout=30)
    with con:
        con.executemany(
            "INSERT INTO event (at, cluster, kind, subject, data) VALUES (?, ?, ?, ?, ?)",
            [(time.time(), c, k, s, json.dumps(d)) for c, k, s, d in rows],
        )
    con.close()


def stored_ids(path: Path, after: int = 0, audit: bool = False) -> list[int]:
    """The stored event ids; without ``audit`` not those of audit events (streams send them only on request)."""
    con = sqlite3.connect(path, timeout=30)
    where = "id > ?" if audit else "id > ? AND kind != 'audit'"
    try:
        return [r[0] for r in con.execute(f"SELECT id FROM event WHERE {where} ORDER BY id", (after,))]
    finally:
        con.close()


class Reader:
    """Reads one event stream in a thread and keeps everything it got."""

    def __init__(self, url: str, token: str, params: dict | None = None, last_event_id: int | None = None) -> None:
        self.messages: list[tuple[str, dict | None, str | None]] = []
        self.error: Exception | None = None
        headers = {"Authorization": f"Bearer {token}"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self._client = httpx.Client(timeout=httpx.Timeout(10, read=30))
        self._args = (f"{url}/api/v1/events", {"heartbeat": 1, **(params or {})}, headers)
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        url, params, headers = self._args
        try:
            with self._client.stream("GET", url, params=params, headers=headers) as resp:
                assert resp.status_code == 200, resp.read()
                assert resp.headers["content-type"].startswith("text/event-stream")
                for event, data, event_id in parse_sse(resp.iter_lines()):
                    self.messages.append((event, json.loads(data) if data else None, event_id))
                    if self._stop:
                        return
        except Exception as exc:  # recorded; the test asserts on it where it matters
            self.error = exc

    def events(self) -> list[dict]:
        return [data for event, data, _ in list(self.messages) if event == "message"]

    def kinds(self, name: str) -> list[dict]:
        return [data for event, data, _ in list(self.messages) if event == name]

    def close(self) -> None:
        self._stop = True
        self._client.close()
        self._thread.join(timeout=5)


def test_filters_and_auth(stack):
    url, token = stack.server.url, stack.cli.token
    assert httpx.get(f"{url}/api/v1/events", timeout=5).status_code == 401
    everything = Reader(url, token, {"after": 0})
    clusters_a = Reader(url, token, {"after": 0, "cluster": "alpha"})
    users_only = Reader(url, token, {"after": 0, "kind": "user."})
    try:
        wait_until(
            lambda: everything.kinds("hello") and clusters_a.kinds("hello") and users_only.kinds("hello"),
            what="three streams connected",
        )
        stack.cli.run("cluster", "add", "alpha")
        stack.cli.run("cluster", "add", "beta")
        stack.cli.run("user", "create", "carol", "--password-stdin", input="carols-password\n")
        wait_until(
            lambda: any(e["kind"] == "user.created" and e["subject"] == "carol" for e in everything.events()),
            what="the unfiltered stream to see carol",
        )
        wait_until(lambda: len(users_only.events()) >= 2, what="user events")
        ids = [e["id"] for e in everything.events()]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert ids == stored_ids(db_path(stack))
        assert {e["kind"] for e in users_only.events()} == {"user.created"}
        wait_until(lambda: clusters_a.events(), what="alpha's event")
        assert [(e["kind"], e["subject"]) for e in clusters_a.events()] == [("cluster.created", "alpha")]
        # heartbeats carry the id of events a filter dropped, so a resume does not fall behind
        wait_until(
            lambda: any(eid and int(eid) >= ids[-1] for ev, _, eid in clusters_a.messages if ev == ""),
            timeout=5,
            what="a heartbeat with the newest id",
        )
    finally:
        for reader in (everything, clusters_a, users_only):
            reader.close()
    bad = httpx.get(
        f"{url}/api/v1/events", headers={"Authorization": f"Bearer {token}", "Last-Event-ID": "x"}, timeout=5
    )
    assert bad.status_code == 422
    doc = httpx.get(f"{url}/openapi.json", timeout=5).json()["paths"]["/api/v1/events"]["get"]
    assert "Last-Event-ID" in doc["description"] and "reset" in doc["description"]


def test_resume_after_server_restart_loses_nothing(stack):
    url = stack.server.url
    reader = Reader(url, stack.cli.token, {"after": 0})
    try:
        stack.cli.run("cluster", "add", "before")
        wait_until(lambda: any(e["subject"] == "before" for e in reader.events()), what="first event")
        seen = reader.events()[-1]["id"]
    finally:
        reader.close()
    # events recorded while the client is away, then a restart, then more
    stack.cli.run("cluster", "add", "away1")
    stack.agent("node1")
    wait_until(lambda: stack.node_state("node1") == "Online", what="node1 Online")
    stack.server.stop()
    stack.server.start()
    stack.cli.run("cluster", "add", "after")
    expected = stored_ids(db_path(stack), seen)
    resumed = Reader(url, stack.cli.token, last_event_id=seen)
    try:
        wait_until(lambda: any(e["subject"] == "after" for e in resumed.events()), what="the resumed stream")
        got = [e["id"] for e in resumed.events()]
        assert got[: len(expected)] == expected, (got, expected)
        assert not resumed.kinds("reset")
        subjects = [e["subject"] for e in resumed.events()]
        assert subjects.index("away1") < subjects.index("node1") < subjects.index("after")
        # ?after= works the same way
        again = Reader(url, stack.cli.token, {"after": seen})
        try:
            wait_until(lambda: len(again.events()) >= len(expected), what="?after= resume")
            assert [e["id"] for e in again.events()][: len(expected)] == expected
        finally:
            again.close()
    finally:
        resumed.close()


def test_reset_when_the_backlog_was_pruned(make_stack):
    st = make_stack()
    st.server.env["GLUSTERCTL_EVENT_BACKLOG"] = "10"
    st.start()
    for i in range(25):
        st.cli.api("POST", "/api/v1/clusters", json={"name": f"c{i}"}).raise_for_status()
    wait_until(lambda: len(stored_ids(db_path(st), audit=True)) == 10, what="old events pruned down to the backlog")
    reader = Reader(st.server.url, st.cli.token, last_event_id=1)
    try:
        wait_until(lambda: reader.events(), what="events after the reset")
        first = reader.messages[0]
        assert first[0] == "reset" and first[1]["after"] == 1 and first[1]["oldest_id"] > 2
        kept = stored_ids(db_path(st))
        wait_until(lambda: [e["id"] for e in reader.events()][: len(kept)] == kept, what="the whole kept backlog")
    finally:
        reader.close()


def test_slow_client_does_not_slow_others(make_stack):
    st = make_stack()
    st.server.env["GLUSTERCTL_EVENT_BACKLOG"] = str(SLOW_CLIENT_EVENTS * 2)
    st.start()
    url, token = st.server.url, st.cli.token
    # a client that connects and never reads, with a tiny receive window
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", st.server.http_port))
    stalled.sendall(
        f"GET /api/v1/events?heartbeat=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    fast = Reader(url, token)
    try:
        wait_until(lambda: fast.kinds("hello"), what="fast reader connected")
        start_id = fast.kinds("hello")[0]["last_id"]
        stalled.settimeout(10)
        assert b"event: hello" in stalled.recv(4096)  # its stream runs; from here on it never reads
        payload = {"blob": "x" * 1000}
        started = time.monotonic()
        insert_events(db_path(st), [("default", "test.burst", f"s{i}", payload) for i in range(SLOW_CLIENT_EVENTS)])
        # the REST API stays quick while the stalled client's stream is blocked
        worst = 0.0
        for _ in range(10):
            t0 = time.monotonic()
            assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
            worst = max(worst, time.monotonic() - t0)
            time.sleep(0.05)
        wait_until(
            lambda: len(fast.events()) >= SLOW_CLIENT_EVENTS,
            timeout=60,
            interval=0.2,
            what=f"{SLOW_CLIENT_EVENTS} events at the fast reader",
        )
        elapsed = time.monotonic() - started
        ids = [e["id"] for e in fast.events()]
        assert ids == list(range(start_id + 1, start_id + 1 + SLOW_CLIENT_EVENTS))
        assert worst < 2.0, f"/healthz took {worst:.2f}s while a client stalled"
        assert elapsed < 60, f"the fast reader needed {elapsed:.1f}s for {SLOW_CLIENT_EVENTS} events"
        # the stalled client got only what fits its window: the server did not buffer 20 MB for it
        stalled.setblocking(False)
        received = 0
        try:
            while chunk := stalled.recv(1 << 20):
                received += len(chunk)
        except BlockingIOError:
            pass
        assert received < SLOW_CLIENT_EVENTS * 1000 / 2
        # and a stalled stream does not hold up a stopping server
        t0 = time.monotonic()
        st.server.stop(timeout=8)
        assert time.monotonic() - t0 < 8, "the server waited for the stalled stream"
    finally:
        stalled.close()
        fast.close()


GAP_HOLD_SECONDS = 5.0  # longer than events.GAP_WAIT_SECONDS (3 s): the old stream skipped the held id by then


def test_postgres_event_committed_late_is_delivered_in_order(make_stack, postgres_url):
    """A transaction that took an event id commits after later events did: the stream holds the
    later events back and delivers the held one first; an id whose transaction rolled back is skipped."""
    import psycopg2

    st = make_stack(db=postgres_url).start()
    reader = Reader(st.server.url, st.cli.token, {"after": 0})
    held = psycopg2.connect(postgres_url)  # the same role as the server: its transaction is one a writer could hold
    try:
        st.cli.run("cluster", "add", "before")
        wait_until(lambda: any(e["subject"] == "before" for e in reader.events()), what="the stream caught up")
        with held.cursor() as cur:
            cur.execute(
                "INSERT INTO event (at, cluster, kind, subject, data) VALUES (%s, '', 'test.held', 'held', '{}') "
                "RETURNING id",
                (time.time(),),
            )
            held_id = cur.fetchone()[0]
        for name in ("later1", "later2"):  # committed by the server while the held transaction is open
            st.cli.run("cluster", "add", name)
        deadline = time.monotonic() + GAP_HOLD_SECONDS
        while time.monotonic() < deadline:  # "must not happen" for longer than the old gap wait
            assert not any(e["id"] >= held_id for e in reader.events()), reader.events()
            time.sleep(0.2)
        held.commit()
        wait_until(lambda: any(e["subject"] == "later2" for e in reader.events()), timeout=15, what="the held events")
        ids = [e["id"] for e in reader.events()]
        assert ids == sorted(ids) and len(ids) == len(set(ids))
        subjects = [e["subject"] for e in reader.events()]
        assert subjects.index("before") < subjects.index("held") < subjects.index("later1") < subjects.index("later2")

        with held.cursor() as cur:  # a rolled-back id never appears: the stream moves past it
            cur.execute(
                "INSERT INTO event (at, cluster, kind, subject, data) VALUES (%s, '', 'test.gone', 'gone', '{}')",
                (time.time(),),
            )
        held.rollback()
        st.cli.run("cluster", "add", "after-rollback")
        wait_until(
            lambda: any(e["subject"] == "after-rollback" for e in reader.events()), timeout=15, what="past the gap"
        )
        assert not any(e["subject"] == "gone" for e in reader.events())
    finally:
        held.close()
        reader.close()


def test_sqlite_gap_is_skipped_after_the_wait():
    """SQLite serialises writers: a gap is a rollback, skipped once GAP_WAIT_SECONDS passed (a new gap waits again)."""
    from control.services.eventfeed import GapWatch

    gaps = GapWatch(3.0, postgres=False)
    assert not gaps.may_skip(5, 5, now=100.0) and gaps.waiting
    assert not gaps.may_skip(5, 5, now=102.9)
    assert gaps.may_skip(5, 5, now=103.0)
    assert not gaps.may_skip(9, 9, now=103.5), "another gap starts its own wait"
    gaps.clear()
    assert not gaps.waiting
