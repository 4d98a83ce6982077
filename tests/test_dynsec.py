"""broker.dynsec against a real Mosquitto with its dynamic security plugin, started here on a free port."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from broker import dynsec
from broker.dynsec import Acl, AclType, DynsecClient, DynsecCommandError, DynsecConnectError, DynsecTimeout
from broker.topics import Topics
from broker.url import MqttUrl
from control.tls import ServerCert
from tests.helpers import Proc, free_port, port_open, unique, wait_until
from tests.mqtt_raw import RawClient

PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
ADMIN = "dynsec-admin"
# how long a "must not arrive" check listens
QUIET = 1.0

C1, C2 = "c1", "c2"
N1, N2 = "host-1.example.com", "host-2.example.com"


def _need_mosquitto() -> None:
    missing = [what for what in ("mosquitto", "mosquitto_ctrl") if not shutil.which(what)]
    if not os.path.exists(PLUGIN):
        missing.append(PLUGIN)
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"missing for the dynamic security tests: {', '.join(missing)}")
        pytest.skip(f"missing: {', '.join(missing)}")


@dataclass
class Mosquitto:
    port: int
    admin_password: str
    proc: Proc
    tls_port: int | None = None  # a second listener with MQTT over TLS, when started with a certificate

    def admin_url(self, password: str | None = None) -> MqttUrl:
        return MqttUrl("127.0.0.1", self.port, ADMIN, password or self.admin_password)


def start_mosquitto(tmp: Path, with_plugin: bool = True, tls_cert: ServerCert | None = None) -> Mosquitto:
    """A private Mosquitto on a free loopback port, with its own config and dynsec file (and a TLS listener)."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    tls_port = free_port() if tls_cert else None
    password = secrets.token_hex(16)
    lines = [f"listener {port} 127.0.0.1", "persistence false", "log_dest stderr", "log_type all"]
    if tls_cert:
        lines += [f"listener {tls_port} 127.0.0.1", f"certfile {tls_cert.cert}", f"keyfile {tls_cert.key}"]
    if with_plugin:
        config_file = tmp / "dynamic-security.json"
        subprocess.run(
            ["mosquitto_ctrl", "dynsec", "init", str(config_file), ADMIN, password],
            check=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=30,
        )
        lines += ["allow_anonymous false", f"plugin {PLUGIN}", f"plugin_opt_config_file {config_file}"]
    else:
        lines += ["allow_anonymous true"]
    if os.geteuid() == 0:
        lines.append("user root")  # else Mosquitto drops to 'mosquitto', which cannot save the dynsec file here
    conf = tmp / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    proc = Proc("mosquitto", ["mosquitto", "-c", str(conf)], tmp / "mosquitto.log").start()
    try:
        ports = [port] + ([tls_port] if tls_port else [])
        wait_until(
            lambda: all(port_open("127.0.0.1", p) for p in ports) or not proc.alive(), 15, what="mosquitto listening"
        )
        assert proc.alive(), f"mosquitto exited:\n{proc.log()[-2000:]}"
    except BaseException:
        proc.stop()
        raise
    return Mosquitto(port, password, proc, tls_port)


@pytest.fixture(scope="module")
def mosq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    _need_mosquitto()
    broker = start_mosquitto(tmp_path_factory.mktemp("dynsec"))
    yield broker
    broker.proc.stop()


@pytest.fixture(scope="module")
def admin(mosq: Mosquitto) -> Iterator[DynsecClient]:
    with DynsecClient(mosq.admin_url()) as client:
        yield client


class Peer(RawClient):
    """A raw MQTT client that notices when the broker drops it and does not hurry to reconnect."""

    def __init__(self, port: int, username: str, password: str, client_id: str = "", will: str | None = None) -> None:
        self.disconnected = threading.Event()
        super().__init__(
            port, username, password, client_id or unique("peer-"), (will, b'{"state":"offline"}') if will else None
        )
        self.client.reconnect_delay_set(min_delay=60, max_delay=120)
        self.client.on_disconnect = lambda c, u, f, rc, p: self.disconnected.set()


