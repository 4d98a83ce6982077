"""Replacing a failed brick on real GlusterFS: the new brick joins the replica set, self-heal fills it,
a stock mount keeps working without a remount; and the refusals."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest

from tests.helpers import gluster_pids_under, wait_until
from tests.test_grow import mount_pid, stored_events
from tests.test_live_volumes import cmdline, stock_mount, trio  # noqa: F401  (fixture)
from tests.test_volumes import NODES, brick, brick_dir, volume, wait_bricks

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="bricks set trusted xattrs and mounts need root")
FILES = 50
HEAL_TIMEOUT = 180.0  # self-heal of the new brick


def replace(st, name: str, old: str, new: str, *args: str, check: bool = True):
    return st.cli.run("volume", "replace-brick", name, old, new, *args, check=check, timeout=240)


def heal(st, name: str, *args: str) -> dict:
    return st.cli.json("volume", "heal", name, *args)


def refused(st, name: str, old: str, new: str, *words: str) -> None:
    out = replace(st, name, old, new, check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    for word in words:
        assert word in out.stderr, (word, out.stderr)


def index_heal_launched(st, name: str) -> bool:
    """The self-heal daemons reconnect to the new brick on their own schedule: retry until every one launches."""
    result = heal(st, name)
    return bool(result["nodes"]) and all(n["state"] == "DONE" and n.get("triggered") for n in result["nodes"])


@needs_root
def test_replace_a_dead_brick_of_a_replica3_volume(trio):  # noqa: F811
    st = trio
    bricks = [brick(st, n, "rep") for n in NODES]
    st.cli.run("volume", "create", "rep", "--replica", "3", *bricks, "--wait")
    pids = [b["pid"] for b in wait_bricks(st, "rep", "Online")["bricks"]]
    wait_until(lambda: all(s["state"] == "Online" for s in volume(st, "rep")["self_heal"]), what="shds Online")
    mnt = stock_mount(st, "rep")
    client = mount_pid(st, mnt)
    for i in range(FILES):
        with open(os.path.join(mnt, f"f{i:02d}"), "w") as fh:
            fh.write(f"file {i}\n" * (i + 1))

    # refusals, each saying why; nothing changes
    new = brick(st, "n3", "rep-new")
    refused(st, "rep", brick(st, "n3", "nope"), new, "has no brick", bricks[2])
    refused(st, "rep", "n3-no-path", new, "NODE:/absolute/path")
    refused(st, "rep", bricks[2], "n3:/etc/rep", "system directory /etc")
    refused(st, "rep", bricks[2], "n3:relative", "absolute")
    refused(st, "rep", bricks[2], bricks[0], "already used by volume 'rep'")
    refused(st, "rep", bricks[2], brick(st, "n1", "rep-2"), "not fault tolerant", "--force")
    refused(st, "rep", bricks[2], brick(st, "n9", "rep"), "no node 'n9'")
    v = volume(st, "rep")
    assert v["state"] == "Started" and [f"{b['node']}:{b['path']}" for b in v["bricks"]] == bricks

    # n3's disk dies: the brick directory loses its contents and its process goes
    dead = brick_dir(st, bricks[2])
    for entry in os.listdir(dead):
        path = os.path.join(dead, entry)
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
    os.kill(pids[2], signal.SIGKILL)

    out = replace(st, "rep", bricks[2], new, "--wait")
    assert "Volume rep started." in out.stdout, out.stdout + out.stderr
    v = wait_bricks(st, "rep", "Online", timeout=30)
    assert [f"{b['node']}:{b['path']}" for b in v["bricks"]] == [*bricks[:2], new]
    assert [b["pid"] for b in v["bricks"][:2]] == pids[:2]  # the other bricks kept running
    # no process serves the old brick any more
    assert not [p for p in gluster_pids_under(st.tmp) if "--brick-name" in cmdline(p) and dead in cmdline(p)]

    wait_until(lambda: index_heal_launched(st, "rep"), timeout=60, interval=2, what="an index heal launched")
    healed = brick_dir(st, new)

    def filled() -> bool:
        return all(b["entries"] == 0 for b in heal(st, "rep", "info")["bricks"]) and all(
            os.path.exists(os.path.join(healed, f"f{i:02d}")) for i in range(FILES)
        )

    wait_until(filled, timeout=HEAL_TIMEOUT, interval=2, what="heal info at 0 and every file on the new brick")
    for i in range(FILES):
        wait_until(
            lambda i=i: open(os.path.join(healed, f"f{i:02d}")).read() == f"file {i}\n" * (i + 1),
            timeout=30,
            what=f"f{i:02d} healed with its content",
        )

    # the mount was never remounted and keeps working on the new graph
    assert mount_pid(st, mnt) == client
    wait_until(
        lambda: any(
            new.split(":", 1)[1]
            in open(os.path.join(mnt, ".meta", "graphs", "active", x, "options", "remote-subvolume")).read()
            for x in os.listdir(os.path.join(mnt, ".meta", "graphs", "active"))
            if x.startswith("rep-client-")
        ),
        timeout=30,
        what="the mount's active graph holds the new brick",
    )
    with open(os.path.join(mnt, "after.txt"), "w") as fh:
        fh.write("after the replacement\n")
    assert open(os.path.join(mnt, "f07")).read() == "file 7\n" * 8
    wait_until(lambda: os.path.exists(os.path.join(healed, "after.txt")), what="a new file reaches the new brick")
    assert sorted(os.listdir(mnt)) == sorted([f"f{i:02d}" for i in range(FILES)] + ["after.txt"])

    states = [e["state"] for e in stored_events(st, "volume.state", "rep")]
    assert "Replacing" in states and states[-1] == "Started", states
    assert stored_events(st, "volume.replace-brick", "rep") == [
        {"old": bricks[2], "new": new, "index": 2},
    ]
    subprocess.run(["umount", mnt], check=True)


@needs_root
def test_replace_brick_refused_on_a_distribute_volume(trio):  # noqa: F811
    st = trio
    st.cli.run("volume", "create", "plain", brick(st, "n1", "plain"), brick(st, "n2", "plain"), "--wait")
    refused(
        st, "plain", brick(st, "n1", "plain"), brick(st, "n1", "plain2"), "distribute-only", "lose", "volume expand"
    )
    out = st.cli.run("volume", "replace-brick", "nosuch", brick(st, "n1", "a"), brick(st, "n1", "b"), check=False)
    assert out.returncode == 1 and "no volume 'nosuch'" in out.stderr, out.stderr
    assert volume(st, "plain")["state"] == "Started"
