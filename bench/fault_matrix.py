"""Run the fault matrix (tests/fault_matrix.py) and print a table: scenario, final volume state,
tasks, failed tasks, tasks run twice, events seen on the stream (and how many were missing,
doubled or unknown), whether a retry was needed, recovery time, and how long the scenario took.

    .venv/bin/python bench/fault_matrix.py [SCENARIO ...]

Needs what the integration tests need (glusterfsd, root for trusted xattrs, mounts and loop
devices; Mosquitto with its dynamic security plugin; PostgreSQL at 127.0.0.1:5432 and the
PostgreSQL 15 server binaries); starts everything on free loopback ports in a temporary
directory and removes it afterwards. A scenario whose needs are missing is listed as skipped.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import fault_matrix


class _Request:
    """What Stack reads from a pytest request: nothing failed, so it prints no logs."""

    node = None


def main(argv: list[str]) -> int:
    names = argv or list(fault_matrix.FAULTS)
    unknown = [n for n in names if n not in fault_matrix.FAULTS]
    if unknown:
        print(f"unknown scenario {unknown[0]!r}: use one of {', '.join(map(repr, fault_matrix.FAULTS))}")
        return 2
    outcomes, skipped = [], []
    for name in names:
        spec = fault_matrix.FAULTS[name]
        with tempfile.TemporaryDirectory(prefix="glusterctl-faults-") as tmp:
            try:
                with fault_matrix.environment(Path(tmp), _Request(), spec) as stack:
                    outcomes.append(fault_matrix.run(stack, name, spec))
            except fault_matrix.Unavailable as exc:
                skipped.append(f"{name}: skipped ({exc})")
                print(skipped[-1], flush=True)
                continue
        print(fault_matrix.table(outcomes[-1:]).splitlines()[-1], flush=True)
    print()
    print(fault_matrix.table(outcomes))
    for line in skipped:
        print(line)
    return 0 if all(o.ok for o in outcomes) and not skipped else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
