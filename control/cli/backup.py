"""``glusterctl backup`` and ``glusterctl restore``: the whole control service in one file (docs/recovery.md)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from control.cli.errors import CliError
from control.client import Client

SECRETS = (
    "The file holds secrets (password and API token hashes, node credential verifiers, join token secrets, "
    "volume logins, the metadata signing key, the CA key): it is written with mode 0600; keep it like the data directory."
)
DEFAULT_DATA_DIR = "/var/lib/glusterctl"


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "backup",
        parents=[common],
        help="save a backup of the control service to a file (admins), or check one (--check)",
        description="Save one consistent snapshot of the control service, taken while it runs, to FILE: every "
        "table, the schema version, row counts, a checksum and the data directory's keys, in one portable "
        "format (a SQLite backup restores into PostgreSQL and back). By default the running server makes it "
        "(a global admin's login; each backup is in the audit log); with --data-dir or --db it is read from "
        "the database directly (on the server's machine, even while the server runs). --check FILE verifies "
        f"a backup without restoring it. {SECRETS}",
    )
    p.add_argument("file", metavar="FILE", help="the backup file to write (never overwritten), or to check")
    p.add_argument("--check", action="store_true", help="verify FILE (checksum, counts, references, schema version)")
    p.add_argument("--data-dir", help="read the database of this data directory directly instead of through REST")
    p.add_argument("--db", help="read this database directly: sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
    p.set_defaults(func=backup_cmd)

    p = sub.add_parser(
        "restore",
        help="restore a backup file into an empty database, then start the server on it",
        description="Restore a backup made by 'glusterctl backup' into an EMPTY database: the SQLite database of "
        "--data-dir (default), or --db (a new PostgreSQL database). The file is checked first (checksum, counts, "
        "references, schema version no newer than this glusterctl's); a database that holds anything is refused. "
        "The data directory gets the backup's metadata.key, control.secret and CA (tls/). Then start 'glusterctl server' "
        "with the same --data-dir/--db: agents log in again with their own credentials and running bricks are "
        "not touched. Users, logins and API tokens come back as they were.",
    )
    p.add_argument("file", metavar="FILE", help="the backup file")
    p.add_argument(
        "--data-dir",
        help="the new server's data directory: its SQLite database (unless --db) and keys "
        f"(default: $GLUSTERCTL_DATA_DIR or {DEFAULT_DATA_DIR})",
    )
    p.add_argument("--db", help="restore into this empty database: postgresql://USER@HOST:PORT/DB or sqlite:///PATH")
    p.set_defaults(func=restore_cmd)


def _data_dir(args: argparse.Namespace) -> str:
    return str(args.data_dir or os.environ.get("GLUSTERCTL_DATA_DIR") or DEFAULT_DATA_DIR)


def backup_cmd(args: argparse.Namespace) -> int:
    from control.services import backup

    try:
        if args.check:
            body = backup.load(args.file)
            lines = backup.check(body)
            print(*backup.summary(body), sep="\n")
            print(*lines, sep="\n")
            print(f"{args.file}: OK ({body['checksum']})")
            return 0
        if os.path.exists(args.file):
            raise CliError(f"{args.file} exists: give a new file name (a backup never overwrites a file)")
        if args.data_dir or args.db:
            data = _offline(args)
        else:
            client = Client(args.url, ca=args.ca)
            data = str(client.request("POST", "/api/v1/backup", body={}, raw=True)).encode()
            body = json.loads(data)
            backup.check(body)  # what arrived is what the server made
        backup.write_file(args.file, data)
    except backup.BackupError as exc:
        raise CliError(str(exc)) from None
    counts = json.loads(data)["counts"]
    print(
        f"backup written to {args.file} (mode 0600, {len(data)} bytes): {counts['cluster']} clusters, "
        f"{counts['node']} nodes, {counts['volume']} volumes, {counts['brick']} bricks, {counts['user']} users. "
        "It holds secrets: keep it like the data directory."
    )
    return 0


def _offline(args: argparse.Namespace) -> bytes:
    import getpass

    from control.services import backup
    from control.store import db as store

    data_dir = _data_dir(args)
    if not args.db and not os.path.isfile(os.path.join(data_dir, "glusterctl.db")):
        raise CliError(f"no database in {data_dir} (glusterctl.db): give the server's --data-dir or --db")
    try:
        database = store.make_database(args.db, data_dir)
    except store.DatabaseError as exc:
        raise CliError(str(exc)) from None
    try:
        body = backup.make(database, data_dir if args.data_dir else None, f"{getpass.getuser()} (offline)", "offline")
    finally:
        database.close()
    return backup.dumps(body)


def restore_cmd(args: argparse.Namespace) -> int:
    from control.services import backup
    from control.store.db import DatabaseError

    try:
        body = backup.load(args.file)
        lines = backup.restore(body, args.db, _data_dir(args))
    except (backup.BackupError, DatabaseError) as exc:
        raise CliError(str(exc)) from None
    for line in lines:
        print(f"restore: {line}")
    print("restore: done; start 'glusterctl server' with the same --data-dir/--db")
    return 0
