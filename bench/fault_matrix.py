"""Run the fault matrix (tests/fault_matrix.py) and print a table: scenario, final volume state,
tasks, failed tasks, tasks run twice, whether a retry was needed, recovery time.

    .venv/bin/python bench/fault_matrix.py [SCENARIO ...]

Needs what the integration tests need (glusterfsd, root for trusted xattrs); starts everything
on free loopback ports in a temporary directory and removes it afterwards.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import fault_matrix
from tests.conftest import Stack


class _Request:
    """What Stack reads from a pytest request: nothing failed, so it prints no logs."""

    node = None


def main(argv: list[str]) -> int:
    names = argv or list(fault_matrix.FAULTS)
    unknown = [n for n in names if n not in fault_matrix.FAULTS]
    if unknown:
        print(f"unknown scenario {unknown[0]!r}: use one of {', '.join(map(repr, fault_matrix.FAULTS))}")
        return 2
    outcomes = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix="glusterctl-faults-") as tmp:
            stack = Stack(Path(tmp), _Request()).start()
            try:
                fault_matrix.start_trio(stack)
                outcomes.append(fault_matrix.run(stack, name, fault_matrix.FAULTS[name]))
                stack.cli.run("volume", "stop", "fm", "--wait", timeout=60)
            finally:
                stack.close()
        print(fault_matrix.table(outcomes[-1:]).splitlines()[-1], flush=True)
    print()
    print(fault_matrix.table(outcomes))
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
