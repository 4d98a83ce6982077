"""Volume operations, glusterctl against glusterd, side by side on this machine in the same run.

Replica-3 ``create + start`` and ``stop + delete``, each timed end to end from the command line
as an operator runs it (``glusterctl volume create ... --wait``; ``gluster volume create`` then
``gluster volume start``), over ``--rounds`` rounds; prints the medians and glusterctl's time as
a ratio of glusterd's (below 1: glusterctl is faster).

glusterctl: a control server (embedded broker, SQLite) and three agents on loopback, real
glusterfsd. glusterd: a private one in its own mount, network and PID namespaces (its working
directory, run and log directories bind-mounted from a temporary directory, its address on the
namespace's loopback), so that it disturbs nothing else on the machine; three bricks on that
one address. Bricks are fresh directories each round (a brick keeps its volume's id).

    sudo .venv/bin/python bench/volume_ops.py [--rounds 5] [-o json]

Needs root (trusted xattrs, namespaces), glusterd and glusterfsd, ``unshare`` and ``nsenter``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import fault_matrix
from tests.conftest import Stack
from tests.helpers import wait_until

GLUSTERD_ADDRESS = "10.99.0.1"  # on the private namespace's loopback only


class _Request:
    """What Stack reads from a pytest request: nothing failed, so it prints no logs."""

    node = None


def time_glusterctl(rounds: int, tmp: Path) -> dict[str, list[float]]:
    tmp.mkdir(parents=True, exist_ok=True)
    stack = Stack(tmp, _Request()).start()
    times: dict[str, list[float]] = {"create_start": [], "stop_delete": []}
    try:
        fault_matrix.start_trio(stack)
        for r in range(rounds):
            bricks = []
            for node in fault_matrix.NODES:
                path = stack.tmp / "bricks" / node / f"r{r}"
                path.mkdir(parents=True)
                bricks.append(f"{node}:{path}")
            name = f"ops{r}"
            t0 = time.perf_counter()
            stack.cli.run("volume", "create", name, "--replica", "3", *bricks, "--wait", timeout=120)
            times["create_start"].append(time.perf_counter() - t0)
            wait_until(lambda n=name: stack.cli.json("volume", "status", n)["state"] == "Started", 30)
            t1 = time.perf_counter()
            stack.cli.run("volume", "stop", name, "--wait", timeout=120)
            t2 = time.perf_counter()
            stack.cli.run("volume", "delete", name, "--wait", timeout=120)
            times["stop_delete"].append(time.perf_counter() - t1)
            print(
                f"glusterctl round {r}: stop {t2 - t1:.2f} s, delete {time.perf_counter() - t2:.2f} s", file=sys.stderr
            )
    finally:
        if os.environ.get("VOLUME_OPS_LOG"):
            shutil.copy(stack.server.log_path, os.environ["VOLUME_OPS_LOG"])
        stack.close()
    return times


GLUSTERD_SCRIPT = """
set -e
ip link set lo up
ip addr add {address}/32 dev lo
mkdir -p /var/lib/glusterd /run/gluster /var/log/glusterfs
mount --bind {d}/lib /var/lib/glusterd
mount --bind {d}/run /run/gluster
mount --bind {d}/log /var/log/glusterfs
glusterd -p {d}/glusterd.pid
for i in $(seq 100); do gluster --mode=script peer status >/dev/null 2>&1 && break; sleep 0.1; done
now() {{ date +%s.%N; }}
for r in $(seq 0 $(({rounds} - 1))); do
    mkdir -p {d}/bricks/b1-$r {d}/bricks/b2-$r {d}/bricks/b3-$r
    t0=$(now)
    gluster --mode=script volume create ops$r replica 3 \\
        {address}:{d}/bricks/b1-$r {address}:{d}/bricks/b2-$r {address}:{d}/bricks/b3-$r force >/dev/null
    gluster --mode=script volume start ops$r >/dev/null
    t1=$(now)
    gluster --mode=script volume stop ops$r >/dev/null
    gluster --mode=script volume delete ops$r >/dev/null
    t2=$(now)
    echo "ROUND $t0 $t1 $t2"
done
"""


def time_glusterd(rounds: int, tmp: Path) -> dict[str, list[float]]:
    for sub in ("lib", "run", "log", "bricks"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    script = tmp / "glusterd.sh"
    script.write_text(textwrap.dedent(GLUSTERD_SCRIPT.format(address=GLUSTERD_ADDRESS, d=tmp, rounds=rounds)))
    # PID namespace: when the script ends, glusterd and its bricks end with it
    argv = ["unshare", "--mount", "--net", "--pid", "--mount-proc", "--fork", "sh", str(script)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120 + 60 * rounds)
    if proc.returncode != 0:
        log = (tmp / "log" / "glusterd.log").read_text(errors="replace")[-2000:] if (tmp / "log").exists() else ""
        raise RuntimeError(f"private glusterd run failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}\n{log}")
    times: dict[str, list[float]] = {"create_start": [], "stop_delete": []}
    for line in proc.stdout.splitlines():
        if line.startswith("ROUND "):
            t0, t1, t2 = (float(x) for x in line.split()[1:])
            times["create_start"].append(t1 - t0)
            times["stop_delete"].append(t2 - t1)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each operation (default 5)")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    missing = [exe for exe in ("glusterd", "gluster", "glusterfsd", "unshare") if shutil.which(exe) is None]
    if missing or os.geteuid() != 0:
        print(f"needs root and {', '.join(missing) or 'glusterd'}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="glusterctl-volops-") as tmp:
        ours = time_glusterctl(args.rounds, Path(tmp) / "glusterctl")
        theirs = time_glusterd(args.rounds, Path(tmp) / "glusterd")
    result = {}
    for op in ("create_start", "stop_delete"):
        a, b = statistics.median(ours[op]), statistics.median(theirs[op])
        result[op] = {"glusterctl_s": a, "glusterd_s": b, "ratio": a / b, "glusterctl_all": ours[op]}
        result[op]["glusterd_all"] = theirs[op]
    result["rounds"] = args.rounds
    if args.output == "json":
        print(json.dumps(result, indent=2))
        return 0
    print(f"replica 3 on one host, {os.cpu_count()} cores, medians of {args.rounds} rounds")
    print(f"{'operation':<16}{'glusterctl (s)':>16}{'glusterd (s)':>14}{'ratio':>8}")
    for op, label in (("create_start", "create + start"), ("stop_delete", "stop + delete")):
        r = result[op]
        print(f"{label:<16}{r['glusterctl_s']:>16.2f}{r['glusterd_s']:>14.2f}{r['ratio']:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
