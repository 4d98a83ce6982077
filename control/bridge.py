"""The control service's MQTT client: persists what agents publish and publishes tasks.

Messages are handled in arrival order by one worker thread, off paho's network thread, so a
slow database does not stall keepalives. Every handler is wrapped: a malformed or oversized
payload is logged with the node that sent it and dropped (design invariant 5). Messages that
already wait back to back (a registration storm) share one transaction, and what they answer is
published after it commits; if one of them fails, each is handled again on its own.

Nothing acknowledged is lost: paho acknowledges a QoS 1 message when ``on_message`` returns, so
when the inbox is full ``on_message`` waits for room (backpressure on the broker) instead of
dropping. Only a message that arrives while the bridge stops is dropped; every drop, for any
reason, is logged and counted in ``Bridge.dropped`` (by reason) for metrics. A message whose
handling fails because the database cannot take writes (restarting, out of disk space: see
``control.store.db.outage``) is tried again until it is stored, and the messages behind it wait.
"""

from __future__ import annotations

import collections
import functools
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
    METADATA_MAX_BYTES,
    ControlPresence,
    Heartbeat,
    Hello,
    MetadataCopy,
    Presence,
    TaskStatus,
)
from broker.topics import Topics
from broker.url import MqttUrl, no_delay
from control.services import events, metrics, nodes, rebalance
from control.services.metadata import MetadataPublisher
from control.services.tasks import TaskEngine
from control.store.db import outage
from control.store.db import ping as db_ping
from control.store.models import database_proxy

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 1.0
KEEPALIVE = 15
# messages waiting for the worker; past that on_message waits (backpressure). Waiting holds paho's one network
# thread: nothing goes out meanwhile (registration answers, tasks) and past 1.5 x KEEPALIVE the broker drops
# the connection, so the inbox holds a whole registration storm's messages (some 5 per agent at 10,000
# agents; a message is a few hundred bytes) and waiting stays the last resort
INBOX_SIZE = 100_000
INBOX_WAIT_SECONDS = 0.5  # how often a waiting on_message checks whether the bridge stops
DB_RETRY_SECONDS = (0.1, 0.2, 0.5, 1.0, 2.0)  # waits between tries of a message while the database is out
SCHEDULE_TIMEOUT = 5.0  # how long a scheduled call waits for room in the inbox
# messages already waiting back to back are handled in one transaction: one commit (the database's flush to
# disk) for up to this many. A lone message is its own transaction.
BATCH_MAX = 64

