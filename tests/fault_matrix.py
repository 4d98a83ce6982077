"""The fault matrix: faults injected in the middle of real operations on three real agents (a
replica-3 volume create, which starts the volume, and an option change), and what must hold
afterwards.

Shared by tests/test_faults_matrix.py and bench/fault_matrix.py (which prints a table). Each
scenario gets a fresh stack (server, broker, database, three agents, brick folders; see
``environment``) and returns an ``Outcome``. Afterwards:

* every task is final and none ran twice (every agent log across its restarts names each task
  id at most once in "executing task");
* the volume is Started with every brick Online and the option change applied, or, when a task
  was interrupted by the fault (``INTERRUPTED``), failed with a way out that works (start again);
  a scenario that must fail (a brick on a full filesystem) fails with a reason and a fix, and the
  volume can be deleted;
* the three nodes are Online;
* the events a client saw on the stream across the fault (reconnecting with Last-Event-ID) are
  exactly the events table's rows of the window: none missing, none twice, and no task state
  recorded twice;
* the time from the fault to that state is the recovery time.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import PG_BIN, POSTGRES_DSN, port_open, private_postgres_cluster, unique, wait_until

NODES = ("n1", "n2", "n3")
SETTLE_TIMEOUT = 60.0
OPEN_STATES = ("QUEUED", "RUNNING", "STARTING", "STOPPING")
OPTION = ("performance.write-behind", "off")  # the option change every scenario makes
CLOCK_OFFSETS = {"n2": -600.0, "n3": 600.0}  # the clock-skew scenario's agents (agent/clock.py)


class Unavailable(Exception):
    """What a scenario needs is not on this machine (the message says what)."""


@dataclass
class Outcome:
    scenario: str
    expect: str = "Started"
    volume_state: str = ""
    tasks: int = 0
    failed: list[str] = field(default_factory=list)  # reasons of FAILED tasks
    executed_twice: list[str] = field(default_factory=list)
    nodes_not_online: list[str] = field(default_factory=list)
    events_seen: int = 0
    stream_reconnects: int = 0  # how often the stream was down (and resumed with Last-Event-ID)
    events_missing: list[int] = field(default_factory=list)
    events_twice: list[int] = field(default_factory=list)
    events_unknown: list[int] = field(default_factory=list)
    task_states_twice: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what a scenario's own checks found
    recovery_seconds: float = 0.0
    duration_seconds: float = 0.0
    retried: bool = False

    @property
    def events_ok(self) -> bool:
        return not (self.events_missing or self.events_twice or self.events_unknown or self.task_states_twice)

    @property
    def ok(self) -> bool:
        if self.expect == "Started":
            state_ok = self.volume_state == "Started" and all(r.startswith("INTERRUPTED") for r in self.failed)
        else:
            state_ok = self.volume_state == self.expect and bool(self.failed)
        return state_ok and not (self.executed_twice or self.nodes_not_online or self.problems) and self.events_ok


@dataclass(frozen=True)
class Scenario:
    """One fault: ``fault(st)`` runs during ``phase`` ("create": right after the create was asked;
    "start": once the volume is Starting; "option": right after the option change was asked),
    on the given database and broker, with ``before(st)`` run before the operation and ``check(st,
    outcome)`` after (it appends to ``outcome.problems``)."""

    fault: Callable[[Any], None]
    phase: str = "create"
    db: str = "sqlite"  # "sqlite", "postgres" (a database of its own on the shared server), "private-postgres"
    broker: str = "embedded"  # or "mosquitto": a private Mosquitto with the dynamic security plugin
    expect: str = "Started"  # or "CreateFailed" (then the volume is deleted afterwards)
    agent_env: dict[str, dict[str, str]] = field(default_factory=dict)
    data_dir: str = ""  # "tmpfs": the server's data dir on a small tmpfs of its own
    full_brick_fs: str = ""  # a node whose brick root is a full filesystem (a small loop device)
    before: Callable[[Any], None] | None = None
    check: Callable[[Any, Outcome], None] | None = None


@dataclass
class Resources:
    """What ``environment`` started for a scenario besides the stack (the faults use them)."""

    db_url: str | None = None
    pg_ctl: Callable[..., None] | None = None
    mosquitto: Any = None
    mounts: list[Path] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)  # what a scenario's hooks pass each other


def _agents(st) -> list[Any]:
    return [p for p in st.procs if getattr(p, "node", None) in NODES]


def _agent(st, node: str) -> Any:
    return next(a for a in _agents(st) if a.node == node)


def start_trio(st, agent_env: dict[str, dict[str, str]] | None = None) -> None:
    token = st.join_token()
    for node in NODES:
        agent = st.agent(node, token=token, start=False)
        agent.env.update((agent_env or {}).get(node, {}))
        agent.start()
        (st.tmp / "bricks" / node).mkdir(parents=True, exist_ok=True)
    wait_until(lambda: all(st.node_state(n) == "Online" for n in NODES), timeout=30, what="three nodes Online")


def _get(st, path: str, **params: Any) -> Any:
    answer = st.cli.api("GET", path, params=params)
    answer.raise_for_status()
    return answer.json()


def _tasks(st) -> list[dict[str, Any]]:
    return _get(st, "/api/v1/tasks", limit=500)


def _volume(st, name: str) -> dict[str, Any]:
    return _get(st, f"/api/v1/clusters/default/volumes/{name}")


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


def _option_applied(st, name: str) -> bool:
    if any(t["state"] in OPEN_STATES for t in _tasks(st)):
        return False
    return (_volume(st, name).get("options") or {}).get(OPTION[0]) == OPTION[1]


# ---- the event stream against the events table ------------------------------------------------
def _db_rows(st, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    if st.db:
        import psycopg2

        con = psycopg2.connect(st.db)
        try:
            with con.cursor() as cur:
                cur.execute(sql.replace("?", "%s"), args)
                return list(cur.fetchall())
        finally:
            con.close()
    lite = sqlite3.connect(st.server.data_dir / "glusterctl.db", timeout=30)
    try:
        return list(lite.execute(sql, args))
    finally:
        lite.close()


def stored_event_ids(st, after: int) -> list[int]:
    """The events table's ids after ``after``, without audit events (streams send those only on request)."""
    return [r[0] for r in _db_rows(st, "SELECT id FROM event WHERE id > ? AND kind != 'audit' ORDER BY id", (after,))]


