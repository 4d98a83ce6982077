"""``glusterctl volume rebalance start|stop|status``: GlusterFS's rebalance on every node holding bricks."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from broker.messages import RebalanceState
from control.cli.follow import follow_tasks, report
from control.client import Client
from control.client.format import size

TASK_TIMEOUT = 120.0
WAIT_TIMEOUT = 3600.0
WAIT_POLL = 2.0


def add_parser(
    volumes: Any,
    common: argparse.ArgumentParser,
    cluster: Callable[[argparse.ArgumentParser], None],
    output: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = volumes.add_parser(
        "rebalance",
        parents=[common],
        help="move files onto new bricks: start, stop or show a rebalance",
        description="GlusterFS's rebalance process runs on every node holding bricks of the volume: 'start' fixes "
        "the layout of every directory over all sets and moves the files whose hash now falls on another set "
        "('start --fix-layout' only fixes the layouts: new files use every set, old ones stay); 'stop' stops every "
        "node's process; 'status' asks every node for a live poll and shows per node the files migrated, their size, "
        "the files scanned, failures, skipped files, run time and state. The control service follows every run from "
        "the agents' heartbeats without being asked. The volume must be Started and have more than one set.",
    )
    cluster(p)
    p.add_argument("action", choices=("start", "stop", "status"))
    p.add_argument("name")
    p.add_argument("--fix-layout", action="store_true", help="start: only fix directory layouts, move no data")
    p.add_argument(
        "--wait",
        action="store_true",
        help="start: wait until every node completed, stopped or failed (the stored status, which the "
        "control service follows from the agents' heartbeats)",
    )
    output(p)
    p.set_defaults(func=volume_rebalance)


def _quiet(args: argparse.Namespace) -> Any:
    return open(os.devnull, "w") if args.output == "json" else sys.stderr


def _follow(client: Client, args: argparse.Namespace, tasks: list[str]) -> int:
    out = _quiet(args)
    try:
        followed = follow_tasks(client, tasks, TASK_TIMEOUT, out=out, cluster=args.cluster)
    finally:
        if out is not sys.stderr:
            out.close()
    return 0 if followed.ok else report(followed)


def volume_rebalance(args: argparse.Namespace) -> int:
    client = Client(getattr(args, "url", None))
    path = f"/api/v1/clusters/{args.cluster}/volumes/{args.name}/rebalance"
    if args.action == "start":
        answer = client.post(path + "/start", {"fix_layout": args.fix_layout})
        code = _follow(client, args, answer["tasks"])
        what = "fix-layout" if args.fix_layout else "rebalance"
        if code:
            return code
        if not args.wait:
            if args.output != "json":
                print(f"Volume {args.name}: {what} started (run {answer['run']}); see 'volume rebalance status'.")
            else:
                print(json.dumps(client.get(path), indent=2))
            return 0
        return _wait(client, args, path)
    if args.action == "stop":
        answer = client.post(path + "/stop", {})
        code = _follow(client, args, answer["tasks"])
        result = client.get(path)
        _print(args, result)
        return code
    answer = client.post(path + "/refresh", {})
    code = _follow(client, args, answer["tasks"])
    result = client.get(path)
    _print(args, result)
    return code or (1 if result["state"] == "failed" else 0)


def _wait(client: Client, args: argparse.Namespace, path: str) -> int:
    """Read the stored status until it is final: the control service follows the run from the agents' heartbeats."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    while True:
        result: dict[str, Any] = client.get(path)
        if _final(result["state"]) or time.monotonic() > deadline:
            _print(args, result)
            return 0 if result["state"] == "completed" else 1
        time.sleep(WAIT_POLL)


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _print(args: argparse.Namespace, result: dict[str, Any]) -> None:
    if args.output == "json":
        print(json.dumps(result, indent=2))
        return
    header = ("Node", "Rebalanced-files", "size", "scanned", "failures", "skipped", "status", "run time in h:m:s")
    rows = [
        (
            n["node"],
            str(n["files"]),
            size(n["size"]),
            str(n["lookups"]),
            str(n["failures"]),
            str(n["skipped"]),
            n["state"],
            _duration(n["run_time"]),
        )
        for n in result["nodes"]
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    command = f" ({result['command']})" if result.get("command") == "fix-layout" else ""
    print(f"volume rebalance{command}: {args.name}: {result['state']}")
    for n in result["nodes"]:
        if n["error"]:
            print(f"{n['node']}: {n['error']}", file=sys.stderr)


def _final(state: str) -> bool:
    """A run's overall state that no longer changes (completed, stopped or failed)."""
    try:
        return RebalanceState(state).final
    except ValueError:
        return False
