"""Bad input and faults: wrong tokens, ACL, malformed payloads, stale wills, killed server."""

from __future__ import annotations

import re
import shutil
import time

import pytest

from broker.dynsec import enrol_username, node_username
from broker.messages import Presence, new_node_secret
from broker.topics import Topics
from tests.helpers import Agent, Server, free_port, wait_until
from tests.mqtt_raw import RawClient, enrol, node_hello, read_credential

NOT_DELIVERED_WAIT = 2.0  # how long a "must not arrive" check listens


@pytest.mark.parametrize("broker", ["embedded", "mosquitto"])
def test_agent_auth_errors_exit_nonzero_and_change_nothing(make_stack, broker):
    st = make_stack(broker=broker).start()
    token = st.join_token()
    good = st.agent("n1", token=token)
    wait_until(lambda: st.node_state("n1") == "Online", what="n1 Online")
    before = st.nodes()

    cluster, secret = token.rsplit(".", 1)
    cases = {
        "wrong": (f"{cluster}.{'x' * len(secret)}", r"join token"),
        "unknown-cluster": (f"nosuchcluster.{secret}", r"nosuchcluster|join token"),
    }
    for name, (bad_token, pattern) in cases.items():
        agent = st.agent(f"bad-{name}", token=bad_token)
        assert agent.wait_exit(20) == 2, agent.log()
        assert re.search(pattern, agent.log()), agent.log()

    # a second agent holding n1's credential (a copied state dir) is refused while n1 is connected
    dup = st.agent("n1", token=token, start=False)
    dup.state_dir = st.tmp / "agent-n1-dup"
    dup.argv[dup.argv.index("--state-dir") + 1] = str(dup.state_dir)
    dup.state_dir.mkdir()
    shutil.copy(good.state_dir / "node.secret", dup.state_dir / "node.secret")
    dup.start()
    assert dup.wait_exit(20) == 2, dup.log()
    assert "already connected from another agent" in dup.log()

    after = st.nodes()
    assert set(after) == set(before) == {"n1"}
    assert after["n1"]["state"] == "Online" and good.alive()


def test_agent_retries_while_broker_is_down(make_stack):
    st = make_stack()
    # the agent starts first, with nothing listening on the broker port
    agent = Agent(st.tmp, st.server, "default.placeholderplaceholder", "early")
    st.procs.append(agent)
    agent.start()
    time.sleep(NOT_DELIVERED_WAIT)
    assert agent.alive(), agent.log()
    agent.stop()
    st.start()
    agent = st.agent("early")
    wait_until(lambda: st.node_state("early") == "Online", timeout=40, what="agent registered once the broker is up")


def test_embedded_broker_acl(stack):
    st = stack
    topics = Topics()
    token = st.join_token()
    st.agent("n2")
    first = st.agent("n1")
    wait_until(lambda: st.node_state("n2") == st.node_state("n1") == "Online", what="n1 and n2 Online")
    # the node is Online once its enrolment is accepted; the agent stores its credential right after
    _, secret = read_credential(first.state_dir)
    first.stop()
    n1_user = node_username(topics, "default", "n1")
    port = st.server.mqtt_port

    n1 = RawClient(port, n1_user, secret, client_id="raw-n1")
    assert n1.wait_connack()
    try:
        # may not read another node's tasks, nor everything
        assert not n1.subscribe(topics.tasks_filter("default", "n2"))
        assert not n1.subscribe("glusterctl/#")
        assert n1.subscribe(topics.tasks_filter("default", "n1"))
        # may not impersonate another node: the publish is dropped by the broker
        watcher = RawClient(port, "admin", "correct-horse", client_id="raw-monitor")
        assert watcher.wait_connack()
        assert watcher.subscribe(f"{topics.base}/clusters/+/nodes/+/heartbeat")
        watcher.drain(0.2)
        forged = b'{"epoch": 1, "seq": 1, "at": 1}'
        n1.publish(topics.heartbeat("default", "n2"), forged)
        n1.publish(topics.heartbeat("default", "n1"), forged)
        # monitors are read-only
        watcher.publish(topics.heartbeat("default", "n2"), b"{}")
        seen = watcher.drain(NOT_DELIVERED_WAIT)
        assert (topics.heartbeat("default", "n1"), forged) in seen
        assert (topics.heartbeat("default", "n2"), forged) not in seen
        assert (topics.heartbeat("default", "n2"), b"{}") not in seen
        assert any(t == topics.heartbeat("default", "n2") for t, _ in seen)  # the real n2 still beats
        watcher.close()
    finally:
        n1.close()

    # a last-will on another node's topic, any last-will when enrolling, wrong secrets, anonymous: refused
    assert not RawClient(
        port, n1_user, secret, client_id="raw-will", will=(topics.presence("default", "n2"), b"x")
    ).wait_connack()
    enrol_user, join_secret = enrol_username(topics, "default"), token.rsplit(".", 1)[1]
    assert not RawClient(
        port, enrol_user, join_secret, client_id="raw-enrol-will", will=(topics.presence("default", "n2"), b"x")
    ).wait_connack()
    assert not RawClient(port, n1_user, "wrongwrongwrongwrong", client_id="raw-wrong").wait_connack()
    assert not RawClient(port, enrol_user, "wrongwrongwrongwrong", client_id="raw-wrong-enrol").wait_connack()
    assert not RawClient(port, None, None, client_id="raw-anon").wait_connack()
    assert st.node_state("n2") == "Online"


