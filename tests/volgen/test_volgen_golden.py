"""Golden-file tests for volgen, plus validation, options and the parser.

Regenerate the golden files after a deliberate change with
    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/volgen/test_volgen_golden.py
and review the diff: each change there is a change in what every brick and client runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from graph_compare import compare_graphs, graph_shape, parse_volfile, same_structure

from control.volgen import (
    BrickSpec,
    VolgenError,
    VolumeSpec,
    brick_volfile,
    brick_volfile_name,
    build_client_graph,
    client_volfile,
    shd_volfile,
)

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

NODES = [("node1", "10.0.0.1"), ("node2", "10.0.0.2"), ("node3", "10.0.0.3")]


def bricks(count: int, volume: str) -> tuple[BrickSpec, ...]:
    """Bricks spread round-robin over three nodes, ports from 49152."""
    return tuple(
        BrickSpec(
            node=NODES[i % 3][0],
            address=NODES[i % 3][1],
            path=f"/bricks/{volume}/b{i}",
            port=49152 + i,
        )
        for i in range(count)
    )


def spec(name: str, type_: str, count: int, **kw) -> VolumeSpec:
    return VolumeSpec(
        name=name,
        id=f"00000000-0000-4000-8000-{count:04d}{len(name):08d}",
        type=type_,
        bricks=bricks(count, name),
        auth_username="11111111-2222-4333-8444-555555555555",
        auth_password="66666666-7777-4888-9999-aaaaaaaaaaaa",
        **kw,
    )


CASES = {
    "distribute": spec("dist", "distribute", 2),
    "replicate3": spec("rep3", "replicate", 3, replica=3),
    "replicate2": spec("rep2", "replicate", 2, replica=2),
    "arbiter": spec("arb", "arbiter", 3, replica=3),
    "disperse": spec("disp", "disperse", 3, disperse=3, redundancy=1),
    "dist-replicate": spec("drep", "replicate", 6, replica=3),
    "dist-disperse": spec("ddisp", "disperse", 6, disperse=3, redundancy=1),
}


def volfiles(vol: VolumeSpec) -> dict[str, str]:
    files = {f"brick-{i}.vol": brick_volfile(vol, i) for i in range(len(vol.bricks))}
    files["client.vol"] = client_volfile(vol)
    files["trusted-client.vol"] = client_volfile(vol, trusted=True)
    if vol.type != "distribute":
        files["shd.vol"] = shd_volfile(vol, vol.bricks[0].node)
    return files


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    directory = GOLDEN / case
    generated = volfiles(CASES[case])
    if UPDATE:
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.vol"):
            old.unlink()
        for name, text in generated.items():
            (directory / name).write_text(text)
    expected = {p.name for p in directory.glob("*.vol")}
    assert expected == set(generated), f"golden files for {case} differ in set; UPDATE_GOLDEN=1?"
    for name, text in generated.items():
        assert text == (directory / name).read_text(), f"{case}/{name} changed; UPDATE_GOLDEN=1?"


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_volfile_parses_back_to_the_same_graph(case: str) -> None:
    for name, text in volfiles(CASES[case]).items():
        graph = parse_volfile(text)
        assert graph.render() == text, name


def test_client_graph_layers() -> None:
    shape = graph_shape(build_client_graph(CASES["dist-replicate"]))
    chain = []
    node = shape
    while len(node[1]) == 1:
        chain.append(node[0])
        node = node[1][0]
    assert chain == [
        "debug/io-stats",
        "performance/md-cache",
        "performance/quick-read",
        "performance/open-behind",
        "performance/write-behind",
        "features/utime",
    ]
    assert node[0] == "cluster/distribute"
    assert [child[0] for child in node[1]] == ["cluster/replicate"] * 2
    assert all(len(child[1]) == 3 for child in node[1])


def test_client_io_threads_only_for_non_replicated_volumes() -> None:
    assert "performance/io-threads" in client_volfile(CASES["disperse"])
    assert "performance/io-threads" in client_volfile(CASES["distribute"])
    assert "performance/io-threads" not in client_volfile(CASES["replicate3"])


def test_client_connects_to_brick_port_and_path() -> None:
    vol = CASES["replicate3"]
    client = parse_volfile(client_volfile(vol)).get("rep3-client-1")
    assert client.options["remote-host"] == "10.0.0.2"
    assert client.options["remote-port"] == "49153"
    assert client.options["remote-subvolume"] == "/bricks/rep3/b1"
    assert "username" not in client.options


def test_brick_server_and_auth() -> None:
    vol = CASES["replicate3"]
    graph = parse_volfile(brick_volfile(vol, 2))
    server = graph.top
    assert server.type == "protocol/server"
    assert server.options["transport.socket.listen-port"] == "49154"
    assert server.options["auth.addr./bricks/rep3/b2.allow"] == "*"
    assert server.options["auth.login./bricks/rep3/b2.allow"] == vol.auth_username
    assert server.options[f"auth.login.{vol.auth_username}.password"] == vol.auth_password
    posix = graph.of_type("storage/posix")[0]
    assert posix.options["volume-id"] == vol.id
    assert posix.options["directory"] == "/bricks/rep3/b2"
    assert brick_volfile_name(vol, 2) == "rep3.10.0.0.3.bricks-rep3-b2.vol"


def test_arbiter_xlator_only_on_last_brick_of_each_set() -> None:
    vol = spec("arb6", "arbiter", 6, replica=3)
    with_arbiter = [i for i in range(6) if "features/arbiter" in brick_volfile(vol, i)]
    assert with_arbiter == [2, 5]
    assert "option arbiter-count 1" in client_volfile(vol)


def test_without_credentials_bricks_are_addr_only() -> None:
    vol = VolumeSpec("plain", "00000000-0000-4000-8000-000000000001", "distribute", bricks(1, "p"))
    assert "auth.login" not in brick_volfile(vol, 0)
    with pytest.raises(VolgenError, match="trusted client volfile"):
        client_volfile(vol, trusted=True)


def test_options_land_on_the_right_xlators() -> None:
    vol = spec(
        "tuned",
        "replicate",
        3,
        replica=3,
        options={
            "performance.io-cache": "on",
            "performance.cache-size": "64MB",
            "performance.stat-prefetch": "off",
            "network.ping-timeout": "10",
            "auth.allow": "10.0.0.*,192.168.1.5",
            "features.read-only": "on",
            "features.ctime": "off",
            "features.shard": "on",
            "cluster.quorum-type": "auto",
            "diagnostics.brick-log-level": "WARNING",
            "performance.io-thread-count": "32",
        },
    )
    client = parse_volfile(client_volfile(vol))
    types = [xl.type for xl in client.xlators]
    assert "performance/io-cache" in types and "performance/md-cache" not in types
    assert "features/utime" not in types and "features/shard" in types
    assert client.of_type("performance/io-cache")[0].options["cache-size"] == "64MB"
    assert client.of_type("performance/quick-read")[0].options["cache-size"] == "64MB"
    assert all(c.options["ping-timeout"] == "10" for c in client.of_type("protocol/client"))
    assert client.of_type("cluster/replicate")[0].options["quorum-type"] == "auto"
    brick = parse_volfile(brick_volfile(vol, 0))
    assert brick.top.options["auth.addr./bricks/tuned/b0.allow"] == "10.0.0.*,192.168.1.5"
    assert brick.of_type("features/read-only")[0].options["read-only"] == "on"
    assert brick.of_type("storage/posix")[0].options["ctime"] == "off"
    assert brick.of_type("debug/io-stats")[0].options["log-level"] == "WARNING"
    assert brick.of_type("performance/io-threads")[0].options["thread-count"] == "32"
    shd = parse_volfile(shd_volfile(vol, "node1"))
    assert shd.of_type("cluster/replicate")[0].options["quorum-type"] == "auto"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"performance.io-cach": "on"}, "'performance.io-cach' does not exist .*did you mean performance.io-cache"),
        ({"no.such.key": "1"}, "'no.such.key' does not exist in GlusterFS 10.3"),
        ({"performance.io-cache": "maybe"}, "expected a boolean"),
        ({"network.ping-timeout": "soon"}, "expected a time in seconds"),
        ({"network.ping-timeout": "5000"}, r"in \[0 - 1013\]"),
        ({"cluster.quorum-type": "most"}, "expected one of none, auto, fixed"),
        ({"auth.allow": "10.0.0.1 10.0.0.2"}, "must be stored as '10.0.0.110.0.0.2'"),
        ({"performance.cache-size": "lots"}, "expected a size"),
        ({"ping-timeout": "10"}, "must be stored under its full name 'network.ping-timeout'"),
        ({"cluster.nufa": "on"}, "not supported: NUFA"),
        ({"cluster.brick-multiplex": "on"}, "whole cluster"),
    ],
)
def test_bad_options_are_refused(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spec("bad", "distribute", 1, options=options)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(type_="replicate", count=4, replica=3), "multiple of 3 bricks, got 4"),
        (dict(type_="replicate", count=2, replica=1), "replica count must be at least 2"),
        (dict(type_="arbiter", count=4, replica=2), "arbiter volumes are replica 3"),
        (dict(type_="arbiter", count=4, replica=3), "multiple of 3 bricks"),
        (dict(type_="disperse", count=4, disperse=4, redundancy=2), "greater than 2 x redundancy"),
        (dict(type_="disperse", count=3, disperse=3, redundancy=0), "redundancy must be at least"),
        (dict(type_="disperse", count=4, disperse=3, redundancy=1), "multiple of 3 bricks, got 4"),
        (dict(type_="disperse", count=2, disperse=2, redundancy=1), "at least 3"),
        (dict(type_="distribute", count=2, replica=2), "distribute volume takes no replica"),
        (dict(type_="stripe", count=2), "allowed: distribute, replicate, arbiter, disperse"),
        (dict(type_="distribute", count=0), "at least one brick"),
    ],
)
def test_bad_layouts_are_refused(kwargs: dict, message: str) -> None:
    type_, count = kwargs.pop("type_"), kwargs.pop("count")
    with pytest.raises(ValueError, match=message):
        spec("bad", type_, count, **kwargs)


def test_bad_bricks_and_identity_are_refused() -> None:
    good = bricks(2, "v")
    with pytest.raises(VolgenError, match="not a UUID"):
        VolumeSpec("v", "nope", "distribute", good)
    with pytest.raises(VolgenError, match="volume name"):
        VolumeSpec("bad name", "00000000-0000-4000-8000-000000000001", "distribute", good)
    dup = (good[0], BrickSpec("node1", "10.0.0.1", "/bricks/v/b0", 50000))
    with pytest.raises(VolgenError, match="same directory"):
        VolumeSpec("v", "00000000-0000-4000-8000-000000000001", "distribute", dup)
    same_port = (good[0], BrickSpec("node1", "10.0.0.1", "/bricks/v/other", good[0].port))
    with pytest.raises(VolgenError, match="already used"):
        VolumeSpec("v", "00000000-0000-4000-8000-000000000001", "distribute", same_port)
    relative = (BrickSpec("node1", "10.0.0.1", "bricks/v", 50000),)
    with pytest.raises(VolgenError, match="absolute"):
        VolumeSpec("v", "00000000-0000-4000-8000-000000000001", "distribute", relative)
    with pytest.raises(VolgenError, match="together"):
        VolumeSpec("v", "00000000-0000-4000-8000-000000000001", "distribute", good, auth_username="u")


def test_shd_refused_for_distribute_and_foreign_node() -> None:
    with pytest.raises(VolgenError, match="distribute"):
        shd_volfile(CASES["distribute"], "node1")
    with pytest.raises(VolgenError, match="holds no brick"):
        shd_volfile(CASES["replicate2"], "node3")


def test_brick_index_out_of_range() -> None:
    with pytest.raises(VolgenError, match="out of range"):
        brick_volfile(CASES["replicate2"], 2)


def test_shared_brick_count_follows_device() -> None:
    vol = VolumeSpec(
        "shared",
        "00000000-0000-4000-8000-000000000001",
        "distribute",
        (
            BrickSpec("n1", "10.0.0.1", "/d/a", 49152, device="/dev/sdb"),
            BrickSpec("n1", "10.0.0.1", "/d/b", 49153, device="/dev/sdb"),
            BrickSpec("n1", "10.0.0.1", "/e/c", 49154, device="/dev/sdc"),
        ),
    )
    posix = [parse_volfile(brick_volfile(vol, i)).of_type("storage/posix")[0] for i in range(3)]
    counts = [xl.options["shared-brick-count"] for xl in posix]
    assert counts == ["2", "2", "1"]


def test_compare_graphs_reports_differences() -> None:
    a = parse_volfile(client_volfile(CASES["replicate3"]))
    b = parse_volfile(client_volfile(CASES["disperse"]))
    assert same_structure(a, parse_volfile(client_volfile(spec("x", "replicate", 3, replica=3))))
    assert not same_structure(a, b)
    problems = compare_graphs(a, b)
    assert problems and "performance/io-threads" in problems[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("volume a\n type x\n", "no end-volume"),
        ("volume a\n type x\n subvolumes b\nend-volume\n", "not defined before"),
        ("option x y\n", "outside a volume"),
        ("volume a\nend-volume\n", "has no type"),
        ("", "no xlators"),
        ("volume a\n type x\n frobnicate\nend-volume\n", "unknown keyword"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(VolgenError, match=message):
        parse_volfile(text)
