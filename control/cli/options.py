"""CLI commands for volume options: `volume set`, `volume reset`, `volume get` (as gluster's)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from control.cli.follow import follow_tasks, report
from control.cli.output import emit
from control.client import Client


def add_parsers(
    volumes: Any,
    common: argparse.ArgumentParser,
    cluster: Callable[[argparse.ArgumentParser], None],
    output: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add set/reset/get to the `volume` subcommands."""
    p = volumes.add_parser(
        "set",
        parents=[common],
        help="set a volume option (GlusterFS's keys, checked as glusterd checks them)",
        description="Set KEY to VALUE (full key, alias or unique short form, e.g. performance.write-behind, "
        "write-behind). The new volfiles go to every node with bricks; running bricks, self-heal daemons "
        "and mounts reload them without a restart. 'volume get VOL all' lists the keys.",
    )
    cluster(p)
    p.add_argument("name")
    p.add_argument("key")
    p.add_argument("value")
    _wait(p)
    p.set_defaults(func=volume_set)
    p = volumes.add_parser(
        "reset",
        parents=[common],
        help="reset one volume option, or all of them",
        description="Forget an option set with 'volume set' (KEY), or every option set on the volume (all).",
    )
    cluster(p)
    p.add_argument("name")
    p.add_argument("key", metavar="KEY|all")
    _wait(p)
    p.set_defaults(func=volume_reset)
    p = volumes.add_parser(
        "get",
        parents=[common],
        help="show volume options with their effective values",
        description="Show one option or all (default) with the value in effect; '(DEFAULT)' marks values "
        "nobody set, '(create)' the ones glusterd sets when it creates a volume.",
    )
    cluster(p)
    p.add_argument("name")
    p.add_argument("key", nargs="?", default="all", metavar="KEY|all")
    output(p)
    p.set_defaults(func=volume_get)


def _wait(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true", help="wait until every node has the new volfiles")
    p.add_argument("--timeout", type=float, default=120, help="seconds to wait with --wait (default: %(default)s)")


def _path(args: argparse.Namespace, suffix: str = "") -> str:
    return f"/api/v1/clusters/{args.cluster}/volumes/{args.name}/options{suffix}"


def _finish(client: Client, args: argparse.Namespace, answer: dict[str, Any]) -> int:
    if not answer["tasks"]:
        return 0
    if not args.wait:
        print(f"New volfiles sent to {len(answer['tasks'])} node(s).")
        return 0
    result = follow_tasks(
        client, answer["tasks"], args.timeout, out=sys.stdout, cluster=args.cluster, title="Pushing volfiles"
    )
    if result.ok:
        print("Volfiles in place on every node.")
        return 0
    return report(result)


def volume_set(args: argparse.Namespace) -> int:
    client = Client(getattr(args, "url", None), ca=getattr(args, "ca", None))
    answer = client.post(_path(args), {args.key: args.value})
    for key, value in answer["changed"].items():
        print(f"volume set: success: {key} = {value}")
    return _finish(client, args, answer)


def volume_reset(args: argparse.Namespace) -> int:
    client = Client(getattr(args, "url", None), ca=getattr(args, "ca", None))
    answer = client.delete(_path(args) if args.key == "all" else _path(args, f"/{args.key}"))
    if not answer["changed"]:
        print(
            f"volume reset: nothing to reset ({'no option is set' if args.key == 'all' else args.key + ' is not set'})"
        )
        return 0
    print(f"volume reset: success: {', '.join(answer['changed'])}")
    return _finish(client, args, answer)


def _marked(row: dict[str, Any]) -> str:
    value = "(null)" if row["value"] is None else row["value"]
    if row["source"] == "default":
        return f"{value} (DEFAULT)"
    if row["source"] == "create":
        return f"{value} (create)"
    return value


def volume_get(args: argparse.Namespace) -> int:
    client = Client(getattr(args, "url", None), ca=getattr(args, "ca", None))
    rows = client.get(_path(args), **({} if args.key == "all" else {"key": args.key}))
    emit(rows, args.output, [("Option", "key"), ("Value", _marked)], title="options")
    return 0
