"""Open the database (SQLite by default, PostgreSQL by URL) and bring its schema up to date."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import peewee as pw
from playhouse.migrate import SchemaMigrator
from playhouse.migrate import migrate as run_migrations
from playhouse.shortcuts import ReconnectMixin

from control.store import models as m

log = logging.getLogger(__name__)


class DatabaseError(Exception):
    """The database cannot be opened or migrated."""


CONNECT_TIMEOUT_SECONDS = 5  # a PostgreSQL server that does not answer fails a connection this fast
PING_TIMEOUT_MS = 2000  # the health check's round trip (SELECT 1) must answer within this


class ReconnectingPostgresqlDatabase(ReconnectMixin, pw.PostgresqlDatabase):
    """PostgreSQL whose per-thread connections survive a server restart.

    A statement outside a transaction, or the BEGIN of a new one, that fails because the server
    closed the connection reconnects once and runs again. Inside a transaction nothing is retried
    (work could be lost): that transaction fails, and the next one reconnects.
    """

    reconnect_errors = (  # type: ignore[assignment]  # the stubs type the base's tuple by its exact entries
        (pw.OperationalError, "server closed the connection"),
        (pw.OperationalError, "terminating connection"),
        (pw.OperationalError, "connection already closed"),
        (pw.OperationalError, "could not receive data"),
        (pw.OperationalError, "ssl connection has been closed"),
        (pw.InterfaceError, "connection already closed"),
    )


def ping(db: pw.Database | None = None) -> bool:
    """A real round trip (SELECT 1) within PING_TIMEOUT_MS; False when the database does not answer."""
    database: Any = db if db is not None else m.database_proxy
    try:
        if isinstance(getattr(database, "obj", database), pw.PostgresqlDatabase):
            with database.atomic():
                _execute_sql(database, f"SET LOCAL statement_timeout = {PING_TIMEOUT_MS}")
                _execute_sql(database, "SELECT 1")
        else:
            _execute_sql(database, "SELECT 1")
        return True
    except (pw.DatabaseError, pw.InterfaceError) as exc:
        log.warning("database health check failed: %s", " ".join(str(exc).split())[:200])
        return False


# what a full disk looks like: SQLite's SQLITE_FULL, PostgreSQL's disk_full (53100) and its write errors
_FULL_TEXTS = ("database or disk is full", "no space left on device", "could not extend file")
_FULL_SQLSTATES = ("53100",)


def outage(exc: BaseException) -> str | None:
    """Whether ``exc`` means the database cannot take writes right now: "full" (out of disk
    space), "down" (it does not answer: restarting, unreachable), or None for any other error
    (a bug, a constraint) that trying again would not cure. "down" costs a health check."""
    if not isinstance(exc, (pw.OperationalError, pw.InterfaceError)):
        return None
    # SQLite rolls a transaction back by itself when its COMMIT finds the disk full, so peewee's own
    # ROLLBACK then fails ("no transaction is active"): the cause is further down the chain
    # (peewee keeps the driver's exception, which has PostgreSQL's SQLSTATE, in ``orig``)
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        for error in (seen, getattr(seen, "orig", None)):
            text = str(error).lower()
            if getattr(error, "pgcode", None) in _FULL_SQLSTATES or any(t in text for t in _FULL_TEXTS):
                return "full"
        seen = seen.__cause__ or seen.__context__
    return None if ping() else "down"


M = TypeVar("M", bound=pw.Model)


def _fetch(db: Any, sql: str) -> list[Any]:
    return list(db.execute_sql(sql).fetchall())


def _execute_sql(db: pw.Database, sql: str) -> None:
    execute: Callable[[str], object] = db.execute_sql  # untyped in peewee's stubs
    execute(sql)


V1_MODELS = [m.User, m.ApiToken, m.Cluster, m.Node, m.Task, m.TaskEvent, m.Event]
# the tables migration 3 retyped: those that existed at schema version 3 (later ones are created right)
V3_MODELS = [m.SchemaVersion, *V1_MODELS, m.Device, m.Volume, m.Brick]


def _migration_1(db: pw.Database) -> None:
    # the first release's tables, without the columns later migrations add
    with (
        _without_columns(m.Task, ("operation", "target")),
        _without_columns(m.Node, NODE_V5_COLUMNS + NODE_V15_COLUMNS),
        _without_columns(m.Cluster, ("metadata_version",)),
    ):
        db.create_tables(V1_MODELS)


def _migration_2(db: pw.Database) -> None:
    """Volumes: devices, volumes, bricks; tasks remember their operation and target."""
    from_database: Callable[[pw.Database], SchemaMigrator] = SchemaMigrator.from_database  # untyped in the stubs
    apply: Callable[..., None] = run_migrations
    migrator = from_database(db)
    apply(
        migrator.add_column("task", "operation", m.Task.operation),
        migrator.add_column("task", "target", m.Task.target),
    )
    db.create_tables([m.Device, m.Volume, m.Brick])


def _migration_3(db: pw.Database) -> None:
    """PostgreSQL column types: timestamps as double precision (REAL, float4, rounds Unix times to
    about 2 minutes), and task targets and event subjects as text (they hold brick paths)."""
    if not isinstance(db, pw.PostgresqlDatabase):
        return  # SQLite's REAL is already 8 bytes and it does not enforce varchar lengths
    with _without_columns(m.Node, NODE_V5_COLUMNS + NODE_V15_COLUMNS):  # added later, created with the right types
        _retype_doubles(db)
    _execute_sql(db, 'ALTER TABLE "task" ALTER COLUMN "target" TYPE text')
    _execute_sql(db, 'ALTER TABLE "event" ALTER COLUMN "subject" TYPE text')


def _retype_doubles(db: pw.Database) -> None:
    for model in V3_MODELS:
        for field in model._meta.sorted_fields:
            if isinstance(field, pw.DoubleField):
                _execute_sql(
                    db,
                    f'ALTER TABLE "{model._meta.table_name}" ALTER COLUMN "{field.column_name}" TYPE double precision',
                )


def _migration_4(db: pw.Database) -> None:
    """Self-heal daemons get their own table; until now they lived in each node's facts ("shds")."""
    db.create_tables([m.SelfHealDaemon])
    volumes = {v.id: v for v in m.Volume.select(m.Volume.id, m.Volume.cluster)}
    for node in m.Node.select(m.Node.id, m.Node.cluster, m.Node.name, m.Node.facts):
        facts = dict(node.facts or {})
        shds = facts.pop("shds", None)
        if shds is None:
            continue
        for volume_id, info in shds.items():
            volume = volumes.get(volume_id)
            if volume is None or volume.cluster_id != node.cluster_id:
                continue
            m.SelfHealDaemon.create(
                volume=volume_id,
                node_name=node.name,
                pid=info.get("pid"),
                state="Online" if info.get("online") else "Offline",
            )
        m.Node.update(facts=facts).where(m.Node.id == node.id).execute()


