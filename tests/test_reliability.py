"""Reliability: the reconciler (deadlines, republishing, hook replay, volumes with a way out),
node removal with bricks and open tasks, and a bridge that loses no acknowledged message."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from broker.messages import NodeState, TaskState, TaskStatus
from broker.topics import Topics
from control.services.layout import VolumeRequest
from tests.helpers import MOSQUITTO, unique, wait_until


class Recorder:
    """The engine's publisher in service-level tests: what would go to the broker."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bool]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.sent.append((topic, payload, retain))


@pytest.fixture(params=["sqlite", "postgres"])
def services(request, tmp_path):
    from control.services import clusters
    from control.services.reconciler import Reconciler
    from control.services.tasks import TaskEngine
    from control.services.volumes import VolumeService
    from control.store import open_database
    from control.store.models import Node

    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    db = open_database(url, str(tmp_path))
    cluster = clusters.ensure_default()
    for name in ("n1", "n2"):
        Node.create(cluster=cluster, name=name, state=NodeState.UNREACHABLE.value, agent_id=name, epoch=1)
    recorder = Recorder()
    engine = TaskEngine(Topics(), recorder)
    volumes = VolumeService(engine)
    reconciler = Reconciler(engine, volumes, {"volume.create": 60, "volume.start": 120})
    yield cluster, engine, volumes, reconciler, recorder, tmp_path
    db.close()


def _status(engine, task, state: TaskState, reason: str = "") -> None:
    engine.apply_status(
        task.cluster.name, task.node_name, TaskStatus(task_id=task.id, state=state, epoch=1, reason=reason)
    )


def _volume(cluster, name: str):
    from control.store.models import Volume

    return Volume.get((Volume.cluster == cluster) & (Volume.name == name))


def _create(volumes, cluster, tmp_path, name: str = "gv1", start: bool = True, nodes=("n1", "n2")):
    bricks = [f"{n}:{tmp_path}/bricks/{n}/{name}" for n in nodes]
    return volumes.create(cluster, VolumeRequest(name=name, bricks=bricks, start=start))


def _task(task_id: str):
    from control.store.models import Task

    return Task.get_by_id(task_id)


def test_reconciler_republishes_then_times_out_and_the_volume_fails(services):
    cluster, engine, volumes, reconciler, recorder, tmp = services
    _, tasks = _create(volumes, cluster, tmp)
    recorder.sent.clear()
    report = reconciler.run_once(now=time.time() + 1)
    assert report.republished == 2 and report.timed_out == 0
    assert {t for t, _, retain in recorder.sent if retain} == {
        Topics().task("default", t.node_name, t.id) for t in tasks
    }
    _status(engine, tasks[0], TaskState.DONE)  # one node answered, the other never does
    report = reconciler.run_once(now=tasks[1].created_at + 61)
    assert report.timed_out == 1 and report.republished == 0
    late = _task(tasks[1].id)
    assert late.state == "FAILED" and late.reason.startswith("TIMEOUT: ") and "volume.create is 60s" in late.reason
    assert _volume(cluster, "gv1").state == "CreateFailed"
    # the retained message of the timed-out task is cleared; a late DONE from the agent changes nothing
    assert (Topics().task("default", "n2", late.id), b"", True) in recorder.sent
    _status(engine, late, TaskState.DONE)
    assert _task(late.id).state == "FAILED" and _volume(cluster, "gv1").state == "CreateFailed"
    assert reconciler.run_once(now=time.time() + 10_000) == (0, 0, 0, 0)


