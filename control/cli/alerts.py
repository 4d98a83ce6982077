"""``glusterctl alert list``: the alerts the control service raised (firing; with ``--all`` resolved too)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from control.cli.output import emit, styled
from control.client import Client
from control.client.format import ago

COLUMNS: list[tuple[str, Any]] = [
    ("ID", "id"),
    ("CLUSTER", "cluster"),
    ("SEVERITY", lambda a: styled(a["severity"])),
    ("KIND", "kind"),
    ("SUBJECT", "subject"),
    ("STATE", lambda a: styled(a["state"])),
    ("SINCE", lambda a: ago(a["since"])),
    ("UNTIL", lambda a: ago(a["until"]) if a.get("until") else ""),
    ("SUMMARY", "summary"),
]


def add_parser(
    sub: Any,
    common: argparse.ArgumentParser,
    output: Callable[[argparse.ArgumentParser], None],
) -> None:
    alerts = sub.add_parser("alert", help="alerts: what is wrong in the clusters").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = alerts.add_parser(
        "list",
        parents=[common],
        help="list firing alerts, newest first (--all: resolved ones too)",
        description="Alerts the control service raised from the clusters' state: node Unreachable, brick "
        "Offline, volume Degraded or Down, capacity at 80% (warning) or 90% (critical), self-heal backlog, "
        "recently failed tasks. Each fires until its condition is gone, then it is resolved.",
    )
    p.add_argument("-c", "--cluster", help="only this cluster's alerts (default: every cluster you may read)")
    p.add_argument("--all", action="store_true", help="resolved alerts too")
    output(p)
    p.set_defaults(func=alert_list)


def alert_list(args: argparse.Namespace) -> int:
    client = Client(getattr(args, "url", None), ca=getattr(args, "ca", None))
    params: dict[str, Any] = {"cluster": args.cluster} if args.cluster else {}
    if args.all:
        params["all"] = "true"
    emit(client.get("/api/v1/alerts", **params), args.output, COLUMNS, "alerts")
    return 0