NODE_V5_COLUMNS = ("credential_hash", "reenrol_until")
NODE_V15_COLUMNS = ("silence_deadline", "facts_at")


def _migration_5(db: pw.Database) -> None:
    """Node identity: the verifier of each node's own secret, and the admin's re-enrolment window."""
    from_database: Callable[[pw.Database], SchemaMigrator] = SchemaMigrator.from_database  # untyped in the stubs
    apply: Callable[..., None] = run_migrations
    migrator = from_database(db)
    apply(
        migrator.add_column("node", "credential_hash", m.Node.credential_hash),
        migrator.add_column("node", "reenrol_until", m.Node.reenrol_until),
    )


def _migration_6(db: pw.Database) -> None:
    """Grants: roles scoped to everything, a cluster, a volume, a node or a device.

    Self-contained and idempotent (``safe``): it may run before or after migration 5.
    """
    db.create_tables([m.Grant], safe=True)


BRICK_CAPACITY_COLUMNS = (
    "total_bytes",
    "free_bytes",
    "used_bytes",
    "inodes_total",
    "inodes_free",
    "inodes_used",
    "fsid",
)


def _migration_7(db: pw.Database) -> None:
    """Brick capacity: each brick filesystem's bytes and inodes, from the heartbeats.

    Self-contained and idempotent: adds only the columns the table lacks.
    """
    have = {column.name for column in db.get_columns("brick")}
    from_database: Callable[[pw.Database], SchemaMigrator] = SchemaMigrator.from_database  # untyped in the stubs
    apply: Callable[..., None] = run_migrations
    migrator = from_database(db)
    missing = [name for name in BRICK_CAPACITY_COLUMNS if name not in have]
    if missing:
        apply(*(migrator.add_column("brick", name, m.Brick._meta.fields[name]) for name in missing))