@pytest.mark.parametrize("broker", ["embedded", "mosquitto"])
def test_malformed_and_oversized_payloads_are_dropped(make_stack, broker):
    st = make_stack(broker=broker).start()
    topics = Topics(st.server.mqtt_root)
    good = st.agent("good")
    wait_until(lambda: st.node_state("good") == "Online", what="good Online")
    port = st.server.mqtt_port
    # a node that sends garbage on its own topics (the broker lets it: they are its own)
    node, secret = read_credential(good.state_dir)
    raw = RawClient(port, node_username(topics, "default", node), secret, client_id="raw-evil")
    assert raw.wait_connack()
    for leaf in ("hello", "presence", "heartbeat", "task-status"):
        topic = f"{topics.node_prefix('default', 'good')}/{leaf}"
        raw.publish(topic, b"{not json")
        raw.publish(topic, b'{"epoch": "many"}')
        raw.publish(topic, b"x" * (300 * 1024))
    raw.close()

    def log():
        return st.server.log()

    wait_until(lambda: log().count("node good: dropped") >= 12, what="12 drops logged with the node name")
    assert "dropped 307200-byte payload" in log()
    assert st.server.alive()
    # the service goes on: a new task still runs
    assert st.cli.json("node", "probe", "good", "--wait")["state"] == "DONE"
    assert set(st.nodes()) == {"good"}


def test_stale_last_will_does_not_mark_a_live_node_unreachable(stack):
    st = stack
    topics = Topics()
    token = st.join_token()
    port = st.server.mqtt_port
    registration = topics.registration("default", "n1")
    secret = new_node_secret()
    assert enrol(port, topics, token, "n1", secret, epoch=500).accepted

    def connect(epoch: int, client_id: str) -> RawClient:
        offline = Presence(state="offline", epoch=epoch).model_dump_json().encode()
        raw = RawClient(
            port,
            node_username(topics, "default", "n1"),
            secret,
            client_id=client_id,
            will=(topics.presence("default", "n1"), offline),
        )
        assert raw.wait_connack()
        assert raw.subscribe(registration)
        raw.publish(topics.hello("default", "n1"), node_hello("default", "n1", secret, "a" * 32, epoch))
        topic, payload = raw.messages.get(timeout=10)
        assert topic == registration and b'"accepted":true' in payload, payload
        return raw

    old = connect(1000, "raw-old")
    wait_until(lambda: st.node_state("n1") == "Online", what="n1 Online")
    new = connect(2000, "raw-new")  # the same agent reconnected before the broker noticed the old connection died
    old.abort()  # now the old connection's last-will (epoch 1000) is delivered
    wait_until(lambda: "ignoring offline presence of epoch 1000" in st.server.log(), what="stale will ignored")
    assert st.node_state("n1") == "Online"
    new.abort()  # the current connection's will counts
    wait_until(lambda: st.node_state("n1") == "Unreachable", timeout=5, what="n1 Unreachable")


def test_server_killed_with_queued_and_running_tasks(stack):
    st = stack
    busy, away = st.agent("busy"), st.agent("away")
    wait_until(lambda: st.node_state("busy") == st.node_state("away") == "Online", what="agents Online")
    away.stop()
    wait_until(lambda: st.node_state("away") == "Unreachable", what="away Unreachable")
    queued = st.cli.json("node", "probe", "away")["id"]
    running = st.cli.json("node", "probe", "busy", "--path", str(st.tmp), "--io-seconds", "3")["id"]
    wait_until(lambda: st.cli.json("task", "show", running)["state"] == "RUNNING", what="task RUNNING")
    assert st.cli.json("task", "show", queued)["state"] == "QUEUED"

    st.server.kill9()  # returns once the process is gone
    st.server.start()
    away.start()
    for task_id in (queued, running):
        wait_until(
            lambda: st.cli.json("task", "show", task_id)["state"] == "DONE", timeout=30, what=f"task {task_id} DONE"
        )
    for agent, task_id in ((busy, running), (away, queued)):
        assert agent.log().count(f"executing task {task_id}") == 1, agent.log()
    assert st.cli.json("task", "show", running)["result"]["write_mib_per_second"] > 0


def test_invalid_names_are_refused_with_the_rule(stack, tmp_path):
    st = stack
    bad = st.cli.run("cluster", "add", "no spaces!", check=False)
    assert bad.returncode == 1 and "invalid cluster name" in bad.stderr and "letters, digits" in bad.stderr
    bad = st.cli.run("user", "create", "a/b", "--password-stdin", input="longenough\n", check=False)
    assert bad.returncode == 1 and "invalid user name" in bad.stderr
    agent = st.agent("under_score!")
    assert agent.wait_exit(15) == 1
    assert "invalid node name" in agent.log() and "host name" in agent.log()
    assert [c["name"] for c in st.cli.json("cluster", "list")] == ["default"]


def test_port_in_use_is_a_one_line_error(stack, tmp_path):
    taken = stack.server.mqtt_port
    other = Server(tmp_path / "second", broker="embedded")
    (tmp_path / "second").mkdir()
    other.mqtt_port = taken
    other.argv[other.argv.index("--mqtt") + 1] = f"127.0.0.1:{taken}"
    other.start(wait=False)
    assert other.wait_exit(20) == 1
    lines = [line for line in other.log().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and str(taken) in lines[0] and "--mqtt" in lines[0] and "--mqtt-url" in lines[0]
    assert free_port()
