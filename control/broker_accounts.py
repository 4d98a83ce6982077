"""The broker's users, kept in step with the database: dynsec users on Mosquitto, sessions on the embedded broker.

With Mosquitto's dynamic security plugin (``--mqtt-dynsec``) the control service logs in as the
dynsec admin given in ``--mqtt-url`` and keeps, through broker/dynsec.py: its own user, one
enrolment user per cluster (password: the join token's secret) and one user per enrolled node
(password: the node's own secret, known only at enrolment). At start and every
RECONCILE_SECONDS it brings the broker in line with the database: join tokens that changed,
clusters added or deleted, nodes removed. Node passwords are never reset (the database holds
only verifiers); a node whose user went missing must enrol again.

Monitors: each glusterctl user has the broker user ``ROOT.user.NAME`` whose roles are the shared
read-only roles of exactly the clusters the user may read (``authz.Scope.monitor_clusters``),
disabled while there are none. Its password is the user's own, which the server sees only at
``user create`` and at login: it is handed to the broker then (the database keeps only its
argon2 hash), so a user created before ``--mqtt-dynsec`` was turned on must log in once before
MQTT monitoring works. Grant changes, user and cluster deletions reach the broker through the
same reconcile pass as the node users.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable

from broker import dynsec
from broker.dynsec import DynsecClient, DynsecError
from broker.process import BrokerProcess
from broker.topics import Topics
from broker.url import MqttUrl
from control.services import authz, events
from control.store.models import Cluster, Event, Node, User

log = logging.getLogger(__name__)

RECONCILE_SECONDS = 2.0
# an enrolment's broker user is made before its node row commits: the reconcile leaves it alone this long
FRESH_SECONDS = 60.0


class EmbeddedAccounts:
    """The embedded broker checks each login against the database; a revoked node's live session is closed,
    and so is a monitor's whose clusters changed (a grant revoked, its user or a cluster deleted)."""

    def __init__(self, broker: BrokerProcess, topics: Topics) -> None:
        self.broker, self.topics = broker, topics

    def _disconnect(self, cluster: str, node: str) -> None:
        username = dynsec.node_username(self.topics, cluster, node)
        if self.broker.may_have_sessions(username):  # a first enrolment has none: no round trip through a busy loop
            self.broker.disconnect_user(username)

    def node_enrolled(self, cluster: str, node: str, secret: str) -> None:
        self._disconnect(cluster, node)  # an agent still holding the replaced credential

    def node_removed(self, cluster: str, node: str) -> None:
        self._disconnect(cluster, node)

    def _recheck_monitors(self) -> None:
        try:
            self.broker.recheck_monitors()
        except TimeoutError:
            log.warning("the embedded broker did not recheck its MQTT monitors in time")

    def clusters_changed(self) -> None:
        # enrolment logins are checked against the current join token; a deleted cluster's monitors go
        self._recheck_monitors()

    def user_password(self, user: str, password: str) -> None:
        return None  # monitor logins are checked against the database

    def grants_changed(self) -> None:
        # a monitor's clusters are read from its grants at login; a session whose clusters changed is closed
        self._recheck_monitors()


