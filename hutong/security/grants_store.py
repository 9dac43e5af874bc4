"""Data access for break-glass grants (the ``access_grant`` table; hutong.security.grants).

The only module that writes SQL for grants (issue 13, item 1: one storage seam);
the reason is stored encrypted through the store codec because it is free text
that may name the resident's condition.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from hutong.store.repository import Repository, Writer
from hutong.store.sql import sql_repository, sql_writer


@dataclass(frozen=True)
class AccessGrant:
    id: str
    account_id: str
    person_id: str
    kind: str
    created_ms: int
    expires_ms: int


def add(w: Writer, account_id: str, person_id: str, kind: str, reason: str, now_ms: int,
        hours: int) -> AccessGrant:
    g = AccessGrant(f"grant-{secrets.token_hex(8)}", account_id, person_id, kind, now_ms, now_ms + hours * 3_600_000)
    sql_writer(w).execute("INSERT INTO access_grant (id, account_id, person_id, kind, reason, created_ms, expires_ms) "
              "VALUES (?, ?, ?, ?, ?, ?, ?)",
              (g.id, account_id, person_id, kind, w.repo.codec.encode(reason.encode()), now_ms, g.expires_ms))
    return g


def active(repo: Repository, account_id: str, person_id: str, now_ms: int) -> AccessGrant | None:
    rows = sql_repository(repo).query("SELECT id, account_id, person_id, kind, created_ms, expires_ms FROM access_grant "
                      "WHERE account_id = ? AND person_id = ? AND expires_ms > ? ORDER BY expires_ms DESC",
                      (account_id, person_id, now_ms))
    if not rows:
        return None
    r = rows[0]
    return AccessGrant(str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), int(r[5]))
