"""Volume options through the CLI and REST on a real server and agents: set, get, reset, checks, volfile tasks."""

from __future__ import annotations

import errno
import os
import subprocess

import httpx
import pytest

from tests.helpers import mounts_under, wait_until

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
    tasks = wait_until(lambda: len(_volfile_tasks(st)) == 3 and _volfile_tasks(st), what="a volfile task per node")
    by_node = {t["node"]: t["params"] for t in tasks}
    assert sorted(by_node) == list(NODES)
    for node, params in by_node.items():
        volfiles = params["volfiles"]
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
        assert str(mnt) in mounts_under(st.tmp)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
