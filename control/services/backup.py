"""A whole control service in one portable file: ``glusterctl backup`` and ``glusterctl restore`` (docs/recovery.md).

The backup is read from a running server without stopping it, as one consistent snapshot: on
SQLite through the online backup API (a page-level copy into memory, then read), on PostgreSQL in
one read-only REPEATABLE READ transaction on a connection of its own. The file is JSON and does
not depend on the database it came from: every table's rows by field name, in Python values (a
SQLite backup restores into PostgreSQL and back). It carries its format version, the schema
migrations of the database it came from, each table's row count, the data directory's keys
(``metadata.key``, ``control.secret``, the CA of ``tls/``) and a SHA-256 checksum over all of it.

The file holds secrets (password hashes, API token hashes, node credential verifiers, join token
secrets, volume logins, the metadata signing key): it is written with mode 0600 and must be kept
like the data directory itself. The checksum finds corruption; it does not prove who wrote the
file.

A restore goes into an empty database only, in one transaction: the schema the backup had,
its rows, the sequences moved past them (PostgreSQL), then the migrations this glusterctl adds,
and the counts read back must equal the file's.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

import peewee as pw

from control.store import db as store
from control.store import models as m

FORMAT = "glusterctl-backup"
FORMAT_VERSION = 1
# every table but the schema versions, parents before children (foreign keys)
TABLES: list[type[m.BaseModel]] = [model for model in m.ALL_MODELS if model is not m.SchemaVersion]
# the data directory's keys: agents pin the first, the broker knows the second, clients and agents trust the CA
FILES = ("metadata.key", "control.secret", "tls/ca.pem", "tls/ca.key")
INSERT_BATCH = 200

_data_dir: str | None = None


class BackupError(Exception):
    """The backup cannot be taken, checked or restored; the message says why and what to do."""


def use_data_dir(path: str | None) -> None:
    """The running server's data directory, whose keys a backup taken through REST includes."""
    global _data_dir
    _data_dir = path


def data_dir() -> str | None:
    return _data_dir


# ---- reading one consistent snapshot ---------------------------------------------------------
def _columns(model: type[m.BaseModel]) -> list[Any]:
    return list(model._meta.sorted_fields)


def _pk(model: type[m.BaseModel]) -> Any:
    return model._meta.primary_key


def _sql(database: Any, sql: str) -> Any:
    return database.execute_sql(sql)


def _read(cursor: Any, model: type[m.BaseModel]) -> list[dict[str, Any]]:
    fields = _columns(model)
    names = ", ".join(f'"{f.column_name}"' for f in fields)
    pk = _pk(model).column_name
    cursor.execute(f'SELECT {names} FROM "{model._meta.table_name}" ORDER BY "{pk}"')
    rows = []
    for raw in cursor.fetchall():
        row = {}
        for field, value in zip(fields, raw, strict=True):
            value = field.python_value(value) if value is not None else None
            if isinstance(field, pw.BooleanField) and value is not None:
                value = bool(value)
            row[field.name] = value
        rows.append(row)
    return rows


def _read_all(cursor: Any) -> tuple[list[int], dict[str, list[dict[str, Any]]]]:
    cursor.execute('SELECT "version" FROM "schema_version" ORDER BY "version"')
    migrations = sorted({int(r[0]) for r in cursor.fetchall()})
    known = {version for version, _ in store.MIGRATIONS}
    if set(migrations) != known:
        missing = sorted(known - set(migrations))
        extra = sorted(set(migrations) - known)
        raise BackupError(
            "the database's schema is not this glusterctl's "
            + (f"(it lacks migrations {missing}: start this glusterctl's server on it once)" if missing else "")
            + (f"(it has migrations {extra} this glusterctl does not know: use that glusterctl)" if extra else "")
        )
    return migrations, {model._meta.table_name: _read(cursor, model) for model in TABLES}


def _snapshot_sqlite(path: str) -> tuple[list[int], dict[str, list[dict[str, Any]]]]:
    if not os.path.isfile(path):
        raise BackupError(f"no SQLite database at {path}")
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    copy = sqlite3.connect(":memory:")
    try:
        source.backup(copy)  # SQLite's online backup API: a consistent copy while the server writes
        return _read_all(copy.cursor())
    finally:
        source.close()
        copy.close()


def _snapshot_postgresql(database: pw.PostgresqlDatabase) -> tuple[list[int], dict[str, list[dict[str, Any]]]]:
    raw: Any = database
    conn = raw._connect()  # a connection of its own, not one of the server's
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cursor:  # one transaction: every table as of its first statement
            result = _read_all(cursor)
        conn.rollback()
        return result
    finally:
        conn.close()


def snapshot(database: Any) -> tuple[list[int], dict[str, list[dict[str, Any]]]]:
    """The applied migrations and every table's rows, read as one consistent snapshot."""
    database = getattr(database, "obj", database)  # through the proxy
    try:
        if isinstance(database, pw.PostgresqlDatabase):
            return _snapshot_postgresql(database)
        return _snapshot_sqlite(str(database.database))
    except (pw.DatabaseError, pw.InterfaceError, sqlite3.Error) as exc:
        message = " ".join(str(exc).split())
        raise BackupError(f"cannot read the database: {message}") from None
    except Exception as exc:  # psycopg2's errors are not peewee's when read on a raw connection
        if type(exc).__module__.startswith("psycopg2"):
            raise BackupError(f"cannot read the database: {' '.join(str(exc).split())}") from None
        raise


