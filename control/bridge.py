"""The control service's MQTT client: persists what agents publish and publishes tasks.

Messages are handled in arrival order by one worker thread, off paho's network thread, so a
slow database does not stall keepalives. Every handler is wrapped: a malformed or oversized
payload is logged with the node that sent it and dropped (design invariant 5).

Nothing acknowledged is lost: paho acknowledges a QoS 1 message when ``on_message`` returns, so
when the inbox is full ``on_message`` waits for room (backpressure on the broker) instead of
dropping. Only a message that arrives while the bridge stops is dropped; every drop, for any
reason, is logged and counted in ``Bridge.dropped`` (by reason) for metrics.
"""

from __future__ import annotations

import collections
import logging
import queue
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, ValidationError

from broker.messages import (
    MAX_PAYLOAD_BYTES,
    ControlPresence,
    Heartbeat,
    Hello,
    MetadataCopy,
    Presence,
    TaskStatus,
)
from broker.topics import Topics
from broker.url import MqttUrl, no_delay
from control.services import nodes
from control.services.metadata import MetadataPublisher
from control.services.tasks import TaskEngine
from control.store.db import ping as db_ping
from control.store.models import database_proxy

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 1.0
KEEPALIVE = 15
INBOX_SIZE = 10_000  # messages waiting for the worker; past that on_message waits (backpressure)
INBOX_WAIT_SECONDS = 0.5  # how often a waiting on_message checks whether the bridge stops
SCHEDULE_TIMEOUT = 5.0  # how long a scheduled call waits for room in the inbox

# the leaf of an agent topic -> the payload published there
AGENT_MESSAGES: dict[str, type[BaseModel]] = {
    "hello": Hello,
    "presence": Presence,
    "heartbeat": Heartbeat,
    "task-status": TaskStatus,
    "metadata-copy": MetadataCopy,
}
# ("republish", None) after a (re)connect, ("message", (topic, payload)) per message, ("call", fn) for
# work serialised with the handlers (reconciler passes); None stops the worker
InboxItem = tuple[str, tuple[str, bytes] | Callable[[], object] | None] | None