def _migration_8(db: pw.Database) -> None:
    """Volumes remember which operation concluded and their last stable state (reconciler, reset-state).

    Self-contained and idempotent: it adds only the columns the table lacks.
    """
    have = {c.name for c in db.get_columns("volume")}
    from_database: Callable[[pw.Database], SchemaMigrator] = SchemaMigrator.from_database  # untyped in the stubs
    apply: Callable[..., None] = run_migrations
    migrator = from_database(db)
    for name in ("concluded_operation", "stable_state"):
        if name not in have:
            apply(migrator.add_column("volume", name, m.Volume._meta.fields[name]))
    stable = ["Created", "Started", "Stopped"]
    m.Volume.update(stable_state=m.Volume.state).where(
        m.Volume.state.in_(stable) & (m.Volume.stable_state == "")
    ).execute()


def _migration_9(db: pw.Database) -> None:
    """The audit log: every change asked of the REST API.

    Self-contained and idempotent (``safe``): it creates only what is missing.
    """
    db.create_tables([m.AuditEntry], safe=True)


def _migration_10(db: pw.Database) -> None:
    """Rebalance status per volume and node. Self-contained and idempotent (``safe``): other branches'
    migrations may run before or after it."""
    db.create_tables([m.RebalanceNode], safe=True)


def _migration_11(db: pw.Database) -> None:
    """Alerts: what the control service found wrong, with their lifecycle (firing, resolved).

    Self-contained and idempotent: creates the table (and its indexes) only where missing.
    """
    db.create_tables([m.Alert], safe=True)


def _migration_12(db: pw.Database) -> None:
    """Clusters count the changes of their metadata (the version of the document agents keep).

    Self-contained and idempotent: adds the column only when the table lacks it.
    """
    if "metadata_version" in {c.name for c in db.get_columns("cluster")}:
        return
    from_database: Callable[[pw.Database], SchemaMigrator] = SchemaMigrator.from_database  # untyped in the stubs
    apply: Callable[..., None] = run_migrations
    apply(from_database(db).add_column("cluster", "metadata_version", m.Cluster.metadata_version))


def _migration_14(db: pw.Database) -> None:
    """Settings the servers of one control plane share (the metadata signing key's public half).

    Self-contained and idempotent: creates the table only where missing.
    """
    db.create_tables([m.ControlSetting], safe=True)


def _migration_15(db: pw.Database) -> None:
    """Nodes keep their silence deadline in an indexed column, and when their facts were written.

    Self-contained and idempotent: adds what the table lacks, then fills the deadline of every
    node from its last heartbeat and interval (as the sweeper computed it until now).
    """
    have = {c.name for c in db.get_columns("node")}
    from_database: Callable[[pw.Database], SchemaMigrator] = SchemaMigrator.from_database  # untyped in the stubs
    apply: Callable[..., None] = run_migrations
    migrator = from_database(db)
    steps = []
    if "silence_deadline" not in have:
        steps.append(migrator.add_column("node", "silence_deadline", m.Node.silence_deadline))
    if "facts_at" not in have:
        steps.append(migrator.add_column("node", "facts_at", m.Node.facts_at))
    if steps:
        apply(*steps)
    if "node_silence_deadline" not in {i.name for i in db.get_indexes("node")}:
        apply(migrator.add_index("node", ("silence_deadline",), False))
    for node in m.Node.select(m.Node.id, m.Node.last_seen_at, m.Node.facts).where(m.Node.silence_deadline.is_null()):
        interval = float((node.facts or {}).get("heartbeat_interval") or 10.0)
        deadline = node.last_seen_at + max(3 * interval, 5.0)
        m.Node.update(silence_deadline=deadline, facts_at=node.last_seen_at).where(m.Node.id == node.id).execute()


def _migration_16(db: pw.Database) -> None:
    """PostgreSQL: a statement's new events notify the servers' streams (a trigger, not a statement more per event).

    The NOTIFY is delivered at the commit, as one sent by the writer was. Idempotent; nothing on SQLite.
    """
    if not isinstance(db, pw.PostgresqlDatabase):
        return
    _execute_sql(
        db,
        "CREATE OR REPLACE FUNCTION glusterctl_notify_events() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN NOTIFY glusterctl_events; RETURN NULL; END $$",
    )
    _execute_sql(db, 'DROP TRIGGER IF EXISTS "event_notify" ON "event"')
    _execute_sql(
        db,
        'CREATE TRIGGER "event_notify" AFTER INSERT ON "event" '
        "FOR EACH STATEMENT EXECUTE FUNCTION glusterctl_notify_events()",
    )


