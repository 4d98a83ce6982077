"""Two-phase volume operations (expand, replace-brick): first the node tasks that change bricks,
then every node's new volfiles (``volume.volfiles``), under one operation id.

The operation moves on only when every task of its current phase is final; a failed task of either
phase ends it in the operation's failure state, with the nodes and the step named.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.messages import TaskKind, TaskState, VolumeState
from control.store.db import first, locked
from control.store.models import Task, Volume

VOLFILES = TaskKind.VOLUME_VOLFILES.value


@dataclass
class Progress:
    volume: Volume  # locked by the caller's transaction
    first: list[Task]  # the tasks that change bricks
    second: list[Task]  # the volfile pushes, once the first phase succeeded

    @property
    def current(self) -> list[Task]:
        return self.second or self.first

    @property
    def failed(self) -> list[str]:
        """The nodes whose task of the current phase did not end DONE."""
        return sorted({t.node_name for t in self.current if t.state != TaskState.DONE.value})

    def step(self, first_step: str) -> str:
        return "switching the volfiles" if self.second else first_step

    def first_params(self, key: str) -> dict[str, object]:
        """The parameters of the first first-phase task that carries ``key`` (e.g. the state to resume)."""
        return next((dict(t.params) for t in self.first if (t.params or {}).get(key)), {})


def settled(operation: str, first_kind: str, running: VolumeState) -> Progress | None:
    """The operation's volume (locked; still ``running``) and its tasks, once every task of the current
    phase is final; None while the phase goes on or when the volume left ``running``. Call inside a transaction.
    """
    volume = first(locked(Volume.select().where((Volume.operation == operation) & (Volume.state == running.value))))
    if volume is None:
        return None
    tasks = list(Task.select().where(Task.operation == operation).order_by(Task.created_at))
    progress = Progress(volume, [t for t in tasks if t.kind == first_kind], [t for t in tasks if t.kind == VOLFILES])
    if not all(TaskState(t.state).final for t in progress.current):
        return None
    return progress