class Bridge:
    def __init__(self, url: MqttUrl, topics: Topics, engine: TaskEngine, inbox_size: int = INBOX_SIZE) -> None:
        self.url = url
        self.topics = topics
        self.engine = engine
        self.instance = uuid.uuid4().hex
        # the signed cluster metadata (control/services/metadata.py), and a restore collecting the
        # agents' copies (control/services/restore.py): both set by the server before start()
        self.metadata: MetadataPublisher | None = None
        self.restore: Any = None
        self.connected = threading.Event()
        self.refused: str | None = None
        self._inbox: queue.Queue[InboxItem] = queue.Queue(maxsize=inbox_size)
        # messages dropped, by reason (stopping, oversized, malformed, handler-error): for metrics
        self.dropped: collections.Counter[str] = collections.Counter()
        self._drop_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # called in the worker after every (re)connect, after the open tasks: what else to publish again
        self.on_connected: list[Callable[[], object]] = []
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            # random per start and unrelated to the published instance: no one can guess it to take it over
            client_id=f"glusterctl-control-{secrets.token_hex(8)}",
            clean_session=True,
        )
        if url.username:
            self.client.username_pw_set(url.username, url.password)
        if url.tls:
            self.client.tls_set_context(url.tls_context())
        self.client.will_set(topics.control_presence(), self._presence("offline"), qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def announce(self) -> None:
        """Publish the online presence again: every agent says hello (and offers its metadata copy) anew."""
        self.client.publish(self.topics.control_presence(), self._presence("online"), qos=1, retain=True)

    def _presence(self, state: str) -> bytes:
        return ControlPresence(state=state, instance=self.instance, at=time.time()).model_dump_json().encode()

    # ---- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self.client.connect_async(self.url.host, self.url.port, keepalive=KEEPALIVE)
        self.client.loop_start()
        for target, name in ((self._work, "bridge-worker"), (self._sweep, "bridge-sweeper")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.connected.wait(0.1):
                return True
            if self.refused:
                return False
        return False

    def stop(self) -> None:
        self._stop.set()
        if self.connected.is_set():
            info = self.client.publish(self.topics.control_presence(), self._presence("offline"), qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=2)
            except RuntimeError:
                pass
        self.client.disconnect()
        self.client.loop_stop()
        try:
            self._inbox.put(None, timeout=SCHEDULE_TIMEOUT)
        except queue.Full:
            log.warning("the bridge's worker did not drain its inbox in time; %d messages left", self._inbox.qsize())
        for thread in self._threads:
            thread.join(timeout=5)

    last_tick = 0.0

    def alive(self) -> bool:
        """The bridge's loops run and the database answers (a broker outage is not a reason to restart)."""
        return not self._stop.is_set() and time.monotonic() - self.last_tick < 10 and self._worker_alive() and db_ping()

    def _worker_alive(self) -> bool:
        return all(t.is_alive() for t in self._threads)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain)

    def call_soon(self, fn: Callable[[], object]) -> bool:
        """Run ``fn`` in the worker thread, after the messages already received; False if there was no room."""
        try:
            self._inbox.put(("call", fn), timeout=SCHEDULE_TIMEOUT)
            return True
        except queue.Full:
            return False

    def _count_drop(self, reason: str) -> None:
        with self._drop_lock:
            self.dropped[reason] += 1

    def dropped_counts(self) -> dict[str, int]:
        with self._drop_lock:
            return dict(self.dropped)

    def dropped_total(self) -> int:
        with self._drop_lock:
            return sum(self.dropped.values())

    # ---- paho callbacks (network thread) --------------------------------------------------
    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self.refused = str(reason_code)
            log.error("MQTT broker %s refused the control service: %s", self.url.redacted(), reason_code)
            return
        self.refused = None
        no_delay(client)
        client.subscribe([(f, 1) for f in self.topics.agent_filters()])
        client.publish(self.topics.control_presence(), self._presence("online"), qos=1, retain=True)
        log.info("connected to MQTT broker %s", self.url.redacted())
        self._inbox.put(("republish", None))
        self.connected.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("lost the MQTT broker %s (%s); reconnecting", self.url.redacted(), reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        item: InboxItem = ("message", (msg.topic, bytes(msg.payload)))
        try:
            self._inbox.put_nowait(item)
            return
        except queue.Full:
            pass
        log.warning("inbox full (%d messages): waiting for the worker before taking more", self._inbox.maxsize)
        started = time.monotonic()
        while not self._stop.is_set():
            try:
                self._inbox.put(item, timeout=INBOX_WAIT_SECONDS)
                log.info("inbox has room again after %.1fs", time.monotonic() - started)
                return
            except queue.Full:
                continue
        self._count_drop("stopping")
        log.error("dropped message on %s: the bridge is stopping", msg.topic)

    # ---- worker ---------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                break
            kind, data = item
            try:
                if data is None:  # "republish"
                    self.engine.republish_open()
                    for republish in self.on_connected:
                        republish()
                    if self.metadata is not None:
                        self.metadata.republish_all()
                elif callable(data):
                    data()
                else:
                    self.handle(*data)
            except Exception:
                if kind == "message":
                    self._count_drop("handler-error")
                log.exception("error while handling %s %s", kind, data[0] if isinstance(data, tuple) else "")
            finally:
                if not database_proxy.is_closed() and database_proxy.in_transaction():
                    database_proxy.rollback()

    def _sweep(self) -> None:
        while not self._stop.wait(SWEEP_INTERVAL):
            self.last_tick = time.monotonic()
            try:
                nodes.flush_seen()
                nodes.sweep_silent()
            except Exception:
                log.exception("node sweep failed")

    def handle(self, topic: str, payload: bytes) -> None:
        parsed = self.topics.parse_node_topic(topic)
        if parsed is None:
            return
        cluster, node, leaf = parsed
        if not payload:
            return  # a cleared retained message
        if len(payload) > MAX_PAYLOAD_BYTES:
            self._count_drop("oversized")
            log.warning(
                "cluster %s node %s: dropped %d-byte payload on %s (limit %d)",
                cluster,
                node,
                len(payload),
                leaf,
                MAX_PAYLOAD_BYTES,
            )
            return
        model = AGENT_MESSAGES.get(leaf)
        if model is None:
            return
        try:
            message = model.model_validate_json(payload)
        except ValidationError as exc:
            self._count_drop("malformed")
            log.warning(
                "cluster %s node %s: dropped malformed %s payload: %s (payload %r)",
                cluster,
                node,
                leaf,
                _short(str(exc)),
                payload[:200],
            )
            return
        if isinstance(message, Hello):
            if self.restore is not None and self.restore.holds(cluster, node):
                return  # no answer while restoring: the agent asks again, and is known once restored
            answer = nodes.handle_hello(cluster, node, message)
            if answer.accepted and self.metadata is not None:
                answer.metadata_key = self.metadata.public_key
            self.publish(self.topics.registration(cluster, node), answer.model_dump_json().encode(), qos=1)
        elif isinstance(message, MetadataCopy):
            if self.restore is not None:
                self.restore.offer(cluster, node, message)
        elif isinstance(message, Presence):
            nodes.handle_presence(cluster, node, message)
        elif isinstance(message, Heartbeat):
            nodes.handle_heartbeat(cluster, node, message)
        elif isinstance(message, TaskStatus):
            if not nodes.epoch_is_current(cluster, node, message.epoch):
                log.warning(
                    "cluster %s node %s: status of task %s (%s) from epoch %d ignored: not the node's current connection",
                    cluster,
                    node,
                    message.task_id,
                    message.state.value,
                    message.epoch,
                )
                return
            self.engine.apply_status(cluster, node, message)


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."