@dataclass
class World:
    """One control plane (its own topic root) provisioned on the broker, and the clients a test opened."""

    mosq: Mosquitto
    admin: DynsecClient
    topics: Topics
    control_password: str = field(default_factory=lambda: secrets.token_hex(16))
    enrol_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    node_passwords: dict[str, str] = field(default_factory=dict)
    monitor_password: str = field(default_factory=lambda: secrets.token_hex(16))
    peers: list[Peer] = field(default_factory=list)

    def provision(self) -> None:
        dynsec.ensure_control(self.admin, self.topics, self.control_password)
        for cluster in (C1, C2):
            dynsec.ensure_enrolment(self.admin, self.topics, cluster, self.enrol_secret)
        for node in (N1, N2):
            self.node_passwords[node] = secrets.token_hex(16)
            dynsec.ensure_node(self.admin, self.topics, C1, node, self.node_passwords[node])
        dynsec.ensure_monitor(self.admin, self.topics, "alice", self.monitor_password, [C1])

    def peer(self, username: str, password: str, client_id: str = "", will: str | None = None) -> Peer:
        peer = Peer(self.mosq.port, username, password, client_id, will)
        self.peers.append(peer)
        return peer

    def connected(self, username: str, password: str, **kw: str) -> Peer:
        peer = self.peer(username, password, **kw)
        assert peer.wait_connack(), f"{username} was refused: {peer.reason}"
        return peer

    def node(self, node: str, **kw: str) -> Peer:
        return self.connected(dynsec.node_username(self.topics, C1, node), self.node_passwords[node], **kw)

    def enrolment(self, cluster: str = C1) -> Peer:
        return self.connected(dynsec.enrol_username(self.topics, cluster), self.enrol_secret)

    def control(self) -> Peer:
        """The control service's subscriber: everything agents publish, in every cluster."""
        peer = self.connected(dynsec.control_username(self.topics), self.control_password)
        for topic in self.topics.agent_filters():
            assert peer.subscribe(topic)
        return peer


@pytest.fixture
def world(mosq: Mosquitto, admin: DynsecClient) -> Iterator[World]:
    w = World(mosq, admin, Topics(unique("t")))
    w.provision()
    yield w
    for peer in w.peers:
        peer.close()


def topics_of(messages: list[tuple[str, bytes]]) -> set[str]:
    return {topic for topic, _ in messages}


def wait_for(peer: RawClient, *topics: str, timeout: float = 10) -> None:
    """Wait until messages on all ``topics`` reached ``peer`` (others that arrive meanwhile are dropped)."""
    got: set[str] = set()
    wait_until(lambda: set(topics) <= (got.update(topics_of(peer.drain(0.2))) or got), timeout, what=f"{topics}")


# ---- names and ACL lists ------------------------------------------------------------------------


def test_names_round_trip_and_refuse_wildcards() -> None:
    t = Topics("gc")
    assert dynsec.node_username(t, "prod", "a.b.example") == "gc.node.prod.a.b.example"
    assert dynsec.parse_username(t, "gc.node.prod.a.b.example") == ("node", "prod", "a.b.example")
    assert dynsec.parse_username(t, dynsec.enrol_username(t, "prod")) == ("enrol", "prod", None)
    assert dynsec.parse_username(t, dynsec.monitor_username(t, "alice")) == ("user", "alice", None)
    assert dynsec.parse_username(t, dynsec.control_username(t)) == ("control", None, None)
    assert dynsec.parse_username(t, "other.node.prod.x") is None
    assert dynsec.parse_username(t, "gc.node.prod.+") is None
    for bad in ("+", "#", "a/b", ""):
        with pytest.raises(ValueError, match="invalid node name"):
            dynsec.node_acls(t, "prod", bad)
        with pytest.raises(ValueError, match="invalid cluster name"):
            dynsec.enrol_acls(t, bad)
    own = {(a.acltype, a.topic) for a in dynsec.node_acls(t, "prod", "n1")}
    assert (AclType.PUBLISH_SEND, "gc/v1/clusters/prod/nodes/n1/presence") in own
    assert (AclType.SUBSCRIBE_PATTERN, "gc/v1/clusters/prod/nodes/n1/tasks/+") in own
    assert not any("+" in topic for kind, topic in own if kind is AclType.PUBLISH_SEND)


# ---- the client itself --------------------------------------------------------------------------


