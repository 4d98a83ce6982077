"""Peewee models. The database is the source of truth (design invariant 1)."""

from __future__ import annotations

import json
import time
from typing import Any

import peewee as pw

database_proxy = pw.DatabaseProxy()


def now() -> float:
    return time.time()


class JSONField(pw.TextField):
    def db_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, sort_keys=True)

    def python_value(self, value: str | None) -> Any:
        return None if value is None else json.loads(value)


class BaseModel(pw.Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False


class SchemaVersion(BaseModel):
    id = pw.AutoField()
    version = pw.IntegerField()
    applied_at = pw.DoubleField(default=now)


class User(BaseModel):
    id = pw.AutoField()
    name = pw.CharField(max_length=64, unique=True)
    password_hash = pw.CharField(max_length=255)
    is_admin = pw.BooleanField(default=False)
    created_at = pw.DoubleField(default=now)


class ApiToken(BaseModel):
    id = pw.AutoField()
    user = pw.ForeignKeyField(User, backref="tokens", on_delete="CASCADE")
    user_id: int
    token_hash = pw.CharField(max_length=64, unique=True)
    created_at = pw.DoubleField(default=now)
    last_used_at = pw.DoubleField(null=True)


class Cluster(BaseModel):
    id = pw.AutoField()
    name = pw.CharField(max_length=64, unique=True)
    join_secret = pw.CharField(max_length=128)
    created_at = pw.DoubleField(default=now)
    token_rotated_at = pw.DoubleField(default=now)
    # grows with every change of the cluster's metadata (migration 12; control/services/metadata.py)
    metadata_version = pw.BigIntegerField(default=0)


class Node(BaseModel):
    id = pw.AutoField()
    cluster = pw.ForeignKeyField(Cluster, backref="nodes", on_delete="CASCADE")
    cluster_id: int
    name = pw.CharField(max_length=253)
    state = pw.CharField(max_length=16)
    state_changed_at = pw.DoubleField(default=now)
    last_seen_at = pw.DoubleField(default=now)
    agent_id = pw.CharField(max_length=64)
    epoch = pw.BigIntegerField(default=0)
    address = pw.CharField(max_length=255, default="")
    hostname = pw.CharField(max_length=255, default="")
    agent_version = pw.CharField(max_length=32, default="")
    glusterfs_version = pw.CharField(max_length=64, null=True)
    facts = JSONField(default=dict)
    created_at = pw.DoubleField(default=now)
    # sha256 of the node's own secret, set at enrolment (None: enrolled before node credentials existed)
    credential_hash = pw.CharField(max_length=64, null=True)
    # until when an admin allows this name to enrol again (None: not allowed)
    reenrol_until = pw.DoubleField(null=True)
    # migration 15: when an Online node counts as silent (last heartbeat + 3 intervals, at least 5 s),
    # so the sweeper finds silent nodes by an index instead of reading every node's facts; and when
    # ``facts`` were last written (heartbeats that change only the uptime do not rewrite them)
    silence_deadline = pw.DoubleField(null=True, index=True)
    facts_at = pw.DoubleField(null=True)

    class Meta:
        indexes = ((("cluster", "name"), True),)


class Task(BaseModel):
    id = pw.CharField(max_length=64, primary_key=True)
    cluster = pw.ForeignKeyField(Cluster, backref="tasks", on_delete="CASCADE")
    cluster_id: int
    node_name = pw.CharField(max_length=253)
    kind = pw.CharField(max_length=64)
    # which user-visible operation this task is part of (e.g. one "volume start"), and on what
    operation = pw.CharField(max_length=64, default="", index=True)
    target = pw.TextField(default="")
    params = JSONField(default=dict)
    state = pw.CharField(max_length=16, index=True)
    reason = pw.TextField(default="")
    result = JSONField(null=True)
    created_at = pw.DoubleField(default=now)
    updated_at = pw.DoubleField(default=now)
    finished_at = pw.DoubleField(null=True)


class TaskEvent(BaseModel):
    id = pw.AutoField()
    task = pw.ForeignKeyField(Task, backref="events", on_delete="CASCADE")
    task_id: str
    state = pw.CharField(max_length=16)
    at = pw.DoubleField(default=now)
    reason = pw.TextField(default="")


class Event(BaseModel):
    """Every persisted state change, in order; the feed behind /api/v1/events."""

    id = pw.AutoField()
    at = pw.DoubleField(default=now)
    cluster = pw.CharField(max_length=64, default="")
    kind = pw.CharField(max_length=32)
    subject = pw.TextField(default="")
    data = JSONField(default=dict)


class Device(BaseModel):
    """A brick home registered on a node: a directory (path) or a block device mounted by the agent."""

    id = pw.AutoField()
    cluster = pw.ForeignKeyField(Cluster, backref="devices", on_delete="CASCADE")
    cluster_id: int
    node_name = pw.CharField(max_length=253)
    path = pw.CharField(max_length=1024)
    device = pw.CharField(max_length=1024, default="")
    state = pw.CharField(max_length=16)  # Pending, Ready, Failed
    reason = pw.TextField(default="")
    total_bytes = pw.BigIntegerField(default=0)
    free_bytes = pw.BigIntegerField(default=0)
    task_id = pw.CharField(max_length=64, default="")
    created_at = pw.DoubleField(default=now)

    class Meta:
        indexes = ((("cluster", "node_name", "path"), True),)


class Volume(BaseModel):
    id = pw.CharField(max_length=36, primary_key=True)
    cluster = pw.ForeignKeyField(Cluster, backref="volumes", on_delete="CASCADE")
    cluster_id: int
    name = pw.CharField(max_length=64)
    type = pw.CharField(max_length=16)
    replica = pw.IntegerField(default=1)
    arbiter = pw.IntegerField(default=0)
    disperse = pw.IntegerField(default=0)
    redundancy = pw.IntegerField(default=0)
    state = pw.CharField(max_length=16)
    operation = pw.CharField(max_length=64, default="")
    # the operation whose final hook moved the volume on (a replayed hook is then a no-op), and
    # the last state the volume rested in (where an admin's reset-state takes a stuck volume)
    concluded_operation = pw.CharField(max_length=64, default="")
    stable_state = pw.CharField(max_length=16, default="")
    start_after_create = pw.BooleanField(default=True)
    options = JSONField(default=dict)
    auth_username = pw.CharField(max_length=64)
    auth_password = pw.CharField(max_length=64)
    size_bytes = pw.BigIntegerField(default=0)
    created_at = pw.DoubleField(default=now)
    updated_at = pw.DoubleField(default=now)

    class Meta:
        indexes = ((("cluster", "name"), True),)


class Brick(BaseModel):
    id = pw.AutoField()
    volume = pw.ForeignKeyField(Volume, backref="bricks", on_delete="CASCADE")
    volume_id: str
    index = pw.IntegerField()  # type: ignore[assignment]  # the column shadows Model.index(), unused here
    node_name = pw.CharField(max_length=253)
    path = pw.CharField(max_length=1024)
    port = pw.IntegerField()
    device = pw.ForeignKeyField(Device, backref="bricks", null=True, on_delete="SET NULL")
    device_id: int | None
    state = pw.CharField(max_length=16, default="Offline")
    pid = pw.IntegerField(null=True)
    state_changed_at = pw.DoubleField(default=now)
    # the brick filesystem's capacity from the node's heartbeats (migration 7); None until reported
    total_bytes = pw.BigIntegerField(null=True)
    free_bytes = pw.BigIntegerField(null=True)
    used_bytes = pw.BigIntegerField(null=True)
    inodes_total = pw.BigIntegerField(null=True)
    inodes_free = pw.BigIntegerField(null=True)
    inodes_used = pw.BigIntegerField(null=True)
    fsid = pw.CharField(max_length=32, default="")

    class Meta:
        indexes = ((("volume", "index"), True),)


class SelfHealDaemon(BaseModel):
    """A volume's self-heal daemon on one node, as that node's heartbeats last reported it."""

    id = pw.AutoField()
    volume = pw.ForeignKeyField(Volume, backref="self_heal_daemons", on_delete="CASCADE")
    volume_id: str
    node_name = pw.CharField(max_length=253)
    pid = pw.IntegerField(null=True)
    state = pw.CharField(max_length=16, default="Offline")  # Online, Offline
    state_changed_at = pw.DoubleField(default=now)

    class Meta:
        indexes = ((("volume", "node_name"), True),)


class RebalanceNode(BaseModel):
    """One node's part of a volume's latest rebalance run, as its agent last reported it."""

    id = pw.AutoField()
    volume = pw.ForeignKeyField(Volume, backref="rebalance_nodes", on_delete="CASCADE")
    volume_id: str
    node_name = pw.CharField(max_length=253)
    run = pw.CharField(max_length=64)  # one id per rebalance start, the same on every node
    command = pw.CharField(max_length=16)  # full, fix-layout
    state = pw.CharField(max_length=16)  # broker.messages.RebalanceState
    files = pw.BigIntegerField(default=0)  # migrated (fix-layout: directories fixed)
    size = pw.BigIntegerField(default=0)  # bytes migrated
    lookups = pw.BigIntegerField(default=0)  # files scanned
    failures = pw.BigIntegerField(default=0)
    skipped = pw.BigIntegerField(default=0)
    run_time = pw.DoubleField(default=0)  # seconds
    error = pw.TextField(default="")
    updated_at = pw.DoubleField(default=now)

    class Meta:
        indexes = ((("volume", "node_name"), True),)


class Grant(BaseModel):
    """A role given to a user over everything (scope ``global``) or over one cluster, volume, node or device.

    The scoped object is a foreign key, so a grant ends with its object: a volume or node of the
    same name created later is not covered. When a recursive delete nulls the key instead, the
    grant keeps its ``scope`` and matches nothing.
    """

    id = pw.AutoField()
    user = pw.ForeignKeyField(User, backref="grants", on_delete="CASCADE")
    user_id: int
    role = pw.CharField(max_length=16)  # admin, operator, viewer
    scope = pw.CharField(max_length=16)  # global, cluster, volume, node, device
    cluster = pw.ForeignKeyField(Cluster, null=True, on_delete="CASCADE")
    cluster_id: int | None
    volume = pw.ForeignKeyField(Volume, null=True, on_delete="CASCADE")
    volume_id: str | None
    node = pw.ForeignKeyField(Node, null=True, on_delete="CASCADE")
    node_id: int | None
    device = pw.ForeignKeyField(Device, null=True, on_delete="CASCADE")
    device_id: int | None
    created_at = pw.DoubleField(default=now)


class Alert(BaseModel):
    """A condition the control service found in a cluster: firing from ``since``, resolved at ``until``.

    At most one firing row per (cluster, kind, subject); a condition that comes back opens a new row.
    """

    id = pw.AutoField()
    cluster = pw.ForeignKeyField(Cluster, backref="alerts", on_delete="CASCADE")
    cluster_id: int
    kind = pw.CharField(max_length=32)
    subject = pw.TextField(default="")
    severity = pw.CharField(max_length=16)  # warning, critical
    summary = pw.TextField(default="")
    details = JSONField(default=dict)
    state = pw.CharField(max_length=16, index=True)  # firing, resolved
    since = pw.DoubleField(default=now)
    until = pw.DoubleField(null=True)


class AuditEntry(BaseModel):
    """One change asked of the REST API: who, what (method and route), on what, and how it ended.

    Written by the API's audit middleware for every non-GET request; never holds request bodies
    beyond a few named, non-secret fields (``params``).
    """

    id = pw.AutoField()
    at = pw.DoubleField(default=now, index=True)
    actor = pw.CharField(max_length=64, default="", index=True)  # "" when the caller was not logged in
    address = pw.CharField(max_length=64, default="")
    method = pw.CharField(max_length=8)
    route = pw.CharField(max_length=255)  # the route's template, e.g. /api/v1/clusters/{name}/volumes/{volume}
    path = pw.TextField()  # the concrete path: the target
    cluster = pw.CharField(max_length=64, default="", index=True)
    params = JSONField(default=dict)  # path parameters, query parameters, named body fields
    status = pw.IntegerField()
    detail = pw.TextField(default="")  # the problem detail of a refused or failed change

    class Meta:
        table_name = "audit"


ALL_MODELS = [
    SchemaVersion,
    User,
    ApiToken,
    Cluster,
    Node,
    Task,
    TaskEvent,
    Event,
    Device,
    Volume,
    Brick,
    SelfHealDaemon,
    Grant,
    RebalanceNode,
    Alert,
    AuditEntry,
]


class ControlSetting(BaseModel):
    """Settings every server of one control plane must share (docs/ha.md): ``metadata_key``, the public
    key that signs the agents' metadata documents."""

    name = pw.CharField(max_length=64, primary_key=True)
    value = pw.TextField()
