"""Fast tests of the pieces: names, tokens, topics, transitions, journal, store and migrations."""

from __future__ import annotations

import pytest

from agent.journal import COMPACT_MIN_LINES, KEEP_SECONDS, Journal
from broker.messages import (
    TASK_TRANSITIONS,
    TaskState,
    check_name,
    check_proof,
    join_proof,
    make_join_token,
    parse_join_token,
)
from broker.topics import Topics, filter_matches
from control.services.tasks import IllegalTransition, check_transition


@pytest.mark.parametrize(
    "kind,value",
    [
        ("cluster", "prod"),
        ("cluster", "backup_cluster-2"),
        ("node", "node1.example.com"),
        ("node", "n1"),
        ("user", "alice"),
    ],
)
def test_valid_names(kind, value):
    assert check_name(kind, value) == value


@pytest.mark.parametrize(
    "kind,value",
    [
        ("cluster", ""),
        ("cluster", "a b"),
        ("cluster", "x" * 65),
        ("cluster", "a.b"),
        ("node", "-n1"),
        ("node", "n1."),
        ("node", "a..b"),
        ("node", "a_b"),
        ("node", "a/b"),
        ("user", "+"),
    ],
)
def test_invalid_names_say_what_is_allowed(kind, value):
    with pytest.raises(ValueError, match="use "):
        check_name(kind, value)


def test_join_tokens_and_proofs():
    token = make_join_token("prod", "s" * 32)
    assert parse_join_token(token) == ("prod", "s" * 32)
    proof = join_proof(token, "n1", "agent", 7)
    assert check_proof(token, "n1", "agent", 7, proof)
    assert not check_proof(token, "n2", "agent", 7, proof)
    assert not check_proof(token, "n1", "agent", 8, proof)
    assert not check_proof(make_join_token("prod", "t" * 32), "n1", "agent", 7, proof)
    for bad in ("", "nodot", "prod.short", "bad name.ssssssssssssssssssss"):
        with pytest.raises(ValueError, match="join token"):
            parse_join_token(bad)


def test_topic_matching_and_parsing():
    t = Topics("site1")
    assert t.task("c", "n", "x") == "site1/v1/clusters/c/nodes/n/tasks/x"
    assert filter_matches(t.tasks_filter("c", "n"), t.task("c", "n", "x"))
    assert not filter_matches(t.tasks_filter("c", "n"), t.task("c", "n2", "x"))
    assert filter_matches("a/#", "a/b/c") and filter_matches("a/+/c", "a/b/c") and not filter_matches("a/+", "a/b/c")
    assert t.parse_node_topic(t.heartbeat("c", "n.example.com")) == ("c", "n.example.com", "heartbeat")
    assert t.parse_node_topic("site1/v1/control/presence") is None
    assert t.parse_node_topic("site1/v1/clusters/c/volumes/v/status") is None
    assert t.parse_cluster_topic(t.volume_status("c", "alerts")) == ("c", "volumes/alerts/status")
    assert t.parse_cluster_topic(t.alert("c", "7")) == ("c", "alerts/7")
    assert t.parse_cluster_topic("site1/v1/control/presence") is None
    assert t.parse_cluster_topic("other/v1/clusters/c/summary") is None
    assert t.everything_filter() == "site1/v1/#"
    assert all(filter_matches(t.everything_filter(), topic) for topic in t.monitor_filters("c"))
    assert not filter_matches(t.everything_filter(), "other/v1/control/presence")
    with pytest.raises(ValueError, match="topic root"):
        Topics("bad/root")


def test_task_transition_table():
    check_transition(TaskState.QUEUED, TaskState.RUNNING)
    check_transition(TaskState.RUNNING, TaskState.DONE)
    check_transition(TaskState.QUEUED, TaskState.FAILED)
    for final in (TaskState.DONE, TaskState.FAILED):
        assert TASK_TRANSITIONS[final] == frozenset()
        with pytest.raises(IllegalTransition):
            check_transition(final, TaskState.RUNNING)


