"""The volume state machine: which state may follow which, and the one function that moves a volume.

Every transition is checked against one table and gives one log line and one ``volume.state``
event. The operations (control/services/volumes.py, expand.py, replace.py) move volumes only here.
"""

from __future__ import annotations

import logging
import time

from broker.messages import STABLE_VOLUME_STATES, VolumeState
from control.errors import Conflict
from control.services import events
from control.store.models import Volume

log = logging.getLogger(__name__)

S = VolumeState
TRANSITIONS: dict[VolumeState, frozenset[VolumeState]] = {
    S.CREATING: frozenset({S.CREATED, S.CREATE_FAILED}),
    S.CREATED: frozenset({S.STARTING, S.DELETING, S.EXPANDING, S.REPLACING}),
    S.CREATE_FAILED: frozenset({S.CREATING, S.DELETING}),
    S.STARTING: frozenset({S.STARTED, S.START_FAILED}),
    S.STARTED: frozenset({S.STOPPING, S.EXPANDING, S.REPLACING}),
    S.START_FAILED: frozenset({S.STARTING, S.STOPPING}),
    S.STOPPING: frozenset({S.STOPPED, S.STOP_FAILED}),
    S.STOPPED: frozenset({S.STARTING, S.DELETING, S.EXPANDING, S.REPLACING}),
    S.STOP_FAILED: frozenset({S.STOPPING, S.STARTING}),
    S.DELETING: frozenset({S.DELETE_FAILED}),
    S.DELETE_FAILED: frozenset({S.DELETING}),
    # expand returns to the state it started from (control/services/expand.py)
    S.EXPANDING: frozenset({S.STARTED, S.STOPPED, S.CREATED, S.EXPAND_FAILED}),
    S.EXPAND_FAILED: frozenset({S.EXPANDING, S.STOPPING}),
    # replace-brick likewise (control/services/replace.py)
    S.REPLACING: frozenset({S.STARTED, S.STOPPED, S.CREATED, S.REPLACE_FAILED}),
    S.REPLACE_FAILED: frozenset({S.REPLACING, S.STOPPING}),
}
# operation task kind -> (state while it runs, state when all tasks are DONE, state when one FAILED)
OPERATIONS: dict[str, tuple[VolumeState, VolumeState | None, VolumeState]] = {
    "volume.create": (S.CREATING, S.CREATED, S.CREATE_FAILED),
    "volume.start": (S.STARTING, S.STARTED, S.START_FAILED),
    "volume.stop": (S.STOPPING, S.STOPPED, S.STOP_FAILED),
    "volume.delete": (S.DELETING, None, S.DELETE_FAILED),
}


def move(volume: Volume, new: VolumeState, why: str = "") -> None:
    """Move ``volume`` to ``new`` (saved, logged, an event) if the table allows it, else Conflict."""
    old = VolumeState(volume.state)
    if new == old:
        return
    if new not in TRANSITIONS[old]:
        raise Conflict(f"volume {volume.name!r} is {old.value}: it cannot go to {new.value}")
    volume.state = new.value
    volume.updated_at = time.time()
    if new in STABLE_VOLUME_STATES:
        volume.stable_state = new.value
    volume.save()
    log.info(
        "cluster %s volume %s: %s -> %s%s",
        volume.cluster.name,
        volume.name,
        old.value,
        new.value,
        f" ({why})" if why else "",
    )
    events.record("volume.state", cluster=volume.cluster.name, subject=volume.name, state=new.value, reason=why)
