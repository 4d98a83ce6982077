"""Live volumes on real GlusterFS: bricks fetch volfiles from the agents, stock mounts (on the node and
from a non-loopback address, as a remote host mounts), live volfile pushes that reach only the processes
whose volfile changed, agent restarts and kills, heal info and index heal."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import random
import re
import signal
import socket
import subprocess
from collections.abc import Iterator

import pytest

from agent.facts import address_towards
from control.cli.volumes import mount_argv
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


def set_option(st, name: str, key: str, value: str | None) -> dict[str, dict]:
    """`volume set NAME KEY VALUE` (`volume reset NAME KEY` for None) through the REST API the CLI uses;
    waits for its volume.volfiles tasks and returns their results by node."""
    base = f"/api/v1/clusters/default/volumes/{name}/options"
    answer = st.cli.api("POST", base, json={key: value}) if value is not None else st.cli.api("DELETE", f"{base}/{key}")
    assert answer.status_code == 202, answer.text
    assert answer.json()["changed"] == {key: value}
    return volfile_results(st, answer.json()["tasks"])


def volfile_results(st, tasks: list[str]) -> dict[str, dict]:
    assert len(tasks) == 3

    def done():
        states = [st.cli.api("GET", f"/api/v1/tasks/{t}").json() for t in tasks]
        assert not [t for t in states if t["state"] == "FAILED"], states
        return all(t["state"] == "DONE" for t in states) and states

    finished = wait_until(done, timeout=30, what="volume.volfiles tasks DONE")
    assert all(t["kind"] == "volume.volfiles" for t in finished)
    return {t["node"]: t["result"] for t in finished}


def assert_brick_only(results: dict[str, dict], brick_keys: dict[str, str]) -> None:
    """Each node changed only its brick's volfile and told only its brick (not the shd, not the mount)."""
    assert {n: r["changed"] for n, r in results.items()} == {n: [k] for n, k in brick_keys.items()}, results
    assert {n: r["notified"] for n, r in results.items()} == dict.fromkeys(brick_keys, 1), results


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

    # a pushed volfile reaches the running bricks: read-only on, then off, same brick processes. A brick
    # option changes the brick volfiles only, so self-heal daemons and the mount are not told
    brick_keys = {n: cmdline(pid)[cmdline(pid).index("--volfile-id") + 1] for n, pid in zip(NODES, pids)}
    assert_brick_only(set_option(st, "live", "features.read-only", "on"), brick_keys)
    wait_until(lambda: write_fails_with(mnt, "ro.txt") == errno.EROFS, timeout=20, what="EROFS through the mount")
    assert_brick_only(set_option(st, "live", "features.read-only", None), brick_keys)
    wait_until(lambda: write_fails_with(mnt, "rw.txt") == 0, timeout=20, what="writes work again")
    # a client option changes the client volfile only: the mount (it fetched from n1) is the one told
    client_only = set_option(st, "live", "performance.write-behind-window-size", "2MB")
    assert {n: r["changed"] for n, r in client_only.items()} == {n: ["live"] for n in NODES}, client_only
    assert [client_only[n]["notified"] for n in NODES] == [1, 0, 0], client_only
    assert write_fails_with(mnt, "wb.txt") == 0
    # the same volfiles again change nothing and tell nobody
    pushed = st.cli.api("POST", "/api/v1/clusters/default/volumes/live/volfiles")
    assert pushed.status_code == 202, pushed.text
    unchanged = volfile_results(st, pushed.json()["tasks"])
    assert all(r == {"changed": [], "notified": 0} for r in unchanged.values()), unchanged
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
    # n1's brick gets it through its reconnected connection
    assert_brick_only(set_option(st, "live", "features.read-only", "on"), brick_keys)
    wait_until(lambda: write_fails_with(mnt, "ro2.txt") == errno.EROFS, timeout=30, what="EROFS after restart")
    assert_brick_only(set_option(st, "live", "features.read-only", None), brick_keys)
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


@contextlib.contextmanager
def non_loopback_address() -> Iterator[str]:
    """An address of this host that is not loopback, so a connection from it looks like a remote host's:
    the one that routes outward, or, on a host with none, a TEST-NET-2 address added to lo for the test."""
    ip = address_towards("192.0.2.1", 9)  # no packet is sent
    if not ipaddress.ip_address(ip).is_loopback:
        yield ip
        return
    added = f"198.51.100.{random.randrange(1, 255)}"
    subprocess.run(["ip", "address", "add", f"{added}/32", "dev", "lo"], check=True)
    try:
        yield added
    finally:
        subprocess.run(["ip", "address", "del", f"{added}/32", "dev", "lo"], check=False)


@needs_root
def test_remote_client_mounts_with_the_plain_volfile_and_heal_refusals(stack):
    """A stock `mount -t glusterfs` that reaches the node through a non-loopback address, as a remote host
    does, gets the client volfile without credentials and reads and writes; its unreachable first server
    is skipped for the backup. Heal is refused on a distribute volume."""
    st = stack
    with non_loopback_address() as ip:
        agent = st.agent("r1", extra=["--address", ip])  # the last --address wins
        (st.tmp / "bricks" / "r1").mkdir(parents=True)
        wait_until(lambda: st.node_state("r1") == "Online", what="r1 Online")
        st.cli.run("volume", "create", "plain", brick(st, "r1", "plain"), "--wait")
        [server] = volume(st, "plain")["volfile_servers"]
        assert (server["address"], server["port"]) == (ip, agent.volfile_port)
        volume_id = volume(st, "plain")["id"]
        stored = st.tmp / "agent-r1" / "volumes" / volume_id / "volfiles"
        plain, trusted = (stored / "plain.vol").read_text(), (stored / "trusted%2Fplain.vol").read_text()
        assert "password" in trusted and "password" not in plain and f"remote-host {ip}" in plain

        mnt = st.tmp / "mnt-remote"
        mnt.mkdir()
        nobody = {"address": "127.0.0.2", "port": server["port"]}  # the agent listens on 127.0.0.1 and ip
        argv = mount_argv("plain", str(mnt), [nobody, server], str(st.tmp / "remote-client.log"))
        assert f"backup-volfile-servers={ip}" in argv[4] and argv[-2] == "127.0.0.2:/plain"
        subprocess.run(argv, check=True, timeout=60, capture_output=True)
        try:
            (mnt / "remote.txt").write_text("written by a remote-style client\n")
            assert (mnt / "remote.txt").read_text() == "written by a remote-style client\n"
            on_brick = os.path.join(brick_dir(st, brick(st, "r1", "plain")), "remote.txt")
            assert open(on_brick).read() == "written by a remote-style client\n"
        finally:
            subprocess.run(["umount", str(mnt)], check=False)
        served = re.findall(rf"GETSPEC from {re.escape(ip)}:\d+: volfile plain \(flags \d+, (\d+) bytes\)", agent.log())
        assert served and {int(n) for n in served} == {len(plain.encode())}, agent.log()[-2000:]

    out = st.cli.run("volume", "heal", "plain", "info", check=False)
    assert out.returncode == 1 and "only replicate" in out.stderr
    out = st.cli.run("volume", "heal", "plain", "bogus", check=False)
    assert out.returncode == 1 and "info split-brain" in out.stderr
