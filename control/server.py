"""``glusterctl server``: database, embedded broker (or an external one), MQTT bridge, REST API."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import secrets
import signal
from collections.abc import Callable

import uvicorn

from broker.dynsec import DynsecError, control_username
from broker.embedded import BrokerError, check_port_free, start_broker
from broker.messages import node_key
from broker.topics import Topics
from broker.url import MqttUrl, parse_host_port
from control.api.app import create_app
from control.bridge import Bridge
from control.broker_accounts import DynsecAccounts, EmbeddedAccounts
from control.errors import Unauthorized
from control.services import authz, clusters, enrolment, users
from control.services.devices import DeviceService
from control.services.eventfeed import EventFeed
from control.services.tasks import TaskEngine
from control.services.volumes import VolumeService
from control.settings import ServerSettings
from control.store.db import DatabaseError, first, open_database
from control.store.models import Cluster, Node

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

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def control_password(self) -> str:
        return self._secret

    def enrolment_ok(self, cluster: str, secret: str) -> bool:
        row = Cluster.get_or_none(Cluster.name == cluster)
        return row is not None and hmac.compare_digest(row.join_secret.encode(), secret.encode())

    def node_ok(self, cluster: str, node: str, secret: str) -> bool:
        row = first(
            Node.select(Node.credential_hash).join(Cluster).where((Cluster.name == cluster) & (Node.name == node))
        )
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


async def serve(settings: ServerSettings, ready: Callable[[Bridge], object] | None = None) -> None:
    """Run until SIGINT/SIGTERM. ``ready()`` is called once the DB, broker and HTTP are up."""
    os.makedirs(settings.data_dir, exist_ok=True)
    try:
        open_database(settings.db, settings.data_dir)
    except DatabaseError as exc:
        raise StartupError(str(exc)) from None
    clusters.ensure_default()
    topics = Topics(settings.mqtt_root)
    http_host, http_port = parse_host_port(settings.http, 8080, "--http")
    try:
        check_port_free(http_host, http_port)
    except BrokerError:
        raise StartupError(
            f"HTTP port {http_port} on {http_host} is already in use: choose another with --http HOST:PORT"
        ) from None

    embedded = None
    accounts: DynsecAccounts | None = None
    if settings.mqtt_url:
        url = MqttUrl.parse(settings.mqtt_url)
        if settings.mqtt_dynsec:
            # the URL's user is the dynsec admin: it makes the control user, which the bridge logs in as
            accounts = DynsecAccounts(url, topics, load_secret(settings.data_dir))
            try:
                await asyncio.to_thread(accounts.start)
            except DynsecError as exc:
                raise StartupError(
                    f"cannot manage Mosquitto's dynamic security plugin at {url.redacted()}: {exc} "
                    "(see docs/mosquitto.md; without the plugin, drop --mqtt-dynsec)"
                ) from None
            enrolment.use_accounts(accounts)
            url = MqttUrl(url.host, url.port, accounts.control_username, accounts.control_password)
    else:
        host, port = parse_host_port(settings.mqtt, 1883, "--mqtt")
        secret = load_secret(settings.data_dir)
        try:
            embedded = await start_broker(host, port, StoreAuthority(secret), topics)
        except BrokerError as exc:
            raise StartupError(str(exc)) from None
        enrolment.use_accounts(EmbeddedAccounts(embedded, asyncio.get_running_loop(), topics))
        connect_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        url = MqttUrl(connect_host, port, control_username(topics), secret)

    feed = EventFeed(settings.event_backlog)
    feed.start()
    engine = TaskEngine(topics)
    volumes, devices = VolumeService(engine, settings.port_range()), DeviceService(engine)
    bridge = Bridge(url, topics, engine)
    engine.publisher = bridge
    bridge.start()
    try:
        if not await asyncio.to_thread(bridge.wait_connected, BROKER_CONNECT_TIMEOUT):
            why = bridge.refused or "no answer"
            raise StartupError(f"cannot connect to the MQTT broker {url.redacted()} ({why}): check --mqtt-url")

        app = create_app(engine, bridge, volumes, devices, feed.hub, metrics_token=settings.metrics_token)
        config = uvicorn.Config(
            app,
            host=http_host,
            port=http_port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=3,
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
            "glusterctl server ready: http://%s:%d, MQTT %s, database %s",
            http_host,
            http_port,
            url.redacted(),
            settings.db or os.path.join(settings.data_dir, "glusterctl.db"),
        )
        if ready:
            ready(bridge)
        await serving
    finally:
        log.info("shutting down")
        await asyncio.to_thread(bridge.stop)
        await asyncio.to_thread(feed.stop)
        enrolment.use_accounts(enrolment.NoAccounts())
        if accounts is not None:
            await asyncio.to_thread(accounts.stop)
        if embedded is not None:
            await embedded.shutdown()
