"""Volume capacity and health: the derivations for every volume type, the heartbeat writes, migration 7,
and a real volume whose size comes from its bricks' filesystems."""

from __future__ import annotations

import os

import pytest

from broker.messages import BrickReport
from control.services import heartbeats
from control.services.capacity import BrickSpace, Capacity, VolumeShape, subvolume_capacities, volume_capacity
from tests.helpers import wait_until

GiB = 1024**3


def space(total_gib: float, used_gib: float) -> BrickSpace:
    return BrickSpace(total=int(total_gib * GiB), used=int(used_gib * GiB))


# ---- capacity ---------------------------------------------------------------------------------
def test_distribute_sums_its_bricks():
    cap = volume_capacity(VolumeShape("distribute"), [space(10, 1), space(20, 5), space(30, 0)])
    assert cap == Capacity(size=60 * GiB, used=6 * GiB)
    assert cap.free == 54 * GiB and cap.percent == 10.0


def test_replicate_takes_the_smallest_brick_of_each_set_and_the_fullest():
    shape = VolumeShape("replicate", replica=3)
    bricks = [space(10, 1), space(12, 2), space(11, 1), space(50, 5), space(40, 4), space(45, 3)]
    assert subvolume_capacities(shape, bricks) == [Capacity(10 * GiB, 2 * GiB), Capacity(40 * GiB, 5 * GiB)]
    assert volume_capacity(shape, bricks) == Capacity(50 * GiB, 7 * GiB)
    assert volume_capacity(VolumeShape("replicate", replica=2), [space(8, 1), space(6, 2)]) == Capacity(
        6 * GiB, 2 * GiB
    )


def test_arbiter_bricks_do_not_count():
    shape = VolumeShape("arbiter", replica=3)
    # the arbiter (third of each set) is tiny and full: it limits nothing
    bricks = [space(10, 1), space(12, 3), space(0.5, 0.5), space(20, 2), space(20, 2), space(1, 1)]
    assert volume_capacity(shape, bricks) == Capacity(30 * GiB, 5 * GiB)
    assert shape.is_arbiter(2) and shape.is_arbiter(5) and not shape.is_arbiter(3)


def test_disperse_holds_n_minus_redundancy_fragments_of_the_smallest():
    shape = VolumeShape("disperse", disperse=6, redundancy=2)
    bricks = [space(10, 1), space(10, 1), space(9, 1), space(10, 2), space(10, 1), space(10, 1)]
    assert volume_capacity(shape, bricks) == Capacity(4 * 9 * GiB, 4 * 2 * GiB)
    dist = VolumeShape("disperse", disperse=3, redundancy=1)
    assert volume_capacity(dist, [space(10, 1)] * 3 + [space(20, 4)] * 3) == Capacity(60 * GiB, 10 * GiB)


def test_capacity_is_unknown_until_every_subvolume_reported():
    shape = VolumeShape("replicate", replica=2)
    unknown = BrickSpace()
    # one brick of a set is enough: a brick whose node is away keeps its last report
    assert volume_capacity(shape, [space(10, 1), unknown]) == Capacity(10 * GiB, 1 * GiB)
    assert volume_capacity(shape, [space(10, 1), space(10, 1), unknown, unknown]) is None
    assert volume_capacity(VolumeShape("arbiter", replica=3), [unknown, unknown, space(1, 0)]) is None
    assert volume_capacity(VolumeShape("distribute"), []) is None


def test_subvolume_names_follow_the_volfile():
    assert VolumeShape("replicate", replica=3).subvolume_name("gv", 1) == "gv-replicate-1"
    assert VolumeShape("arbiter", replica=3).subvolume_name("gv", 0) == "gv-replicate-0"
    assert VolumeShape("disperse", disperse=3, redundancy=1).subvolume_name("gv", 0) == "gv-disperse-0"
    assert VolumeShape("distribute").subvolume_name("gv", 2) == "gv-client-2"


