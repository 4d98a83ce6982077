"""The embedded amqtt broker, with glusterctl's authentication and per-identity topic ACL.

Identities (user names as in broker/dynsec.py, so that both brokers agree; ROOT is the topic root):

* ``ROOT.control`` (the control service, password: its own secret): everything;
* ``ROOT.enrol.C`` (password: the secret part of cluster C's join token): publish hellos of C's
  nodes, read C's registrations and the control presence; no last-will;
* ``ROOT.node.C.N`` (password: node N's own secret, checked against the verifier stored at
  enrolment): publish only N's hello/presence/heartbeat/task-status, read only N's tasks and
  registration and the control presence; its last-will, if any, must be its own presence;
* monitors (a glusterctl user name, or ``ROOT.user.NAME``, with that user's password): read the
  presence, heartbeat and task-status topics and the monitoring topics (summary, volume status,
  alerts) of the clusters the user holds a viewer (or better) role on; never publish; no last-will.

A login is checked before amqtt touches any session: a refused login never disturbs the live
session that uses the same client id, and an accepted one may take over a client id only from
the same user name.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.events import BrokerEvents
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.constants import QOS_0, QOS_1, QOS_2
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session
from amqtt.utils import gen_client_id
from transitions import MachineError

from broker.dynsec import parse_username
from broker.messages import node_named_by
from broker.topics import Topics, filter_matches

if TYPE_CHECKING:
    from _collections_abc import dict_items, dict_keys, dict_values

log = logging.getLogger(__name__)


class BrokerError(Exception):
    """The embedded broker cannot start."""


class Authority(Protocol):
    """What the broker asks the control service (blocking calls, run in a worker thread)."""

    def control_password(self) -> str: ...

    def enrolment_ok(self, cluster: str, secret: str) -> bool:
        """True if ``secret`` is the secret part of ``cluster``'s current join token."""

    def node_ok(self, cluster: str, node: str, secret: str) -> bool:
        """True if ``node`` of ``cluster`` is enrolled with the node secret ``secret``."""

    def monitor_clusters(self, user: str, password: str) -> list[str] | None:
        """The clusters a monitoring user may watch (``ANY``: all of them), or None when refused."""

    def monitor_clusters_now(self, user: str) -> list[str]:
        """The clusters ``user`` may watch as its grants stand now (empty once it has none or is deleted)."""


@dataclass
class Identity:
    role: str  # "control" | "enrol" | "node" | "monitor"
    username: str = ""
    publish: tuple[str, ...] = ()  # topic filters
    subscribe: tuple[str, ...] = ()
    watched: tuple[str, ...] = ()  # a monitor's clusters when it logged in


