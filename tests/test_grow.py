"""Growing volumes on real GlusterFS: expand while a stock mount writes, with the refusals and a failed expand."""

from __future__ import annotations

import json
import os
import sqlite3
import threading

import pytest

from tests.helpers import gluster_pids_under, wait_until
from tests.test_live_volumes import cmdline, stock_mount, trio  # noqa: F401  (fixture)
from tests.test_volumes import NODES, brick, brick_dir, volume, wait_bricks

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="bricks set trusted xattrs and mounts need root")
WRITE_PAUSE = 0.02  # between the writer's writes


class Writer(threading.Thread):
    """Appends to one open file and creates small files through the mount until stopped; keeps every error."""

    def __init__(self, mnt: str) -> None:
        super().__init__(daemon=True)
        self.mnt, self.stop, self.errors, self.blocks, self.files = mnt, threading.Event(), [], 0, 0

    def run(self) -> None:
        os.makedirs(os.path.join(self.mnt, "w"), exist_ok=True)
        fd = os.open(os.path.join(self.mnt, "stream.bin"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            while not self.stop.wait(WRITE_PAUSE):
                try:
                    os.write(fd, bytes([self.blocks % 256]) * 4096)
                    self.blocks += 1
                    with open(os.path.join(self.mnt, "w", f"f{self.files:05d}"), "w") as fh:
                        fh.write(f"file {self.files}\n")
                    self.files += 1
                except OSError as exc:
                    self.errors.append(repr(exc))
        finally:
            os.close(fd)


def stored_events(st, kind: str, subject: str) -> list[dict]:
    with sqlite3.connect(st.server.data_dir / "glusterctl.db") as db:
        rows = db.execute("SELECT data FROM event WHERE kind = ? AND subject = ? ORDER BY id", (kind, subject))
        return [json.loads(data) for (data,) in rows]


def mount_pid(st, mnt: str) -> int:
    pids = [p for p in gluster_pids_under(st.tmp) if mnt in cmdline(p)]
    assert len(pids) == 1, pids
    return pids[0]


def expand(st, name: str, *args: str, check: bool = True):
    return st.cli.run("volume", "expand", name, *args, check=check, timeout=180)


def on_bricks(st, specs: list[str], rel: str) -> list[str]:
    return [s for s in specs if os.path.exists(os.path.join(brick_dir(st, s), rel))]


@needs_root
def test_expand_replica3_while_a_mount_writes(trio):  # noqa: F811
    st = trio
    first = [brick(st, n, "grow") for n in NODES]
    st.cli.run("volume", "create", "grow", "--replica", "3", *first, "--wait")
    wait_bricks(st, "grow", "Online")

    # refusals say what would be valid
    out = expand(st, "grow", brick(st, "n1", "x1"), brick(st, "n2", "x1"), check=False)
    assert out.returncode == 1 and "multiples of 3" in out.stderr and "replica 3" in out.stderr, out.stderr
    out = expand(st, "grow", brick(st, "n1", "x1"), brick(st, "n1", "x2"), brick(st, "n2", "x1"), check=False)
    assert out.returncode == 1 and "same node" in out.stderr and "--force" in out.stderr, out.stderr
    out = expand(st, "grow", first[0], brick(st, "n2", "x1"), brick(st, "n3", "x1"), check=False)
    assert out.returncode == 1 and "already used by volume 'grow'" in out.stderr, out.stderr
    out = expand(st, "grow", check=False)
    assert out.returncode == 1 and "no bricks" in out.stderr, out.stderr
    assert volume(st, "grow")["state"] == "Started" and len(volume(st, "grow")["bricks"]) == 3

    mnt = stock_mount(st, "grow")
    client = mount_pid(st, mnt)
    writer = Writer(mnt)
    writer.start()
    wait_until(lambda: writer.files >= 20, what="the writer under way")

    # a new brick whose parent directory is missing on n3: the expand fails and says why
    second = [brick(st, "n1", "grow2"), brick(st, "n2", "grow2"), f"n3:{st.tmp / 'bricks' / 'n3' / 'later' / 'grow2'}"]
    out = expand(st, "grow", *second, "--wait", check=False)
    assert out.returncode == 1 and "ExpandFailed" in out.stderr, out.stdout + out.stderr
    assert "ENOENT" in out.stderr and "later" in out.stderr, out.stderr
    v = volume(st, "grow")
    assert v["state"] == "ExpandFailed" and len(v["bricks"]) == 6
    assert "grow-replicate-1" not in os.listdir(os.path.join(mnt, ".meta", "graphs", "active"))
    out = expand(st, "grow", "--wait", check=False)  # retried before the cause is fixed: fails again
    assert out.returncode == 1 and volume(st, "grow")["state"] == "ExpandFailed"

    (st.tmp / "bricks" / "n3" / "later").mkdir()
    out = expand(st, "grow", "--wait")
    assert "Volume grow started." in out.stdout, out.stdout
    v = wait_bricks(st, "grow", "Online", timeout=30)
    assert [f"{b['node']}:{b['path']}" for b in v["bricks"]] == first + second
    # the mount switched graphs in place: same client process, the new replica set in its active graph
    wait_until(
        lambda: "grow-replicate-1" in os.listdir(os.path.join(mnt, ".meta", "graphs", "active")),
        timeout=30,
        what="the mount's active graph holds the new replica set",
    )
    files_at_switch = writer.files
    wait_until(lambda: writer.files >= files_at_switch + 20, what="the writer goes on after the switch")
    assert mount_pid(st, mnt) == client
    # the self-heal daemons and old bricks took the new volfiles too (one shd per node, pids unchanged)
    tasks = st.cli.api("GET", "/api/v1/tasks", params={"cluster": "default", "limit": 50}).json()
    pushed = [t for t in tasks if t["kind"] == "volume.volfiles" and t["state"] == "DONE"]
    assert {t["node"] for t in pushed} == set(NODES) and all(t["result"]["notified"] >= 1 for t in pushed)

    # new directories spread over both sets at once
    os.makedirs(os.path.join(mnt, "fresh"))
    for i in range(60):
        with open(os.path.join(mnt, "fresh", f"n{i:02d}"), "w") as fh:
            fh.write(f"fresh {i}\n")
    new_set = [i for i in range(60) if on_bricks(st, second, f"fresh/n{i:02d}")]
    old_set = [i for i in range(60) if on_bricks(st, first, f"fresh/n{i:02d}")]
    assert new_set and old_set and sorted(new_set + old_set) == list(range(60)), (new_set, old_set)
    assert all(len(on_bricks(st, second, f"fresh/n{i:02d}")) == 3 for i in new_set)  # replicated on the new set

    writer.stop.set()
    writer.join(20)
    assert writer.errors == [], writer.errors[:5]
    assert os.path.getsize(os.path.join(mnt, "stream.bin")) == writer.blocks * 4096
    assert len(os.listdir(os.path.join(mnt, "w"))) == writer.files
    states = [e["state"] for e in stored_events(st, "volume.state", "grow")]
    assert "Expanding" in states and "ExpandFailed" in states and states[-1] == "Started", states
    report = st.cli.run("failurereport").stdout
    assert "volume.expand failed on node n3" in report and "How to fix" in report


@needs_root
def test_expand_by_size_on_a_stopped_distribute_volume(trio):  # noqa: F811
    st = trio
    for node in NODES:
        st.cli.run("device", "add", node, "--path", str(st.tmp / "bricks" / node / "pool"))
    st.cli.run("volume", "create", "dist", brick(st, "n1", "dist"), "--wait")
    st.cli.run("volume", "stop", "dist", "--wait")
    out = expand(st, "dist", "--size", "5MiB", "--wait")
    assert "Volume dist stopped." in out.stdout, out.stdout
    v = volume(st, "dist")
    assert v["state"] == "Stopped" and v["size_bytes"] == 5 * 2**20 and len(v["bricks"]) == 2
    added = v["bricks"][1]
    assert added["path"] == str(st.tmp / "bricks" / added["node"] / "pool" / "dist-b1")  # apart from brick 0
    assert os.path.isdir(os.path.join(added["path"], ".glusterfs"))  # prepared, not started
    st.cli.run("volume", "start", "dist", "--wait")
    wait_bricks(st, "dist", "Online")
    mnt = stock_mount(st, "dist")
    for i in range(30):
        with open(os.path.join(mnt, f"d{i:02d}"), "w") as fh:
            fh.write("x")
    on_new = [i for i in range(30) if os.path.exists(os.path.join(added["path"], f"d{i:02d}"))]
    assert 0 < len(on_new) < 30  # the root directory spans both bricks: the volume was never mounted before


def brick_volfiles(st, node: str) -> dict[str, str]:
    """The brick volfiles node's agent stores, by the brick directory each serves."""
    out = {}
    for path in (st.tmp / f"agent-{node}" / "volumes").glob("*/volfiles/*.vol"):
        text = path.read_text()
        if "type storage/posix" in text:
            directory = next(
                line.split()[-1] for line in text.splitlines() if line.strip().startswith("option directory")
            )
            out[f"{node}:{directory}"] = text
    return out


@needs_root
def test_expand_an_arbiter_volume_with_a_forced_set(trio):  # noqa: F811
    """An arbiter volume grows by whole sets whose third brick is the arbiter; a set with two bricks on
    one node is refused unless forced (no brick process needed: the volume is Created)."""
    st = trio
    first = [brick(st, n, "arb") for n in NODES]
    st.cli.run("volume", "create", "arb", "--replica", "2", "--arbiter", "1", *first, "--no-start", "--wait")
    out = expand(st, "arb", brick(st, "n1", "arb2"), brick(st, "n2", "arb2"), check=False)
    assert out.returncode == 1 and "multiples of 3" in out.stderr, out.stderr
    assert "the third brick of each set is its arbiter" in out.stderr, out.stderr
    second = [brick(st, "n1", "arb2"), brick(st, "n1", "arb3"), brick(st, "n2", "arb2")]
    out = expand(st, "arb", *second, check=False)
    assert out.returncode == 1 and "same node" in out.stderr and "--force" in out.stderr, out.stderr
    assert len(volume(st, "arb")["bricks"]) == 3

    out = expand(st, "arb", *second, "--force", "--wait")
    v = volume(st, "arb")
    assert v["state"] == "Created" and [f"{b['node']}:{b['path']}" for b in v["bricks"]] == first + second
    # the client graph: a second replica set of the new bricks, in order, with the third as arbiter
    text = st.cli.api("GET", "/api/v1/clusters/default/volumes/arb/volfile").text
    sets = text.split("type cluster/replicate")[1:]
    assert len(sets) == 2 and all("option arbiter-count 1" in s for s in sets), text
    assert "subvolumes arb-client-3 arb-client-4 arb-client-5" in sets[1], sets[1]
    # the bricks' graphs, as the agents hold them: the arbiter xlator on the third brick of each set only
    served = {k: t for n in NODES for k, t in brick_volfiles(st, n).items()}
    assert set(served) == set(first + second), sorted(served)
    arbiters = {spec for spec, t in served.items() if "type features/arbiter" in t}
    assert arbiters == {first[2], second[2]}, arbiters
    assert all(os.path.isdir(os.path.join(brick_dir(st, b), ".glusterfs")) for b in second)  # prepared
