"""Node identity: enrolment with the join token, the node's own credential, re-enrolment grants.

The join token only enrols. An enrolment hello carries the join-token proof and the secret the
agent made for itself; the control service keeps only its verifier (``node_key``) in the node
row and, with Mosquitto, has the broker user of the node created before it answers. From then
on the node logs in and says hello with its own credential. A name that holds a credential
enrols again only after ``node remove`` or within the window an admin opened with ``node reenrol``.
"""

from __future__ import annotations

import base64
import hmac
import logging
import os
import time
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from broker.messages import (
    Hello,
    certificate_enrolment_message,
    check_name,
    check_node_proof,
    check_proof,
    make_join_token,
    node_key,
)
from control import tls
from control.errors import Conflict, InvalidInput, NotFound
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


_node_ca: str | None = None  # the CA that signs node certificates (the server's own), if any


def use_node_ca(path: str | None) -> None:
    """Accept node certificates issued by the CA certificate at ``path`` as enrolment credentials."""
    global _node_ca
    _node_ca = path


def node_ca() -> str | None:
    return _node_ca


def check_certificate(cluster: Cluster, node_name: str, hello: Hello) -> str | None:
    """Why this certificate enrolment is refused: a certificate of our CA for this very node, whose key signed."""
    if _node_ca is None:
        return "this control service has no CA of its own and accepts no node certificates: enrol with the join token"
    try:
        cert_cluster, cert_node, cert = tls.verify_node_certificate(_node_ca, hello.certificate or "")
    except tls.TlsError as exc:
        return f"node certificate refused: {exc}"
    if (cert_cluster, cert_node) != (cluster.name, node_name):
        return (
            f"node certificate refused: it was issued for node {cert_node!r} of cluster {cert_cluster!r}, "
            f"not for node {node_name!r} of cluster {cluster.name!r}"
        )
    digest = cert.fingerprint(hashes.SHA256()).hex()
    assert hello.node_secret is not None
    message = certificate_enrolment_message(cluster.name, node_name, hello.agent_id, hello.epoch, hello.node_secret)
    try:
        signature = base64.b64decode(hello.signature, validate=True)
    except ValueError:
        signature = b""
    if not hmac.compare_digest(digest, hello.proof) or not tls.check_signature(cert, signature, message):
        return "node certificate refused: the hello is not signed with the certificate's key"
    return None


def check_enrolment(cluster: Cluster, node: Node | None, node_name: str, hello: Hello, now: float) -> str | None:
    """Why this enrolment hello is refused, or None when it may enrol (``hello.node_secret`` is set).

    The enrolment credential is the join token (``proof``) or a node certificate (``certificate``).
    """
    if hello.certificate is not None:
        why = check_certificate(cluster, node_name, hello)
        if why is not None:
            return why
    elif not check_proof(
        make_join_token(cluster.name, cluster.join_secret), node_name, hello.agent_id, hello.epoch, hello.proof
    ):
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


def issue_certificate(cluster: Cluster, node_name: str, csr: str, days: int, actor: User) -> tuple[str, str, float]:
    """A node certificate for ``node_name`` from the CSR, the CA certificate (both PEM) and the expiry.

    The caller checked the permission (admin on the node). The certificate enrols that node only,
    like the join token does for any name: an enrolled name still needs 'node reenrol' or 'node remove'.
    """
    check_name("node", node_name)
    if _node_ca is None:
        raise Conflict(
            "this server has no CA of its own for node certificates: they are accepted on the embedded "
            "broker's TLS listener (glusterctl server --mqtts HOST:PORT); without it, enrol with the join token"
        )
    try:
        pem = tls.sign_node_csr(os.path.dirname(_node_ca), csr, cluster.name, node_name, days)
    except tls.TlsError as exc:
        raise InvalidInput(str(exc)) from None
    cert = x509.load_pem_x509_certificate(pem.encode())
    until = cert.not_valid_after_utc.timestamp()
    events.record(
        "node.certificate_issued",
        cluster=cluster.name,
        subject=node_name,
        serial=f"{cert.serial_number:x}",
        until=until,
        by=actor.name,
    )
    log.info(
        "cluster %s node %s: node certificate %x issued by %s, valid until %s",
        cluster.name,
        node_name,
        cert.serial_number,
        actor.name,
        cert.not_valid_after_utc.isoformat(),
    )
    with open(_node_ca) as fh:
        return pem, fh.read(), until