def test_admin_errors_are_clear(mosq: Mosquitto, admin: DynsecClient, tmp_path: Path) -> None:
    with pytest.raises(DynsecConnectError, match=r"refused user 'dynsec-admin'.*Not authorized"):
        DynsecClient(mosq.admin_url("wrong-password"), timeout=5).connect()
    with pytest.raises(DynsecCommandError, match="setClientPassword failed: Client not found") as err:
        admin.set_password("no-such-user", "x")
    assert err.value.message == "Client not found"
    # a user that is not a dynsec admin may not read the answers
    t = Topics(unique("t"))
    password = secrets.token_hex(8)
    dynsec.ensure_node(admin, t, C1, N1, password)
    node_url = MqttUrl("127.0.0.1", mosq.port, dynsec.node_username(t, C1, N1), password)
    with pytest.raises(DynsecConnectError, match="not a dynsec admin"):
        DynsecClient(node_url, timeout=5).connect()
    # a broker without the plugin never answers
    bare = start_mosquitto(tmp_path / "bare", with_plugin=False)
    try:
        with DynsecClient(MqttUrl("127.0.0.1", bare.port, "someone", "x"), timeout=1) as client:
            with pytest.raises(DynsecTimeout, match="is the plugin loaded"):
                client.list_clients()
    finally:
        bare.proc.stop()


def test_operations_are_idempotent_and_deny_by_default(world: World) -> None:
    admin, t = world.admin, world.topics
    assert admin.default_acl_access() == dynsec.DEFAULT_ACL_ACCESS
    assert admin.ensure_default_acl_access() is False
    node_user = dynsec.node_username(t, C1, N1)
    assert admin.get_role(node_user) is not None
    assert set(admin.get_role(node_user) or []) == set(dynsec.node_acls(t, C1, N1))
    assert {node_user, dynsec.enrol_username(t, C1), dynsec.control_username(t)} <= set(admin.list_clients())
    assert dynsec.monitor_rolename(t, C1) in admin.list_roles()

    n1 = world.node(N1)
    shared = dynsec.nodes_rolename(t, C1)
    # the same state again changes nothing and disconnects no one
    assert admin.ensure_role(node_user, dynsec.node_acls(t, C1, N1)) is False
    assert admin.ensure_client(node_user, None, [node_user, shared]) is False
    # a role's ACLs change live, without disconnecting its users
    extra = [*dynsec.node_acls(t, C1, N1), Acl(AclType.PUBLISH_SEND, f"{t.base}/extra")]
    assert admin.ensure_role(node_user, extra) is True
    assert admin.ensure_role(node_user, dynsec.node_acls(t, C1, N1)) is True
    assert not n1.disconnected.wait(QUIET)
    info = admin.get_client(node_user)
    assert info is not None and set(info.roles) == {node_user, shared}

    # a new password through ensure_client: the old one stops working, the new one works
    new_password = secrets.token_hex(16)
    assert admin.ensure_client(node_user, new_password, [node_user, shared]) is True
    assert world.peer(node_user, world.node_passwords[N1]).wait_connack() is False
    assert world.peer(node_user, new_password).wait_connack() is True


# ---- what each credential may do ----------------------------------------------------------------


def test_node_acts_only_as_itself(world: World) -> None:
    t = world.topics
    control = world.control()
    n1 = world.node(N1)

    n1.publish(t.heartbeat(C1, N1), b"{}")
    wait_for(control, t.heartbeat(C1, N1))
    n1.publish(t.heartbeat(C1, N2), b"{}")
    n1.publish(t.presence(C1, N2), b'{"state":"offline"}', retain=True)
    n1.publish(t.hello(C2, N1), b"{}")
    assert control.drain(QUIET) == []

    # tasks: retained for both nodes; n1 reads only its own
    control.publish(t.task(C1, N2, "task-2"), b'{"id":"task-2"}', retain=True)
    control.publish(t.task(C1, N1, "task-1"), b'{"id":"task-1"}', retain=True)
    assert n1.subscribe(t.tasks_filter(C1, N2)) is False
    assert n1.subscribe(t.tasks_filter(C1, "+")) is False
    assert n1.subscribe(f"{t.base}/#") is False
    assert n1.drain(QUIET) == []
    assert n1.subscribe(t.tasks_filter(C1, N1)) is True
    assert topics_of(n1.drain(QUIET)) == {t.task(C1, N1, "task-1")}

    # a last-will on another node's presence topic: accepted at CONNECT, never delivered
    forger = world.node(N1, will=t.presence(C1, N2))
    forger.abort()
    assert control.drain(QUIET + 1) == []
    # its own presence topic: delivered (so the check above could have failed)
    honest = world.node(N1, will=t.presence(C1, N1))
    honest.abort()
    wait_for(control, t.presence(C1, N1))


