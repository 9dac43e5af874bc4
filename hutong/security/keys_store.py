"""Data access for the wrapped data keys (the ``data_key`` table, declared in
hutong.security.keys).

The only module that writes SQL for key management (issue 13, item 1: one
storage seam); wrapping, unwrapping and rotation rules stay in
:class:`hutong.security.keys.KeyRing`.  The keys are read before any repository
exists (the codec needs them), so this works on the Database directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hutong.store.database import Database

KEY_LOCK = 7238003  # PostgreSQL advisory lock id of data_key writers

_SELECT = "SELECT id, purpose, wrapped, master_id, created, retired FROM data_key ORDER BY id"


def key_rows(db: Database, cur: Any | None = None) -> list[tuple[Any, ...]]:
    """(id, purpose, wrapped, master_id, created, retired) of every data key, by id;
    on ``cur`` inside :func:`key_transaction`, else on a connection of its own."""
    if cur is not None:
        cur.execute(_SELECT)
        return list(cur.fetchall())
    with db.connection() as conn:
        c = conn.cursor()
        c.execute(_SELECT)
        return list(c.fetchall())


@contextmanager
def key_transaction(db: Database) -> Iterator[Any]:
    """A write transaction on ``data_key``, serialised with every other writer
    (SQLite: the store's writer queue and BEGIN IMMEDIATE; PostgreSQL: an
    advisory lock, so two processes opening a fresh database make one key)."""
    with db.write_lock(), db.connection() as conn:
        cur = conn.cursor()
        cur.execute(db.begin_sql())
        try:
            if db.dialect == "postgresql":
                cur.execute("SELECT pg_advisory_xact_lock(7238003)")
            yield cur
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise


def insert_key(db: Database, cur: Any, kid: int, purpose: str, wrapped: bytes, master_id: str, created: int) -> None:
    cur.execute(db.sql("INSERT INTO data_key (id, purpose, wrapped, master_id, created, retired) "
                       "VALUES (?, ?, ?, ?, ?, NULL)"), (kid, purpose, wrapped, master_id, created))


def rewrap_key(db: Database, cur: Any, kid: int, wrapped: bytes, master_id: str) -> None:
    cur.execute(db.sql("UPDATE data_key SET wrapped = ?, master_id = ? WHERE id = ?"), (wrapped, master_id, kid))


def retire_key(db: Database, cur: Any, kid: int, purpose: str, now: int) -> None:
    """Mark a live key of ``purpose`` retired (a retired one keeps its time)."""
    cur.execute(db.sql("UPDATE data_key SET retired = ? WHERE id = ? AND purpose = ? AND retired IS NULL"),
                (now, kid, purpose))
