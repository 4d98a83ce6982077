"""Live volumes on real GlusterFS: bricks fetch volfiles from the agents, stock mounts, live volfile
pushes, agent restarts and kills, heal info and index heal."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import sqlite3
import subprocess

import pytest

from tests.helpers import Agent, mounts_under, wait_until
from tests.test_volfile_server import RawClient
from tests.test_volumes import NODES, brick, brick_dir, volume, wait_bricks

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="bricks set trusted xattrs and mounts need root")


def test_volfile_port_in_use_is_a_clear_startup_error(stack):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        agent = stack.agent("n9", extra=["--volfile-port", str(port)])
        assert agent.wait_exit(20) == 3
    log = agent.log()
    assert f"127.0.0.1:{port}" in log and "--volfile-port" in log and "address already in use" in log.lower()


@pytest.fixture
def trio(stack):
    """A server and three agents on this host (each its own volfile port), each with a brick folder."""
    for node in NODES:
        stack.agent(node)
        (stack.tmp / "bricks" / node).mkdir(parents=True)
    wait_until(lambda: all(stack.node_state(n) == "Online" for n in NODES), what="three nodes Online")
    return stack


def cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().decode().split("\0")[:-1]


def agent_of(st, node: str) -> Agent:
    return next(p for p in st.procs if isinstance(p, Agent) and p.node == node)


def restart_agent(st, node: str) -> None:
    agent_of(st, node).start()
    wait_until(lambda: st.node_state(node) == "Online", timeout=30, what=f"{node} Online again")


def stock_mount(st, name: str) -> str:
    mnt = st.tmp / f"mnt-{name}"
    mnt.mkdir(exist_ok=True)
    out = st.cli.run("mount", name, str(mnt)).stdout
    assert "mounted on" in out
    with open("/proc/mounts") as fh:
        assert any(line.split()[1] == str(mnt) and line.split()[2] == "fuse.glusterfs" for line in fh)
    return str(mnt)


def set_options(st, name: str, options: dict[str, str]) -> None:
    """Change a volume's options in the store (volume set is another feature) and push its volfiles."""
    with sqlite3.connect(st.server.data_dir / "glusterctl.db") as db:
        db.execute("UPDATE volume SET options = ? WHERE name = ?", (json.dumps(options, sort_keys=True), name))
    pushed = st.cli.api("POST", f"/api/v1/clusters/default/volumes/{name}/volfiles")
    assert pushed.status_code == 202, pushed.text
    tasks = pushed.json()["tasks"]
    assert len(tasks) == 3

    def done():
        states = [st.cli.api("GET", f"/api/v1/tasks/{t}").json() for t in tasks]
        assert not [t for t in states if t["state"] == "FAILED"], states
        return all(t["state"] == "DONE" for t in states) and states

    for task in wait_until(done, timeout=30, what="volume.volfiles tasks DONE"):
        assert task["kind"] == "volume.volfiles"
        assert any(k.startswith(f"{name}.") for k in task["result"]["changed"]), task["result"]
        assert task["result"]["notified"] >= 1


def write_fails_with(mnt: str, name: str) -> int:
    try:
        with open(os.path.join(mnt, name), "w") as fh:
            fh.write("x")
        return 0
    except OSError as exc:
        return exc.errno or -1


def brick_pids(st, name: str) -> list[int]:
    return [b["pid"] for b in wait_bricks(st, name, "Online")["bricks"]]


@needs_root
def test_bricks_fetch_volfiles_stock_mount_live_push_and_agent_restarts(trio):
    st = trio
    st.cli.run("volume", "create", "live", "--replica", "3", *[brick(st, n, "live") for n in NODES], "--wait")
    pids = brick_pids(st, "live")
    for pid in pids:
        argv = cmdline(pid)
        assert "-f" not in argv and argv[argv.index("-s") + 1] == "127.0.0.1"
        assert argv[argv.index("--volfile-id") + 1].startswith("live.127.0.0.1.")
    ports = [agent_of(st, n).volfile_port for n in NODES]
    used = [int(cmdline(pid)[cmdline(pid).index("--volfile-server-port") + 1]) for pid in pids]
    assert used == ports  # each brick fetches from its own node's agent
    v = volume(st, "live")
    assert [(s["node"], s["port"]) for s in v["volfile_servers"]] == list(zip(NODES, ports))
    assert all(st.nodes()[n]["facts"]["volfile_port"] == agent_of(st, n).volfile_port for n in NODES)

    mnt = stock_mount(st, "live")
    with open(os.path.join(mnt, "before.txt"), "w") as fh:
        fh.write("written before\n")

    # a pushed volfile reaches the running bricks: read-only on, then off, same brick processes
    set_options(st, "live", {"features.read-only": "on"})
    wait_until(lambda: write_fails_with(mnt, "ro.txt") == errno.EROFS, timeout=20, what="EROFS through the mount")
    set_options(st, "live", {})
    wait_until(lambda: write_fails_with(mnt, "rw.txt") == 0, timeout=20, what="writes work again")
    assert brick_pids(st, "live") == pids

    # an agent restart serves the same volfiles, and the processes reconnect to the new server
    n1 = agent_of(st, "n1")
    key = cmdline(pids[0])[cmdline(pids[0]).index("--volfile-id") + 1]
    client = RawClient(n1.volfile_port)
    before = client.getspec(key)
    client.close()
    assert before[0] > 0 and "auth.login" in before[2]
    n1.stop()
    assert all(os.path.exists(f"/proc/{pid}") for pid in pids)  # processes outlive the agent
    restart_agent(st, "n1")
    client = RawClient(n1.volfile_port)
    assert client.getspec(key) == before
    client.close()
    # the brick reconnects to the new server by itself and fetches its volfile again
    wait_until(  # one GETSPEC of the key was the test's own
        lambda: n1.log().rsplit("===== start", 1)[1].count(f": volfile {key} (") >= 2,
        timeout=30,
        what="n1's brick reconnected to the restarted agent",
    )
    set_options(st, "live", {"features.read-only": "on"})  # n1's brick got it through a reconnected connection
    wait_until(lambda: write_fails_with(mnt, "ro2.txt") == errno.EROFS, timeout=30, what="EROFS after restart")
    set_options(st, "live", {})
    wait_until(lambda: write_fails_with(mnt, "rw2.txt") == 0, timeout=20, what="writes work again")
    assert brick_pids(st, "live") == pids

    # killing the agent that served the mount's volfile leaves the mount working
    n1.kill9()
    with open(os.path.join(mnt, "after-kill.txt"), "w") as fh:
        fh.write("written after the kill\n")
    assert open(os.path.join(mnt, "before.txt")).read() == "written before\n"
    assert str(mnt) in mounts_under(st.tmp)
    restart_agent(st, "n1")
    subprocess.run(["umount", mnt], check=True)
    for n in NODES:
        assert os.path.exists(os.path.join(brick_dir(st, brick(st, n, "live")), "after-kill.txt"))


