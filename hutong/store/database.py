"""Opening a database by URL: SQLite (default, WAL) or PostgreSQL.

SQLAlchemy gives us URL parsing, the connection pool and dialect-correct DDL;
hot-path statements run on the pooled DBAPI connection directly, with our own
parameter marker translation, because per-statement ORM/Core overhead would
dominate the sub-millisecond reads this store is built for.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import QueuePool

from hutong.errors import ConfigError, HutongError, StorageError

DEFAULT_URL = "sqlite:///var/hutong.db"


def resolve_url(url: str | None) -> str:
    """``--database`` wins, then HUTONG_DATABASE_URL, then the embedded default."""
    return url or os.environ.get("HUTONG_DATABASE_URL") or DEFAULT_URL


CHECKPOINT_INTERVAL_S = 0.2
# Commits made under Database.relaxed_durability (synchronous=NORMAL: read
# requests' audit rows) are fsynced by the checkpointer thread within this bound.
RELAXED_SYNC_S = 1.0
CHECKPOINT_BYTES = 4 * 1024 * 1024  # SQLite's automatic threshold: 1,000 pages of 4 KiB
# Issue 12, finding 15: the WAL is reused, not shrunk, after a checkpoint, so one
# bulk import left 2.1 GB behind for good.  journal_size_limit truncates it to
# this size whenever SQLite restarts the log (sqlite.org/pragma.html#pragma_journal_size_limit),
# and the checkpointer truncates it to zero once it is idle and above this size.
WAL_LIMIT_BYTES = 64 * 1024 * 1024
SQLITE_FILE_MODE = 0o600  # the database, its -wal and -shm (SQLite gives them the database file's mode)

@dataclass
class Database:
    """A connection pool plus what every statement needs to know about the dialect.

    The pool is a plain LIFO list of DBAPI connections: SQLAlchemy's pool adds
    checkout events and a reset round trip per use, which measured as a third
    of a primary-key read.  Connections are autocommit; every write opens and
    ends its own transaction, so nothing needs resetting on return.
    """

    url: str
    engine: Engine
    dialect: str  # "sqlite" | "postgresql"
    _sql_cache: dict[str, str] = field(default_factory=dict)
    _idle: list[Any] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _write_mutex: threading.Lock = field(default_factory=threading.Lock)
    _lock_path: str | None = None
    _checkpointer: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _local: threading.local = field(default_factory=threading.local)
    _unsynced: bool = False       # a relaxed commit has not been fsynced yet (the checkpointer does it)
    max_idle: int = 64  # >= the server threadpool (40), so connections are reused, not reopened
    _in_use: int = 0   # connections handed out by connection() and not yet back (pool_stats)

    def sql(self, statement: str) -> str:
        """Translate our ``?`` markers to the driver's paramstyle (cached)."""
        if self.dialect == "sqlite":
            return statement
        cached = self._sql_cache.get(statement)
        if cached is None:
            cached = statement.replace("%", "%%").replace("?", "%s")
            self._sql_cache[statement] = cached
        return cached

    def _connect(self) -> Any:
        try:
            cargs, ckw = self.engine.dialect.create_connect_args(self.engine.url)
            conn: Any
            if self.dialect == "sqlite":
                conn = sqlite3.connect(str(cargs[0]), timeout=30, check_same_thread=False,
                                       isolation_level=None)
                _sqlite_on_connect(conn, None)
            else:
                import psycopg

                conn = psycopg.connect(*cargs, **ckw, autocommit=True)
            return conn
        except Exception as e:  # driver-specific connection errors
            raise StorageError("HT-0050", f"cannot connect to the database: {type(e).__name__}") from e

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A pooled DBAPI connection in autocommit mode (reads see committed data)."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
            self._in_use += 1
        try:
            if conn is None:
                conn = self._connect()
        except BaseException:
            with self._lock:
                self._in_use -= 1
            raise
        broken = False
        relaxed = self.dialect == "sqlite" and getattr(self._local, "relaxed", False)
        try:
            if relaxed:
                conn.execute("PRAGMA synchronous=NORMAL")
            yield conn
        except BaseException:
            broken = self._is_broken(conn)
            raise
        finally:
            if relaxed:
                try:
                    conn.execute("PRAGMA synchronous=FULL")
                except Exception:  # never pool a connection left at NORMAL
                    broken = True
            if broken:
                with self._lock:
                    self._in_use -= 1
                with contextlib.suppress(Exception):
                    conn.close()
            else:
                with self._lock:
                    self._in_use -= 1
                    if len(self._idle) < self.max_idle:
                        self._idle.append(conn)
                        conn = None
                if conn is not None:
                    conn.close()

    @contextmanager
    def relaxed_durability(self) -> Iterator[None]:
        """SQLite commits of this thread inside the block run at ``synchronous=NORMAL``:
        committed (atomic, visible to every reader, and surviving a crash of the
        process -- the WAL frames are written before COMMIT returns), but fsynced
        by the checkpointer thread within RELAXED_SYNC_S instead of in the commit.

        Only for rows whose loss on a power cut within that second acknowledges
        nothing: the audit rows of read requests (issue 13; README "Durability").
        Every acknowledged write still commits at synchronous=FULL (issue 12,
        finding 12): the pragma is per connection (sqlite.org/pragma.html#pragma_synchronous)
        and is put back to FULL before the connection returns to the pool; a later
        FULL commit also syncs every earlier WAL frame.  PostgreSQL: unchanged.
        """
        if self.dialect != "sqlite":
            yield
            return
        self._local.relaxed = True
        try:
            yield
        finally:
            self._local.relaxed = False
            self._unsynced = True
            if self._checkpointer is None:
                self._start_checkpointer()

    def sync_relaxed(self) -> None:
        """fsync relaxed commits now (before something outside the database names
        them: a signed audit head must not name a row a power cut could take)."""
        if self._unsynced and self._lock_path is not None:
            self._sync_wal(self._lock_path[: -len(".lock")] + "-wal")

    def _sync_wal(self, wal: str) -> None:
        """fsync the WAL (the relaxed commits in it).  The -wal file carries no
        POSIX locks of SQLite's (they are on the database and -shm files), so
        opening and closing it here drops none."""
        self._unsynced = False  # before the sync: a commit after it sets it again
        try:
            fd = os.open(wal, os.O_RDONLY)
        except FileNotFoundError:
            return  # no WAL: the last connection checkpointed and removed it
        try:
            os.fsync(fd)
        except OSError:
            self._unsynced = True  # next round tries again
            raise
        finally:
            os.close(fd)

    def _is_broken(self, conn: Any) -> bool:
        if self.dialect == "postgresql":
            return bool(conn.closed or conn.broken)
        return False

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Queue SQLite writers (threads and processes) on a lock that wakes the
        next one as soon as the current one commits.

        SQLite's own busy handler polls with sleeps of up to 100 ms, which under
        concurrent writes showed as 100 ms mean / 2 s max create latency.  A
        thread lock plus ``flock`` on ``<db>.lock`` hands over immediately.
        PostgreSQL needs none of this (row locks and advisory locks).
        """
        if self.dialect != "sqlite" or self._lock_path is None:
            yield
            return
        if self._checkpointer is None:
            self._start_checkpointer()
        with self._write_mutex:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock

    def _start_checkpointer(self) -> None:
        """WAL checkpoints in a background thread of each writing process.

        SQLite's automatic checkpoint runs inside the COMMIT that crosses
        1,000 pages, so one request in a few hundred pays for copying the WAL
        into the database: that was the p99 tail of every write benchmark
        (MPI inline create p99 42 ms vs 24 ms with it off).  Connections turn
        the automatic checkpoint off; this thread runs the same PASSIVE
        checkpoint (it never blocks writers or readers) whenever the WAL has
        grown past CHECKPOINT_BYTES.  sqlite3 releases the GIL while it copies.
        Closing the last connection checkpoints too (SQLite does that itself).
        """
        with self._lock:
            if self._checkpointer is not None or self._lock_path is None:
                return
            db_path = self._lock_path[: -len(".lock")]
            t = threading.Thread(target=self._checkpoint_loop, args=(db_path,), name="sqlite-checkpoint",
                                 daemon=True)
            self._checkpointer = t
        t.start()

    def _checkpoint_loop(self, db_path: str) -> None:
        conn: sqlite3.Connection | None = None
        wal = db_path + "-wal"
        try:
            while not self._stop.wait(CHECKPOINT_INTERVAL_S):
                try:
                    if self._unsynced:  # relaxed commits: synced within one interval (< RELAXED_SYNC_S)
                        self._sync_wal(wal)
                    size = os.path.getsize(wal)
                    if size < CHECKPOINT_BYTES:
                        continue
                    if conn is None:
                        conn = sqlite3.connect(db_path, timeout=30, check_same_thread=False, isolation_level=None)
                        conn.execute("PRAGMA busy_timeout=30000")
                        conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
                    busy, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if size > WAL_LIMIT_BYTES and busy == 0 and frames == done:
                        # Everything is in the database file: truncate the WAL to zero.
                        # TRUNCATE briefly takes the write lock; a short timeout so a busy
                        # writer is never held up for long (the next round tries again).
                        conn.execute("PRAGMA busy_timeout=50")
                        try:
                            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                        finally:
                            conn.execute("PRAGMA busy_timeout=30000")
                except (OSError, sqlite3.Error):
                    continue  # no WAL yet, or busy: next round
        finally:
            if self._unsynced:
                with contextlib.suppress(OSError):
                    self._sync_wal(wal)
            if conn is not None:
                conn.close()

    def pool_stats(self) -> tuple[int, int]:
        """(idle, in use) connections of this process's pool (metrics, issue 18)."""
        with self._lock:
            return len(self._idle), self._in_use

    def ping(self) -> None:
        """One round trip on a pooled connection (readiness, issue 18); raises when unreachable."""
        with self.connection() as conn:
            cur = conn.cursor()
            try:
                cur.execute("SELECT 1")
                cur.fetchall()
            finally:
                cur.close()

    def shrink_wal(self) -> None:
        """Checkpoint and truncate the SQLite WAL now (after a bulk import: the
        import's WAL should not outlive it).  Waits for readers and writers up to
        the busy timeout; a no-op on PostgreSQL."""
        if self.dialect != "sqlite":
            return
        with self.write_lock(), self.connection() as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def begin_sql(self) -> str:
        # SQLite: take the write lock up front so concurrent writers queue on
        # busy_timeout instead of failing on lock upgrade, and conditional
        # creates are serialised (race-safe If-None-Exist).  PostgreSQL: READ
        # COMMITTED named, not inherited from the server's default: a conditional
        # create takes its advisory lock, then searches, and under a
        # default_transaction_isolation of repeatable read the snapshot is taken at
        # the lock statement, before the wait, so two nodes racing on one identifier
        # would each miss the other's row and both create (PostgreSQL docs 13.2.1/13.2.2).
        return "BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN ISOLATION LEVEL READ COMMITTED"

    def close(self) -> None:
        self._stop.set()
        if self._checkpointer is not None and self._checkpointer is not threading.current_thread():
            self._checkpointer.join(timeout=10)
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            with contextlib.suppress(Exception):
                c.close()
        self.engine.dispose()