class _without_columns:
    """Temporarily hide fields from a model so create_tables builds an older schema."""

    def __init__(self, model: type[pw.Model], names: tuple[str, ...]) -> None:
        self.model, self.names = model, names
        self.saved: list[pw.Field[Any]] = []

    def __enter__(self) -> None:
        for name in self.names:
            field = self.model._meta.fields[name]
            self.saved.append(field)
            self.model._meta.remove_field(name)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, trace: TracebackType | None
    ) -> None:
        for field in self.saved:
            self.model._meta.add_field(field.name, field)


# Versioned migrations: append, never edit a released one.
MIGRATIONS: list[tuple[int, Callable[[pw.Database], None]]] = [
    (1, _migration_1),
    (2, _migration_2),
    (3, _migration_3),
    (4, _migration_4),
    (5, _migration_5),
    (6, _migration_6),
    (7, _migration_7),
    (8, _migration_8),
    (9, _migration_9),
    (10, _migration_10),
    (11, _migration_11),
    (12, _migration_12),
    (14, _migration_14),
    (15, _migration_15),
    (16, _migration_16),
]
SCHEMA_VERSION = max(version for version, _ in MIGRATIONS)


class SerialSqliteDatabase(pw.SqliteDatabase):
    """SQLite whose write transactions in this process take turns on a lock.

    SQLite has one writer at a time; a second BEGIN IMMEDIATE gets SQLITE_BUSY and its busy
    handler sleeps (1, 2, 5 ... 100 ms) before it tries again, so under load a transaction of the
    bridge's worker waited tens of milliseconds behind a request's, and a long queue of them
    could run out the busy timeout ("database is locked"). Threads of one process hand the write
    lock over at once on a lock of their own; busy_timeout still covers other processes.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._writer = threading.Lock()
        self._holds = threading.local()

    def begin(self, lock_type: str | None = None) -> None:
        self._writer.acquire()
        self._holds.writer = True
        try:
            super().begin(lock_type)
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        if getattr(self._holds, "writer", False):
            self._holds.writer = False
            self._writer.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._release()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._release()


def make_database(url: str | None, data_dir: str) -> pw.Database:
    if not url or url.startswith("sqlite"):
        path = os.path.join(data_dir, "glusterctl.db")
        if url and url.startswith("sqlite:///"):
            path = url[len("sqlite:///") :] or path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        # BEGIN IMMEDIATE: a handler reads, then writes, in one transaction; a deferred transaction
        # whose snapshot went stale cannot upgrade and fails at once with "database is locked",
        # where an immediate one waits its turn (busy_timeout)
        return SerialSqliteDatabase(
            path,
            pragmas={"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 10000, "synchronous": 1},
            check_same_thread=False,
            lock_type="IMMEDIATE",
        )
    parsed = urlparse(url)
    if parsed.scheme not in ("postgresql", "postgres"):
        raise DatabaseError(
            f"unsupported database URL scheme {parsed.scheme!r}: use sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
        )
    return ReconnectingPostgresqlDatabase(  # type: ignore[no-untyped-call]
        (parsed.path or "/").lstrip("/") or "postgres",
        user=unquote(parsed.username) if parsed.username else None,
        password=unquote(parsed.password) if parsed.password else None,
        host=parsed.hostname or "127.0.0.1",
        port=parsed.port or 5432,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
    )


def locked(query: pw.ModelSelect[M], of: type[pw.Model] | None = None) -> pw.ModelSelect[M]:
    """``query`` with row locks (SELECT ... FOR UPDATE) where the database has them.

    For rows read and then written in one transaction: on PostgreSQL a concurrent writer waits
    instead of one update being lost (``of``: lock only that table's rows of a join). SQLite
    needs none: its transactions start IMMEDIATE.
    """
    database: Any = query.model._meta.database
    database = getattr(database, "obj", database)  # through the proxy
    if not database.for_update:
        return query
    return query.for_update(of=of) if of is not None else query.for_update()


def joined_atomic(database: Any) -> AbstractContextManager[Any]:
    """``database.atomic()``, or, inside a transaction already open (the bridge's batches), a part of it
    without a savepoint of its own: a savepoint is two more statements for each message. Only for code
    that lets every error out of the block: the error then ends the open transaction too (a batch is
    rolled back whole, then its messages are handled again one by one, each in a transaction of its own)."""
    return nullcontext() if database.in_transaction() else database.atomic()


def delete_where(model: type[pw.Model], condition: Any) -> int:
    """DELETE FROM model WHERE condition; the number of rows deleted.

    (peewee's ``Model.delete`` is typed as a class-only descriptor that mypy cannot resolve on a subclass.)
    """
    return int(pw.ModelDelete(model).where(condition).execute())


def first(query: pw.ModelSelect[M]) -> M | None:
    """The first row of ``query``, or None (``Select.first`` is untyped in peewee's stubs)."""
    for row in query.limit(1):
        return row
    return None


def migrate(db: pw.Database, only: set[int] | None = None) -> int:
    """Apply the migrations the database lacks (``only``: just these, a restore's older schema); the schema version.

    On SQLite, foreign keys are not enforced while migrating: a migration that changes a column
    (a NOT NULL added) copies the table to a new one and drops the old, and with enforcement on that
    drop deletes the rows that refer to it (ON DELETE CASCADE: a cluster's nodes, volumes, ...).
    ``PRAGMA foreign_key_check`` must then find nothing broken before the migrations commit.
    """
    with sqlite_foreign_keys_off(db):
        with db.atomic():
            version = _migrate(db, only)
            check_foreign_keys(db)
    return version


class sqlite_foreign_keys_off:
    """Foreign keys not enforced on this SQLite connection meanwhile (the pragma is a no-op inside a transaction,
    so the caller's outermost transaction must start inside this); nothing on PostgreSQL."""

    def __init__(self, db: pw.Database) -> None:
        self.db: Any = getattr(db, "obj", db)
        self.was: int | None = None

    def __enter__(self) -> None:
        if isinstance(self.db, pw.SqliteDatabase) and not self.db.in_transaction():
            self.was = int(_fetch(self.db, "PRAGMA foreign_keys")[0][0])
            _fetch(self.db, "PRAGMA foreign_keys = 0")

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.was is not None:
            self.db.execute_sql(f"PRAGMA foreign_keys = {self.was}")


def check_foreign_keys(db: pw.Database) -> None:
    """DatabaseError when a SQLite row refers to a row that is not there (PostgreSQL enforces them always)."""
    database: Any = getattr(db, "obj", db)
    if not isinstance(database, pw.SqliteDatabase):
        return
    broken = _fetch(database, "PRAGMA foreign_key_check")
    if broken:
        where = "; ".join(f"{table} row {rowid} refers to a missing {parent}" for table, rowid, parent, _ in broken[:5])
        raise DatabaseError(f"broken references ({len(broken)}): {where}")


def _migrate(db: pw.Database, only: set[int] | None) -> int:
    db.create_tables([m.SchemaVersion])
    # each migration is applied once, by number: branches that add migrations in parallel
    # may land in either order, so a database at 6 still gets a 5 that arrived later
    applied = {row.version for row in m.SchemaVersion.select(m.SchemaVersion.version)}
    unknown = sorted(applied - {version for version, _ in MIGRATIONS})
    if unknown:
        raise DatabaseError(
            f"database schema version {unknown[-1]} is newer than this glusterctl ({SCHEMA_VERSION}); "
            "upgrade glusterctl"
        )
    for version, step in sorted(MIGRATIONS, key=lambda pair: pair[0]):
        if version not in applied and (only is None or version in only):
            log.info("applying schema migration %d", version)
            step(db)
            m.SchemaVersion.create(version=version)
            applied.add(version)
    return max(applied)


def redact_db_url(url: str) -> str:
    """The database URL without its password, for logs and messages."""
    parsed = urlparse(url)
    if not parsed.password:
        return url
    netloc = parsed.netloc.rsplit("@", 1)[-1]
    return parsed._replace(netloc=f"{parsed.username or ''}:***@{netloc}").geturl()


def open_database(url: str | None, data_dir: str) -> pw.Database:
    db = make_database(url, data_dir)
    m.database_proxy.initialize(db)
    try:
        db.connect(reuse_if_open=True)
        migrate(db)
    except pw.OperationalError as exc:
        where = redact_db_url(url) if url else data_dir
        message = str(exc).replace(unquote(urlparse(url).password or "\0"), "***") if url else str(exc)
        raise DatabaseError(f"cannot open database {where}: {message}".strip()) from exc
    return db