@dataclass
class AccessControl:
    authority: Authority
    topics: Topics
    identities: dict[str, Identity] = field(default_factory=dict)

    def identify(
        self,
        username: str | None,
        password: str | None,
        will_topic: str | None,
        peer: tuple[str, str] | None = None,
    ) -> Identity | None:
        """Who this login is, or None when refused.

        ``peer`` is the (cluster, node) of a verified TLS client certificate issued by the control
        service's CA: the enrolment login of that cluster then needs no join token, and may enrol
        that one node only (the control service checks the certificate again in the hello).
        """
        if not username:
            return None
        t = self.topics
        parsed = parse_username(t, username)
        kind, cluster, node = parsed if parsed is not None else ("user", username, None)
        if kind == "enrol" and peer is not None and peer[0] == cluster and not password and will_topic is None:
            return Identity(
                "enrol",
                username,
                publish=(t.hello(cluster, peer[1]),),
                subscribe=(t.registration(cluster, peer[1]), t.control_presence()),
            )
        if password is None:
            return None
        if kind == "control":
            return Identity("control", username) if password == self.authority.control_password() else None
        if kind == "node" and cluster and node:
            if not self.authority.node_ok(cluster, node, password):
                return None
            if will_topic is not None and will_topic != t.presence(cluster, node):
                log.warning(
                    "node %s of cluster %s refused: last-will topic %s is not its presence topic",
                    node,
                    cluster,
                    will_topic,
                )
                return None
            return Identity(
                "node",
                username,
                publish=t.agent_publish_topics(cluster, node),
                subscribe=t.agent_subscribe_filters(cluster, node),
            )
        if kind == "enrol" and cluster:
            if not self.authority.enrolment_ok(cluster, password):
                return None
            if will_topic is not None:
                log.warning("enrolment login of cluster %s refused: it may not have a last-will", cluster)
                return None
            return Identity(
                "enrol",
                username,
                publish=(t.cluster_hellos_filter(cluster),),
                subscribe=(t.cluster_registrations_filter(cluster), t.control_presence()),
            )
        if kind == "user" and cluster and will_topic is None:
            # a glusterctl user with viewer (or better) on some clusters reads those clusters' node and monitoring topics
            watched = self.authority.monitor_clusters(cluster, password)
            if watched:
                filters = {f for name in watched for f in t.monitor_filters(name)}
                return Identity("monitor", username, subscribe=tuple(sorted(filters)), watched=tuple(sorted(watched)))
        return None

    def allowed(self, client_id: str, topic: str, action: Action) -> bool:
        ident = self.identities.get(client_id)
        if ident is None:
            return False
        if ident.role == "control":
            return True
        if action == Action.PUBLISH:
            return "+" not in topic and "#" not in topic and any(filter_matches(f, topic) for f in ident.publish)
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
            peer = getattr(session, "glusterctl_peer", None)
            ident = await asyncio.to_thread(access.identify, session.username, session.password, will, peer)
        except Exception:
            log.exception("authentication of client %s failed with an error", session.client_id)
            ident = None
        if ident is None:
            # nothing else changes: the live session that may use this client id keeps its identity
            log.warning("MQTT client %s (user %r) refused: bad credentials", session.client_id, session.username)
            return False
        session.glusterctl_identity = ident
        return True


class SessionStates:
    """amqtt's session state machine (new, connected, disconnected), without a transitions.Machine each.

    amqtt 0.12 builds a transitions.Machine (its states, events, conditions and callbacks) for every
    session, and it makes a session for every CONNECT it reads: about a sixth of the broker's time in
    a registration storm. The same states and triggers, the same callbacks on entering a state, and
    the same MachineError for ``connect`` on a connected session, which the broker relies on.
    """

    __slots__ = ("_session", "state")

    def __init__(self, session: Session) -> None:
        self._session = session
        self.state = "new"

    def is_new(self) -> bool:
        return self.state == "new"

    def is_connected(self) -> bool:
        return self.state == "connected"

    def is_disconnected(self) -> bool:
        return self.state == "disconnected"

    def connect(self) -> bool:
        if self.state == "connected":
            raise MachineError("Can't trigger event connect from state connected!")
        self.state = "connected"
        self._session._on_enter_connected()
        return True

    def disconnect(self) -> bool:
        self.state = "disconnected"  # from any state
        self._session._on_enter_disconnected()
        return True


AMQTT_SESSION_STATES = Session._init_states  # amqtt's own: tests hold SessionStates to it


def _light_session_states(session: Session) -> None:
    session.transitions = SessionStates(session)


# amqtt's subscription table: topic filter -> [(session, qos)]
_Holders = list[tuple[Session, int]]


class _Node:
    __slots__ = ("children", "key")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.key: str | None = None  # the filter or topic that ends here


