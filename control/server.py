"""``glusterctl server``: database, embedded broker (or an external one), MQTT bridge, REST API."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import os
import secrets
import signal
import time
from collections.abc import Callable

import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.dynsec import DynsecError, control_username
from broker.embedded import BrokerError, TlsListener, check_port_free
from broker.messages import node_key
from broker.process import BrokerProcess
from broker.topics import Topics
from broker.url import MqttUrl, parse_host_port
from control import tls
from control.api.app import create_app
from control.bridge import Bridge
from control.broker_accounts import DynsecAccounts, EmbeddedAccounts
from control.errors import Unauthorized
from control.services import authz, backup, clusters, enrolment, metadata, metrics, nodes, rebalance, users
from control.services.audit import AuditPruner
from control.services.devices import DeviceService
from control.services.eventfeed import EventFeed, EventListener
from control.services.leader import DataDirLock, Leadership, LeadershipError, postgres_connector
from control.services.monitoring import Monitor
from control.services.reconciler import Reconciler
from control.services.restore import AgentRestore, RestoreError, check_empty
from control.services.tasks import TaskEngine
from control.services.volumes import VolumeService
from control.settings import ServerSettings
from control.store.db import DatabaseError, first, open_database, redact_db_url
from control.store.models import Cluster, Node, User, database_proxy

log = logging.getLogger(__name__)

BROKER_CONNECT_TIMEOUT = 15.0


class StartupError(Exception):
    """The server cannot start; the message says why and what to do."""


def load_secret(data_dir: str) -> str:
    """The control service's own MQTT secret, created once (mode 0600) in the data dir."""
    path = os.path.join(data_dir, "control.secret")
    if os.path.exists(path):
        with open(path) as fh:
            return fh.read().strip()
    secret = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    return secret


class StoreAuthority:
    """Answers the embedded broker's questions from the database."""

    def __init__(self, secret: str, restore: AgentRestore | None = None) -> None:
        self._secret = secret
        self._restore = restore

    def control_password(self) -> str:
        return self._secret

    def enrolment_ok(self, cluster: str, secret: str) -> bool:
        row = Cluster.get_or_none(Cluster.name == cluster)
        return row is not None and hmac.compare_digest(row.join_secret.encode(), secret.encode())

    def node_ok(self, cluster: str, node: str, secret: str) -> bool:
        row = first(
            Node.select(Node.credential_hash).join(Cluster).where((Cluster.name == cluster) & (Node.name == node))
        )
        if row is None and self._restore is not None:
            return self._restore.provisional_login(cluster, node, secret)
        return (
            row is not None
            and bool(row.credential_hash)
            and hmac.compare_digest(str(row.credential_hash), node_key(secret))
        )

    def monitor_clusters(self, user: str, password: str) -> list[str] | None:
        """The clusters a monitoring user may watch (viewer or better on the cluster); None: refused."""
        try:
            account = users.login_check(user, password)
        except Unauthorized:
            return None
        clusters = authz.Scope.of(account).monitor_clusters()
        if not clusters:
            log.warning("MQTT monitor %s refused: no viewer (or better) role on any cluster", user)
            return None
        return clusters

    def monitor_clusters_now(self, user: str) -> list[str]:
        account = User.get_or_none(User.name == user)
        return authz.Scope.of(account).monitor_clusters() if account is not None else []


def https_certificate(settings: ServerSettings, hosts: list[str]) -> tls.ServerCert | None:
    """The HTTPS certificate: the operator's (--tls-cert/--tls-key), the server's own CA's, or None (plain HTTP)."""
    if not settings.https():
        return None
    try:
        if settings.tls_cert and settings.tls_key:
            cert = tls.ServerCert(settings.tls_cert, settings.tls_key, None)
        else:
            cert = tls.issue_server_cert(os.path.join(settings.data_dir, "tls"), hosts)
        cert.server_context()  # refuse a key that does not match its certificate now, not at the first request
    except tls.TlsError as exc:
        raise StartupError(str(exc)) from None
    if cert.ca:
        log.info(
            "HTTPS with the server's own CA %s, SHA-256 fingerprint %s: give clients this file "
            "(glusterctl login --ca %s)",
            cert.ca,
            tls.fingerprint(cert.ca),
            cert.ca,
        )
    return cert


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def mqtt_tls_listener(settings: ServerSettings, hosts: list[str]) -> TlsListener | None:
    """The embedded broker's MQTT-over-TLS listener, with a certificate from the server's own CA."""
    if not settings.mqtts:
        return None
    host, port = parse_host_port(settings.mqtts, 8883, "--mqtts")
    try:
        cert = tls.issue_server_cert(os.path.join(settings.data_dir, "tls"), hosts)
    except tls.TlsError as exc:
        raise StartupError(str(exc)) from None
    assert cert.ca is not None
    log.info(
        "MQTT over TLS on %s:%d with the server's own CA %s, SHA-256 fingerprint %s: agents use --mqtt-ca %s",
        host,
        port,
        cert.ca,
        tls.fingerprint(cert.ca),
        cert.ca,
    )
    return TlsListener(host, port, cert.cert, cert.key, cert.ca)