def _sqlite_on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
    cur = dbapi_conn.cursor()
    for pragma in (
        "PRAGMA journal_mode=WAL",
        # Issue 12, finding 12: every acknowledgement (HTTP 2xx, HL7 AA) follows a
        # durable commit, so each COMMIT syncs the WAL (NORMAL syncs only at
        # checkpoints: a power cut lost acknowledged writes).  sqlite.org/pragma.html#pragma_synchronous
        "PRAGMA synchronous=FULL",
        "PRAGMA busy_timeout=30000",
        "PRAGMA cache_size=-65536",
        "PRAGMA temp_store=MEMORY",
        "PRAGMA mmap_size=268435456",
        "PRAGMA wal_autocheckpoint=0",  # Database._start_checkpointer does it off the request path
        f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}",
    ):
        cur.execute(pragma)
    cur.close()


# SQLite result codes that mean the storage, not the statement, failed
# (sqlite.org/rescode.html): SQLITE_FULL, SQLITE_IOERR, SQLITE_READONLY, SQLITE_CANTOPEN,
# SQLITE_BUSY/LOCKED past the busy timeout.  PostgreSQL: class 53 (insufficient
# resources: disk full, out of memory) and class 08 (connection exceptions).
_SQLITE_STORAGE_WORDS = ("full", "disk i/o", "readonly", "unable to open", "locked", "busy")


