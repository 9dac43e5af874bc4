"""Data access for the sharing-request register (tables ``sharing_request`` and
``sharing_export``, declared in hutong.security.sharing).

The only module that writes SQL for data sharing (issue 13, item 1: one storage
seam).  Rows come back as the database holds them; hutong.security.sharing
turns them into requests and keeps every rule (who may decide, four-eyes,
residency, expiry).  Every status change is a conditional UPDATE on the
expected status, so of two concurrent decisions one wins and the other sees
0 rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from hutong.store.repository import Repository, Writer
from hutong.store.sql import sql_repository, sql_writer

Row = Sequence[Any]
# id, status, requester, organisation, basis, scope, body, approver, created, submitted, decided, expires, used

# SQL statements are whole literals (no assembled SQL).
SELECT_ONE = ("SELECT id, status, requester, organisation, basis, scope, body, approver, created, submitted, "
              "decided, expires, used FROM sharing_request WHERE id = ?")
SELECT_BY_STATUS = ("SELECT id, status, requester, organisation, basis, scope, body, approver, created, submitted, "
                    "decided, expires, used FROM sharing_request WHERE status = COALESCE(?, status) "
                    "AND requester = COALESCE(?, requester) ORDER BY created DESC, id DESC LIMIT ?")
SELECT_EXPIRED = ("SELECT id, status, requester, organisation, basis, scope, body, approver, created, submitted, "
                  "decided, expires, used FROM sharing_request WHERE (status = 'expired' OR "
                  "(status = 'approved' AND expires <= ?)) AND requester = COALESCE(?, requester) "
                  "ORDER BY created DESC, id DESC LIMIT ?")
SELECT_APPROVED = ("SELECT id, status, requester, organisation, basis, scope, body, approver, created, submitted, "
                   "decided, expires, used FROM sharing_request WHERE status = 'approved' AND expires > ? "
                   "AND requester = COALESCE(?, requester) ORDER BY created DESC, id DESC LIMIT ?")
SELECT_EXPORTS = ("SELECT id, actor, started, finished, outcome, region, deidentified, counts FROM sharing_export "
                  "WHERE request_id = ? ORDER BY id")
INSERT = ("INSERT INTO sharing_request (id, status, requester, organisation, basis, scope, body, created) "
          "VALUES (?, 'draft', ?, ?, ?, ?, ?, ?)")
# The decisions, by the status they lead to; each takes its arguments, then (body if any), then the id.
TRANSITIONS = {
    "submitted": "UPDATE sharing_request SET status = 'submitted', submitted = ? WHERE id = ? AND status = 'draft'",
    "approved": ("UPDATE sharing_request SET status = 'approved', approver = ?, decided = ?, expires = ?, body = ? "
                 "WHERE id = ? AND status = 'submitted'"),
    "rejected": ("UPDATE sharing_request SET status = 'rejected', approver = ?, decided = ?, body = ? "
                 "WHERE id = ? AND status = 'submitted'"),
}


def _rows(repo: Repository, w: Writer | None, sql: str, args: tuple[Any, ...]) -> list[Row]:
    return list(sql_writer(w).execute(sql, args).fetchall()) if w is not None else list(sql_repository(repo).query(sql, args))


def request_row(repo: Repository, request_id: str, w: Writer | None = None) -> Row | None:
    rows = _rows(repo, w, SELECT_ONE, (request_id,))
    return rows[0] if rows else None


def export_rows(repo: Repository, request_id: str, w: Writer | None = None) -> list[Row]:
    return _rows(repo, w, SELECT_EXPORTS, (request_id,))


def list_rows(repo: Repository, status: str | None, requester: str | None, limit: int, now: int) -> list[Row]:
    """Newest first; ``expired`` and ``approved`` are judged against ``now``."""
    if status == "expired":
        return list(sql_repository(repo).query(SELECT_EXPIRED, (now, requester, limit)))
    if status == "approved":
        return list(sql_repository(repo).query(SELECT_APPROVED, (now, requester, limit)))
    return list(sql_repository(repo).query(SELECT_BY_STATUS, (status, requester, limit)))


def insert(w: Writer, request_id: str, requester: str, organisation: str, basis: str, scope_json: str,
           body: bytes, now: int) -> None:
    sql_writer(w).execute(INSERT, (request_id, requester, organisation, basis, scope_json, body, now))


def body_of(w: Writer, request_id: str) -> bytes:
    return bytes(sql_writer(w).execute("SELECT body FROM sharing_request WHERE id = ?", (request_id,)).fetchall()[0][0])


def transition(w: Writer, to: str, args: tuple[Any, ...], request_id: str) -> bool:
    """The conditional UPDATE to status ``to``; False when the row was not in the expected status."""
    return int(sql_writer(w).execute(TRANSITIONS[to], (*args, request_id)).rowcount) == 1


def claim(w: Writer, request_id: str, actor: str, now: int, region: str, deidentified: bool) -> int | None:
    """approved -> used and a new running export row; its id, or None when the
    request changed meanwhile."""
    cur = sql_writer(w).execute("UPDATE sharing_request SET status = 'used', used = ? WHERE id = ? "
                    "AND status = 'approved'", (now, request_id))
    if cur.rowcount != 1:
        return None
    sql_writer(w).execute("INSERT INTO sharing_export (request_id, actor, started, finished, outcome, region, "
              "deidentified, counts) VALUES (?, ?, ?, NULL, 'running', ?, ?, NULL)",
              (request_id, actor, now, region, int(deidentified)))
    return int(sql_writer(w).execute("SELECT MAX(id) FROM sharing_export WHERE request_id = ?",
                         (request_id,)).fetchall()[0][0])


def mark_expired(w: Writer, request_id: str, now: int) -> None:
    sql_writer(w).execute("UPDATE sharing_request SET status = 'expired' WHERE id = ? AND status = 'approved' "
              "AND expires <= ?", (request_id, now))


def finish_export(w: Writer, request_id: str, export_id: int, counts: Mapping[str, int] | None, now: int) -> None:
    """Close the export row: ``counts`` on success; None = failed, and the request
    is usable again (nothing left the platform)."""
    if counts is None:
        sql_writer(w).execute("UPDATE sharing_export SET outcome = 'failed', finished = ? WHERE id = ?", (now, export_id))
        sql_writer(w).execute("UPDATE sharing_request SET status = 'approved', used = NULL WHERE id = ? "
                  "AND status = 'used'", (request_id,))
    else:
        sql_writer(w).execute("UPDATE sharing_export SET outcome = 'ok', finished = ?, counts = ? WHERE id = ?",
                  (now, orjson.dumps(dict(counts)).decode(), export_id))
