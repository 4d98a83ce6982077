"""The fault matrix (tests/fault_matrix.py): each fault in the middle of a replica-3 volume create
and start (or an option change) on three real agents; afterwards every task is final, none ran
twice, the volume is Started with every brick Online and the option applied (after one retry where
a task was reported INTERRUPTED), or, for a brick on a full filesystem, failed with a reason and a
fix and deleted; the nodes are Online, and the event stream matched the events table."""

from __future__ import annotations

import os

import pytest

from tests import fault_matrix


@pytest.mark.parametrize("scenario", list(fault_matrix.FAULTS))
def test_fault_matrix(tmp_path, request, scenario):
    spec = fault_matrix.FAULTS[scenario]
    try:
        env = fault_matrix.environment(tmp_path, request, spec)
        st = env.__enter__()
    except fault_matrix.Unavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{scenario}: {exc} (CI needs it)")
        pytest.skip(f"{scenario}: {exc}")
    try:
        outcome = fault_matrix.run(st, scenario, spec)
        print("\n" + fault_matrix.table([outcome]))
        assert not outcome.executed_twice, outcome
        assert not outcome.problems, outcome
        assert not outcome.nodes_not_online, outcome
        assert outcome.events_ok, outcome
        if spec.expect == "Started":
            assert all(reason.startswith("INTERRUPTED") for reason in outcome.failed), outcome.failed
            assert outcome.retried == bool(outcome.failed), outcome
            assert outcome.volume_state == "Started", outcome
        else:
            assert outcome.volume_state == spec.expect and outcome.failed, outcome
        assert outcome.ok, outcome
    except BaseException:
        for proc in st.procs:
            print(f"----- {proc.name} log (tail) -----\n{proc.log()[-4000:]}")
        raise
    finally:
        env.__exit__(None, None, None)
