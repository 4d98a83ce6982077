"""Persistence: peewee models, database opening and schema migrations."""

from control.store.db import open_database  # noqa: F401
