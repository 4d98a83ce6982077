"""Volume options through the CLI and REST on a real server and agents: set, get, reset, checks, volfile tasks."""

from __future__ import annotations

import errno
import glob
import os
import re
import signal
import subprocess
from urllib.parse import unquote

import httpx
import pytest

from tests.helpers import Agent, gluster_pids_under, mounts_under, wait_until
from tests.test_volfile_server import RawClient

NODES = ("n1", "n2", "n3")


@pytest.fixture
def created(stack):
    """A replica 3 volume, created (not started) on three agents."""
    for node in NODES:
        stack.agent(node)
        (stack.tmp / "bricks" / node).mkdir(parents=True)
    wait_until(lambda: all(stack.node_state(n) == "Online" for n in NODES), what="three nodes Online")
    bricks = [f"{n}:{stack.tmp / 'bricks' / n / 'ov'}" for n in NODES]
    stack.cli.run("volume", "create", "ov", "--replica", "3", "--no-start", *bricks, "--wait")
    return stack


def _option(st, key: str) -> dict:
    rows = st.cli.json("volume", "get", "ov", key)
    assert len(rows) == 1
    return rows[0]


def _volfile_tasks(st) -> list[dict]:
    tasks = st.cli.api("GET", "/api/v1/tasks", params={"cluster": "default"}).json()
    return [t for t in tasks if t["kind"] == "volume.volfiles"]


def _stored_volfiles(st, node: str, volume_id: str) -> dict[str, str]:
    """The volfiles the node's agent keeps (and serves) for the volume, by key."""
    folder = st.tmp / f"agent-{node}" / "volumes" / volume_id / "volfiles"
    return {unquote(path.name[: -len(".vol")]): path.read_text() for path in folder.glob("*.vol")}


def _first_option_event(st) -> str:
    """The data line of the first volume.option event in the backlog of the server-sent event stream."""
    headers = {"Authorization": f"Bearer {st.cli.token}"}
    params = {"after": 0, "kind": "volume.option"}
    with httpx.stream("GET", f"{st.server.url}/api/v1/events", headers=headers, params=params, timeout=20) as resp:
        for line in resp.iter_lines():
            if line.startswith("data:") and "volume.option" in line:
                return line
    raise AssertionError("no volume.option event")


