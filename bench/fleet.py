"""Fleet benchmark: thousands of simulated agents against a real control service, next to a broker baseline.

Starts ``glusterctl server`` (embedded broker; or a Mosquitto of the run's own, anonymous or, with
``--mosquitto dynsec``, with the dynamic security plugin and ``--mqtt-dynsec`` as in production; or the
Mosquitto at 127.0.0.1:1883 with a private topic root; SQLite, or a private PostgreSQL database) and drives it with simulated agents, all in
this one asyncio process. Each simulated agent speaks the topic contract (topics.md) as the real
agent does: it enrols with the join token (enrolment hello with proof and its own node secret),
reconnects as its node user with a last-will on its presence, says hello with the node proof,
publishes its retained presence, sends a heartbeat every ``--heartbeat`` seconds and answers
tasks as an agent whose handlers do nothing (RUNNING, then DONE), journaling finished tasks.

Measured (each next to a baseline taken in the same run on the same broker, with the same number
of plain MQTT clients and no control-service logic on their topics):

* registration storm: all agents enrol and register at once, time until the REST API lists all
  Online, and the CPU the server and a private broker spent meanwhile (baseline: the same number of
  clients connecting and subscribing);
* reconnect storm: once they are held, every agent's connection drops at once (TCP, no DISCONNECT, as
  when a broker restarts: the broker sends every last-will) and each reconnects with its backoff and
  says hello with a new epoch; time until all are registered and Online again, and the server's CPU;
* agents held at the heartbeat interval: the server's CPU% and RSS over ``--duration`` seconds,
  heartbeats persisted per second (the server's ``glusterctl_heartbeats_received``) and messages
  dropped (``glusterctl_mqtt_messages_dropped`` + ``glusterctl_heartbeats_dropped``, must be 0)
  (baseline: the server's CPU with the clients publishing as often on topics it does not read);
* dispatch latency of ``node.probe`` tasks (the lightest kind) under that load, from the REST
  request being accepted (the task's ``created_at``) to its final status persisted
  (``finished_at``) (baseline: QoS 1 round trip of one message through the broker);
* detection of a frozen agent (stops reading and writing its socket, TCP stays open) against
  1.5 x keepalive + 1 s (baselines: the time the broker sent that agent's last-will, and the
  broker's last-will for a plain client frozen at the same moment; ``--frozen-tries`` repeats it);
* the cluster's signed metadata document: the retained payload's size as the agents received it
  (the newest version, and how many agents received that version);
* metadata offers: the agents keep the newest document they received and, at an ``online`` control
  presence (as at a server start or a leader change; the driver publishes one), offer it as the agent
  does: its signed header, or (``--whole-copies``, a second presence asking ``want: copies`` as a
  restoring server does) the whole copy. Time until the server counted every offer
  (``glusterctl_metadata_copies_received``), the bytes it received (``glusterctl_metadata_copy_bytes``)
  and its CPU meanwhile (baseline: the bytes the same offers would be as whole copies).

    .venv/bin/python bench/fleet.py --agents 1000 --broker embedded --db sqlite --duration 60 [-o json]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.mqtt_sim import Connection, MqttError
from broker.dynsec import control_server_id, control_username, enrol_username, node_username
from broker.messages import (
    ControlPresence,
    Heartbeat,
    Hello,
    MetadataCopy,
    MetadataDocument,
    NodeFacts,
    Presence,
    Registration,
    TaskMessage,
    TaskState,
    TaskStatus,
    join_proof,
    new_node_secret,
    node_key,
    node_proof,
    parse_join_token,
)
from broker.topics import Topics
from control.client.sse import aparse_sse

BIN = str(Path(sys.executable).parent / "glusterctl")
MOSQUITTO = ("127.0.0.1", 1883)  # the machine's own Mosquitto (--mosquitto system)
# what a broker in front of a large fleet needs (docs/mosquitto.md, "Large fleets"): the control service reads
# with backpressure, so the broker must hold what it has not read yet instead of dropping it
PRIVATE_MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
max_connections -1
max_queued_messages {queued}
persistence false
log_dest stderr
log_type error
log_type warning
"""
DYNSEC_PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
DYNSEC_ADMIN = "fleet-dynsec-admin"
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
CLUSTER = "default"
METADATA_HEAD = re.compile(rb'\{"cluster":"[^"]*","version":(\d+),')  # how a MetadataDocument's JSON begins
HELLO_RETRY, HELLO_RETRY_MAX = 5.0, 30.0  # as the agent (agent/node.py): doubled each time, with jitter
RECONNECT_MIN, RECONNECT_MAX = 1.0, 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process (FileNotFoundError once it ended)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))]


# ---- the simulated agent ----------------------------------------------------------------------
@dataclass
class Counters:
    enrolled: int = 0
    registered: int = 0
    heartbeats: int = 0
    tasks_done: int = 0
    refusals: list[str] = field(default_factory=list)
    connect_failures: int = 0
    # metadata version -> (its retained payload's length as published, how many agents received it)
    metadata: dict[int, tuple[int, int]] = field(default_factory=dict)


