"""Our volfiles against the ones glusterd 10.3 writes for the same volume.

A private glusterd (own working directory, port and CLI socket; see conftest.py) creates each
volume with the gluster CLI; we build the same volume from its stored info (same id, bricks
and credentials) and compare every client, brick and shd graph by xlator type, parent/child
shape and option keys. Only the keys we add on purpose are ignored (remote-port and
listen-port, which glusterd leaves to its portmapper and command line).
"""

from __future__ import annotations

import pytest
from graph_compare import compare_graphs, parse_volfile

from control.volgen import (
    BrickSpec,
    VolgenError,
    VolumeSpec,
    brick_volfile_name,
    build_brick_graph,
    build_client_graph,
    build_rebalance_graph,
    build_shd_graph,
)

OUR_ADDITIONS = frozenset({"remote-port", "transport.socket.listen-port"})

# name -> (our type, brick count, gluster CLI layout arguments, spec keyword arguments)
EC_2_1 = (["disperse", "3", "redundancy", "1"], {"disperse": 3, "redundancy": 1})
LAYOUTS = {
    "distribute": ("distribute", 2, [], {}),
    "replicate3": ("replicate", 3, ["replica", "3"], {"replica": 3}),
    "replicate2": ("replicate", 2, ["replica", "2"], {"replica": 2}),
    "arbiter": ("arbiter", 3, ["replica", "3", "arbiter", "1"], {"replica": 3}),
    "disperse": ("disperse", 3, *EC_2_1),
    "dist-replicate": ("replicate", 6, ["replica", "3"], {"replica": 3}),
    "dist-disperse": ("disperse", 6, *EC_2_1),
}


def _volume_name(case: str) -> str:
    return "v" + case.replace("-", "")


@pytest.fixture(scope="module")
def created(private_glusterd):
    """Create every layout once in the private glusterd; map case -> (glusterd, our spec)."""
    gd = private_glusterd
    specs = {}
    for case, (type_, count, layout, kwargs) in LAYOUTS.items():
        name = _volume_name(case)
        (gd.root / "bricks" / name).mkdir(parents=True)  # glusterd makes only the last level
        paths = [str(gd.root / "bricks" / name / f"b{i}") for i in range(count)]
        result = gd.cli("volume", "create", name, *layout, *(f"{gd.host}:{p}" for p in paths), "force")
        assert result.returncode == 0, f"volume create {name}: {result.stdout}{result.stderr}"
        info = gd.volume_info(name)
        bricks = tuple(BrickSpec(node="local", address=gd.host, path=p, port=49152 + i) for i, p in enumerate(paths))
        specs[case] = VolumeSpec(
            name=name,
            id=info["volume-id"],
            type=type_,
            bricks=bricks,
            auth_username=info["username"],
            auth_password=info["password"],
            **kwargs,
        )
    return gd, specs


def _theirs(gd, vol: VolumeSpec, filename: str):
    path = gd.vol_dir(vol.name) / filename
    assert path.exists(), f"glusterd did not write {filename}"
    return parse_volfile(path.read_text())


def _assert_same(ours, theirs, what: str) -> None:
    problems = compare_graphs(ours, theirs, check_option_keys=True, ignore_keys=OUR_ADDITIONS)
    assert not problems, f"{what} differs from glusterd's:\n" + "\n".join(problems)


@pytest.mark.parametrize("case", list(LAYOUTS))
def test_client_volfiles_match_glusterd(created, case: str) -> None:
    gd, specs = created
    vol = specs[case]
    _assert_same(build_client_graph(vol), _theirs(gd, vol, f"{vol.name}.tcp-fuse.vol"), "client")
    _assert_same(
        build_client_graph(vol, trusted=True),
        _theirs(gd, vol, f"trusted-{vol.name}.tcp-fuse.vol"),
        "trusted client",
    )


@pytest.mark.parametrize("case", list(LAYOUTS))
def test_brick_volfiles_match_glusterd(created, case: str) -> None:
    gd, specs = created
    vol = specs[case]
    for i in range(len(vol.bricks)):
        theirs = _theirs(gd, vol, brick_volfile_name(vol, i))
        _assert_same(build_brick_graph(vol, i), theirs, f"brick {i}")


@pytest.mark.parametrize("case", [c for c, layout in LAYOUTS.items() if layout[0] != "distribute"])
def test_shd_volfiles_match_glusterd(created, case: str) -> None:
    gd, specs = created
    vol = specs[case]
    _assert_same(build_shd_graph(vol, "local"), _theirs(gd, vol, f"{vol.name}-shd.vol"), "shd")


