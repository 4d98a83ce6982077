"""Mosquitto's dynamic security plugin, driven by the control service over MQTT.

With an external Mosquitto the operator creates one dynsec admin once (``mosquitto_ctrl dynsec
init``); glusterctl then keeps every other broker user and ACL itself by publishing JSON
commands to ``$CONTROL/dynamic-security/v1`` and reading the answers on ``.../response``
(see docs/mosquitto.md). Each command carries ``correlationData``, so answers are matched to
the call that is waiting for them.

Names: every user and role glusterctl creates starts with the topic root and a dot
(``glusterctl.node.prod.host1.example.com``). Roots and cluster names cannot contain dots, so
a name splits back unambiguously even though node names (host names) do, and several control
planes with different roots can share one broker.

What Mosquitto 2.0.11 does (verified by tests/test_dynsec.py): a role's ACLs change live
without disconnecting anyone; changing a client's password or role list, or deleting it,
disconnects every session logged in with that user name; a failed login never disturbs the
session that already uses the same client id; a last-will whose topic the client may not
publish to is accepted at CONNECT and silently never delivered; deleting a role that a user still
has can crash the broker at its next change (SIGSEGV), so no role is deleted before its users let go.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import re
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from broker.messages import check_name
from broker.topics import ANY, Topics
from broker.url import MqttUrl

log = logging.getLogger(__name__)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
CONNECT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 10.0
KEEPALIVE = 30

# The plugin's answer when the object of a get/delete does not exist.
NOT_FOUND = ("Client not found", "Role not found")


class AclType(str, enum.Enum):
    PUBLISH_SEND = "publishClientSend"
    PUBLISH_RECEIVE = "publishClientReceive"
    SUBSCRIBE_LITERAL = "subscribeLiteral"
    SUBSCRIBE_PATTERN = "subscribePattern"
    UNSUBSCRIBE_LITERAL = "unsubscribeLiteral"
    UNSUBSCRIBE_PATTERN = "unsubscribePattern"


# Access when no ACL of a client's roles matches: deny everything (init leaves receive and
# unsubscribe allowed); every role below grants what it needs explicitly.
DEFAULT_ACL_ACCESS: dict[str, bool] = {
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": False,
    "unsubscribe": False,
}


@dataclass(frozen=True)
class Acl:
    acltype: AclType
    topic: str
    allow: bool = True
    priority: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"acltype": self.acltype.value, "topic": self.topic, "allow": self.allow, "priority": self.priority}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Acl:
        return cls(AclType(data["acltype"]), str(data["topic"]), bool(data["allow"]), int(data.get("priority", 0)))


@dataclass(frozen=True)
class ClientInfo:
    username: str
    roles: tuple[str, ...]
    disabled: bool = False


@dataclass(frozen=True)
class Response:
    command: str
    data: Mapping[str, Any]
    error: str | None


class DynsecError(Exception):
    """Root of this module's errors."""


class DynsecConnectError(DynsecError):
    """The broker refused or did not answer the admin's connection, or the admin may not use the control topic."""


class DynsecTimeout(DynsecError):
    """The plugin did not answer in time (is it loaded?)."""


class DynsecCommandError(DynsecError):
    """The plugin refused a command; ``message`` is the plugin's own text."""

    def __init__(self, command: str, message: str) -> None:
        super().__init__(f"dynamic security command {command} failed: {message}")
        self.command = command
        self.message = message


# ---- names and ACLs --------------------------------------------------------------------------


CONTROL_SERVER_RE = re.compile(r"^[0-9a-f]{16}$")


def control_username(topics: Topics, server: str = "") -> str:
    """The control service's own broker user (publishes tasks and registrations, reads agents); with
    ``server`` (see ``control_server_id``) one server's own user, so several servers never reset each
    other's password (every such user has the role named ``control_username(topics)``)."""
    if server:
        if not CONTROL_SERVER_RE.match(server):
            raise ValueError(f"invalid control server id {server!r}: 16 hex digits")
        return f"{topics.root}.control.{server}"
    return f"{topics.root}.control"


