"""``glusterctl volume heal``: heal information (glfsheal on a node) and index heals (the self-heal daemons)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from control.cli.errors import CliError
from control.cli.follow import follow_tasks, report
from control.client import Client
from control.client.states import task_done

HEAL_TIMEOUT = 300.0
WHAT = {(): "index", ("info",): "info", ("info", "split-brain"): "split-brain", ("summary",): "summary"}
WHAT[("info", "summary")] = "summary"


def add_parser(
    volumes: Any,
    common: argparse.ArgumentParser,
    cluster: Callable[[argparse.ArgumentParser], None],
    output: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = volumes.add_parser(
        "heal",
        parents=[common],
        help="heal information, or start an index heal",
        description="'volume heal VOL' starts an index heal on every node holding bricks (each self-heal "
        "daemon heals what its bricks need). 'volume heal VOL info' lists the entries that need healing per "
        "brick, 'info split-brain' those in split-brain, 'summary' the counts (GlusterFS's glfsheal, run by "
        "the agent of a node holding a brick).",
    )
    cluster(p)
    p.add_argument("name")
    p.add_argument("what", nargs="*", metavar="info [split-brain] | summary", help="omit to start an index heal")
    output(p)
    p.set_defaults(func=volume_heal)


def _op(what: list[str]) -> str:
    op = WHAT.get(tuple(what))
    if op is None:
        raise CliError(f"unknown heal command {' '.join(what)!r}: use 'info', 'info split-brain', 'summary' or nothing")
    return op


def volume_heal(args: argparse.Namespace) -> int:
    op = _op(args.what)
    client = Client(getattr(args, "url", None), ca=getattr(args, "ca", None))
    path = f"/api/v1/clusters/{args.cluster}/volumes/{args.name}/heal"
    requested = client.post(path, {"op": op})
    quiet = open(os.devnull, "w") if args.output == "json" else sys.stderr
    try:
        followed = follow_tasks(client, requested["tasks"], HEAL_TIMEOUT, out=quiet, cluster=args.cluster)
    finally:
        if quiet is not sys.stderr:
            quiet.close()
    if followed.timed_out:
        return report(followed)
    result: dict[str, Any] = client.get(path, task=requested["tasks"])
    if args.output == "json":
        print(json.dumps(result, indent=2))
        return 0 if followed.ok else 1
    failed = [n for n in result["nodes"] if not task_done(n["state"])]
    for node in failed:
        print(f"{node['node']}: heal {op} failed: {node['reason']}", file=sys.stderr)
    if op == "index":
        return _print_index(args.name, result) or (1 if failed else 0)
    for brick in result["bricks"]:
        print(f"Brick {brick['brick']}\nStatus: {brick['status']}")
        if op == "summary":
            for key, label in (
                ("entries", "Total Number of entries"),
                ("pending", "Number of entries in heal pending"),
                ("split_brain", "Number of entries in split-brain"),
                ("healing", "Number of entries possibly healing"),
            ):
                print(f"{label}: {'-' if brick.get(key) is None else brick[key]}")
        else:
            for name in brick["files"]:
                print(name)
            label = "Number of entries in split-brain" if op == "split-brain" else "Number of entries"
            print(f"{label}: {'-' if brick['entries'] is None else brick['entries']}")
        print()
    return 1 if failed else 0


def _print_index(name: str, result: dict[str, Any]) -> int:
    code = 0
    for node in result["nodes"]:
        if not task_done(node["state"]):
            continue
        if node.get("triggered"):
            print(f"{node['node']}: index heal launched on volume {name}")
        else:
            code = 1
            lines = "; ".join(f"{xl}: {', '.join(st)}" for xl, st in (node.get("status") or {}).items())
            print(f"{node['node']}: index heal not launched on every brick ({lines})", file=sys.stderr)
    return code