# glusterd writes a rebalance volfile only for volumes of more than one set
MULTI_SET = [
    c for c, (type_, count, _, kw) in LAYOUTS.items() if count > (kw.get("replica") or kw.get("disperse") or 1)
]


@pytest.mark.parametrize("case", MULTI_SET)
def test_rebalance_volfiles_match_glusterd(created, case: str) -> None:
    gd, specs = created
    vol = specs[case]
    _assert_same(build_rebalance_graph(vol), _theirs(gd, vol, f"{vol.name}-rebalance.vol"), "rebalance")


@pytest.mark.parametrize("case", [c for c in LAYOUTS if c not in MULTI_SET])
def test_no_rebalance_volfile_for_a_single_set(created, case: str) -> None:
    gd, specs = created
    vol = specs[case]
    assert not (gd.vol_dir(vol.name) / f"{vol.name}-rebalance.vol").exists()
    with pytest.raises(VolgenError, match="single"):
        build_rebalance_graph(vol)


def test_glusterd_writes_no_shd_volfile_for_distribute(created) -> None:
    gd, specs = created
    vol = specs["distribute"]
    assert not (gd.vol_dir(vol.name) / f"{vol.name}-shd.vol").exists()


def test_options_match_glusterd(private_glusterd) -> None:
    """A volume with several options set: same graphs, and the same values for them."""
    gd = private_glusterd
    options = {
        "performance.io-cache": "on",
        "performance.read-ahead": "on",
        "performance.readdir-ahead": "on",
        "performance.nl-cache": "on",
        "performance.cache-size": "64MB",
        "performance.stat-prefetch": "off",
        "features.shard": "on",
        "features.ctime": "off",
        "auth.allow": "10.0.0.*",
        "network.ping-timeout": "10",
        "features.read-only": "on",
        "diagnostics.brick-log-level": "WARNING",
        "cluster.quorum-type": "fixed",
        "cluster.quorum-count": "2",
    }
    name = "vtuned"
    (gd.root / "bricks" / name).mkdir(parents=True)
    paths = [str(gd.root / "bricks" / name / f"b{i}") for i in range(3)]
    bricks = [f"{gd.host}:{p}" for p in paths]
    result = gd.cli("volume", "create", name, "replica", "3", *bricks, "force")
    assert result.returncode == 0, result.stdout + result.stderr
    for key, value in options.items():
        result = gd.cli("volume", "set", name, key, value)
        assert result.returncode == 0, f"volume set {key} {value}: {result.stdout}{result.stderr}"
    info = gd.volume_info(name)
    vol = VolumeSpec(
        name=name,
        id=info["volume-id"],
        type="replicate",
        replica=3,
        bricks=tuple(BrickSpec("local", gd.host, p, 49152 + i) for i, p in enumerate(paths)),
        options=options,
        auth_username=info["username"],
        auth_password=info["password"],
    )
    pairs = [
        (build_client_graph(vol), _theirs(gd, vol, f"{name}.tcp-fuse.vol")),
        (build_brick_graph(vol, 0), _theirs(gd, vol, brick_volfile_name(vol, 0))),
        (build_shd_graph(vol, "local"), _theirs(gd, vol, f"{name}-shd.vol")),
    ]
    for ours, theirs in pairs:
        _assert_same(ours, theirs, ours.top.type)
        # Values too, for xlators both name alike, except those that name places.
        theirs_by_name = {xl.name: xl for xl in theirs.xlators}
        for xl in ours.xlators:
            other = theirs_by_name.get(xl.name)
            if other is None:
                continue
            for key, value in xl.options.items():
                if key in OUR_ADDITIONS or key in ("timestamp-file", "shared-brick-count"):
                    continue
                assert other.options.get(key) == value, f"{xl.name} option {key}"


# Values that differ on purpose or name places (paths, hosts, credentials).
VALUE_EXEMPT = OUR_ADDITIONS | {"timestamp-file", "shared-brick-count"}

