"""The broker's users, kept in step with the database: dynsec users on Mosquitto, sessions on the embedded broker.

With Mosquitto's dynamic security plugin (``--mqtt-dynsec``) the control service logs in as the
dynsec admin given in ``--mqtt-url`` and keeps, through broker/dynsec.py: its own user, one
enrolment user per cluster (password: the join token's secret) and one user per enrolled node
(password: the node's own secret, known only at enrolment). At start and every
RECONCILE_SECONDS it brings the broker in line with the database: join tokens that changed,
clusters added or deleted, nodes removed. Node passwords are never reset (the database holds
only verifiers); a node whose user went missing must enrol again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from broker import dynsec
from broker.dynsec import DynsecClient, DynsecError
from broker.embedded import GlusterctlBroker
from broker.topics import Topics
from broker.url import MqttUrl
from control.services import events
from control.store.models import Cluster, Event, Node

log = logging.getLogger(__name__)

RECONCILE_SECONDS = 2.0
# an enrolment's broker user is made before its node row commits: the reconcile leaves it alone this long
FRESH_SECONDS = 60.0
DISCONNECT_TIMEOUT = 5.0


class EmbeddedAccounts:
    """The embedded broker checks each login against the database; a revoked node's live session is closed."""

    def __init__(self, broker: GlusterctlBroker, loop: asyncio.AbstractEventLoop, topics: Topics) -> None:
        self.broker, self.loop, self.topics = broker, loop, topics

    def _disconnect(self, cluster: str, node: str) -> None:
        username = dynsec.node_username(self.topics, cluster, node)
        future = asyncio.run_coroutine_threadsafe(self.broker.disconnect_user(username), self.loop)
        future.result(DISCONNECT_TIMEOUT)

    def node_enrolled(self, cluster: str, node: str, secret: str) -> None:
        self._disconnect(cluster, node)  # an agent still holding the replaced credential

    def node_removed(self, cluster: str, node: str) -> None:
        self._disconnect(cluster, node)

    def clusters_changed(self) -> None:
        return None  # enrolment logins are checked against the current join token


class DynsecAccounts:
    """Users and roles in Mosquitto's dynamic security plugin (see docs/mosquitto.md)."""

    def __init__(self, admin_url: MqttUrl, topics: Topics, control_password: str) -> None:
        self.topics = topics
        self.control_password = control_password
        self.client = DynsecClient(admin_url)
        self._lock = threading.Lock()
        self._secrets: dict[str, str] = {}  # cluster -> join secret the broker has
        self._fresh: dict[tuple[str, str], float] = {}  # (cluster, node) -> when its user was made
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None

    @property
    def control_username(self) -> str:
        return dynsec.control_username(self.topics)

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
        """Enrolment users follow the join tokens; with ``full`` also the control user, node users and leftovers."""
        with self._lock:
            clusters = {c.name: c.join_secret for c in Cluster.select(Cluster.name, Cluster.join_secret)}
            if full:
                dynsec.ensure_control(self.client, self.topics, self.control_password)
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
                    self._secrets.pop(str(cluster), None)
                elif kind == "node" and (cluster, node) not in enrolled and not self._is_fresh(cluster, node):
                    self.client.delete_client(username)
                    self.client.delete_role(username)
                elif kind == "node" and full and cluster and node:
                    dynsec.ensure_node(
                        self.client, self.topics, cluster, node, None
                    )  # roles and ACLs, not the password
                    enrolled.discard((cluster, node))
            if full:
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

    def _is_fresh(self, cluster: str | None, node: str | None) -> bool:
        made = self._fresh.get((str(cluster), str(node)))
        return made is not None and time.monotonic() - made < FRESH_SECONDS

    # ---- BrokerAccounts
    def node_enrolled(self, cluster: str, node: str, secret: str) -> None:
        with self._lock:
            self._fresh = {k: v for k, v in self._fresh.items() if time.monotonic() - v < FRESH_SECONDS}
            self._fresh[(cluster, node)] = time.monotonic()
            dynsec.ensure_node(self.client, self.topics, cluster, node, secret)

    def node_removed(self, cluster: str, node: str) -> None:
        with self._lock:
            self._fresh.pop((cluster, node), None)
            dynsec.remove_node(self.client, self.topics, cluster, node)

    def clusters_changed(self) -> None:
        """Called after the change committed: the new join token works as soon as the caller returns."""
        try:
            self.reconcile(full=False)
        except DynsecError as exc:
            log.warning("dynsec: enrolment users not updated now (retrying every %gs): %s", RECONCILE_SECONDS, exc)
