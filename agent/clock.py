"""The agent's wall clock: every time the agent stamps (epochs, presence, heartbeats, task
statuses, journal and rebalance records) comes from ``now()``.

Nothing the control service decides may depend on an agent's clock (it judges silence and task
deadlines by its own); ``GLUSTERCTL_AGENT_CLOCK_OFFSET`` (seconds, may be negative; for tests
only) shifts this clock so that tests can prove it, as tests/fault_matrix.py does with a clock
10 minutes off. libfaketime cannot do it for a Python process: faking only the wall clock makes
every ``time.sleep`` fail with EINVAL, and faking the monotonic clock too hangs timed waits.
"""

from __future__ import annotations

import os
import time

OFFSET_ENV = "GLUSTERCTL_AGENT_CLOCK_OFFSET"


def _offset() -> float:
    raw = os.environ.get(OFFSET_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{OFFSET_ENV} must be a number of seconds, not {raw!r}") from None


OFFSET = _offset()


def now() -> float:
    """Seconds since the epoch, by this agent's clock."""
    return time.time() + OFFSET