def test_journal_survives_restart_and_torn_lines(tmp_path):
    path = str(tmp_path / "journal.jsonl")
    j = Journal(path)
    j.record("t1", "RUNNING")
    j.record("t1", "DONE", result={"x": 1})
    j.record("t2", "RUNNING")
    j.close()
    with open(path, "a") as fh:
        fh.write('{"id": "t3", "sta')  # a crash in the middle of a write
    j = Journal(path)
    assert j.get("t1")["state"] == "DONE" and j.get("t1")["result"] == {"x": 1}
    assert j.get("t2")["state"] == "RUNNING" and j.get("t3") is None
    for i in range(COMPACT_MIN_LINES + 5):  # repeats of one id: the file is compacted as it grows
        j.record("bulk", "DONE", now=1000.0 + i)
    assert len(open(path).read().splitlines()) <= COMPACT_MIN_LINES
    j.close()
    j = Journal(
        path, now=1000.0 + COMPACT_MIN_LINES + KEEP_SECONDS + 10
    )  # bounded by age: week-old final entries are gone
    assert j.get("bulk") is None and j.get("t2")["state"] == "RUNNING"
    j.close()


# ---- the store, as a contract run against both backends ---------------------------------------
@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path):
    from control.store import open_database

    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    db = open_database(url, str(tmp_path))
    yield db
    db.close()


def test_migrations_are_versioned_and_idempotent(database):
    from control.store.db import MIGRATIONS, SCHEMA_VERSION, migrate
    from control.store.models import SchemaVersion

    assert migrate(database) == SCHEMA_VERSION
    assert migrate(database) == SCHEMA_VERSION
    assert [r.version for r in SchemaVersion.select()] == [v for v, _ in MIGRATIONS]


def test_upgrading_keeps_the_rows_that_refer_to_a_changed_table(tmp_path):
    """SQLite migration 12 copies the cluster table to add a NOT NULL column: with foreign keys enforced,
    dropping the old table deleted every node, device, volume, task and grant (ON DELETE CASCADE)."""
    from control.store import db as store
    from control.store import models as m

    database = store.make_database(None, str(tmp_path))
    m.database_proxy.initialize(database)
    store.migrate(database, only=set(range(1, 12)))
    with store._without_columns(m.Cluster, ("metadata_version",)):
        cluster = m.Cluster.create(name="c", join_secret="x")
        m.Node.create(cluster=cluster, name="n", state="Online", agent_id="a")
    assert store.migrate(database) == store.SCHEMA_VERSION
    assert [n.name for n in m.Node.select()] == ["n"]
    assert database.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1  # enforced again afterwards
    database.close()


def test_newer_schema_is_refused(database):
    from control.store.db import SCHEMA_VERSION, DatabaseError, migrate
    from control.store.models import SchemaVersion

    SchemaVersion.create(version=SCHEMA_VERSION + 1)
    with pytest.raises(DatabaseError, match="newer than this glusterctl"):
        migrate(database)


def test_task_engine_persists_transitions_and_clears_retained(database):
    from broker.messages import TaskStatus
    from control.services import clusters, tasks
    from control.store.models import Node, TaskEvent

    published = []

    class Recorder:
        def publish(self, topic, payload, qos=1, retain=False):
            published.append((topic, payload, retain))

    cluster = clusters.ensure_default()
    Node.create(cluster=cluster, name="n1", state="Online", agent_id="a" * 32, epoch=1)
    engine = tasks.TaskEngine(Topics(), Recorder())
    task = engine.submit(cluster, "n1", "node.probe", {"path": "/x"})
    assert published[-1][0].endswith(f"/nodes/n1/tasks/{task.id}") and published[-1][2] is True
    assert engine.apply_status("default", "n2", TaskStatus(task_id=task.id, state=TaskState.DONE, epoch=1)) is None
    engine.apply_status("default", "n1", TaskStatus(task_id=task.id, state=TaskState.RUNNING, epoch=1))
    engine.apply_status("default", "n1", TaskStatus(task_id=task.id, state=TaskState.DONE, epoch=1, result={"ok": 1}))
    assert engine.apply_status("default", "n1", TaskStatus(task_id=task.id, state=TaskState.RUNNING, epoch=1)) is None
    stored = tasks.get(task.id)
    assert stored.state == "DONE" and stored.result == {"ok": 1} and stored.finished_at
    assert [e.state for e in TaskEvent.select().where(TaskEvent.task == task.id).order_by(TaskEvent.id)] == [
        "QUEUED",
        "RUNNING",
        "DONE",
    ]
    assert published[-1] == (published[0][0], b"", True)  # cleared once final
    assert engine.republish_open() == 0


