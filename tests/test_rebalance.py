"""Rebalance on real GlusterFS: a 2x3 volume with 1,000 files grows to 3x3; a fix-layout lets new files of
old directories use the new set, GlusterFS's own rebalance process on every node moves files onto it, and
the control service follows each run by itself; stop ends every node's process."""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import stat

import pytest

from tests.helpers import gluster_pids_under, wait_until
from tests.test_grow import on_bricks, stored_events
from tests.test_live_volumes import cmdline, stock_mount, trio  # noqa: F401  (fixture)
from tests.test_volumes import NODES, brick, brick_dir, volume, wait_bricks

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="bricks set trusted xattrs and mounts need root")
FILES, DIRS = 1000, 10
LINKTO = "trusted.glusterfs.dht.linkto"
REBALANCE_TIMEOUT = 300.0


def write_files(mnt: str) -> dict[str, str]:
    """1,000 files of mixed sizes (empty to 64 KiB) in ten directories; returns path -> sha256."""
    rng = random.Random(11)
    sums = {}
    for i in range(FILES):
        rel = f"d{i % DIRS}/f{i:04d}"
        data = rng.randbytes(rng.choice((0, 1, 100, 1000, 4096, 20000, 65536)))
        os.makedirs(os.path.join(mnt, os.path.dirname(rel)), exist_ok=True)
        with open(os.path.join(mnt, rel), "wb") as fh:
            fh.write(data)
        sums[rel] = hashlib.sha256(data).hexdigest()
    return sums


def read_sums(mnt: str) -> dict[str, str]:
    sums = {}
    for top, dirs, files in os.walk(mnt):
        dirs[:] = [d for d in dirs if d != ".meta"]
        for name in files:
            path = os.path.join(top, name)
            with open(path, "rb") as fh:
                sums[os.path.relpath(path, mnt)] = hashlib.sha256(fh.read()).hexdigest()
    return sums


def is_linkto(path: str) -> bool:
    st = os.lstat(path)
    if st.st_size or not (st.st_mode & stat.S_ISVTX):
        return False
    try:
        os.getxattr(path, LINKTO, follow_symlinks=False)
        return True
    except OSError:
        return False


def data_files(root: str) -> set[str]:
    """The files a brick holds (not .glusterfs, not dht's zero-size linkto pointers)."""
    found = set()
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".glusterfs"]
        for name in files:
            path = os.path.join(top, name)
            if not is_linkto(path):
                found.add(os.path.relpath(path, root))
    return found


def rebalance(st, *args: str, check: bool = True):
    return st.cli.run("volume", "rebalance", *args, check=check, timeout=180)


def status(st, name: str) -> dict:
    return json.loads(rebalance(st, "status", name, "-o", "json").stdout)


def stored_status(st, name: str) -> dict:
    """The control service's own view (GET): unlike ``status`` it asks no node for a live poll."""
    answer = st.cli.api("GET", f"/api/v1/clusters/default/volumes/{name}/rebalance")
    assert answer.status_code == 200, answer.text
    return answer.json()


def status_polls(st, run: str) -> int:
    """The ``status`` tasks (a client's refresh) of one run."""
    with sqlite3.connect(st.server.data_dir / "glusterctl.db") as db:
        rows = db.execute("SELECT params FROM task WHERE kind = 'volume.rebalance' AND operation = ?", (run,))
        return sum(1 for (params,) in rows if json.loads(params).get("op") == "status")


def write_small(mnt: str, rels: list[str], sums: dict[str, str]) -> None:
    for rel in rels:
        data = rel.encode()
        with open(os.path.join(mnt, rel), "wb") as fh:
            fh.write(data)
        sums[rel] = hashlib.sha256(data).hexdigest()


def rebalance_pids(st) -> list[int]:
    return [p for p in gluster_pids_under(st.tmp) if "--process-name rebalance" in " ".join(cmdline(p))]


