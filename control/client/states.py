"""Task and volume state questions, answered from the shared enums in ``broker.messages``.

The REST API and the event stream carry states as strings; these helpers accept any string
(an unknown or empty state is simply not final and not failed).
"""

from __future__ import annotations

from broker.messages import FINAL_TASK_STATES, STABLE_VOLUME_STATES, VOLUME_DELETED, TaskState, VolumeState

VOLUME_FAILED_STATES = frozenset(state for state in VolumeState if state.failed)
# where a volume operation ends: the volume rests, failed, or is gone
VOLUME_FINAL_STATES = frozenset({*STABLE_VOLUME_STATES, *VOLUME_FAILED_STATES, VOLUME_DELETED})


def task_final(state: str | None) -> bool:
    return state in FINAL_TASK_STATES


def task_done(state: str | None) -> bool:
    return state == TaskState.DONE


def task_failed(state: str | None) -> bool:
    return state == TaskState.FAILED


def volume_failed(state: str | None) -> bool:
    return state in VOLUME_FAILED_STATES


def volume_final(state: str | None) -> bool:
    return state in VOLUME_FINAL_STATES
