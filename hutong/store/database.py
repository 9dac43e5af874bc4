"""Opening a database by URL: SQLite (default, WAL) or PostgreSQL.

SQLAlchemy gives us URL parsing, the connection pool and dialect-correct DDL;
hot-path statements run on the pooled DBAPI connection directly, with our own
parameter marker translation, because per-statement ORM/Core overhead would
dominate the sub-millisecond reads this store is built for.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import QueuePool

from hutong.errors import ConfigError, StorageError
from hutong.store.schema import metadata

DEFAULT_URL = "sqlite:///var/hutong.db"


def resolve_url(url: str | None) -> str:
    """``--database`` wins, then HUTONG_DATABASE_URL, then the embedded default."""
    return url or os.environ.get("HUTONG_DATABASE_URL") or DEFAULT_URL


@dataclass
class Database:
    """A connection pool plus what every statement needs to know about the dialect."""

    url: str
    engine: Engine
    dialect: str  # "sqlite" | "postgresql"
    _sql_cache: dict[str, str] = field(default_factory=dict)

    def sql(self, statement: str) -> str:
        """Translate our ``?`` markers to the driver's paramstyle (cached)."""
        if self.dialect == "sqlite":
            return statement
        cached = self._sql_cache.get(statement)
        if cached is None:
            cached = statement.replace("%", "%%").replace("?", "%s")
            self._sql_cache[statement] = cached
        return cached

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A pooled DBAPI connection in autocommit mode (reads see committed data)."""
        try:
            raw = self.engine.raw_connection()
        except Exception as e:  # driver-specific connection errors
            raise StorageError("HT-0050", f"cannot connect to the database: {type(e).__name__}") from e
        try:
            yield raw.driver_connection
        finally:
            raw.close()

    def begin_sql(self) -> str:
        # SQLite: take the write lock up front so concurrent writers queue on
        # busy_timeout instead of failing on lock upgrade, and conditional
        # creates are serialised (race-safe If-None-Exist).
        return "BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN"

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
    cur = dbapi_conn.cursor()
    for pragma in (
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=NORMAL",  # durable at checkpoints; safe with WAL
        "PRAGMA busy_timeout=30000",
        "PRAGMA cache_size=-65536",
        "PRAGMA temp_store=MEMORY",
        "PRAGMA mmap_size=268435456",
    ):
        cur.execute(pragma)
    cur.close()


def _pg_on_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.autocommit = True


def open_database(url: str | None = None, *, create: bool = True, pool_size: int = 8) -> Database:
    """Open (and by default create the schema of) the database at ``url``."""
    url = resolve_url(url)
    try:
        u = make_url(url)
    except Exception as e:
        raise ConfigError("HT-0070", f"invalid database URL {url!r}; use sqlite:///path or postgresql://...") from e
    backend = u.get_backend_name()
    if backend == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        elif not u.database or u.database == ":memory:":
            raise ConfigError("HT-0070", "in-memory SQLite is not supported: give a file path (sqlite:///path)")
        engine = create_engine(
            u, poolclass=QueuePool, pool_size=pool_size, max_overflow=32,
            connect_args={"check_same_thread": False, "isolation_level": None, "timeout": 30},
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        dialect = "sqlite"
    elif backend == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
        engine = create_engine(u, pool_size=pool_size, max_overflow=32, pool_pre_ping=False)
        event.listen(engine, "connect", _pg_on_connect)
        dialect = "postgresql"
    else:
        raise ConfigError("HT-0070", f"unsupported database {backend!r}; use sqlite:///path or postgresql://...")
    db = Database(url=url, engine=engine, dialect=dialect)
    if create:
        try:
            with engine.begin() as conn:
                if dialect == "postgresql":
                    # Serialise schema creation between processes starting together.
                    conn.execute(text("SELECT pg_advisory_xact_lock(7238001)"))
                metadata.create_all(conn, checkfirst=True)
        except ConfigError:
            raise
        except Exception as e:
            raise StorageError("HT-0050", f"cannot open database: {type(e).__name__}: {e}") from e
    return db
