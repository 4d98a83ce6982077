"""The fault matrix (tests/fault_matrix.py): each fault in the middle of a replica-3 volume create
and start (or an option change) on three real agents; afterwards every task is final, none ran
twice, the volume is Started with every brick Online and the option applied (after one retry where
a task was reported INTERRUPTED), or, for a brick on a full filesystem, failed with a reason and a
fix and deleted; the nodes are Online, and the event stream matched the events table.

Scenarios that need the same environment (database, broker, agents' settings, mounts) share one,
each with a volume of its own, stopped afterwards."""

from __future__ import annotations

import contextlib
import os

import pytest

from tests import fault_matrix

SCENARIOS = list(fault_matrix.FAULTS)


@pytest.fixture(scope="module")
def environments(tmp_path_factory, request):
    """``get(spec)``: the started environment for the scenario, made on first use, shared after."""
    with contextlib.ExitStack() as cleanup:
        made: dict = {}

        def get(spec: fault_matrix.Scenario):
            key = fault_matrix.environment_key(spec)
            if key not in made:
                tmp = tmp_path_factory.mktemp("faults")
                made[key] = cleanup.enter_context(fault_matrix.environment(tmp, request, spec))
            return made[key]

        yield get


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_fault_matrix(environments, scenario):
    spec = fault_matrix.FAULTS[scenario]
    try:
        st = environments(spec)
    except fault_matrix.Unavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{scenario}: {exc} (CI needs it)")
        pytest.skip(f"{scenario}: {exc}")
    name = f"fm{SCENARIOS.index(scenario)}"
    try:
        outcome = fault_matrix.run(st, scenario, spec, name=name)
        print("\n" + fault_matrix.table([outcome]))
        assert not outcome.executed_twice, outcome
        assert not outcome.problems, outcome
        assert not outcome.nodes_not_online, outcome
        assert outcome.events_ok, outcome
        if spec.expect == "Started":
            assert all(reason.startswith("INTERRUPTED") for reason in outcome.failed), outcome.failed
            assert outcome.retried == bool(outcome.failed), outcome
            assert outcome.volume_state == "Started", outcome
            st.cli.run("volume", "stop", name, "--wait", timeout=60)  # the next scenario's bricks only
        else:
            assert outcome.volume_state == spec.expect and outcome.failed, outcome
        assert outcome.ok, outcome
    except BaseException:
        for proc in st.procs:
            print(f"----- {proc.name} log (tail) -----\n{proc.log()[-4000:]}")
        raise