def test_set_get_reset_and_volfile_tasks(created):
    st = created
    assert _option(st, "features.read-only") == {**_option(st, "read-only"), "key": "features.read-only"}
    assert _option(st, "features.read-only")["is_default"] is True
    assert _option(st, "cluster.granular-entry-heal")["source"] == "create"

    out = st.cli.run("volume", "set", "ov", "read-only", "on").stdout  # short form -> canonical key
    assert "features.read-only = on" in out
    row = _option(st, "features.read-only")
    assert row["value"] == "on" and row["source"] == "set" and not row["is_default"]
    tasks = wait_until(
        lambda: (
            len(_volfile_tasks(st)) == 3
            and all(t["state"] == "DONE" for t in _volfile_tasks(st))
            and _volfile_tasks(st)
        ),
        what="a volfile task per node, done",
    )
    by_node = {t["node"]: t["params"] for t in tasks}
    assert sorted(by_node) == list(NODES)
    volume_id = st.cli.json("volume", "info", "ov")["id"]
    for node, params in by_node.items():
        # readers of a task see volfiles by size and digest only: they carry the volume's password
        assert all(text.startswith("<volfile: ") for text in params["volfiles"].values())
        volfiles = _stored_volfiles(st, node, volume_id)
        assert set(volfiles) == set(params["volfiles"])
        brick_keys = [k for k in volfiles if k.startswith("ov.")]
        assert len(brick_keys) == 1 and brick_keys[0].endswith(f"-bricks-{node}-ov")
        assert set(volfiles) == {*brick_keys, "shd/ov", "ov", "trusted/ov"}
        brick = next(text for key, text in volfiles.items() if key.startswith("ov."))
        assert "option read-only on" in brick
        assert "read-only" not in volfiles["ov"]  # the client graph holds no read-only xlator

    # several at once over REST; a client option removes an xlator from the client graph
    answer = st.cli.api(
        "PUT",
        "/api/v1/clusters/default/volumes/ov/options",
        json={"performance.write-behind": "off", "network.ping-timeout": "20"},
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["changed"] == {"performance.write-behind": "off", "network.ping-timeout": "20"}
    assert len(answer.json()["tasks"]) == 3
    info = st.cli.json("volume", "info", "ov")
    assert info["options"] == {
        "features.read-only": "on",
        "performance.write-behind": "off",
        "network.ping-timeout": "20",
    }
    text = st.cli.run("volume", "info", "ov").stdout
    assert "performance.write-behind: off" in text

    # errors say what is allowed
    for args, message in (
        (["performance.write-behnd", "off"], "did you mean performance.write-behind"),
        (["network.ping-timeout", "5000"], "[0 - 1013]"),
        (["cluster.quorum-type", "most"], "one of none, auto, fixed"),
        (["disperse.eager-lock", "on"], ""),  # not checked against an xlator the graphs lack: accepted
        (["cluster.nufa", "on"], "not supported"),
        (["cluster.quorum-count", "4"], "must be in [1 - 3]"),
    ):
        result = st.cli.run("volume", "set", "ov", *args, check=False)
        if message:
            assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
        else:
            assert result.returncode == 0, result.stderr

    # events on the stream
    assert '"key":"features.read-only","reset":false,"value":"on"' in _first_option_event(st)

    # kept across a server restart
    st.server.stop()
    st.server.start()
    assert _option(st, "features.read-only")["value"] == "on"

    out = st.cli.run("volume", "reset", "ov", "features.read-only").stdout
    assert "success: features.read-only" in out
    assert _option(st, "features.read-only")["is_default"] is True
    assert "not set" in st.cli.run("volume", "reset", "ov", "features.read-only").stdout
    st.cli.run("volume", "reset", "ov", "all")
    assert st.cli.json("volume", "info", "ov")["options"] == {}
    table = st.cli.run("volume", "get", "ov").stdout
    assert "performance.write-behind" in table and "(DEFAULT)" in table


def test_read_only_reaches_running_bricks_without_restart(stack):
    """features.read-only on/off takes effect on started bricks and a live mount: same pids, no remount."""
    st = stack
    for node in NODES:
        st.agent(node)
        (st.tmp / "bricks" / node).mkdir(parents=True)
    wait_until(lambda: all(st.node_state(n) == "Online" for n in NODES), what="three nodes Online")
    bricks = [f"{n}:{st.tmp / 'bricks' / n / 'lv'}" for n in NODES]
    st.cli.run("volume", "create", "lv", "--replica", "3", *bricks, "--wait")

    def pids() -> list[int]:
        return [b["pid"] for b in st.cli.json("volume", "status", "lv")["bricks"]]

    wait_until(lambda: all(pids()), what="brick pids")
    before = pids()
    # the processes themselves, not only what the heartbeats say: the brick glusterfsd under the brick folders
    running = sorted(gluster_pids_under(st.tmp / "bricks"))
    assert running == sorted(before)
    mnt = st.tmp / "mnt-lv"
    mnt.mkdir()
    st.cli.run("mount", "lv", str(mnt))
    try:
        (mnt / "a.txt").write_text("one\n")
        st.cli.run("volume", "set", "lv", "features.read-only", "on", "--wait")

        def refused() -> bool:
            try:
                (mnt / "b.txt").write_text("two\n")
            except OSError as exc:
                return exc.errno == errno.EROFS
            os.unlink(mnt / "b.txt")
            return False

        wait_until(refused, timeout=20, what="writes refused with EROFS")
        st.cli.run("volume", "set", "lv", "features.read-only", "off", "--wait")

        def accepted() -> bool:
            try:
                (mnt / "c.txt").write_text("three\n")
            except OSError:
                return False
            return True

        wait_until(accepted, timeout=20, what="writes accepted again")
        assert pids() == before
        assert sorted(gluster_pids_under(st.tmp / "bricks")) == running
        assert str(mnt) in mounts_under(st.tmp)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_create_option_normalised_and_checked_as_volume_set(stack):
    """`volume create --option` takes short keys and aliases (stored under the full name) and refuses what
    `volume set` refuses, with the same message; GET .../options/all is a 404 that points to the list."""
    st = stack
    st.agent("n1")
    (st.tmp / "bricks").mkdir()
    wait_until(lambda: st.node_state("n1") == "Online", what="n1 Online")
    brick = f"n1:{st.tmp / 'bricks' / 'cv'}"
    bad = st.cli.run("volume", "create", "cv", brick, "--no-start", "--option", "ping-timeout=5000", check=False)
    assert bad.returncode == 1 and "[0 - 1013]" in bad.stderr, bad.stderr
    bad = st.cli.run("volume", "create", "cv", brick, "--no-start", "--option", "write-behnd=off", check=False)
    assert bad.returncode == 1 and "did you mean write-behind" in bad.stderr, bad.stderr
    assert st.cli.json("volume", "list") == []  # nothing was created by the refused requests
    st.cli.run(
        "volume", "create", "cv", brick, "--no-start", "--wait",
        "--option", "write-behind=off", "--option", "read-only=on", "--option", "network.ping-timeout=20",
    )  # fmt: skip
    assert st.cli.json("volume", "info", "cv")["options"] == {
        "performance.write-behind": "off",
        "features.read-only": "on",
        "network.ping-timeout": "20",
    }
    # the same check as volume set: the message of the create refusal is the set refusal's
    set_err = st.cli.run("volume", "set", "cv", "ping-timeout", "5000", check=False).stderr
    create_err = st.cli.run(
        "volume", "create", "cv2", f"n1:{st.tmp / 'bricks' / 'cv2'}", "--option", "ping-timeout=5000", check=False
    ).stderr
    assert set_err.replace("'cv'", "'cv2'") == create_err, (set_err, create_err)

    base = "/api/v1/clusters/default/volumes/cv/options"
    one = st.cli.api("GET", f"{base}/write-behind")
    assert one.status_code == 200 and one.json()["key"] == "performance.write-behind" and one.json()["value"] == "off"
    every = st.cli.api("GET", f"{base}/all")
    assert every.status_code == 404 and "not one option" in every.json()["detail"], every.text
    assert "GET .../volumes/cv/options" in every.json()["detail"]
    listed = st.cli.api("GET", base)
    assert listed.status_code == 200 and len(listed.json()) > 300


# ---- on live processes (root: bricks set trusted xattrs, mounts need FUSE) -------------------------
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="bricks set trusted xattrs and mounts need root")