class TopicTrie:
    """Topic filters or topic names by level, to find matches without looking at every one.

    ``filters_matching(topic)``: of the filters held, those that match a topic name;
    ``topics_matching(filter)``: of the topic names held, those a filter matches. Both follow
    MQTT 3.1.1 (4.7): ``+`` is one level, ``#`` the rest including the parent level, and wildcards
    in the first level do not match topics that start with ``$``.
    """

    def __init__(self) -> None:
        self.root = _Node()

    def add(self, key: str) -> None:
        node = self.root
        for level in key.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        node.key = key

    def remove(self, key: str) -> None:
        path = [self.root]
        levels = key.split("/")
        for level in levels:
            child = path[-1].children.get(level)
            if child is None:
                return
            path.append(child)
        path[-1].key = None
        for depth in range(len(levels), 0, -1):  # prune the branch that holds nothing any more
            node = path[depth]
            if node.key is not None or node.children:
                break
            del path[depth - 1].children[levels[depth - 1]]

    def filters_matching(self, topic: str) -> list[str]:
        levels = topic.split("/")
        dollar = topic.startswith("$")
        found: list[str] = []
        stack = [(self.root, 0)]
        while stack:
            node, i = stack.pop()
            wild = not (dollar and i == 0)
            rest = node.children.get("#")
            if rest is not None and rest.key is not None and wild:
                found.append(rest.key)
            if i == len(levels):
                if node.key is not None:
                    found.append(node.key)
                continue
            child = node.children.get(levels[i])
            if child is not None:
                stack.append((child, i + 1))
            plus = node.children.get("+") if wild else None
            if plus is not None:
                stack.append((plus, i + 1))
        return found

    def topics_matching(self, topic_filter: str) -> list[str]:
        levels = topic_filter.split("/")
        found: list[str] = []
        stack = [(self.root, 0)]
        while stack:
            node, i = stack.pop()
            if i == len(levels):
                if node.key is not None:
                    found.append(node.key)
                continue
            level = levels[i]
            if level == "#":
                if i > 0 and node.key is not None:
                    found.append(node.key)  # "a/#" matches "a"
                below = [c for name, c in node.children.items() if i > 0 or not name.startswith("$")]
                while below:
                    sub = below.pop()
                    if sub.key is not None:
                        found.append(sub.key)
                    below.extend(sub.children.values())
            elif level == "+":
                for name, child in node.children.items():
                    if i > 0 or not name.startswith("$"):
                        stack.append((child, i + 1))
            else:
                exact = node.children.get(level)
                if exact is not None:
                    stack.append((exact, i + 1))
        return found


class _Indexed(dict[str, Any]):
    """A dict whose keys (topics or topic filters) are also kept in a TopicTrie."""

    def __init__(self) -> None:
        super().__init__()
        self.trie = TopicTrie()

    def __setitem__(self, key: str, value: Any) -> None:
        if not dict.__contains__(self, key):
            self.trie.add(key)
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.trie.remove(key)

    def pop(self, key: str, *default: Any) -> Any:
        if dict.__contains__(self, key):
            self.trie.remove(key)
        return super().pop(key, *default)

    def clear(self) -> None:
        super().clear()
        self.trie = TopicTrie()


class _SubscriptionTable(_Indexed):
    """amqtt's subscription table (topic filter -> holders), with the filters in a TopicTrie.

    Iterating works on a copy: amqtt 0.12 awaits while iterating its subscription table, and a
    client (un)subscribing meanwhile made it fail with 'dictionary changed size during iteration'.
    """

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

    def __repr__(self) -> str:
        # amqtt 0.12 logs repr(subscriptions) at debug level after every SUBSCRIBE, building the string
        # even when debug is off: every holder of every filter each time (30 s of 3,000 connects)
        return f"<{dict.__len__(self)} topic filters>"


