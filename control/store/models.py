"""Peewee models. The database is the source of truth (design invariant 1)."""

from __future__ import annotations

import json
import time

import peewee as pw

database_proxy = pw.DatabaseProxy()


def now() -> float:
    return time.time()


class JSONField(pw.TextField):
    def db_value(self, value):
        return None if value is None else json.dumps(value, sort_keys=True)

    def python_value(self, value):
        return None if value is None else json.loads(value)


class BaseModel(pw.Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False


class SchemaVersion(BaseModel):
    version = pw.IntegerField()
    applied_at = pw.FloatField(default=now)


class User(BaseModel):
    name = pw.CharField(max_length=64, unique=True)
    password_hash = pw.CharField(max_length=255)
    is_admin = pw.BooleanField(default=False)
    created_at = pw.FloatField(default=now)


class ApiToken(BaseModel):
    user = pw.ForeignKeyField(User, backref="tokens", on_delete="CASCADE")
    token_hash = pw.CharField(max_length=64, unique=True)
    created_at = pw.FloatField(default=now)
    last_used_at = pw.FloatField(null=True)


class Cluster(BaseModel):
    name = pw.CharField(max_length=64, unique=True)
    join_secret = pw.CharField(max_length=128)
    created_at = pw.FloatField(default=now)
    token_rotated_at = pw.FloatField(default=now)


class Node(BaseModel):
    cluster = pw.ForeignKeyField(Cluster, backref="nodes", on_delete="CASCADE")
    name = pw.CharField(max_length=253)
    state = pw.CharField(max_length=16)
    state_changed_at = pw.FloatField(default=now)
    last_seen_at = pw.FloatField(default=now)
    agent_id = pw.CharField(max_length=64)
    epoch = pw.BigIntegerField(default=0)
    address = pw.CharField(max_length=255, default="")
    hostname = pw.CharField(max_length=255, default="")
    agent_version = pw.CharField(max_length=32, default="")
    glusterfs_version = pw.CharField(max_length=64, null=True)
    facts = JSONField(default=dict)
    created_at = pw.FloatField(default=now)

    class Meta:
        indexes = ((("cluster", "name"), True),)


class Task(BaseModel):
    id = pw.CharField(max_length=64, primary_key=True)
    cluster = pw.ForeignKeyField(Cluster, backref="tasks", on_delete="CASCADE")
    node_name = pw.CharField(max_length=253)
    kind = pw.CharField(max_length=64)
    params = JSONField(default=dict)
    state = pw.CharField(max_length=16, index=True)
    reason = pw.TextField(default="")
    result = JSONField(null=True)
    created_at = pw.FloatField(default=now)
    updated_at = pw.FloatField(default=now)
    finished_at = pw.FloatField(null=True)


class TaskEvent(BaseModel):
    task = pw.ForeignKeyField(Task, backref="events", on_delete="CASCADE")
    state = pw.CharField(max_length=16)
    at = pw.FloatField(default=now)
    reason = pw.TextField(default="")


class Event(BaseModel):
    """Every persisted state change, in order; the feed behind /api/v1/events."""

    at = pw.FloatField(default=now)
    cluster = pw.CharField(max_length=64, default="")
    kind = pw.CharField(max_length=32)
    subject = pw.CharField(max_length=255, default="")
    data = JSONField(default=dict)


class Setting(BaseModel):
    key = pw.CharField(max_length=64, primary_key=True)
    value = pw.TextField()


ALL_MODELS = [SchemaVersion, User, ApiToken, Cluster, Node, Task, TaskEvent, Event, Setting]