def storage_failure(e: BaseException) -> StorageError | None:
    """``e`` as a StorageError (503) when it means "the database cannot take this
    now" -- a full disk above all (issue 12, finding 15) -- else None.

    For the edges that must answer a clear 503 instead of a 500 with a
    traceback (the token endpoint); the message names the kind of failure only.
    """
    if isinstance(e, StorageError):
        return e
    if isinstance(e, sqlite3.OperationalError | sqlite3.DatabaseError):
        text = str(e).lower()
        if any(w in text for w in _SQLITE_STORAGE_WORDS):
            full = "full" in text
            return StorageError("HT-0159", "storage is full: nothing was changed; try again later" if full
                                else "storage is failing or busy: nothing was changed; try again later")
        return None
    state = getattr(e, "sqlstate", None)
    if isinstance(state, str) and state[:2] in ("53", "08"):
        return StorageError("HT-0159", "storage is full or unavailable: nothing was changed; try again later")
    return None


def _private_files(path: str) -> None:
    """Issue 12, finding 11: database files were 0644 (readable by every local
    account).  Create the database file 0600 before SQLite does -- SQLite gives
    the -wal and -shm files the database file's mode -- and narrow existing
    files of an older deployment.

    An existing database file is never opened here, only chmod-ed: closing any
    descriptor of a SQLite file drops every POSIX lock this process holds on it
    (sqlite.org/howtocorrupt.html section 2.2), so a second open_database in a
    process that already has the database open (the MLLP listener beside the
    HTTP worker) let another process's last close delete the live WAL, and
    acknowledged commits went to an unlinked file."""
    try:
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, SQLITE_FILE_MODE))
        for p in (path, path + "-wal", path + "-shm", path + ".lock"):
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(p)
                if st.st_mode & 0o077 and st.st_uid == os.geteuid():
                    os.chmod(p, SQLITE_FILE_MODE)
    except OSError as e:
        raise StorageError("HT-0050", f"cannot open database file: {type(e).__name__}") from e


def _pg_on_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.autocommit = True


def open_database(url: str | None = None, *, create: bool = True, pool_size: int = 8) -> Database:
    """Open the database at ``url``; with ``create`` (the default) check its schema
    version and create the schema of an empty database (hutong.store.migrations)."""
    url = resolve_url(url)
    try:
        u = make_url(url)
    except Exception as e:
        raise ConfigError("HT-0070", f"invalid database URL {url!r}; use sqlite:///path or postgresql://...") from e
    backend = u.get_backend_name()
    if backend == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
            _private_files(u.database)
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
    if dialect == "sqlite" and u.database:
        db._lock_path = u.database + ".lock"
    if create:
        # The schema comes from the migrations, never from a constructor: an empty
        # database is created at the head revision, an older or newer one refused
        # (hutong.store.migrations explains the rules; `hutong db upgrade`).
        from hutong.store import migrations

        try:
            migrations.check(db)
        except HutongError:
            db.close()
            raise
        except Exception as e:
            db.close()
            raise StorageError("HT-0050", f"cannot open database: {type(e).__name__}: {e}") from e
    return db