def test_failure_knowledge_base_explains_every_code():
    from control.services.failures import explain, knowledge_base

    required = {"ENOENT", "EACCES", "ENOSPC", "EADDRINUSE", "EEXIST", "ENOTSUP", "NOGLUSTERFSD", "BRICKEXIT"}
    assert required <= set(knowledge_base())
    for code in knowledge_base():
        text = explain(f"{code}: something about /exports/b1 on node n1", "n1", {"path": "/exports/b1", "port": 49152})
        assert text["code"] == code and text["reason"] and text["fix"]
        assert "<" not in text["reason"] + text["fix"], text  # every placeholder was filled
    enoent = explain(
        "ENOENT: the parent directory /exports of brick /exports/b1 does not exist", "n1", {"path": "/exports/b1"}
    )
    assert "create the parent directory (/exports)" in enoent["fix"]
    unknown = explain("something odd", "n2")
    assert unknown["code"] == "UNKNOWN" and "agent log on node n2" in unknown["fix"]


def test_timestamps_keep_subsecond_precision(database):
    """PostgreSQL's REAL would round a Unix time to about two minutes; the store must not."""
    import time as _time

    from control.services import clusters
    from control.store.models import Node

    now = _time.time()
    cluster = clusters.ensure_default()
    Node.create(cluster=cluster, name="n1", state="Online", agent_id="a" * 32, epoch=1, last_seen_at=now)
    assert abs(Node.get(Node.name == "n1").last_seen_at - now) < 0.001


def test_long_brick_paths_fit_the_store(database):
    """Event subjects and task targets hold brick paths; PostgreSQL must not refuse a long one."""
    from control.services import events

    path = "/exports/" + "d" * 1000
    events.record("brick.state", cluster="default", subject=f"vol:node1.example.com:{path}", state="Online")
    from control.store.models import Event

    assert Event.select().order_by(Event.id.desc()).first().subject.endswith(path)


def test_concurrent_read_then_write_transactions_wait_instead_of_failing(database):
    """Handlers read, then write, in one transaction from several threads (MQTT worker, REST
    threads, sweeper). On SQLite a deferred transaction whose snapshot went stale cannot upgrade to
    a write and fails at once with "database is locked"; the store must wait its turn instead."""
    import threading
    import time as _time

    from control.services import clusters
    from control.store.db import locked
    from control.store.models import Node, database_proxy

    cluster = clusters.ensure_default()
    Node.create(cluster=cluster, name="n1", state="Online", agent_id="a" * 32, epoch=1)
    errors: list[Exception] = []

    def worker() -> None:
        try:
            for _ in range(30):
                with database_proxy.atomic():
                    node = locked(Node.select().where(Node.name == "n1")).get()
                    _time.sleep(0.001)
                    Node.update(epoch=node.epoch + 1).where(Node.id == node.id).execute()
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert Node.get(Node.name == "n1").epoch == 1 + 4 * 30  # and no update was lost


def _volume_with_node(cluster_name: str = "default"):
    import uuid

    from control.services import clusters
    from control.store.models import Node, Volume

    cluster = clusters.ensure_default() if cluster_name == "default" else clusters.add(cluster_name)
    node = Node.create(cluster=cluster, name="n1", state="Online", agent_id="a" * 16, epoch=1)
    volume = Volume.create(
        id=str(uuid.uuid4()),
        cluster=cluster,
        name="gv1",
        type="replicate",
        replica=3,
        state="Started",
        auth_username="u",
        auth_password="p",
    )
    return cluster, node, volume