def signing_key_for(settings: ServerSettings) -> Ed25519PrivateKey:
    """The metadata signing key: the data dir's, or the lost server's (--restore-key), installed in the data dir."""
    if not settings.restore_key:
        return metadata.load_or_create_key(settings.data_dir)
    key = metadata.load_key(settings.restore_key)
    path = os.path.join(settings.data_dir, metadata.KEY_FILE)
    if not os.path.exists(path):
        metadata.save_key(path, key)
    elif metadata.public_key_text(metadata.load_key(path)) != metadata.public_key_text(key):
        raise metadata.MetadataError(f"{path} holds another key than --restore-key {settings.restore_key}")
    return key


async def restore_from_agents(
    settings: ServerSettings, restore: AgentRestore, bridge: Bridge, accounts: DynsecAccounts | None
) -> None:
    """Collect the agents' copies, rebuild from the newest, then let the agents register again."""
    log.info("restore: waiting for the agents' metadata copies (up to %.0fs)", settings.restore_timeout)
    bridge.announce()
    try:
        await asyncio.to_thread(restore.wait, settings.restore_settle, settings.restore_timeout)
        report = await asyncio.to_thread(restore.finish)
    except RestoreError as exc:
        raise StartupError(str(exc)) from None
    bridge.restore = None
    if accounts is not None:  # Mosquitto checked each node's own password: keep the restored nodes' users
        try:
            await asyncio.to_thread(accounts.release_nodes)
        except DynsecError as exc:
            log.warning("restore: the broker's node users are reconciled later (every few seconds): %s", exc)
    for cluster, node in await asyncio.to_thread(restore.impostors):
        log.warning(
            "restore: cluster %s node %s logged in with a credential that is not its own: closed", cluster, node
        )
        enrolment.accounts().node_removed(cluster, node)
    for line in report.lines:
        print(f"restore: {line}", flush=True)
    bridge.announce()  # every agent says hello again, and is now known


async def serve(settings: ServerSettings, ready: Callable[[Bridge], object] | None = None) -> None:
    """Run until SIGINT/SIGTERM. ``ready()`` is called once the DB, broker and HTTP are up."""
    os.makedirs(settings.data_dir, exist_ok=True)
    dir_lock = DataDirLock(settings.data_dir)
    postgres = bool(settings.db) and not str(settings.db).startswith("sqlite")
    try:
        dir_lock.acquire(
            "give each server its own --data-dir"
            if postgres
            else "one server per SQLite database; several servers need PostgreSQL (--db) and an external "
            "broker (--mqtt-url), see docs/ha.md"
        )
    except LeadershipError as exc:
        raise StartupError(str(exc)) from None
    try:
        await _serve(settings, ready)
    finally:
        dir_lock.release()


EXCLUSIVE_WAIT_SECONDS = 5.0  # a server with the embedded broker waits this long for a killed one's lock


def elect(settings: ServerSettings) -> Leadership:
    """Who leads: PostgreSQL with an external broker elects one of several servers; otherwise this one.

    With the embedded broker on PostgreSQL this server must be the only one (agents reach only its
    broker): it holds the lock all along, and is refused if another server holds it.
    """
    connect = postgres_connector(database_proxy)
    leadership = Leadership(connect, settings.mqtt_root, settings.leader_interval)
    if connect is None:
        return leadership
    deadline = time.monotonic() + (0 if settings.mqtt_url else EXCLUSIVE_WAIT_SECONDS)
    try:
        while not leadership.try_once() and time.monotonic() < deadline:
            time.sleep(0.5)
    except Exception as exc:
        raise StartupError(f"cannot take part in the leader election: {exc}") from None
    leads = leadership.is_leader()
    if not settings.mqtt_url and not leads:
        leadership.stop()
        raise StartupError(
            "another glusterctl server already runs on this database: several servers need an external broker "
            "(--mqtt-url), each with the same --mqtt-root (see docs/ha.md)"
        )
    log.info(
        "leader election on PostgreSQL: %s",
        "this server leads"
        if leads
        else "another server leads; this one serves REST and events and takes over if it goes",
    )
    return leadership