def control_server_id(secret: str) -> str:
    """A server's id in its broker user name, derived from its own secret (stable per data directory)."""
    return hashlib.sha256(b"glusterctl control user\0" + secret.encode()).hexdigest()[:16]


def enrol_username(topics: Topics, cluster: str) -> str:
    """The user an agent of ``cluster`` logs in with to enrol; its password is the join token's secret."""
    return f"{topics.root}.enrol.{check_name('cluster', cluster)}"


def node_username(topics: Topics, cluster: str, node: str) -> str:
    return f"{topics.root}.node.{check_name('cluster', cluster)}.{check_name('node', node)}"


def monitor_username(topics: Topics, user: str) -> str:
    return f"{topics.root}.user.{check_name('user', user)}"


def nodes_rolename(topics: Topics, cluster: str) -> str:
    """The role every node user of ``cluster`` has besides its own (what all its nodes read)."""
    return f"{topics.root}.nodes.{check_name('cluster', cluster)}"


def monitor_rolename(topics: Topics, cluster: str) -> str:
    """The shared read-only role of ``cluster``; ``ANY``: every cluster (a name no cluster can have)."""
    if cluster == ANY:
        return f"{topics.root}.monitor-all"
    return f"{topics.root}.monitor.{check_name('cluster', cluster)}"


def parse_username(topics: Topics, username: str) -> tuple[str, str | None, str | None] | None:
    """``(kind, cluster, node)`` of a name made above (kind: control/enrol/node/user); None if not ours.

    For ``user`` the second item is the glusterctl user name.
    """
    prefix = f"{topics.root}."
    if not username.startswith(prefix):
        return None
    kind, _, rest = username[len(prefix) :].partition(".")
    try:
        if kind == "control" and (not rest or CONTROL_SERVER_RE.match(rest)):
            return kind, None, None
        if kind == "enrol":
            return kind, check_name("cluster", rest), None
        if kind == "user":
            return kind, check_name("user", rest), None
        if kind == "node":
            cluster, _, node = rest.partition(".")
            return kind, check_name("cluster", cluster), check_name("node", node)
    except ValueError:
        return None
    return None


def _readable(filters: Sequence[str]) -> list[Acl]:
    """Subscribe to, receive from and unsubscribe from exactly these filters."""
    kinds = (AclType.SUBSCRIBE_PATTERN, AclType.PUBLISH_RECEIVE, AclType.UNSUBSCRIBE_PATTERN)
    return [Acl(kind, topic) for topic in filters for kind in kinds]


def control_acls(topics: Topics) -> list[Acl]:
    everything = topics.everything_filter()
    return [Acl(AclType.PUBLISH_SEND, everything), *_readable([everything])]


def enrol_acls(topics: Topics, cluster: str) -> list[Acl]:
    """Say hello as any node of ``cluster`` and read the answers; nothing else."""
    check_name("cluster", cluster)
    return [
        Acl(AclType.PUBLISH_SEND, topics.cluster_hellos_filter(cluster)),
        *_readable([topics.cluster_registrations_filter(cluster), topics.control_presence()]),
    ]


def node_acls(topics: Topics, cluster: str, node: str) -> list[Acl]:
    """The node's own role: publish only its own topics (its last-will included); read only its own
    registration and tasks. What every node of the cluster reads is in ``nodes_acls``, a role they share:
    Mosquitto 2.0 rewrites its whole dynsec file after every change, so each node's entry is kept small."""
    check_name("cluster", cluster)
    check_name("node", node)
    own = (topics.registration(cluster, node), topics.tasks_filter(cluster, node))
    return [
        *(Acl(AclType.PUBLISH_SEND, topic) for topic in topics.agent_publish_topics(cluster, node)),
        *(Acl(kind, topic) for topic in own for kind in (AclType.SUBSCRIBE_PATTERN, AclType.PUBLISH_RECEIVE)),
    ]


