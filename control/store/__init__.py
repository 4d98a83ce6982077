"""Persistence: peewee models, database opening and schema migrations."""

from control.store.db import open_database

__all__ = ["open_database"]