def task_states_twice(st, after: int) -> list[str]:
    """Task state changes recorded more than once after event ``after`` ("TASK:STATE")."""
    rows = _db_rows(st, "SELECT subject, data FROM event WHERE id > ? AND kind = 'task.state'", (after,))
    counts = Counter(
        f"{subject}:{(json.loads(data) if isinstance(data, str) else data)['state']}" for subject, data in rows
    )
    return sorted(k for k, n in counts.items() if n > 1)


class EventWatch:
    """A client on the event stream from the start of a scenario, reconnecting with Last-Event-ID."""

    def __init__(self, st) -> None:
        from control.client.sync import Client

        self.st = st
        self.start_id = max([0, *(r[0] or 0 for r in _db_rows(st, "SELECT MAX(id) FROM event", ()))])
        self.seen: list[int] = []
        self.downs = 0
        self.stream = Client(st.server.url, st.cli.token).events(
            after=self.start_id, heartbeat=1.0, reconnect=(0.1, 0.2, 0.5)
        )
        self.thread = threading.Thread(target=self._read, name="event-watch", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        from control.client.models import Down, Event

        for item in self.stream:
            if isinstance(item, Event):
                self.seen.append(item.id)
            elif isinstance(item, Down):
                self.downs += 1

    def finish(self, outcome: Outcome) -> None:
        stored = stored_event_ids(self.st, self.start_id)
        if stored:
            try:
                wait_until(lambda: self.seen and self.seen[-1] >= stored[-1], 20, what="the stream caught up")
            except AssertionError as exc:
                outcome.problems.append(str(exc))
        self.stream.close()
        seen = [i for i in self.seen if not stored or i <= stored[-1]]
        outcome.events_seen = len(seen)
        outcome.stream_reconnects = self.downs
        outcome.events_missing = sorted(set(stored) - set(seen))
        outcome.events_unknown = sorted(set(seen) - set(stored))
        outcome.events_twice = sorted(i for i, n in Counter(seen).items() if n > 1)
        outcome.task_states_twice = task_states_twice(self.st, self.start_id)


# ---- one scenario --------------------------------------------------------------------------------
def run(st, scenario: str, spec: Scenario | Callable[[Any], None], name: str = "fm") -> Outcome:
    """Create a replica-3 volume and change an option, inject the fault in the scenario's phase,
    and check what follows."""
    if not isinstance(spec, Scenario):
        spec = Scenario(spec, phase="start" if scenario.endswith("(start)") else "create")
    began = time.monotonic()
    outcome = Outcome(scenario, expect=spec.expect)
    st.fm.state["volume"] = name
    since = time.time()  # this scenario's tasks (an environment may have run others before)
    watch = EventWatch(st)
    if spec.before:
        spec.before(st)
    bricks = [f"{n}:{st.tmp / 'bricks' / n / name}" for n in NODES]
    if spec.phase == "option":
        st.cli.run("volume", "create", name, "--replica", "3", *bricks, "--wait", timeout=90)
        st.cli.run("volume", "set", name, *OPTION)
    else:
        st.cli.run("volume", "create", name, "--replica", "3", *bricks)
    if spec.phase == "start":
        wait_until(
            lambda: _volume(st, name)["state"] in ("Starting", "Started", "StartFailed"),
            timeout=30,
            interval=0.02,
            what="volume Starting",
        )
    fault_at = time.monotonic()
    spec.fault(st)
    volume = wait_until(lambda: _settled(st, name), timeout=SETTLE_TIMEOUT, what=f"{scenario}: volume settled")
    if volume["state"].endswith("Failed") and spec.expect == "Started":  # interrupted: the way out must work
        outcome.retried = True
        st.cli.run("volume", "start", name, "--wait", timeout=90)
        volume = wait_until(lambda: _settled(st, name), timeout=SETTLE_TIMEOUT, what=f"{scenario}: started again")
    if spec.phase == "option":
        if not _option_applied(st, name):
            outcome.retried = outcome.retried or any(t["state"] == "FAILED" for t in _tasks(st))
            st.cli.run("volume", "set", name, *OPTION, "--wait", timeout=90)
        wait_until(lambda: _option_applied(st, name), SETTLE_TIMEOUT, what=f"{scenario}: option applied")
    outcome.recovery_seconds = time.monotonic() - fault_at
    outcome.volume_state = volume["state"]
    if spec.expect == "Started" and spec.phase != "option":  # a real operation after the fault
        st.cli.run("volume", "set", name, *OPTION, "--wait", timeout=90)
        wait_until(lambda: _option_applied(st, name), SETTLE_TIMEOUT, what=f"{scenario}: option applied")
    tasks = [t for t in _tasks(st) if t["created_at"] >= since]
    outcome.tasks = len(tasks)
    outcome.failed = [t.get("reason") or "" for t in tasks if t["state"] == "FAILED"]
    outcome.executed_twice = sorted(t for t, n in _executions(st).items() if n > 1)
    try:
        wait_until(lambda: all(st.node_state(n) == "Online" for n in NODES), 20, what="three nodes Online")
    except AssertionError:
        outcome.nodes_not_online = [n for n in NODES if st.node_state(n) != "Online"]
    server_log = st.server.log()
    dropped = server_log.count("error while handling message")
    if dropped:
        outcome.problems.append(f"the bridge dropped {dropped} messages it had acknowledged (see the server log)")
    left = server_log.count(": final-state hook failed\n")  # left for the reconciler's replay
    if left:
        outcome.problems.append(f"{left} final-state hooks failed (see the server log)")
    if spec.check:
        spec.check(st, outcome)
    watch.finish(outcome)
    outcome.duration_seconds = time.monotonic() - began
    return outcome


# ---- environments --------------------------------------------------------------------------------
def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise Unavailable(f"{what} needs root")


@contextlib.contextmanager
def _shared_postgres() -> Iterator[str]:
    """A database of its own on the shared PostgreSQL (as tests/conftest.py's postgres_url), dropped after."""
    import psycopg2

    if not port_open("127.0.0.1", 5432):
        raise Unavailable("PostgreSQL is not running on 127.0.0.1:5432")
    db = unique("gct_")
    admin = psycopg2.connect(POSTGRES_DSN)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{db}"')
        yield POSTGRES_DSN.rsplit("/", 1)[0] + f"/{db}"
    finally:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,))
            cur.execute(f'DROP DATABASE IF EXISTS "{db}"')
        admin.close()


