"""Node identity on real brokers: the embedded one, and a private Mosquitto with its dynamic security plugin.

The join token only enrols; each node then uses its own credential, which acts only as that node.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

import httpx
import pytest

from broker.dynsec import enrol_username, node_username
from broker.messages import Heartbeat, Presence, new_node_secret
from broker.topics import Topics
from tests.conftest import Stack
from tests.helpers import Agent, unique, wait_until
from tests.mqtt_raw import RawClient, enrol, read_credential
from tests.test_dynsec import Mosquitto, _need_mosquitto, start_mosquitto

# how long a "must not happen" check watches
QUIET = 2.0
BROKERS = ["embedded", "dynsec"]


@pytest.fixture(scope="module")
def dynsec_mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    _need_mosquitto()
    broker = start_mosquitto(tmp_path_factory.mktemp("identity-mosquitto"))
    yield broker
    broker.proc.stop()


@pytest.fixture(params=BROKERS)
def st(request, tmp_path) -> Iterator[Stack]:
    """A started server with an admin logged in, on the embedded broker or on Mosquitto with dynsec."""
    stack = Stack(tmp_path, request, "embedded")
    if request.param == "dynsec":
        mosq: Mosquitto = request.getfixturevalue("dynsec_mosquitto")
        server = stack.server
        server.mqtt_root = unique("t")
        server.mqtt_port = mosq.port
        argv = server.argv
        argv[argv.index("--mqtt-root") + 1] = server.mqtt_root
        i = argv.index("--mqtt")
        argv[i : i + 2] = ["--mqtt-url", f"mqtt://dynsec-admin:{mosq.admin_password}@127.0.0.1:{mosq.port}"]
        argv.append("--mqtt-dynsec")
    stack.start()
    yield stack
    stack.close()


def topics_of(st: Stack) -> Topics:
    return Topics(st.server.mqtt_root)


def online(st: Stack, *names: str) -> None:
    wait_until(lambda: all(st.node_state(n) == "Online" for n in names), 30, what=f"{names} Online")


def without_token(agent: Agent) -> Agent:
    """The same agent, started again without any join token."""
    i = agent.argv.index("--token")
    del agent.argv[i : i + 2]
    return agent


def refused(port: int, username: str, password: str, client_id: str = "") -> None:
    raw = RawClient(port, username, password, client_id=client_id or unique("x-"))
    try:
        assert not raw.wait_connack(), f"{username} was let in"
    finally:
        raw.close()


def connects(agent: Agent) -> int:
    return agent.log().count("INFO agent.node: connected to")


def test_enrolment_then_the_token_is_not_needed(st: Stack) -> None:
    n1 = st.agent("n1")
    online(st, "n1")
    node, secret = read_credential(n1.state_dir)
    mode = stat.S_IMODE(os.stat(n1.state_dir / "node.secret").st_mode)
    assert node == "n1" and len(secret) >= 32 and mode == 0o600
    assert not (n1.state_dir / "node.secret.pending").exists()
    # the agent logs its enrolment right after storing the credential
    wait_until(lambda: "enrolled in cluster default" in n1.log(), what="the enrolment in the agent's log")

    # restart without a token: the agent logs in with its own credential
    n1.stop()
    wait_until(lambda: st.node_state("n1") == "Unreachable", what="n1 Unreachable")
    without_token(n1).start()
    online(st, "n1")
    assert n1.log().count("enrolled in cluster default") == 1
    assert secret not in n1.log() and secret not in st.server.log()

    # no token and no credential: a clear error
    fresh = st.agent("n9", start=False)
    without_token(fresh).start()
    assert fresh.wait_exit(20) == 1
    assert "no join token and no node credential" in fresh.log()


def current_epoch(agent: Agent) -> int:
    return int((agent.state_dir / "epoch").read_text())


def test_the_join_token_and_other_nodes_cannot_act_as_a_node(st: Stack) -> None:
    t, port, token = topics_of(st), st.server.mqtt_port, st.join_token()
    join_secret = token.rsplit(".", 1)[1]
    n1, n2 = st.agent("n1"), st.agent("n2")
    online(st, "n1", "n2")
    _, secret1 = read_credential(n1.state_dir)
    wait_until(lambda: connects(n1) == connects(n2) == 2, what="both connected as themselves")
    n2_epoch = current_epoch(n2)
    n2.stop()  # n2 now has a retained task, and would turn Online on a heartbeat of its epoch
    wait_until(lambda: st.node_state("n2") == "Unreachable", what="n2 Unreachable")
    task = st.cli.json("node", "probe", "n2")["id"]

    # the join token's secret is no password of a node user
    refused(port, node_username(t, "default", "n1"), join_secret)

    # (b) the enrolment login: a death notice of n1's current epoch and a heartbeat never arrive
    enroller = RawClient(port, enrol_username(t, "default"), join_secret, client_id=unique("enrol-"))
    assert enroller.wait_connack()
    forged = Presence(state="offline", epoch=current_epoch(n1)).model_dump_json()
    enroller.publish(t.presence("default", "n1"), forged, retain=True)
    enroller.publish(t.heartbeat("default", "n2"), Heartbeat(epoch=n2_epoch, seq=1, at=1).model_dump_json())
    assert not enroller.subscribe(t.tasks_filter("default", "n2"))
    enroller.drain(QUIET)
    enroller.close()

    # (c) n1's credential: n2's tasks are not delivered, n2's topics not accepted
    raw1 = RawClient(port, node_username(t, "default", "n1"), secret1, client_id=unique("raw-n1-"))
    assert raw1.wait_connack()
    raw1.subscribe(t.tasks_filter("default", "n2"))  # refused, or granted and never delivered
    raw1.subscribe(f"{t.base}/#")
    raw1.publish(t.heartbeat("default", "n2"), Heartbeat(epoch=n2_epoch, seq=2, at=2).model_dump_json())
    raw1.publish(t.presence("default", "n2"), Presence(state="online", epoch=n2_epoch).model_dump_json())
    got = raw1.drain(QUIET)
    raw1.close()
    assert not [topic for topic, _ in got if "/nodes/n2/" in topic], got

    assert st.node_state("n1") == "Online" and st.node_state("n2") == "Unreachable"
    log = st.server.log()
    assert "node n1: Online -> Unreachable" not in log and "node n2: Unreachable -> Online" not in log
    assert st.cli.json("task", "show", task)["state"] == "QUEUED"
    n2.start()
    wait_until(lambda: st.cli.json("task", "show", task)["state"] == "DONE", 30, what="n2's task DONE")


def test_reenrolment_needs_an_admin_and_rotation_keeps_nodes(st: Stack) -> None:
    t, port = topics_of(st), st.server.mqtt_port
    token = st.join_token()
    n1 = st.agent("n1")
    online(st, "n1")
    read_credential(n1.state_dir)

    # (d) a known name cannot enrol again: not by a raw enrolment, not by a fresh agent
    refused = enrol(port, t, token, "n1", new_node_secret(), agent_id="b" * 32, epoch=7)
    assert not refused.accepted
    assert "already enrolled" in refused.reason and "glusterctl node remove -c default n1" in refused.reason
    assert "node reenrol" in refused.reason
    other = Agent(st.tmp / "other", st.server, token, "n1")
    (st.tmp / "other").mkdir()
    st.procs.append(other)
    other.start()
    assert other.wait_exit(20) == 2
    assert "already enrolled" in other.log() and "node reenrol" in other.log()
    assert n1.alive() and st.node_state("n1") == "Online"

    # (e) rotating the join token: enrolled nodes stay connected; the old token enrols no more
    before = connects(n1)
    new_token = st.cli.run("cluster", "token", "--rotate").stdout.strip().splitlines()[-1]
    st.agent("n2", token=new_token)
    online(st, "n2")
    wait_until(
        lambda: (
            not RawClient(
                port, enrol_username(t, "default"), token.rsplit(".", 1)[1], client_id=unique("o-")
            ).wait_connack()
        ),
        what="old join token refused",
    )
    assert connects(n1) == before and n1.alive() and st.node_state("n1") == "Online"
    assert st.cli.json("node", "probe", "n1", "--wait")["state"] == "DONE"

    # an admin allows one re-enrolment; the old credential is then replaced and refused
    st.cli.run("user", "create", "bob", "--password-stdin", input="bobs-password\n")
    bob = st.cli.api("POST", "/api/v1/login", json={"username": "bob", "password": "bobs-password"}).json()
    denied = httpx.post(
        f"{st.server.url}/api/v1/clusters/default/nodes/n1/reenrol",
        headers={"Authorization": f"Bearer {bob['token']}"},
        timeout=10,
    )
    assert denied.status_code == 403 and "admin" in denied.json()["detail"]
    out = st.cli.run("node", "reenrol", "-c", "default", "n1").stdout
    assert "may enrol again until" in out
    n1.stop()
    replacement = Agent(st.tmp / "replacement", st.server, new_token, "n1")
    (st.tmp / "replacement").mkdir()
    st.procs.append(replacement)
    replacement.start()
    online(st, "n1")
    read_credential(replacement.state_dir)
    n1.start()  # the old agent, with the replaced credential
    assert n1.wait_exit(20) == 2
    assert "refused the credential of node n1" in n1.log() and "node reenrol -c default n1" in n1.log()
    # one enrolment only
    again = enrol(port, t, new_token, "n1", new_node_secret(), agent_id="c" * 32, epoch=9)
    assert not again.accepted and "already enrolled" in again.reason

    # node remove: the credential is gone, its live session is closed and refused from then on
    st.cli.run("node", "remove", "-c", "default", "n1", "--force")
    assert replacement.wait_exit(20) == 2, replacement.log()
    assert "refused the credential of node n1" in replacement.log()
    assert "n1" not in st.nodes()
    # and the name can enrol anew with the join token
    assert enrol(port, t, new_token, "n1", new_node_secret(), agent_id="d" * 32, epoch=11).accepted


def test_a_bad_login_with_a_live_client_id_does_not_disturb_it(st: Stack) -> None:
    t, port = topics_of(st), st.server.mqtt_port
    n1 = st.agent("n1")
    online(st, "n1")
    read_credential(n1.state_dir)
    wait_until(lambda: connects(n1) == 2, what="n1 connected as itself")
    agent_id = (n1.state_dir / "agent-id").read_text().strip()
    client_id = f"glusterctl-agent-n1-{agent_id[:8]}"
    for username, password in (
        (node_username(t, "default", "n1"), "wrong-wrong-wrong-wrong"),
        (enrol_username(t, "default"), "wrong-wrong-wrong-wrong"),
        ("nobody", "nothing"),
    ):
        refused(port, username, password, client_id)
    # the live agent noticed nothing and still works
    assert st.cli.json("node", "probe", "n1", "--wait")["state"] == "DONE"
    assert connects(n1) == 2 and "lost the MQTT broker" not in n1.log()
    assert st.node_state("n1") == "Online"
