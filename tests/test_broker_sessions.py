"""The embedded broker's session expiry never takes a client id's new session: an agent reconnects
with the same client id, and its new connection must not be cut (nor its last-will sent) by the
removal of the session it left a moment before."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from broker.dynsec import control_username, node_username
from broker.embedded import GlusterctlBroker, start_broker
from broker.topics import Topics
from tests.helpers import free_port, unique, wait_until
from tests.mqtt_raw import RawClient

CONTROL_SECRET = "control-secret-for-this-test"
NODE_SECRET = "node-secret-for-this-test-0123456789"
T = TypeVar("T")


class OneNode:
    """The control service's answers for a cluster ``c`` with one enrolled node ``n``."""

    def control_password(self) -> str:
        return CONTROL_SECRET

    def enrolment_ok(self, cluster: str, secret: str) -> bool:
        return False

    def node_ok(self, cluster: str, node: str, secret: str) -> bool:
        return (cluster, node, secret) == ("c", "n", NODE_SECRET)

    def monitor_clusters(self, user: str, password: str) -> list[str] | None:
        return None

    def monitor_clusters_now(self, user: str) -> list[str]:
        return []


class Running:
    def __init__(self, broker: GlusterctlBroker, loop: asyncio.AbstractEventLoop, port: int, topics: Topics) -> None:
        self.broker, self.loop, self.port, self.topics = broker, loop, port, topics

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the broker's loop, where its tables are changed."""

        async def call() -> T:
            return fn()

        return self.run(call())

    def state(self, client_id: str) -> str | None:
        session = self.call(lambda: self.broker._sessions.get(client_id, (None, None))[0])
        return None if session is None else session.transitions.state


@pytest.fixture
def embedded() -> Iterator[Running]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="broker", daemon=True)
    thread.start()
    port, topics = free_port(), Topics(unique("gct"))
    broker = asyncio.run_coroutine_threadsafe(start_broker("127.0.0.1", port, OneNode(), topics), loop).result(10)
    try:
        yield Running(broker, loop, port, topics)
    finally:
        asyncio.run_coroutine_threadsafe(broker.shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_a_reconnected_client_keeps_its_session_through_expiry(embedded: Running) -> None:
    t = embedded.topics
    presence = t.presence("c", "n")
    watcher = RawClient(embedded.port, control_username(t), CONTROL_SECRET, client_id=unique("watch-"))
    assert watcher.wait_connack() and watcher.subscribe(presence)
    client_id = unique("glusterctl-agent-n-")

    def connect_node() -> RawClient:
        node = RawClient(
            embedded.port, node_username(t, "c", "n"), NODE_SECRET, client_id=client_id, will=(presence, b"offline")
        )
        assert node.wait_connack()
        return node

    # the broker's own expiry pass is stopped: the test plays its two steps with the reconnect between them
    embedded.loop.call_soon_threadsafe(embedded.broker._session_monitor_task.cancel)
    connect_node().close()  # a clean DISCONNECT: no will
    wait_until(lambda: embedded.state(client_id) == "disconnected", what="the session disconnected")
    due = embedded.call(embedded.broker.expired_sessions)
    assert client_id in due

    node = connect_node()  # the same client id, with a last-will
    wait_until(lambda: embedded.state(client_id) == "connected", what="the session connected again")
    embedded.run(embedded.broker.expire_sessions(due))

    assert embedded.state(client_id) == "connected"
    node.publish(presence, b"online", retain=True)
    assert watcher.drain(1.0) == [(presence, b"online")]  # the connection lives, and no will was sent

    node.close()
    wait_until(lambda: embedded.state(client_id) == "disconnected", what="the session disconnected")
    embedded.run(embedded.broker.expire_sessions(embedded.call(embedded.broker.expired_sessions)))
    assert embedded.state(client_id) is None  # a session that stayed away still goes
    watcher.close()


@pytest.mark.parametrize(
    "triggers",
    [
        ["connect", "disconnect", "connect"],
        ["disconnect", "connect", "connect"],
        ["connect", "connect"],
        ["disconnect", "disconnect", "connect", "disconnect"],
        ["connect", "disconnect", "disconnect", "connect", "connect"],
    ],
)
def test_light_session_states_behave_as_amqtts_state_machine(triggers: list[str]) -> None:
    """SessionStates (no transitions.Machine per session) against amqtt's own, trigger by trigger."""
    from amqtt.session import Session

    from broker.embedded import AMQTT_SESSION_STATES, SessionStates

    theirs, ours = Session(), Session()
    AMQTT_SESSION_STATES(theirs)
    ours.transitions = SessionStates(ours)
    for trigger in triggers:
        outcomes = []
        for session in (theirs, ours):
            try:
                getattr(session.transitions, trigger)()
                outcomes.append("ok")
            except Exception as exc:
                outcomes.append(type(exc).__name__)
        assert outcomes[0] == outcomes[1], (trigger, outcomes)
        assert ours.transitions.state == theirs.transitions.state
        for state in ("new", "connected", "disconnected"):
            assert getattr(ours.transitions, f"is_{state}")() == getattr(theirs.transitions, f"is_{state}")()
        assert (ours.last_connect_time is None) == (theirs.last_connect_time is None)
        assert (ours.last_disconnect_time is None) == (theirs.last_disconnect_time is None)