class _RetainedTable(_Indexed):
    """amqtt's retained messages (topic -> message), with the topics in a TopicTrie."""


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
        self._subscriptions = _SubscriptionTable()
        self._retained_messages = _RetainedTable()
        self._held: dict[str, set[str]] = {}  # client id -> the filters it subscribed to
        self._by_user: dict[str, set[str]] = {}  # user name -> client ids it logged in with (some may be gone)

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        """Read the CONNECT and check the login before any existing session is touched.

        amqtt 0.12 deletes the subscriptions of a clean-session client id, and takes over a
        connected one, before it looks at the credentials: a wrong password with a live
        client's id would cut that client off.
        """
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(reader, writer, self.plugins_manager)
        except (AMQTTError, MQTTError, NoDataError) as exc:
            log.warning("MQTT connection from %s:%s refused: unreadable CONNECT (%s)", remote_address, remote_port, exc)
            if isinstance(exc, MQTTError):
                await writer.close()
            raise AMQTTError(exc) from exc
        session.glusterctl_peer = _peer_node(writer)
        refusal = await self._check_login(session)
        if refusal is not None:
            log.warning(
                "MQTT client %s (user %r) from %s refused: %s",
                session.client_id,
                session.username,
                remote_address,
                refusal,
            )
            with contextlib.suppress(OSError):  # the client may have gone meanwhile (it gave up waiting)
                await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
                await writer.close()
            raise AMQTTError(f"client {session.client_id} refused: {refusal}")
        ident: Identity = session.glusterctl_identity
        if session.clean_session:
            if session.client_id:
                await self._delete_session(session.client_id)
            else:
                session.client_id = gen_client_id()
            session.parent = 0
        elif session.client_id in self._sessions:
            existing, _ = self._sessions[session.client_id]
            for name in ("will_flag", "will_message", "will_topic", "will_qos", "keep_alive", "username", "password"):
                setattr(existing, name, getattr(session, name))
            session = existing
            session.parent = 1
        else:
            session.parent = 0
        session.glusterctl_authenticated = True
        self.access.identities[session.client_id] = ident
        self._by_user.setdefault(session.username or "", set()).add(session.client_id)
        _enforce_keepalive(handler, session)
        return handler, session

    async def _check_login(self, session: Session) -> str | None:
        """Why this CONNECT is refused, or None; on success the identity is on the session."""
        session.glusterctl_identity = None
        if not await Broker._authenticate(self, session, None):
            return "bad credentials"
        live = self._sessions.get(session.client_id) if session.client_id else None
        if (
            live is not None
            and live[0].transitions.is_connected()
            and live[0].username != session.username
            and not self._enrolled_takeover(live[0].username, session.username, session.client_id)
        ):
            return "its client id is in use by another user"
        return None

    def _enrolled_takeover(self, live_user: str | None, new_user: str | None, client_id: str) -> bool:
        """A node's own login may take over its cluster's enrolment login on the node's own agent
        client id (``glusterctl-agent-NODE-...``, as the agent forms it): the agent that just enrolled
        reconnects as the node with the same client id, and under load the broker may not have seen
        the enrolment session's DISCONNECT yet (the agent would be refused, and exit)."""
        topics = self.access.topics
        live = parse_username(topics, live_user or "")
        new = parse_username(topics, new_user or "")
        if live is None or new is None or live[0] != "enrol" or new[0] != "node" or live[1] != new[1]:
            return False
        own = f"glusterctl-agent-{new[2]}-"[:64]
        return client_id[: len(own)] == own

    async def _authenticate(self, session: Session, _: Any) -> bool:
        # the login was checked in _initialize_client_session
        return bool(getattr(session, "glusterctl_authenticated", False))

    async def _handle_client_session(
        self,
        reader: Any,
        writer: Any,
        client_session: Session,
        handler: BrokerProtocolHandler,
        server: Any,
        listener_name: str,
    ) -> None:
        """amqtt 0.12's session lifecycle, sending retained messages for the session's own filters only.

        amqtt called the retained-message delivery for every filter of every client at each connect
        (our override returns at once for the others, but thousands of calls per connect made a
        registration storm quadratic). Everything else is amqtt's: take-over of a connected client id,
        CONNACK, the CLIENT_CONNECTED event, messages queued while the session was away.
        """
        authenticated = await self._authenticate(client_session, self.listeners_config[listener_name])
        if client_session.client_id is None:
            raise AMQTTError("client id was not set")
        while True:
            try:
                client_session.transitions.connect()
                break
            except (MachineError, ValueError):
                if client_session.transitions.is_connected():
                    log.info("MQTT client %s is already connected: taking over", client_session.client_id)
                    old_handler = self._sessions[client_session.client_id][1]
                    await old_handler.handle_connection_closed()
                    await old_handler.stop()
                    break
                await asyncio.sleep(1)  # amqtt's wait for a client that reconnects while it is being disconnected
        handler.attach(client_session, reader, writer)
        self._sessions[client_session.client_id] = (client_session, handler)
        await handler.mqtt_connack_authorize(authenticated)
        if not authenticated:
            await writer.close()
            return
        await self.plugins_manager.fire_event(
            BrokerEvents.CLIENT_CONNECTED, client_id=client_session.client_id, client_session=client_session
        )
        await handler.start()
        await self._publish_session_retained_messages(client_session)
        for topic_filter in list(self._held.get(client_session.client_id, ())):
            await self._publish_retained_messages_for_subscription((topic_filter, QOS_0), client_session)
        await self._client_message_loop(client_session, handler)

    async def _session_monitor(self) -> None:
        """amqtt 0.12's expiry of disconnected sessions (every second), with each one looked at again right
        before it goes: amqtt listed them first and then removed them by client id, awaiting each
        removal, so a client that reconnected in between (an agent keeps its client id) lost its new
        session; its handler was stopped, which cut the connection and sent its last-will."""
        while True:
            await self.expire_sessions(self.expired_sessions())
            await asyncio.sleep(1)

    def expired_sessions(self) -> list[str]:
        """The client ids whose sessions may go: disconnected, and clean (or past the expiry interval)."""
        return [client_id for client_id, (session, _) in self._sessions.items() if self._expired(session)]

    async def expire_sessions(self, client_ids: list[str]) -> None:
        for client_id in client_ids:
            session = self._sessions.get(client_id, (None, None))[0]
            if session is not None and self._expired(session):  # not one that connected again meanwhile
                await self._cleanup_session(client_id)

    def _expired(self, session: Session) -> bool:
        if session.transitions.state != "disconnected":
            return False
        if session.is_anonymous or session.clean_session:
            return True
        interval = self.config.session_expiry_interval
        gone_at = session.last_disconnect_time
        return interval is not None and bool(gone_at) and gone_at < time.time() - interval

    def stop_listening(self) -> None:
        """Take no new connections (amqtt's shutdown closes its listeners only after every session)."""
        for server in self._servers.values():
            if server.instance is not None:
                server.instance.close()

    def may_have_sessions(self, username: str) -> bool:
        """False if ``username`` has no live session (one dict lookup: safe from any thread)."""
        return bool(self._by_user.get(username))

    async def disconnect_user(self, username: str) -> int:
        """Close every live session of ``username`` (its credential was revoked); the number closed."""
        closed = 0
        for client_id in list(self._by_user.get(username, ())):
            session, handler = self._sessions.get(client_id, (None, None))
            if session is not None and session.username == username and session.transitions.is_connected():
                await self._cut(client_id, handler)
                closed += 1
        if closed:
            log.info("disconnected %d session(s) of MQTT user %s", closed, username)
        return closed

    async def _delete_session(self, client_id: str) -> None:
        self._forget_user(self._sessions.get(client_id, (None, None))[0])
        await super()._delete_session(client_id)

    async def _cleanup_session(self, client_id: str) -> None:
        self._forget_user(self._sessions.get(client_id, (None, None))[0])
        await super()._cleanup_session(client_id)

    def _forget_user(self, session: Session | None) -> None:
        if session is None:
            return
        client_ids = self._by_user.get(session.username or "")
        if client_ids is not None:
            client_ids.discard(session.client_id)
            if not client_ids:
                del self._by_user[session.username or ""]

    async def recheck_monitors(self) -> int:
        """Close each monitor session whose clusters are no longer those it logged in with; the number closed.

        Grants were given or revoked, a user or a cluster deleted. As Mosquitto's dynamic security
        kicks a client whose roles change, the monitor must log in again and gets its current rights
        (or is refused when it has none left).
        """
        closed = 0
        for client_id, (session, handler) in list(self._sessions.items()):
            ident = self.access.identities.get(client_id)
            if ident is None or ident.role != "monitor" or not session.transitions.is_connected():
                continue
            now = await asyncio.to_thread(self.access.authority.monitor_clusters_now, ident.username)
            if tuple(sorted(now)) == ident.watched:
                continue
            await self._cut(client_id, handler)
            log.info("disconnected MQTT monitor %s: the clusters it may watch changed", ident.username)
            closed += 1
        return closed

    async def _cut(self, client_id: str, handler: Any) -> None:
        self.access.identities.pop(client_id, None)  # no rights left, even before the socket closes
        if handler is not None and handler.writer is not None:
            await handler.writer.close()

    # ---- indexed subscriptions: amqtt 0.12 looks at every subscription for every message, every
    # retained message for every new subscription, and every subscription of every client at each
    # connect and disconnect; with thousands of agents that was most of the server's CPU.
    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        """amqtt 0.12's checks and QoS; whether the client already holds the filter is looked up in
        ``_held`` instead of among every holder of the filter (all agents hold the control presence)."""
        topic_filter, qos = subscription
        levels = topic_filter.split("/")
        if any("#" in level and (level != "#" or i != len(levels) - 1) for i, level in enumerate(levels)):
            return 0x80  # [MQTT-4.7.1-2] '#' only as the whole last level
        if any("+" in level and level != "+" for level in levels):
            return 0x80  # [MQTT-4.7.1-3] '+' only as a whole level
        if not await self._topic_filtering(session, topic_filter, Action.SUBSCRIBE):
            return 0x80
        max_qos = self.config.get("max-qos", qos)
        qos = min(qos, max_qos if isinstance(max_qos, int) else qos)
        held = self._held.setdefault(session.client_id, set())
        if topic_filter not in held:
            holders = dict.get(self._subscriptions, topic_filter)
            if holders is None:
                holders = self._subscriptions[topic_filter] = []
            holders.append((session, qos))
            held.add(topic_filter)
        return qos

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        """amqtt's hook for every subscribe, publish and (per holder) receive, answered by the ACL.

        Not a topic plugin: amqtt's plugin manager made an asyncio task for each of these checks.
        """
        ok = self.access.allowed(session.client_id, topic, action)
        if not ok and action != Action.RECEIVE:
            log.warning("MQTT client %s (user %r) may not %s %s", session.client_id, session.username, action, topic)
        return ok

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        deleted: int = super()._del_subscription(a_filter, session)
        if deleted:
            self._held.get(session.client_id, set()).discard(a_filter)
        return deleted

    async def _del_all_subscriptions(self, session: Session) -> None:
        for a_filter in self._held.pop(session.client_id, set()):
            Broker._del_subscription(self, a_filter, session)
            holders = dict.get(self._subscriptions, a_filter)
            if holders is not None and not holders:
                del self._subscriptions[a_filter]

    async def _run_broadcast(self, running_tasks: Any) -> None:
        """amqtt's broadcast of one message, to the holders of the filters that match its topic only.

        The receive check is the ACL's own, as in _topic_filtering.
        """
        broadcast = await self._broadcast_queue.get()
        topic = broadcast["topic"]
        for k_filter in self._subscriptions.trie.filters_matching(topic):
            for target_session, sub_qos in list(dict.get(self._subscriptions, k_filter, ())):
                qos = broadcast.get("qos", sub_qos)
                if not self.access.allowed(target_session.client_id, topic, Action.RECEIVE):
                    continue
                connected = target_session.transitions.state == "connected"
                if (
                    not connected
                    and not target_session.clean_session
                    and qos in (QOS_1, QOS_2)
                    and not target_session.is_anonymous
                ):
                    await self._retain_broadcast_message(broadcast, qos, target_session)
                    continue
                if not connected:
                    continue
                handler = self._get_handler(target_session)
                if handler:
                    running_tasks.append(asyncio.ensure_future(self._deliver(handler, topic, broadcast["data"], qos)))

    late_acks = 0  # QoS 1 deliveries whose PUBACK did not come within amqtt's 5 s
    _late_logged = 0.0

    async def _deliver(self, handler: BrokerProtocolHandler, topic: str, data: bytes, qos: int) -> None:
        """One delivery; a late PUBACK is counted and logged once in a while, not with a traceback each.

        amqtt has written the message when it gives up waiting for the PUBACK (it does not send it
        again): a client that is slow to acknowledge (the control service under a storm) still
        reads it. Formatting a traceback for each of thousands of them kept the loop busier still.
        """
        try:
            await handler.mqtt_publish(topic, data, qos, retain=False)
        except TimeoutError:
            self.late_acks += 1
            now = time.monotonic()
            if now - self._late_logged >= 10:
                self._late_logged = now
                log.warning("%d QoS 1 deliveries so far were not acknowledged within 5 s", self.late_acks)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        topic_filter, qos = subscription
        if topic_filter not in self._held.get(session.client_id, ()):
            return
        handler = self._get_handler(session)
        if handler is None:
            return
        retained = self._retained_messages
        sends = [
            asyncio.ensure_future(handler.mqtt_publish(msg.topic, msg.data, min(qos, msg.qos or qos), retain=True))
            for msg in (retained.get(t) for t in retained.trie.topics_matching(topic_filter))
            if msg is not None and self.access.allowed(session.client_id, msg.topic, Action.RECEIVE)
        ]
        if sends:
            await asyncio.wait(sends)