@pytest.fixture
def single(stack):
    """One agent and a started one-brick distribute volume 'sv' on it."""
    stack.agent("n1")
    (stack.tmp / "bricks").mkdir()
    wait_until(lambda: stack.node_state("n1") == "Online", what="n1 Online")
    stack.cli.run("volume", "create", "sv", f"n1:{stack.tmp / 'bricks' / 'sv'}", "--wait", timeout=120)
    return stack


def _client_pid(mnt) -> int:
    pids = [p for p in gluster_pids_under(mnt) if "--volfile-id" in " ".join(_cmdline(p))]
    assert len(pids) == 1, pids
    return pids[0]


def _cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().decode().split("\0")[:-1]


def _statedump(pid: int) -> tuple[int, set[str]]:
    """SIGUSR1 to a glusterfs process; from its statedump (glusterdump.PID.dump.TIME in the directory the
    binary reports), the active graph's number and its xlators as TYPE.NAME. The dump is removed."""
    argv = _cmdline(pid)
    assert not any(a.startswith("--statedump") for a in argv), argv  # the binary's default directory applies
    where = subprocess.run(
        [os.readlink(f"/proc/{pid}/exe"), "--print-statedumpdir"], capture_output=True, text=True, check=True
    ).stdout.strip()
    before = set(glob.glob(f"{where}/glusterdump.{pid}.dump.*"))
    os.kill(pid, signal.SIGUSR1)

    def written() -> str | None:
        for path in set(glob.glob(f"{where}/glusterdump.{pid}.dump.*")) - before:
            with open(path) as fh:
                text = fh.read()
            if "DUMP-END-TIME" in text:
                os.unlink(path)
                return text
        return None

    dump = wait_until(written, timeout=20, what=f"a statedump of {pid} in {where}")
    found = re.search(r"^\[active graph - (\d+)\]$", dump, re.M)
    assert found, dump[:2000]
    active = dump[found.end() :].split("\n[oldgraph", 1)[0]  # graphs switched away from follow
    return int(found.group(1)), set(re.findall(r"^\[([\w-]+/[\w-]+\.[\w.-]+) - Memory usage\]$", active, re.M))


def _write_read(mnt, name: str) -> bool:
    path = os.path.join(mnt, name)
    try:
        with open(path, "w") as fh:
            fh.write(name)
        with open(path) as fh:
            return fh.read() == name
    except OSError:
        return False