# the leaf of an agent topic -> the payload published there
AGENT_MESSAGES: dict[str, type[BaseModel]] = {
    "hello": Hello,
    "presence": Presence,
    "heartbeat": Heartbeat,
    "task-status": TaskStatus,
    "metadata-copy": MetadataCopy,
}
# leaves whose payloads may be larger than MAX_PAYLOAD_BYTES: an agent's copy of the cluster metadata
PAYLOAD_LIMITS: dict[str, int] = {"metadata-copy": METADATA_MAX_BYTES}
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
        self._sweep_queued = threading.Event()  # a sweep waits in the inbox: no second one behind it
        # since when (monotonic) on_message waited for room and the worker has not found the inbox empty:
        # messages that arrived since may still wait in the broker, so silence is judged as of then
        self._stalled_since: float | None = None
        # a node's last-will that arrives while a hello of the same node waits in the inbox is judged after
        # that hello (by its epoch, as ever): a reconnecting node then never passes through Unreachable, and
        # its hello takes the one-statement path. Keyed by the node's topic prefix.
        self._hellos_waiting: collections.Counter[str] = collections.Counter()
        # prefix -> the wills held, each with how many of the hellos waiting when it was read are still unread
        self._wills_held: dict[str, list[tuple[int, str, bytes]]] = {}
        self._hold_lock = threading.Lock()
        # what the worker publishes while it handles a batch goes out after the batch commits (never an
        # answer about a change that may still roll back): (the worker's thread, what it published)
        self._held_publishes: tuple[int, list[tuple[str, bytes, int, bool]]] | None = None
        self._threads: list[threading.Thread] = []
        # called in the worker after every (re)connect, after the open tasks: what else to publish again
        self.on_connected: list[Callable[[], object]] = []
        # whether this server leads (control/services/leader.py): only the leader subscribes to the
        # agents' topics, publishes the control presence and sweeps; the others only publish tasks
        self.is_leader: Callable[[], bool] = lambda: True
        # several servers: the leader also reads the control presence, to answer a follower's last will
        self.watch_presence = False
        self._leading = threading.Lock()  # the connect and a takeover: one subscribes, never neither
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

    def take_over(self) -> None:
        """This server became the leader: read the agents, say online (every agent says hello again),
        and publish the open tasks and the retained topics again (from the election thread)."""
        with self._leading:
            if self.connected.is_set():
                self._subscribe_agents(self.client)
                self.announce()
                try:  # never block the election thread: a full inbox leaves it to the reconciler's passes
                    self._inbox.put_nowait(("republish", None))
                except queue.Full:
                    log.warning("taking over: the inbox is full; the open tasks go out again at the next pass")

    def step_down(self) -> None:
        """Another server leads now: stop reading the agents' topics."""
        if self.connected.is_set():
            self.client.unsubscribe(self._leader_filters())

    def _leader_filters(self) -> list[str]:
        # the control presence too: a follower's last will ("offline") is answered with "online" again
        return [*self.topics.agent_filters(), *([self.topics.control_presence()] if self.watch_presence else [])]

    def _subscribe_agents(self, client: mqtt.Client) -> None:
        client.subscribe([(f, 1) for f in self._leader_filters()])

    def announce(self) -> None:
        """Publish the online presence again: every agent says hello (and offers its metadata copy: the header, or
        the whole copy while restoring) anew."""
        self.client.publish(self.topics.control_presence(), self._presence("online"), qos=1, retain=True)

    def _presence(self, state: str) -> bytes:
        # a restoring server asks for the agents' whole copies; any other reads only their signed headers
        restoring = state == "online" and self.restore is not None and not self.restore.done.is_set()
        presence = ControlPresence(
            state=state, instance=self.instance, at=time.time(), want="copies" if restoring else ""
        )
        return presence.model_dump_json().encode()

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
        if self.connected.is_set() and self.is_leader():
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
        holding = self._held_publishes
        if holding is not None and holding[0] == threading.get_ident():
            holding[1].append((topic, payload, qos, retain))
            return
        self.client.publish(topic, payload, qos=qos, retain=retain)

    def call_soon(self, fn: Callable[[], object], timeout: float = SCHEDULE_TIMEOUT) -> bool:
        """Run ``fn`` in the worker thread, after the messages already received; False if there was no room
        within ``timeout`` seconds."""
        try:
            self._inbox.put(("call", fn), timeout=timeout) if timeout > 0 else self._inbox.put_nowait(("call", fn))
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
        log.info("connected to MQTT broker %s", self.url.redacted())
        with self._leading:  # a leadership gained meanwhile subscribes either here or in take_over
            leads = self.is_leader()
            if leads:
                self._subscribe_agents(client)
                client.publish(self.topics.control_presence(), self._presence("online"), qos=1, retain=True)
            self.connected.set()  # after the subscribe: whoever waits for it may rely on it
        if leads:
            self._inbox.put(("republish", None))

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
        prefix, _, leaf = msg.topic.rpartition("/")
        if leaf == "hello":  # counted before the worker can see it
            with self._hold_lock:
                self._hellos_waiting[prefix] += 1
        try:
            self._inbox.put_nowait(item)
            return
        except queue.Full:
            pass
        if self._stalled_since is None:  # once per stall: the worker logs when it has caught up
            self._stalled_since = time.monotonic()
            log.warning("inbox full (%d messages): waiting for the worker before taking more", self._inbox.maxsize)
        while not self._stop.is_set():
            try:
                self._inbox.put(item, timeout=INBOX_WAIT_SECONDS)
                return
            except queue.Full:
                continue
        self._count_drop("stopping")
        log.error("dropped message on %s: the bridge is stopping", msg.topic)

    # ---- worker ---------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            if self._inbox.empty() and self._stalled_since is not None:  # caught up with what the broker delivered
                log.info("inbox empty again after %.1fs behind", time.monotonic() - self._stalled_since)
                self._stalled_since = None
            item = self._inbox.get()
            if item is None:
                break
            kind, data = item
            try:
                if data is None:  # "republish"
                    if not self.is_leader():
                        continue
                    self.engine.republish_open()
                    for republish in self.on_connected:
                        republish()
                    if self.metadata is not None:
                        self.metadata.republish_all()
                elif callable(data):
                    data()
                else:
                    more = self._waiting_messages(BATCH_MAX - 1)
                    if more:
                        self._handle_batch([data, *more])
                    else:
                        self._handle_in_order(*data, self._handle_durably)
            except Exception:
                if kind == "message":
                    self._count_drop("handler-error")
                log.exception("error while handling %s %s", kind, data[0] if isinstance(data, tuple) else "")
            finally:
                if not database_proxy.is_closed() and database_proxy.in_transaction():
                    database_proxy.rollback()

    def _waiting_messages(self, limit: int) -> list[tuple[str, bytes]]:
        """Up to ``limit`` messages that wait right at the head of the inbox, taken at once (a scheduled call or
        a stop behind them stays where it is: nothing passes it)."""
        taken: list[tuple[str, bytes]] = []
        with self._inbox.not_full:  # the queue's own lock
            waiting = self._inbox.queue
            while waiting and len(taken) < limit:
                head = waiting[0]
                if head is None or head[0] != "message" or not isinstance(head[1], tuple):
                    break
                taken.append(head[1])
                waiting.popleft()
            if taken:
                self._inbox.not_full.notify(len(taken))
        return taken

    def _handle_batch(self, batch: list[tuple[str, bytes]]) -> None:
        """Handle messages in one transaction and publish what they answered once it committed (no statement
        of its own per message: a heartbeat that only moves a time in memory costs nothing more). When one
        of them fails, or the database cannot take writes, the transaction is rolled back and every message
        is handled again on its own, as a lone message is (``_handle_durably``)."""
        handled: list[tuple[str, bytes]] = []  # in the order handled (a held will comes after its hellos)
        unread = list(batch)
        held: list[tuple[str, bytes, int, bool]] = []  # what they publish, sent after the commit

        def in_batch(topic: str, payload: bytes) -> None:
            handled.append((topic, payload))
            self.handle(topic, payload)

        failed: Exception | None = None
        self._held_publishes = (threading.get_ident(), held)
        try:
            with events.held_until_commit(), database_proxy.atomic():
                while unread:
                    self._handle_in_order(*unread.pop(0), in_batch)
        except Exception as exc:
            failed = exc
        finally:
            self._held_publishes = None
        if failed is None:
            for topic, payload, qos, retain in held:
                self.client.publish(topic, payload, qos=qos, retain=retain)
            return
        # nothing of it was stored, nor published: what was kept in memory of its nodes goes too (their next
        # messages take the full path), and each message is handled again on its own
        log.info("a batch of %d messages was rolled back (%s): each is handled on its own", len(batch), failed)
        for topic, _ in handled:
            parsed = self.topics.parse_node_topic(topic)
            if parsed is not None:
                nodes.forget_kept(parsed[0], parsed[1])
        rebalance.forget_reports()
        again = [(topic, payload, False) for topic, payload in handled] + [(t, p, True) for t, p in unread]
        for topic, payload, unseen in again:
            try:
                if unseen:  # not reached: its hello bookkeeping is still to do
                    self._handle_in_order(topic, payload, self._handle_durably)
                else:
                    self._handle_durably(topic, payload)
            except Exception:
                self._count_drop("handler-error")
                log.exception("error while handling message %s", topic)
            finally:
                if not database_proxy.is_closed() and database_proxy.in_transaction():
                    database_proxy.rollback()

    def _handle_in_order(self, topic: str, payload: bytes, handle: Callable[[str, bytes], None]) -> None:
        """``handle``, except that a node's last-will waits for the node's hellos that were already in
        the inbox when it was read (a reconnect storm: wills of the old connections, then hellos of the new
        ones), and no longer: hellos that come later never hold it."""
        prefix, _, leaf = topic.rpartition("/")
        if leaf == "presence" and b"offline" in payload:
            with self._hold_lock:
                waiting = self._hellos_waiting[prefix]
                if waiting > 0:
                    self._wills_held.setdefault(prefix, []).append((waiting, topic, payload))
                    return
        if leaf != "hello":
            handle(topic, payload)
            return
        try:
            handle(topic, payload)
        finally:
            with self._hold_lock:
                self._hellos_waiting[prefix] -= 1
                if self._hellos_waiting[prefix] <= 0:
                    del self._hellos_waiting[prefix]
                due, still = [], []
                for left, will_topic, will_payload in self._wills_held.pop(prefix, []):
                    if left <= 1:
                        due.append((will_topic, will_payload))
                    else:
                        still.append((left - 1, will_topic, will_payload))
                if still:
                    self._wills_held[prefix] = still
            for will in due:  # judged by epoch: a will of the connection the hello replaced changes nothing
                handle(*will)

    def _handle_durably(self, topic: str, payload: bytes) -> None:
        """``handle``, tried again while the database cannot take writes (the broker was already told
        the message is ours); any other error goes up (and the message is dropped and counted)."""
        tries = 0
        while True:
            try:
                self.handle(topic, payload)
                if tries:
                    log.info("message on %s stored after %d tries: the database is back", topic, tries + 1)
                return
            except Exception as exc:
                if not database_proxy.is_closed() and database_proxy.in_transaction():
                    database_proxy.rollback()
                why = outage(exc)
                if why is None or self._stop.is_set():
                    raise
                if not tries:
                    log.warning(
                        "database %s while handling %s (%s): trying again until it is stored",
                        "out of disk space" if why == "full" else "unavailable",
                        topic,
                        " ".join(str(exc).split())[:200],
                    )
                self._stop.wait(DB_RETRY_SECONDS[min(tries, len(DB_RETRY_SECONDS) - 1)])
                tries += 1

    def _sweep(self) -> None:
        """Every second, have the worker write the kept heartbeat times and mark silent nodes.

        The sweep runs in the worker, behind the messages already received: a heartbeat waiting in the
        inbox is stored before its node is judged silent, and the sweep never waits for the database's
        write lock while the worker holds it (nor the worker for the sweep)."""
        while not self._stop.wait(SWEEP_INTERVAL):
            self.last_tick = time.monotonic()
            if not self.is_leader() or self._sweep_queued.is_set():
                continue
            self._sweep_queued.set()
            if not self.call_soon(functools.partial(self._sweep_once, time.monotonic()), timeout=0):
                self._sweep_queued.clear()  # the inbox is full: the next tick tries again

    def _sweep_once(self, queued_at: float) -> None:
        """Write the kept heartbeat times, then judge silence as of the moment every message that had
        reached this server was handled: the sweep's own place in the inbox, or when on_message last had
        to wait for room (what arrived since may still wait in the broker). Behind a backlog (a
        registration storm) a node is not called silent for a heartbeat this server has not read yet."""
        self._sweep_queued.clear()
        stalled = self._stalled_since
        read_through = min(queued_at, stalled) if stalled is not None else queued_at
        behind = time.monotonic() - read_through
        try:
            nodes.flush_seen()
            nodes.sweep_silent(time.time() - behind)
        except Exception:
            log.exception("node sweep failed")

    def handle(self, topic: str, payload: bytes) -> None:
        if topic == self.topics.control_presence():
            self._control_presence(payload)
            return
        parsed = self.topics.parse_node_topic(topic)
        if parsed is None:
            return
        cluster, node, leaf = parsed
        if not payload:
            return  # a cleared retained message
        limit = PAYLOAD_LIMITS.get(leaf, MAX_PAYLOAD_BYTES)
        if len(payload) > limit:
            self._count_drop("oversized")
            log.warning(
                "cluster %s node %s: dropped %d-byte payload on %s (limit %d)",
                cluster,
                node,
                len(payload),
                leaf,
                limit,
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
                answer.keep_metadata = self.metadata.keeps(cluster, node)
            self.publish(self.topics.registration(cluster, node), answer.model_dump_json().encode(), qos=1)
        elif isinstance(message, MetadataCopy):
            metrics.COUNTS.add("metadata_copies_received")
            metrics.COUNTS.add("metadata_copy_bytes", len(payload))
            if self.restore is not None:
                self.restore.offer(cluster, node, message)
            elif self.metadata is not None:
                self.metadata.offered(cluster, node, message)
        elif isinstance(message, Presence):
            nodes.handle_presence(cluster, node, message)
        elif isinstance(message, Heartbeat):
            if nodes.handle_heartbeat(cluster, node, message) and message.rebalances:
                rebalance.apply_reports(cluster, node, message.rebalances)
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

    def _control_presence(self, payload: bytes) -> None:
        """Another server's last will (or its stop) said the control service is offline: it is not, while this
        server leads."""
        if not self.is_leader() or len(payload) > MAX_PAYLOAD_BYTES:
            return
        try:
            presence = ControlPresence.model_validate_json(payload) if payload else None
        except ValidationError:
            presence = None
        if presence is None or (presence.instance != self.instance and presence.state != "online"):
            log.info("the control presence said offline (another server stopped): this leader says online again")
            self.announce()


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."