def _peer_node(writer: Any) -> tuple[str, str] | None:
    """The (cluster, node) of the client's certificate, when it sent one that our CA verified."""
    get_ssl_info = getattr(writer, "get_ssl_info", None)
    ssl_object = get_ssl_info() if get_ssl_info is not None else None
    cert = ssl_object.getpeercert() if ssl_object is not None else None  # only a verified one
    return node_named_by(value for kind, value in (cert or {}).get("subjectAltName", ()) if kind == "URI")


_closing: set[asyncio.Future[None]] = set()  # connections being closed (a reference until they are)


def _enforce_keepalive(handler: BrokerProtocolHandler, session: Session) -> None:
    """Close a connection that sent nothing for 1.5 x its keepalive (MQTT 3.1.1, 3.1.2.10).

    amqtt 0.12 only times its read out after the keepalive and then keeps waiting, so a hung client
    whose TCP connection stays open was never dropped and its last-will never sent. The reader's
    timeout is the session's ``keep_alive`` (read when the reader starts, after this); on a timeout
    the connection is closed, the reader sees the end of the stream and the broker sends the will.
    """
    if session.keep_alive and session.keep_alive > 0:
        session.keep_alive = session.keep_alive * 1.5

    def expired() -> None:
        log.info("MQTT client %s: nothing received for 1.5 x its keepalive; closing", session.client_id)
        writer = handler.writer
        if writer is not None:
            closing = asyncio.ensure_future(writer.close())
            _closing.add(closing)
            closing.add_done_callback(_closing.discard)

    handler.handle_read_timeout = expired


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