def test_nodes_share_what_they_all_read_and_older_users_keep_their_whole_role(world: World) -> None:
    """Each node's own role holds only its own topics (Mosquitto 2.0 rewrites its whole dynsec file after
    every change, so a node's entry is kept small); what every node of the cluster reads is one shared role.
    A node user made with one whole role keeps it at the reconcile, untouched and connected; a new password
    (an enrolment again) gives it the two roles."""
    t, admin = world.topics, world.admin
    assert len(dynsec.node_acls(t, C1, N1)) == 9 and len(dynsec.whole_node_acls(t, C1, N1)) == 17
    control = world.control()
    n1 = world.node(N1)
    for topic in (t.control_presence(), t.cluster_metadata(C1), t.registration(C1, N1), t.tasks_filter(C1, N1)):
        assert n1.subscribe(topic) is True, topic
    assert n1.subscribe(t.cluster_metadata(C2)) is False
    control.publish(t.cluster_metadata(C1), b"doc", retain=True)
    control.publish(t.control_presence(), b'{"state":"online"}')
    wait_for(n1, t.cluster_metadata(C1), t.control_presence())
    control.publish(t.cluster_metadata(C1), b"", retain=True)

    # a user as made before the shared role: one role with every ACL
    old_user, old_password = dynsec.node_username(t, C1, "old-node"), secrets.token_hex(16)
    admin.ensure_role(old_user, dynsec.whole_node_acls(t, C1, "old-node"))
    admin.ensure_client(old_user, old_password, [old_user])
    old = world.connected(old_user, old_password)
    assert dynsec.ensure_node(admin, t, C1, "old-node", None, set()) == old_user  # the reconcile's call
    assert not old.disconnected.wait(QUIET)
    assert set(admin.get_role(old_user) or []) == set(dynsec.whole_node_acls(t, C1, "old-node"))
    info = admin.get_client(old_user)
    assert info is not None and info.roles == (old_user,)
    assert old.subscribe(t.control_presence()) is True
    # enrolled again: the two roles, and the old session is closed (its password changed)
    new_password = secrets.token_hex(16)
    dynsec.ensure_node(admin, t, C1, "old-node", new_password)
    assert old.disconnected.wait(10)
    info = admin.get_client(old_user)
    assert info is not None and set(info.roles) == {old_user, dynsec.nodes_rolename(t, C1)}
    assert set(admin.get_role(old_user) or []) == set(dynsec.node_acls(t, C1, "old-node"))
    again = world.connected(old_user, new_password)
    assert again.subscribe(t.control_presence()) is True


def test_an_enrolment_makes_the_shared_role_again_when_it_went_missing(mosq: Mosquitto) -> None:
    """The server remembers that a cluster's shared node role is there; when it went missing (its cluster was
    deleted through another server, then made again), the enrolment is refused once and the retry makes it."""
    from control.broker_accounts import DynsecAccounts

    t = Topics(unique("t"))
    accounts = DynsecAccounts(mosq.admin_url(), t, secrets.token_hex(16))
    accounts.client.connect()
    try:
        accounts.node_enrolled(C1, N1, secrets.token_hex(16))
        shared = dynsec.nodes_rolename(t, C1)
        accounts.node_removed(C1, N1)
        assert accounts.client.delete_role(shared)
        password = secrets.token_hex(16)
        with pytest.raises(DynsecCommandError, match="Role not found"):
            accounts.node_enrolled(C1, N2, password)
        accounts.node_enrolled(C1, N2, password)  # the agent asks again
        assert set(accounts.client.get_role(shared) or []) == set(dynsec.nodes_acls(t, C1))
        info = accounts.client.get_client(dynsec.node_username(t, C1, N2))
        assert info is not None and set(info.roles) == {dynsec.node_username(t, C1, N2), shared}
        node = Peer(mosq.port, dynsec.node_username(t, C1, N2), password)
        try:
            assert node.wait_connack(), node.reason
            assert node.subscribe(t.control_presence()) is True
        finally:
            node.close()
    finally:
        accounts.client.close()


