"""Data access for the key fingerprints every node checks its key directory
against (the ``platform_key`` table, declared in hutong.security.keycheck),
and the chain key ids the audit trail records (``audit_chain.key_id``,
declared and written by hutong.security.audit: read here, never written).

The only module that writes SQL for hutong.security.keycheck (issue 13, item 1:
one storage seam).  It works on the Database directly: ``hutong serve`` checks
the key directory before any repository or worker exists.
"""

from __future__ import annotations

from collections.abc import Mapping

from hutong.security.keys_store import serialised_transaction
from hutong.store.repository import DatabaseHandle
from hutong.store.sql import sql_database

KEY_LOCK = 7238004  # PostgreSQL advisory lock id of platform_key writers


def recorded(handle: DatabaseHandle) -> dict[str, str]:
    """name -> fingerprint of every key the database records."""
    db = sql_database(handle)
    with db.connection() as conn:
        c = conn.cursor()
        c.execute("SELECT name, fingerprint FROM platform_key")
        return {str(n): str(f) for n, f in c.fetchall()}


def chain_key_ids(handle: DatabaseHandle) -> set[str]:
    """The chain key ids of every audit chain registered (hutong.security.audit: one per chain)."""
    db = sql_database(handle)
    with db.connection() as conn:
        c = conn.cursor()
        c.execute("SELECT DISTINCT key_id FROM audit_chain")
        return {str(r[0]) for r in c.fetchall()}


def record_once(handle: DatabaseHandle, keys: Mapping[str, str], now: int) -> dict[str, str]:
    """Record each of ``keys`` (name -> fingerprint) the database does not record
    yet; an existing row is never changed.  Returns what the database records
    afterwards for those names (a concurrent first node's keys when it was first).

    Serialised with every other writer of the table (SQLite: the store's writer
    queue and BEGIN IMMEDIATE; PostgreSQL: an advisory transaction lock, so of two
    nodes starting together on a fresh database exactly one records its keys)."""
    db = sql_database(handle)
    with serialised_transaction(handle, KEY_LOCK) as cur:
        cur.execute("SELECT name, fingerprint FROM platform_key")
        have = {str(n): str(f) for n, f in cur.fetchall()}
        for name, fp in keys.items():
            if name not in have:
                cur.execute(db.sql("INSERT INTO platform_key (name, fingerprint, created) VALUES (?, ?, ?)"),
                            (name, fp, now))
                have[name] = fp
    return {name: have[name] for name in keys}