@dataclass(frozen=True)
class TlsListener:
    """An MQTT-over-TLS listener of the embedded broker: address and the server certificate's PEM files."""

    host: str
    port: int
    certfile: str
    keyfile: str
    cafile: str | None = None  # verifies client certificates (node certificates), when given


async def start_broker(
    host: str, port: int | None, authority: Authority, topics: Topics, tls: TlsListener | None = None
) -> GlusterctlBroker:
    """Start the broker on plain TCP ``host:port`` (``port`` None: no plain listener) and/or on ``tls``."""
    listeners: dict[str, dict[str, Any]] = {}
    if port is not None:
        check_port_free(host, port)
        listeners["default"] = {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 0}
    if tls is not None:
        check_port_free(tls.host, tls.port)
        tls_listener = {"bind": f"{tls.host}:{tls.port}", "ssl": True, "certfile": tls.certfile, "keyfile": tls.keyfile}
        if tls.cafile:  # without it amqtt would trust the system's CAs for client certificates
            tls_listener["cafile"] = tls.cafile
        listeners["tls"] = {"type": "tcp", "max_connections": 0, **tls_listener}
        if "default" not in listeners:  # amqtt's default listener is the one it always has
            listeners["default"] = listeners.pop("tls")
    if not listeners:
        raise BrokerError("the embedded MQTT broker needs a plain (--mqtt) or a TLS (--mqtts) listener")
    Session._init_states = _light_session_states  # for every session amqtt makes from now on (see SessionStates)
    access = AccessControl(authority, topics)
    config = {
        "listeners": listeners,
        "plugins": {
            f"{__name__}.GlusterctlAuthPlugin": {"access": access},
        },
    }
    broker = GlusterctlBroker(config)
    broker.access = access
    where = ", ".join(f"{'mqtts' if cfg.get('ssl') else 'mqtt'}://{cfg['bind']}" for cfg in listeners.values())
    try:
        await broker.start()
    except Exception as exc:
        raise BrokerError(f"the embedded MQTT broker could not start on {where}: {exc}") from exc
    log.info("embedded MQTT broker listening on %s", where)
    return broker
