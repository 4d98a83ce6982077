"""``glusterctl audit``: the audit log, every change asked of the REST API (admins only)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from control.cli.errors import CliError
from control.cli.output import emit
from control.client import Client

DEFAULT_LIMIT = 50
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_parser(
    sub: Any,
    common: argparse.ArgumentParser,
    output: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = sub.add_parser(
        "audit",
        parents=[common],
        help="the audit log: who changed what, when, and how it ended (admins only)",
        description="Every change asked of the REST API (every request but GET), newest first. The body of a "
        "request is never logged beyond the names of what it is on: no passwords or tokens.",
    )
    p.add_argument("-c", "--cluster", help="only changes in this cluster (default: all)")
    p.add_argument("--user", help="only changes by this user")
    p.add_argument("--since", help="only changes in this last duration (30m, 2h, 7d) or since this Unix time")
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="at most this many (default: %(default)s)")
    output(p)
    p.set_defaults(func=audit_list)


def parse_since(value: str, now: float | None = None) -> float:
    """A Unix time from ``30m``/``2h``/``7d``/``45s`` (that long ago) or a plain Unix time."""
    now = time.time() if now is None else now
    text = value.strip()
    try:
        if text and text[-1] in UNITS:
            amount = float(text[:-1])
            if amount < 0:
                raise ValueError
            return now - amount * UNITS[text[-1]]
        return float(text)
    except ValueError:
        raise CliError(f"--since {value!r}: use a duration such as 30m, 2h or 7d, or a Unix time") from None


def _target(row: dict[str, Any]) -> str:
    body = row["params"].get("body", {})
    named = " ".join(f"{k}={v}" for k, v in sorted(body.items()) if k in ("name", "node", "role", "path"))
    return f"{row['path']} {named}".strip()


def audit_list(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.cluster:
        params["cluster"] = args.cluster
    if args.user:
        params["user"] = args.user
    if args.since:
        params["since"] = parse_since(args.since)
    rows = Client(args.url, ca=args.ca).get("/api/v1/audit", **params)
    emit(
        rows,
        args.output,
        [
            ("ID", "id"),
            ("TIME", lambda r: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["at"]))),
            ("USER", lambda r: r["actor"] or "-"),
            ("FROM", "address"),
            ("CHANGE", lambda r: f"{r['method']} {_target(r)}"),
            ("CLUSTER", lambda r: r["cluster"] or "-"),
            ("RESULT", lambda r: str(r["status"]) + (f" {r['detail'][:80]}" if r["detail"] else "")),
        ],
        title="audit entries",
    )
    return 0
