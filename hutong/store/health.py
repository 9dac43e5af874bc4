"""What an operator's probes and metrics may know of the database (issue 18, item 3):
whether it answers, its schema version against this release's, and how its
connection pool is used.  Callers hold a :class:`~hutong.store.repository.DatabaseHandle`;
this module narrows it to the SQL database (tests/test_layering.py)."""

from __future__ import annotations

from hutong.store import migrations
from hutong.store.repository import DatabaseHandle
from hutong.store.sql import sql_database


def ping(db: DatabaseHandle) -> None:
    """One round trip on a pooled connection; raises when the database does not answer."""
    sql_database(db).ping()


def schema_version(db: DatabaseHandle) -> migrations.Version:
    """The stored schema revision (``at_head`` when it is this release's)."""
    return migrations.current(sql_database(db))


def pool_stats(db: DatabaseHandle) -> tuple[int, int]:
    """(idle, in use) connections of this process's pool."""
    return sql_database(db).pool_stats()