@contextlib.contextmanager
def _mounted(path: Path, *mount_args: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    _sh("mount", *mount_args, str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=60)


def fill(path: Path) -> Path:
    """Fill the filesystem of ``path`` with one file, up to ENOSPC; returns the file."""
    filler = path / "filler"
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb", buffering=0) as fh:
        for size in (len(chunk), 4096, 512, 1):  # down to the last partial blocks
            try:
                while fh.write(chunk[:size]):
                    pass
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return filler


def environment_key(scenario: Scenario) -> tuple[Any, ...]:
    """Scenarios with the same key can run one after another on one environment (each its own volume)."""
    env = tuple(sorted((node, tuple(sorted(e.items()))) for node, e in scenario.agent_env.items()))
    return (scenario.db, scenario.broker, scenario.data_dir, scenario.full_brick_fs, env)


@contextlib.contextmanager
def environment(tmp: Path, request: Any, scenario: Scenario) -> Iterator[Any]:
    """A started stack for ``scenario`` with three agents Online (its database, broker, mounts);
    everything is stopped and removed afterwards. Raises ``Unavailable`` when a need is missing."""
    from tests.conftest import Stack

    res = Resources()
    with contextlib.ExitStack() as cleanup:
        if scenario.db == "postgres":
            res.db_url = cleanup.enter_context(_shared_postgres())
        elif scenario.db == "private-postgres":
            if not Path(f"{PG_BIN}/initdb").exists() or shutil.which("runuser") is None:
                raise Unavailable("the PostgreSQL 15 server binaries (initdb, pg_ctl) are not installed")
            _need_root("a private PostgreSQL")
            res.db_url, res.pg_ctl = cleanup.enter_context(private_postgres_cluster())
        if scenario.data_dir == "tmpfs":
            _need_root("a tmpfs data dir")
            cleanup.enter_context(_mounted(tmp / "server", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs"))
        if scenario.full_brick_fs:
            _need_root("a loop device")
            if shutil.which("mkfs.ext4") is None:
                raise Unavailable("mkfs.ext4 (e2fsprogs) is not installed")
            image = tmp / "full.img"
            with open(image, "wb") as fh:
                fh.truncate(8 << 20)
            _sh("mkfs.ext4", "-q", "-F", "-m", "0", "-N", "64", str(image))
            root = tmp / "bricks" / scenario.full_brick_fs
            try:
                cleanup.enter_context(_mounted(root, "-o", "loop", str(image)))
            except subprocess.CalledProcessError as exc:
                raise Unavailable(
                    f"cannot mount a loop device: {exc.stderr.decode(errors='replace').strip()}"
                ) from None
            fill(root)
        stack = Stack(tmp, request, "embedded", res.db_url)
        if scenario.broker == "mosquitto":
            from tests.test_dynsec import PLUGIN, start_mosquitto

            missing = [w for w in ("mosquitto", "mosquitto_ctrl") if not shutil.which(w)]
            if missing or not os.path.exists(PLUGIN):
                raise Unavailable(f"missing for a private Mosquitto: {', '.join(missing) or PLUGIN}")
            res.mosquitto = start_mosquitto(tmp / "mosquitto")
            cleanup.callback(res.mosquitto.proc.stop)
            server = stack.server
            server.mqtt_root = unique("t")
            server.mqtt_port = res.mosquitto.port
            argv = server.argv
            argv[argv.index("--mqtt-root") + 1] = server.mqtt_root
            i = argv.index("--mqtt")
            argv[i : i + 2] = [
                "--mqtt-url",
                f"mqtt://dynsec-admin:{res.mosquitto.admin_password}@127.0.0.1:{res.mosquitto.port}",
                "--mqtt-dynsec",
            ]
        stack.fm = res
        cleanup.callback(stack.close)
        stack.start()
        start_trio(stack, scenario.agent_env)
        yield stack


# ---- faults ----------------------------------------------------------------------------------
def no_fault(st) -> None:
    """The condition is the fault (a skewed clock, a full brick filesystem): nothing more to do."""


def kill_agent(st) -> None:
    agent = _agent(st, "n2")
    agent.kill9()
    agent.start()


def kill_server(st) -> None:
    st.server.kill9()
    st.server.start()


def kill_broker(st) -> None:
    """kill -9 of the embedded broker's process: the server starts another on the same port."""
    dead = st.server.broker_pid()
    assert dead is not None, "the server has no broker process"
    os.kill(dead, signal.SIGKILL)
    wait_until(
        lambda: st.server.broker_pid() not in (None, dead) and port_open("127.0.0.1", st.server.mqtt_port),
        30,
        what="the server's new broker process listening",
    )


def restart_mosquitto(st) -> None:
    """Stop the private Mosquitto (it keeps no retained messages: persistence is off) and start it again."""
    mosq = st.fm.mosquitto
    mosq.proc.stop()
    mosq.proc.start()
    wait_until(lambda: port_open("127.0.0.1", mosq.port), 15, what="Mosquitto listening again")


def restart_postgres(st) -> None:
    """Stop the private PostgreSQL, ask for a change while it is down (503 with Retry-After: nothing
    was changed), and start it again."""
    st.fm.pg_ctl("stop", "-m", "fast")
    try:
        answer = st.cli.api("POST", "/api/v1/clusters", json={"name": unique("pg")})
        st.fm.state["down_answer"] = (answer.status_code, answer.headers.get("content-type"), answer.text)
        st.fm.state["down_retry_after"] = answer.headers.get("retry-after")
    finally:
        st.fm.pg_ctl("start")


def check_postgres_down(st, outcome: Outcome) -> None:
    status, media, text = st.fm.state["down_answer"]
    if status != 503 or media != "application/problem+json" or not st.fm.state["down_retry_after"]:
        outcome.problems.append(f"a change while PostgreSQL was down answered {status} {media}: {text[:300]}")


def _epochs(agent) -> list[int]:
    return [int(e) for e in re.findall(rf"registered as node {agent.node} in cluster \S+ \(epoch (\d+)\)", agent.log())]


def stale_will(st) -> None:
    """n2's previous connection (a client with its credential and the old epoch's last-will) is
    still open when n2 restarts and registers again; then that connection dies and the broker
    delivers the old will, after the new session is up. n2 must stay Online."""
    from broker.dynsec import node_username
    from broker.messages import Presence
    from broker.topics import Topics
    from tests.mqtt_raw import RawClient, read_credential

    agent = _agent(st, "n2")
    old = _epochs(agent)[-1]
    topics = Topics(st.server.mqtt_root)
    _, secret = read_credential(agent.state_dir)
    will = Presence(state="offline", epoch=old, at=time.time()).model_dump_json().encode()
    ghost = RawClient(
        st.server.mqtt_port,
        node_username(topics, "default", "n2"),
        secret,
        client_id=unique("n2-old-"),
        will=(topics.presence("default", "n2"), will),
    )
    assert ghost.wait_connack(), f"n2's credential refused: {ghost.reason}"
    agent.kill9()
    agent.start()
    wait_until(lambda: _epochs(agent)[-1] > old, 30, what="n2 registered again with a new epoch")
    wait_until(lambda: st.node_state("n2") == "Online", 10, what="n2 Online again")
    ghost.abort()  # the old connection dies: the broker delivers its will now
    st.fm.state["stale_epoch"] = old
    wait_until(
        lambda: f"ignoring offline presence of epoch {old}" in st.server.log(),
        15,
        what="the stale last-will reached the control service",
    )
    st.fm.state["n2_state_after_will"] = st.node_state("n2")


def check_stale_will(st, outcome: Outcome) -> None:
    if st.fm.state.get("n2_state_after_will") != "Online":
        outcome.problems.append(f"n2 is {st.fm.state.get('n2_state_after_will')} after a stale last-will")


def _control_client(st) -> Any:
    from broker.dynsec import control_username
    from broker.topics import Topics
    from tests.mqtt_raw import RawClient

    secret = (st.server.data_dir / "control.secret").read_text().strip()
    raw = RawClient(st.server.mqtt_port, control_username(Topics(st.server.mqtt_root)), secret, unique("dup-"))
    assert raw.wait_connack(), f"the control identity was refused: {raw.reason}"
    return raw


def listen_to_n1(st) -> None:
    """Before the create: a client with the control service's identity hears n1's tasks and statuses."""
    from broker.topics import Topics

    topics = Topics(st.server.mqtt_root)
    raw = _control_client(st)
    assert raw.subscribe(topics.tasks_filter("default", "n1")) and raw.subscribe(topics.task_status("default", "n1"))
    st.fm.state["raw"] = raw


def duplicate_delivery(st) -> None:
    """The broker delivers n1's create task twice (while it runs, and again once it is DONE) and
    n1's RUNNING and DONE statuses twice each (QoS 1 is at least once): the task runs once and each
    state is persisted once."""
    from broker.messages import TaskMessage, TaskStatus
    from broker.topics import Topics

    topics = Topics(st.server.mqtt_root)
    raw = st.fm.state["raw"]
    task_topic, task_payload, statuses = None, b"", {}
    deadline = time.monotonic() + 30
    while (task_topic is None or "DONE" not in statuses) and time.monotonic() < deadline:
        for topic, payload in raw.drain(0.05):
            if topic == topics.task_status("default", "n1") and payload:
                status = TaskStatus.model_validate_json(payload)
                if status.task_id == st.fm.state.get("task_id"):
                    statuses[status.state.value] = payload
            elif payload and task_topic is None:
                task = TaskMessage.model_validate_json(payload)
                if task.kind == "volume.create":
                    task_topic, task_payload = topic, payload
                    st.fm.state["task_id"] = task.id
                    raw.publish(topic, payload)  # twice more, while it runs
                    raw.publish(topic, payload)
    assert task_topic is not None and "DONE" in statuses, f"n1's create task and its DONE not heard: {statuses}"
    for payload in (statuses.get("RUNNING"), statuses["DONE"]):
        if payload:
            raw.publish(topics.task_status("default", "n1"), payload)
            raw.publish(topics.task_status("default", "n1"), payload)
    raw.publish(task_topic, task_payload)  # and once more after it is final
    wait_until(lambda: "acknowledging again" in _agent(st, "n1").log(), 15, what="n1 acknowledged the final task again")
    raw.close()


def check_duplicate_delivery(st, outcome: Outcome) -> None:
    task = st.cli.api("GET", f"/api/v1/tasks/{st.fm.state['task_id']}").json()
    states = [e["state"] for e in task.get("events") or []]
    if task["state"] != "DONE" or len(states) != len(set(states)):
        outcome.problems.append(f"n1's create task is {task['state']} with history {states}")


def check_clock_skew(st, outcome: Outcome) -> None:
    """The agents' clocks really were off (their journals' stamps), and no node went Unreachable."""
    for node, offset in CLOCK_OFFSETS.items():
        journal = _agent(st, node).state_dir / "journal.jsonl"
        stamps = [json.loads(line)["at"] for line in journal.read_text().splitlines()]
        if not stamps or any(abs(time.time() + offset - at) > 60 for at in stamps):
            outcome.problems.append(f"{node}'s journal is not stamped {offset:+.0f} s off: {stamps}")
    # the run lasted longer than a silence window (silence_limit: 5 s for 1 s heartbeats) plus a sweep
    rows = _db_rows(st, "SELECT subject, data FROM event WHERE kind = 'node.state'", ())
    gone = [s for s, d in rows if (json.loads(d) if isinstance(d, str) else d)["state"] != "Online"]
    if gone:
        outcome.problems.append(f"nodes went Unreachable with a skewed clock: {gone}")


def wait_past_silence(st) -> None:
    """Let more than a silence window pass (the sweep would have marked a node whose heartbeats it
    judged by the agent's clock Unreachable): until each node's last heartbeat is 6 s after now."""
    since = time.time()
    wait_until(
        lambda: all(n["last_seen_at"] > since + 6 for n in st.nodes().values() if n["name"] in CLOCK_OFFSETS),
        20,
        what="heartbeats past a silence window",
    )


def check_enospc(st, outcome: Outcome) -> None:
    """n3's create failed with ENOSPC, a reason and a fix; nothing is left open; the volume can be deleted."""
    failed = [t for t in _tasks(st) if t["state"] == "FAILED"]
    n3 = [t for t in failed if t["node"] == "n3"]
    if not n3 or "No space left" not in (n3[0].get("reason") or ""):
        outcome.problems.append(f"n3's task is not FAILED with ENOSPC: {failed}")
    else:
        shown = st.cli.api("GET", f"/api/v1/tasks/{n3[0]['id']}").json()
        if not shown.get("fix"):
            outcome.problems.append(f"the ENOSPC failure has no fix: {shown}")
    name = st.fm.state["volume"]
    st.cli.run("volume", "delete", name, "--wait", timeout=90)
    if st.cli.api("GET", f"/api/v1/clusters/default/volumes/{name}").status_code != 404:
        outcome.problems.append(f"volume {name} still exists after delete")
    if any(t["state"] in OPEN_STATES for t in _tasks(st)):
        outcome.problems.append("open tasks after the delete")


def server_disk_full(st) -> None:
    """The server's SQLite data dir (a tmpfs) fills up during the create: a change asked meanwhile
    gets 507 with a problem detail, the server keeps running, and once space is freed it goes on."""
    filler = fill(st.server.data_dir)
    try:
        answer = st.cli.api("POST", "/api/v1/clusters", json={"name": "full"})
        st.fm.state["full_answer"] = (answer.status_code, answer.headers.get("content-type"), answer.text)
        # heartbeats and task statuses keep coming: the bridge holds them until they can be stored
        wait_until(
            lambda: "database out of disk space while handling" in st.server.log(),
            10,
            interval=0.05,
            what="the bridge holding a message while the disk is full",
        )
        st.fm.state["alive_while_full"] = st.server.alive()
    finally:
        filler.unlink()
    st.fm.state["after_answer"] = st.cli.api("POST", "/api/v1/clusters", json={"name": "roomy"}).status_code


def check_server_disk_full(st, outcome: Outcome) -> None:
    status, media, text = st.fm.state["full_answer"]
    if status != 507 or media != "application/problem+json" or "disk" not in text:
        outcome.problems.append(f"a write on a full disk answered {status} {media}: {text[:300]}")
    if not st.fm.state["alive_while_full"]:
        outcome.problems.append("the server died on a full disk")
    if st.fm.state["after_answer"] != 201:
        outcome.problems.append(f"a write after space was freed answered {st.fm.state['after_answer']}")
    check = _db_rows(st, "PRAGMA integrity_check", ())
    if check != [("ok",)]:
        outcome.problems.append(f"the database is damaged: {check}")


SKEWED = {node: {"GLUSTERCTL_AGENT_CLOCK_OFFSET": str(offset)} for node, offset in CLOCK_OFFSETS.items()}

FAULTS: dict[str, Scenario] = {
    "agent kill -9 (create)": Scenario(kill_agent),
    "agent kill -9 (start)": Scenario(kill_agent, phase="start"),
    "agent kill -9 (option)": Scenario(kill_agent, phase="option"),
    "server kill -9 (create)": Scenario(kill_server),
    "server kill -9 (start)": Scenario(kill_server, phase="start"),
    "embedded broker kill -9 (create)": Scenario(kill_broker),
    "Mosquitto restart (create)": Scenario(restart_mosquitto, broker="mosquitto"),
    "stale last-will after reconnect (create)": Scenario(stale_will, check=check_stale_will),
    "duplicate QoS 1 task and status (create)": Scenario(
        duplicate_delivery, before=listen_to_n1, check=check_duplicate_delivery
    ),
    "brick root on a full filesystem (create)": Scenario(
        no_fault, expect="CreateFailed", full_brick_fs="n3", check=check_enospc
    ),
    "agent clocks 10 min off (create)": Scenario(wait_past_silence, agent_env=SKEWED, check=check_clock_skew),
    "server disk full, SQLite (create)": Scenario(server_disk_full, data_dir="tmpfs", check=check_server_disk_full),
    "server kill -9, PostgreSQL (create)": Scenario(kill_server, db="postgres"),
    "server kill -9, PostgreSQL (start)": Scenario(kill_server, phase="start", db="postgres"),
    "duplicate QoS 1 task and status, PostgreSQL (create)": Scenario(
        duplicate_delivery, db="postgres", before=listen_to_n1, check=check_duplicate_delivery
    ),
    "PostgreSQL restart (create)": Scenario(restart_postgres, db="private-postgres", check=check_postgres_down),
    "PostgreSQL restart (start)": Scenario(
        restart_postgres, phase="start", db="private-postgres", check=check_postgres_down
    ),
}


def table(outcomes: list[Outcome]) -> str:
    rows = [("scenario", "volume", "tasks", "failed", "run twice", "events", "retried", "recovery", "took", "ok")]
    for o in outcomes:
        lost = len(o.events_missing) + len(o.events_twice) + len(o.events_unknown) + len(o.task_states_twice)
        rows.append(
            (
                o.scenario,
                o.volume_state,
                str(o.tasks),
                str(len(o.failed)),
                str(len(o.executed_twice)),
                f"{o.events_seen}"
                + (f" ({lost} wrong)" if lost else "")
                + (f", stream down {o.stream_reconnects}x" if o.stream_reconnects else ""),
                "yes" if o.retried else "no",
                f"{o.recovery_seconds:.1f} s",
                f"{o.duration_seconds:.1f} s",
                "ok" if o.ok else "FAIL",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)
