"""Storage settings for a bulk load (hutong.ingest.bulk), behind one seam.

SQLite: index B-trees of millions of rows take random inserts, and with the
default 64 MB page cache the writer thrashes; the load's own connection (the
pool hands its thread the same one back) gets 1 GB while it runs
(https://sqlite.org/pragma.html#pragma_cache_size).  PostgreSQL needs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from hutong.store.repository import Repository
from hutong.store.sql import sql_repository

LOAD_CACHE_KIB = 1_048_576
DEFAULT_CACHE_KIB = 65_536


@contextmanager
def bulk_load(repo: Repository) -> Iterator[None]:
    """A larger page cache for the duration of a load, the usual one afterwards."""
    sqlite = repo.db.dialect == "sqlite"
    if sqlite:
        with sql_repository(repo).db.connection() as conn:
            conn.execute(f"PRAGMA cache_size=-{LOAD_CACHE_KIB}")
    try:
        yield
    finally:
        if sqlite:
            with sql_repository(repo).db.connection() as conn:
                conn.execute(f"PRAGMA cache_size=-{DEFAULT_CACHE_KIB}")