def nodes_acls(topics: Topics, cluster: str) -> list[Acl]:
    """The role all node users of ``cluster`` share: read the control presence and the cluster's metadata,
    and unsubscribe from what a node reads (an unsubscribe gives access to nothing)."""
    check_name("cluster", cluster)
    return [
        *_readable((topics.control_presence(), topics.cluster_metadata(cluster))),
        *(
            Acl(AclType.UNSUBSCRIBE_PATTERN, topic)
            for topic in (topics.registration(cluster, ANY), topics.tasks_filter(cluster, ANY))
        ),
    ]


def whole_node_acls(topics: Topics, cluster: str, node: str) -> list[Acl]:
    """The one role of a node user made before the shared role (``nodes_rolename``) existed: its own ACLs and
    the shared ones. The reconcile keeps such a user as it is: changing its roles would disconnect the node,
    and rewriting every node's role one by one would cost the broker a whole-file rewrite each."""
    return [
        *(Acl(AclType.PUBLISH_SEND, topic) for topic in topics.agent_publish_topics(cluster, node)),
        *_readable(topics.agent_subscribe_filters(cluster, node)),
    ]


def monitor_acls(topics: Topics, cluster: str) -> list[Acl]:
    """Read-only: the presence, heartbeat and task status of ``cluster``'s nodes, its monitoring topics
    (summary, volume status, alerts), and the control presence; ``ANY``: of every cluster."""
    if cluster != ANY:
        check_name("cluster", cluster)
    return _readable(topics.monitor_filters(cluster))


# ---- the client --------------------------------------------------------------------------------


class _Batch:
    def __init__(self, size: int) -> None:
        self.responses: list[Response | None] = [None] * size
        self.done = threading.Event()

    def fill(self, index: int, response: Response) -> None:
        if 0 <= index < len(self.responses):
            self.responses[index] = response
        if all(r is not None for r in self.responses):
            self.done.set()


