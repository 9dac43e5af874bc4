"""Data access for the audit trail (tables ``audit_event``, ``audit_person``,
``audit_anchor``, ``audit_chain``, ``audit_ledger`` and ``break_glass_review``,
declared in hutong.security.audit).

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
# The row's chain and its position in it (issue 18: one chain per node), after EVENT_COLS.
CHAIN_COLS = "chain, chain_seq"
ROW_COLS = EVENT_COLS + ", " + CHAIN_COLS
LEDGER_COLS = "id, chain, chain_seq, seq, hash, time_ms, prev_hash, entry_hash"
INSERT_CHUNK = 64   # rows per multi-row INSERT (17 columns: well under SQLite's 32,766 variables)
# Columns an auditor's search filters on by equality.
SEARCH_COLUMNS = frozenset({"account_id", "action", "outcome", "purpose"})


# --------------------------------------------------------------------------- the chain
def chain_row(repo: Repository, cur: Any, chain: str = "") -> tuple[int, str] | None:
    """(keyed_from, key_id) of ``chain``, on any open cursor (reads inside a
    write or a snapshot see their own transaction's state)."""
    cur.execute(sql_repository(repo).db.sql("SELECT keyed_from, key_id FROM audit_chain WHERE chain = ?"), (chain,))
    r = cur.fetchone()
    return (int(r[0]), str(r[1])) if r is not None else None


def chain_row_now(repo: Repository, chain: str = "") -> tuple[int, str] | None:
    with sql_repository(repo).db.connection() as conn:
        return chain_row(repo, conn.cursor(), chain)


def chain_row_in(w: Writer, chain: str = "") -> tuple[int, str] | None:
    """(keyed_from, key_id) of ``chain`` as ``w``'s transaction sees it."""
    return chain_row(w.repo, sql_writer(w).cur, chain)


def newest_event(w: Writer, chain: str = "") -> Row | None:
    r: Row | None = sql_writer(w).execute(
        f"SELECT {ROW_COLS} FROM audit_event WHERE chain = ? ORDER BY seq DESC LIMIT 1", (chain,)).fetchone()  # noqa: S608
    return r


def anchored(w: Writer, chain: str = "") -> bool:
    return sql_writer(w).execute("SELECT 1 FROM audit_anchor WHERE chain = ?", (chain,)).fetchone() is not None


def set_chain(w: Writer, keyed_from: int, key_id: str, now: int, chain: str = "") -> None:
    """Register ``chain`` (the caller holds the lock of chain '', which every registration takes)."""
    n = sql_writer(w).execute("SELECT COALESCE(MAX(id), 0) FROM audit_chain").fetchone()[0]
    sql_writer(w).execute("INSERT INTO audit_chain (id, chain, keyed_from, key_id, time_ms) VALUES (?, ?, ?, ?, ?)",
                          (int(n) + 1, chain, keyed_from, key_id, now))


def several_chains(w: Writer) -> bool:
    """Whether any chain but '' is registered (then seq comes from the shared sequence)."""
    return sql_writer(w).execute("SELECT 1 FROM audit_chain WHERE chain <> '' LIMIT 1").fetchone() is not None


def start_sequence(w: Writer) -> None:
    """PostgreSQL: move ``audit_seq`` past every seq used so far.  Only when the
    first node chain is registered, under the lock of chain '' (the only writer
    that numbered rows by MAX(seq) + 1 until then): a later call could move the
    sequence back past values other nodes already took."""
    sql_writer(w).execute(
        "SELECT setval('audit_seq', GREATEST((SELECT last_value FROM audit_seq), "
        "(SELECT COALESCE(MAX(seq), 0) FROM audit_event), (SELECT COALESCE(MAX(seq), 0) FROM audit_anchor)))")


def head_in(w: Writer, chain: str = "") -> tuple[int, int, str] | None:
    """(seq, chain_seq, hash) of ``chain``'s newest row, else of its anchor, inside a write."""
    r = sql_writer(w).execute("SELECT seq, COALESCE(chain_seq, seq), hash FROM audit_event WHERE chain = ? "
                              "ORDER BY seq DESC LIMIT 1", (chain,)).fetchone()
    if r is None:
        return _anchor_in(w, chain)
    return int(r[0]), int(r[1]), str(r[2])


def _anchor_in(w: Writer, chain: str) -> tuple[int, int, str] | None:
    """(seq, chain_seq, hash) of ``chain``'s anchor, inside a write (a chain with no rows left)."""
    a = sql_writer(w).execute("SELECT seq, COALESCE(chain_seq, seq), hash FROM audit_anchor WHERE chain = ?",
                              (chain,)).fetchone()
    return (int(a[0]), int(a[1]), str(a[2])) if a is not None else None


def locked_head_and_seqs(w: Writer, chain: str, lock: str, n: int) -> tuple[tuple[int, int, str] | None, list[int]]:
    """PostgreSQL, seqs from ``audit_seq`` (a node's chain): ``chain``'s lock, then its head (as
    :func:`head_in`) and ``n`` new seqs, sent in one flight (libpq pipeline mode,
    https://www.postgresql.org/docs/current/libpq-pipeline-mode.html).  The statements still run
    one after the other, and at READ COMMITTED each takes its snapshot when it starts
    (https://www.postgresql.org/docs/current/transaction-iso.html#XACT-READ-COMMITTED), so the
    head is read after the lock is held, as before; only the waits between them are gone (the
    batch's round trips were ~2.7 of ~4.7 per audited read, pg_stat_statements in bench_nodes)."""
    sw = sql_writer(w)
    conn = sw.cur.connection
    with conn.pipeline():
        w.lock_key(lock)
        cur = conn.cursor()
        cur.execute(sw.db.sql(
            "SELECT h.seq, h.cs, h.hash, ARRAY(SELECT nextval('audit_seq') FROM generate_series(1, ?)) "
            "FROM (SELECT 1) AS one LEFT JOIN LATERAL (SELECT seq, COALESCE(chain_seq, seq) AS cs, hash "
            "FROM audit_event WHERE chain = ? ORDER BY seq DESC LIMIT 1) AS h ON true"), (n, chain))
        r = cur.fetchone()
    seqs = sorted(int(v) for v in r[3])
    return ((int(r[0]), int(r[1]), str(r[2])) if r[0] is not None else _anchor_in(w, chain)), seqs


def next_seqs(w: Writer, n: int, from_sequence: bool | None) -> tuple[list[int], bool]:
    """``n`` new global seqs, increasing, and whether they came from ``audit_seq``.

    ``from_sequence`` True (PostgreSQL, a node chain or several chains): from
    ``audit_seq``, which nobody waits on.  False (SQLite's one writer): the next
    after the highest used.  None (PostgreSQL, chain ""): the sequence if any
    node chain is registered, else the next after the highest used -- only the
    single chain's writers, serialised by its lock, number rows then -- asked in
    one round trip with the highest seq.
    """
    if from_sequence:
        rows = sql_writer(w).execute("SELECT nextval('audit_seq') FROM generate_series(1, ?)", (n,)).fetchall()
        return sorted(int(r[0]) for r in rows), True
    top = ("COALESCE((SELECT MAX(seq) FROM audit_event), 0), COALESCE((SELECT MAX(seq) FROM audit_anchor), 0)")
    if from_sequence is None:
        r = sql_writer(w).execute(f"SELECT EXISTS (SELECT 1 FROM audit_chain WHERE chain <> ''), "  # noqa: S608
                                  f"GREATEST({top})").fetchone()
        if r[0]:
            return next_seqs(w, n, True)
        high = int(r[1])
    else:
        high = int(sql_writer(w).execute(f"SELECT MAX({top})").fetchone()[0])  # noqa: S608
    return list(range(high + 1, high + n + 1)), False


def head(repo: Repository, chain: str = "") -> tuple[int, int, str] | None:
    """(seq, chain_seq, hash) of ``chain``'s newest committed row, else of its anchor."""
    rows = sql_repository(repo).query("SELECT seq, COALESCE(chain_seq, seq), hash FROM audit_event WHERE chain = ? "
                                      "ORDER BY seq DESC LIMIT 1", (chain,))
    if not rows:
        rows = sql_repository(repo).query("SELECT seq, COALESCE(chain_seq, seq), hash FROM audit_anchor "
                                          "WHERE chain = ?", (chain,))
    return (int(rows[0][0]), int(rows[0][1]), str(rows[0][2])) if rows else None


def _insert(w: Writer, table: str, cols: str, width: int, rows: list[tuple[Any, ...]]) -> None:
    """Multi-row INSERTs: one round trip per chunk instead of one per row."""
    one = "(" + ", ".join("?" * width) + ")"
    for k in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[k:k + INSERT_CHUNK]
        sql_writer(w).execute(f"INSERT INTO {table} ({cols}) VALUES {', '.join([one] * len(chunk))}",  # noqa: S608
                  [v for row in chunk for v in row])


def append(w: Writer, events: list[tuple[Any, ...]], people: list[tuple[str, int]]) -> None:
    """Event rows (the 17 ROW_COLS) and their (person_id, seq) index rows."""
    _insert(w, "audit_event", ROW_COLS, 17, events)
    _insert(w, "audit_person", "person_id, seq", 2, people)


# --------------------------------------------------------------------------- the ledger
def ledger_head_in(w: Writer) -> tuple[int, str] | None:
    """(id, entry_hash) of the newest ledger entry (the caller holds the ledger lock)."""
    r = sql_writer(w).execute("SELECT id, entry_hash FROM audit_ledger ORDER BY id DESC LIMIT 1").fetchone()
    return (int(r[0]), str(r[1])) if r is not None else None


def ledger_append(w: Writer, entry: tuple[Any, ...]) -> None:
    """One ledger entry (the 8 LEDGER_COLS)."""
    _insert(w, "audit_ledger", LEDGER_COLS, 8, [entry])


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

    def chains(self) -> set[str]:
        """Every chain named by a row, an anchor, a chain registration or a ledger entry.
        The rows' chains by a loose index scan of (chain, seq): one probe per chain."""
        found = {str(r[0]) for r in self._q(
            "WITH RECURSIVE c(chain) AS (SELECT MIN(chain) FROM audit_event UNION ALL "
            "SELECT (SELECT MIN(chain) FROM audit_event WHERE chain > c.chain) FROM c WHERE c.chain IS NOT NULL) "
            "SELECT chain FROM c WHERE chain IS NOT NULL")}
        for table in ("audit_anchor", "audit_chain", "audit_ledger"):
            found |= {str(r[0]) for r in self._q(f"SELECT DISTINCT chain FROM {table}")}  # noqa: S608
        return found

    def anchor(self, chain: str = "") -> tuple[int, int, str] | None:
        """(seq, chain_seq, hash) of ``chain``'s anchor."""
        a = self._q("SELECT seq, COALESCE(chain_seq, seq), hash FROM audit_anchor WHERE chain = ?", (chain,))
        return (int(a[0][0]), int(a[0][1]), str(a[0][2])) if a else None

    def chain(self, chain: str = "") -> tuple[int, str] | None:
        return chain_row(self.repo, self.cur, chain)

    def row_at(self, seq: int) -> tuple[str, int | None, str] | None:
        """(chain, chain_seq, hash) of row ``seq``."""
        c = self._q("SELECT chain, chain_seq, hash FROM audit_event WHERE seq = ?", (seq,))
        return (str(c[0][0]), None if c[0][1] is None else int(c[0][1]), str(c[0][2])) if c else None

    def events_after(self, chain: str, seq: int, limit: int) -> list[Row]:
        """``chain``'s rows (ROW_COLS) after ``seq``, in seq order (its chain order)."""
        return self._q(f"SELECT {ROW_COLS} FROM audit_event WHERE chain = ? AND seq > ? "  # noqa: S608
                       "ORDER BY seq LIMIT ?", (chain, seq, limit))

    def persons_between(self, chain: str, lo: int, hi: int) -> list[Row]:
        """(person_id, seq) of ``chain``'s rows with lo < seq <= hi."""
        return self._q("SELECT p.person_id, p.seq FROM audit_person p JOIN audit_event e ON e.seq = p.seq "
                       "WHERE e.chain = ? AND p.seq > ? AND p.seq <= ?", (chain, lo, hi))

    def stray_person(self, after: int) -> int | None:
        """The lowest person-index seq above ``after`` that has no audit row (pointing
        past a chain's head, into a purged prefix or at a deleted row)."""
        stray = self._q("SELECT MIN(p.seq) FROM audit_person p LEFT JOIN audit_event e ON e.seq = p.seq "
                        "WHERE p.seq > ? AND e.seq IS NULL", (after,))
        return int(stray[0][0]) if stray and stray[0][0] is not None else None

    def ledger_after(self, id: int, limit: int) -> list[Row]:
        return self._q(f"SELECT {LEDGER_COLS} FROM audit_ledger WHERE id > ? ORDER BY id LIMIT ?",  # noqa: S608
                       (id, limit))


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
def prefix_before(w: Writer, cutoff: int, chain: str = "") -> tuple[int, int]:
    """(last seq, row count) of ``chain``'s oldest rows all older than ``cutoff``
    (a prefix of the chain: it ends before its first row at or after the cutoff)."""
    r = sql_writer(w).execute("SELECT MIN(seq) FROM audit_event WHERE chain = ? AND time_ms >= ?",
                              (chain, cutoff)).fetchone()
    if r[0] is not None:
        m = sql_writer(w).execute("SELECT MAX(seq) FROM audit_event WHERE chain = ? AND seq < ?",
                                  (chain, int(r[0]))).fetchone()
    else:
        m = sql_writer(w).execute("SELECT MAX(seq) FROM audit_event WHERE chain = ?", (chain,)).fetchone()
    last = int(m[0]) if m[0] is not None else 0
    n = int(sql_writer(w).execute("SELECT COUNT(*) FROM audit_event WHERE chain = ? AND seq <= ?",
                                  (chain, last)).fetchone()[0])
    return last, n


def cut_prefix(w: Writer, last: int, now: int, chain: str = "") -> tuple[str, int]:
    """Delete ``chain``'s rows through ``last`` and anchor the chain there; the
    anchor's (hash, chain_seq).  The caller holds the chain's lock and the purge lock."""
    h, cs = sql_writer(w).execute("SELECT hash, COALESCE(chain_seq, seq) FROM audit_event WHERE seq = ?",
                                  (last,)).fetchone()
    mine = "SELECT seq FROM audit_event WHERE chain = ? AND seq <= ?"
    sql_writer(w).execute(f"DELETE FROM audit_person WHERE seq IN ({mine})", (chain, last))  # noqa: S608
    sql_writer(w).execute(f"DELETE FROM break_glass_review WHERE seq IN ({mine})", (chain, last))  # noqa: S608
    sql_writer(w).execute("DELETE FROM audit_event WHERE chain = ? AND seq <= ?", (chain, last))
    old = sql_writer(w).execute("SELECT id FROM audit_anchor WHERE chain = ?", (chain,)).fetchone()
    sql_writer(w).execute("DELETE FROM audit_anchor WHERE chain = ?", (chain,))
    if old is not None:
        id = int(old[0])
    elif chain == "":
        id = 1     # the one anchor row of the releases before several chains
    else:
        top = sql_writer(w).execute("SELECT COALESCE(MAX(id), 1) FROM audit_anchor").fetchone()[0]
        id = int(top) + 1
    sql_writer(w).execute("INSERT INTO audit_anchor (id, chain, seq, chain_seq, hash, time_ms) "
                          "VALUES (?, ?, ?, ?, ?, ?)", (id, chain, last, int(cs), str(h), now))
    return str(h), int(cs)


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
