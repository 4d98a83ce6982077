"""Task and volume state questions, answered from the shared enums in ``broker.messages``.

The REST API and the event stream carry states as strings; these helpers accept any string
(an unknown or empty state is simply not final and not failed).
"""

from __future__ import annotations

from broker.messages import FINAL_TASK_STATES, TaskState, VolumeState

# not a VolumeState: the volume is gone (the last volume.state event, or a 404 from REST)
VOLUME_DELETED = "Deleted"

VOLUME_FAILED_STATES = frozenset(state for state in VolumeState if state.failed)


def task_final(state: str | None) -> bool:
    return state in FINAL_TASK_STATES


def task_failed(state: str | None) -> bool:
    return state == TaskState.FAILED


def volume_failed(state: str | None) -> bool:
    return state in VOLUME_FAILED_STATES