class SimAgent:
    """One node agent as topics.md describes it; no bricks, no devices, tasks do nothing."""

    def __init__(self, fleet: Fleet, name: str, keepalive: int) -> None:
        self.fleet, self.name, self.keepalive = fleet, name, keepalive
        self.t = fleet.topics
        self.agent_id = uuid.uuid4().hex
        self.secret: str | None = None  # the node secret, once enrolled
        self.epoch = 0
        self.seq = 0
        self.nonces: set[str] = set()
        self.conn: Connection | None = None
        self.registered = asyncio.Event()
        self.journal: dict[str, TaskStatus] = {}  # finished tasks: answered again on redelivery
        self.running = True
        self._last_hello = 0.0
        self._answer: asyncio.Future[Registration] | None = None
        self.kept_version: int | None = None  # the newest metadata document kept (its payload: Fleet.documents)
        self.facts = NodeFacts(
            hostname=name,
            address="127.0.0.1",
            agent_version="sim",
            glusterfs_version="10.3",
            kernel="sim",
            uptime_seconds=1000.0,
            heartbeat_interval=fleet.heartbeat,
            volfile_port=24007,
        )

    def _next_epoch(self) -> int:
        self.epoch = max(self.epoch + 1, int(time.time() * 1000))
        return self.epoch

    async def run(self) -> None:
        """Enrol, then stay connected as the node, reconnecting with backoff (and jitter) when dropped."""
        delay = RECONNECT_MIN
        while self.running and self.secret is None:
            try:
                await self._enrol()
            except (TimeoutError, MqttError, OSError):
                self.fleet.counters.connect_failures += 1
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, RECONNECT_MAX)
        delay = RECONNECT_MIN
        while self.running:
            try:
                await self._session()
                delay = RECONNECT_MIN
            except (TimeoutError, MqttError, OSError):
                self.fleet.counters.connect_failures += 1
            if not self.running:
                break
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, RECONNECT_MAX)

    async def _enrol(self) -> None:
        fleet = self.fleet
        self._next_epoch()
        conn = Connection(self._on_enrol_message)
        secret = new_node_secret()
        await conn.connect(
            fleet.mqtt_host,
            fleet.mqtt_port,
            f"glusterctl-agent-{self.name}-{self.agent_id[:8]}",
            enrol_username(self.t, CLUSTER),
            parse_join_token(fleet.join_token)[1],
            keepalive=self.keepalive,
        )
        try:
            await conn.subscribe([(self.t.registration(CLUSTER, self.name), 1), (self.t.control_presence(), 1)])
            wait = HELLO_RETRY * random.uniform(0.8, 1.2)
            self.nonces = set()
            self._answer = asyncio.get_running_loop().create_future()
            while True:
                nonce = secrets.token_hex(8)
                self.nonces.add(nonce)  # as the agent: the answer to any hello of this connection will do
                hello = Hello(
                    agent_id=self.agent_id,
                    epoch=self.epoch,
                    proof=join_proof(fleet.join_token, self.name, self.agent_id, self.epoch),
                    nonce=nonce,
                    node_secret=secret,
                    facts=self.facts,
                )
                conn.publish(self.t.hello(CLUSTER, self.name), hello.model_dump_json().encode(), qos=1)
                try:
                    answer = await asyncio.wait_for(asyncio.shield(self._answer), wait)
                    break
                except TimeoutError:
                    if conn.closed.is_set():
                        raise MqttError("enrolment connection lost") from None
                    wait = min(wait * 2, HELLO_RETRY_MAX) * random.uniform(0.8, 1.2)
            if not answer.accepted:
                self.fleet.counters.refusals.append(f"{self.name}: {answer.reason}")
                self.running = False
                return
            self.secret = secret
            self.fleet.counters.enrolled += 1
        finally:
            await conn.disconnect()

    def _on_enrol_message(self, topic: str, payload: bytes) -> None:
        if topic != self.t.registration(CLUSTER, self.name) or not payload:
            return
        reg = Registration.model_validate_json(payload)
        if reg.epoch == self.epoch and reg.nonce in self.nonces and self._answer and not self._answer.done():
            self._answer.set_result(reg)

    async def _session(self) -> None:
        """One connection as the node user: hello, presence, heartbeats, tasks; returns when it is lost."""
        fleet = self.fleet
        assert self.secret is not None
        self._next_epoch()
        self.registered.clear()
        self.nonces.clear()
        will = Presence(state="offline", epoch=self.epoch, at=time.time()).model_dump_json().encode()
        conn = Connection(self._on_message)
        self.conn = conn
        await conn.connect(
            fleet.mqtt_host,
            fleet.mqtt_port,
            f"glusterctl-agent-{self.name}-{self.agent_id[:8]}",
            node_username(self.t, CLUSTER, self.name),
            self.secret,
            keepalive=self.keepalive,
            will=(self.t.presence(CLUSTER, self.name), will, 1, True),
        )
        await conn.subscribe([(self.t.registration(CLUSTER, self.name), 1), (self.t.control_presence(), 1)])
        self._send_hello()
        hello_wait = HELLO_RETRY * random.uniform(0.8, 1.2)
        last_beat = 0.0
        while not conn.closed.is_set() and self.running:
            # registered, it wakes only for its next heartbeat (10,000 agents polling twice a second kept the
            # simulator's one core busy); a lost connection ends the wait at once
            wait = 1.0 if not self.registered.is_set() else max(last_beat + fleet.heartbeat - time.monotonic(), 0.05)
            try:
                await asyncio.wait_for(conn.closed.wait(), wait)
                break
            except TimeoutError:
                pass
            if conn.frozen:
                await conn.closed.wait()
                break
            now = time.monotonic()
            if not self.registered.is_set():
                if now - self._last_hello >= hello_wait:
                    hello_wait = min(hello_wait * 2, HELLO_RETRY_MAX) * random.uniform(0.8, 1.2)
                    self._send_hello()
            elif now - last_beat >= fleet.heartbeat:
                last_beat = now
                self._heartbeat()

    def _send_hello(self) -> None:
        assert self.conn is not None and self.secret is not None
        self._last_hello = time.monotonic()
        nonce = secrets.token_hex(8)
        self.nonces.add(nonce)
        proof = node_proof(node_key(self.secret), CLUSTER, self.name, self.agent_id, self.epoch)
        hello = Hello(agent_id=self.agent_id, epoch=self.epoch, proof=proof, nonce=nonce, facts=self.facts)
        self.conn.publish(self.t.hello(CLUSTER, self.name), hello.model_dump_json().encode(), qos=1)

    def _heartbeat(self) -> None:
        assert self.conn is not None
        self.seq += 1
        beat = Heartbeat(epoch=self.epoch, seq=self.seq, at=time.time(), facts=self.facts)
        self.conn.publish(self.t.heartbeat(CLUSTER, self.name), beat.model_dump_json().encode(), qos=0)
        self.fleet.counters.heartbeats += 1

    def _on_message(self, topic: str, payload: bytes) -> None:
        t, conn = self.t, self.conn
        if conn is None:
            return
        if topic == t.registration(CLUSTER, self.name):
            reg = Registration.model_validate_json(payload)
            if reg.epoch != self.epoch or reg.nonce not in self.nonces:
                return
            self.nonces.discard(reg.nonce)
            if not reg.accepted:
                self.fleet.counters.refusals.append(f"{self.name}: {reg.reason}")
                self.running = False
                conn.abort()
                return
            if self.registered.is_set():
                return
            self.registered.set()
            self.fleet.counters.registered += 1
            presence = Presence(state="online", epoch=self.epoch, at=time.time()).model_dump_json().encode()
            conn.publish(t.presence(CLUSTER, self.name), presence, qos=1, retain=True)
            topics = [(t.tasks_filter(CLUSTER, self.name), 1)]
            if reg.keep_metadata:  # only the cluster's keepers receive its metadata
                topics.append((t.cluster_metadata(CLUSTER), 1))
            asyncio.ensure_future(conn.subscribe(topics)).add_done_callback(_quiet)
            self._heartbeat()
        elif topic == t.control_presence():
            presence = ControlPresence.model_validate_json(payload) if payload else None
            if presence is not None and presence.state == "online":
                self._send_hello()
                if self.registered.is_set():
                    copy = self.fleet.copy_payload(self.epoch, self.kept_version, whole=presence.want == "copies")
                    conn.publish(t.metadata_copy(CLUSTER, self.name), copy, qos=1)
        elif topic == t.cluster_metadata(CLUSTER) and payload:
            self._on_metadata(payload)
        elif topic.startswith(t.node_prefix(CLUSTER, self.name) + "/tasks/") and payload:
            self._on_task(TaskMessage.model_validate_json(payload))

    def _on_metadata(self, payload: bytes) -> None:
        """Count the retained metadata document's size by version (the envelope's head names the version) and
        keep the newest, as the real agent does; the simulator does not verify it, and the agents share one
        copy of each version's payload (thousands of copies of a megabyte would not fit in memory)."""
        head = METADATA_HEAD.match(payload)
        if head is None:
            return
        version = int(head.group(1))
        size, receivers = self.fleet.counters.metadata.get(version, (len(payload), 0))
        self.fleet.counters.metadata[version] = (size, receivers + 1)
        self.fleet.documents.setdefault(version, payload)
        if self.kept_version is None or version > self.kept_version:
            self.kept_version = version

    def _on_task(self, task: TaskMessage) -> None:
        done = self.journal.get(task.id)
        if done is None:
            self._status(TaskStatus(task_id=task.id, state=TaskState.RUNNING, epoch=self.epoch))
            result = {"glusterfs_version": "10.3", "kernel": "sim", "xattrs": None, "write_mib_per_second": None}
            done = TaskStatus(task_id=task.id, state=TaskState.DONE, epoch=self.epoch, result=result)
            self.journal[task.id] = done
            self.fleet.counters.tasks_done += 1
            answered = self.fleet.answered(task.id)
            if not answered.done():
                answered.set_result(None)
        else:
            done = done.model_copy(update={"epoch": self.epoch, "at": time.time()})
        self._status(done)

    def _status(self, status: TaskStatus) -> None:
        assert self.conn is not None
        self.conn.publish(self.t.task_status(CLUSTER, self.name), status.model_dump_json().encode(), qos=1)

    def freeze(self) -> None:
        if self.conn is not None:
            self.conn.freeze()

    async def stop(self) -> None:
        self.running = False
        if self.conn is not None and not self.conn.closed.is_set() and not self.conn.frozen:
            await self.conn.disconnect()


