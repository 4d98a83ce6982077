"""The foundation slice end to end, on both brokers and both databases."""

from __future__ import annotations

import time

import pytest

from tests.helpers import wait_until

KEEPALIVE = 2


@pytest.fixture(
    params=[("embedded", "sqlite"), ("embedded", "postgres"), ("mosquitto", "sqlite"), ("mosquitto", "postgres")],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def backend(request):
    """(broker, database URL); set up before the stack, so the database outlives the server."""
    broker, dbkind = request.param
    return broker, request.getfixturevalue("postgres_url") if dbkind == "postgres" else None


def test_slice(backend, make_stack):
    broker, db = backend
    st = make_stack(broker=broker, db=db).start()
    cli = st.cli

    # clusters: default exists, a new one prints its join token on its last line
    assert [c["name"] for c in cli.json("cluster", "list")] == ["default"]
    out = cli.run("cluster", "add", "prod").stdout.strip().splitlines()
    token = out[-1]
    assert token.startswith("prod.")
    assert cli.run("cluster", "token", "prod").stdout.strip().splitlines()[-1] == token

    agents = [st.agent(f"node{i}.example.com", token=token, keepalive=KEEPALIVE) for i in (1, 2, 3)]
    wait_until(
        lambda: [n["state"] for n in cli.json("cluster", "status", "prod")["nodes"]] == ["Online"] * 3,
        what="three nodes Online",
    )
    status = cli.json("cluster", "status", "-c", "prod")
    assert {n["address"] for n in status["nodes"]} == {"127.0.0.1"}
    assert all(n["agent_version"] and n["glusterfs_version"] for n in status["nodes"])
    table = cli.run("cluster", "status", "prod").stdout
    assert "node2.example.com" in table and "Online" in table

    # kill -9 an agent: Unreachable within 1.5 x keepalive + 1 s
    killed_at = time.monotonic()
    agents[1].kill9()
    wait_until(
        lambda: st.node_state("node2.example.com", "prod") == "Unreachable",
        timeout=1.5 * KEEPALIVE + 1,
        interval=0.05,
        what="node2 Unreachable",
    )
    assert time.monotonic() - killed_at <= 1.5 * KEEPALIVE + 1
    assert st.node_state("node1.example.com", "prod") == "Online"

    # restart it: Online again, no duplicate rows
    agents[1].start()
    wait_until(lambda: st.node_state("node2.example.com", "prod") == "Online", what="node2 Online again")
    assert len(cli.json("node", "list", "-c", "prod")) == 3

    # one task end to end
    probe = cli.json("node", "probe", "-c", "prod", "node1.example.com", "--path", str(st.tmp), "--wait")
    assert probe["state"] == "DONE", probe
    assert probe["result"]["xattrs"] is True and probe["result"]["free_bytes"] > 0
    assert [e["state"] for e in probe["events"]] == ["QUEUED", "RUNNING", "DONE"]

    # every state survives a restart of the server
    st.server.stop()
    st.server.start()
    wait_until(
        lambda: [n["state"] for n in cli.json("node", "list", "-c", "prod")] == ["Online"] * 3,
        what="nodes Online after server restart",
    )
    assert cli.json("task", "show", probe["id"])["state"] == "DONE"
    assert cli.run("cluster", "token", "prod").stdout.strip().splitlines()[-1] == token
    agents[2].stop()
    wait_until(lambda: st.node_state("node3.example.com", "prod") == "Unreachable", what="stopped agent Unreachable")
