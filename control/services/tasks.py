"""The task engine: operations become per-node tasks, stored first, then published.

A task is QUEUED in the database before it is published as a retained message on its node's
task topic; the agent reports each transition on its task-status topic and the engine persists
it (one TaskEvent row and one Event row per transition). When a task is final the retained
message is cleared. At start and after every broker reconnect the engine publishes every open
task again: the database is the source of truth, retained messages are a cache.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from broker.messages import FINAL_TASK_STATES, MAX_PAYLOAD_BYTES, TASK_TRANSITIONS, TaskMessage, TaskState, TaskStatus
from broker.topics import Topics
from control.errors import InvalidInput, NotFound
from control.services import events, failures
from control.store.db import first, locked, outage
from control.store.models import Cluster, Node, Task, TaskEvent
from control.store.models import database_proxy as db

log = logging.getLogger(__name__)

# the task states as the store holds them (plain strings), for queries
OPEN_STATES = [s.value for s in TaskState if not s.final]
FINAL_STATES = [s.value for s in FINAL_TASK_STATES]
# a final hook that fails because the database cannot take writes (restarting, disk full) runs again
# after each of these waits (about 20 s in all) before it is left to the reconciler's replay
HOOK_RETRY_SECONDS = (0.1, 0.2, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 5.0, 5.0)


class Publisher(Protocol):
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None: ...


class IllegalTransition(Exception):
    pass


def check_transition(old: TaskState, new: TaskState) -> None:
    if new not in TASK_TRANSITIONS[old]:
        raise IllegalTransition(f"task cannot go from {old.value} to {new.value}")


class TaskEngine:
    def __init__(self, topics: Topics, publisher: Publisher | None = None) -> None:
        self.topics = topics
        self.publisher = publisher
        # called with each task that reached a final state, after it was stored
        self.on_final: list[Callable[[Task], None]] = []

    # ---- create -------------------------------------------------------------------------
    def submit(
        self,
        cluster: Cluster,
        node_name: str,
        kind: str,
        params: dict[str, Any] | None = None,
        operation: str = "",
        target: str = "",
    ) -> Task:
        """Store a QUEUED task and publish it. Inside a caller's transaction, publish after commit."""
        if not Node.select().where((Node.cluster == cluster) & (Node.name == node_name)).exists():
            raise NotFound(f"no node {node_name!r} in cluster {cluster.name!r}")
        now = time.time()
        size = len(TaskMessage(id="0" * 32, kind=kind, params=params or {}, created_at=now).model_dump_json())
        if size > MAX_PAYLOAD_BYTES:  # the agent would drop it unread, and the task would never end
            raise InvalidInput(
                f"{kind} task for node {node_name!r} is {size} bytes, over the agents' limit of {MAX_PAYLOAD_BYTES}"
            )
        with db.atomic():
            task = Task.create(
                id=uuid.uuid4().hex,
                cluster=cluster,
                node_name=node_name,
                kind=kind,
                params=params or {},
                state=TaskState.QUEUED.value,
                created_at=now,
                updated_at=now,
                operation=operation,
                target=target,
            )
            TaskEvent.create(task=task, state=TaskState.QUEUED.value, at=now)
            events.record(
                "task.state",
                cluster=cluster.name,
                subject=task.id,
                node=node_name,
                kind=kind,
                state=TaskState.QUEUED.value,
                reason="",
            )
        log.info("cluster %s node %s task %s (%s): QUEUED", cluster.name, node_name, task.id, kind)
        if not db.in_transaction():
            self._publish(task, cluster.name)
        return task

    def publish(self, tasks: list[Task]) -> None:
        """Publish tasks that were submitted inside a transaction, once it committed."""
        for task in tasks:
            self._publish(task, task.cluster.name)

    def _publish(self, task: Task, cluster_name: str) -> None:
        if self.publisher is None:
            return
        msg = TaskMessage(id=task.id, kind=task.kind, params=task.params, created_at=task.created_at)
        self.publisher.publish(
            self.topics.task(cluster_name, task.node_name, task.id), msg.model_dump_json().encode(), qos=1, retain=True
        )

    def _clear(self, task: Task, cluster_name: str) -> None:
        if self.publisher is not None:
            self.publisher.publish(self.topics.task(cluster_name, task.node_name, task.id), b"", qos=1, retain=True)

    def republish_open(self, level: int = logging.INFO) -> int:
        count = 0
        for task in (
            Task.select(Task, Cluster).join(Cluster).where(Task.state.in_(OPEN_STATES)).order_by(Task.created_at)
        ):
            self._publish(task, task.cluster.name)
            count += 1
        if count:
            log.log(level, "republished %d open tasks", count)
        return count

    def fail(self, task: Task, reason: str) -> Task | None:
        """Fail an open task from the control side (deadline passed, node removed, reset): the
        same path as an agent's report, so the final hooks run; None when it was already final."""
        status = TaskStatus(task_id=task.id, state=TaskState.FAILED, epoch=1, reason=reason)
        return self.apply_status(task.cluster.name, task.node_name, status)

    def run_final_hooks(self, task: Task) -> None:
        """Run every final-state hook for ``task``. Hooks are idempotent: one that fails because the
        database cannot take writes runs again (HOOK_RETRY_SECONDS); any other failure is logged,
        and the reconciler replays the hook later."""
        for hook in self.on_final:
            for wait in (*HOOK_RETRY_SECONDS, None):
                try:
                    hook(task)
                    break
                except Exception as exc:
                    if not db.is_closed() and db.in_transaction():
                        db.rollback()
                    why = outage(exc) if wait is not None else None
                    if why is None or wait is None:
                        log.exception("cluster %s task %s: final-state hook failed", task.cluster.name, task.id)
                        break
                    log.warning(
                        "cluster %s task %s: final-state hook failed, the database %s; trying again",
                        task.cluster.name,
                        task.id,
                        "is out of disk space" if why == "full" else "does not answer",
                    )
                    time.sleep(wait)

    # ---- status from agents -------------------------------------------------------------
    def apply_status(self, cluster_name: str, node_name: str, status: TaskStatus) -> Task | None:
        """Persist a transition reported by ``node_name``; returns the task, or None if ignored."""
        with db.atomic():
            task = first(
                locked(
                    Task.select(Task, Cluster)
                    .join(Cluster)
                    .where((Task.id == status.task_id) & (Cluster.name == cluster_name)),
                    of=Task,
                )
            )
            if task is None or task.node_name != node_name:
                log.warning(
                    "cluster %s node %s: status for unknown task %s dropped", cluster_name, node_name, status.task_id
                )
                return None
            old = TaskState(task.state)
            if old == status.state:
                return None
            try:
                check_transition(old, status.state)
            except IllegalTransition as exc:
                if old.final and status.state.final:
                    log.info("cluster %s node %s task %s: duplicate final ack", cluster_name, node_name, task.id)
                    self._clear(task, cluster_name)
                else:
                    log.info("cluster %s node %s task %s: %s; ignored", cluster_name, node_name, task.id, exc)
                return None
            now = time.time()
            task.state = status.state.value
            task.updated_at = now
            task.reason = status.reason or ""
            if status.result is not None:
                task.result = status.result
            if status.state.final:
                task.finished_at = now
            task.save()
            TaskEvent.create(task=task, state=status.state.value, at=now, reason=status.reason or "")
            extra = {"fix": failure_fix(task)} if status.state == TaskState.FAILED else {}
            events.record(
                "task.state",
                cluster=cluster_name,
                subject=task.id,
                node=node_name,
                kind=task.kind,
                state=status.state.value,
                reason=status.reason or "",
                **extra,
            )
        level = logging.WARNING if status.state == TaskState.FAILED else logging.INFO
        log.log(
            level,
            "cluster %s node %s task %s (%s): %s -> %s%s",
            cluster_name,
            node_name,
            task.id,
            task.kind,
            old.value,
            status.state.value,
            f" ({status.reason})" if status.reason else "",
        )
        if status.state.final:
            self._clear(task, cluster_name)
            self.run_final_hooks(task)
        return task


def failure_fix(task: Task) -> str | None:
    """How to fix a FAILED task, from the failure knowledge base; None for other states."""
    if task.state != TaskState.FAILED.value:
        return None
    return failures.explain(task.reason, task.node_name, (task.result or {}).get("failure"))["fix"]


# ---- queries ----------------------------------------------------------------------------
def get(task_id: str) -> Task:
    task = first(Task.select(Task, Cluster).join(Cluster).where(Task.id == task_id))
    if task is None:
        raise NotFound(f"no task {task_id!r}")
    return task


def list_tasks(
    cluster: Cluster | None = None, node: str | None = None, state: str | None = None, limit: int = 100
) -> list[Task]:
    query = Task.select(Task, Cluster).join(Cluster)
    if cluster is not None:
        query = query.where(Task.cluster == cluster)
    if node:
        query = query.where(Task.node_name == node)
    if state:
        try:
            TaskState(state.upper())
        except ValueError:
            raise InvalidInput(
                f"unknown task state {state!r}: use one of {', '.join(s.value for s in TaskState)}"
            ) from None
        query = query.where(Task.state == state.upper())
    return list(query.order_by(Task.created_at.desc()).limit(limit))