class _Row:
    """A stored brick's capacity columns."""

    def __init__(self, **values):
        for name in (*heartbeats.CAPACITY_FIELDS, "fsid"):
            setattr(self, name, values.get(name, "" if name == "fsid" else None))


def _report(**values) -> BrickReport:
    return BrickReport(volume_id="v", index=0, online=True, **values)


def test_capacity_is_written_only_when_it_moved_by_a_step():
    full = dict(
        total_bytes=100 * GiB, free_bytes=60 * GiB, used_bytes=40 * GiB,
        inodes_total=1000, inodes_free=900, inodes_used=100, fsid="abc",
    )  # fmt: skip
    assert heartbeats.capacity_change(_Row(), _report(**full)) == full  # first report
    assert heartbeats.capacity_change(_Row(**full), _report()) == {}  # an older agent keeps what was stored
    assert heartbeats.capacity_change(_Row(**full), None) == {}
    small = {**full, "free_bytes": full["free_bytes"] - 4096, "used_bytes": full["used_bytes"] + 4096}
    assert heartbeats.capacity_change(_Row(**full), _report(**small)) == {}
    big = {**small, "free_bytes": full["free_bytes"] - heartbeats.CAPACITY_STEP_BYTES}
    assert heartbeats.capacity_change(_Row(**full), _report(**big)) == big
    assert heartbeats.capacity_change(_Row(**full), _report(**{**full, "inodes_free": 800})) != {}
    assert heartbeats.capacity_change(_Row(**full), _report(**{**full, "fsid": "def"})) != {}
    assert heartbeats.capacity_change(_Row(**full), _report(**{**full, "total_bytes": full["total_bytes"] + 1}))


def test_agent_measures_a_brick_filesystem(tmp_path):
    from agent.bricks import brick_capacity

    got = brick_capacity(str(tmp_path))
    st = os.statvfs(tmp_path)
    assert got["total_bytes"] == st.f_blocks * st.f_frsize
    assert got["used_bytes"] + got["free_bytes"] == got["total_bytes"]
    assert got["inodes_used"] + got["inodes_free"] == got["inodes_total"] > 0
    assert got["fsid"] == format(st.f_fsid, "x")
    assert brick_capacity(str(tmp_path / "missing")) == {}
    assert brick_capacity("") == {}
    BrickReport(volume_id="v", index=0, online=True, **got)  # what the heartbeat carries validates


# ---- migration 7 ------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path):
    from control.store import open_database

    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    db = open_database(url, str(tmp_path))
    yield db
    db.close()


def test_migration_7_adds_the_capacity_columns_once(database):
    from control.store.db import BRICK_CAPACITY_COLUMNS, _migration_7

    for name in BRICK_CAPACITY_COLUMNS:
        database.execute_sql(f'ALTER TABLE "brick" DROP COLUMN "{name}"')
    assert not {c.name for c in database.get_columns("brick")} & set(BRICK_CAPACITY_COLUMNS)
    _migration_7(database)
    _migration_7(database)  # idempotent: a database that has them is left alone
    assert set(BRICK_CAPACITY_COLUMNS) <= {c.name for c in database.get_columns("brick")}


