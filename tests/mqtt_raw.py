"""A raw MQTT client for tests that play a misbehaving agent or a third-party subscriber."""

from __future__ import annotations

import queue
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


class RawClient:
    def __init__(
        self,
        port: int,
        username: str | None = None,
        password: str | None = None,
        client_id: str = "",
        will: tuple[str, bytes] | None = None,
    ) -> None:
        self.messages: queue.Queue = queue.Queue()
        self.connack = threading.Event()
        self.reason = None
        self.subacks: queue.Queue = queue.Queue()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id)
        if username:
            self.client.username_pw_set(username, password)
        if will:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.subacks.put([rc.is_failure for rc in codes])
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self.reason = reason_code
        self.connack.set()

    def wait_connack(self, timeout: float = 10) -> bool:
        """True when the broker accepted the connection."""
        assert self.connack.wait(timeout), "no CONNACK"
        return not self.reason.is_failure

    def subscribe(self, topic: str, timeout: float = 10) -> bool:
        """True when the broker granted the subscription."""
        self.client.subscribe(topic, qos=1)
        return not self.subacks.get(timeout=timeout)[0]

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(timeout=10)

    def drain(self, seconds: float) -> list[tuple[str, bytes]]:
        """Everything that arrives within ``seconds`` (a named, short wait for 'must not happen' checks)."""
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                out.append(self.messages.get(timeout=left))
            except queue.Empty:
                break
        return out

    def abort(self) -> None:
        """Drop the TCP connection without DISCONNECT, as a killed process would (the will fires)."""
        self.client.loop_stop()
        self.client.socket().close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def clear_retained(port: int, root: str, listen: float = 0.5) -> int:
    """Remove the retained messages a test left under ``root`` on a shared broker."""
    raw = RawClient(port, client_id=f"cleanup-{root}")
    try:
        if not raw.wait_connack() or not raw.subscribe(f"{root}/#"):
            return 0
        topics = {topic for topic, payload in raw.drain(listen) if payload}
        for topic in topics:
            raw.publish(topic, b"", retain=True)
        return len(topics)
    finally:
        raw.close()


def enrol(
    port: int,
    topics,
    token: str,
    node: str,
    secret: str,
    agent_id: str = "a" * 32,
    epoch: int = 1,
    timeout: float = 10,
):
    """Enrol ``node`` with the join token as an agent would; returns the Registration (accepted or not)."""
    from broker.dynsec import enrol_username
    from broker.messages import Hello, Registration, join_proof, parse_join_token

    cluster, join_secret = parse_join_token(token)
    raw = RawClient(port, enrol_username(topics, cluster), join_secret, client_id=f"enrol-{node}-{epoch}")
    try:
        assert raw.wait_connack(), f"enrolment login of cluster {cluster} refused"
        assert raw.subscribe(topics.registration(cluster, node))
        hello = Hello(
            agent_id=agent_id,
            epoch=epoch,
            proof=join_proof(token, node, agent_id, epoch),
            nonce=f"n{epoch}",
            node_secret=secret,
        )
        raw.publish(topics.hello(cluster, node), hello.model_dump_json())
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            _topic, payload = raw.messages.get(timeout=left)
            reg = Registration.model_validate_json(payload)
            if reg.nonce == hello.nonce:
                return reg
        raise AssertionError(f"no registration for the enrolment of {node}")
    finally:
        raw.close()


def node_hello(cluster: str, node: str, secret: str, agent_id: str, epoch: int) -> str:
    """The hello an enrolled node sends after it connected with its own credential."""
    from broker.messages import Hello, node_key, node_proof

    proof = node_proof(node_key(secret), cluster, node, agent_id, epoch)
    return Hello(agent_id=agent_id, epoch=epoch, proof=proof, nonce=f"n{epoch}").model_dump_json()


def read_credential(state_dir, timeout: float = 15) -> tuple[str, str]:
    """(node, secret) from an agent's node.secret, once the agent wrote it."""
    import json
    from pathlib import Path

    path = Path(state_dir) / "node.secret"
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} not written within {timeout}s"
        time.sleep(0.05)
    data = json.loads(path.read_text())
    return data["node"], data["secret"]