class DynsecClient:
    """A dynsec admin session: ``with DynsecClient(url) as dynsec: dynsec.ensure_role(...)``.

    Thread-safe; paho reconnects by itself after a lost connection, and a call made while the
    connection is down waits for it until its timeout.
    """

    def __init__(self, url: MqttUrl, timeout: float = COMMAND_TIMEOUT) -> None:
        if not url.username:
            raise ValueError("the dynamic security admin needs a user name and password in the MQTT URL")
        self.url = url
        self.timeout = timeout
        self._ready = threading.Event()
        self._refused: str | None = None
        self._lock = threading.Lock()
        self._batches: dict[str, _Batch] = {}
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"glusterctl-dynsec-{uuid.uuid4().hex}",
            clean_session=True,
        )
        self._client.username_pw_set(url.username, url.password)
        if url.tls:
            try:
                self._client.tls_set_context(url.tls_context())
            except ValueError as exc:
                raise DynsecConnectError(str(exc)) from None
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    # ---- lifecycle
    def connect(self, timeout: float = CONNECT_TIMEOUT) -> None:
        """Log in and subscribe to the answers; DynsecConnectError saying why when that fails."""
        self._refused = None
        self._client.connect_async(self.url.host, self.url.port, keepalive=KEEPALIVE)
        self._client.loop_start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self._refused is not None or time.monotonic() > deadline:
                self.close()
                why = self._refused or f"no answer within {timeout:g}s"
                raise DynsecConnectError(f"dynamic security admin could not connect to {self.url.redacted()}: {why}")
        log.info("dynsec admin %s connected to %s", self.url.username, self.url.redacted())

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._ready.clear()

    def __enter__(self) -> DynsecClient:
        self.connect()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- paho callbacks (network thread)
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: ReasonCode, properties: Properties | None
    ) -> None:
        if reason_code.is_failure:
            self._refused = f"the broker refused user {self.url.username!r}: {reason_code}"
            log.error("dynsec admin: %s", self._refused)
            client.disconnect()
            return
        client.subscribe(RESPONSE_TOPIC, qos=1)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        """A broker whose certificate the CA did not sign is refused for good (paho calls this in its except)."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ssl.SSLCertVerificationError):
            trusted = f"the CA {self.url.ca}" if self.url.ca else "the system's CAs"
            self._refused = (
                f"its certificate is not signed by {trusted} ({exc.verify_message or exc}): "
                "pass the broker's CA with --mqtt-ca FILE"
            )
            log.error("dynsec admin: refusing %s: %s", self.url.redacted(), self._refused)
        elif exc is not None:
            log.warning("dynsec admin: cannot connect to %s: %s; retrying", self.url.redacted(), exc)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, codes: list[ReasonCode], properties: Properties | None
    ) -> None:
        if any(code.is_failure for code in codes):
            self._refused = f"user {self.url.username!r} may not subscribe to {RESPONSE_TOPIC}: not a dynsec admin"
            log.error("dynsec admin: %s", self._refused)
            client.disconnect()
            return
        self._ready.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: ReasonCode, properties: Properties | None
    ) -> None:
        self._ready.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            answers = json.loads(msg.payload)["responses"]
            for answer in answers:
                batch_id, _, index = str(answer.get("correlationData", "")).partition(":")
                with self._lock:
                    batch = self._batches.get(batch_id)
                if batch is None:
                    continue  # someone else's answer, or one that came after its caller gave up
                data = answer.get("data")
                response = Response(
                    str(answer.get("command")), data if isinstance(data, dict) else {}, answer.get("error")
                )
                batch.fill(int(index), response)
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("dynsec admin: unreadable answer on %s: %r", msg.topic, msg.payload[:200])

    # ---- commands
    def send(self, commands: Sequence[Mapping[str, Any]], timeout: float | None = None) -> list[Response]:
        """Run ``commands`` in one message and return one Response per command, errors included."""
        if not commands:
            return []
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        if not self._ready.wait(timeout):
            why = f": {self._refused}" if self._refused else ""
            raise DynsecTimeout(f"not connected to {self.url.redacted()} as dynsec admin after {timeout:g}s{why}")
        batch_id = uuid.uuid4().hex
        batch = _Batch(len(commands))
        payload = {"commands": [{**c, "correlationData": f"{batch_id}:{i}"} for i, c in enumerate(commands)]}
        with self._lock:
            self._batches[batch_id] = batch
        try:
            # QoS 0: a QoS 1 command made Mosquitto answer with a PUBACK and then the response, two small
            # packets back to back, and each command took 44 ms (Nagle holding the second until this side's
            # delayed ACK, by the look of it), against 0.2 ms. The answer says whether the command ran; a lost
            # one is a DynsecTimeout, as before.
            self._client.publish(CONTROL_TOPIC, json.dumps(payload).encode(), qos=0)
            if not batch.done.wait(max(0.0, deadline - time.monotonic())):
                names = ", ".join(str(c.get("command")) for c in commands)
                raise DynsecTimeout(
                    f"no answer from Mosquitto's dynamic security plugin within {timeout:g}s to {names}: "
                    "is the plugin loaded (plugin and plugin_opt_config_file in mosquitto.conf)?"
                )
        finally:
            with self._lock:
                self._batches.pop(batch_id, None)
        return [r for r in batch.responses if r is not None]

    def run(self, commands: Sequence[Mapping[str, Any]], tolerate: Sequence[str] = ()) -> list[Response]:
        """Like send, but raise DynsecCommandError for the first error not listed in ``tolerate``."""
        responses = self.send(commands)
        for response in responses:
            if response.error is not None and response.error not in tolerate:
                raise DynsecCommandError(response.command, response.error)
        return responses

    def run_one(self, command: str, tolerate: Sequence[str] = (), **fields: Any) -> Response:
        return self.run([{"command": command, **fields}], tolerate)[0]

    # ---- idempotent operations
    def default_acl_access(self) -> dict[str, bool]:
        acls = self.run_one("getDefaultACLAccess").data.get("acls", [])
        return {str(a["acltype"]): bool(a["allow"]) for a in acls}

    def ensure_default_acl_access(self, wanted: Mapping[str, bool] = DEFAULT_ACL_ACCESS) -> bool:
        """Make the access for unmatched topics ``wanted`` (deny all by default); True if it changed."""
        current = self.default_acl_access()
        if all(current.get(k) == v for k, v in wanted.items()):
            return False
        self.run_one("setDefaultACLAccess", acls=[{"acltype": k, "allow": v} for k, v in wanted.items()])
        log.info("dynsec: default ACL access set to %s", dict(wanted))
        return True

    def get_role(self, rolename: str) -> list[Acl] | None:
        response = self.run_one("getRole", tolerate=NOT_FOUND, rolename=rolename)
        if response.error:
            return None
        return [Acl.from_json(a) for a in response.data.get("role", {}).get("acls", [])]

    def ensure_role(self, rolename: str, acls: Sequence[Acl]) -> bool:
        """Create the role or set its ACLs to exactly ``acls`` (live, no one is disconnected); True if it changed."""
        current = self.get_role(rolename)
        wanted = [a.to_json() for a in acls]
        if current is None:
            self.run_one("createRole", rolename=rolename, acls=wanted)
            log.info("dynsec: created role %s with %d ACLs", rolename, len(acls))
            return True
        if set(current) == set(acls):
            return False
        self.run_one("modifyRole", rolename=rolename, acls=wanted)
        log.info("dynsec: role %s now has %d ACLs", rolename, len(acls))
        return True

    def delete_role(self, rolename: str) -> bool:
        return self.run_one("deleteRole", tolerate=NOT_FOUND, rolename=rolename).error is None

    def get_client(self, username: str) -> ClientInfo | None:
        response = self.run_one("getClient", tolerate=NOT_FOUND, username=username)
        if response.error:
            return None
        data = response.data.get("client", {})
        roles = tuple(str(r["rolename"]) for r in data.get("roles", []))
        return ClientInfo(str(data.get("username", username)), roles, bool(data.get("disabled", False)))

    def ensure_client(self, username: str, password: str | None, roles: Sequence[str], enabled: bool = True) -> bool:
        """Create the user, or give it exactly ``roles``, (if not None) ``password`` and ``enabled``; True if
        anything was sent.

        Mosquitto disconnects the user's live sessions when its roles or password change or it is
        disabled, so roles are only sent when they differ, and the password only when one is given.
        """
        current = self.get_client(username)
        role_list = [{"rolename": r} for r in roles]
        if current is None:
            fields: dict[str, Any] = {"username": username, "roles": role_list}
            if password is not None:
                fields["password"] = password
            self.run_one("createClient", **fields)
            if not enabled:
                self.run_one("disableClient", username=username)
            log.info("dynsec: created user %s with roles %s%s", username, list(roles), "" if enabled else " (disabled)")
            return True
        changes: dict[str, Any] = {}
        if set(current.roles) != set(roles):
            changes["roles"] = role_list
        if password is not None:
            changes["password"] = password
        if changes:
            self.run_one("modifyClient", username=username, **changes)
            log.info("dynsec: updated user %s (%s)", username, ", ".join(sorted(changes)))
        if current.disabled == enabled:
            self.run_one("enableClient" if enabled else "disableClient", username=username)
            log.info("dynsec: user %s %s", username, "enabled" if enabled else "disabled")
            return True
        return bool(changes)

    def set_password(self, username: str, password: str) -> None:
        """New password for an existing user; its live sessions are disconnected."""
        self.run_one("setClientPassword", username=username, password=password)
        log.info("dynsec: new password for user %s", username)

    def delete_client(self, username: str) -> bool:
        """Delete the user (its live sessions are disconnected); False if it did not exist."""
        deleted = self.run_one("deleteClient", tolerate=NOT_FOUND, username=username).error is None
        if deleted:
            log.info("dynsec: deleted user %s", username)
        return deleted

    def list_clients(self) -> list[str]:
        data = self.run_one("listClients", verbose=False, count=-1, offset=0).data
        return [str(c) for c in data.get("clients", [])]

    def list_client_roles(self) -> dict[str, tuple[str, ...]]:
        """Every user with the names of its roles (one answer with all of them: for rare, whole-broker passes)."""
        data = self.run_one("listClients", verbose=True, count=-1, offset=0).data
        return {
            str(c["username"]): tuple(str(r["rolename"]) for r in c.get("roles", []))
            for c in data.get("clients", [])
            if isinstance(c, dict) and "username" in c
        }

    def remove_client_role(self, username: str, rolename: str) -> None:
        """Take one role from a user (Mosquitto disconnects its sessions: its access changed)."""
        self.run_one("removeClientRole", tolerate=NOT_FOUND, username=username, rolename=rolename)

    def list_roles(self) -> list[str]:
        data = self.run_one("listRoles", verbose=False, count=-1, offset=0).data
        return [str(r) for r in data.get("roles", [])]


# ---- what the control service keeps -------------------------------------------------------------


def ensure_control(dynsec: DynsecClient, topics: Topics, password: str | None, server: str = "") -> str:
    """The control service's own user (one per ``server``) and role, and deny-by-default; returns the user name."""
    dynsec.ensure_default_acl_access()
    rolename = control_username(topics)
    username = control_username(topics, server)
    dynsec.ensure_role(rolename, control_acls(topics))
    dynsec.ensure_client(username, password, [rolename])
    return username


