"""The fault matrix (tests/fault_matrix.py): kill -9 of an agent, kill -9 of the server and a
restart of the embedded broker, each in the middle of a replica-3 volume create and start on
three real agents. Afterwards every task is final, none ran twice, the volume is Started with
every brick Online (after one retry where a task was reported INTERRUPTED)."""

from __future__ import annotations

import pytest

from tests import fault_matrix
from tests.helpers import cleanup_gluster


@pytest.mark.parametrize("scenario", list(fault_matrix.FAULTS))
def test_fault_during_replica3_create_and_start(stack, scenario):
    fault_matrix.start_trio(stack)
    outcome = fault_matrix.run(stack, scenario, fault_matrix.FAULTS[scenario])
    print("\n" + fault_matrix.table([outcome]))
    assert not outcome.executed_twice, outcome
    assert all(reason.startswith("INTERRUPTED") for reason in outcome.failed), outcome
    assert outcome.retried == bool(outcome.failed), outcome
    assert outcome.volume_state == "Started" and outcome.ok, outcome
    stack.cli.run("volume", "stop", "fm", "--wait", timeout=60)
    cleanup_gluster(stack.tmp)
