"""``glusterctl volume replace-brick``: a new brick takes a failed one's place."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from control.client import Client


def add_parser(
    volumes: Any,
    common: argparse.ArgumentParser,
    cluster: Callable[[argparse.ArgumentParser], None],
    wait: Callable[[argparse.ArgumentParser], None],
    wait_volume: Callable[[Client, argparse.Namespace, str, list[str]], int],
) -> None:
    """Register the command; ``wait_volume`` follows the operation for ``--wait`` (control/cli/volumes.py)."""
    p = volumes.add_parser(
        "replace-brick",
        parents=[common],
        help="replace a failed brick with a new one (self-heal fills it)",
        description="Replace a brick whose disk died or whose node is gone (gluster's 'replace-brick ... commit "
        "force'): the new brick takes the old one's place in its replica or disperse set and is started; the "
        "old brick's process stops if its node is reachable (an Unreachable node stops it when it returns); "
        "every brick, self-heal daemon and mount switches to the new graph without a restart, and an index heal "
        "fills the new brick (watch it with 'volume heal VOL info'). Refused on distribute-only volumes, whose "
        "bricks have no copy to heal from: use 'volume expand' and 'volume rebalance start' there. Repeat the "
        "command to retry a replace-brick that failed (ReplaceFailed).",
    )
    cluster(p)
    p.add_argument("name")
    p.add_argument("old", metavar="NODE:/old", help="the brick to replace, as 'volume info' lists it")
    p.add_argument("new", metavar="NODE:/new", help="the new brick: an empty or new directory on an Online node")
    p.add_argument(
        "--force", action="store_true", help="allow the new brick on a node holding another brick of the set"
    )
    wait(p)
    p.set_defaults(func=volume_replace_brick, wait_volume=wait_volume)


def volume_replace_brick(args: argparse.Namespace) -> int:
    client = Client(getattr(args, "url", None))
    answer = client.post(
        f"/api/v1/clusters/{args.cluster}/volumes/{args.name}/replace-brick",
        {"old": args.old, "new": args.new, "force": args.force},
    )
    print("Volume replace-brick request sent.")
    return args.wait_volume(client, args, "replace-brick", answer["tasks"]) if args.wait else 0