# ---- the file --------------------------------------------------------------------------------
def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def checksum(body: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(_canonical({k: v for k, v in body.items() if k != "checksum"})).hexdigest()


def make(database: Any, data_dir: str | None, created_by: str, source: str) -> dict[str, Any]:
    """The backup document of ``database`` (and the keys of ``data_dir``), checked before it is handed out."""
    migrations, tables = snapshot(database)
    database = getattr(database, "obj", database)
    files = {}
    for name in FILES:
        path = os.path.join(data_dir, name) if data_dir else ""
        if path and os.path.isfile(path):
            with open(path) as fh:
                files[name] = fh.read()
    body: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "schema_version": max(migrations),
        "migrations": migrations,
        "created_at": time.time(),
        "created_by": created_by,
        "source": source,
        "database": "postgresql" if isinstance(database, pw.PostgresqlDatabase) else "sqlite",
        "counts": {name: len(rows) for name, rows in tables.items()},
        "files": files,
        "tables": tables,
    }
    body["checksum"] = checksum(body)
    check(body)
    return body


def take(created_by: str, source: str) -> dict[str, Any]:
    """The backup document of the running server: its database and the keys of its data directory."""
    return make(m.database_proxy, data_dir(), created_by, source)


def dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def write_file(path: str, data: bytes) -> None:
    """Write a backup to a new file with mode 0600 (it holds secrets); an existing file is not overwritten."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise BackupError(f"{path} exists: give a new file name (a backup never overwrites a file)") from None
    except OSError as exc:
        raise BackupError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def load(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror}") from None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BackupError(f"{path} is not a glusterctl backup (not JSON: truncated or damaged?)") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise BackupError(f"{path} is not a glusterctl backup (no format {FORMAT!r})")
    return body


def check(body: dict[str, Any]) -> list[str]:
    """Verify a backup document: format, checksum, schema version, counts and foreign keys.

    Returns one line per table ("node: 3 rows"); BackupError says what is wrong.
    """
    version = body.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BackupError(
            f"backup format version {version} is newer than this glusterctl's ({FORMAT_VERSION}): use a newer glusterctl"
        )
    if body.get("checksum") != checksum(body):
        raise BackupError("the backup's checksum does not match its content: the file was changed or damaged")
    migrations = body.get("migrations") or []
    known = {v for v, _ in store.MIGRATIONS}
    unknown = sorted(set(migrations) - known)
    if unknown or int(body.get("schema_version") or 0) > store.SCHEMA_VERSION:
        raise BackupError(
            f"the backup's schema version {body.get('schema_version')} (migrations {unknown or migrations[-1:]}) is "
            f"newer than this glusterctl's ({store.SCHEMA_VERSION}): restore it with that glusterctl or a newer one"
        )
    tables = body.get("tables")
    counts = body.get("counts")
    if not isinstance(tables, dict) or not isinstance(counts, dict):
        raise BackupError("the backup has no tables or no counts")
    problems = []
    for model in TABLES:
        name = model._meta.table_name
        rows = tables.get(name)
        if not isinstance(rows, list):
            problems.append(f"table {name} is missing")
        elif counts.get(name) != len(rows):
            problems.append(f"table {name} has {len(rows)} rows, its count says {counts.get(name)}")
    if problems:
        raise BackupError("the backup is inconsistent: " + "; ".join(problems))
    problems = _dangling(tables)
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise BackupError("the backup's references are broken: " + "; ".join(problems[:10]) + more)
    return [f"{model._meta.table_name}: {counts[model._meta.table_name]} rows" for model in TABLES]


def _dangling(tables: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Each reference to a row that is not in the backup (a brick's volume, a node's cluster, ...)."""
    keys: dict[str, set[Any]] = {}
    for model in TABLES:
        pk = _pk(model).name
        keys[model._meta.table_name] = {row.get(pk) for row in tables.get(model._meta.table_name, [])}
    problems = []
    for model in TABLES:
        name = model._meta.table_name
        for field in _columns(model):
            if not isinstance(field, pw.ForeignKeyField):
                continue
            parent = field.rel_model._meta.table_name
            for row in tables.get(name, []):
                value = row.get(field.name)
                if value is None:
                    if not field.null:
                        problems.append(f"{name} {row.get(_pk(model).name)} has no {field.name}")
                elif value not in keys.get(parent, set()):
                    problems.append(f"{name} {row.get(_pk(model).name)}: its {field.name} {value} is missing")
    return problems