def test_a_hook_that_failed_after_commit_is_replayed_once(services, monkeypatch):
    from control.services.volumes import VolumeService
    from control.store.models import Task

    cluster, engine, volumes, reconciler, recorder, tmp = services  # noqa: RUF059
    _, tasks = _create(volumes, cluster, tmp, start=True)
    real = VolumeService._conclude
    calls = {"n": 0}

    def flaky(self, *args, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database went away")
        return real(self, *args, **kw)

    monkeypatch.setattr(VolumeService, "_conclude", flaky)
    for task in tasks:
        _status(engine, task, TaskState.DONE)
    assert all(_task(t.id).state == "DONE" for t in tasks)
    assert _volume(cluster, "gv1").state == "Creating"  # the hook's transaction rolled back
    report = reconciler.run_once()
    assert report.replayed == 1
    vol = _volume(cluster, "gv1")
    assert vol.state == "Starting" and vol.concluded_operation == tasks[0].operation  # created, then start queued
    starts = [*Task.select().where(Task.kind == "volume.start")]
    assert len(starts) == 2
    # replaying again (or an agent's duplicate final ack) is a no-op: no second start
    volumes.task_finished(_task(tasks[0].id))
    assert reconciler.run_once().replayed == 0
    assert Task.select().where(Task.kind == "volume.start").count() == 2
    assert _volume(cluster, "gv1").state == "Starting"


def test_a_hook_that_meets_a_full_disk_runs_again_at_once(services, monkeypatch):
    """A final hook that fails because the database cannot take writes is tried again right away,
    not left for the reconciler's next pass (another error still is: see the test above)."""
    import peewee as pw

    from control.services import tasks as task_service
    from control.services.volumes import VolumeService

    cluster, engine, volumes, reconciler, recorder, tmp = services  # noqa: RUF059
    _, tasks = _create(volumes, cluster, tmp, start=False)
    real = VolumeService._conclude
    calls = {"n": 0, "failed": 0}

    def full_once(self, *args, **kw):
        calls["n"] += 1
        if not calls["failed"]:
            calls["failed"] = 1
            raise pw.OperationalError("database or disk is full")
        return real(self, *args, **kw)

    monkeypatch.setattr(VolumeService, "_conclude", full_once)
    monkeypatch.setattr(task_service, "HOOK_RETRY_SECONDS", (0.01,))
    for task in tasks:
        _status(engine, task, TaskState.DONE)
    assert calls["failed"] == 1 and calls["n"] >= 2
    assert _volume(cluster, "gv1").state == "Created"
    assert reconciler.run_once().replayed == 0


def test_a_running_state_without_tasks_fails_its_operation(services):
    from control.store.db import delete_where
    from control.store.models import Task, TaskEvent

    cluster, engine, volumes, reconciler, recorder, tmp = services  # noqa: RUF059
    _, tasks = _create(volumes, cluster, tmp, start=False)
    ids = [t.id for t in tasks]
    delete_where(TaskEvent, TaskEvent.task.in_(ids))
    delete_where(Task, Task.id.in_(ids))
    assert reconciler.run_once().concluded == 1
    assert _volume(cluster, "gv1").state == "CreateFailed"


def test_reset_state_goes_back_to_the_last_stable_state(services):
    from control.errors import Conflict, InvalidInput
    from control.store.models import Event

    cluster, engine, volumes, reconciler, recorder, tmp = services  # noqa: RUF059
    _, tasks = _create(volumes, cluster, tmp, start=False)
    # Creating without a stable state: the create's failure state
    vol, failed = volumes.reset_state(cluster, "gv1", "node n2 is gone for good", "admin")
    assert vol.state == "CreateFailed" and {t.id for t in failed} == {t.id for t in tasks}
    assert all(_task(t.id).reason.startswith("RESET: reset-state by admin: node n2 is gone") for t in tasks)
    event = Event.select().where((Event.kind == "volume.state") & (Event.subject == "gv1")).order_by(Event.id.desc())[0]
    assert event.data == {"state": "CreateFailed", "reason": "reset-state by admin: node n2 is gone for good"}
    with pytest.raises(Conflict, match="never in a stable state"):
        volumes.reset_state(cluster, "gv1", "again", "admin")
    # a volume that was Created, then stuck Starting, goes back to Created
    _, tasks = _create(volumes, cluster, tmp, name="gv2", start=False)
    for task in tasks:
        _status(engine, task, TaskState.DONE)
    assert _volume(cluster, "gv2").state == "Created"
    volumes.start(cluster, "gv2")
    assert _volume(cluster, "gv2").state == "Starting"
    vol, failed = volumes.reset_state(cluster, "gv2", "agents lost", "root")
    assert vol.state == "Created" and len(failed) == 2
    # the failed tasks' hooks did not move it on; a stable volume has nothing to reset
    assert _volume(cluster, "gv2").state == "Created"
    with pytest.raises(Conflict, match="stable state, nothing to reset"):
        volumes.reset_state(cluster, "gv2", "again", "root")
    with pytest.raises(InvalidInput, match="give a reason"):
        volumes.reset_state(cluster, "gv2", "  ", "root")


def test_node_remove_refuses_while_it_hosts_bricks_and_force_marks_them_lost(services):
    from control.errors import Conflict
    from control.services import nodes
    from control.store.models import Brick, Node

    cluster, engine, volumes, reconciler, recorder, tmp = services  # noqa: RUF059
    _, tasks = _create(volumes, cluster, tmp, start=False)
    with pytest.raises(Conflict, match=r"hosts 1 bricks of volume\(s\) gv1.*--force"):
        nodes.remove(cluster, "n2", engine=engine)
    assert Node.select().where(Node.name == "n2").exists()
    nodes.remove(cluster, "n2", force=True, engine=engine)
    assert not Node.select().where(Node.name == "n2").exists()
    assert [b.state for b in Brick.select().where(Brick.node_name == "n2")] == ["Lost"]
    n2_task = next(t for t in tasks if t.node_name == "n2")
    assert _task(n2_task.id).state == "FAILED" and "node removed" in _task(n2_task.id).reason
    assert _task(next(t.id for t in tasks if t.node_name == "n1")).state == "QUEUED"
    _status(engine, next(t for t in tasks if t.node_name == "n1"), TaskState.DONE)
    assert _volume(cluster, "gv1").state == "CreateFailed"


def test_a_task_over_the_agents_payload_limit_is_refused(services):
    from broker.messages import MAX_PAYLOAD_BYTES
    from control.errors import InvalidInput

    cluster, engine, volumes, reconciler, recorder, tmp = services  # noqa: RUF059
    with pytest.raises(InvalidInput, match=f"over the agents' limit of {MAX_PAYLOAD_BYTES}"):
        engine.submit(cluster, "n1", "node.probe", {"blob": "x" * MAX_PAYLOAD_BYTES})


def test_deadlines_setting():
    from control.services.reconciler import DEFAULT_DEADLINES, parse_deadlines
    from control.settings import ServerSettings

    assert parse_deadlines("node.probe=5, volume.start=7200") == {"node.probe": 5.0, "volume.start": 7200.0}
    assert DEFAULT_DEADLINES["node.probe"] < DEFAULT_DEADLINES["volume.start"] < DEFAULT_DEADLINES["volume.rebalance"]
    for bad in ("node.probe", "node.probe=-1", "=5", "node.probe=soon"):
        with pytest.raises(ValueError, match="use KIND=SECONDS"):
            parse_deadlines(bad)
    with pytest.raises(ValueError, match="KIND=SECONDS"):
        ServerSettings(task_deadlines="volume.start=never")


# ---- the bridge: backpressure instead of drops ------------------------------------------------
def test_a_burst_bigger_than_the_inbox_loses_nothing(tmp_path):
    """The worker is held while 300 task reports arrive for an inbox of 5: on_message waits, the
    broker holds the rest, and every report is applied once the worker goes on."""
    from tests.conftest import _need

    _need(MOSQUITTO, "Mosquitto")
    from broker.url import MqttUrl
    from control.bridge import Bridge
    from control.services import clusters
    from control.services.tasks import TaskEngine
    from control.store import open_database
    from control.store.models import Node, Task
    from tests.mqtt_raw import RawClient, clear_retained

    db = open_database(None, str(tmp_path))
    cluster = clusters.ensure_default()
    Node.create(cluster=cluster, name="n1", state=NodeState.ONLINE.value, agent_id="a", epoch=1)
    root = unique("t")
    topics = Topics(root)
    engine = TaskEngine(topics)
    ids = [engine.submit(cluster, "n1", "node.probe", {}).id for _ in range(300)]
    bridge = Bridge(MqttUrl(*MOSQUITTO), topics, engine, inbox_size=5)
    engine.publisher = bridge
    bridge.start()
    agent = RawClient(MOSQUITTO[1])
    gate = threading.Event()
    try:
        assert bridge.wait_connected(10) and agent.wait_connack()
        assert bridge.call_soon(lambda: gate.wait(30))
        for task_id in ids:
            payload = TaskStatus(task_id=task_id, state=TaskState.DONE, epoch=1).model_dump_json()
            agent.client.publish(topics.task_status("default", "n1"), payload, qos=1)
        wait_until(bridge._inbox.full, 10, what="the inbox full")
        wait_until(lambda: bridge._stalled_since is not None, 10, what="on_message waiting for room")
        gate.set()
        wait_until(lambda: Task.select().where(Task.state == "DONE").count() == 300, 60, what="all 300 reports applied")
        assert bridge.dropped_total() == 0
        wait_until(lambda: bridge._stalled_since is None, 10, what="the worker caught up")
    finally:
        gate.set()
        agent.close()
        bridge.stop()
        clear_retained(MOSQUITTO[1], root)  # the bridge's offline presence, retained on the shared broker
        db.close()


def test_behind_a_backlog_silence_is_judged_as_of_what_was_read(tmp_path):
    """A node whose heartbeats may still wait in the broker (on_message waited for room 20 s ago and the
    worker has not caught up since) is not called silent for those 20 s; caught up, it is."""
    from broker.url import MqttUrl
    from control.bridge import Bridge
    from control.services import clusters, nodes
    from control.services.tasks import TaskEngine
    from control.store import open_database
    from control.store.models import Node

    db = open_database(None, str(tmp_path))
    nodes.reset_beats()
    seen = time.time() - 40  # silent for 40 s; its limit is 3 x 10 s
    Node.create(
        cluster=clusters.ensure_default(),
        name="n1",
        state=NodeState.ONLINE.value,
        agent_id="a",
        epoch=1,
        last_seen_at=seen,
        silence_deadline=seen + 30,
        facts={"heartbeat_interval": 10.0},
    )
    topics = Topics(unique("t"))
    bridge = Bridge(MqttUrl(*MOSQUITTO), topics, TaskEngine(topics))  # not started: the sweep is called directly
    try:
        bridge._stalled_since = time.monotonic() - 20
        bridge._sweep_once(time.monotonic())
        assert Node.get(Node.name == "n1").state == NodeState.ONLINE.value
        bridge._stalled_since = None
        bridge._sweep_once(time.monotonic() - 5)  # queued 5 s ago: judged as of then, still 35 s of silence
        row = Node.get(Node.name == "n1")
        assert row.state == NodeState.UNREACHABLE.value and row.state_changed_at < time.time() - 4
    finally:
        db.close()


# ---- end to end: the server's reconciler and the commands ---------------------------------------
def test_server_times_out_tasks_and_admins_reset_and_remove(make_stack, monkeypatch):
    monkeypatch.setenv("GLUSTERCTL_TASK_DEADLINES", "node.probe=1,volume.start=600")
    monkeypatch.setenv("GLUSTERCTL_RECONCILE_INTERVAL", "0.5")
    st = make_stack().start()
    cli = st.cli
    (st.tmp / "bricks" / "n1").mkdir(parents=True)
    agent = st.agent("n1")
    wait_until(lambda: st.node_state("n1") == "Online", what="n1 Online")
    cli.run("volume", "create", "gv1", f"n1:{st.tmp}/bricks/n1/gv1", "--no-start", "--wait")
    agent.stop()
    wait_until(lambda: st.node_state("n1") == "Unreachable", what="n1 Unreachable")
    # a probe nobody answers fails with TIMEOUT within its 1s deadline (plus a pass)
    probe = cli.api("POST", "/api/v1/clusters/default/nodes/n1/probe", json={}).json()
    task = wait_until(
        lambda: (t := cli.api("GET", f"/api/v1/tasks/{probe['id']}").json())["state"] == "FAILED" and t,
        10,
        what="probe TIMEOUT",
    )
    assert task["reason"].startswith("TIMEOUT: ")
    # a start that waits for the gone node: an admin resets it, with a reason, back to Created
    cli.run("volume", "start", "gv1")
    assert cli.api("GET", "/api/v1/clusters/default/volumes/gv1").json()["state"] == "Starting"
    refused = cli.run("volume", "reset-state", "gv1", "--reason", "n1 is gone", check=False)
    assert refused.returncode != 0 and "--force" in refused.stderr
    out = cli.run("volume", "reset-state", "gv1", "--force", "--reason", "n1 is gone").stdout
    assert "now Created" in out and "1 open tasks failed" in out
    # the node hosts a brick: remove is refused, --force marks it Lost
    refused = cli.run("node", "remove", "n1", check=False)
    assert refused.returncode != 0 and "hosts 1 bricks of volume(s) gv1" in refused.stderr
    cli.run("node", "remove", "n1", "--force")
    bricks = cli.api("GET", "/api/v1/clusters/default/volumes/gv1").json()["bricks"]
    assert [b["state"] for b in bricks] == ["Lost"]


# ---- PostgreSQL: connections that survive a server restart ---------------------------------------
@pytest.fixture
def private_postgres():
    """A PostgreSQL instance of this test alone (restarting the shared one would disturb other tests)."""
    from tests.helpers import PG_BIN, private_postgres_cluster

    if not Path(f"{PG_BIN}/initdb").exists():
        pytest.skip("PostgreSQL 15 server binaries are not installed")
    with private_postgres_cluster() as (url, ctl):
        yield url, ctl


def test_connections_survive_a_postgresql_restart(private_postgres, tmp_path):
    import peewee as pw

    from control.services import clusters
    from control.store import open_database
    from control.store.db import outage, ping
    from control.store.models import Cluster
    from control.store.models import database_proxy as db

    url, ctl = private_postgres
    database = open_database(url, str(tmp_path))
    try:
        clusters.ensure_default()
        assert ping()
        ctl("stop", "-m", "fast")
        assert not ping()  # the health check sees the outage
        with pytest.raises(pw.DatabaseError) as failed:
            Cluster.select().count()
        assert outage(failed.value) == "down"  # the bridge tries again, the API answers 503
        ctl("start")
        # the thread's old connection is dead: the next transaction reconnects at BEGIN
        with db.atomic():
            Cluster.create(name="after-restart", join_secret="s")
        assert {c.name for c in Cluster.select()} == {"default", "after-restart"}
        assert ping()
        ctl("restart", "-m", "fast")
        assert Cluster.select().count() == 2  # a statement outside a transaction reconnects too
        assert outage(pw.OperationalError('relation "nothing" does not exist')) is None  # a bug: not retried
        assert outage(pw.OperationalError(RuntimeError("database or disk is full"))) == "full"
    finally:
        database.close()
