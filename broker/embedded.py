"""The embedded amqtt broker, with glusterctl's authentication and per-node topic ACL.

Clients and what they may do:

* the control service (user ``CONTROL_USER``, the server's own secret): everything;
* a node agent (user = node name, password = its cluster's join token): publish only its own
  hello/presence/heartbeat/task-status topics, subscribe only to its own task and registration
  topics and to the control presence; its last-will must be its own presence topic;
* read-only monitoring users (user and password checked by the authority): subscribe to
  presence, heartbeat and task-status topics of the clusters they hold a viewer (or better)
  role on; never publish.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from broker.messages import NODE_NAME_RE
from broker.topics import Topics, filter_matches

if TYPE_CHECKING:
    from _collections_abc import dict_items, dict_keys, dict_values

log = logging.getLogger(__name__)

CONTROL_USER = "glusterctl-control"


class BrokerError(Exception):
    """The embedded broker cannot start."""


class Authority(Protocol):
    """What the broker asks the control service (blocking calls, run in a worker thread)."""

    def control_password(self) -> str: ...

    def agent_cluster(self, node: str, token: str) -> str | None:
        """The cluster whose current join token is ``token``, or None."""

    def monitor_clusters(self, user: str, password: str) -> list[str] | None:
        """The clusters a monitoring user may watch (``ANY``: all of them), or None when refused."""


@dataclass
class Identity:
    role: str  # "control" | "agent" | "monitor"
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()


@dataclass
class AccessControl:
    authority: Authority
    topics: Topics
    identities: dict[str, Identity] = field(default_factory=dict)

    def identify(self, username: str | None, password: str | None, will_topic: str | None) -> Identity | None:
        if not username or password is None:
            return None
        if username == CONTROL_USER:
            return Identity("control") if password == self.authority.control_password() else None
        if NODE_NAME_RE.match(username):
            cluster = self.authority.agent_cluster(username, password)
            if cluster is not None:
                t = self.topics
                if will_topic is not None and will_topic != t.presence(cluster, username):
                    log.warning(
                        "agent %s (cluster %s) refused: last-will topic %s is not its presence topic",
                        username,
                        cluster,
                        will_topic,
                    )
                    return None
                return Identity(
                    "agent",
                    publish=t.agent_publish_topics(cluster, username),
                    subscribe=t.agent_subscribe_filters(cluster, username),
                )
        watched = self.authority.monitor_clusters(username, password)
        if watched:
            filters = {f for cluster in watched for f in self.topics.monitor_filters(cluster)}
            return Identity("monitor", subscribe=tuple(sorted(filters)))
        return None

    def allowed(self, client_id: str, topic: str, action: Action) -> bool:
        ident = self.identities.get(client_id)
        if ident is None:
            return False
        if ident.role == "control":
            return True
        if action == Action.PUBLISH:
            return topic in ident.publish
        if action == Action.SUBSCRIBE:
            # a filter is allowed if it is one of the allowed filters or a concrete topic under one
            return topic in ident.subscribe or (
                "+" not in topic and "#" not in topic and any(filter_matches(f, topic) for f in ident.subscribe)
            )
        return any(filter_matches(f, topic) for f in ident.subscribe)


# amqtt ships no type information: its classes are Any to mypy, hence the ignores on the subclasses.
class GlusterctlAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt is untyped
    @dataclass
    class Config:
        access: Any = None

    async def authenticate(self, *, session: Session) -> bool | None:
        access: AccessControl = self.config.access
        will = session.will_topic if session.will_flag else None
        try:
            ident = await asyncio.to_thread(access.identify, session.username, session.password, will)
        except Exception:
            log.exception("authentication of client %s failed with an error", session.client_id)
            ident = None
        if ident is None:
            log.warning("MQTT client %s (user %r) refused: bad credentials", session.client_id, session.username)
            access.identities.pop(session.client_id, None)
            return False
        access.identities[session.client_id] = ident
        return True


class GlusterctlTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]  # amqtt is untyped
    @dataclass
    class Config:
        access: Any = None

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool | None:
        if session is None or topic is None:
            return False
        access: AccessControl = self.config.access
        ok = access.allowed(session.client_id, topic, action)
        if not ok and action != Action.RECEIVE:
            log.warning("MQTT client %s (user %r) may not %s %s", session.client_id, session.username, action, topic)
        return ok


# amqtt's subscription table: topic filter -> [(session, qos)]
_Holders = list[tuple[Session, int]]


class _SnapshotDict(dict[str, _Holders]):
    """A dict whose iteration works on a copy: amqtt 0.12 awaits while iterating its subscription
    table, and a client (un)subscribing meanwhile made the broadcast fail with 'dictionary changed
    size during iteration', losing the message."""

    def _snapshot(self) -> dict[str, _Holders]:
        # not self.copy(): copying a dict whose __iter__ is overridden calls keys(), which is ours
        return dict(super().items())

    def __iter__(self) -> Iterator[str]:
        return iter(self._snapshot())

    def items(self) -> dict_items[str, _Holders]:
        return self._snapshot().items()

    def keys(self) -> dict_keys[str, _Holders]:
        return self._snapshot().keys()

    def values(self) -> dict_values[str, _Holders]:
        return self._snapshot().values()


class GlusterctlBroker(Broker):  # type: ignore[misc]  # amqtt is untyped
    """amqtt's Broker with retained-message delivery held to each client's own subscriptions and ACL.

    amqtt 0.12 sends a newly connected client the retained messages matching *any* client's
    subscription filters, bypassing the topic ACL; an agent would then read other nodes'
    retained topics. Here retained messages go only to a session that itself holds the filter
    and that the ACL lets receive the topic.
    """

    access: AccessControl

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._subscriptions = _SnapshotDict()

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        topic_filter, qos = subscription
        holders = self._subscriptions.get(topic_filter, [])
        if not any(held.client_id == session.client_id for held, _ in holders):
            return
        handler = self._get_handler(session)
        if handler is None:
            return
        sends = [
            asyncio.ensure_future(handler.mqtt_publish(msg.topic, msg.data, min(qos, msg.qos or qos), retain=True))
            for topic, msg in list(self._retained_messages.items())
            if filter_matches(topic_filter, topic) and self.access.allowed(session.client_id, topic, Action.RECEIVE)
        ]
        if sends:
            await asyncio.wait(sends)


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise BrokerError(
                    f"MQTT port {port} on {host} is already in use: choose another with --mqtt HOST:PORT, "
                    f"or use the broker that runs there with --mqtt-url mqtt://USER:PASS@HOST:{port}"
                ) from None
            raise BrokerError(f"cannot listen for MQTT on {host}:{port}: {exc.strerror}") from None


async def start_broker(host: str, port: int, authority: Authority, topics: Topics) -> Broker:
    check_port_free(host, port)
    access = AccessControl(authority, topics)
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 0}},
        "plugins": {
            f"{__name__}.GlusterctlAuthPlugin": {"access": access},
            f"{__name__}.GlusterctlTopicPlugin": {"access": access},
        },
    }
    broker = GlusterctlBroker(config)
    broker.access = access
    try:
        await broker.start()
    except Exception as exc:
        raise BrokerError(f"the embedded MQTT broker could not start on {host}:{port}: {exc}") from exc
    log.info("embedded MQTT broker listening on %s:%d", host, port)
    return broker
