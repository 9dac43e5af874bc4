"""Data access for the wrapped data keys (the ``data_key`` table, declared in
hutong.security.keys).

The only module that writes SQL for key management (issue 13, item 1: one
storage seam); wrapping, unwrapping and rotation rules stay in
:class:`hutong.security.keys.KeyRing`.  The keys are read before any repository
exists (the codec needs them), so this works on the Database directly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from hutong.store.repository import DatabaseHandle, Repository, Writer
from hutong.store.sql import sql_database, sql_repository, sql_writer

KEY_LOCK = 7238003  # PostgreSQL advisory lock id of data_key writers

_SELECT = "SELECT id, purpose, wrapped, master_id, created, retired FROM data_key ORDER BY id"


def key_rows(handle: DatabaseHandle, cur: Any | None = None) -> list[tuple[Any, ...]]:
    """(id, purpose, wrapped, master_id, created, retired) of every data key, by id;
    on ``cur`` inside :func:`key_transaction`, else on a connection of its own."""
    db = sql_database(handle)
    if cur is not None:
        cur.execute(_SELECT)
        return list(cur.fetchall())
    with db.connection() as conn:
        c = conn.cursor()
        c.execute(_SELECT)
        return list(c.fetchall())


@contextmanager
def serialised_transaction(handle: DatabaseHandle, lock_id: int) -> Iterator[Any]:
    """A write transaction on a connection of its own (the keys are read and recorded
    before any repository exists), serialised with every other writer (SQLite: the
    store's writer queue and BEGIN IMMEDIATE) and, on PostgreSQL, with every other
    process holding ``lock_id`` (a transaction advisory lock): of two processes opening a
    fresh database together, one makes or records the keys and the other sees them."""
    db = sql_database(handle)
    with db.write_lock(), db.connection() as conn:
        cur = conn.cursor()
        cur.execute(db.begin_sql())
        try:
            if db.dialect == "postgresql":
                cur.execute(db.sql("SELECT pg_advisory_xact_lock(?)"), (lock_id,))
            yield cur
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise


@contextmanager
def key_transaction(handle: DatabaseHandle) -> Iterator[Any]:
    """A write transaction on ``data_key`` (:func:`serialised_transaction`: two processes
    opening a fresh database make one key)."""
    with serialised_transaction(handle, KEY_LOCK) as cur:
        yield cur


def insert_key(handle: DatabaseHandle, cur: Any, kid: int, purpose: str, wrapped: bytes, master_id: str, created: int) -> None:
    db = sql_database(handle)
    cur.execute(db.sql("INSERT INTO data_key (id, purpose, wrapped, master_id, created, retired) "
                       "VALUES (?, ?, ?, ?, ?, NULL)"), (kid, purpose, wrapped, master_id, created))


def rewrap_key(handle: DatabaseHandle, cur: Any, kid: int, wrapped: bytes, master_id: str) -> None:
    db = sql_database(handle)
    cur.execute(db.sql("UPDATE data_key SET wrapped = ?, master_id = ? WHERE id = ?"), (wrapped, master_id, kid))


def retire_key(handle: DatabaseHandle, cur: Any, kid: int, purpose: str, now: int) -> None:
    """Mark a live key of ``purpose`` retired (a retired one keeps its time)."""
    db = sql_database(handle)
    cur.execute(db.sql("UPDATE data_key SET retired = ? WHERE id = ? AND purpose = ? AND retired IS NULL"),
                (now, kid, purpose))


# ---------------------------------------------------------------- encrypted columns (hutong keys status | reencrypt)
# Table and column names below come from the registry of encrypted columns
# (hutong.cli.keys.ENCRYPTED_COLUMNS: code, never input); every value is bound.
def table_exists(repo: Repository, table: str) -> bool:
    if repo.db.dialect == "postgresql":
        return bool(sql_repository(repo).query("SELECT to_regclass(?) IS NOT NULL", (table,))[0][0])
    return bool(sql_repository(repo).query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)))


def values_per_prefix(repo: Repository, table: str, column: str, marker: bytes) -> list[tuple[bytes, int]]:
    """(the 4-byte data key id of values starting with ``marker``, else their
    first byte; number of values) over the non-null values of one column."""
    sql = (f"SELECT CASE WHEN substr({column}, 1, 1) = ? THEN substr({column}, 2, 4) "  # noqa: S608
           f"ELSE substr({column}, 1, 1) END AS k, COUNT(*) FROM {table} "
           f"WHERE {column} IS NOT NULL GROUP BY 1")
    return [(bytes(k), int(n)) for k, n in sql_repository(repo).query(sql, (marker,))]


def column_page(repo: Repository, table: str, keys: tuple[str, ...], column: str,
                after: tuple[Any, ...] | None, limit: int) -> list[Any]:
    """(key columns..., value) of the next ``limit`` non-null values after the key ``after``, in key order."""
    cols = ", ".join(keys)
    where = f"{column} IS NOT NULL"
    args: list[Any] = []
    if after is not None:
        where += f" AND ({cols}) > ({', '.join('?' * len(keys))})"
        args += list(after)
    return list(sql_repository(repo).query(f"SELECT {cols}, {column} FROM {table} WHERE {where} ORDER BY {cols} LIMIT ?",  # noqa: S608
                           [*args, limit]))


def replace_value(w: Writer, table: str, keys: tuple[str, ...], column: str, key_values: Sequence[Any],
                  old: bytes, new: bytes) -> None:
    """Set one row's value, unless someone changed it since it was read (then theirs stays)."""
    cond = " AND ".join(f"{k} = ?" for k in keys)
    sql_writer(w).execute(f"UPDATE {table} SET {column} = ? WHERE {cond} AND {column} = ?",  # noqa: S608
              (new, *key_values, old))
