"""The event feed: every persisted state change becomes one Event row, in order."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from control.store.models import Cluster, Event, now

log = logging.getLogger(__name__)

_listeners: list[Callable[[Event], None]] = []

# the kinds that change a cluster's metadata (what a restore rebuilds: control/services/metadata.py);
# each one raises the cluster's metadata version in the transaction that records it. Runtime state
# (node presence, brick processes, tasks) is not metadata: it comes back from the agents.
METADATA_KINDS = frozenset(
    {
        "cluster.created",
        "node.registered",
        "node.enrolled",
        "node.removed",
        "device.state",
        "device.removed",
        "volume.state",
        "volume.option",
        "volume.expand",
    }
)
_lock = threading.Lock()


@dataclass
class _Held:
    """What this thread's ``held_until_commit`` block has done so far."""

    events: list[Event] = field(default_factory=list)  # recorded, not yet told to the listeners
    bumped: set[str] = field(default_factory=set)  # clusters whose metadata version the block raised


_holding = threading.local()  # .held: the thread's _Held inside ``held_until_commit``, else None


def subscribe(listener: Callable[[Event], None]) -> Callable[[], None]:
    """Call ``listener(event)`` after each recorded event (from the recording thread)."""
    with _lock:
        _listeners.append(listener)

    def unsubscribe() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return unsubscribe


def bump(cluster: str) -> None:
    """Raise ``cluster``'s metadata version (inside the transaction that changed its metadata)."""
    Cluster.update(metadata_version=Cluster.metadata_version + 1).where(Cluster.name == cluster).execute()


def record(kind: str, /, cluster: str = "", subject: str = "", **data: Any) -> Event:
    """Persist one event. Call inside the transaction that made the change."""
    return record_all([(kind, data)], cluster=cluster, subject=subject)[0]


def record_all(changes: Sequence[tuple[str, dict[str, Any]]], /, cluster: str = "", subject: str = "") -> list[Event]:
    """Persist events of one subject, in order, with one statement (a new node: registered, then Online).
    Call inside the transaction that made the changes."""
    held: _Held | None = getattr(_holding, "held", None)
    if cluster and any(kind in METADATA_KINDS for kind, _ in changes) and (held is None or cluster not in held.bumped):
        bump(cluster)
        if held is not None:
            held.bumped.add(cluster)
    at = now()
    rows = [{"at": at, "cluster": cluster, "kind": kind, "subject": subject, "data": data} for kind, data in changes]
    # on PostgreSQL the insert notifies other servers' streams at the commit (a trigger: migration 16);
    # ids grow in the order of the rows, whatever order RETURNING gives them in
    ids = sorted(row.id for row in Event.insert_many(rows).returning(Event.id).execute())
    recorded = [Event(id=id_, **row) for id_, row in zip(ids, rows, strict=True)]
    if held is not None:
        held.events.extend(recorded)
    else:
        for event in recorded:
            _tell_listeners(event)
    return recorded


@contextmanager
def held_until_commit() -> Iterator[None]:
    """Tell the listeners of the events this thread records inside the block only when it ends without an
    error: wrap a transaction that holds many changes (the bridge's batches), so that a listener woken by
    an event reads it committed. An error forgets them (the transaction was rolled back).

    The block is one transaction, so it raises each cluster's metadata version once, however many of
    its changes are metadata: the version names what the cluster's metadata is after a commit."""
    held = _Held()
    _holding.held = held
    try:
        yield
    finally:
        _holding.held = None
    for event in held.events:
        _tell_listeners(event)


def _tell_listeners(event: Event) -> None:
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(event)
        except Exception:  # a listener must never break the write path
            log.exception("event listener failed for event %s", event.id)