def _quiet(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


# ---- the server under test --------------------------------------------------------------------
class PrivateMosquitto:
    """A Mosquitto of the run's own, configured for a fleet of ``agents`` (PRIVATE_MOSQUITTO_CONF); with ``dynsec``
    also with the dynamic security plugin and no anonymous logins, as docs/mosquitto.md sets one up: the control
    service then makes a broker user and role for every node it enrols."""

    def __init__(self, tmp: Path, agents: int, dynsec: bool = False) -> None:
        self.port = free_port()
        self.log_path = tmp / "mosquitto.log"
        conf = tmp / "mosquitto.conf"
        queued = max(100_000, 10 * agents)
        text = PRIVATE_MOSQUITTO_CONF.format(port=self.port, queued=queued)
        self.admin_password = ""
        if dynsec:
            self.admin_password = secrets.token_hex(16)
            config_file = tmp / "dynamic-security.json"
            subprocess.run(
                ["mosquitto_ctrl", "dynsec", "init", str(config_file), DYNSEC_ADMIN, self.admin_password],
                check=True,
                capture_output=True,
                stdin=subprocess.DEVNULL,
                timeout=30,
            )
            text = text.replace("allow_anonymous true", "allow_anonymous false")
            text += f"plugin {DYNSEC_PLUGIN}\nplugin_opt_config_file {config_file}\n"
            if os.geteuid() == 0:
                text += "user root\n"  # else Mosquitto drops to 'mosquitto', which cannot save the dynsec file here
        conf.write_text(text)
        with open(self.log_path, "wb") as log:  # its own log file would be written as the mosquitto user
            self.popen = subprocess.Popen(
                ["mosquitto", "-c", str(conf)], stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.popen.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the private Mosquitto did not start: {self.log()[-500:]}") from None
                time.sleep(0.05)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.popen.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def dropped(self) -> int:
        """How often the broker said it dropped messages for a client that did not read them in time."""
        return self.log().count("Outgoing messages are being dropped")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


class ServerProc:
    def __init__(
        self,
        tmp: Path,
        broker: str,
        db_url: str | None,
        mosquitto: tuple[str, int] = MOSQUITTO,
        dynsec_password: str = "",
    ) -> None:
        self.tmp = tmp
        self.broker, self.dynsec = broker, bool(dynsec_password)
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.root = "glusterctl" if broker == "embedded" else f"fleet{uuid.uuid4().hex[:8]}"
        self.mqtt_port = free_port() if broker == "embedded" else mosquitto[1]
        self.data_dir = tmp / "server"
        argv = [BIN, "server", "--data-dir", str(self.data_dir), "--http", f"127.0.0.1:{self.http_port}"]
        argv += ["--mqtt-root", self.root]
        if broker == "embedded":
            argv += ["--mqtt", f"127.0.0.1:{self.mqtt_port}"]
        elif not self.dynsec:
            argv += ["--mqtt-url", f"mqtt://{mosquitto[0]}:{mosquitto[1]}"]
        else:
            argv += ["--mqtt-dynsec"]  # the admin's URL comes in the environment, out of the process list
        if db_url:
            argv += ["--db", db_url]
        self.argv = argv
        self.log_path = tmp / "server.log"
        self.env = {**os.environ, "GLUSTERCTL_CONFIG_DIR": str(tmp / "cli"), "GLUSTERCTL_URL": self.url}
        self.env.pop("GLUSTERCTL_PASSWORD", None)
        self.server_env = dict(self.env)
        if self.dynsec:
            admin = f"{DYNSEC_ADMIN}:{dynsec_password}@{mosquitto[0]}:{mosquitto[1]}"
            self.server_env["GLUSTERCTL_MQTT_URL"] = f"mqtt://{admin}"
        self.popen: subprocess.Popen[bytes] | None = None
        self.token = ""

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.server_env,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"server exited with {self.popen.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).json().get("status") == "ok":
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError("server did not become healthy within 60 s")
        password = secrets.token_urlsafe(16)
        self.cli("user", "create", "admin", "--password-stdin", stdin=password + "\n")
        self.cli("login", "--username", "admin", "--password-stdin", stdin=password + "\n")
        with open(self.tmp / "cli" / "token.json") as fh:
            self.token = json.load(fh)["token"]

    def cli(self, *args: str, stdin: str | None = None) -> str:
        proc = subprocess.run([BIN, *args], input=stdin, capture_output=True, text=True, env=self.env, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"glusterctl {' '.join(args)}: {proc.stdout}{proc.stderr}")
        return proc.stdout

    def join_token(self) -> str:
        return self.cli("cluster", "token", CLUSTER).strip().splitlines()[-1]

    def control_secret(self) -> str:
        return (self.data_dir / "control.secret").read_text().strip()

    def control_login(self, topics: Topics) -> tuple[str | None, str | None]:
        """The user and password the driver's own clients use: the control service's (which may publish and read
        everything under the topic root) where the broker checks logins, none on an anonymous Mosquitto."""
        if self.broker == "embedded":
            return control_username(topics), self.control_secret()
        if self.dynsec:
            secret = self.control_secret()
            return control_username(topics, control_server_id(secret)), secret
        return None, None

    def pids(self) -> list[int]:
        """The server's process and its children (the embedded broker runs in one of its own)."""
        assert self.popen is not None
        pids = [self.popen.pid]
        for task in Path(f"/proc/{self.popen.pid}/task").glob("*/children"):
            pids.extend(int(pid) for pid in task.read_text().split())
        return pids

    def cpu_seconds(self) -> float:
        """CPU time of the server with its broker process."""
        total = 0.0
        for pid in self.pids():
            try:
                total += cpu_seconds(pid)
            except FileNotFoundError:
                continue  # it ended meanwhile
        return total

    def rss_mib(self) -> float:
        """Resident memory of the server with its broker process."""
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as fh:
                    total += next((int(line.split()[1]) for line in fh if line.startswith("VmRSS:")), 0)
            except FileNotFoundError:
                continue
        return total / 1024

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)


def private_postgres() -> tuple[str, str]:
    import psycopg2

    name = f"gct_fleet_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(POSTGRES_ADMIN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return name, POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def drop_postgres(name: str) -> None:
    import psycopg2

    admin = psycopg2.connect(POSTGRES_ADMIN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
    admin.close()


# ---- the driver -------------------------------------------------------------------------------
class Fleet:
    def __init__(self, args: argparse.Namespace, server: ServerProc) -> None:
        self.args = args
        self.server = server
        self.topics = Topics(server.root)
        self.mqtt_host, self.mqtt_port = "127.0.0.1", server.mqtt_port
        self.heartbeat = float(args.heartbeat)
        self.join_token = ""
        self.counters = Counters()
        self.agents: list[SimAgent] = []
        self.runs: list[asyncio.Task[None]] = []
        self.http = httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=60
        )
        self.results: dict[str, Any] = {}
        self.broker_cpu: Callable[[], float | None] = lambda: None  # a private Mosquitto's CPU seconds
        self.answers: dict[str, asyncio.Future[None]] = {}
        self.documents: dict[int, bytes] = {}  # metadata version -> the retained payload, as first received
        self._headers: dict[int, bytes] = {}  # metadata version -> its header's JSON (b"": it has none)

    def copy_payload(self, epoch: int, version: int | None, whole: bool) -> bytes:
        """A MetadataCopy of the document ``version`` as the agent offers it: the signed header, or the whole
        document when the presence wants copies (or it has no header); built from cached parts."""
        document = self.documents.get(version) if version is not None else None
        if document is None:
            return MetadataCopy(epoch=epoch).model_dump_json(by_alias=True).encode()
        if not whole and version is not None:
            header = self._headers.get(version)
            if header is None:
                parsed = MetadataDocument.model_validate_json(document).header()
                header = self._headers[version] = parsed.model_dump_json().encode() if parsed is not None else b""
            if header:
                return b'{"epoch":%d,"header":%s}' % (epoch, header)
        return b'{"epoch":%d,"copy":%s}' % (epoch, document)

    def answered(self, task_id: str) -> asyncio.Future[None]:
        """Completes when a simulated agent sent the task's final status."""
        fut = self.answers.get(task_id)
        if fut is None:
            fut = self.answers[task_id] = asyncio.get_running_loop().create_future()
        return fut

    # REST ------------------------------------------------------------------------------------
    async def node_states(self) -> dict[str, str]:
        resp = await self.http.get(f"/api/v1/clusters/{CLUSTER}/nodes")
        resp.raise_for_status()
        return {n["name"]: n["state"] for n in resp.json()}

    async def metrics(self) -> dict[str, float]:
        resp = await self.http.get("/metrics")
        resp.raise_for_status()
        values: dict[str, float] = {}
        for line in resp.text.splitlines():
            match = re.match(r"^(glusterctl_[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
            if match:
                values[match.group(1)] = values.get(match.group(1), 0.0) + float(match.group(3))
        return values

    async def wait_online(self, names: set[str], timeout: float) -> float | None:
        """Seconds until the REST API lists all ``names`` Online and each such agent's node session is registered."""
        start = time.monotonic()
        agents = [a for a in self.agents if a.name in names]
        while time.monotonic() - start < timeout:
            try:
                if not all(a.registered.is_set() for a in agents):
                    await asyncio.sleep(0.5)
                    continue
                states = await self.node_states()
                if all(states.get(n) == "Online" for n in names):
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
        return None

    # baseline: plain clients on the same broker, topics the control service does not read ---------
    async def baseline(self, count: int) -> dict[str, Any]:
        root = self.topics.base
        user, password = self.server.control_login(self.topics)
        latencies: list[float] = []

        async def connect(i: int) -> Connection:
            conn = Connection()
            await conn.connect(
                self.mqtt_host, self.mqtt_port, f"fleet-baseline-{i}-{uuid.uuid4().hex[:6]}", user, password, 30
            )
            await conn.subscribe([(f"{root}/bench/{i}", 1)])
            return conn

        start = time.monotonic()
        conns = list(await asyncio.gather(*(connect(i) for i in range(count))))
        connect_seconds = time.monotonic() - start

        # as many messages as the agents' heartbeats, on topics no control-service handler reads
        window = min(self.args.duration, 20.0)
        cpu0, t0 = self.server.cpu_seconds(), time.monotonic()
        payload = b"x" * 400  # about a heartbeat's size
        stop = asyncio.Event()

        async def beat(i: int, conn: Connection) -> None:
            await asyncio.sleep(random.uniform(0, self.heartbeat))
            while not stop.is_set():
                conn.publish(f"{root}/bench/{i}", payload, qos=0)
                try:
                    await asyncio.wait_for(stop.wait(), self.heartbeat)
                except TimeoutError:
                    pass

        beats = [asyncio.create_task(beat(i, c)) for i, c in enumerate(conns)]
        await asyncio.sleep(window)
        stop.set()
        await asyncio.gather(*beats)
        idle_cpu = (self.server.cpu_seconds() - cpu0) / (time.monotonic() - t0) * 100

        # QoS 1 round trips through the broker, a few clients at a time: the floor of any dispatch
        async def round_trip(i: int, conn: Connection) -> None:
            got = asyncio.get_running_loop().create_future()
            conn.on_message = lambda t, p: got.done() or got.set_result(None)
            t1 = time.perf_counter()
            conn.publish(f"{root}/bench/{i}", b"r", qos=1)
            await asyncio.wait_for(got, 10)
            latencies.append(time.perf_counter() - t1)

        sample = conns[: min(len(conns), 200)]
        for i in range(0, len(sample), 10):
            await asyncio.gather(*(round_trip(i + j, c) for j, c in enumerate(sample[i : i + 10])))

        # raw rate: every client publishes QoS 1 to its own topic as fast as the broker acknowledges
        counted = [0]
        for c in conns:
            c.on_message = lambda t, p: counted.__setitem__(0, counted[0] + 1)
        burst = min(3.0, self.args.duration)
        end = time.monotonic() + burst

        async def flood(i: int, conn: Connection) -> None:
            while time.monotonic() < end:
                ack = conn.publish(f"{root}/bench/{i}", b"m", qos=1)
                if ack is None:
                    return
                try:
                    await asyncio.wait_for(ack, 10)
                except (TimeoutError, MqttError):
                    return

        t2 = time.monotonic()
        await asyncio.gather(*(flood(i, c) for i, c in enumerate(conns[: min(len(conns), 500)])))
        await asyncio.sleep(0.5)
        rate = counted[0] / (time.monotonic() - t2)
        await asyncio.gather(*(c.disconnect() for c in conns))
        return {
            "connect_seconds": connect_seconds,
            "cpu_percent": idle_cpu,
            "round_trip_p50_ms": (statistics.median(latencies) * 1000) if latencies else None,
            "round_trip_p99_ms": (percentile(latencies, 99) or 0) * 1000 if latencies else None,
            "messages_per_second": rate,
        }

    # phases ------------------------------------------------------------------------------------
    async def storm(self, count: int) -> float | None:
        self.agents = [SimAgent(self, f"sim{i:05d}", self.args.keepalive) for i in range(count)]
        names = {a.name for a in self.agents}
        self.runs = [asyncio.create_task(a.run()) for a in self.agents]
        return await self.wait_online(names, self.args.storm_timeout)

    async def reconnect_storm(self) -> dict[str, Any]:
        """Drop every agent's connection at once and time until all are registered and Online again."""
        agents = [a for a in self.agents if a.running and a.conn is not None and a.registered.is_set()]
        failures0 = self.counters.connect_failures
        cpu0, t0 = self.server.cpu_seconds(), time.monotonic()
        for agent in agents:
            agent.registered.clear()
            assert agent.conn is not None
            agent.conn.abort()
        seconds = await self.wait_online({a.name for a in agents}, self.args.storm_timeout)
        return {
            "seconds": seconds,
            "agents": len(agents),
            "cpu_percent": (self.server.cpu_seconds() - cpu0) / (time.monotonic() - t0) * 100,
            "connect_failures": self.counters.connect_failures - failures0,
        }

    async def hold(self, seconds: float) -> dict[str, float]:
        m0 = await self.metrics()
        cpu0, t0 = self.server.cpu_seconds(), time.monotonic()
        rss_max = 0.0
        while time.monotonic() - t0 < seconds:
            await asyncio.sleep(1.0)
            rss_max = max(rss_max, self.server.rss_mib())
        elapsed = time.monotonic() - t0
        cpu = (self.server.cpu_seconds() - cpu0) / elapsed * 100
        m1 = await self.metrics()
        return {
            "cpu_percent": cpu,
            "rss_mib": rss_max,
            "heartbeats_per_second": (
                m1.get("glusterctl_heartbeats_received_total", 0) - m0.get("glusterctl_heartbeats_received_total", 0)
            )
            / elapsed,
            "expected_per_second": len(self.agents) / self.heartbeat,
        }

    async def dispatch(self, count: int, rate: float | None = None) -> dict[str, Any]:
        """``count`` probes to random agents; latency = finished_at - created_at (server clock).

        With ``rate``, one probe starts every 1/rate seconds whatever the others do (an operator's pace:
        the latency of one task under the fleet's load); without, 10 are kept in flight (the server's
        throughput, where latency is mostly the queue of tasks in front).

        A task's end is learnt from the event stream (``task.state`` events), as ``--wait`` learns it, and
        the task is read once afterwards for its times: polling every task would load the server and
        lengthen the very latency measured."""
        latencies: list[float] = []
        client_side: list[float] = []
        to_running: list[float] = []
        sem = asyncio.Semaphore(10 if rate is None else count)
        failed: list[str] = []
        finals: dict[str, asyncio.Future[str]] = {}
        loop = asyncio.get_running_loop()

        def final(task_id: str) -> asyncio.Future[str]:
            return finals.setdefault(task_id, loop.create_future())

        ready = asyncio.Event()

        async def follow() -> None:
            params = {"kind": "task.state", "cluster": CLUSTER, "heartbeat": "5"}
            async with self.http.stream("GET", "/api/v1/events", params=params, timeout=None) as resp:
                resp.raise_for_status()
                async for message in aparse_sse(resp.aiter_lines()):
                    if message.event == "hello":
                        ready.set()
                        continue
                    if not message.data or message.event != "message":
                        continue
                    event = json.loads(message.data)
                    state = event["data"].get("state")
                    if state in ("DONE", "FAILED"):
                        fut = final(event["subject"])
                        if not fut.done():
                            fut.set_result(state)

        async def one(agent: SimAgent) -> None:
            async with sem:
                t0 = time.monotonic()
                resp = await self.http.post(f"/api/v1/clusters/{CLUSTER}/nodes/{agent.name}/probe", json={})
                if resp.status_code != 202:
                    failed.append(f"{resp.status_code} {resp.text[:200]}")
                    return
                task_id = resp.json()["id"]
                try:
                    await asyncio.wait_for(final(task_id), 30)
                except TimeoutError:
                    got = "the agent answered" if self.answered(task_id).done() else "the agent got no task"
                    failed.append(f"{task_id}: not final after 30 s ({got})")
                    return
                client_side.append(time.monotonic() - t0)
                task = (await self.http.get(f"/api/v1/tasks/{task_id}")).json()
                if task["state"] != "DONE":
                    failed.append(f"{task_id}: {task['state']} {task['reason']}")
                latencies.append(task["finished_at"] - task["created_at"])
                running = [e["at"] for e in task.get("events") or [] if e["state"] == "RUNNING"]
                if running:
                    to_running.append(running[0] - task["created_at"])

        follower = asyncio.create_task(follow())
        try:
            await asyncio.wait_for(ready.wait(), 30)
            targets = [random.choice(self.agents) for _ in range(count)]
            started = time.monotonic()
            if rate is None:
                await asyncio.gather(*(one(a) for a in targets))
            else:
                runs = []
                for i, agent in enumerate(targets):
                    await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
                    runs.append(asyncio.create_task(one(agent)))
                await asyncio.gather(*runs)
            elapsed = time.monotonic() - started
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        return {
            "tasks": count,
            "rate": rate,
            "tasks_per_second": count / elapsed,
            "p50_ms": (statistics.median(latencies) * 1000) if latencies else None,
            "p99_ms": (percentile(latencies, 99) or 0) * 1000 if latencies else None,
            "client_p50_ms": (statistics.median(client_side) * 1000) if client_side else None,
            "running_p50_ms": (statistics.median(to_running) * 1000) if to_running else None,
            "failed": failed[:5],
            "failed_count": len(failed),
        }

    async def frozen(self, keepalive: int, name: str) -> dict[str, Any]:
        """A separate agent with a short keepalive; freeze it and time until the REST API says Unreachable.

        The baselines are the broker's own: the time until a subscriber receives the frozen agent's own
        last-will (its ``offline`` presence, as the server receives it), and a plain client with the same
        keepalive and a last-will, frozen at the same moment (no control service involved). How long each
        connection had sent nothing at the freeze is reported too: a broker counts its keepalive from the
        last packet received, so two clients frozen together can be disconnected at different times."""
        agent = SimAgent(self, name, keepalive)
        self.agents.append(agent)
        self.runs.append(asyncio.create_task(agent.run()))
        limit = 1.5 * keepalive + 1
        result: dict[str, Any] = {"seconds": None, "limit": limit, "keepalive": keepalive, "broker_seconds": None}
        if await self.wait_online({agent.name}, 60) is None:
            return result
        will_topic = f"{self.topics.base}/bench/frozen-will"
        presence_topic = self.topics.presence(CLUSTER, agent.name)
        user, password = self.server.control_login(self.topics)
        loop = asyncio.get_running_loop()
        will_seen: asyncio.Future[float] = loop.create_future()
        agent_will_seen: asyncio.Future[float] = loop.create_future()

        def on_will(topic: str, payload: bytes) -> None:
            if topic == will_topic and not will_seen.done():
                will_seen.set_result(time.monotonic())
            elif topic == presence_topic and payload and not agent_will_seen.done():
                presence = Presence.model_validate_json(payload)
                if presence.state == "offline" and presence.epoch == agent.epoch:
                    agent_will_seen.set_result(time.monotonic())

        watcher, plain = Connection(on_will), Connection()
        await watcher.connect(
            self.mqtt_host, self.mqtt_port, f"fleet-will-watch-{uuid.uuid4().hex[:6]}", user, password
        )
        await watcher.subscribe([(will_topic, 1), (presence_topic, 1)])
        await plain.connect(
            self.mqtt_host,
            self.mqtt_port,
            f"fleet-will-{uuid.uuid4().hex[:6]}",
            user,
            password,
            keepalive,
            will=(will_topic, b"gone", 1, False),
        )
        # a hang comes at any moment: tries one after another at a fixed pace would fall in step with a
        # broker's periodic keepalive check (Mosquitto 2.0 checks every 6 s) and sample one phase of it
        await asyncio.sleep(1.0 + random.uniform(0.0, limit))
        agent.running = False
        agent.freeze()
        plain.freeze()
        start = time.monotonic()
        assert agent.conn is not None
        result["agent_silent_seconds"] = start - agent.conn.last_sent
        result["plain_silent_seconds"] = start - plain.last_sent
        while time.monotonic() - start < 6 * keepalive + 30:
            resp = await self.http.get(f"/api/v1/clusters/{CLUSTER}/nodes/{agent.name}")  # one node: a light read
            if resp.status_code == 200 and resp.json()["state"] == "Unreachable":
                result["seconds"] = time.monotonic() - start
                break
            await asyncio.sleep(0.1)
        for key, seen in (("agent_will_seconds", agent_will_seen), ("broker_seconds", will_seen)):
            try:
                result[key] = await asyncio.wait_for(asyncio.shield(seen), 6 * keepalive + 30) - start
            except TimeoutError:
                result[key] = None
        for conn in (agent.conn, plain):
            conn.abort()
        await watcher.disconnect()
        return result

    async def offers(self, whole: bool, timeout: float = 300.0) -> dict[str, Any]:
        """Publish an ``online`` control presence (``want: copies`` if ``whole``) and time until the server
        counted an offered copy from every registered agent; the bytes it received and its CPU meanwhile."""
        expected = sum(1 for a in self.agents if a.registered.is_set() and a.running)
        user, password = self.server.control_login(self.topics)
        conn = Connection()
        await conn.connect(self.mqtt_host, self.mqtt_port, f"fleet-presence-{uuid.uuid4().hex[:6]}", user, password)
        m0 = await self.metrics()
        cpu0, t0 = self.server.cpu_seconds(), time.monotonic()
        presence = ControlPresence(
            state="online", instance="fleet-bench", at=time.time(), want="copies" if whole else ""
        )
        ack = conn.publish(self.topics.control_presence(), presence.model_dump_json().encode(), qos=1)
        if ack is not None:
            await asyncio.wait_for(ack, 30)
        copies, seconds = 0.0, None
        while time.monotonic() - t0 < timeout:
            await asyncio.sleep(0.5)
            m1 = await self.metrics()
            copies = m1.get("glusterctl_metadata_copies_received_total", 0) - m0.get(
                "glusterctl_metadata_copies_received_total", 0
            )
            if copies >= expected:
                seconds = time.monotonic() - t0
                break
        cpu = (self.server.cpu_seconds() - cpu0) / (time.monotonic() - t0) * 100
        m1 = await self.metrics()
        await conn.disconnect()
        newest = max(self.documents, default=None)
        return {
            "whole": whole,
            "seconds": seconds,
            "agents": expected,
            "copies": copies,
            "bytes": m1.get("glusterctl_metadata_copy_bytes_total", 0)
            - m0.get("glusterctl_metadata_copy_bytes_total", 0),
            "keepers": sum(1 for a in self.agents if a.registered.is_set() and a.running and a.kept_version),
            "whole_bytes": (
                sum(
                    len(self.documents[a.kept_version]) for a in self.agents if a.registered.is_set() and a.kept_version
                )
                if newest is not None
                else None
            ),
            "cpu_percent": cpu,
        }

    def start_profile(self) -> subprocess.Popen[bytes] | None:
        """py-spy on the server (and its broker process) while the agents are held and tasks dispatched (--profile FILE)."""
        if not self.args.profile:
            return None
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        assert self.server.popen is not None
        argv = [exe, "record", "--pid", str(self.server.popen.pid), "--format", "raw", "-o", self.args.profile]
        argv += ["--threads", "--rate", "50", "--nonblocking", "--subprocesses"]  # the broker process too
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop_profile(self, profiler: subprocess.Popen[bytes] | None) -> None:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(timeout=60)

    async def run(self) -> dict[str, Any]:
        args, r = self.args, self.results
        self.join_token = self.server.join_token()
        r["baseline"] = await self.baseline(args.agents)
        broker_cpu0, server_cpu0 = self.broker_cpu(), self.server.cpu_seconds()
        storm = await self.storm(args.agents)
        broker_cpu1 = self.broker_cpu()
        r["storm"] = {
            "seconds": storm,
            "server_cpu_seconds": self.server.cpu_seconds() - server_cpu0,
            "broker_cpu_seconds": broker_cpu1 - broker_cpu0
            if broker_cpu0 is not None and broker_cpu1 is not None
            else None,
            "agents": args.agents,
            "online": sum(1 for s in (await self.node_states()).values() if s == "Online"),
            "connect_failures": self.counters.connect_failures,
            "refusals": self.counters.refusals[:5],
        }
        await asyncio.sleep(min(self.heartbeat, 5, args.duration))  # let the storm's backlog drain
        profiler = self.start_profile()
        r["held"] = await self.hold(args.duration)
        cpu0, t0 = self.server.cpu_seconds(), time.monotonic()
        r["dispatch"] = await self.dispatch(args.tasks, args.task_rate)
        r["dispatch"]["cpu_percent"] = (self.server.cpu_seconds() - cpu0) / (time.monotonic() - t0) * 100
        cpu0, t0 = self.server.cpu_seconds(), time.monotonic()
        r["throughput"] = await self.dispatch(args.tasks)
        r["throughput"]["cpu_percent"] = (self.server.cpu_seconds() - cpu0) / (time.monotonic() - t0) * 100
        self.stop_profile(profiler)
        r["offers"] = [await self.offers(whole=False)]
        if args.whole_copies:
            r["offers"].append(await self.offers(whole=True))
        r["reconnect"] = await self.reconnect_storm()
        await asyncio.sleep(min(self.heartbeat, 5))  # let its backlog drain
        r["frozen"] = [await self.frozen(args.frozen_keepalive, f"simfrozen{i}") for i in range(args.frozen_tries)]
        m = await self.metrics()
        newest = max(self.counters.metadata, default=None)
        size, receivers = self.counters.metadata.get(newest, (None, 0)) if newest is not None else (None, 0)
        r["metadata"] = {"version": newest, "bytes": size, "agents": receivers}
        r["dropped"] = {
            "mqtt_messages": m.get("glusterctl_mqtt_messages_dropped_total"),
            "heartbeats": m.get("glusterctl_heartbeats_dropped_total"),
        }
        return r

    async def close(self) -> None:
        for agent in self.agents:
            agent.running = False
        await asyncio.gather(*(a.stop() for a in self.agents), return_exceptions=True)
        for task in self.runs:
            task.cancel()
        await asyncio.gather(*self.runs, return_exceptions=True)
        await self.http.aclose()


def server_log_problems(text: str) -> dict[str, int]:
    return {
        "database is locked": text.count("database is locked"),
        "broker timeouts": len(re.findall(r"(?i)timed out|TimeoutError|Timeout waiting for PUBACK", text)),
        "errors": len(re.findall(r" ERROR ", text)),
    }


def fmt(value: Any, spec: str = ".1f", unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:{spec}}{unit}"


def frozen_try(i: int, r: dict[str, Any]) -> str:
    return f", try {i + 1} of {len(r['frozen'])}" if len(r["frozen"]) > 1 else ""


def table(r: dict[str, Any], args: argparse.Namespace) -> str:
    b, s, h, d = r["baseline"], r["storm"], r["held"], r["dispatch"]
    t = r["throughput"]
    dropped = r["dropped"]
    meta = r["metadata"]
    rows = [
        ("figure", "glusterctl", "baseline (same broker, no server logic)"),
        (
            f"registration storm, {s['agents']} agents (s)",
            f"{fmt(s['seconds'])} ({s['online']} Online)",
            f"{fmt(b['connect_seconds'])} (connect+subscribe)",
        ),
        (
            "  CPU during it, server / private broker (s)",
            f"{fmt(s['server_cpu_seconds'])} / {fmt(s['broker_cpu_seconds'])}",
            "",
        ),
        (
            f"reconnect storm, {r['reconnect']['agents']} agents (s)",
            f"{fmt(r['reconnect']['seconds'])} (CPU {fmt(r['reconnect']['cpu_percent'], '.0f')}%, "
            f"{r['reconnect']['connect_failures']} connects retried)",
            "",
        ),
        (
            f"server CPU held at {args.heartbeat:g} s heartbeat (%)",
            fmt(h["cpu_percent"]),
            f"{fmt(b['cpu_percent'])} (same message rate)",
        ),
        ("server RSS (MiB)", fmt(h["rss_mib"], ".0f"), ""),
        (
            "heartbeats persisted per second",
            fmt(h["heartbeats_per_second"]),
            f"{fmt(h['expected_per_second'])} (sent)",
        ),
        (
            f"dispatch p50 / p99, {d['tasks']} probes at {d['rate']:g}/s (ms)",
            f"{fmt(d['p50_ms'])} / {fmt(d['p99_ms'])}",
            f"{fmt(b['round_trip_p50_ms'])} / {fmt(b['round_trip_p99_ms'])} (QoS 1 round trip)",
        ),
        (
            "probes per second, 10 in flight (p50 / p99 ms)",
            f"{fmt(t['tasks_per_second'])} ({fmt(t['p50_ms'], '.0f')} / {fmt(t['p99_ms'], '.0f')})",
            "",
        ),
        ("broker messages per second", "", f"{fmt(b['messages_per_second'], '.0f')} (QoS 1 burst)"),
        *(
            row
            for i, f in enumerate(r["frozen"])
            for row in (
                (
                    f"frozen agent detected, keepalive {f['keepalive']} s{frozen_try(i, r)} (s)",
                    fmt(f["seconds"]),
                    f"{fmt(f.get('agent_will_seconds'))} (the broker sent its last-will; limit {fmt(f['limit'])})",
                ),
                (
                    "  plain client frozen at the same moment (s)",
                    "",
                    f"{fmt(f.get('broker_seconds'))} (the broker's own last-will)",
                ),
                (
                    "  silent at the freeze, agent / plain client (s)",
                    "",
                    f"{fmt(f.get('agent_silent_seconds'))} / {fmt(f.get('plain_silent_seconds'))} (last packet sent)",
                ),
            )
        ),
        (
            "metadata document as published (KiB)",
            fmt(meta["bytes"] / 1024 if meta["bytes"] else None),
            f"version {meta['version']}, received by {meta['agents']} agents",
        ),
        *(
            (
                f"metadata offers ({'whole copies' if o['whole'] else 'headers'}), {o['agents']} agents (s)",
                f"{fmt(o['seconds'])} ({fmt(o['bytes'] / 1024 if o['bytes'] is not None else None)} KiB, "
                f"CPU {fmt(o['cpu_percent'], '.0f')}%)",
                f"{fmt(o['whole_bytes'] / 1024 if o['whole_bytes'] else None)} KiB as whole copies "
                f"({o['keepers']} agents keep one)",
            )
            for o in r["offers"]
        ),
        (
            "messages dropped (mqtt / heartbeats" + (" / broker's drop warnings)" if "broker" in dropped else ")"),
            f"{fmt(dropped['mqtt_messages'], '.0f')} / {fmt(dropped['heartbeats'], '.0f')}"
            + (f" / {dropped['broker']}" if "broker" in dropped else ""),
            "0",
        ),
        (
            "server log: database is locked / timeouts",
            f"{r['log']['database is locked']} / {r['log']['broker timeouts']}",
            "0",
        ),
    ]
    width = max(len(row[0]) for row in rows)
    second = max(len(row[1]) for row in rows)
    head = f"broker {args.broker}, database {args.db}, {args.agents} agents, {os.cpu_count()} cores"
    lines = [head, ""]
    for i, (a, b_, c) in enumerate(rows):
        lines.append(f"{a:<{width}}  {b_:>{second}}  {c}")
        if i == 0:
            lines.append("-" * (width + second + 4 + len(c)))
    for run in (d, t):
        if run["failed_count"]:
            lines.append(f"failed probes: {run['failed_count']} (first: {run['failed'][0]})")
    if s["refusals"]:
        lines.append(f"refused: {s['refusals'][0]}")
    return "\n".join(lines)


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="glusterctl-fleet-"))
    pg_name = None
    db_url = None
    if args.db == "postgresql":
        pg_name, db_url = private_postgres()
    private = None
    if args.broker == "mosquitto" and args.mosquitto != "system":
        private = await asyncio.to_thread(PrivateMosquitto, tmp, args.agents, args.mosquitto == "dynsec")
    server = ServerProc(
        tmp,
        args.broker,
        db_url,
        ("127.0.0.1", private.port) if private else MOSQUITTO,
        private.admin_password if private else "",
    )
    fleet: Fleet | None = None
    try:
        await asyncio.to_thread(server.start)
        fleet = Fleet(args, server)
        if private is not None:
            fleet.broker_cpu = private.cpu_seconds
        results = await fleet.run()
        results["log"] = server_log_problems(server.log())
        if private is not None:
            results["dropped"]["broker"] = private.dropped()
        results["config"] = {
            "agents": args.agents,
            "broker": args.broker if private is None else f"mosquitto ({args.mosquitto})",
            "db": args.db,
            "heartbeat": args.heartbeat,
            "duration": args.duration,
            "cores": os.cpu_count(),
        }
        return results
    finally:
        if fleet is not None:
            await fleet.close()
        await asyncio.to_thread(server.stop)
        if args.keep_log:
            shutil.copy(server.log_path, args.keep_log)
        if private is not None:
            private.stop()
        elif server.root != "glusterctl":
            clear_retained(server.root)
        shutil.rmtree(tmp, ignore_errors=True)
        if pg_name:
            drop_postgres(pg_name)


