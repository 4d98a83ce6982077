"""Agent reliability: subprocess deadlines, per-volume locks, task params checked before use,
a journal bounded by age, and exactly-once across an agent restart (a task interrupted by
kill -9 is reported FAILED INTERRUPTED, never run twice)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pytest

from agent import journal as journal_mod
from agent.bricks import BrickError, BrickManager
from agent.devices import run_tool
from agent.journal import Journal
from agent.params import TaskFailed, check_params
from tests.helpers import free_port, wait_until

VOLUME = {"id": str(uuid.uuid4()), "name": "gv1", "type": "Replicate"}
DAY = 86400.0


# ---- subprocess deadlines ------------------------------------------------------------------
def test_a_tool_that_hangs_is_killed_and_fails_with_etimedout():
    started = time.monotonic()
    with pytest.raises(BrickError) as err:
        run_tool(["sleep", "30"], 1.0, "n1", "/dev/loop9")
    assert time.monotonic() - started < 5
    assert str(err.value) == "ETIMEDOUT: sleep did not finish in 1 s (/dev/loop9 on node n1)"


def test_a_missing_tool_fails_with_enoent():
    with pytest.raises(BrickError, match=r"^ENOENT: no-such-mkfs is not installed on node n1"):
        run_tool(["no-such-mkfs", "/dev/x"], 5.0, "n1", "/dev/x")


def test_a_tool_that_finishes_returns_its_output():
    out = run_tool(["sh", "-c", "echo hi; exit 2"], 5.0, "n1", "/dev/x")
    assert (out.returncode, out.stdout) == (2, "hi\n")


# ---- per-volume locks ----------------------------------------------------------------------
def test_a_slow_volume_does_not_hold_up_another(tmp_path):
    bricks = BrickManager(str(tmp_path / "state"), "n1", str(uuid.uuid4()))
    slow, other = str(uuid.uuid4()), str(uuid.uuid4())
    for vid in (slow, other):
        (tmp_path / vid).mkdir()
        bricks.prepare(vid, "v" + vid[:6], [{"index": 0, "path": str(tmp_path / vid)}])
    held, release = threading.Event(), threading.Event()

    def hold_slow() -> None:
        with bricks._volume_lock(slow):  # what a long start of that volume does
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold_slow)
    holder.start()
    try:
        assert held.wait(5)
        started = time.monotonic()
        assert bricks.stop(other, "v" + other[:6]) == {"stopped_pids": []}
        assert time.monotonic() - started < 1.0
        blocked = threading.Thread(target=bricks.stop, args=(slow, "v" + slow[:6]))
        blocked.start()
        blocked.join(0.3)
        assert blocked.is_alive(), "the same volume's work must wait for its lock"
    finally:
        release.set()
        holder.join(5)
    blocked.join(5)
    assert not blocked.is_alive()
    assert bricks.desired(slow)["started"] is False


# ---- params --------------------------------------------------------------------------------
GOOD_BRICK = {"index": 0, "path": "/srv/b1", "port": 24100, "volfile_id": "gv1.n1.srv-b1"}


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        (
            "volume.create",
            {"volume": {**VOLUME, "id": "../../etc"}, "bricks": []},
            "volume id '../../etc' is not a UUID",
        ),
        ("volume.create", {"volume": {**VOLUME, "id": VOLUME["id"].upper()}, "bricks": []}, "is not a UUID"),
        ("volume.create", {"volume": {**VOLUME, "name": "a/b"}, "bricks": []}, "invalid volume name 'a/b'"),
        ("volume.create", {"volume": VOLUME}, "volume.create needs params bricks"),
        ("volume.create", {"volume": VOLUME, "bricks": [{"index": 0, "path": "srv/b"}]}, "must be absolute"),
        (
            "volume.create",
            {"volume": VOLUME, "bricks": [{"index": 0, "path": "/srv/x/../../etc"}]},
            "must be absolute and normalised (e.g. '/etc')",
        ),
        ("volume.create", {"volume": VOLUME, "bricks": [{"index": 0, "path": "/srv/b/"}]}, "normalised"),
        ("volume.create", {"volume": VOLUME, "bricks": [{"index": 0, "path": "/srv/b\0"}]}, "must be a path"),
        (
            "volume.create",
            {"volume": VOLUME, "bricks": [{"index": 1, "path": "/a"}, {"index": 1, "path": "/b"}]},
            "brick index 1 appears twice",
        ),
        ("volume.create", {"volume": VOLUME, "bricks": [{"index": True, "path": "/a"}]}, "needs an index"),
        ("volume.start", {"volume": VOLUME, "bricks": [{**GOOD_BRICK, "port": 0}], "volfiles": {}}, "port must be"),
        ("volume.start", {"volume": VOLUME, "bricks": [{**GOOD_BRICK, "port": 70000}], "volfiles": {}}, "1-65535"),
        ("volume.start", {"volume": VOLUME, "bricks": [GOOD_BRICK]}, "needs params volfiles"),
        ("volume.start", {"volume": VOLUME, "bricks": [GOOD_BRICK], "volfiles": {"k": 1}}, "volfiles must be"),
        ("volume.delete", {"volume": VOLUME, "bricks": [], "purge": "yes"}, "purge must be true or false"),
        ("volume.heal", {"volume": VOLUME}, "needs params op"),
        ("node.probe", {"path": "relative"}, "path 'relative' must be absolute"),
        ("node.probe", {"path": "/srv", "io_seconds": 600}, "io_seconds must be a number from 0 to 60"),
        ("node.probe", {"path": "/srv", "io_seconds": "5"}, "io_seconds must be a number"),
        ("device.add", {}, "exactly one of path"),
        ("device.add", {"path": "/srv/a", "device": "/dev/sdb"}, "exactly one of path"),
        ("device.add", {"device": "/dev/../etc/passwd"}, "normalised"),
        ("volume.rebalance", {"volume": {**VOLUME, "id": "x"}}, "is not a UUID"),  # a kind this module does not list
    ],
)
def test_bad_params_are_refused_before_use(kind, params, message):
    with pytest.raises(TaskFailed) as err:
        check_params(kind, params)
    assert str(err.value).startswith("EINVAL: ") and message in str(err.value)


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("node.probe", {}),
        ("node.probe", {"path": "/srv", "io_seconds": 2.5}),
        ("device.add", {"device": "/dev/sdb"}),
        ("volume.create", {"volume": VOLUME, "bricks": [{"index": 0, "path": "/srv/b1"}], "force": False}),
        ("volume.start", {"volume": VOLUME, "bricks": [GOOD_BRICK], "volfiles": {"gv1.n1.srv-b1": "x"}, "shd": None}),
        ("volume.stop", {"volume": VOLUME, "bricks": [{"index": 0, "path": "/srv/b1"}]}),
        ("volume.heal", {"volume": VOLUME, "op": "info"}),
    ],
)
def test_good_params_pass(kind, params):
    check_params(kind, params)


# ---- the journal ---------------------------------------------------------------------------
def test_the_journal_keeps_final_entries_for_seven_days_however_many(tmp_path):
    path = str(tmp_path / "journal.jsonl")
    now = 1_800_000_000.0
    jr = Journal(path, now=now)
    for i in range(3000):  # more than the old count limit: all within the week, all kept
        jr.record(f"t{i}", "DONE", kind="node.probe", now=now - 6 * DAY + i)
    jr.record("old", "DONE", kind="node.probe", now=now - 8 * DAY)
    jr.record("old-running", "RUNNING", kind="volume.start", now=now - 30 * DAY)
    jr.close()
    assert journal_mod.KEEP_SECONDS == 7 * DAY

    jr = Journal(path, now=now)  # compacted on open
    assert jr.get("t0")["state"] == "DONE" and jr.get("t2999") is not None
    assert jr.get("old") is None, "a final entry older than 7 days is forgotten"
    assert jr.get("old-running")["state"] == "RUNNING", "an interrupted task is never forgotten before it is settled"
    assert len(jr) == 3001
    jr.close()
    lines = Path(path).read_text().splitlines()
    assert len(lines) == 3001 and not any('"old"' in line for line in lines)

    jr = Journal(path, now=now + 7 * DAY)  # a week later the burst is gone too
    assert len(jr) == 1 and [e["id"] for e in jr.interrupted()] == ["old-running"]
    jr.close()


def test_the_journal_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_text(
        json.dumps({"id": "a", "state": "DONE", "reason": "", "result": None, "at": time.time()}) + '\n{"id": "b", "sta'
    )
    jr = Journal(str(path))
    assert jr.get("a")["state"] == "DONE" and jr.get("b") is None
    jr.record("c", "RUNNING", kind="volume.create")
    jr.record("c", "DONE")
    assert jr.get("c")["kind"] == "volume.create", "the kind recorded at start stays with the entry"
    jr.close()
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "c", "c"]


def _agent(tmp_path: Path):
    from agent.node import Agent
    from agent.settings import AgentSettings

    settings = AgentSettings(
        mqtt_url=f"mqtt://127.0.0.1:{free_port()}",
        token="default.placeholderplaceholder",
        node="n1",
        state_dir=str(tmp_path / "state"),
        address="127.0.0.1",
        volfile_port=free_port(),
    )
    return Agent(settings)


def test_tasks_running_at_start_are_failed_unless_safe_to_resume(tmp_path):
    from agent.node import INTERRUPTED_REASON

    (tmp_path / "state").mkdir(mode=0o700)
    jr = Journal(str(tmp_path / "state" / "journal.jsonl"))
    jr.record("probe1", "RUNNING", kind="node.probe")
    jr.record("create1", "RUNNING", kind="volume.create")
    jr.record("volfiles1", "RUNNING", kind="volume.volfiles")
    jr.record("done1", "DONE", kind="volume.start")
    jr.close()

    agent = _agent(tmp_path)
    try:
        assert sorted(agent.fail_interrupted()) == ["create1", "probe1"]
        for task_id in ("probe1", "create1"):
            entry = agent.journal.get(task_id)
            assert (entry["state"], entry["reason"]) == ("FAILED", INTERRUPTED_REASON)
        assert agent.journal.get("volfiles1")["state"] == "RUNNING"  # resumes when redelivered
        # not registered yet: the reports wait for the next registration
        assert sorted((t, s.value, r) for t, s, r, _ in agent._unsent) == [
            ("create1", "FAILED", INTERRUPTED_REASON),
            ("probe1", "FAILED", INTERRUPTED_REASON),
        ]
        assert INTERRUPTED_REASON == "INTERRUPTED: the agent restarted while the task ran; run the operation again"
    finally:
        agent.journal.close()
        agent._pool.shutdown()


# ---- exactly-once across kill -9 (real processes) -----------------------------------------------
def test_an_agent_killed_mid_task_reports_it_interrupted_and_never_runs_it_twice(stack):
    st = stack
    agent = st.agent("n1")
    wait_until(lambda: st.node_state("n1") == "Online", timeout=30, what="n1 Online")
    probe_dir = st.tmp / "probe"
    probe_dir.mkdir()
    task_id = st.cli.json("node", "probe", "n1", "--path", str(probe_dir), "--io-seconds", "30")["id"]
    wait_until(lambda: st.cli.json("task", "show", task_id)["state"] == "RUNNING", timeout=20, what="probe RUNNING")

    agent.kill9()
    started = time.monotonic()
    agent.start()
    task = wait_until(
        lambda: (t := st.cli.json("task", "show", task_id))["state"] in ("DONE", "FAILED") and t,
        timeout=30,
        what="the probe final",
    )
    recovery = time.monotonic() - started
    assert task["state"] == "FAILED", task
    assert task["reason"].startswith("INTERRUPTED: the agent restarted while the task ran"), task
    assert agent.log().count(f"executing task {task_id}") == 1, agent.log()
    entries = [json.loads(line) for line in (agent.state_dir / "journal.jsonl").read_text().splitlines()]
    assert [e["state"] for e in entries if e["id"] == task_id][-1] == "FAILED"
    # redelivered after the restart (retained task): acknowledged from the journal, still not run again
    wait_until(lambda: st.node_state("n1") == "Online", timeout=20, what="n1 Online again")
    assert agent.log().count(f"executing task {task_id}") == 1
    print(f"interrupted task settled {recovery:.1f} s after the agent restarted")