def test_migration_4_moves_self_heal_daemons_out_of_node_facts(database):
    from control.store.db import _migration_4
    from control.store.models import Node, SelfHealDaemon

    _, node, volume = _volume_with_node()
    database.drop_tables([SelfHealDaemon])
    foreign = "00000000-0000-0000-0000-000000000000"  # a volume the node's cluster does not have
    Node.update(facts={"kernel": "6.1", "shds": {volume.id: {"pid": 42, "online": True}, foreign: {"pid": 7}}}).where(
        Node.id == node.id
    ).execute()
    _migration_4(database)
    rows = list(SelfHealDaemon.select())
    assert [(r.volume_id, r.node_name, r.pid, r.state) for r in rows] == [(volume.id, "n1", 42, "Online")]
    assert Node.get_by_id(node.id).facts == {"kernel": "6.1"}


def test_self_heal_daemon_rows_follow_heartbeats(database):
    from broker.messages import ShdReport
    from control.services.heartbeats import apply_self_heal_daemons, forget_node
    from control.store.models import SelfHealDaemon

    _, node, volume = _volume_with_node()
    apply_self_heal_daemons(node, [ShdReport(volume_id=volume.id, pid=10, online=True)], now=100.0)
    row = SelfHealDaemon.get()
    assert (row.pid, row.state, row.state_changed_at) == (10, "Online", 100.0)
    apply_self_heal_daemons(node, [ShdReport(volume_id=volume.id, pid=10, online=True)], now=200.0)
    assert SelfHealDaemon.get().state_changed_at == 100.0  # nothing changed: nothing written
    apply_self_heal_daemons(node, [], now=300.0)  # no longer reported: Offline, no pid
    row = SelfHealDaemon.get()
    assert (row.pid, row.state, row.state_changed_at) == (None, "Offline", 300.0)
    apply_self_heal_daemons(node, [ShdReport(volume_id="not-a-volume-of-this-cluster", pid=1, online=True)], now=400.0)
    assert SelfHealDaemon.select().count() == 1
    forget_node(node)
    assert SelfHealDaemon.select().count() == 0


def test_volume_stop_is_refused_while_a_rebalance_runs(database):
    from broker.messages import RebalanceState
    from broker.topics import Topics
    from control.errors import Conflict
    from control.services.tasks import TaskEngine
    from control.services.volumes import VolumeService
    from control.store.models import RebalanceNode

    cluster, _, volume = _volume_with_node()
    service = VolumeService(TaskEngine(Topics()))
    row = RebalanceNode.create(
        volume=volume, node_name="n1", run="r1", command="full", state=RebalanceState.IN_PROGRESS.value
    )
    with pytest.raises(Conflict, match="rebalance of volume 'gv1' is in progress on n1: stop it first"):
        service.stop(cluster, "gv1")
    row.state = RebalanceState.COMPLETED.value
    row.save()
    stopped, _ = service.stop(cluster, "gv1")  # n1 holds no brick: no task, the volume moves on
    assert stopped.state == "Stopping"


def test_rebalance_rows_follow_the_heartbeats_reports(database):
    """Heartbeats carry each node's run: progress and the final state land in its row without any task;
    an older run's report, a repeat, and an older status after the final one change nothing."""
    from broker.messages import RebalanceReport, RebalanceState
    from control.services import rebalance
    from control.store.models import Event, RebalanceNode

    rebalance.forget_reports()
    _, _, volume = _volume_with_node()
    RebalanceNode.create(volume=volume, node_name="n1", run="r2", command="full", state="in progress")

    def report(run: str = "r2", state: str = "in progress", files: int = 0, **extra):
        return RebalanceReport(volume_id=volume.id, run=run, state=RebalanceState(state), files=files, **extra)

    def row():
        r = RebalanceNode.get()
        return r.state, r.files, r.error

    def state_events():
        return [(e.subject, e.data["state"]) for e in Event.select().where(Event.kind == "rebalance.state")]

    # a node of another cluster that names this volume's id (and has a node of the same name) touches nothing
    from control.services import clusters

    clusters.add("other")
    assert rebalance.apply_reports("other", "n1", [report(state="completed", files=99)], now=0.5) == 0
    assert row() == ("in progress", 0, "")
    assert rebalance.apply_reports("default", "n1", [report("r1", "completed", 9)], now=1.0) == 0  # older run
    assert row() == ("in progress", 0, "")
    assert rebalance.apply_reports("default", "n1", [report(files=5, lookups=40)], now=2.0) == 1
    assert row() == ("in progress", 5, "") and RebalanceNode.get().lookups == 40
    assert rebalance.apply_reports("default", "n1", [report(files=5, lookups=40)], now=3.0) == 0  # seen
    assert rebalance.apply_reports("default", "n1", [report(files=5, lookups=40)], now=70.0) == 1  # checked again
    assert state_events() == []  # progress is no state change
    done = report(state="completed", files=12, final=True, run_time=4.5)
    assert rebalance.apply_reports("default", "n1", [done], now=71.0) == 1
    assert row() == ("completed", 12, "") and RebalanceNode.get().run_time == 4.5
    assert state_events() == [("gv1@n1", "completed")]
    rebalance.forget_reports()
    rebalance.apply_reports("default", "n1", [report(files=6)], now=72.0)  # a late, older status
    assert row() == ("completed", 12, "") and state_events() == [("gv1@n1", "completed")]
    rebalance.forget_reports()