@needs_root
def test_client_option_reaches_a_mounted_client_without_remount(single):
    """performance.write-behind off takes write-behind out of the mounted client's graph: the client
    switches graphs in place (same pid, still mounted, usable) and its statedump no longer lists it.
    GlusterFS's fuse moves to a new graph on the first request after it is up: the waits touch the mount."""
    st = single
    mnt = st.tmp / "mnt-sv"
    mnt.mkdir()
    log = st.tmp / "mnt-sv.log"
    st.cli.run("mount", "sv", str(mnt), "--log-file", str(log))
    try:
        pid = _client_pid(mnt)
        assert _write_read(mnt, "before.txt")
        wait_until(lambda: "switched to graph" in log.read_text(), what="the first graph in the client log")
        switches = log.read_text().count("switched to graph")
        graph, xlators = _statedump(pid)
        assert {"performance/write-behind.sv-write-behind", "protocol/client.sv-client-0"} <= xlators, xlators

        st.cli.run("volume", "set", "sv", "performance.write-behind", "off", "--wait")

        def switched() -> bool:
            os.listdir(mnt)  # fuse moves to a new graph on the first request after that graph is up
            return log.read_text().count("switched to graph") > switches

        wait_until(switched, timeout=30, what="a graph switch in the client log")
        wait_until(lambda: _statedump(pid)[0] > graph, timeout=20, what="a new active graph in the statedump")
        graph, after = _statedump(pid)
        assert after == xlators - {"performance/write-behind.sv-write-behind"}, (xlators, after)
        assert _client_pid(mnt) == pid and str(mnt) in mounts_under(st.tmp)
        assert _write_read(mnt, "after.txt") and (mnt / "before.txt").read_text() == "before.txt"

        st.cli.run("volume", "reset", "sv", "performance.write-behind", "--wait")
        wait_until(lambda: os.listdir(mnt) and _statedump(pid)[0] > graph, timeout=30, what="a graph after the reset")
        assert _statedump(pid)[1] == xlators
        assert _client_pid(mnt) == pid and _write_read(mnt, "again.txt")
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@needs_root
def test_options_survive_an_agent_restart(single):
    """The restarted agent serves the stored volfiles: a brick started again while it was down gets
    features.read-only, and a reset after the restart reaches that brick."""
    st = single
    st.cli.run("volume", "set", "sv", "read-only", "on", "--wait")
    mnt = st.tmp / "mnt-sv"
    mnt.mkdir()
    st.cli.run("mount", "sv", str(mnt), "--log-file", str(st.tmp / "mnt-sv.log"))
    try:
        wait_until(lambda: _write_errno(mnt, "ro.txt") == errno.EROFS, timeout=20, what="EROFS through the mount")
        # the brick's pid comes with the node's next heartbeat
        old = wait_until(
            lambda: st.cli.json("volume", "status", "sv")["bricks"][0]["pid"], what="the brick's pid from a heartbeat"
        )
        key = _cmdline(old)[_cmdline(old).index("--volfile-id") + 1]
        agent = next(p for p in st.procs if isinstance(p, Agent) and p.node == "n1")
        agent.stop()
        os.kill(old, signal.SIGKILL)  # the agent is down: nothing restarts the brick until it is back
        wait_until(lambda: not os.path.exists(f"/proc/{old}") or not _cmdline(old), what="the brick gone")

        agent.start()
        wait_until(lambda: st.node_state("n1") == "Online", timeout=30, what="n1 Online again")
        client = RawClient(agent.volfile_port)
        op_ret, _, text = client.getspec(key)
        client.close()
        assert op_ret > 0 and "option read-only on" in text
        new = wait_until(
            lambda: (
                (b := st.cli.json("volume", "status", "sv")["bricks"][0])["state"] == "Online"
                and b["pid"] not in (None, old)
                and b["pid"]
            ),
            timeout=30,
            what="the brick started again by the restarted agent",
        )
        assert st.cli.json("volume", "info", "sv")["options"] == {"features.read-only": "on"}
        wait_until(lambda: _write_errno(mnt, "ro2.txt") == errno.EROFS, timeout=30, what="EROFS from the new brick")

        st.cli.run("volume", "reset", "sv", "all", "--wait")
        wait_until(lambda: _write_errno(mnt, "rw.txt") == 0, timeout=30, what="writes accepted after the reset")
        assert st.cli.json("volume", "status", "sv")["bricks"][0]["pid"] == new
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def _write_errno(mnt, name: str) -> int:
    try:
        with open(os.path.join(mnt, name), "w") as fh:
            fh.write("x")
        return 0
    except OSError as exc:
        return exc.errno or -1