def heal_json(st, *args: str) -> dict:
    return st.cli.json("volume", "heal", "healme", *args)


@needs_root
def test_heal_info_and_index_heal(trio):
    st = trio
    bricks = [brick(st, n, "healme") for n in NODES]
    st.cli.run("volume", "create", "healme", "--replica", "3", *bricks, "--wait")
    pids = brick_pids(st, "healme")
    wait_until(lambda: all(s["state"] == "Online" for s in volume(st, "healme")["self_heal"]), what="shds Online")
    mnt = stock_mount(st, "healme")
    clean = heal_json(st, "info")
    assert [b["entries"] for b in clean["bricks"]] == [0, 0, 0]
    assert [b["brick"] for b in clean["bricks"]] == [spec for spec in bricks]

    # n3's brick goes down (its agent stopped first, or its supervisor would restart the brick)
    agent_of(st, "n3").stop()
    os.kill(pids[2], signal.SIGKILL)
    wait_until(lambda: not os.path.exists(f"/proc/{pids[2]}/cmdline") or not cmdline(pids[2]), what="brick gone")
    for i in range(100):
        with open(os.path.join(mnt, f"f{i:03d}"), "w") as fh:
            fh.write(f"file {i}\n")
    info = heal_json(st, "info")
    up = {b["brick"]: b for b in info["bricks"]}
    assert up[bricks[0]]["entries"] >= 100 and up[bricks[1]]["entries"] >= 100, info
    assert up[bricks[0]]["status"] == "Connected" and len(up[bricks[0]]["files"]) == 100
    assert up[bricks[2]]["status"] != "Connected" and up[bricks[2]]["entries"] is None
    summary = heal_json(st, "summary")
    assert {b["brick"]: b["pending"] for b in summary["bricks"]}[bricks[0]] >= 100
    assert all(b["entries"] == 0 for b in heal_json(st, "info", "split-brain")["bricks"][:2])
    table = st.cli.run("volume", "heal", "healme", "info").stdout
    assert f"Brick {bricks[0]}\nStatus: Connected" in table and "/f000" in table

    restart_agent(st, "n3")  # its supervisor starts the brick again
    wait_bricks(st, "healme", "Online", timeout=30)

    def launched() -> dict | None:
        index = heal_json(st)
        ok = index["nodes"] and all(n["state"] == "DONE" and n["triggered"] for n in index["nodes"])
        return index if ok else None

    # the self-heal daemons reconnect to the restarted brick on their own schedule; until then the
    # daemon answers "Brick is not connected" for it, as glusterd's `volume heal` would report
    wait_until(launched, timeout=60, interval=2, what="an index heal launched on every node")
    assert "launched" in st.cli.run("volume", "heal", "healme").stdout
    wait_until(
        lambda: all(b["entries"] == 0 for b in heal_json(st, "info")["bricks"]),
        timeout=120,
        interval=2,
        what="no entries left to heal",
    )
    healed = brick_dir(st, bricks[2])
    assert all(open(os.path.join(healed, f"f{i:03d}")).read() == f"file {i}\n" for i in range(100))
    subprocess.run(["umount", mnt], check=True)


@needs_root
def test_heal_refusals(trio):
    st = trio
    st.cli.run("volume", "create", "plain", brick(st, "n1", "plain"), "--wait")
    out = st.cli.run("volume", "heal", "plain", "info", check=False)
    assert out.returncode == 1 and "only replicate" in out.stderr
    out = st.cli.run("volume", "heal", "plain", "bogus", check=False)
    assert out.returncode == 1 and "info split-brain" in out.stderr