async def _serve(settings: ServerSettings, ready: Callable[[Bridge], object] | None) -> None:
    try:
        open_database(settings.db, settings.data_dir)
    except DatabaseError as exc:
        raise StartupError(str(exc)) from None
    try:
        signing_key = signing_key_for(settings)
        if settings.restore_from_agents:
            check_empty()
        metadata.check_shared_key(signing_key)
    except (metadata.MetadataError, RestoreError) as exc:
        raise StartupError(str(exc)) from None
    restore = AgentRestore(metadata.public_key_text(signing_key)) if settings.restore_from_agents else None
    backup.use_data_dir(settings.data_dir)
    clusters.ensure_default()
    leadership = await asyncio.to_thread(elect, settings)
    users.set_token_ttl(settings.token_ttl_days * 86400)
    topics = Topics(settings.mqtt_root)
    http_host, http_port = parse_host_port(settings.http, 8080, "--http")
    try:
        check_port_free(http_host, http_port)
    except BrokerError:
        raise StartupError(
            f"HTTP port {http_port} on {http_host} is already in use: choose another with --http HOST:PORT"
        ) from None

    own_cert_hosts = [http_host] + ([parse_host_port(settings.mqtts, 8883, "--mqtts")[0]] if settings.mqtts else [])
    server_cert = https_certificate(settings, own_cert_hosts)

    embedded = None
    accounts: DynsecAccounts | None = None
    if settings.mqtt_url:
        url = MqttUrl.parse(settings.mqtt_url, ca=settings.mqtt_ca)
        if settings.mqtt_dynsec:
            # the URL's user is the dynsec admin: it makes the control user, which the bridge logs in as
            accounts = DynsecAccounts(
                url, topics, load_secret(settings.data_dir), hold_nodes=settings.restore_from_agents
            )
            accounts.is_leader = leadership.is_leader  # external broker: elected
            try:
                await asyncio.to_thread(accounts.start)
            except DynsecError as exc:
                raise StartupError(
                    f"cannot manage Mosquitto's dynamic security plugin at {url.redacted()}: {exc} "
                    "(see docs/mosquitto.md; without the plugin, drop --mqtt-dynsec)"
                ) from None
            enrolment.use_accounts(accounts)
            url = dataclasses.replace(url, username=accounts.control_username, password=accounts.control_password)
    else:
        plain = None if settings.mqtt == "off" else parse_host_port(settings.mqtt, 1883, "--mqtt")
        listener = mqtt_tls_listener(settings, own_cert_hosts)
        secret = load_secret(settings.data_dir)
        authority = StoreAuthority(secret, restore)
        embedded = BrokerProcess(authority, topics, plain[0] if plain else "", plain[1] if plain else None, listener)
        embedded.on_restart.append(lambda: metrics.COUNTS.add("embedded_broker_restarts"))
        try:
            await asyncio.to_thread(embedded.start)
        except BrokerError as exc:
            raise StartupError(str(exc)) from None
        enrolment.use_accounts(EmbeddedAccounts(embedded, topics))
        # node certificates of the server's own CA enrol over its TLS listener (docs: "Node certificates")
        enrolment.use_node_ca(listener.cafile if listener is not None else None)
        if plain:  # the bridge takes the plain listener when there is one (loopback: nothing to protect)
            url = MqttUrl(_connect_host(plain[0]), plain[1], control_username(topics), secret)
        else:
            assert listener is not None
            ca = os.path.join(settings.data_dir, "tls", "ca.pem")
            url = MqttUrl(_connect_host(listener.host), listener.port, control_username(topics), secret, True, ca)

    # several servers only with an external broker; with the embedded one the lock only keeps others out
    elected = leadership.elected and bool(settings.mqtt_url)
    is_leader: Callable[[], bool] = leadership.is_leader if elected else (lambda: True)
    feed = EventFeed(settings.event_backlog, is_leader)
    feed.start()
    event_listener = EventListener(postgres_connector(database_proxy), feed.hub.notify)
    event_listener.start()
    engine = TaskEngine(topics)
    volumes, devices = VolumeService(engine, settings.port_range()), DeviceService(engine)
    bridge = Bridge(url, topics, engine)
    bridge.is_leader, bridge.watch_presence = is_leader, elected
    engine.publisher = bridge
    monitor = Monitor(topics, bridge)
    bridge.on_connected.append(monitor.republish)
    publisher = metadata.MetadataPublisher(topics, bridge, signing_key, settings.metadata_copies, engine)
    bridge.metadata, bridge.restore = publisher, restore
    bridge.start()
    reconciler = Reconciler(engine, volumes, settings.deadlines(), settings.reconcile_interval)
    reconciler.after_pass.append(monitor.evaluate_all)
    reconciler.after_pass.append(AuditPruner(settings.audit_keep_days).run)
    if elected:
        reconciler.after_pass.append(feed.prune)  # streams on other servers record events the leader never counts

    def leader_schedule(fn: Callable[[], object]) -> bool:
        """Periodic work runs on the leader only; on the others a round is a no-op."""
        return bridge.call_soon(fn) if is_leader() else True

    def gained() -> None:
        rebalance.forget_reports()  # another server may have followed the runs meanwhile
        nodes.reset_beats()  # and stored heartbeats: what this one kept from before is stale
        bridge.take_over()
        publisher.resume()
        if not bridge.call_soon(reconciler.run_once, timeout=0):  # what the previous leader left half-done, now
            log.warning("taking over: the worker is busy; the reconciler's next pass runs as scheduled")

    def lost() -> None:
        bridge.step_down()
        publisher.pause()

    if elected:
        leadership.on_gain.append(gained)
        leadership.on_lose.append(lost)
        leadership.eligible = bridge.connected.is_set
    try:
        if not await asyncio.to_thread(bridge.wait_connected, BROKER_CONNECT_TIMEOUT):
            why = bridge.refused or (url.tls and await asyncio.to_thread(url.tls_refusal)) or "no answer"
            raise StartupError(f"cannot connect to the MQTT broker {url.redacted()} ({why}): check --mqtt-url")
        if restore is not None:
            if not is_leader():
                raise StartupError("another server leads this database: stop every other server before a restore")
            await restore_from_agents(settings, restore, bridge, accounts)
        publisher.start(paused=not is_leader())
        reconciler.start(leader_schedule)
        monitor.start(is_leader)
        leadership.start()

        app = create_app(engine, bridge, volumes, devices, feed.hub, metrics_token=settings.metrics_token)
        config = uvicorn.Config(
            app,
            host=http_host,
            port=http_port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=3,
            # longer than clients keep idle connections (httpx: 5 s), so a client never sends on a connection
            # the server is closing at that moment (a reset request under load)
            timeout_keep_alive=30,
            ssl_certfile=server_cert.cert if server_cert else None,
            ssl_keyfile=server_cert.key if server_cert else None,
        )
        server = uvicorn.Server(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                serving.result()
                raise StartupError(f"the HTTP server could not start on {http_host}:{http_port}")
            await asyncio.sleep(0.05)
        log.info(
            "glusterctl server ready: %s://%s:%d, MQTT %s, database %s",
            "https" if server_cert else "http",
            http_host,
            http_port,
            url.redacted(),
            redact_db_url(settings.db) if settings.db else os.path.join(settings.data_dir, "glusterctl.db"),
        )
        if ready:
            ready(bridge)
        await serving
    finally:
        log.info("shutting down")
        await asyncio.to_thread(reconciler.stop)
        await asyncio.to_thread(monitor.stop)
        await asyncio.to_thread(publisher.stop)
        await asyncio.to_thread(bridge.stop)
        await asyncio.to_thread(leadership.stop)  # after the bridge: another server takes over a quiet broker link
        await asyncio.to_thread(event_listener.stop)
        await asyncio.to_thread(feed.stop)
        enrolment.use_accounts(enrolment.NoAccounts())
        if accounts is not None:
            await asyncio.to_thread(accounts.stop)
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
