"""Node registration and presence, driven by what agents publish.

Presence cannot lie (design invariant 4): every agent connection has an epoch that only grows;
the node row remembers the epoch of the connection it trusts, and a death notice (last-will)
or heartbeat from any other epoch never changes the node's state.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from broker.messages import (
    Heartbeat,
    Hello,
    NodeState,
    Presence,
    Registration,
    TaskKind,
    check_name,
)
from control.errors import Conflict, NotFound
from control.services import enrolment, events, heartbeats, metrics
from control.services.tasks import OPEN_STATES, TaskEngine
from control.store.db import first, locked
from control.store.models import Brick, Cluster, Node, Task, Volume
from control.store.models import database_proxy as db

log = logging.getLogger(__name__)

# A node whose heartbeats stop for this many intervals is Unreachable even if no last-will came.
MISSED_HEARTBEATS = 3
MIN_SILENCE_SECONDS = 5.0


def _set_state(node: Node, state: NodeState, why: str, now: float) -> None:
    if node.state == state.value:
        return
    log.info("cluster %s node %s: %s -> %s (%s)", node.cluster.name, node.name, node.state, state.value, why)
    node.state = state.value
    node.state_changed_at = now
    events.record("node.state", cluster=node.cluster.name, subject=node.name, state=state.value, reason=why)


def heartbeat_interval(node: Node) -> float:
    return float((node.facts or {}).get("heartbeat_interval") or 10.0)


def silence_limit(node: Node) -> float:
    return max(MISSED_HEARTBEATS * heartbeat_interval(node), MIN_SILENCE_SECONDS)


def handle_hello(cluster_name: str, node_name: str, hello: Hello, now: float | None = None) -> Registration:
    try:
        return _handle_hello(cluster_name, node_name, hello, now or time.time())
    except _NotEnrolled as exc:
        log.warning("cluster %s node %s: enrolment failed: %s", cluster_name, node_name, exc)
        return Registration(accepted=False, epoch=hello.epoch, nonce=hello.nonce, reason=str(exc))


def _handle_hello(cluster_name: str, node_name: str, hello: Hello, now: float) -> Registration:
    """Check a Hello (an enrolment or an enrolled node's) and register the node Online.

    An accepted enrolment stores the verifier of the node's new secret and has the broker user
    made (``enrolment.accounts()``) before the answer goes out; the Registration tells the
    agent why when it is refused.
    """

    def refuse(reason: str) -> Registration:
        log.warning("cluster %s node %s: registration refused: %s", cluster_name, node_name, reason)
        return Registration(accepted=False, epoch=hello.epoch, nonce=hello.nonce, reason=reason)

    try:
        check_name("node", node_name)
    except ValueError as exc:
        return refuse(str(exc))
    enrolling = hello.node_secret is not None
    with db.atomic():
        cluster = Cluster.get_or_none(Cluster.name == cluster_name)
        if cluster is None:
            return refuse(
                f"unknown cluster {cluster_name!r}: the join token names a cluster this control service does not have"
            )
        node = first(locked(Node.select().where((Node.cluster == cluster) & (Node.name == node_name))))
        if enrolling:
            why = enrolment.check_enrolment(cluster, node, node_name, hello, now)
        else:
            why = enrolment.check_node_hello(cluster, node, node_name, hello)
        if why is not None:
            return refuse(why)
        if (
            node is not None
            and node.agent_id != hello.agent_id
            and node.state == NodeState.ONLINE.value
            and now - node.last_seen_at < silence_limit(node)
        ):
            return refuse(
                f"node name {node_name!r} is already connected from another agent "
                f"(agent {node.agent_id[:8]}, address {node.address or '?'}); stop that agent or use another --node"
            )
        if node is not None and hello.epoch < node.epoch and node.agent_id == hello.agent_id:
            return refuse(f"stale connection (epoch {hello.epoch} < {node.epoch})")
        facts = hello.facts.model_dump()
        new_credential = False
        if node is None:
            node = Node(
                cluster=cluster,
                name=node_name,
                state=NodeState.ONLINE.value,
                state_changed_at=now,
                last_seen_at=now,
                agent_id=hello.agent_id,
                epoch=hello.epoch,
                facts={},
            )
            _apply_facts(node, facts)
            assert hello.node_secret is not None  # a node row is only ever made by an enrolment
            new_credential = enrolment.set_credential(node, hello.node_secret)
            node.save(force_insert=True)
            events.record("node.registered", cluster=cluster_name, subject=node_name, address=node.address)
            events.record(
                "node.state", cluster=cluster_name, subject=node_name, state=NodeState.ONLINE.value, reason="registered"
            )
            log.info("cluster %s node %s: enrolled and registered (epoch %d)", cluster_name, node_name, hello.epoch)
        else:
            new_credential = hello.node_secret is not None and enrolment.set_credential(node, hello.node_secret)
            if new_credential:
                events.record("node.enrolled", cluster=cluster_name, subject=node_name, agent=hello.agent_id[:8])
                log.info("cluster %s node %s: enrolled again (agent %s)", cluster_name, node_name, hello.agent_id[:8])
            node.agent_id = hello.agent_id
            node.epoch = hello.epoch
            node.last_seen_at = now
            _apply_facts(node, facts)
            _set_state(node, NodeState.ONLINE, f"connected (epoch {hello.epoch})", now)
            node.save()
        if new_credential and hello.node_secret is not None:
            # inside the transaction: if the broker user cannot be made, nothing is stored either
            # (an enrolment asked again with the same secret already has its user: setting the same
            # password again would make Mosquitto drop the node's new session)
            try:
                enrolment.accounts().node_enrolled(cluster_name, node_name, hello.node_secret)
            except Exception as exc:
                log.exception("cluster %s node %s: broker user could not be made", cluster_name, node_name)
                raise _NotEnrolled(
                    f"the control service could not create the node's broker user ({exc}); retry"
                ) from exc
    return Registration(accepted=True, epoch=hello.epoch, nonce=hello.nonce)


class _NotEnrolled(Exception):
    """The enrolment was checked but could not be completed; the transaction is rolled back."""


def epoch_is_current(cluster_name: str, node_name: str, epoch: int) -> bool:
    """True if ``epoch`` is the epoch of the node's registered connection."""
    node = first(Node.select(Node.epoch).join(Cluster).where((Cluster.name == cluster_name) & (Node.name == node_name)))
    return node is not None and node.epoch == epoch


def _apply_facts(node: Node, facts: dict[str, Any]) -> None:
    node.address = facts.get("address") or node.address
    node.hostname = facts.get("hostname") or node.hostname
    node.agent_version = facts.get("agent_version") or node.agent_version
    node.glusterfs_version = facts.get("glusterfs_version") or node.glusterfs_version
    node.facts = {**(node.facts or {}), **{k: v for k, v in facts.items() if v is not None}}


def _trusted(cluster_name: str, node_name: str, epoch: int) -> Node | None:
    node = first(
        locked(
            Node.select(Node, Cluster).join(Cluster).where((Cluster.name == cluster_name) & (Node.name == node_name)),
            of=Node,
        )
    )
    if node is None or node.epoch != epoch:
        return None
    return node


def handle_presence(cluster_name: str, node_name: str, presence: Presence, now: float | None = None) -> None:
    now = now or time.time()
    with db.atomic():
        node = _trusted(cluster_name, node_name, presence.epoch)
        if node is None:
            log.info(
                "cluster %s node %s: ignoring %s presence of epoch %d (not the current connection)",
                cluster_name,
                node_name,
                presence.state,
                presence.epoch,
            )
            return
        if presence.state == "offline":
            _set_state(node, NodeState.UNREACHABLE, "agent connection lost (last-will)", now)
        else:
            node.last_seen_at = now
            _set_state(node, NodeState.ONLINE, "presence online", now)
        node.save()


def handle_heartbeat(cluster_name: str, node_name: str, beat: Heartbeat, now: float | None = None) -> bool:
    """Record a heartbeat; False when it is from a connection the control service does not trust."""
    now = now or time.time()
    with db.atomic():
        node = _trusted(cluster_name, node_name, beat.epoch)
        if node is None:
            metrics.COUNTS.add("heartbeats_dropped")
            return False
        node.last_seen_at = now
        _apply_facts(node, beat.facts.model_dump())
        heartbeats.apply_heartbeat(cluster_name, node, beat.bricks, beat.shds, beat.devices, now)
        _set_state(node, NodeState.ONLINE, "heartbeat", now)
        node.save()
    return True


def sweep_silent(now: float | None = None) -> int:
    """Mark Online nodes whose heartbeats stopped Unreachable (a lost last-will must not leave them Online)."""
    now = now or time.time()
    count = 0
    for candidate in Node.select(Node.id, Node.last_seen_at, Node.facts).where(Node.state == NodeState.ONLINE.value):
        if now - candidate.last_seen_at <= silence_limit(candidate):
            continue
        with db.atomic():  # look again under the lock: a heartbeat may have come meanwhile
            node = first(locked(Node.select(Node, Cluster).join(Cluster).where(Node.id == candidate.id), of=Node))
            if node is None or node.state != NodeState.ONLINE.value or now - node.last_seen_at <= silence_limit(node):
                continue
            _set_state(node, NodeState.UNREACHABLE, f"no heartbeat for {now - node.last_seen_at:.0f}s", now)
            node.save()
        count += 1
    return count


def list_nodes(cluster: Cluster | None = None) -> list[Node]:
    query = Node.select(Node, Cluster).join(Cluster)
    if cluster is not None:
        query = query.where(Node.cluster == cluster)
    return [*query.order_by(Cluster.name, Node.name)]


def get(cluster: Cluster, name: str) -> Node:
    node = Node.get_or_none((Node.cluster == cluster) & (Node.name == name))
    if node is None:
        raise NotFound(f"no node {name!r} in cluster {cluster.name!r}; see 'glusterctl node list -c {cluster.name}'")
    return node


BRICK_LOST = "Lost"  # the state of a brick whose node was removed with --force
NODE_REMOVED_REASON = "NODE_REMOVED: node removed"


def remove(cluster: Cluster, name: str, force: bool = False, engine: TaskEngine | None = None) -> None:
    """Forget a node and its credential (its broker user goes; its agent is refused from then on).

    Refused while it is Online or hosts bricks, unless ``force`` (its bricks are then marked Lost).
    Its open tasks fail with reason NODE_REMOVED, so no operation waits for it.
    """
    with db.atomic():
        node = get(cluster, name)
        if node.state == NodeState.ONLINE.value and not force:
            raise Conflict(
                f"node {name!r} is Online: stop its agent first, or pass --force (its agent is disconnected "
                "and refused; it can enrol again with the join token after deleting its node.secret)"
            )
        hosted = [
            *Brick.select(Brick, Volume)
            .join(Volume)
            .where((Volume.cluster == cluster) & (Brick.node_name == name))
            .order_by(Volume.name, Brick.index)
        ]
        if hosted and not force:
            names = sorted({b.volume.name for b in hosted})
            raise Conflict(
                f"node {name!r} hosts {len(hosted)} bricks of volume(s) {', '.join(names)}: delete those volumes "
                "first, or pass --force to remove it anyway (its bricks are marked Lost)"
            )
        for brick in hosted:
            brick.state, brick.pid, brick.state_changed_at = BRICK_LOST, None, time.time()
            brick.save()
            events.record(
                "brick.state",
                cluster=cluster.name,
                subject=f"{brick.volume.name}:{name}:{brick.path}",
                state=BRICK_LOST,
                reason="node removed with --force",
            )
        if hosted:
            log.warning("cluster %s node %s: %d bricks marked %s", cluster.name, name, len(hosted), BRICK_LOST)
        heartbeats.forget_node(node)
        node.delete_instance()
        events.record("node.removed", cluster=cluster.name, subject=name)
    log.info("cluster %s node %s: removed (credential revoked)", cluster.name, name)
    if engine is not None:
        for task in (
            Task.select(Task, Cluster)
            .join(Cluster)
            .where((Task.cluster == cluster) & (Task.node_name == name) & Task.state.in_(OPEN_STATES))
        ):
            engine.fail(task, f"{NODE_REMOVED_REASON} ({name})")
    try:
        enrolment.accounts().node_removed(cluster.name, name)
    except Exception:
        # the row is gone, so the credential is dead for the embedded broker and for the control
        # service's hello check; Mosquitto's user is deleted by the next reconcile
        log.exception(
            "cluster %s node %s: broker user could not be removed now; retried at reconcile", cluster.name, name
        )


def probe(engine: TaskEngine, cluster: Cluster, name: str, params: dict[str, Any]) -> Task:
    """Queue a probe task on a registered node."""
    get(cluster, name)
    return engine.submit(cluster, name, TaskKind.NODE_PROBE.value, params)
