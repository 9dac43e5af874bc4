"""Data access for the audit trail (tables ``audit_event``, ``audit_person``,
``audit_anchor``, ``audit_chain`` and ``break_glass_review``, declared in
hutong.security.audit).

The only module that writes SQL for the audit trail (issue 13, item 1: one
storage seam).  The chain itself (keyed hashes, signed heads, what verifies)
stays in :class:`hutong.security.audit.AuditLog`; this module reads and writes
rows.  SQL text here interpolates only this module's column and table names
and "?" markers (the ``noqa: S608`` lines); every value is bound.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from hutong.store.repository import Repository, Writer
from hutong.store.sql import sql_repository, sql_writer

Row = Sequence[Any]

EVENT_COLS = ("seq, time_ms, action, outcome, account_id, role, organization, on_behalf_of, code, peer, "
              "purpose, flags, body, prev_hash, hash")
INSERT_CHUNK = 64   # rows per multi-row INSERT (15 columns: well under SQLite's 32,766 variables)
# Columns an auditor's search filters on by equality.
SEARCH_COLUMNS = frozenset({"account_id", "action", "outcome", "purpose"})


# --------------------------------------------------------------------------- the chain
def chain_row(repo: Repository, cur: Any) -> tuple[int, str] | None:
    """(keyed_from, key_id) of the chain, on any open cursor (reads inside a
    write or a snapshot see their own transaction's state)."""
    cur.execute(sql_repository(repo).db.sql("SELECT keyed_from, key_id FROM audit_chain WHERE id = 1"))
    r = cur.fetchone()
    return (int(r[0]), str(r[1])) if r is not None else None


def chain_row_now(repo: Repository) -> tuple[int, str] | None:
    with sql_repository(repo).db.connection() as conn:
        return chain_row(repo, conn.cursor())


def chain_row_in(w: Writer) -> tuple[int, str] | None:
    """(keyed_from, key_id) of the chain as ``w``'s transaction sees it."""
    return chain_row(w.repo, sql_writer(w).cur)


def newest_event(w: Writer) -> Row | None:
    r: Row | None = sql_writer(w).execute(f"SELECT {EVENT_COLS} FROM audit_event ORDER BY seq DESC LIMIT 1").fetchone()  # noqa: S608
    return r


def anchored(w: Writer) -> bool:
    return sql_writer(w).execute("SELECT 1 FROM audit_anchor WHERE id = 1").fetchone() is not None


def set_chain(w: Writer, keyed_from: int, key_id: str, now: int) -> None:
    sql_writer(w).execute("INSERT INTO audit_chain (id, keyed_from, key_id, time_ms) VALUES (1, ?, ?, ?)",
              (keyed_from, key_id, now))


def head_in(w: Writer) -> tuple[int, str] | None:
    """(seq, hash) of the newest row, else of the anchor, inside a write."""
    r = sql_writer(w).execute("SELECT seq, hash FROM audit_event ORDER BY seq DESC LIMIT 1").fetchone()
    if r is None:
        r = sql_writer(w).execute("SELECT seq, hash FROM audit_anchor WHERE id = 1").fetchone()
    return (int(r[0]), str(r[1])) if r is not None else None


def head(repo: Repository) -> tuple[int, str] | None:
    """(seq, hash) of the newest committed row, else of the anchor."""
    rows = sql_repository(repo).query("SELECT seq, hash FROM audit_event ORDER BY seq DESC LIMIT 1")
    if not rows:
        rows = sql_repository(repo).query("SELECT seq, hash FROM audit_anchor WHERE id = 1")
    return (int(rows[0][0]), str(rows[0][1])) if rows else None


def _insert(w: Writer, table: str, cols: str, width: int, rows: list[tuple[Any, ...]]) -> None:
    """Multi-row INSERTs: one round trip per chunk instead of one per row."""
    one = "(" + ", ".join("?" * width) + ")"
    for k in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[k:k + INSERT_CHUNK]
        sql_writer(w).execute(f"INSERT INTO {table} ({cols}) VALUES {', '.join([one] * len(chunk))}",  # noqa: S608
                  [v for row in chunk for v in row])


def append(w: Writer, events: list[tuple[Any, ...]], people: list[tuple[str, int]]) -> None:
    """Event rows (the 15 EVENT_COLS) and their (person_id, seq) index rows."""
    _insert(w, "audit_event", EVENT_COLS, 15, events)
    _insert(w, "audit_person", "person_id, seq", 2, people)


# --------------------------------------------------------------------------- verification
class Snapshot:
    """Reads of one read-only snapshot of the trail (``verify``)."""

    def __init__(self, repo: Repository, cur: Any) -> None:
        self.repo = sql_repository(repo)
        self.cur = cur

    def _q(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        self.cur.execute(self.repo.db.sql(sql), args)
        rows: list[Any] = self.cur.fetchall()
        return rows

    def anchor(self) -> tuple[int, str] | None:
        a = self._q("SELECT seq, hash FROM audit_anchor WHERE id = 1")
        return (int(a[0][0]), str(a[0][1])) if a else None

    def chain(self) -> tuple[int, str] | None:
        return chain_row(self.repo, self.cur)

    def hash_at(self, seq: int) -> str | None:
        c = self._q("SELECT hash FROM audit_event WHERE seq = ?", (seq,))
        return str(c[0][0]) if c else None

    def events_after(self, seq: int, limit: int) -> list[Row]:
        return self._q(f"SELECT {EVENT_COLS} FROM audit_event WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608
                       (seq, limit))

    def persons_between(self, lo: int, hi: int) -> list[Row]:
        """(person_id, seq) with lo < seq <= hi."""
        return self._q("SELECT person_id, seq FROM audit_person WHERE seq > ? AND seq <= ?", (lo, hi))

    def stray_person(self, after: int, through: int) -> int | None:
        """The lowest person-index seq outside (through, after]: rows pointing past the chain."""
        stray = self._q("SELECT MIN(seq) FROM audit_person WHERE seq > ? OR seq <= ?", (after, through))
        return int(stray[0][0]) if stray and stray[0][0] is not None else None


@contextmanager
def snapshot(repo: Repository) -> Iterator[Snapshot]:
    """One consistent read-only view (SQLite: a read transaction; PostgreSQL:
    REPEATABLE READ READ ONLY), rolled back afterwards."""
    db = sql_repository(repo).db
    with db.connection() as conn:
        cur = conn.cursor()
        cur.execute("BEGIN" if db.dialect == "sqlite" else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            yield Snapshot(repo, cur)
        finally:
            cur.execute("ROLLBACK")


# --------------------------------------------------------------------------- retention
def prefix_before(w: Writer, cutoff: int) -> tuple[int, int]:
    """(last seq, row count) of the oldest rows all older than ``cutoff`` (a
    prefix of the chain: it ends before the first row at or after the cutoff)."""
    r = sql_writer(w).execute("SELECT MIN(seq) FROM audit_event WHERE time_ms >= ?", (cutoff,)).fetchone()
    if r[0] is not None:
        last = int(r[0]) - 1
    else:
        m = sql_writer(w).execute("SELECT MAX(seq) FROM audit_event").fetchone()
        last = int(m[0]) if m[0] is not None else 0
    n = int(sql_writer(w).execute("SELECT COUNT(*) FROM audit_event WHERE seq <= ?", (last,)).fetchone()[0])
    return last, n


def cut_prefix(w: Writer, last: int, now: int) -> str:
    """Delete rows through ``last`` and anchor the chain there; the anchor's hash."""
    h = str(sql_writer(w).execute("SELECT hash FROM audit_event WHERE seq = ?", (last,)).fetchone()[0])
    sql_writer(w).execute("DELETE FROM audit_person WHERE seq <= ?", (last,))
    sql_writer(w).execute("DELETE FROM break_glass_review WHERE seq <= ?", (last,))
    sql_writer(w).execute("DELETE FROM audit_event WHERE seq <= ?", (last,))
    sql_writer(w).execute("DELETE FROM audit_anchor WHERE id = 1")
    sql_writer(w).execute("INSERT INTO audit_anchor (id, seq, hash, time_ms) VALUES (1, ?, ?, ?)", (last, h, now))
    return h


# --------------------------------------------------------------------------- queries
def event(repo: Repository, seq: int) -> Row | None:
    rows = sql_repository(repo).query(f"SELECT {EVENT_COLS} FROM audit_event WHERE seq = ?", (seq,))  # noqa: S608
    return rows[0] if rows else None


def events(repo: Repository, *, equals: Mapping[str, Any] | None = None, persons: Sequence[str] | None = None,
           since: int | None = None, until: int | None = None, after_seq: int | None = None,
           limit: int = 50) -> list[Row]:
    """Event rows newest first: columns equal to ``equals`` (SEARCH_COLUMNS),
    touching any of ``persons``, ``since`` <= time < ``until``, seq < ``after_seq``."""
    where: list[str] = []
    args: list[Any] = []
    for col, val in (equals or {}).items():
        if col not in SEARCH_COLUMNS:
            raise ValueError(f"not a search column: {col}")
        where.append(f"{col} = ?")
        args.append(val)
    if persons is not None:
        marks = ", ".join("?" * len(persons))
        where.append(f"seq IN (SELECT seq FROM audit_person WHERE person_id IN ({marks}))")  # noqa: S608
        args += list(persons)
    if since is not None:
        where.append("time_ms >= ?")
        args.append(since)
    if until is not None:
        where.append("time_ms < ?")
        args.append(until)
    if after_seq is not None:
        where.append("seq < ?")
        args.append(after_seq)
    sql = f"SELECT {EVENT_COLS} FROM audit_event"  # noqa: S608
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY seq DESC LIMIT ?"
    args.append(max(0, limit))
    return list(sql_repository(repo).query(sql, args))


# --------------------------------------------------------------------------- break-glass review
def break_glass_rows(repo: Repository, reviewed: bool | None, after_seq: int | None, limit: int) -> list[Row]:
    """Break-glass event rows (15 EVENT_COLS) joined to their review (seq,
    reviewer, verdict, note, time_ms, review_seq; NULLs when none), newest first."""
    # flags > 0 lets the (flags, seq) index skip the ordinary records.
    cols = ", ".join("e." + c.strip() for c in EVENT_COLS.split(","))
    sql = (f"SELECT {cols}, r.seq, r.reviewer, "  # noqa: S608
           "r.verdict, r.note, r.time_ms, r.review_seq FROM audit_event e "
           "LEFT JOIN break_glass_review r ON r.seq = e.seq WHERE e.flags > 0 AND (e.flags & 1) <> 0")
    args: list[Any] = []
    if reviewed is True:
        sql += " AND r.seq IS NOT NULL"
    elif reviewed is False:
        sql += " AND r.seq IS NULL"
    if after_seq is not None:
        sql += " AND e.seq < ?"
        args.append(after_seq)
    sql += " ORDER BY e.seq DESC LIMIT ?"
    args.append(max(0, limit))
    return list(sql_repository(repo).query(sql, args))


def flags_of(w: Writer, seq: int) -> int | None:
    r = sql_writer(w).execute("SELECT flags FROM audit_event WHERE seq = ?", (seq,)).fetchone()
    return int(r[0]) if r is not None else None


def is_reviewed(w: Writer, seq: int) -> bool:
    return sql_writer(w).execute("SELECT seq FROM break_glass_review WHERE seq = ?", (seq,)).fetchone() is not None


def add_review(w: Writer, seq: int, reviewer: str | None, verdict: str, note: bytes | None, now: int,
               review_seq: int) -> None:
    sql_writer(w).execute("INSERT INTO break_glass_review (seq, reviewer, verdict, note, time_ms, review_seq) "
              "VALUES (?, ?, ?, ?, ?, ?)", (seq, reviewer, verdict, note, now, review_seq))
