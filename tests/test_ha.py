"""Two control servers on one PostgreSQL and one Mosquitto form one control plane (docs/ha.md).

The leader is killed (-9) in the middle of a volume create, then (after it came back as the
follower) the new leader in the middle of a volume start: the survivor takes over within a
bounded time, every task ends final and ran once on its agent, the survivor's event stream
has every event the database has, in order, and the CLI given both servers keeps working.
"""

from __future__ import annotations

import collections
import functools
import json
import re
import shutil
import threading
import time

import httpx
import psycopg2

from control.client import Client
from control.client.models import Event
from control.services.eventfeed import NOTIFY_CHANNEL, EventListener
from control.services.leader import Leadership
from tests.helpers import Server, wait_until

NODES = ("n1", "n2", "n3")
TAKEOVER_LIMIT = 10.0  # seconds from the leader's death to the survivor leading (1 s checks, a connect)


def leads(server: Server) -> bool:
    return bool(httpx.get(f"{server.url}/healthz", timeout=2).json()["leader"])


def takeover(survivor: Server, killed_at: float, what: str) -> float:
    wait_until(lambda: leads(survivor), timeout=TAKEOVER_LIMIT, interval=0.05, what=f"{what}: the survivor leads")
    seconds = time.monotonic() - killed_at
    print(f"\n{what}: the other server leads {seconds:.2f}s after the leader's kill -9")
    return seconds


class Stream:
    """One server's event stream from the first event, read in a thread: the ids it delivered."""

    def __init__(self, url: str, token: str) -> None:
        self.client = Client(url, token=token)
        self.events = self.client.events(after=0, heartbeat=1.0)
        self.ids: list[int] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for item in self.events:
            if isinstance(item, Event):
                self.ids.append(item.id)

    def close(self) -> None:
        self.events.close()
        self.thread.join(timeout=5)
        self.client.close()


def stored_ids(db: str) -> list[int]:
    with psycopg2.connect(db) as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM event WHERE kind <> 'audit' ORDER BY id")  # audit: only to streams asking
        return [row[0] for row in cur.fetchall()]


def check_stream(stream: Stream, db: str) -> None:
    """The stream delivered exactly the stored events, in order (none missed, ids continuing)."""
    wait_until(lambda: stream.ids and stream.ids[-1] >= stored_ids(db)[-1], what="the stream caught up")
    stored = stored_ids(db)
    got = stream.ids
    assert got == sorted(set(got)), "the stream delivered ids out of order or twice"
    assert got == [i for i in stored if i <= got[-1]], "the stream missed stored events"


def test_two_servers_take_over_from_each_other(postgres_url, make_stack):
    started = time.monotonic()
    st = make_stack(broker="mosquitto", db=postgres_url)
    a = st.server
    a.env["GLUSTERCTL_RECONCILE_INTERVAL"] = "2"
    a.start()
    (st.tmp / "b").mkdir()
    b = Server(st.tmp / "b", broker="mosquitto", db=postgres_url, mqtt_root=a.mqtt_root, extra=a.argv[-2:])
    b.env["GLUSTERCTL_RECONCILE_INTERVAL"] = "2"
    st.procs.append(b)
    # the servers of one control plane sign the agents' metadata with one key: without it, refused;
    # and a second server with the embedded broker (agents could not reach it) is refused
    (st.tmp / "c").mkdir()
    c = Server(st.tmp / "c", db=postgres_url, mqtt_root=a.mqtt_root)
    st.procs.append(c)
    c.data_dir.mkdir()
    shutil.copy(a.data_dir / "metadata.key", c.data_dir / "metadata.key")
    b.start(wait=False)
    c.start(wait=False)
    assert b.wait_exit(30) != 0 and "copy DATA_DIR/metadata.key" in b.log()
    assert c.wait_exit(30) != 0 and "several servers need an external broker" in c.log()
    shutil.copy(a.data_dir / "metadata.key", b.data_dir / "metadata.key")
    b.start()
    assert leads(a) and not leads(b)

    # the CLI knows both servers; the login keeps the list
    st.cli.env["GLUSTERCTL_URL"] = f"{a.url},{b.url}"
    st.cli.bootstrap()
    saved = json.loads((st.tmp / "cli-config" / "token.json").read_text())
    assert saved["url"] == f"{a.url},{b.url}"
    for node in NODES:
        st.agent(node)
        (st.tmp / "bricks" / node).mkdir(parents=True)
    wait_until(lambda: all(st.node_state(n) == "Online" for n in NODES), what="three nodes Online")
    token = st.cli.token
    stream_b = Stream(b.url, token)

    # ---- the leader dies in the middle of a volume create (n3 is away: the create waits for it) ----
    n3 = next(p for p in st.procs if getattr(p, "node", None) == "n3")
    n3.stop()
    wait_until(lambda: st.node_state("n3") == "Unreachable", what="n3 Unreachable")
    bricks = [f"{n}:{st.tmp / 'bricks' / n / 'gv'}" for n in NODES]
    st.cli.run("volume", "create", "gv", "--replica", "3", *bricks)
    wait_until(
        lambda: len([t for t in st.cli.json("task", "list", "--state", "DONE") if t["kind"] == "volume.create"]) == 2,
        what="n1 and n2 created their bricks",
    )
    assert st.cli.json("volume", "info", "gv")["state"] == "Creating"
    killed = time.monotonic()
    a.kill9()
    first = takeover(b, killed, "kill -9 during volume create")
    assert "\nglusterctl_leader 1.0\n" in httpx.get(f"{b.url}/metrics", timeout=10).text
    n3.start()
    # the CLI's first server is dead: it goes on with the second
    wait_until(lambda: st.cli.json("volume", "info", "gv")["state"] == "Started", timeout=40, what="gv Started")
    wait_until(
        lambda: all(x["state"] == "Online" for x in st.cli.json("volume", "status", "gv")["bricks"]),
        timeout=30,
        what="bricks Online",
    )
    check_stream(stream_b, postgres_url)

    # ---- the old leader comes back as the follower; the new leader dies in the middle of a volume start ----
    st.cli.run("volume", "stop", "gv", "--wait")
    a.start()
    assert leads(b) and not leads(a)
    stream_a = Stream(a.url, token)
    st.cli.run("volume", "start", "gv")  # served by a, the follower: it publishes the tasks
    killed = time.monotonic()
    b.kill9()
    stream_b.close()
    second = takeover(a, killed, "kill -9 during volume start")
    wait_until(lambda: st.cli.json("volume", "info", "gv")["state"] == "Started", timeout=40, what="gv Started")
    wait_until(
        lambda: all(x["state"] == "Online" for x in st.cli.json("volume", "status", "gv")["bricks"]),
        timeout=30,
        what="bricks Online after the start",
    )

    # every task is final, and each ran once on its node (the agents' journals and logs)
    tasks = st.cli.json("task", "list", "--limit", "1000")
    assert tasks and all(t["state"] == "DONE" for t in tasks), [(t["kind"], t["node"], t["state"]) for t in tasks]
    for node in NODES:
        agent = next(p for p in st.procs if getattr(p, "node", None) == node)
        journal = (agent.state_dir / "journal.jsonl").read_text().splitlines()
        runs = collections.Counter(e["id"] for e in map(json.loads, journal) if e["state"] == "RUNNING")
        executed = collections.Counter(re.findall(r"executing task ([0-9a-f]{32})", agent.log()))
        assert runs and max(runs.values()) == 1, f"{node} ran a task twice: {runs}"
        assert max(executed.values()) == 1, f"{node} executed a task twice: {executed}"
        mine = {t["id"] for t in tasks if t["node"] == node}
        assert mine <= set(runs), f"{node}: tasks without a journal entry: {mine - set(runs)}"
    check_stream(stream_a, postgres_url)
    stream_a.close()
    assert first < TAKEOVER_LIMIT and second < TAKEOVER_LIMIT
    print(f"test_ha: {time.monotonic() - started:.1f}s")