def _note_retained(seen: list[str], topic: str, payload: bytes) -> None:
    if payload:
        seen.append(topic)


def clear_retained(root: str) -> None:
    """Clear what the run left retained on the shared Mosquitto under its private root."""

    async def run() -> None:
        # a few rounds: the broker may still be publishing last wills of agents that just went away
        for _ in range(5):
            seen: list[str] = []
            conn = Connection(functools.partial(_note_retained, seen))
            await conn.connect(MOSQUITTO[0], MOSQUITTO[1], f"fleet-clear-{uuid.uuid4().hex[:8]}", keepalive=10)
            await conn.subscribe([(f"{root}/#", 0)])
            await asyncio.sleep(1.0)
            for topic in seen:
                conn.publish(topic, b"", qos=0, retain=True)
            await asyncio.sleep(0.5)
            await conn.disconnect()
            if not seen:
                return
            await asyncio.sleep(2.0)

    import threading

    # called from inside the driver's event loop: a loop of its own in a thread
    thread = threading.Thread(target=lambda: asyncio.run(run()), name="clear-retained")
    thread.start()
    thread.join(60)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000, help="simulated agents (default 1000)")
    parser.add_argument("--broker", choices=("embedded", "mosquitto"), default="embedded")
    parser.add_argument(
        "--mosquitto",
        choices=("private", "dynsec", "system"),
        default="private",
        help="with --broker mosquitto: a Mosquitto of the run's own, configured for a large fleet and taking "
        "anonymous logins (docs/mosquitto.md; default); 'dynsec': the same with the dynamic security plugin "
        "and the server's --mqtt-dynsec, as in production (every enrolment makes the node's broker user and "
        "role); or 'system': the one at 127.0.0.1:1883 with a private topic root",
    )
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds the agents are held (default 60)")
    parser.add_argument("--heartbeat", type=float, default=10.0, help="agents' heartbeat interval (default 10)")
    parser.add_argument("--keepalive", type=int, default=10, help="agents' MQTT keepalive (default 10, as the agent)")
    parser.add_argument("--frozen-keepalive", type=int, default=4, help="keepalive of the agent that freezes")
    parser.add_argument(
        "--frozen-tries", type=int, default=1, help="agents frozen one after another, each timed (default 1)"
    )
    parser.add_argument("--tasks", type=int, default=200, help="probe tasks for each dispatch figure (default 200)")
    parser.add_argument(
        "--task-rate",
        type=float,
        default=10.0,
        help="probes started per second for the dispatch latency (default 10); the throughput keeps 10 in flight",
    )
    parser.add_argument("--storm-timeout", type=float, default=300.0)
    parser.add_argument(
        "--whole-copies",
        action="store_true",
        help="also time the agents offering their whole metadata copies (as to a restoring server)",
    )
    parser.add_argument("--profile", metavar="FILE", help="py-spy the server while held (collapsed stacks)")
    parser.add_argument("--keep-log", metavar="FILE", help="copy the server's log here")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    args = parser.parse_args(argv)
    if args.agents < 1:
        parser.error("--agents must be at least 1")
    if args.duration <= 0 or args.heartbeat <= 0:
        parser.error("--duration and --heartbeat must be positive")
    if args.frozen_keepalive < 1 or args.frozen_tries < 1:
        parser.error("--frozen-keepalive and --frozen-tries must be at least 1")
    if args.tasks < 1 or args.task_rate <= 0:
        parser.error("--tasks must be at least 1 and --task-rate positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # stopped from outside (timeout, kill): unwind as for Ctrl-C, so the server, its private
    # database and its retained topics go too
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.broker == "mosquitto" and args.mosquitto != "system" and not shutil.which("mosquitto"):
        print("no mosquitto binary: install the mosquitto package, or pass --mosquitto system", file=sys.stderr)
        return 2
    if args.broker == "mosquitto" and args.mosquitto == "dynsec" and not os.path.exists(DYNSEC_PLUGIN):
        print(f"no dynamic security plugin at {DYNSEC_PLUGIN}", file=sys.stderr)
        return 2
    if args.broker == "mosquitto" and args.mosquitto == "system":
        try:
            socket.create_connection(MOSQUITTO, timeout=2).close()
        except OSError:
            print(f"no Mosquitto at {MOSQUITTO[0]}:{MOSQUITTO[1]}", file=sys.stderr)
            return 2
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.agents * 2 + 1000))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    results = asyncio.run(amain(args))
    if args.output == "json":
        print(json.dumps(results, indent=2))
    else:
        print(table(results, args))
    ok = (
        results["storm"]["online"] >= args.agents
        and results["reconnect"]["seconds"] is not None
        and not results["dropped"]["mqtt_messages"]
        and not results["dropped"]["heartbeats"]
        and not results["dropped"].get("broker")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