def ensure_enrolment(dynsec: DynsecClient, topics: Topics, cluster: str, secret: str | None) -> str:
    """The enrolment user of ``cluster`` (password: the join token's secret; None keeps the current one)."""
    username = enrol_username(topics, cluster)
    dynsec.ensure_role(username, enrol_acls(topics, cluster))
    dynsec.ensure_client(username, secret, [username])
    return username


def ensure_node(
    dynsec: DynsecClient,
    topics: Topics,
    cluster: str,
    node: str,
    password: str | None,
    known_roles: set[str] | None = None,
) -> str:
    """The node's own user and role, and the role its cluster's nodes share (a new password disconnects the
    node's current session). Without a password (the reconcile) a user made with one whole role
    (``whole_node_acls``) keeps it; a new password gives it the two roles. Roles in ``known_roles`` are taken
    as up to date; the shared role ensured here is added to it."""
    username = node_username(topics, cluster, node)
    shared = nodes_rolename(topics, cluster)
    if known_roles is None or shared not in known_roles:
        dynsec.ensure_role(shared, nodes_acls(topics, cluster))
        if known_roles is not None:
            known_roles.add(shared)
    if password is None:  # the reconcile: one read of the user decides what is left to do
        current = dynsec.get_client(username)
        if current is not None and current.roles == (username,):
            dynsec.ensure_role(username, whole_node_acls(topics, cluster, node))
            return username
        dynsec.ensure_role(username, node_acls(topics, cluster, node))
        if current is None or set(current.roles) != {username, shared} or current.disabled:
            dynsec.ensure_client(username, None, [username, shared])
        return username
    dynsec.ensure_role(username, node_acls(topics, cluster, node))
    dynsec.ensure_client(username, password, [username, shared])
    return username