# ---- restoring -------------------------------------------------------------------------------
def holdings(database: pw.Database) -> list[str]:
    """What ``database`` already holds ("3 rows in node"); empty when a restore may go in."""
    present = set(database.get_tables())
    held = []
    for model in TABLES:
        table = model._meta.table_name
        if table in present:
            cursor = _sql(database, f'SELECT COUNT(*) FROM "{table}"')
            count = int(cursor.fetchone()[0])
            if count:
                held.append(f"{count} rows in {table}")
    return held


def _check_files(body: dict[str, Any], data_dir: str) -> None:
    for name, text in (body.get("files") or {}).items():
        if name not in FILES:
            raise BackupError(f"the backup holds an unknown file {name!r}")
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            with open(path) as fh:
                if fh.read() != text:
                    raise BackupError(
                        f"{path} exists and differs from the backup's: restore into a new, empty data directory"
                    )


def restore(body: dict[str, Any], url: str | None, data_dir: str) -> list[str]:
    """Restore a checked backup into the empty database ``url`` (default: DATA_DIR's SQLite); the report lines."""
    check(body)
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    _check_files(body, data_dir)
    database = store.make_database(url, data_dir)
    where = store.redact_db_url(url) if url and not url.startswith("sqlite") else str(database.database)
    try:
        database.connect(reuse_if_open=True)
    except pw.OperationalError as exc:
        raise BackupError(f"cannot open database {where}: {' '.join(str(exc).split())}") from None
    m.database_proxy.initialize(database)
    try:
        with store.sqlite_foreign_keys_off(database), database.atomic():
            held = holdings(database)
            if held:
                raise BackupError(
                    f"the database {where} is not empty ({', '.join(held[:5])}): a backup is restored only into an "
                    "empty database (a new --data-dir, or a new PostgreSQL database)"
                )
            store.migrate(database, only=set(body["migrations"]))  # the schema the backup was taken at
            tables = body["tables"]
            for model in TABLES:
                _insert(database, model, tables[model._meta.table_name])
            if isinstance(database, pw.PostgresqlDatabase):
                _move_sequences(database)
            schema = store.migrate(database)  # then what this glusterctl adds
            wrong = [
                f"{model._meta.table_name}: {model.select().count()} != {body['counts'][model._meta.table_name]}"
                for model in TABLES
                if model.select().count() != body["counts"][model._meta.table_name]
            ]
            if wrong:
                raise BackupError("the restored counts differ from the backup's: " + "; ".join(wrong))
            store.check_foreign_keys(database)  # PostgreSQL checked each row as it went in
    except store.DatabaseError as exc:
        raise BackupError(f"the restored database is inconsistent: {exc}") from None
    except pw.IntegrityError as exc:
        raise BackupError(f"the backup does not fit the schema: {' '.join(str(exc).split())}") from None
    finally:
        database.close()
    for name, text in sorted((body.get("files") or {}).items()):
        path = os.path.join(data_dir, name)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        if not os.path.exists(path):
            write_file(path, text.encode())
    counts = body["counts"]
    return [
        f"restored into {where} (schema version {schema}) the backup taken at "
        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(body['created_at']))} by {body.get('created_by') or '?'}",
        f"{counts['cluster']} clusters, {counts['node']} nodes, {counts['device']} devices, {counts['volume']} volumes, "
        f"{counts['brick']} bricks, {counts['user']} users",
        *(f"data directory {data_dir}: {name}" for name in sorted(body.get("files") or {})),
    ]


def _insert(database: pw.Database, model: type[m.BaseModel], rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` into the columns the table has at the backup's schema (a later migration adds the rest)."""
    present = {column.name for column in database.get_columns(model._meta.table_name)}
    fields = [f for f in _columns(model) if f.column_name in present]
    # a plain table, not the model: the model would add every field it has, including ones the table lacks yet
    table: Any = pw.Table(model._meta.table_name, [f.column_name for f in fields]).bind(database)
    columns = [getattr(table, f.column_name) for f in fields]
    values = []
    for row in rows:
        values.append(tuple(f.db_value(row[f.name] if f.name in row else _default(f)) for f in fields))
    for start in range(0, len(values), INSERT_BATCH):
        table.insert(values[start : start + INSERT_BATCH], columns=columns).execute()


def _default(field: Any) -> Any:
    default = field.default
    return default() if callable(default) else default


def _move_sequences(database: pw.Database) -> None:
    """Past the restored ids, so the next row gets a new one (PostgreSQL sequences do not see explicit ids)."""
    for model in TABLES:
        pk = _pk(model)
        if not isinstance(pk, pw.AutoField):
            continue
        table = model._meta.table_name
        _sql(
            database,
            f"SELECT setval(pg_get_serial_sequence('\"{table}\"', '{pk.column_name}'), "
            f'COALESCE(MAX("{pk.column_name}"), 1), MAX("{pk.column_name}") IS NOT NULL) FROM "{table}"',
        )


def summary(body: dict[str, Any]) -> Iterable[str]:
    created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(body.get("created_at") or 0)))
    yield (
        f"glusterctl backup format {body.get('format_version')}, schema version {body.get('schema_version')}, "
        f"taken {created} by {body.get('created_by') or '?'} from {body.get('database')} ({body.get('source')})"
    )
