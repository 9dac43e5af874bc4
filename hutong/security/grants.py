"""Break-glass grants: emergency access a clinician claims with a written reason.

A grant lets one account read one person's whole record (masking lifted) for
``SecuritySettings.break_glass_hours``.  It is flagged in the audit trail
(purpose ``break-glass``), the resident is told (SMS through the gateway, and
the access log), and auditors review it (hutong.security.audit).  The reason is
free text that may name the resident's condition, so it is stored encrypted
through the store codec.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import BigInteger, Column, Index, LargeBinary, MetaData, String, Table

from hutong.store.database import Database
from hutong.store.sql import SqlRepository, SqlWriter

metadata = MetaData()

access_grant = Table(
    "access_grant",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(64), nullable=False),
    Column("person_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # break-glass
    Column("reason", LargeBinary, nullable=False),  # codec-encoded UTF-8
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Index("ix_access_grant_lookup", "account_id", "person_id", "expires_ms"),
)


def create_tables(db: Database) -> None:
    metadata.create_all(db.engine, checkfirst=True)


@dataclass(frozen=True)
class AccessGrant:
    id: str
    account_id: str
    person_id: str
    kind: str
    created_ms: int
    expires_ms: int


def add(w: SqlWriter, account_id: str, person_id: str, kind: str, reason: str, now_ms: int,
        hours: int) -> AccessGrant:
    g = AccessGrant(f"grant-{secrets.token_hex(8)}", account_id, person_id, kind, now_ms, now_ms + hours * 3_600_000)
    w.execute("INSERT INTO access_grant (id, account_id, person_id, kind, reason, created_ms, expires_ms) "
              "VALUES (?, ?, ?, ?, ?, ?, ?)",
              (g.id, account_id, person_id, kind, w.repo.codec.encode(reason.encode()), now_ms, g.expires_ms))
    return g


def active(repo: SqlRepository, account_id: str, person_id: str, now_ms: int) -> AccessGrant | None:
    rows = repo.query("SELECT id, account_id, person_id, kind, created_ms, expires_ms FROM access_grant "
                      "WHERE account_id = ? AND person_id = ? AND expires_ms > ? ORDER BY expires_ms DESC",
                      (account_id, person_id, now_ms))
    if not rows:
        return None
    r = rows[0]
    return AccessGrant(str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), int(r[5]))