def remove_node(dynsec: DynsecClient, topics: Topics, cluster: str, node: str) -> bool:
    """Delete the node's user (disconnecting it) and its role; False if there was no such user."""
    username = node_username(topics, cluster, node)
    deleted = dynsec.delete_client(username)
    dynsec.delete_role(username)
    return deleted


def ensure_monitor(
    dynsec: DynsecClient,
    topics: Topics,
    user: str,
    password: str | None,
    clusters: Sequence[str],
    known_roles: set[str] | None = None,
) -> str:
    """A read-only user that sees exactly ``clusters`` (one shared monitor role per cluster; ``ANY``: all).

    Without clusters the user is kept, password and all, but disabled: it cannot log in until a
    grant gives it something to read (the control service never learns the password again).
    Roles in ``known_roles`` are taken as up to date; the ones ensured here are added to it.
    """
    roles = []
    for cluster in clusters:
        rolename = monitor_rolename(topics, cluster)
        if known_roles is None or rolename not in known_roles:
            dynsec.ensure_role(rolename, monitor_acls(topics, cluster))
            if known_roles is not None:
                known_roles.add(rolename)
        roles.append(rolename)
    username = monitor_username(topics, user)
    dynsec.ensure_client(username, password, roles, enabled=bool(roles))
    return username
