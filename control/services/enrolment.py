"""Node identity: enrolment with the join token, the node's own credential, re-enrolment grants.

The join token only enrols. An enrolment hello carries the join-token proof and the secret the
agent made for itself; the control service keeps only its verifier (``node_key``) in the node
row and, with Mosquitto, has the broker user of the node created before it answers. From then
on the node logs in and says hello with its own credential. A name that holds a credential
enrols again only after ``node remove`` or within the window an admin opened with ``node reenrol``.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Protocol

from broker.messages import Hello, check_node_proof, check_proof, make_join_token, node_key
from control.errors import NotFound
from control.services import events
from control.store.db import first, locked
from control.store.models import Cluster, Node, User
from control.store.models import database_proxy as db

log = logging.getLogger(__name__)

# how long an admin's 'node reenrol' grant stays usable
REENROL_WINDOW_SECONDS = 15 * 60


class BrokerAccounts(Protocol):
    """The broker's users, kept in step with enrolments (dynsec users on Mosquitto, sessions on the embedded broker)."""

    def node_enrolled(self, cluster: str, node: str, secret: str) -> None:
        """The node's broker user now has password ``secret`` (raise when that failed: the enrolment is refused)."""

    def node_removed(self, cluster: str, node: str) -> None:
        """The node's credential is gone: delete its broker user and close its live session."""

    def clusters_changed(self) -> None:
        """A cluster was added or deleted, or its join token rotated: bring the enrolment users up to date."""

    def user_password(self, user: str, password: str) -> None:
        """A user's password, seen at create or login (after it committed): its monitor's broker password.

        Must not block on the broker (it runs in the login request) and must never log the password.
        """

    def grants_changed(self) -> None:
        """A grant was given or revoked, or a user deleted (committed): monitors read what the grants allow."""


class NoAccounts:
    """A broker that checks every login against the database itself, or that has no users at all."""

    def node_enrolled(self, cluster: str, node: str, secret: str) -> None:
        return None

    def node_removed(self, cluster: str, node: str) -> None:
        return None

    def clusters_changed(self) -> None:
        return None

    def user_password(self, user: str, password: str) -> None:
        return None

    def grants_changed(self) -> None:
        return None


_accounts: BrokerAccounts = NoAccounts()


def use_accounts(accounts: BrokerAccounts) -> None:
    """Set the process's broker accounts (the server does, at start)."""
    global _accounts
    _accounts = accounts


def accounts() -> BrokerAccounts:
    return _accounts


def remove_fix(cluster: str, node: str) -> str:
    return (
        f"an admin must run 'glusterctl node remove -c {cluster} {node}' first, "
        f"or allow one re-enrolment with 'glusterctl node reenrol -c {cluster} {node}'"
    )


def check_enrolment(cluster: Cluster, node: Node | None, node_name: str, hello: Hello, now: float) -> str | None:
    """Why this enrolment hello is refused, or None when it may enrol (``hello.node_secret`` is set)."""
    token = make_join_token(cluster.name, cluster.join_secret)
    if not check_proof(token, node_name, hello.agent_id, hello.epoch, hello.proof):
        return (
            f"wrong join token for cluster {cluster.name!r}: get the current one with "
            f"'glusterctl cluster token {cluster.name}'"
        )
    if node is None or not node.credential_hash:
        return None
    assert hello.node_secret is not None
    if hmac.compare_digest(node.credential_hash, node_key(hello.node_secret)):
        return None  # the same agent asking again (its first answer was lost): same secret, same answer
    if node.reenrol_until is not None and now <= node.reenrol_until:
        return None
    return f"node {node_name!r} is already enrolled in cluster {cluster.name!r}: {remove_fix(cluster.name, node_name)}"


def check_node_hello(cluster: Cluster, node: Node | None, node_name: str, hello: Hello) -> str | None:
    """Why this hello of an enrolled node (no ``node_secret``) is refused, or None."""
    if node is None or not node.credential_hash:
        return (
            f"node {node_name!r} is not enrolled in cluster {cluster.name!r} (removed?): delete the agent's "
            f"node.secret and start it once with the join token ('glusterctl cluster token {cluster.name}')"
        )
    if not check_node_proof(node.credential_hash, cluster.name, node_name, hello.agent_id, hello.epoch, hello.proof):
        return (
            f"node {node_name!r} proved a credential that is not its current one (re-enrolled elsewhere?): "
            f"{remove_fix(cluster.name, node_name)}"
        )
    return None


def set_credential(node: Node, secret: str) -> bool:
    """Store the verifier of the node's new secret and close any re-enrolment window; True if it changed."""
    verifier = node_key(secret)
    changed = node.credential_hash != verifier
    node.credential_hash = verifier
    node.reenrol_until = None
    return changed


def allow_reenrol(cluster: Cluster, name: str, actor: User, now: float | None = None) -> Node:
    """Let ``name`` enrol once more within REENROL_WINDOW_SECONDS (its current credential stays valid until then).

    The caller checked the permission (admin on the node); ``actor`` is recorded.
    """
    now = now or time.time()
    with db.atomic():
        node = first(locked(Node.select().where((Node.cluster == cluster) & (Node.name == name))))
        if node is None:
            raise NotFound(
                f"no node {name!r} in cluster {cluster.name!r}: a new node enrols with the join token, "
                "no re-enrolment needed"
            )
        node.reenrol_until = now + REENROL_WINDOW_SECONDS
        node.save()
        events.record(
            "node.reenrol_allowed", cluster=cluster.name, subject=name, until=node.reenrol_until, by=actor.name
        )
    log.info(
        "cluster %s node %s: re-enrolment allowed by %s for %ds", cluster.name, name, actor.name, REENROL_WINDOW_SECONDS
    )
    return node