def test_a_second_server_on_one_sqlite_data_dir_is_refused(make_stack):
    stack = make_stack().start(bootstrap=False)
    again = Server(stack.tmp, extra=["--data-dir", str(stack.server.data_dir)])
    again.log_path = stack.tmp / "second.log"
    again.start(wait=False)
    assert again.wait_exit(20) != 0
    assert "another glusterctl server" in again.log() and "docs/ha.md" in again.log()


def test_leadership_follows_the_lock_session_and_the_broker_link(postgres_url):
    """Two elections on one database: one leads; its session's end or a lost broker link hands over."""
    connect = functools.partial(psycopg2.connect, postgres_url)
    first, second = Leadership(connect, "r1", interval=0.2), Leadership(connect, "r1", interval=0.2)
    other_root = Leadership(connect, "r2", interval=0.2)
    try:
        assert first.try_once() and not second.try_once() and other_root.try_once()
        first.start()
        second.start()
        # the leader's session ends (as when its process is killed): the other takes over
        with psycopg2.connect(postgres_url) as admin, admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = %s",
                (first._conn.get_backend_pid(),),
            )
        wait_until(second.is_leader, timeout=3, interval=0.05, what="the second leads")
        wait_until(lambda: not first.is_leader(), timeout=3, interval=0.05, what="the first stepped down")
        # a leader without its broker link gives the lock up after the grace; the connected one takes it
        second.grace = 0.3
        second.eligible = lambda: False
        wait_until(first.is_leader, timeout=3, interval=0.05, what="the first leads again")
        assert not second.is_leader()
    finally:
        for election in (first, second, other_root):
            election.stop()


def test_a_stream_wakes_for_events_another_server_committed(postgres_url, tmp_path):
    """EventListener: an event another server records wakes this server at its commit, not before (the
    insert's trigger notifies: migration 16)."""
    from control.services import events
    from control.store import open_database

    database = open_database(postgres_url, str(tmp_path))
    woke = threading.Event()
    listener = EventListener(functools.partial(psycopg2.connect, postgres_url), woke.set)
    listener.start()
    try:
        wait_until(woke.is_set, timeout=5, interval=0.02, what="the first wake-up once listening")
        woke.clear()
        with database.atomic():
            events.record("cluster.created", cluster="default", subject="default")
            assert not woke.wait(0.3), "woken before the commit"
        started = time.monotonic()
        assert woke.wait(2), "no wake-up after the commit"
        print(f"\nanother server's commit woke this server's streams after {time.monotonic() - started:.3f}s")
        woke.clear()
        with psycopg2.connect(postgres_url) as other, other.cursor() as cur:  # a NOTIFY of its own still counts
            cur.execute(f"NOTIFY {NOTIFY_CHANNEL}")
        assert woke.wait(2), "no wake-up for a plain NOTIFY"
    finally:
        listener.stop()
        database.close()
