"""The SQL Repository: versioned resources, history, index rows, compartments.

One implementation serves SQLite and PostgreSQL; the differences (parameter
markers, BEGIN IMMEDIATE vs advisory locks, pk allocation) are confined to a
few branches on ``db.dialect``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from hutong.errors import Conflict, StorageError
from hutong.store import exactjson
from hutong.store.codec import Codec, PlainCodec
from hutong.store.context import WriteContext
from hutong.store.database import Database
from hutong.store.groupcommit import GroupCommit
from hutong.store.identifiers import current_by_identifier
from hutong.store.query import Cursor, Include, Query
from hutong.store.repository import (
    DatabaseHandle,
    Indexer,
    IndexRow,
    Prepared,
    Repository,
    SearchPage,
    Stored,
    WriteHook,
    Writer,
    compartment_of,
)
from hutong.store.rows import stored_of
from hutong.store.schema import INDEX_TABLES, metadata
from hutong.store.sqlsearch import Compiler

Clock = Callable[[], int]  # epoch milliseconds
T = TypeVar("T")

COLS = "r.pk, r.type, r.fhir_id, r.version, r.last_updated, r.deleted, r.method, r.body"
CHUNK = 500
COPY_THRESHOLD = 64


# The array type each column's values are sent as; the INSERT casts them to the column's own type.
_PG_ARRAY: dict[type, str] = {int: "bigint[]", float: "float8[]", str: "text[]", bytes: "bytea[]"}


@functools.cache
def _unnest(table: str, cols: tuple[str, ...]) -> tuple[str, tuple[bool, ...]]:
    """PostgreSQL: ``unnest(?::T1[], ?::T2[], ...)`` for ``cols`` of ``table`` -- any number of
    rows as one array parameter per column
    (https://www.postgresql.org/docs/current/functions-array.html, unnest with several arrays) --
    and which columns are float (their values are sent as floats: one array holds one type).
    The types are the schema's (hutong.store.schema)."""
    kinds = [metadata.tables[table].c[c].type.python_type for c in cols]
    return f"unnest({', '.join(f'?::{_PG_ARRAY[k]}' for k in kinds)})", tuple(k is float for k in kinds)


@functools.cache
def _unnest_insert(table: str, cols: tuple[str, ...]) -> tuple[str, tuple[bool, ...]]:
    """PostgreSQL: ``INSERT INTO table (cols) SELECT * FROM unnest(...)`` (:func:`_unnest`):
    any number of rows in one execution of one statement, and which columns are float."""
    arrays, floats = _unnest(table, cols)
    return f"INSERT INTO {table} ({', '.join(cols)}) SELECT * FROM {arrays}", floats  # noqa: S608 - schema names


def _pg_columns(rows: Sequence[tuple[Any, ...]], floats: tuple[bool, ...]) -> list[list[Any]]:
    """``rows`` as one list per column, the array parameters of :func:`_unnest`."""
    return [[None if v is None else float(v) for v in col] if f else list(col)
            for col, f in zip(zip(*rows, strict=True), floats, strict=True)]


_RESOURCE_VALUES = ("INSERT INTO resource (pk, type, fhir_id, version, last_updated, deleted, method, body) "
                    "VALUES (nextval(pg_get_serial_sequence('resource', 'pk')), ?, ?, ?, ?, ?, ?, ?) RETURNING pk")


@functools.cache
def _create_statement(tables: tuple[tuple[str, tuple[str, ...]], ...]) -> tuple[str, tuple[tuple[bool, ...], ...]]:
    """PostgreSQL, one new resource (a REST create): the resource row and its index and
    compartment rows in ONE statement -- the INSERT ... RETURNING pk, and each table's rows
    as a data-modifying WITH query that takes the pk from it
    (https://www.postgresql.org/docs/current/queries-with.html#QUERIES-WITH-MODIFYING) -- and
    which columns of each table are float.  ``tables``: (table, columns after res_pk).

    Why: a create was ~7 statements (bench_nodes, pg_stat_statements), and a backend's work
    per statement (parse, bind, snapshot, locks, protocol) was most of its CPU per create:
    what two nodes on two cores are short of (issue 18, "Speed")."""
    parts = [f"r AS ({_RESOURCE_VALUES})"]
    floats: list[tuple[bool, ...]] = []
    for n, (table, cols) in enumerate(tables):
        arrays, f = _unnest(table, cols)
        parts.append(f"i{n} AS (INSERT INTO {table} (res_pk, {', '.join(cols)}) "  # noqa: S608 - schema names
                     f"SELECT r.pk, u.* FROM r, {arrays} AS u)")
        floats.append(f)
    return "WITH " + ", ".join(parts) + " SELECT pk FROM r", tuple(floats)


__all__ = ["Indexer", "IndexRow", "Prepared", "SqlRepository", "SqlWriter", "WriteHook", "compartment_of",
           "instant", "sql_database", "sql_repository", "sql_writer", "system_clock"]


def sql_writer(w: Writer) -> SqlWriter:
    """The SQL transaction behind a :class:`Writer`, for the data-access modules
    (the only code allowed SQL text, tests/test_layering.py); a Writer of another
    kind here is a wiring error, not bad input."""
    if not isinstance(w, SqlWriter):
        raise TypeError(f"a SQL data-access module was handed a {type(w).__name__}, not the SQL store's writer")
    return w


def sql_repository(repo: Repository) -> SqlRepository:
    """The SQL repository behind a :class:`Repository` (see :func:`sql_writer`)."""
    if not isinstance(repo, SqlRepository):
        raise TypeError(f"a SQL data-access module was handed a {type(repo).__name__}, not the SQL repository")
    return repo


def sql_database(db: DatabaseHandle) -> Database:
    """The SQL database behind a :class:`DatabaseHandle` (see :func:`sql_writer`)."""
    if not isinstance(db, Database):
        raise TypeError(f"a SQL data-access module was handed a {type(db).__name__}, not the SQL database")
    return db


def system_clock() -> int:
    return time.time_ns() // 1_000_000


def instant(ms: int) -> str:
    """FHIR instant (datatypes.html#instant) at millisecond precision, UTC."""
    secs, milli = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{milli:03d}Z"


def _is_unique_violation(e: Exception) -> bool:
    name = type(e).__name__
    return name in ("IntegrityError", "UniqueViolation") or "UNIQUE constraint" in str(e)




class SqlWriter:
    """One open write transaction (see Repository.write)."""

    def __init__(self, repo: SqlRepository, conn: Any) -> None:
        self.repo = repo
        self.conn = conn
        self.db = repo.db
        self.cur = conn.cursor()
        self._next_pk: int | None = None
        self.now = repo.clock()
        # Per-transaction state of the write stages (the policy, the MPI linker).
        self.ctx = WriteContext(actor=repo.actor)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        self.cur.execute(self.db.sql(sql), args)
        return self.cur

    # ------------------------------------------------------------- helpers
    def _alloc_pks(self, n: int) -> list[int]:
        if self.db.dialect == "sqlite":
            if self._next_pk is None:  # safe: BEGIN IMMEDIATE holds the write lock
                self._next_pk = (self.execute("SELECT COALESCE(MAX(pk), 0) FROM resource").fetchone()[0]) + 1
            start = self._next_pk
            self._next_pk += n
            return list(range(start, start + n))
        rows = self.execute(
            "SELECT nextval(pg_get_serial_sequence('resource', 'pk')) FROM generate_series(1, ?)", (n,)
        ).fetchall()
        return [r[0] for r in rows]

    def lock_key(self, key: str) -> None:
        """Serialise writers that use the same key (e.g. one conditional-create query).

        SQLite already serialises all writers (BEGIN IMMEDIATE); PostgreSQL takes a
        transaction-scoped advisory lock on a 64-bit hash of the key.
        """
        if self.db.dialect == "postgresql":
            h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)
            self.execute("SELECT pg_advisory_xact_lock(?)", (h,))

    def current_by_identifier(self, type: str, system: str, values: list[str], *,
                              without_tag: tuple[str, str] | None = None) -> dict[str, list[Stored]]:
        """See Writer.current_by_identifier (hutong.store.identifiers)."""
        return current_by_identifier(self, type, system, values, without_tag=without_tag)

    def _finish_body(self, resource: dict[str, Any], id: str, version: int, now: int) -> bytes:
        resource["id"] = id
        meta = dict(resource.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = instant(now)
        resource["meta"] = meta
        return exactjson.dumps(resource)  # decimals as written (hutong.store.exactjson)

    def _write_index(self, items: list[tuple[int, str, dict[str, Any]]],
                     prepared: Sequence[Prepared] | None = None) -> None:
        for table, cols, rows in self._index_rows(items, prepared):
            self._insert_rows(table, cols, rows)

    def _index_rows(self, items: list[tuple[int, str, dict[str, Any]]], prepared: Sequence[Prepared] | None = None
                    ) -> list[tuple[str, tuple[str, ...], list[tuple[Any, ...]]]]:
        """(table, columns, rows) of the index and compartment rows of ``items`` (pk, type, resource)."""
        out: list[tuple[str, tuple[str, ...], list[tuple[Any, ...]]]] = []
        per_table: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        comp: list[tuple[int, str]] = []
        ids = self.repo.param_ids
        indexer = self.repo.indexer
        for n, (pk, type, res) in enumerate(items):
            rows, patients = prepared[n] if prepared is not None else indexer.index(type, res)
            for ptype, name, row in rows:
                per_table[ptype].append((pk, ids[(type, name)], *row))
            for pid in patients:
                comp.append((pk, pid))
        for ptype, rows in per_table.items():
            table, cols = INDEX_TABLES[ptype]
            out.append((table, ("res_pk", "param_id", *cols), rows))
        if comp:
            out.append(("compartment", ("res_pk", "patient_id"), comp))
        return out

    def _insert_rows(self, table: str, cols: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> None:
        """executemany (SQLite, in process); on PostgreSQL COPY for large batches (bulk import: ~3x
        fewer round trips and no per-row statement parsing), else one INSERT of arrays.

        A resource's index rows are a few per table: executemany sent them in one round trip but
        PostgreSQL still executed one INSERT per row, and a backend's CPU per create was about half
        the node's (bench_nodes, issue 18), which is what two nodes on two cores are short of.
        """
        if self.db.dialect == "postgresql" and len(rows) >= COPY_THRESHOLD:
            with self.cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as cp:
                for row in rows:
                    cp.write_row(row)
            return
        if self.db.dialect == "postgresql" and len(rows) > 1:
            sql, floats = _unnest_insert(table, cols)
            self.execute(sql, _pg_columns(rows, floats))
            return
        marks = ",".join("?" * len(cols))
        self.cur.executemany(self.db.sql(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})"), rows)

    def reindex(self, pk: int, type: str, resource: dict[str, Any]) -> None:
        """Resource ``pk``'s index rows and compartment memberships made again by
        the repository's indexer, in place: no new version (hutong.store.reindex.rebuild)."""
        self._clear_index(pk)
        self._write_index([(pk, type, resource)])

    def _clear_index(self, pk: int) -> None:
        for table, _ in INDEX_TABLES.values():
            self.execute(f"DELETE FROM {table} WHERE res_pk = ?", (pk,))
        self.execute("DELETE FROM compartment WHERE res_pk = ?", (pk,))

    def _archive(self, pk: int) -> None:
        self.execute(
            "INSERT INTO resource_version (res_pk, version, last_updated, deleted, method, body) "
            "SELECT pk, version, last_updated, deleted, method, body FROM resource WHERE pk = ?",
            (pk,),
        )

    # ------------------------------------------------------------- operations
    def read_current(self, type: str, id: str, *, lock: bool = False) -> Stored | None:
        sql = f"SELECT {COLS} FROM resource r WHERE r.type = ? AND r.fhir_id = ?"
        if lock and self.db.dialect == "postgresql":
            sql += " FOR UPDATE"
        r = self.execute(sql, (type, id)).fetchone()
        return stored_of(r, self.repo.codec) if r else None

    def _hook(self, type: str, id: str, resource: dict[str, Any] | None, current: Stored | None) -> bool:
        changed = False
        for h in self.repo.hooks:
            if type in h.types:
                changed = h.on_write(self, type, id, resource, current) or changed
        return changed

    def insert(self, type: str, id: str, resource: dict[str, Any], *, method: str = "POST",
               hooks: bool = True) -> Stored:
        return self.insert_many([(type, id, resource)], method=method, hooks=hooks)[0]

    def insert_many(self, items: list[tuple[str, str, dict[str, Any]]], *, method: str = "POST",
                    prepared: Sequence[Prepared] | None = None, hooks: bool = True) -> list[Stored]:
        """Insert new resources; ``prepared`` carries index rows computed elsewhere
        (bulk import extracts them in worker processes).  ``hooks=False`` only for
        the hooks' own writes (a golden record must not be matched as a source)."""
        if hooks and self.repo.hooks:
            fresh: list[Prepared | None] = list(prepared) if prepared is not None else [None] * len(items)
            for n, (type, id, res) in enumerate(items):
                if self._hook(type, id, res, None):
                    fresh[n] = None
            if prepared is not None:
                indexer = self.repo.indexer
                prepared = [p if p is not None else indexer.index(items[n][0], items[n][2])
                            for n, p in enumerate(fresh)]
        now = self.now
        # PostgreSQL, one resource (a REST create): one statement writes it and its index rows,
        # its pk from the INSERT itself (RETURNING; _create_statement).
        single = self.db.dialect == "postgresql" and len(items) == 1
        pks = [0] if single else self._alloc_pks(len(items))
        codec = self.repo.codec
        rows = []
        bodies = []
        for pk, (type, id, res) in zip(pks, items, strict=True):
            body = self._finish_body(res, id, 1, now)
            bodies.append(body)
            rows.append((pk, type, id, 1, now, 0, method, codec.encode(body)))
        try:
            if single:
                # the resource, its index rows and compartments in one statement (_create_statement)
                type0, _id0, res0 = items[0]
                # by table name: one statement text per set of tables, whatever order they came in
                index = sorted(self._index_rows([(0, type0, res0)], prepared), key=lambda t: t[0])
                sql, floats = _create_statement(tuple((t, cols[1:]) for t, cols, _rows in index))
                args: list[Any] = list(rows[0][1:])
                for (_t, _c, irows), f in zip(index, floats, strict=True):
                    args += _pg_columns([r[1:] for r in irows], f)
                pks = [int(self.execute(sql, args).fetchone()[0])]
            else:
                self._insert_rows("resource", ("pk", "type", "fhir_id", "version", "last_updated", "deleted",
                                               "method", "body"), rows)
        except Exception as e:
            if _is_unique_violation(e):
                raise Conflict("HT-0051", "a resource with this id was created concurrently; retry") from e
            raise
        out = [Stored(type, id, 1, now, False, method, body, pk)
               for pk, (type, id, _r), body in zip(pks, items, bodies, strict=True)]
        if not single:
            self._write_index([(pk, t, r) for pk, (t, _i, r) in zip(pks, items, strict=True)], prepared)
        return out

    def replace(self, current: Stored, resource: dict[str, Any], *, hooks: bool = True) -> Stored:
        if hooks and self.repo.hooks:
            self._hook(current.type, current.id, resource, current)
        now = self.now
        version = current.version + 1
        body = self._finish_body(resource, current.id, version, now)
        self._archive(current.pk)
        self.execute(
            "UPDATE resource SET version = ?, last_updated = ?, deleted = 0, method = 'PUT', body = ? WHERE pk = ?",
            (version, now, self.repo.codec.encode(body), current.pk),
        )
        if not current.deleted:
            self._clear_index(current.pk)
        self._write_index([(current.pk, current.type, resource)])
        return Stored(current.type, current.id, version, now, False, "PUT", body, current.pk)

    def delete(self, current: Stored, *, hooks: bool = True) -> Stored:
        if hooks and self.repo.hooks:
            self._hook(current.type, current.id, None, current)
        now = self.now
        version = current.version + 1
        self._archive(current.pk)
        self.execute(
            "UPDATE resource SET version = ?, last_updated = ?, deleted = 1, method = 'DELETE', body = NULL "
            "WHERE pk = ?",
            (version, now, current.pk),
        )
        self._clear_index(current.pk)
        return Stored(current.type, current.id, version, now, True, "DELETE", None, current.pk)

    def search_ids(self, query: Query, limit: int) -> list[Stored]:
        """Matches of a conditional request's query, inside this transaction."""
        query.count = limit
        query.cursor = None
        sql, args = self.repo.compiler.page_sql(query, COLS)
        return [stored_of(r, self.repo.codec) for r in self.execute(sql, args).fetchall()]


class SqlRepository:
    """Repository over a :class:`Database`; see hutong.store.repository.Repository."""

    def __init__(self, db: Database, indexer: Indexer, codec: Codec | None = None,
                 clock: Clock = system_clock) -> None:
        self.db = db
        self.indexer = indexer
        self.codec: Codec = codec or PlainCodec()
        self.clock = clock
        self.param_ids: dict[tuple[str, str], int] = {}
        self.hooks: list[WriteHook] = []
        # Whom this handle's writes act for (acting_as); None: writes of resources
        # are refused by the policy stage when one is installed.
        self.actor: object | None = None
        self._fixed_conn: Any = None
        self._group: GroupCommit[SqlWriter] | None = (
            GroupCommit(self.write, self._savepoint) if db.dialect == "sqlite" else None)
        self._sync_params()
        self.compiler = Compiler(self._param_id)

    def _param_id(self, type: str, name: str) -> int:
        try:
            return self.param_ids[(type, name)]
        except KeyError:
            return -1  # a parameter no resource can have: matches nothing

    def _sync_params(self) -> None:
        """Give every (type, parameter) a stable small id, adding new ones."""
        wanted = [(t, n) for t, n, _p in self.indexer.params()]
        with self.db.connection() as conn:
            cur = conn.cursor()
            cur.execute(self.db.begin_sql())
            try:
                if self.db.dialect == "postgresql":
                    cur.execute("SELECT pg_advisory_xact_lock(7238002)")
                cur.execute("SELECT id, type, name FROM search_param")
                known = {(t, n): i for i, t, n in cur.fetchall()}
                nxt = max(known.values(), default=0) + 1
                new = []
                for key in wanted:
                    if key not in known:
                        known[key] = nxt
                        new.append((nxt, *key))
                        nxt += 1
                if new:
                    cur.executemany(self.db.sql("INSERT INTO search_param (id, type, name) VALUES (?, ?, ?)"), new)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        self.param_ids = known

    # ------------------------------------------------------------- writes
    def transact(self, fn: Callable[[SqlWriter], T]) -> T:
        """Run ``fn`` in an all-or-nothing write transaction and return its result.

        On SQLite concurrent callers share one COMMIT (group commit), each in its
        own savepoint; on PostgreSQL each call is its own transaction.
        """
        actor = self.actor

        def run(w: SqlWriter) -> T:
            # A fresh context per call: a group commit shares one transaction
            # between callers, each in its own savepoint, acting for itself (and
            # a rolled-back caller's pending state does not leak into the next).
            # Arrival order stays unique within the shared transaction.
            w.ctx = WriteContext(actor=actor, link_seq=w.ctx.link_seq)
            return fn(w)

        if self._group is not None:
            result: T = self._group.submit(run)
            return result
        with self.write() as w:
            return run(w)

    def acting_as(self, actor: object) -> SqlRepository:
        """This repository, its writes acting for ``actor`` (the caller's policy,
        hutong.security.policy.Access) for the life of one request or job:
        every transaction it opens carries the actor in its :class:`WriteContext`,
        where the policy stage finds it (never from ambient state)."""
        v = copy.copy(self)
        v.actor = actor
        return v

    @contextmanager
    def _savepoint(self, w: SqlWriter, name: str) -> Iterator[None]:
        w.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            w.execute(f"ROLLBACK TO SAVEPOINT {name}")
            w.execute(f"RELEASE SAVEPOINT {name}")
            raise
        w.execute(f"RELEASE SAVEPOINT {name}")

    @contextmanager
    def write(self) -> Iterator[SqlWriter]:
        with self.db.write_lock(), self.db.connection() as conn:
            cur = conn.cursor()
            try:
                cur.execute(self.db.begin_sql())
            except Exception as e:
                raise StorageError("HT-0050", f"database busy: {type(e).__name__}") from e
            w = SqlWriter(self, conn)
            try:
                yield w
                cur.execute("COMMIT")
            except BaseException:
                try:
                    cur.execute("ROLLBACK")
                except Exception:  # connection already broken: the pool discards it
                    pass
                raise

    def view(self, w: Writer) -> SqlRepository:
        """This repository reading through an open write transaction (sees its writes)."""
        v = copy.copy(self)
        v._fixed_conn = sql_writer(w).conn
        return v

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        if self._fixed_conn is not None:
            yield self._fixed_conn
        else:
            with self.db.connection() as conn:
                yield conn

    # ------------------------------------------------------------- reads
    def query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """Rows of one read statement (for layers with tables of their own, e.g. the MPI)."""
        return self._query(sql, args)

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._connection() as conn:
            cur = conn.cursor()
            cur.execute(self.db.sql(sql), args)
            rows: list[Any] = cur.fetchall()
            return rows

    def read(self, type: str, id: str) -> Stored | None:
        rows = self._query(f"SELECT {COLS} FROM resource r WHERE r.type = ? AND r.fhir_id = ?", (type, id))
        return stored_of(rows[0], self.codec) if rows else None

    def vread(self, type: str, id: str, version: int) -> Stored | None:
        rows = self._query(
            f"SELECT {COLS} FROM resource r WHERE r.type = ? AND r.fhir_id = ? AND r.version = ? "
            "UNION ALL SELECT r.pk, r.type, r.fhir_id, v.version, v.last_updated, v.deleted, v.method, v.body "
            "FROM resource r JOIN resource_version v ON v.res_pk = r.pk "
            "WHERE r.type = ? AND r.fhir_id = ? AND v.version = ?",
            (type, id, version, type, id, version),
        )
        return stored_of(rows[0], self.codec) if rows else None

    def history(self, type: str | None, id: str | None, *, since: int | None, count: int,
                before: tuple[int, int, int] | None = None) -> list[Stored]:
        """history.html: newest first; ``before`` is the keyset cursor (last_updated, pk, version)."""
        cur_where: list[str] = ["1=1"]
        ver_where: list[str] = ["1=1"]
        args_c: list[Any] = []
        args_v: list[Any] = []
        if type is not None:
            cur_where.append("r.type = ?")
            ver_where.append("r.type = ?")
            args_c.append(type)
            args_v.append(type)
        if id is not None:
            cur_where.append("r.fhir_id = ?")
            ver_where.append("r.fhir_id = ?")
            args_c.append(id)
            args_v.append(id)
        if since is not None:
            cur_where.append("r.last_updated >= ?")
            ver_where.append("v.last_updated >= ?")
            args_c.append(since)
            args_v.append(since)
        sql = (
            f"SELECT * FROM (SELECT {COLS} FROM resource r WHERE {' AND '.join(cur_where)} "
            "UNION ALL SELECT r.pk, r.type, r.fhir_id, v.version, v.last_updated, v.deleted, v.method, v.body "
            f"FROM resource_version v JOIN resource r ON r.pk = v.res_pk WHERE {' AND '.join(ver_where)}) h"
        )
        args: list[Any] = args_c + args_v
        if before is not None:
            sql += " WHERE (h.last_updated < ? OR (h.last_updated = ? AND (h.pk < ? OR (h.pk = ? AND h.version < ?))))"
            args += [before[0], before[0], before[1], before[1], before[2]]
        sql += " ORDER BY h.last_updated DESC, h.pk DESC, h.version DESC LIMIT ?"
        args.append(count)
        return [stored_of(r, self.codec) for r in self._query(sql, args)]

    def search(self, q: Query) -> SearchPage:
        sql, args = self.compiler.page_sql(q, COLS)
        with self._connection() as conn:
            cur = conn.cursor()
            cur.execute(self.db.sql(sql), args)
            rows = cur.fetchall()
            total = None
            if q.total:
                where_args: list[Any] = []
                where = self.compiler.where(q, "r", where_args)
                cur.execute(self.db.sql(f"SELECT COUNT(*) FROM resource r WHERE {where}"), where_args)
                total = cur.fetchone()[0]
        nkeys = len(q.sort)
        backward = q.cursor.backward if q.cursor else False
        more = len(rows) > q.count
        rows = rows[: q.count]
        if backward:
            rows.reverse()
        matches = [stored_of(r, self.codec) for r in rows]

        def cursor_of(r: Sequence[Any], back: bool) -> Cursor:
            return Cursor(tuple(r[8 : 8 + nkeys]), r[0], back)

        next_c = prev_c = None
        if rows:
            if (more and not backward) or (backward and q.cursor is not None):
                next_c = cursor_of(rows[-1], False)
            if (q.cursor is not None and not backward) or (backward and more):
                prev_c = cursor_of(rows[0], True)
        return SearchPage(matches, [], total, next_c, prev_c)

    def count(self, q: Query) -> int:
        args: list[Any] = []
        where = self.compiler.where(q, "r", args)
        return int(self._query(f"SELECT COUNT(*) FROM resource r WHERE {where}", args)[0][0])

    def fetch(self, refs: Iterable[tuple[str, str]]) -> list[Stored]:
        """Current, non-deleted resources by (type, id)."""
        by_type: dict[str, set[str]] = defaultdict(set)
        for t, i in refs:
            by_type[t].add(i)
        out: list[Stored] = []
        for t, ids in by_type.items():
            idl = sorted(ids)
            for k in range(0, len(idl), CHUNK):
                chunk = idl[k : k + CHUNK]
                out += [
                    stored_of(r, self.codec)
                    for r in self._query(
                        f"SELECT {COLS} FROM resource r WHERE r.type = ? AND r.deleted = 0 "
                        f"AND r.fhir_id IN ({','.join('?' * len(chunk))}) ORDER BY r.pk",
                        [t, *chunk],
                    )
                ]
        return out

    def include(self, page: list[Stored], includes: list[Include]) -> list[Stored]:
        """_include / _revinclude (search.html#include), :iterate until nothing new."""
        seen = {(s.type, s.id) for s in page}
        found: list[Stored] = []
        frontier = page
        for rnd in range(8):  # bound on :iterate depth; cycles stop earlier via `seen`
            new: list[Stored] = []
            for inc in includes:
                if rnd > 0 and not inc.iterate:
                    continue
                pid = self._param_id(inc.source_type, inc.param.name)
                if inc.reverse:
                    targets = [s for s in frontier if not inc.target_type or s.type == inc.target_type]
                    for k in range(0, len(targets), CHUNK):
                        chunk = targets[k : k + CHUNK]
                        cond = " OR ".join("(ir.target_type = ? AND ir.target_id = ?)" for _ in chunk)
                        args: list[Any] = [pid, inc.source_type]
                        for s in chunk:
                            args += [s.type, s.id]
                        for r in self._query(
                            f"SELECT DISTINCT {COLS} FROM idx_reference ir JOIN resource r ON r.pk = ir.res_pk "
                            f"WHERE ir.param_id = ? AND r.type = ? AND r.deleted = 0 AND ({cond})",
                            args,
                        ):
                            st = stored_of(r, self.codec)
                            if (st.type, st.id) not in seen:
                                seen.add((st.type, st.id))
                                new.append(st)
                else:
                    sources = [s for s in frontier if s.type == inc.source_type]
                    refs: set[tuple[str, str]] = set()
                    for k in range(0, len(sources), CHUNK):
                        chunk = sources[k : k + CHUNK]
                        rows = self._query(
                            "SELECT target_type, target_id FROM idx_reference WHERE param_id = ? "
                            f"AND target_id IS NOT NULL AND res_pk IN ({','.join('?' * len(chunk))})",
                            [pid, *[s.pk for s in chunk]],
                        )
                        for tt, ti in rows:
                            if tt and (inc.target_type is None or tt == inc.target_type) and (tt, ti) not in seen:
                                refs.add((tt, ti))
                    for st in self.fetch(refs):
                        if (st.type, st.id) not in seen:
                            seen.add((st.type, st.id))
                            new.append(st)
            found += new
            frontier = new
            if not new or not any(i.iterate for i in includes):
                break
        return found

    def everything(self, patient_ids: list[str], *, types: tuple[str, ...] | None, since: int | None,
                   after_pk: int, count: int) -> tuple[list[Stored], bool]:
        """One page of the patients' compartment (operation-patient-everything.html), by pk."""
        args: list[Any] = [*patient_ids, after_pk]
        sql = (
            f"SELECT {COLS} FROM resource r WHERE r.pk IN (SELECT res_pk FROM compartment WHERE patient_id IN "
            f"({','.join('?' * len(patient_ids))})) AND r.pk > ? AND r.deleted = 0"
        )
        if types:
            sql += f" AND r.type IN ({','.join('?' * len(types))})"
            args += list(types)
        if since is not None:
            sql += " AND r.last_updated >= ?"
            args.append(since)
        sql += " ORDER BY r.pk LIMIT ?"
        args.append(count + 1)
        rows = self._query(sql, args)
        return [stored_of(r, self.codec) for r in rows[:count]], len(rows) > count

    def existing_ids(self, type: str, ids: list[str], w: Writer | None = None) -> set[str]:
        """Which of ``ids`` exist (current or deleted); inside ``w``'s transaction if given."""
        out: set[str] = set()
        for k in range(0, len(ids), CHUNK):
            chunk = ids[k : k + CHUNK]
            sql = f"SELECT fhir_id FROM resource WHERE type = ? AND fhir_id IN ({','.join('?' * len(chunk))})"
            rows = (sql_writer(w).execute(sql, [type, *chunk]).fetchall() if w is not None
                    else self._query(sql, [type, *chunk]))
            out |= {r[0] for r in rows}
        return out

    def analyze(self) -> None:
        """Refresh planner statistics (after a bulk load)."""
        with self.db.connection() as conn:
            conn.cursor().execute("ANALYZE")