@needs_root
def test_rebalance_after_expand_moves_files_to_the_new_set(trio):  # noqa: F811
    st = trio
    sets = [[brick(st, n, f"rb{k}") for n in NODES] for k in range(3)]
    st.cli.run("volume", "create", "rb", "--replica", "3", *sets[0], *sets[1], "--wait")
    wait_bricks(st, "rb", "Online")
    out = rebalance(st, "stop", "rb", check=False)
    assert out.returncode == 1 and "never rebalanced" in out.stderr, out.stderr
    mnt = stock_mount(st, "rb")
    sums = write_files(mnt)

    st.cli.run("volume", "expand", "rb", *sets[2], "--wait", timeout=180)
    wait_bricks(st, "rb", "Online", timeout=30)
    assert data_files(brick_dir(st, sets[2][0])) == set()  # nothing moved yet

    # a directory made before the expand keeps its old layout: new files in it stay on the old sets ...
    before = [f"d0/pre{i:02d}" for i in range(30)]
    write_small(mnt, before, sums)
    assert [r for r in before if on_bricks(st, sets[2], r)] == []
    # ... until a fix-layout (no data moves; followed by the control service: --wait reads only GET)
    out = rebalance(st, "start", "rb", "--fix-layout", "--wait")
    assert "volume rebalance (fix-layout): rb: completed" in out.stdout, out.stdout
    assert data_files(brick_dir(st, sets[2][0])) == set()
    after = [f"d0/post{i:02d}" for i in range(60)]
    write_small(mnt, after, sums)
    on_new = [r for r in after if on_bricks(st, sets[2], r)]
    assert 0 < len(on_new) < len(after), on_new
    assert all(len(on_bricks(st, sets[2], r)) == 3 for r in on_new)  # replicated on the new set

    # a started rebalance stopped at once: every node's process ends
    out = rebalance(st, "start", "rb")
    assert "rebalance started" in out.stdout, out.stdout
    out = rebalance(st, "start", "rb", check=False)
    assert out.returncode == 1 and "in progress" in out.stderr, out.stderr
    rebalance(st, "stop", "rb")
    assert rebalance_pids(st) == []
    stopped = status(st, "rb")
    assert {n["node"] for n in stopped["nodes"]} == set(NODES)
    assert {n["state"] for n in stopped["nodes"]} <= {"stopped", "completed"}, stopped

    # a full run that no client polls, with a control-service restart while it runs: the server follows
    # it from the agents' heartbeats and learns the end even if it came while the server was down
    out = rebalance(st, "start", "rb", "-o", "json")
    run = json.loads(out.stdout)["run"]
    st.server.stop()
    st.server.start()
    result = wait_until(
        lambda: (s := stored_status(st, "rb"))["state"] in ("completed", "failed", "stopped") and s,
        timeout=REBALANCE_TIMEOUT,
        interval=1,
        what="rebalance completed on every node (GET only)",
    )
    assert result["run"] == run and result["command"] == "full", result  # the rows survived the restart
    assert result["state"] == "completed" and all(n["state"] == "completed" for n in result["nodes"]), result
    assert {n["node"] for n in result["nodes"]} == set(NODES)
    assert result["total"]["failures"] == 0 and result["total"]["files"] > 0, result
    assert result["total"]["lookups"] >= FILES, result
    assert status_polls(st, run) == 0  # nobody asked: the heartbeats told
    for node in NODES:
        states = [e["state"] for e in stored_events(st, "rebalance.state", f"rb@{node}") if e["run"] == run]
        assert states[-1] == "completed", (node, states)
    assert rebalance_pids(st) == []

    # the files sit on all three sets, each on exactly one, replicated on each brick of its set
    per_set = [data_files(brick_dir(st, s[0])) for s in sets]
    assert all(per_set), [len(f) for f in per_set]
    assert sum(len(f) for f in per_set) == len(sums) and set().union(*per_set) == set(sums)
    for k, spec in enumerate(sets):
        assert all(data_files(brick_dir(st, b)) == per_set[k] for b in spec[1:])
    # unchanged through the mount: the same files with the same contents
    assert read_sums(mnt) == sums

    # a completed run no client polled does not hold the volume: it stops
    assert volume(st, "rb")["state"] == "Started"
    st.cli.run("volume", "stop", "rb", "--wait", timeout=120)
    assert volume(st, "rb")["state"] == "Stopped"


@needs_root
def test_rebalance_refusals(trio):  # noqa: F811
    st = trio
    st.cli.run("volume", "create", "one", "--replica", "3", *[brick(st, n, "one") for n in NODES], "--wait")
    out = rebalance(st, "start", "one", check=False)
    assert out.returncode == 1 and "single set" in out.stderr and "volume expand" in out.stderr, out.stderr
    st.cli.run("volume", "create", "cold", *[brick(st, n, "cold") for n in NODES], "--no-start", "--wait")
    out = rebalance(st, "start", "cold", check=False)
    assert out.returncode == 1 and "Started" in out.stderr, out.stderr
    out = rebalance(st, "status", "nosuch", check=False)
    assert out.returncode == 1 and "nosuch" in out.stderr, out.stderr
