"""Volumes on real GlusterFS: real glusterfsd bricks, self-heal daemons and FUSE mounts."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from tests.helpers import gluster_pids_under, mounts_under, wait_until

NODES = ("n1", "n2", "n3")


@pytest.fixture
def trio(stack):
    """A server and three agents on this host, each with its own state dir and brick folder."""
    for node in NODES:
        stack.agent(node)
        (stack.tmp / "bricks" / node).mkdir(parents=True)
    wait_until(lambda: all(stack.node_state(n) == "Online" for n in NODES), what="three nodes Online")
    return stack


def brick(st, node: str, name: str) -> str:
    return f"{node}:{st.tmp / 'bricks' / node / name}"


def brick_dir(st, spec: str) -> str:
    return spec.split(":", 1)[1]


def volume(st, name: str) -> dict:
    return st.cli.json("volume", "status", name)


def wait_bricks(st, name: str, state: str, timeout: float = 20) -> dict:
    return wait_until(
        lambda: (v := volume(st, name)) and all(b["state"] == state for b in v["bricks"]) and v,
        timeout=timeout,
        what=f"all bricks of {name} {state}",
    )


def mount(st, name: str) -> str:
    mnt = st.tmp / f"mnt-{name}"
    mnt.mkdir(exist_ok=True)
    st.cli.run("mount", name, str(mnt))
    assert str(mnt) in mounts_under(st.tmp)
    return str(mnt)


def umount(mnt: str) -> None:
    subprocess.run(["umount", mnt], check=True)


def test_replica3_create_mount_stop_start_delete(trio):
    st = trio
    bricks = [brick(st, n, "gv1") for n in NODES]
    out = st.cli.run("volume", "create", "gv1", "--replica", "3", *bricks, "--wait").stdout
    assert "Volume creation request sent." in out and "Volume gv1 started." in out
    v = wait_bricks(st, "gv1", "Online")
    assert [b["node"] for b in v["bricks"]] == list(NODES) and len({b["port"] for b in v["bricks"]}) == 3
    assert all(b["pid"] for b in v["bricks"])
    wait_until(lambda: all(s["state"] == "Online" for s in volume(st, "gv1")["self_heal"]), what="shd Online")
    assert len(gluster_pids_under(st.tmp)) == 6  # 3 bricks + 3 self-heal daemons

    mnt = mount(st, "gv1")
    with open(os.path.join(mnt, "hello.txt"), "w") as fh:
        fh.write("replicated\n")
    umount(mnt)
    for spec in bricks:
        with open(os.path.join(brick_dir(st, spec), "hello.txt")) as fh:
            assert fh.read() == "replicated\n"

    st.cli.run("volume", "stop", "gv1", "--wait")
    assert volume(st, "gv1")["state"] == "Stopped"
    wait_until(lambda: not gluster_pids_under(st.tmp), what="bricks and shds gone after stop")
    wait_bricks(st, "gv1", "Offline")
    refused = st.cli.run("volume", "stop", "gv1", check=False)
    assert refused.returncode == 1 and "not started" in refused.stderr

    st.cli.run("volume", "start", "gv1", "--wait")
    wait_bricks(st, "gv1", "Online")
    mnt = mount(st, "gv1")
    assert open(os.path.join(mnt, "hello.txt")).read() == "replicated\n"
    umount(mnt)
    started = st.cli.run("volume", "delete", "gv1", check=False)
    assert started.returncode == 1 and "stop it first" in started.stderr

    st.cli.run("volume", "stop", "gv1", "--wait")
    st.cli.run("volume", "delete", "gv1", "--purge", "--wait")
    assert st.cli.json("volume", "list") == []
    for spec in bricks:
        path = brick_dir(st, spec)
        assert "trusted.glusterfs.volume-id" not in os.listxattr(path)
        assert not os.path.exists(os.path.join(path, ".glusterfs"))
        assert os.path.exists(os.path.join(path, "hello.txt"))  # data stays


LAYOUTS = {
    # name: (create flags, brick count, how many bricks hold a written file in full)
    "distribute": ([], 2),
    "arbiter": (["--replica", "2", "--arbiter", "1"], 3),
    "disperse": (["--disperse", "3", "--redundancy", "1"], 3),
    "distributed-replicate": (["--replica", "3"], 6),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_volume_types(trio, layout):
    st = trio
    flags, count = LAYOUTS[layout]
    bricks = [brick(st, NODES[i % 3], f"{layout}-{i}") for i in range(count)]
    st.cli.run("volume", "create", "vol", *flags, *bricks, "--wait")
    v = wait_bricks(st, "vol", "Online")
    assert v["bricks_total"] == count
    mnt = mount(st, "vol")
    data = os.urandom(64 * 1024)
    for i in range(6):
        with open(os.path.join(mnt, f"file{i}"), "wb") as fh:
            fh.write(data)
    assert all(open(os.path.join(mnt, f"file{i}"), "rb").read() == data for i in range(6))
    umount(mnt)
    sizes = {
        spec: {
            f: os.path.getsize(os.path.join(brick_dir(st, spec), f))
            for f in os.listdir(brick_dir(st, spec))
            if f.startswith("file")
        }
        for spec in bricks
    }
    if layout == "distribute":
        assert sum(len(files) for files in sizes.values()) == 6  # each file on exactly one brick
    elif layout == "arbiter":
        data_bricks, arbiter = bricks[:2], bricks[2]
        assert all(len(sizes[b]) == 6 and set(sizes[b].values()) == {len(data)} for b in data_bricks)
        assert len(sizes[arbiter]) == 6 and set(sizes[arbiter].values()) == {0}  # metadata only
    elif layout == "disperse":
        assert all(len(sizes[b]) == 6 and all(0 < s < len(data) for s in sizes[b].values()) for b in bricks)
    else:
        first, second = bricks[:3], bricks[3:]
        for i in range(6):
            holders = [b for b in bricks if f"file{i}" in sizes[b]]
            assert holders in (first, second)  # a whole replica set holds each file
    st.cli.run("volume", "stop", "vol", "--wait")
    st.cli.run("volume", "delete", "vol", "--wait")


def test_dynamic_provisioning_by_size(trio):
    st = trio
    for node in NODES:
        out = st.cli.run("device", "add", node, "--path", str(st.tmp / "bricks" / node / "pool")).stdout
        assert "free of" in out
    devices = st.cli.json("device", "list")
    assert [d["state"] for d in devices] == ["Ready"] * 3 and all(d["free_bytes"] > 0 for d in devices)
    nodes = st.cli.json("node", "list")
    assert all(n["devices"][0]["path"].endswith("/pool") and n["devices"][0]["free_bytes"] > 0 for n in nodes)
    assert "FREE" in st.cli.run("node", "list").stdout
    st.cli.run("volume", "create", "sized", "--replica", "3", "--size", "10MiB", "--wait")
    v = wait_bricks(st, "sized", "Online")
    assert sorted(b["node"] for b in v["bricks"]) == list(NODES)
    assert all(b["path"] == str(st.tmp / "bricks" / b["node"] / "pool" / "sized") for b in v["bricks"])
    assert v["size_bytes"] == 10 * 2**20
    too_big = st.cli.run("volume", "create", "huge", "--replica", "3", "--size", "100PiB", check=False)
    assert too_big.returncode == 1 and "device add" in too_big.stderr
    in_use = st.cli.run("device", "remove", "n1", str(st.tmp / "bricks" / "n1" / "pool"), check=False)
    assert in_use.returncode == 1 and "sized" in in_use.stderr
    st.cli.run("volume", "stop", "sized", "--wait")


def test_layout_rules(trio):
    st = trio
    cases = [
        (["--replica", "3", brick(st, "n1", "a"), brick(st, "n2", "a")], "multiple of 3"),
        (["--replica", "3", brick(st, "n1", "a"), brick(st, "n1", "b"), brick(st, "n2", "a")], "same node"),
        (
            ["--disperse", "4", "--redundancy", "2", *[brick(st, n, "d") for n in NODES], brick(st, "n1", "e")],
            "redundancy",
        ),
        (["--replica", "4", *[brick(st, n, "r") for n in NODES], brick(st, "n1", "s")], "replica 4 is not supported"),
        (["--replica", "3", "--disperse", "3", *[brick(st, n, "x") for n in NODES]], "not both"),
        ([brick(st, "n1", "a"), brick(st, "n1", "a")], "more than once"),
        (["ghost:/x/y"], "no node 'ghost'"),
        (["n1:relative"], "absolute path"),
        ([], "no bricks"),
    ]
    for args, message in cases:
        out = st.cli.run("volume", "create", "bad", *args, check=False)
        assert out.returncode == 1 and message in out.stderr, (args, out.stderr)
    forced = st.cli.run(
        "volume",
        "create",
        "forced",
        "--replica",
        "3",
        "--force",
        "--no-start",
        brick(st, "n1", "f1"),
        brick(st, "n1", "f2"),
        brick(st, "n2", "f3"),
        "--wait",
    )
    assert "created" in forced.stdout
    assert volume(st, "forced")["state"] == "Created"
    assert st.cli.json("volume", "list")[0]["name"] == "forced"


def test_failures_are_reported_with_reason_and_fix(trio):
    st = trio
    # the parent of a brick path does not exist on that node
    out = st.cli.run("volume", "create", "nodir", brick(st, "n1", "missing/b1"), "--wait", check=False)
    assert out.returncode == 1
    assert volume(st, "nodir")["state"] == "CreateFailed"
    assert "ENOENT" in out.stderr and "How to fix" in out.stderr
    report = st.cli.json("failurereport")
    entry = next(f for f in report if f["target"] == "volume:nodir")
    assert entry["code"] == "ENOENT" and entry["node"] == "n1"
    assert "create the parent directory" in entry["fix"] and "missing" in entry["fix"]
    text = st.cli.run("failurereport").stdout
    assert "n1 - Failed due to ENOENT" in text and "Reason:" in text and "How to fix:" in text

    # a path already used by another volume: refused before any task
    st.cli.run("volume", "create", "owner", brick(st, "n2", "shared"), "--no-start", "--wait")
    taken = st.cli.run("volume", "create", "thief", brick(st, "n2", "shared"), check=False)
    assert taken.returncode == 1 and "already used by volume 'owner'" in taken.stderr
    nested = st.cli.run("volume", "create", "thief", brick(st, "n2", "shared/inner"), check=False)
    assert nested.returncode == 1 and "already used" in nested.stderr

    # a directory that carries another volume's id (a brick of a volume this service does not know)
    foreign = st.tmp / "bricks" / "n3" / "foreign"
    foreign.mkdir()
    os.setxattr(foreign, "trusted.glusterfs.volume-id", os.urandom(16))
    out = st.cli.run("volume", "create", "clash", f"n3:{foreign}", "--wait", check=False)
    assert out.returncode == 1 and "EEXIST" in out.stderr and "another volume" in out.stderr
    assert volume(st, "clash")["state"] == "CreateFailed"
    st.cli.run("volume", "delete", "clash", "--wait")  # a failed create can be deleted


def test_agent_down_during_create_then_returns(trio):
    st = trio
    agent = next(p for p in st.procs if getattr(p, "node", None) == "n3")
    agent.stop()
    wait_until(lambda: st.node_state("n3") == "Unreachable", what="n3 Unreachable")
    bricks = [brick(st, n, "late") for n in NODES]
    st.cli.run("volume", "create", "late", "--replica", "3", *bricks)
    wait_until(
        lambda: (
            volume(st, "late")["state"] == "Creating"
            and st.cli.json("task", "list", "--node", "n3", "--state", "QUEUED")
        ),
        what="n3 task QUEUED",
    )
    assert any(b["state"] == "Unreachable" for b in volume(st, "late")["bricks"])
    wait_until(lambda: len(st.cli.json("task", "list", "--state", "DONE")) == 2, what="the two online nodes done")
    assert volume(st, "late")["state"] == "Creating"
    agent.start()
    wait_until(lambda: volume(st, "late")["state"] == "Started", timeout=30, what="volume Started once n3 returned")
    wait_bricks(st, "late", "Online")


def test_killed_brick_goes_offline_and_restarts(trio):
    st = trio
    st.cli.run("volume", "create", "heal", "--replica", "3", *[brick(st, n, "heal") for n in NODES], "--wait")
    v = wait_bricks(st, "heal", "Online")
    victim = v["bricks"][1]
    os.kill(victim["pid"], 9)
    # Offline within one heartbeat (1 s here) of the agent noticing, then restarted with a new pid
    wait_until(
        lambda: (
            volume(st, "heal")["bricks"][1]["state"] == "Offline"
            or volume(st, "heal")["bricks"][1]["pid"] not in (None, victim["pid"])
        ),
        timeout=5,
        interval=0.05,
        what="killed brick reported",
    )
    after = wait_until(
        lambda: (b := volume(st, "heal")["bricks"][1])["state"] == "Online" and b["pid"] != victim["pid"] and b,
        timeout=20,
        what="brick restarted",
    )
    assert after["port"] == victim["port"]
    assert "brick-1 is not running: restarting" in next(p for p in st.procs if getattr(p, "node", None) == "n2").log()


def test_brick_port_in_use_moves_to_a_free_port(trio):
    st = trio
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    low = int(st.server.argv[st.server.argv.index("--brick-ports") + 1].split("-")[0])
    blocker.bind(("127.0.0.1", low))
    blocker.listen()
    try:
        st.cli.run("volume", "create", "busyport", brick(st, "n1", "bp"), "--wait")
        v = wait_bricks(st, "busyport", "Online")
        assert v["bricks"][0]["port"] != low
        failed = st.cli.json("task", "list", "--state", "FAILED")
        assert failed and failed[0]["reason"].startswith("EADDRINUSE")
        mnt = mount(st, "busyport")  # the client volfile follows the new port
        with open(os.path.join(mnt, "x"), "w") as fh:
            fh.write("ok")
        umount(mnt)
    finally:
        blocker.close()


def test_bricks_survive_an_agent_restart(trio):
    st = trio
    st.cli.run("volume", "create", "keep", *[brick(st, n, "keep") for n in NODES], "--wait")
    before = {b["node"]: b["pid"] for b in wait_bricks(st, "keep", "Online")["bricks"]}
    agent = next(p for p in st.procs if getattr(p, "node", None) == "n1")
    agent.kill9()
    agent.start()
    wait_until(lambda: st.node_state("n1") == "Online", what="n1 back")
    wait_bricks(st, "keep", "Online")
    assert {b["node"]: b["pid"] for b in volume(st, "keep")["bricks"]} == before


@pytest.fixture
def loop_device(tmp_path):
    """A real block device: a sparse 512 MiB file behind a loop device."""
    image = tmp_path / "disk.img"
    with open(image, "wb") as fh:
        fh.truncate(512 * 2**20)
    found = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True, text=True)
    if found.returncode != 0:
        pytest.skip(f"no loop devices here: {found.stderr.strip()}")
    device = found.stdout.strip()
    yield device
    for mnt in mounts_under(tmp_path):
        subprocess.run(["umount", "-l", mnt], capture_output=True)
    subprocess.run(["losetup", "-d", device], capture_output=True)


def test_device_add_formats_mounts_and_restores_a_block_device(trio, loop_device):
    st = trio
    out = st.cli.run("device", "add", "n1", "--device", loop_device).stdout
    assert "Registered" in out
    dev = next(d for d in st.cli.json("device", "list") if d["device"] == loop_device)
    assert dev["state"] == "Ready" and dev["path"].startswith(str(st.tmp / "agent-n1"))
    with open("/proc/mounts") as fh:
        assert any(line.split()[:3] == [loop_device, dev["path"], "xfs"] for line in fh)
    info = subprocess.run(["xfs_info", dev["path"]], capture_output=True, text=True).stdout
    assert "isize=512" in info
    # a device that is not empty is refused, and nothing is formatted
    again = st.cli.run("device", "add", "n2", "--device", loop_device, check=False)
    assert again.returncode == 1 and "EEXIST" in again.stderr and "not empty" in again.stderr
    # the agent restores the mount when it starts
    agent = next(p for p in st.procs if getattr(p, "node", None) == "n1")
    agent.stop()
    subprocess.run(["umount", dev["path"]], check=True)
    agent.start()
    wait_until(lambda: dev["path"] in mounts_under(st.tmp), what="mount restored by the agent")
    st.cli.run("volume", "create", "ondisk", f"n1:{dev['path']}/b", "--wait")
    st.cli.run("volume", "stop", "ondisk", "--wait")