def test_agent_clock_offset(monkeypatch):
    """The agent's wall clock and its test-only offset (tests/fault_matrix.py sets it to +-10 minutes)."""
    import time

    from agent import clock

    monkeypatch.setenv(clock.OFFSET_ENV, "-600")
    assert clock._offset() == -600.0
    monkeypatch.setenv(clock.OFFSET_ENV, "")
    assert clock._offset() == 0.0
    monkeypatch.setenv(clock.OFFSET_ENV, "ten minutes")
    with pytest.raises(SystemExit, match="must be a number of seconds, not 'ten minutes'"):
        clock._offset()
    monkeypatch.setattr(clock, "OFFSET", 600.0)
    assert abs(clock.now() - time.time() - 600.0) < 1


def test_mount_argv_backup_volfile_servers():
    """mount.glusterfs gives every volfile server one port (server-port): the backups are the servers on
    the port most of them use; IPv6 backups are bracketed, as its backup-volfile-servers parser wants."""
    from control.cli.errors import CliError
    from control.cli.volumes import mount_argv

    def servers(*pairs: tuple[str, int]) -> list[dict]:
        return [{"node": f"n{i}", "address": a, "port": p} for i, (a, p) in enumerate(pairs)]

    def options_and_source(*pairs: tuple[str, int]) -> tuple[str, str]:
        argv = mount_argv("gv1", "/mnt/gv1", servers(*pairs), "/var/log/gv1.log")
        assert argv[:4] == ["mount", "-t", "glusterfs", "-o"] and argv[-1] == "/mnt/gv1"
        return argv[4].removeprefix("log-file=/var/log/gv1.log"), argv[5]

    assert options_and_source(("10.0.0.1", 24007)) == ("", "10.0.0.1:/gv1")
    # one port: the first server is mounted from, every other address is a backup once, in brick order
    assert options_and_source(("10.0.0.1", 24007), ("10.0.0.2", 24007), ("10.0.0.1", 24007), ("fd00::3", 24007),
                              ("10.0.0.2", 24007)) == (",backup-volfile-servers=10.0.0.2:[fd00::3]", "10.0.0.1:/gv1")  # fmt: skip
    assert options_and_source(("fd00::1", 24010), ("node2", 24010)) == (
        ",backup-volfile-servers=node2,server-port=24010",
        "fd00::1:/gv1",  # mount.glusterfs takes the host before the last ':' of the source
    )
    # several ports: the one most servers use; servers on another port are left out
    assert options_and_source(("a", 24008), ("b", 24009), ("c", 24009), ("d", 24008), ("e", 24009)) == (
        ",backup-volfile-servers=c:e,server-port=24009",
        "b:/gv1",
    )
    assert options_and_source(("a", 24008), ("b", 24007), ("c", 24007), ("d", 24008)) == (  # a tie: the first's
        ",backup-volfile-servers=d,server-port=24008",
        "a:/gv1",
    )
    # agents sharing one address on different ports (as in the tests): nothing can back the first up
    assert options_and_source(("127.0.0.1", 40001), ("127.0.0.1", 40002)) == (",server-port=40001", "127.0.0.1:/gv1")
    with pytest.raises(CliError, match="no online node holding a brick"):
        mount_argv("gv1", "/mnt/gv1", [], "/var/log/gv1.log")
