"""The node agent: one MQTT connection with last-will, registration, heartbeats and tasks.

Identity: a node without a credential in its state dir logs in as its cluster's enrolment
user (the join token), sends an enrolment hello with the secret it made for itself, and once
accepted saves that credential (STATE_DIR/node.secret) and reconnects as its own node user;
from then on the join token is never used (see agent/credential.py).

Every (re)connect gets a new epoch (a number that only grows, persisted in the state dir) that
goes into the hello, the retained presence and the last-will, so that the control service can
tell a death notice of an old connection from one of the current connection.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from agent import clock, credential, facts
from agent.bricks import BrickManager
from agent.certificate import certificate_proof
from agent.devices import DeviceManager
from agent.journal import Journal
from agent.metadata import MetadataStore
from agent.rebalance import RebalanceManager
from agent.settings import AgentSettings
from agent.tasks import HANDLERS, RESUMABLE_KINDS, TaskContext, TaskFailed, check_params
from agent.volfiles import Volfiles, VolfileServerError
from broker.dynsec import enrol_username, node_username
from broker.messages import (
    MAX_PAYLOAD_BYTES,
    METADATA_MAX_BYTES,
    ControlPresence,
    Heartbeat,
    Hello,
    MetadataCopy,
    NodeFacts,
    Presence,
    Registration,
    TaskMessage,
    TaskState,
    TaskStatus,
    certificate_enrolment_message,
    join_proof,
    node_proof,
    parse_join_token,
)
from broker.topics import Topics, filter_matches
from broker.url import MqttUrl, no_delay

log = logging.getLogger(__name__)

EXIT_AUTH = 2
EXIT_VOLFILE_SERVER = 3
HELLO_RETRY_SECONDS = 5.0  # the first wait for an answer to a hello; then doubled, up to HELLO_RETRY_MAX
HELLO_RETRY_MAX = 30.0
RECONNECT_MIN, RECONNECT_MAX = 1, 30
TASK_WORKERS = 4
INTERRUPTED_REASON = "INTERRUPTED: the agent restarted while the task ran; run the operation again"


class Agent:
    def __init__(self, settings: AgentSettings, on_ready: Callable[[], None] | None = None) -> None:
        self.s = settings
        self.cluster = settings.cluster
        self.node = settings.node
        self.topics = Topics(settings.mqtt_root)
        self.url = MqttUrl.parse(settings.mqtt_url, settings.mqtt_ca, settings.mqtt_cert, settings.mqtt_key)
        self.on_ready = on_ready
        os.makedirs(settings.state_dir, mode=0o700, exist_ok=True)
        self.agent_id = self._load_agent_id()
        self.address = settings.address or facts.address_towards(self.url.host, self.url.port)
        self.journal = Journal(os.path.join(settings.state_dir, "journal.jsonl"))
        self.bricks = BrickManager(settings.state_dir, self.node, str(uuid.UUID(self.agent_id)), self.address)
        self.devices = DeviceManager(settings.state_dir, self.node)
        self.volfiles = Volfiles(settings.state_dir, self.address, settings.volfile_port)
        self.rebalance = RebalanceManager(self.bricks, self.volfiles.server)
        self.metadata = MetadataStore(settings.state_dir, self.cluster)
        self.epoch = 0
        self.credential = settings.credential  # None until enrolled
        self._nonces: set[str] = set()  # of the hellos of this connection that are not answered yet
        self._switching = False  # enrolled: leave the enrolment login and connect as the node
        self._unsent: list[tuple[str, TaskState, str, dict[str, Any] | None]] = []
        self._status_lock = threading.Lock()
        self.registered = threading.Event()
        self._keeping = False  # subscribed to the cluster's metadata on this connection (clean sessions)
        self._keeping_lock = threading.Lock()
        self.exit_code = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._last_hello = 0.0
        self._hello_wait = HELLO_RETRY_SECONDS
        self._seq = 0
        self._network_thread = 0
        self._pool = ThreadPoolExecutor(max_workers=TASK_WORKERS, thread_name_prefix="task")
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"glusterctl-agent-{self.node}-{self.agent_id[:8]}"[:64],
            clean_session=True,
        )
        # each agent its own backoff sequence: after a broker or server restart, thousands of agents
        # do not come back in lockstep
        # (paho types the delays as int; it only adds and compares them, so a float works)
        first_delay: Any = round(RECONNECT_MIN * random.uniform(0.5, 1.5), 3)
        self.client.reconnect_delay_set(first_delay, RECONNECT_MAX)
        if self.url.tls:
            self.client.tls_set_context(self.url.tls_context())
            self.client.on_connect_fail = self._on_connect_fail
        self.client.on_pre_connect = self._on_pre_connect
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    # ---- identity and epochs --------------------------------------------------------------
    def _load_agent_id(self) -> str:
        path = os.path.join(self.s.state_dir, "agent-id")
        if os.path.exists(path):
            with open(path) as fh:
                return fh.read().strip()
        agent_id = uuid.uuid4().hex
        with open(path, "w") as fh:
            fh.write(agent_id + "\n")
        return agent_id

    def _next_epoch(self) -> int:
        """max(last + 1, now in ms): grows across restarts, and even if the state dir was lost."""
        path = os.path.join(self.s.state_dir, "epoch")
        last = 0
        try:
            with open(path) as fh:
                last = int(fh.read().strip() or 0)
        except (OSError, ValueError):
            pass
        epoch = max(last + 1, int(clock.now() * 1000))
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(f"{epoch}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return epoch

    # ---- run ------------------------------------------------------------------------------
    def run(self) -> int:
        log.info(
            "agent %s starting: node %s, cluster %s, broker %s, state dir %s",
            self.agent_id[:8],
            self.node,
            self.cluster,
            self.url.redacted(),
            self.s.state_dir,
        )
        try:
            self.volfiles.start()
        except VolfileServerError as exc:
            log.error("%s", exc)
            return EXIT_VOLFILE_SERVER
        self.bricks.volfile_port = self.volfiles.port
        self.rebalance.restore()
        self.fail_interrupted()
        self.devices.restore_mounts()
        beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        beat.start()
        threading.Thread(target=self.bricks.run_supervisor, args=(self._stop,), name="supervisor", daemon=True).start()
        threading.Thread(
            target=self.rebalance.run_supervisor, args=(self._stop,), name="rebalance", daemon=True
        ).start()
        while True:
            self.client.connect_async(self.url.host, self.url.port, keepalive=self.s.keepalive)
            self.client.loop_forever(retry_first_connection=True)
            if not self._switching or self._stop.is_set():
                break
            self._switching = False  # enrolled: connect again, now as the node
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.volfiles.stop()
        self.journal.close()
        return self.exit_code

    def stop(self, code: int = 0) -> None:
        """Leave cleanly: mark the presence offline ourselves (a clean disconnect sends no will)."""
        self.exit_code = code
        self._stop.set()
        if self.client.is_connected() and self.registered.is_set():
            info = self.client.publish(
                self.topics.presence(self.cluster, self.node),
                Presence(state="offline", epoch=self.epoch, at=clock.now()).model_dump_json(),
                qos=1,
                retain=True,
            )
            if threading.get_ident() != self._network_thread:  # never block paho's own thread
                try:
                    info.wait_for_publish(timeout=2)
                except RuntimeError:
                    pass
        self.client.disconnect()

    # ---- paho callbacks -------------------------------------------------------------------
    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        self._network_thread = threading.get_ident()
        self.epoch = self._next_epoch()
        self._hello_wait = HELLO_RETRY_SECONDS * random.uniform(0.8, 1.2)
        self.registered.clear()
        self._nonces.clear()
        username, password = self._login()
        client.username_pw_set(self.url.username or username, self.url.password or password)
        if self.credential is None:
            client.will_clear()  # the enrolment user may not have one, and there is no presence to guard yet
        else:
            will = Presence(state="offline", epoch=self.epoch, at=clock.now()).model_dump_json()
            client.will_set(self.topics.presence(self.cluster, self.node), will, qos=1, retain=True)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        """A broker whose certificate the CA did not sign is refused for good (paho calls this in its except)."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ssl.SSLCertVerificationError):
            trusted = f"the CA {self.url.ca}" if self.url.ca else "the system's CAs"
            log.error(
                "refusing the MQTT broker %s: its certificate is not signed by %s (%s); pass the control "
                "service's CA with --mqtt-ca FILE (DATA_DIR/tls/ca.pem on the server)",
                self.url.redacted(),
                trusted,
                exc.verify_message or exc,
            )
            self.stop(EXIT_AUTH)
        elif exc is not None:
            log.warning("cannot connect to the MQTT broker %s: %s; retrying", self.url.redacted(), exc)

    def _login(self) -> tuple[str, str | None]:
        """The broker user and password: the node's own once enrolled, else the cluster's enrolment user
        (no password when the node certificate presented over TLS enrols instead of the join token)."""
        if self.credential is not None:
            return node_username(self.topics, self.cluster, self.node), self.credential.secret
        if self.s.enrols_with_certificate:
            return enrol_username(self.topics, self.cluster), None
        return enrol_username(self.topics, self.cluster), parse_join_token(self.s.token)[1]

    def _refused_login_message(self, reason: ReasonCode) -> str:
        if self.credential is None and self.s.enrols_with_certificate:
            return (
                f"the MQTT broker {self.url.redacted()} refused the enrolment of node {self.node} in cluster "
                f"{self.cluster} with the node certificate {self.s.mqtt_cert} ({reason}): node certificates enrol "
                "only on the embedded broker's TLS listener (glusterctl server --mqtts) that issued them; "
                "elsewhere enrol with the join token (--token)"
            )
        if self.credential is None:
            return (
                f"the MQTT broker {self.url.redacted()} refused the enrolment login of cluster {self.cluster} "
                f"({reason}): the join token is wrong or was rotated; get the current one with "
                f"'glusterctl cluster token {self.cluster}'"
            )
        path = credential.credential_path(self.s.state_dir)
        return (
            f"the MQTT broker {self.url.redacted()} refused the credential of node {self.node} in cluster "
            f"{self.cluster} ({path}) ({reason}): the node was removed or enrolled again elsewhere. To enrol it "
            f"again, an admin runs 'glusterctl node reenrol -c {self.cluster} {self.node}' (or 'node remove'); "
            f"then delete {path} and start the agent once with --token"
        )

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            if reason_code.value in (4, 5, 134, 135):  # bad credentials / not authorized
                log.error("%s", self._refused_login_message(reason_code))
                self.stop(EXIT_AUTH)
            else:
                log.warning("the MQTT broker refused the connection (%s); retrying", reason_code)
            return
        log.info("connected to %s (epoch %d)", self.url.redacted(), self.epoch)
        no_delay(client)
        client.subscribe([(self.topics.registration(self.cluster, self.node), 1), (self.topics.control_presence(), 1)])
        self._send_hello()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.registered.clear()
        with self._keeping_lock:
            self._keeping = False  # a clean session: the next connection subscribes again
        if not self._stop.is_set() and not self._switching:
            log.warning("lost the MQTT broker (%s); reconnecting with backoff", reason_code)

    def _send_hello(self) -> None:
        self._last_hello = time.monotonic()
        nonce = secrets.token_hex(8)
        self._nonces.add(nonce)
        node_facts = NodeFacts(**facts.node_facts(self.address, self.s.heartbeat), volfile_port=self.volfiles.port)
        if self.credential is not None:
            proof = node_proof(self.credential.key, self.cluster, self.node, self.agent_id, self.epoch)
            hello = Hello(agent_id=self.agent_id, epoch=self.epoch, proof=proof, nonce=nonce, facts=node_facts)
        elif self.s.enrols_with_certificate:
            enrol = credential.pending(self.s.state_dir, self.cluster, self.node)
            message = certificate_enrolment_message(self.cluster, self.node, self.agent_id, self.epoch, enrol.secret)
            assert self.s.mqtt_cert and self.s.mqtt_key
            pem, digest, signature = certificate_proof(self.s.mqtt_cert, self.s.mqtt_key, message)
            hello = Hello(
                agent_id=self.agent_id,
                epoch=self.epoch,
                proof=digest,
                nonce=nonce,
                node_secret=enrol.secret,
                certificate=pem,
                signature=signature,
                facts=node_facts,
            )
        else:
            enrol = credential.pending(self.s.state_dir, self.cluster, self.node)
            hello = Hello(
                agent_id=self.agent_id,
                epoch=self.epoch,
                proof=join_proof(self.s.token, self.node, self.agent_id, self.epoch),
                nonce=nonce,
                node_secret=enrol.secret,
                facts=node_facts,
            )
        self.client.publish(self.topics.hello(self.cluster, self.node), hello.model_dump_json(), qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            is_metadata = msg.topic == self.topics.cluster_metadata(self.cluster)
            limit = METADATA_MAX_BYTES if is_metadata else MAX_PAYLOAD_BYTES
            if len(msg.payload) > limit:
                log.warning("dropped %d-byte message on %s (limit %d)", len(msg.payload), msg.topic, limit)
                return
            if msg.topic == self.topics.registration(self.cluster, self.node):
                self._on_registration(Registration.model_validate_json(msg.payload))
            elif msg.topic == self.topics.control_presence():
                if msg.payload:
                    presence = ControlPresence.model_validate_json(msg.payload)
                    if presence.state == "online":
                        self._send_hello()
                        self._offer_metadata(whole=presence.want == "copies")
            elif is_metadata:
                if msg.payload:
                    self.metadata.receive(bytes(msg.payload))
            elif filter_matches(self.topics.tasks_filter(self.cluster, self.node), msg.topic) and msg.payload:
                self._on_task(TaskMessage.model_validate_json(msg.payload))
        except ValidationError as exc:
            log.warning("dropped malformed message on %s: %s", msg.topic, " ".join(str(exc).split())[:300])
        except Exception:
            log.exception("error handling message on %s", msg.topic)

    def _offer_metadata(self, whole: bool) -> None:
        """Offer the newest kept metadata copy: whole when the control service asks for copies (a restoring one
        rebuilds from the newest offered), else its signed header (the version is all any other server reads;
        a copy kept before digests has no header and goes whole)."""
        if self.credential is None:
            return  # the enrolment login may not publish it, and there is nothing kept yet
        newest = self.metadata.newest()
        header = None if whole or newest is None else newest.header()
        copy = MetadataCopy(epoch=self.epoch, copy=None if header is not None else newest, header=header)
        self.client.publish(
            self.topics.metadata_copy(self.cluster, self.node), copy.model_dump_json(by_alias=True), qos=1
        )

    def _on_registration(self, reg: Registration) -> None:
        if reg.epoch != self.epoch or reg.nonce not in self._nonces:
            return  # an answer to an older connection's hello, or to someone else's
        self._nonces.discard(reg.nonce)
        if not reg.accepted:
            log.error("the control service refused node %s in cluster %s: %s", self.node, self.cluster, reg.reason)
            self.stop(EXIT_AUTH)
            return
        if self.credential is None:
            self._enrolled()
            return
        self.metadata.pin(reg.metadata_key)
        first = not self.registered.is_set()
        self.registered.set()
        if first:
            log.info("registered as node %s in cluster %s (epoch %d)", self.node, self.cluster, self.epoch)
            self.client.publish(
                self.topics.presence(self.cluster, self.node),
                Presence(state="online", epoch=self.epoch, at=clock.now()).model_dump_json(),
                qos=1,
                retain=True,
            )
            self.client.subscribe(self.topics.tasks_filter(self.cluster, self.node), 1)
        self.keep_metadata(reg.keep_metadata)
        if first:
            self._flush_unsent()
            self._publish_heartbeat()
            if self.on_ready:
                self.on_ready()

    def keep_metadata(self, keep: bool) -> bool:
        """Receive (subscribe to) the cluster's metadata documents, or stop: the control service names the nodes
        that keep copies (the registration answer, or task ``metadata.keep``). True when that changed."""
        with self._keeping_lock:
            if self._keeping == keep:
                return False
            self._keeping = keep
        topic = self.topics.cluster_metadata(self.cluster)
        if keep:
            self.client.subscribe(topic, 1)
        else:
            self.client.unsubscribe(topic)
        log.info(
            "node %s %s copies of cluster %s's metadata",
            self.node,
            "keeps" if keep else "no longer keeps",
            self.cluster,
        )
        return True

    def _enrolled(self) -> None:
        """The enrolment was accepted: keep the credential, then reconnect as the node (network thread)."""
        enrol = credential.pending(self.s.state_dir, self.cluster, self.node)
        credential.commit(self.s.state_dir, enrol)
        self.credential = enrol
        log.info(
            "node %s enrolled in cluster %s: its credential is in %s; reconnecting as the node "
            "(the join token is not needed any more)",
            self.node,
            self.cluster,
            credential.credential_path(self.s.state_dir),
        )
        self._switching = True
        self.client.disconnect()

    # ---- heartbeats ---------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(min(self.s.heartbeat, HELLO_RETRY_SECONDS, 1.0)):
            self.last_tick = time.monotonic()
            try:
                if not self.client.is_connected():
                    continue
                if not self.registered.is_set():
                    if time.monotonic() - self._last_hello >= self._hello_wait:
                        # a busy control service answers late: asking again ever more often would
                        # only lengthen its queue (thousands of agents after a restart)
                        self._hello_wait = min(self._hello_wait * 2, HELLO_RETRY_MAX) * random.uniform(0.8, 1.2)
                        self._send_hello()
                    continue
                if time.monotonic() - self._last_beat >= self.s.heartbeat:
                    self._publish_heartbeat()
            except Exception:
                log.exception("heartbeat failed")

    _last_beat = 0.0
    last_tick = 0.0  # the heartbeat loop's last pass: systemd's watchdog checks the agent is alive

    def alive(self) -> bool:
        """The agent's own loops run (whether or not the broker is reachable: a restart would not fix that)."""
        return not self._stop.is_set() and time.monotonic() - self.last_tick < 10

    def _publish_heartbeat(self) -> None:
        self._last_beat = time.monotonic()
        self._seq += 1
        bricks, shds = self.bricks.reports()
        beat = Heartbeat(
            epoch=self.epoch,
            seq=self._seq,
            at=clock.now(),
            facts=NodeFacts(**facts.node_facts(self.address, self.s.heartbeat), volfile_port=self.volfiles.port),
            bricks=bricks,
            shds=shds,
            devices=self.devices.reports(),
            rebalances=self.rebalance.reports(),
        )
        self.client.publish(self.topics.heartbeat(self.cluster, self.node), beat.model_dump_json(), qos=0)

    # ---- tasks ----------------------------------------------------------------------------------
    def _status(self, task_id: str, state: TaskState, reason: str = "", result: dict[str, Any] | None = None) -> None:
        """Report a task's state; between connections it waits for the next registration (the control
        service takes statuses only from the epoch it registered)."""
        with self._status_lock:
            if not self.registered.is_set():
                self._unsent.append((task_id, state, reason, result))
                return
            epoch = self.epoch
        status = TaskStatus(task_id=task_id, state=state, epoch=epoch, at=clock.now(), reason=reason, result=result)
        self.client.publish(self.topics.task_status(self.cluster, self.node), status.model_dump_json(), qos=1)

    def _flush_unsent(self) -> None:
        with self._status_lock:
            unsent, self._unsent = self._unsent, []
        for task_id, state, reason, result in unsent:
            self._status(task_id, state, reason, result)

    def fail_interrupted(self) -> list[str]:
        """At start: the tasks the journal says were running when the agent stopped. A task of a kind that
        is safe to run again (tasks.RESUMABLE_KINDS) runs again when it is redelivered; any other is
        recorded FAILED (INTERRUPTED) and reported once registered, since running it twice is not safe."""
        failed = []
        for entry in self.journal.interrupted():
            if entry.get("kind") in RESUMABLE_KINDS:
                log.info(
                    "task %s (%s) was interrupted by a restart: it resumes when redelivered", entry["id"], entry["kind"]
                )
                continue
            log.warning(
                "task %s (%s) was interrupted by a restart: reporting it FAILED (%s)",
                entry["id"],
                entry.get("kind") or "unknown kind",
                INTERRUPTED_REASON,
            )
            self.journal.record(entry["id"], TaskState.FAILED.value, INTERRUPTED_REASON)
            self._status(entry["id"], TaskState.FAILED, INTERRUPTED_REASON)
            failed.append(entry["id"])
        return failed

    def _on_task(self, task: TaskMessage) -> None:
        with self._lock:
            if task.id in self._running:
                return  # redelivered while it runs
            done = self.journal.get(task.id)
            if done and TaskState(done["state"]).final:
                log.info("task %s (%s) already %s: acknowledging again", task.id, task.kind, done["state"])
                self._status(task.id, TaskState(done["state"]), done["reason"], done["result"])
                return
            if done and task.kind not in RESUMABLE_KINDS:  # fail_interrupted settles these at start
                log.warning("task %s (%s) was interrupted and may not run again: FAILED", task.id, task.kind)
                self.journal.record(task.id, TaskState.FAILED.value, INTERRUPTED_REASON, kind=task.kind)
                self._status(task.id, TaskState.FAILED, INTERRUPTED_REASON)
                return
            if done:
                log.info("task %s (%s) was interrupted by a restart: resuming it", task.id, task.kind)
            self._running.add(task.id)
        self._pool.submit(self._execute, task)

    def _execute(self, task: TaskMessage) -> None:
        result: dict[str, Any] | None
        try:
            handler = HANDLERS.get(task.kind)
            log.info("executing task %s (%s)", task.id, task.kind)
            self.journal.record(task.id, TaskState.RUNNING.value, kind=task.kind)
            self._status(task.id, TaskState.RUNNING)
            if handler is None:
                raise TaskFailed(f"unknown task kind {task.kind!r}: upgrade the agent on node {self.node}")
            check_params(task.kind, task.params)
            ctx = TaskContext(
                node=self.node,
                task_id=task.id,
                bricks=self.bricks,
                devices=self.devices,
                volfiles=self.volfiles,
                rebalance=self.rebalance,
                keep_metadata=self.keep_metadata,
                report=lambda state: self._status(task.id, TaskState(state)),
            )
            result = handler(ctx, task.params)
            state, reason = TaskState.DONE, ""
        except TaskFailed as exc:
            state, reason = TaskState.FAILED, str(exc)
            result = {"failure": exc.details} if exc.details else None
        except Exception as exc:
            log.exception("task %s (%s) failed unexpectedly", task.id, task.kind)
            state, reason, result = TaskState.FAILED, f"agent error: {exc!r}", None
        self.journal.record(task.id, state.value, reason, result)
        log.log(
            logging.WARNING if state == TaskState.FAILED else logging.INFO,
            "task %s (%s): %s%s",
            task.id,
            task.kind,
            state.value,
            f" ({reason})" if reason else "",
        )
        self._status(task.id, state, reason, result)
        with self._lock:
            self._running.discard(task.id)