# ---- a real volume ----------------------------------------------------------------------------
def test_volume_size_comes_from_its_bricks_filesystems(stack):
    st = stack
    for node in ("n1", "n2"):
        (st.tmp / "bricks" / node).mkdir(parents=True)
        st.agent(node)
    wait_until(lambda: st.node_state("n1") == "Online" and st.node_state("n2") == "Online", what="agents Online")
    bricks = [f"{n}:{st.tmp / 'bricks' / n / 'gv'}" for n in ("n1", "n2")]
    st.cli.run("volume", "create", "gv", "--replica", "2", *bricks, "--force", "--wait")
    fs = os.statvfs(st.tmp)
    total = fs.f_blocks * fs.f_frsize

    v = wait_until(
        lambda: (v := st.cli.json("volume", "info", "gv")) and all(b["total_bytes"] for b in v["bricks"]) and v,
        what="both bricks' filesystems reported",
    )
    # both bricks live on the test's filesystem: a replica 2 holds one brick's filesystem
    assert v["size"] == total
    assert 0 < v["used"] < total and v["free"] == total - v["used"]
    assert v["percent"] == pytest.approx(100 * v["used"] / total, abs=0.01)
    assert all(b["total_bytes"] == total and b["inodes_total"] > 0 for b in v["bricks"])
    assert v["health"] == "Healthy"

    listed = st.cli.run("volume", "list").stdout
    assert "SIZE" in listed and "USED" in listed and "Healthy" in listed
    nodes = st.cli.json("node", "list")
    # path bricks count in the node's free space (the filesystem once, however many bricks it holds)
    assert all(n["brick_fs_total_bytes"] == total for n in nodes)
    assert "FREE" in st.cli.run("node", "list").stdout


# ---- health -----------------------------------------------------------------------------------
def _health(shape: VolumeShape, up: str, state: str = "Started", options: dict | None = None) -> str | None:
    from control.services.health import volume_health

    got = volume_health(shape, state, [c == "1" for c in up], options)
    return got.value if got else None


def test_a_volume_that_is_not_started_has_no_health():
    shape = VolumeShape("replicate", replica=3)
    for state in ("Created", "Stopped", "Starting", "StartFailed", "Creating"):
        assert _health(shape, "111", state) is None
    assert _health(shape, "", "Started") is None


def test_distribute_is_down_when_any_subvolume_is_gone():
    shape = VolumeShape("distribute")
    assert _health(shape, "111") == "Healthy"
    assert _health(shape, "101") == "Down"


def test_replica3_and_arbiter_need_more_than_half():
    for shape in (VolumeShape("replicate", replica=3), VolumeShape("arbiter", replica=3)):
        assert _health(shape, "111111") == "Healthy"
        assert _health(shape, "011110") == "Degraded"  # one down in each set: 2 of 3 is quorum
        assert _health(shape, "110100") == "Down"  # the second set has 1 of 3
        assert _health(shape, "001111") == "Down"


def test_arbiter_with_one_data_brick_and_the_arbiter_up_is_degraded():
    shape = VolumeShape("arbiter", replica=3)
    assert _health(shape, "011") == "Degraded"
    assert _health(shape, "110") == "Degraded"


def test_replica2_defaults_to_no_client_quorum():
    shape = VolumeShape("replicate", replica=2)
    assert _health(shape, "11") == "Healthy"
    assert _health(shape, "01") == "Degraded"  # AFR's default for replica 2 is quorum-type none
    assert _health(shape, "1001") == "Degraded"
    assert _health(shape, "1100") == "Down"


def test_client_quorum_options_are_honoured():
    shape = VolumeShape("replicate", replica=2)
    auto = {"cluster.quorum-type": "auto"}
    assert _health(shape, "10", options=auto) == "Degraded"  # exactly half, with the first brick
    assert _health(shape, "01", options=auto) == "Down"  # exactly half, without it
    fixed = {"cluster.quorum-type": "fixed", "cluster.quorum-count": "2"}
    r3 = VolumeShape("replicate", replica=3)
    assert _health(r3, "110", options=fixed) == "Degraded"
    assert _health(r3, "100", options=fixed) == "Down"
    assert _health(r3, "100", options={"cluster.quorum-type": "none"}) == "Degraded"


def test_disperse_needs_n_minus_redundancy():
    shape = VolumeShape("disperse", disperse=6, redundancy=2)
    assert _health(shape, "111111") == "Healthy"
    assert _health(shape, "110111") == "Degraded"
    assert _health(shape, "110110") == "Degraded"  # 4 of 6 with redundancy 2
    assert _health(shape, "100110") == "Down"
    dist = VolumeShape("disperse", disperse=3, redundancy=1)
    assert _health(dist, "011101") == "Degraded"
    assert _health(dist, "111100") == "Down"