def test_a_deleted_clusters_roles_go_after_their_users_let_go(mosq: Mosquitto) -> None:
    """Mosquitto 2.0.11 can crash (SIGSEGV) at its next change after a role that a user still has is
    deleted. A deleted cluster's shared roles go only after its leftover node users are deleted and its
    monitors lost the role; the broker then takes changes as before, and other clusters keep theirs."""
    from control.broker_accounts import DynsecAccounts

    t = Topics(unique("t"))
    accounts = DynsecAccounts(mosq.admin_url(), t, secrets.token_hex(16))
    accounts.client.connect()
    admin = accounts.client
    try:
        dynsec.ensure_node(admin, t, C1, N1, secrets.token_hex(16))  # left behind (an enrolment rolled back)
        dynsec.ensure_node(admin, t, C2, N2, secrets.token_hex(16))
        monitor = dynsec.ensure_monitor(admin, t, "alice", secrets.token_hex(16), [C1, C2])
        accounts._delete_cluster_roles(C1)  # what the reconcile does once C1's enrolment user is gone
        assert admin.ensure_role(unique("after-"), []) is True  # the broker is still there and takes changes
        assert admin.get_client(dynsec.node_username(t, C1, N1)) is None
        assert admin.get_role(dynsec.nodes_rolename(t, C1)) is None
        assert admin.get_role(dynsec.monitor_rolename(t, C1)) is None
        info = admin.get_client(monitor)
        assert info is not None and info.roles == (dynsec.monitor_rolename(t, C2),)
        info = admin.get_client(dynsec.node_username(t, C2, N2))
        assert info is not None and dynsec.nodes_rolename(t, C2) in info.roles
        assert admin.get_role(dynsec.nodes_rolename(t, C2)) is not None
        assert mosq.proc.alive()
    finally:
        accounts.client.close()


def test_enrolment_says_hello_only_in_its_cluster(world: World) -> None:
    t = world.topics
    control = world.control()
    enrol = world.enrolment(C1)

    for node in (N1, "brand-new"):
        enrol.publish(t.hello(C1, node), b"{}")
    wait_for(control, t.hello(C1, N1), t.hello(C1, "brand-new"))

    enrol.publish(t.heartbeat(C1, N1), b"{}")
    enrol.publish(t.presence(C1, N1), b'{"state":"offline"}', retain=True)
    enrol.publish(t.task_status(C1, N1), b"{}")
    enrol.publish(t.hello(C2, N1), b"{}")
    assert control.drain(QUIET) == []

    assert enrol.subscribe(t.registration(C1, N1)) is True
    assert enrol.subscribe(t.registration(C2, N1)) is False
    assert enrol.subscribe(t.tasks_filter(C1, N1)) is False
    control.publish(t.registration(C1, N1), b'{"accepted":true}')
    wait_for(enrol, t.registration(C1, N1))


def test_join_token_and_wrong_passwords_cannot_be_a_node(world: World) -> None:
    t = world.topics
    control = world.control()
    node_user = dynsec.node_username(t, C1, N1)
    assert world.peer(node_user, world.enrol_secret).wait_connack() is False
    assert world.peer(node_user, "wrong").wait_connack() is False
    assert world.peer(dynsec.enrol_username(t, C1), world.node_passwords[N1]).wait_connack() is False

    # a failed login with the client id of a live session leaves that session alone
    n1 = world.node(N1, client_id="agent-x")
    for username in (node_user, dynsec.node_username(t, C1, N2), "nobody"):
        intruder = world.peer(username, "wrong", client_id="agent-x")
        assert intruder.wait_connack() is False
        intruder.close()
    assert not n1.disconnected.wait(QUIET)
    n1.publish(t.heartbeat(C1, N1), b"{}")
    wait_for(control, t.heartbeat(C1, N1))


def test_removal_disconnects_and_token_rotation_does_not(world: World) -> None:
    t, admin = world.topics, world.admin
    control = world.control()
    n1, n2 = world.node(N1), world.node(N2)
    enrolling = world.enrolment(C1)

    assert dynsec.remove_node(admin, t, C1, N2) is True
    assert n2.disconnected.wait(10), "deleteClient left the removed node connected"
    assert world.peer(dynsec.node_username(t, C1, N2), world.node_passwords[N2]).wait_connack() is False
    assert admin.get_role(dynsec.node_username(t, C1, N2)) is None
    assert dynsec.remove_node(admin, t, C1, N2) is False

    # rotating the join token: enrolled nodes stay, the old secret stops working
    new_secret = secrets.token_hex(16)
    admin.set_password(dynsec.enrol_username(t, C1), new_secret)
    assert enrolling.disconnected.wait(10), "Mosquitto keeps sessions of a user whose password changed"
    assert not n1.disconnected.wait(QUIET)
    n1.publish(t.heartbeat(C1, N1), b"{}")
    wait_for(control, t.heartbeat(C1, N1))
    assert world.peer(dynsec.enrol_username(t, C1), world.enrol_secret).wait_connack() is False
    assert world.peer(dynsec.enrol_username(t, C1), new_secret).wait_connack() is True