# 20+ options across brick, client and self-heal daemon xlators; several add or remove an xlator.
TUNED_REPLICATE = {
    # client graph: xlators added and removed
    "performance.io-cache": "on",
    "performance.read-ahead": "on",
    "performance.nl-cache": "on",
    "performance.write-behind": "off",
    "performance.quick-read": "off",
    "performance.client-io-threads": "on",
    "features.shard": "on",
    "features.shard-block-size": "16MB",
    "features.ctime": "off",
    # client options in xlators the graph holds
    "performance.cache-size": "64MB",
    "performance.md-cache-timeout": "5",
    "performance.cache-invalidation": "on",
    "performance.io-thread-count": "8",
    "network.ping-timeout": "10",
    "client.event-threads": "4",
    "diagnostics.client-log-level": "WARNING",
    "diagnostics.latency-measurement": "on",
    "server.manage-gids": "on",
    # AFR in client and shd graphs
    "cluster.quorum-type": "fixed",
    "cluster.quorum-count": "2",
    "cluster.data-self-heal": "off",
    "cluster.shd-max-threads": "4",
    "cluster.self-heal-daemon": "off",
    "cluster.heal-timeout": "120",
    "cluster.favorite-child-policy": "mtime",
    # brick graph (features.acl off removes access-control)
    "features.acl": "off",
    "features.read-only": "on",
    "features.cache-invalidation": "on",
    "server.root-squash": "on",
    "server.event-threads": "4",
    "diagnostics.brick-log-level": "WARNING",
    "config.brick-threads": "8",
    "storage.reserve": "5",
    "auth.allow": "10.0.0.*",
    "auth.reject": "10.0.0.9",
}
TUNED_DISPERSE = {
    "disperse.eager-lock": "off",
    "disperse.shd-max-threads": "4",
    "disperse.background-heals": "4",
    "cluster.heal-timeout": "120",
    "cluster.disperse-self-heal-daemon": "disable",
    "performance.stat-prefetch": "off",
    "performance.open-behind": "off",
    "performance.readdir-ahead": "on",
    "performance.rda-cache-limit": "20MB",
    "diagnostics.count-fop-hits": "on",
    "config.client-threads": "4",
    "storage.owner-uid": "1000",
    "storage.owner-gid": "1000",
    "features.leases": "on",
    "network.inode-lru-limit": "50000",
    "performance.io-thread-count": "32",
    "cluster.lookup-optimize": "off",
    "cluster.min-free-disk": "5%",
    "network.frame-timeout": "600",
    "features.worm": "on",
}
TUNED = {
    "tuned-replicate": ("replicate", 6, ["replica", "3"], {"replica": 3}, TUNED_REPLICATE),
    "tuned-disperse": ("disperse", 3, *EC_2_1, TUNED_DISPERSE),
}


def _assert_same_values(ours, theirs, what: str) -> None:
    """Every option both graphs hold in xlators of the same name has the same value."""
    theirs_by_name = {xl.name: xl for xl in theirs.xlators}
    problems = []
    for xl in ours.xlators:
        other = theirs_by_name.get(xl.name)
        if other is None:
            problems.append(f"{xl.name} ({xl.type}) is not in theirs")
            continue
        for key, value in xl.options.items():
            if key not in VALUE_EXEMPT and key in other.options and other.options[key] != value:
                problems.append(f"{xl.name} option {key}: ours {value!r}, theirs {other.options[key]!r}")
    assert not problems, f"{what} values differ from glusterd's:\n" + "\n".join(problems)


@pytest.mark.parametrize("case", list(TUNED))
def test_tuned_volumes_match_glusterd(private_glusterd, case: str) -> None:
    """Volumes with 20+ options set: every graph has glusterd's shape, option keys and values."""
    gd = private_glusterd
    type_, count, layout, kwargs, options = TUNED[case]
    assert len(options) >= 20
    name = _volume_name(case)
    (gd.root / "bricks" / name).mkdir(parents=True)
    paths = [str(gd.root / "bricks" / name / f"b{i}") for i in range(count)]
    result = gd.cli("volume", "create", name, *layout, *(f"{gd.host}:{p}" for p in paths), "force")
    assert result.returncode == 0, result.stdout + result.stderr
    for key, value in options.items():
        result = gd.cli("volume", "set", name, key, value)
        assert result.returncode == 0, f"volume set {key} {value}: {result.stdout}{result.stderr}"
    info = gd.volume_info(name)
    vol = VolumeSpec(
        name=name,
        id=info["volume-id"],
        type=type_,
        bricks=tuple(BrickSpec("local", gd.host, p, 49152 + i) for i, p in enumerate(paths)),
        options=options,
        auth_username=info["username"],
        auth_password=info["password"],
        **kwargs,
    )
    pairs = [
        (build_client_graph(vol), _theirs(gd, vol, f"{name}.tcp-fuse.vol"), "client"),
        (build_client_graph(vol, trusted=True), _theirs(gd, vol, f"trusted-{name}.tcp-fuse.vol"), "trusted client"),
        (build_shd_graph(vol, "local"), _theirs(gd, vol, f"{name}-shd.vol"), "shd"),
    ]
    pairs += [
        (build_brick_graph(vol, i), _theirs(gd, vol, brick_volfile_name(vol, i)), f"brick {i}") for i in range(count)
    ]
    for ours, theirs, what in pairs:
        _assert_same(ours, theirs, what)
        _assert_same_values(ours, theirs, what)
