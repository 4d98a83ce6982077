"""Node registration and presence, driven by what agents publish.

Presence cannot lie (design invariant 4): every agent connection has an epoch that only grows;
the node row remembers the epoch of the connection it trusts, and a death notice (last-will)
or heartbeat from any other epoch never changes the node's state.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import peewee as pw
from peewee import ValuesList

from broker.messages import (
    BrickReport,
    BrickState,
    DeviceReport,
    Heartbeat,
    Hello,
    NodeState,
    Presence,
    Registration,
    ShdReport,
    TaskKind,
    check_name,
    check_node_proof,
    node_key,
)
from control.errors import Conflict, NotFound
from control.services import enrolment, events, heartbeats, metrics
from control.services.tasks import OPEN_STATES, TaskEngine
from control.store.db import first, joined_atomic, locked
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


def _seen(node: Node, now: float) -> None:
    """The node was heard from at ``now``: it counts as silent from ``now`` + its silence limit."""
    node.last_seen_at = now
    node.silence_deadline = now + silence_limit(node)


HELLO_KEEP_SECONDS = 60.0


def handle_hello(cluster_name: str, node_name: str, hello: Hello, now: float | None = None) -> Registration:
    """Check a hello and answer it.

    A hello repeated by the connection that was accepted (same agent, epoch and proof: its answer
    was slow or lost, or a control presence asked every agent again) is answered without a
    transaction: within HELLO_KEEP_SECONDS at once, later after one read of the node's row. Any
    change of the row on this server (state, epoch, credential, removal) forgets the accepted hello.
    """
    now = now or time.time()
    key = (cluster_name, node_name)
    ident = _hello_id(hello)
    with _beats_lock:
        accepted = _hellos.get(key)
    if (
        accepted is not None
        and accepted[:3] == ident
        and (
            now - accepted[3] < HELLO_KEEP_SECONDS
            or (hello.node_secret is None and _still_registered(cluster_name, node_name, hello))
        )
    ):
        with _beats_lock:
            _hellos[key] = (*ident, now)
        return Registration(accepted=True, epoch=hello.epoch, nonce=hello.nonce)
    if hello.node_secret is not None:
        forget_kept(cluster_name, node_name)
    elif _reconnected(cluster_name, node_name, hello, now):
        return Registration(accepted=True, epoch=hello.epoch, nonce=hello.nonce)
    try:
        answer, node = _handle_hello(cluster_name, node_name, hello, now)
    except _NotEnrolled as exc:
        if db.in_transaction():
            raise  # a batch's: its writes are in the batch, which is rolled back and handled again one by one
        log.warning("cluster %s node %s: enrolment failed: %s", cluster_name, node_name, exc)
        return Registration(accepted=False, epoch=hello.epoch, nonce=hello.nonce, reason=str(exc))
    if node is not None:
        # the node is Online on this connection with these facts, as after a heartbeat's full path: its
        # presence and first heartbeat need no transaction (its first reports are read against the rows once),
        # and the agent's next connection (the one after an enrolment, a reconnect) one statement
        facts = _volatile_free(hello.facts.model_dump())  # what a heartbeat reporting the same facts compares
        kept = _Beat(
            node.id,
            node.cluster_id,
            node.epoch,
            facts,
            silence_limit(node),
            now,
            None,
            node.agent_id,
            node.credential_hash,
        )
        with _beats_lock:
            _hellos[key] = (*ident, now)
            _beats[key] = kept
    return answer


def _hello_id(hello: Hello) -> tuple[int, str, str]:
    """What makes a hello the same as an accepted one: its connection, its proof and, for an enrolment, the
    secret it asked to store (the join token's proof does not cover it)."""
    secret = node_key(hello.node_secret) if hello.node_secret is not None else ""
    return (hello.epoch, hello.agent_id, f"{hello.proof}:{secret}")


def _reconnected(cluster_name: str, node_name: str, hello: Hello, now: float) -> bool:
    """The agent of a node kept here (Online, same agent and facts) connected again with a newer epoch and
    proves the stored credential: move the row to the new connection with one conditional UPDATE, no
    transaction. The row must still be as kept (same epoch, agent and credential, Online); else, or for
    anything else, the full path decides."""
    key = (cluster_name, node_name)
    with _beats_lock:
        known = _beats.get(key)
    if (
        known is None
        or not known.credential
        or known.agent_id != hello.agent_id
        or hello.epoch <= known.epoch
        or known.facts != _volatile_free(hello.facts.model_dump())
        or not check_node_proof(known.credential, cluster_name, node_name, hello.agent_id, hello.epoch, hello.proof)
    ):
        return False
    moved = (
        Node.update(epoch=hello.epoch, last_seen_at=now, silence_deadline=now + known.silence)
        .where(
            (Node.id == known.node_id)
            & (Node.epoch == known.epoch)
            & (Node.agent_id == hello.agent_id)
            & (Node.credential_hash == known.credential)
            & (Node.state == NodeState.ONLINE.value)
        )
        .execute()
    )
    if moved != 1:
        forget_kept(cluster_name, node_name)
        return False
    kept = replace(known, epoch=hello.epoch, checked=now, reports=None)
    with _beats_lock:
        _pending.pop(known.node_id, None)
        _beats[key] = kept
        _hellos[key] = (*_hello_id(hello), now)
    return True


def _still_registered(cluster_name: str, node_name: str, hello: Hello) -> bool:
    """The node's row still holds this hello's connection (Online, same agent and epoch) and its proof
    still fits the stored credential: one read instead of a transaction. Every agent says hello again
    at a control presence (a server start, a takeover), each with the connection it already has."""
    node = first(
        Node.select(Node.epoch, Node.agent_id, Node.state, Node.credential_hash)
        .join(Cluster)
        .where((Cluster.name == cluster_name) & (Node.name == node_name))
    )
    return (
        node is not None
        and node.epoch == hello.epoch
        and node.agent_id == hello.agent_id
        and node.state == NodeState.ONLINE.value
        and bool(node.credential_hash)
        and check_node_proof(
            str(node.credential_hash), cluster_name, node_name, hello.agent_id, hello.epoch, hello.proof
        )
    )


def _handle_hello(cluster_name: str, node_name: str, hello: Hello, now: float) -> tuple[Registration, Node | None]:
    """Check a Hello (an enrolment or an enrolled node's) and register the node Online.

    An accepted enrolment stores the verifier of the node's new secret and has the broker user
    made (``enrolment.accounts()``) before the answer goes out; the Registration tells the
    agent why when it is refused. The node's row comes with an accepted answer.
    """

    def refuse(reason: str) -> tuple[Registration, Node | None]:
        log.warning("cluster %s node %s: registration refused: %s", cluster_name, node_name, reason)
        return Registration(accepted=False, epoch=hello.epoch, nonce=hello.nonce, reason=reason), None

    try:
        check_name("node", node_name)
    except ValueError as exc:
        return refuse(str(exc))
    enrolling = hello.node_secret is not None
    with joined_atomic(db):
        node = _locked_node(cluster_name, node_name)  # with its cluster: one statement
        cluster = node.cluster if node is not None else Cluster.get_or_none(Cluster.name == cluster_name)
        if cluster is None:
            return refuse(
                f"unknown cluster {cluster_name!r}: the join token names a cluster this control service does not have"
            )
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
            _apply_facts(node, facts, now)
            _seen(node, now)
            assert hello.node_secret is not None  # a node row is only ever made by an enrolment
            new_credential = enrolment.set_credential(node, hello.node_secret)
            node.save(force_insert=True)
            registered = [
                ("node.registered", {"address": node.address}),
                ("node.state", {"state": NodeState.ONLINE.value, "reason": "registered"}),
            ]
            events.record_all(registered, cluster=cluster_name, subject=node_name)
            log.info("cluster %s node %s: enrolled and registered (epoch %d)", cluster_name, node_name, hello.epoch)
        else:
            new_credential = hello.node_secret is not None and enrolment.set_credential(node, hello.node_secret)
            if new_credential:
                events.record("node.enrolled", cluster=cluster_name, subject=node_name, agent=hello.agent_id[:8])
                log.info("cluster %s node %s: enrolled again (agent %s)", cluster_name, node_name, hello.agent_id[:8])
            node.agent_id = hello.agent_id
            node.epoch = hello.epoch
            _apply_facts(node, facts, now)
            _seen(node, now)
            _set_state(node, NodeState.ONLINE, f"connected (epoch {hello.epoch})", now)
            node.save(only=node.dirty_fields)  # not the unchanged columns (the facts JSON, mostly)
            forget_kept(cluster_name, node_name)
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
    return Registration(accepted=True, epoch=hello.epoch, nonce=hello.nonce), node


class _NotEnrolled(Exception):
    """The enrolment was checked but could not be completed; the transaction is rolled back."""


def epoch_is_current(cluster_name: str, node_name: str, epoch: int) -> bool:
    """True if ``epoch`` is the epoch of the node's registered connection."""
    with _beats_lock:
        known = _beats.get((cluster_name, node_name))
    if known is not None and known.epoch == epoch:  # kept only while the row has that epoch
        return True
    node = first(Node.select(Node.epoch).join(Cluster).where((Cluster.name == cluster_name) & (Node.name == node_name)))
    return node is not None and node.epoch == epoch


def _apply_facts(node: Node, facts: dict[str, Any], now: float) -> None:
    """Set what changed of the reported facts (an unchanged column or JSON is not rewritten)."""
    for column in ("address", "hostname", "agent_version", "glusterfs_version"):
        value = facts.get(column) or getattr(node, column)
        if value != getattr(node, column):
            setattr(node, column, value)
    merged = {**(node.facts or {}), **{k: v for k, v in facts.items() if v is not None}}
    if merged != node.facts:
        node.facts = merged
        node.facts_at = now


def _volatile_free(facts: dict[str, Any]) -> dict[str, Any]:
    """The facts without the uptime, which moves on every heartbeat (the API adds the time since)."""
    return {k: v for k, v in facts.items() if k != "uptime_seconds"}


def _locked_node(cluster_name: str, node_name: str) -> Node | None:
    """The node's row with its cluster's, locked for this transaction."""
    return first(
        locked(
            Node.select(Node, Cluster).join(Cluster).where((Cluster.name == cluster_name) & (Node.name == node_name)),
            of=Node,
        )
    )


def _trusted(cluster_name: str, node_name: str, epoch: int) -> Node | None:
    node = _locked_node(cluster_name, node_name)
    if node is None or node.epoch != epoch:
        return None
    return node


def _ignored(cluster_name: str, node_name: str, presence: Presence) -> None:
    log.info(
        "cluster %s node %s: ignoring %s presence of epoch %d (not the current connection)",
        cluster_name,
        node_name,
        presence.state,
        presence.epoch,
    )


def handle_presence(cluster_name: str, node_name: str, presence: Presence, now: float | None = None) -> None:
    now = now or time.time()
    with _beats_lock:
        known = _beats.get((cluster_name, node_name))
        if known is not None and known.epoch == presence.epoch and presence.state == "online":
            _pending[known.node_id] = (presence.epoch, now, now + known.silence)  # Online on this connection
            return
    if known is not None and known.epoch != presence.epoch:  # kept only while the row has the kept epoch
        _ignored(cluster_name, node_name, presence)
        return
    with joined_atomic(db):
        node = _trusted(cluster_name, node_name, presence.epoch)
        if node is None:
            _ignored(cluster_name, node_name, presence)
            return
        if presence.state == "offline":
            _set_state(node, NodeState.UNREACHABLE, "agent connection lost (last-will)", now)
        else:
            _seen(node, now)
            _set_state(node, NodeState.ONLINE, "presence online", now)
        if node.dirty_fields:  # a last-will for a node the sweeper already called Unreachable changes nothing
            node.save(only=node.dirty_fields)
    forget_kept(cluster_name, node_name)


# Heartbeats that change nothing but the time (same connection, same facts but the uptime, same
# bricks, daemons and devices, node Online) are not a write transaction each: their time is kept
# here and written for many nodes at once (flush_seen, every sweep). Anything else takes the full
# path. Every RECHECK_SECONDS what is kept of a node is read against the database again (its row,
# its bricks, daemons and devices; reads only): at 10,000 nodes a full path per node a minute was
# most of the control service's work.
#
# A report equal to the one the full path last applied is not read against the database either:
# the rows it writes (brick and daemon state, pid, capacity; device space) change only on that
# path, but for rows added since (bricks start Offline, which a report that does not name them
# leaves as is), bricks a forced node removal marks Lost (it forgets the node here) and a device
# add (figures from the same agent moments before). At thousands of nodes those reads were most
# of a heartbeat's cost.
RECHECK_SECONDS = 120.0


_Reports = tuple[list[BrickReport], list[ShdReport], list[DeviceReport]]


@dataclass
class _Beat:
    node_id: int
    cluster_id: int
    epoch: int
    facts: dict[str, Any]
    silence: float
    checked: float
    reports: _Reports | None  # the last reports known to write nothing (None: not read yet)
    agent_id: str = ""  # the node's agent and credential verifier, for its next connection's hello
    credential: str | None = None


_beats: dict[tuple[str, str], _Beat] = {}
_hellos: dict[tuple[str, str], tuple[int, str, str, float]] = {}  # the last accepted: _hello_id, when
_pending: dict[int, tuple[int, float, float]] = {}  # node id -> (epoch, last seen, silence deadline)
_beats_lock = threading.Lock()


def forget_kept(cluster_name: str, node_name: str) -> None:
    """Forget what is kept of the node (its accepted hello, its last heartbeat): its row changed outside a
    heartbeat (state, epoch, removal), or a rolled-back transaction held what was kept. Its next
    messages take the full path."""
    with _beats_lock:
        _beats.pop((cluster_name, node_name), None)
        _hellos.pop((cluster_name, node_name), None)


def reset_beats() -> None:
    """Forget every kept heartbeat (another database is opened in this process: benchmarks, tests)."""
    with _beats_lock:
        _beats.clear()
        _pending.clear()
        _hellos.clear()


def handle_heartbeat(cluster_name: str, node_name: str, beat: Heartbeat, now: float | None = None) -> bool:
    """Record a heartbeat; False when it is from a connection the control service does not trust."""
    now = now or time.time()
    facts = beat.facts.model_dump()
    with _beats_lock:
        known = _beats.get((cluster_name, node_name))
    reports = (beat.bricks, beat.shds, beat.devices)
    if (
        known is not None
        and known.epoch == beat.epoch
        and known.facts == _volatile_free(facts)
        and (
            _changes_nothing(known, node_name, reports)
            if now - known.checked < RECHECK_SECONDS
            else _recheck(known, node_name, reports, now)
        )
    ):
        with _beats_lock:
            _pending[known.node_id] = (beat.epoch, now, now + known.silence)
        metrics.COUNTS.add("heartbeats_received")
        return True
    with joined_atomic(db):
        node = _trusted(cluster_name, node_name, beat.epoch)
        if node is None:
            metrics.COUNTS.add("heartbeats_dropped")
            return False
        _apply_facts(node, facts, now)
        _seen(node, now)
        heartbeats.apply_heartbeat(cluster_name, node, beat.bricks, beat.shds, beat.devices, now)
        _set_state(node, NodeState.ONLINE, "heartbeat", now)
        node.save(only=node.dirty_fields)
        beat_state = _Beat(
            node.id,
            node.cluster_id,
            node.epoch,
            _volatile_free(facts),
            silence_limit(node),
            now,
            (beat.bricks, beat.shds, beat.devices),
            node.agent_id,
            node.credential_hash,
        )
    with _beats_lock:
        _pending.pop(node.id, None)
        _beats[(cluster_name, node_name)] = beat_state
    return True


def _recheck(known: _Beat, node_name: str, reports: _Reports, now: float) -> bool:
    """What is kept of a node, read against the database again (reads only): its row is still Online on this
    connection and these reports write nothing. Then it is kept for another RECHECK_SECONDS."""
    row = first(Node.select(Node.epoch, Node.state).where(Node.id == known.node_id))
    if row is None or row.epoch != known.epoch or row.state != NodeState.ONLINE.value:
        return False
    if heartbeats.would_change(known.cluster_id, node_name, *reports):
        return False
    known.reports, known.checked = reports, now
    return True


def _changes_nothing(known: _Beat, node_name: str, reports: _Reports) -> bool:
    """True if these brick, daemon and device reports would write nothing (see RECHECK_SECONDS)."""
    if known.reports == reports:
        return True
    if heartbeats.would_change(known.cluster_id, node_name, *reports):
        return False
    known.reports = reports  # it writes nothing either: the next one like it is not read again
    return True


FLUSH_CHUNK = 500


def flush_seen() -> int:
    """Write the times of the heartbeats kept by handle_heartbeat, many nodes per statement.

    Only a node still Online on the same connection is touched: a node that went Unreachable or
    reconnected meanwhile keeps what its own path wrote.
    """
    with _beats_lock:
        pending = list(_pending.items())
        _pending.clear()
    written = 0
    for start in range(0, len(pending), FLUSH_CHUNK):
        rows = [
            (node_id, epoch, seen, deadline)
            for node_id, (epoch, seen, deadline) in pending[start : start + FLUSH_CHUNK]
        ]
        with db.atomic():
            written += _write_beats(rows)
    return written


def _write_beats(rows: list[tuple[int, int, float, float]]) -> int:
    """Store (node id, epoch, seen, deadline) rows; linear in the rows (a CASE per column compared every
    row with every id, and took hundreds of milliseconds at a few hundred nodes)."""
    online = NodeState.ONLINE.value
    if isinstance(getattr(db, "obj", db), pw.PostgresqlDatabase):
        # one UPDATE ... FROM (VALUES ...) joined on the id
        beats = ValuesList(rows, columns=("node_id", "epoch", "seen", "deadline"), alias="beats")
        query = (
            Node.update(last_seen_at=beats.c.seen, silence_deadline=beats.c.deadline)
            .from_(beats)
            .where((Node.id == beats.c.node_id) & (Node.epoch == beats.c.epoch) & (Node.state == online))
        )
        return int(query.execute())
    # SQLite runs in this process: one prepared UPDATE by primary key per row costs microseconds
    table = Node._meta.table_name
    cursor = db.cursor()
    try:
        cursor.executemany(
            f'UPDATE "{table}" SET "last_seen_at" = ?, "silence_deadline" = ? WHERE "id" = ? AND "epoch" = ? AND "state" = ?',
            [(seen, deadline, node_id, epoch, online) for node_id, epoch, seen, deadline in rows],
        )
    except sqlite3.OperationalError as exc:  # as peewee's own statements raise it (a full disk is an outage)
        raise pw.OperationalError(*exc.args) from exc
    return int(cursor.rowcount)


def sweep_silent(now: float | None = None) -> int:
    """Mark Online nodes whose heartbeats stopped Unreachable (a lost last-will must not leave them Online)."""
    now = now or time.time()
    count = 0
    # read the candidates first: a SELECT still open on this connection would pin its snapshot, and
    # SQLite refuses at once (no waiting) to start a write transaction on a stale snapshot
    silent = [
        *Node.select(Node.id).where(
            (Node.state == NodeState.ONLINE.value) & ((Node.silence_deadline < now) | Node.silence_deadline.is_null())
        )
    ]
    for candidate in silent:
        with db.atomic():  # look again under the lock: a heartbeat may have come meanwhile
            node = first(locked(Node.select(Node, Cluster).join(Cluster).where(Node.id == candidate.id), of=Node))
            if node is None or node.state != NodeState.ONLINE.value:
                continue
            with _beats_lock:
                kept = _pending.get(node.id)
            if kept is not None and kept[0] == node.epoch and kept[1] > node.last_seen_at:
                node.last_seen_at = kept[1]  # a heartbeat not written yet
            if now - node.last_seen_at <= silence_limit(node):
                continue
            _set_state(node, NodeState.UNREACHABLE, f"no heartbeat for {now - node.last_seen_at:.0f}s", now)
            node.save()
        forget_kept(node.cluster.name, node.name)
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
            brick.state, brick.pid, brick.state_changed_at = BrickState.LOST.value, None, time.time()
            brick.save()
            events.record(
                "brick.state",
                cluster=cluster.name,
                subject=f"{brick.volume.name}:{name}:{brick.path}",
                state=BrickState.LOST.value,
                reason="node removed with --force",
            )
        if hosted:
            log.warning(
                "cluster %s node %s: %d bricks marked %s", cluster.name, name, len(hosted), BrickState.LOST.value
            )
        heartbeats.forget_node(node)
        node.delete_instance()
        forget_kept(cluster.name, name)
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