def test_each_control_server_has_its_own_user(world: World) -> None:
    """Several servers of one control plane (docs/ha.md): each its own user with the shared role, so one
    server's start (which sets its password) never disconnects another."""
    t, admin = world.topics, world.admin
    secrets_ = [secrets.token_hex(16), secrets.token_hex(16)]
    ids = [dynsec.control_server_id(s) for s in secrets_]
    assert ids[0] != ids[1] and ids[0] == dynsec.control_server_id(secrets_[0])
    users = [dynsec.ensure_control(admin, t, s, i) for s, i in zip(secrets_, ids, strict=True)]
    assert users == [f"{t.root}.control.{i}" for i in ids]
    assert all(dynsec.parse_username(t, u) == ("control", None, None) for u in users)
    first, second = (world.connected(u, s) for u, s in zip(users, secrets_, strict=True))
    dynsec.ensure_control(admin, t, secrets_[0], ids[0])  # the first server starts again: its password is set
    assert first.disconnected.wait(10), "a shared user would have cut every server off here"
    assert not second.disconnected.wait(QUIET)
    assert second.subscribe(t.hello(C1, N1))
    world.node(N1).publish(t.hello(C1, N1), b"{}")
    wait_for(second, t.hello(C1, N1))
    with pytest.raises(ValueError, match="16 hex digits"):
        dynsec.control_username(t, "../x")


def test_monitor_reads_its_cluster_and_publishes_nothing(world: World) -> None:
    t = world.topics
    control = world.control()
    monitor = world.connected(dynsec.monitor_username(t, "alice"), world.monitor_password)
    for leaf in ("presence", "heartbeat", "task-status"):
        assert monitor.subscribe(f"{t.node_prefix(C1, '+')}/{leaf}") is True
    assert monitor.subscribe(t.control_presence()) is True
    assert monitor.subscribe(t.presence(C2, "+")) is False
    assert monitor.subscribe(t.tasks_filter(C1, N1)) is False
    assert monitor.subscribe(t.registration(C1, N1)) is False
    assert monitor.subscribe(f"{t.base}/#") is False

    n1 = world.node(N1)
    n1.publish(t.heartbeat(C1, N1), b"{}")
    n1.publish(t.presence(C1, N1), b'{"state":"online"}', retain=True)
    wait_for(monitor, t.heartbeat(C1, N1), t.presence(C1, N1))

    control.drain(0.3)
    monitor.publish(t.heartbeat(C1, N1), b"{}")
    monitor.publish(t.presence(C1, N1), b'{"state":"offline"}', retain=True)
    monitor.publish(t.hello(C1, N1), b"{}")
    monitor.publish(t.task(C1, N1, "x"), b"{}", retain=True)
    assert control.drain(QUIET) == []
    assert n1.subscribe(t.tasks_filter(C1, N1)) is True
    assert n1.drain(QUIET) == []


def test_users_survive_a_broker_restart(tmp_path: Path) -> None:
    """The plugin writes its file on every change: what glusterctl set up is still there after a restart."""
    _need_mosquitto()
    broker = start_mosquitto(tmp_path)
    try:
        t, password = Topics(unique("t")), secrets.token_hex(16)
        with DynsecClient(broker.admin_url()) as admin:
            dynsec.ensure_node(admin, t, C1, N1, password)
            admin.ensure_default_acl_access()
        broker.proc.stop()
        broker.proc.start()
        wait_until(lambda: port_open("127.0.0.1", broker.port), 15, what="mosquitto listening again")
        with DynsecClient(broker.admin_url()) as admin:
            assert admin.default_acl_access() == dynsec.DEFAULT_ACL_ACCESS
            assert set(admin.get_role(dynsec.node_username(t, C1, N1)) or []) == set(dynsec.node_acls(t, C1, N1))
        node = Peer(broker.port, dynsec.node_username(t, C1, N1), password)
        try:
            assert node.wait_connack(), node.reason
        finally:
            node.close()
    finally:
        broker.proc.stop()


def test_concurrent_calls_get_their_own_answers(world: World) -> None:
    """Answers are matched by correlationData, not by arrival order."""
    admin, t = world.admin, world.topics
    names = [dynsec.node_username(t, C1, N1), dynsec.node_username(t, C1, N2), dynsec.enrol_username(t, C1)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda i: (i, admin.get_client(names[i % 3])), range(60)))
    for i, info in results:
        assert info is not None and info.username == names[i % 3]