class DynsecAccounts:
    """Users and roles in Mosquitto's dynamic security plugin (see docs/mosquitto.md)."""

    def __init__(self, admin_url: MqttUrl, topics: Topics, control_password: str, hold_nodes: bool = False) -> None:
        self.topics = topics
        # a restore from the agents' copies (control/services/restore.py): the database has no nodes yet, and
        # the agents log in with their node users to offer their copies; keep every node user until released
        self.holding_nodes = hold_nodes
        # several servers (docs/ha.md): only the leader, which handles the enrolments, deletes node users
        # it does not find in the database (another server's enrolment in flight is not in its ``_fresh``)
        self.is_leader: Callable[[], bool] = lambda: True
        self.control_password = control_password
        self.client = DynsecClient(admin_url)
        self._lock = threading.Lock()
        self._secrets: dict[str, str] = {}  # cluster -> join secret the broker has
        self._fresh: dict[tuple[str, str], float] = {}  # (cluster, node) -> when its user was made
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None
        # monitors: passwords waiting for the next pass (held only until then), what the broker has
        self._password_lock = threading.Lock()
        self._passwords: dict[str, str] = {}
        self._given: dict[str, bytes] = {}  # user -> keyed digest of the password the broker has
        self._digest_key = secrets.token_bytes(32)
        self._monitors: dict[str, tuple[str, ...]] = {}  # user -> clusters its broker user reads
        self._monitor_roles: set[str] = set()  # shared monitor roles known to be up to date
        self._node_roles: set[str] = set()  # the clusters' shared node roles known to be up to date
        self._monitors_due = True

    @property
    def control_username(self) -> str:
        """This server's own user: servers sharing the broker (docs/ha.md) each have theirs."""
        return dynsec.control_username(self.topics, dynsec.control_server_id(self.control_password))

    # ---- lifecycle
    def start(self) -> None:
        """Connect as the dynsec admin and reconcile once (DynsecError when that fails), then keep reconciling."""
        self.client.connect()
        self.reconcile(full=True)
        self._unsubscribe = events.subscribe(self._on_event)
        self._thread = threading.Thread(target=self._loop, name="dynsec-reconcile", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._unsubscribe:
            self._unsubscribe()
        if self._thread:
            self._thread.join(timeout=5)
        self.client.close()

    def _on_event(self, event: Event) -> None:
        if event.kind.startswith("cluster."):
            self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(RECONCILE_SECONDS)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.reconcile(full=False)
            except DynsecError as exc:
                log.warning("dynsec reconcile failed (retrying in %gs): %s", RECONCILE_SECONDS, exc)
            except Exception:
                log.exception("dynsec reconcile failed")

    # ---- reconcile
    def reconcile(self, full: bool) -> None:
        """Enrolment users follow the join tokens, monitors their grants (when due); with ``full`` also the control
        user, node users and leftovers."""
        with self._lock:
            clusters = {c.name: c.join_secret for c in Cluster.select(Cluster.name, Cluster.join_secret)}
            if full:
                dynsec.ensure_control(
                    self.client, self.topics, self.control_password, dynsec.control_server_id(self.control_password)
                )
                self._monitor_roles.clear()
                self._node_roles.clear()
            if full or self._monitors_due or self._passwords:
                self._monitors_due = False
                try:
                    self._reconcile_monitors(full)
                except BaseException:
                    self._monitors_due = True
                    raise
            for name, secret in clusters.items():
                if self._secrets.get(name) != secret:
                    dynsec.ensure_enrolment(self.client, self.topics, name, secret)
                    self._secrets[name] = secret
                    log.info("dynsec: enrolment user of cluster %s has the current join token", name)
            enrolled = {
                (n.cluster.name, n.name)
                for n in Node.select(Node.name, Node.credential_hash, Cluster.name)
                .join(Cluster)
                .where(Node.credential_hash.is_null(False))
            }
            for username in self.client.list_clients():
                parsed = dynsec.parse_username(self.topics, username)
                if parsed is None:
                    continue
                kind, cluster, node = parsed
                if kind == "enrol" and cluster not in clusters:
                    self.client.delete_client(username)
                    self.client.delete_role(username)
                    self._delete_cluster_roles(str(cluster))
                    self._secrets.pop(str(cluster), None)
                elif kind == "node" and (cluster, node) not in enrolled and self.holding_nodes:
                    continue  # restoring: its node may come back from the copies
                elif (
                    kind == "node"
                    and (cluster, node) not in enrolled
                    and not self._is_fresh(cluster, node)
                    and self.is_leader()
                ):
                    self.client.delete_client(username)
                    self.client.delete_role(username)
                elif kind == "node" and full and cluster and node:
                    # roles and ACLs, not the password
                    dynsec.ensure_node(self.client, self.topics, cluster, node, None, self._node_roles)
                    enrolled.discard((cluster, node))
            if full:
                prefixes = (
                    dynsec.monitor_rolename(self.topics, "x")[:-1],
                    dynsec.nodes_rolename(self.topics, "x")[:-1],
                )
                gone = {
                    rolename[len(prefix) :]
                    for rolename in self.client.list_roles()
                    for prefix in prefixes
                    if rolename.startswith(prefix) and rolename[len(prefix) :] not in clusters
                }
                for cluster in sorted(gone):
                    self._delete_cluster_roles(cluster)
                for cluster, node in sorted(enrolled):
                    log.error(
                        "dynsec: enrolled node %s of cluster %s has no broker user (dynsec file restored?): it must "
                        "enrol again: 'glusterctl node reenrol -c %s %s', then delete its node.secret and start it "
                        "with the join token",
                        node,
                        cluster,
                        cluster,
                        node,
                    )

    def release_nodes(self) -> None:
        """The restore is done: node users of nodes that did not come back go, the others get their roles again."""
        with self._lock:
            self.holding_nodes = False
        self.reconcile(full=True)

    def _reconcile_monitors(self, full: bool) -> None:
        """Each user's broker user reads exactly the clusters its grants let it read (caller holds ``_lock``)."""
        with self._password_lock:
            passwords, self._passwords = self._passwords, {}
        try:
            present = {
                parsed[1]
                for name in self.client.list_clients()
                if (parsed := dynsec.parse_username(self.topics, name)) is not None and parsed[0] == "user"
            }
            accounts = list(User.select())
            for account in accounts:
                watched = tuple(authz.Scope.of(account).monitor_clusters())
                password = passwords.get(account.name)
                if not full and password is None and self._monitors.get(account.name) == watched:
                    continue
                if password is None and account.name not in present:
                    if watched and self._monitors.get(account.name) != watched:
                        log.info(
                            "dynsec: user %s may monitor %s over MQTT once it logs in (glusterctl login): the "
                            "broker needs its password",
                            account.name,
                            ", ".join(watched),
                        )
                    self._monitors[account.name] = watched
                    self._given.pop(account.name, None)  # the broker lost it: the next login hands it over
                    continue
                dynsec.ensure_monitor(self.client, self.topics, account.name, password, watched, self._monitor_roles)
                self._monitors[account.name] = watched
                if password is not None:
                    self._given[account.name] = self._digest(password)
                    passwords.pop(account.name)
            names = {a.name for a in accounts}
            for name in present - names:
                self.client.delete_client(dynsec.monitor_username(self.topics, str(name)))
            for name in set(self._monitors) - names:
                self._monitors.pop(name, None)
                self._given.pop(name, None)
        finally:
            with self._password_lock:  # not handed over yet (an error): try again at the next pass
                self._passwords = {**passwords, **self._passwords}

    def _delete_cluster_roles(self, cluster: str) -> None:
        """A deleted cluster's shared roles: its monitors' and its nodes'.

        Mosquitto 2.0.11 can crash at its next change when a role that a user still has is deleted, so the
        users let go first: node users of the cluster left behind (an enrolment rolled back, a restore that
        held them) are deleted, and monitors that still read it lose the role."""
        shared = {
            dynsec.monitor_rolename(self.topics, cluster): ("monitor", self._monitor_roles),
            dynsec.nodes_rolename(self.topics, cluster): ("node", self._node_roles),
        }
        for username, roles in self.client.list_client_roles().items():
            held = [role for role in roles if role in shared]
            if not held:
                continue
            parsed = dynsec.parse_username(self.topics, username)
            if parsed is not None and parsed[:2] == ("node", cluster):
                self.client.delete_client(username)
                self.client.delete_role(username)
                continue
            for role in held:
                self.client.remove_client_role(username, role)
                log.info("dynsec: user %s no longer has the role %s (cluster %s deleted)", username, role, cluster)
        for rolename, (what, known) in shared.items():
            if self.client.delete_role(rolename):
                log.info("dynsec: deleted the %s role of cluster %s", what, cluster)
            known.discard(rolename)

    def _digest(self, password: str) -> bytes:
        return hmac.new(self._digest_key, password.encode(), hashlib.sha256).digest()

    def _is_fresh(self, cluster: str | None, node: str | None) -> bool:
        made = self._fresh.get((str(cluster), str(node)))
        return made is not None and time.monotonic() - made < FRESH_SECONDS

    # ---- BrokerAccounts
    def node_enrolled(self, cluster: str, node: str, secret: str) -> None:
        with self._lock:
            self._fresh = {k: v for k, v in self._fresh.items() if time.monotonic() - v < FRESH_SECONDS}
            self._fresh[(cluster, node)] = time.monotonic()
            try:
                dynsec.ensure_node(self.client, self.topics, cluster, node, secret, self._node_roles)
            except DynsecError:
                # the shared role may be what is missing (deleted with its cluster elsewhere): the agent's retry
                # makes sure of it again
                self._node_roles.discard(dynsec.nodes_rolename(self.topics, cluster))
                raise

    def node_removed(self, cluster: str, node: str) -> None:
        with self._lock:
            self._fresh.pop((cluster, node), None)
            dynsec.remove_node(self.client, self.topics, cluster, node)

    def clusters_changed(self) -> None:
        """Called after the change committed: the new join token works as soon as the caller returns."""
        self._monitors_due = True  # a deleted cluster's monitor role goes, and with it the users' access
        try:
            self.reconcile(full=False)
        except DynsecError as exc:
            log.warning("dynsec: enrolment users not updated now (retrying every %gs): %s", RECONCILE_SECONDS, exc)

    def grants_changed(self) -> None:
        """Called after a grant, revoke or user deletion committed: access follows before the caller returns."""
        self._monitors_due = True
        try:
            self.reconcile(full=False)
        except DynsecError as exc:
            log.warning("dynsec: monitor users not updated now (retrying every %gs): %s", RECONCILE_SECONDS, exc)

    def user_password(self, user: str, password: str) -> None:
        """The user's password, seen at create or login: the next pass gives it to the broker (never blocks).

        A password the broker already has is not sent again (that would disconnect the user's sessions).
        """
        if hmac.compare_digest(self._given.get(user, b""), self._digest(password)):
            return
        with self._password_lock:
            self._passwords[user] = password
        self._wake.set()
