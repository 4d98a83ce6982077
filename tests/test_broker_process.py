"""The embedded broker in its own process: logins are answered by the server over the channel, a
revoked credential's sessions are closed, a killed broker process is started again, and the broker
process never outlives the server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.dynsec import control_username, node_username
from broker.embedded import BrokerError
from broker.process import BrokerProcess
from broker.topics import Topics
from tests.helpers import free_port, port_open, unique, wait_until
from tests.mqtt_raw import RawClient
from tests.test_broker_sessions import CONTROL_SECRET, NODE_SECRET, OneNode

REPO = Path(__file__).resolve().parent.parent


class Counting(OneNode):
    """OneNode's answers, counting the node logins it was asked about (in the test's own process)."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []
        self.revoked = False

    def node_ok(self, cluster: str, node: str, secret: str) -> bool:
        self.asked.append((cluster, node))
        return not self.revoked and super().node_ok(cluster, node, secret)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


class Broker:
    def __init__(self) -> None:
        self.port, self.topics, self.authority = free_port(), Topics(unique("gct")), Counting()
        self.process = BrokerProcess(self.authority, self.topics, "127.0.0.1", self.port)

    def node(self, secret: str = NODE_SECRET, will: bool = True) -> RawClient:
        presence = self.topics.presence("c", "n")
        return RawClient(
            self.port,
            node_username(self.topics, "c", "n"),
            secret,
            client_id=unique("glusterctl-agent-n-"),
            will=(presence, b"offline") if will else None,
        )

    def watcher(self) -> RawClient:
        watcher = RawClient(self.port, control_username(self.topics), CONTROL_SECRET, client_id=unique("watch-"))
        assert watcher.wait_connack() and watcher.subscribe(self.topics.presence("c", "n"))
        return watcher


@pytest.fixture
def broker() -> Iterator[Broker]:
    b = Broker()
    b.process.start()
    try:
        yield b
    finally:
        pid = b.process.pid
        b.process.stop()
        assert pid is None or not alive(pid)


def test_the_broker_runs_in_a_process_of_its_own_and_asks_the_server_about_logins(broker: Broker) -> None:
    pid = broker.process.pid
    assert pid is not None and pid != os.getpid()
    assert b"broker.process" in Path(f"/proc/{pid}/cmdline").read_bytes()

    good = broker.node()
    assert good.wait_connack()
    bad = broker.node(secret="not-the-node-secret-0123456789", will=False)
    assert not bad.wait_connack()
    assert broker.authority.asked == [("c", "n"), ("c", "n")]  # both answered here, not in the broker process
    good.close()
    bad.client.loop_stop()


def test_a_revoked_credentials_sessions_are_closed_and_its_will_sent(broker: Broker) -> None:
    watcher = broker.watcher()
    username = node_username(broker.topics, "c", "n")
    assert not broker.process.may_have_sessions(username)
    node = broker.node()
    assert node.wait_connack()
    wait_until(lambda: broker.process.may_have_sessions(username), 10, what="the node's session")

    broker.authority.revoked = True  # as the server removes the node's row, then closes its sessions
    assert broker.process.disconnect_user(username) == 1

    assert (broker.topics.presence("c", "n"), b"offline") in watcher.drain(3.0)
    wait_until(lambda: not broker.process.may_have_sessions(username), 10, what="the session gone")
    assert broker.process.disconnect_user(username) == 0
    node.client.loop_stop()
    watcher.close()


def test_a_killed_broker_process_is_started_again(broker: Broker) -> None:
    first = broker.process.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)

    wait_until(lambda: broker.process.pid not in (None, first) and port_open("127.0.0.1", broker.port), 30)
    assert not alive(first)
    assert broker.process.restarts == 1
    node = broker.node()
    assert node.wait_connack()  # logins work again: the new process asks the server too
    assert broker.authority.asked == [("c", "n")]
    node.close()


def test_a_taken_port_is_refused_with_what_to_do_and_leaves_no_process() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = BrokerProcess(OneNode(), Topics(unique("gct")), "127.0.0.1", port)
        with pytest.raises(BrokerError, match=rf"MQTT port {port} on 127.0.0.1 is already in use: choose another"):
            process.start()
    assert process.pid is None


def test_the_broker_process_ends_when_the_server_is_killed() -> None:
    """A server killed with SIGKILL cannot stop its broker: the broker sees its channel close and ends."""
    port = free_port()
    script = textwrap.dedent(
        f"""
        import sys, time
        from broker.process import BrokerProcess
        from broker.topics import Topics
        from tests.test_broker_sessions import OneNode
        process = BrokerProcess(OneNode(), Topics("gct-orphan"), "127.0.0.1", {port})
        process.start()
        print(process.pid, flush=True)
        time.sleep(600)
        """
    )
    server = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        child = int(server.stdout.readline())
        assert alive(child) and port_open("127.0.0.1", port)
        server.kill()
        server.wait(10)
        wait_until(lambda: not alive(child), 15, what="the broker process gone with its server")
        assert not port_open("127.0.0.1", port)
    finally:
        server.kill()
        server.wait(10)


def test_the_server_starts_its_broker_again_and_counts_it(stack) -> None:
    """A real server and agent: kill -9 of the broker process, then the node is Online again through
    the new one, the server's own MQTT link is back, and /metrics counts the restart."""
    from tests.test_metrics import one, scrape

    stack.agent("n1")
    wait_until(lambda: stack.node_state("n1") == "Online", 30, what="n1 Online")
    assert one(scrape(stack.server.url), "glusterctl_embedded_broker_restarts_total") == 0
    first = stack.server.broker_pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)

    wait_until(lambda: stack.server.broker_pid() not in (None, first), 30, what="a new broker process")
    wait_until(lambda: one(scrape(stack.server.url), "glusterctl_mqtt_connected") == 1, 30, what="the link back")
    assert one(scrape(stack.server.url), "glusterctl_embedded_broker_restarts_total") == 1
    wait_until(lambda: stack.node_state("n1") == "Online", 30, what="n1 Online again")
    stack.cli.run("cluster", "add", "after-restart")  # and the server goes on working
    assert "exited with code -9: starting it again" in stack.server.log()
