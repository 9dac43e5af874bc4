"""A PostgreSQL hot standby for reads that tolerate slight lag (issue 18, item 2).

A streaming standby (``pg_basebackup -R``; PostgreSQL docs 27.2.5 "Streaming
Replication", 27.4 "Hot Standby") answers read-only queries while it replays
the primary's WAL.  :class:`Standby` decides, per routed read, whether the
standby may answer it, and gives the caller a Repository on the standby that
reads the same rows the primary wrote (a physical copy: the same ``pk`` for
the same row), decoded with the primary's keys.

What may come from it, and what never does (DESIGN.md "Trust model"):

- Only the clinical rows of a lag-tolerant read: the repository handed out
  here is used for the record's rows and nothing else.  Who is asking, their
  account and tokens, delegations, consents, the access basis, the MPI links
  the policy judges by, and the audit trail are read on the primary by the
  request's ``Access`` (hutong.security.policy), which every row from the
  standby still passes (each row in its primary's current version:
  :class:`StandbyRepository`), and the audit row is written on the primary.  So a
  revoked consent or a disabled account takes effect at once, however far
  the standby lags.  The standby repository carries the primary's write
  hooks (the MPI it judges patients' persons by is the primary's) and a
  write through it fails on the read-only standby.
- Only a standby of the same cluster: its ``system_identifier``
  (pg_control_system(), docs 9.27.10) must be the primary's.  A copy of
  another cluster (an old restore, a test database) numbers its rows
  differently, and rows admitted by the primary's facts for one ``pk`` would be
  another record's.
- Only a standby in recovery: a promoted one (after a failover elsewhere)
  has stopped following this primary.

Read-your-writes: the caller who just wrote remembers the primary's WAL
position after the write (:meth:`Standby.primary_position`; the web layer
keeps it in the browser's session: hutong.web.read_routing), and
:meth:`Standby.choose` uses the standby only once its replay position
(``pg_last_wal_replay_lsn()``, docs 9.27.4) has reached it.  WAL positions
are the cluster's, not a node's, so this holds whichever app node answers.

Lag: 0 when the standby has replayed everything the primary has written
(``pg_current_wal_lsn()``), else the age of the last transaction it replayed
(``now() - pg_last_xact_replay_timestamp()``).  That over-states the lag
after a long idle spell (for a moment), never under-states it.  Beyond
``max_lag_s``, or when the standby does not answer, reads go to the primary.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from hutong.errors import ConfigError, StorageError
from hutong.store.database import Database, open_database
from hutong.store.query import Query
from hutong.store.repository import Repository, SearchPage, Stored
from hutong.store.sql import SqlRepository

T = TypeVar("T")

# How long one measurement of the standby serves routed reads of this process:
# two round trips (standby, primary) a read would otherwise add.  A stale
# measurement only errs towards the primary for read-your-writes (an older
# replay position) and a read that fails on the standby is answered by the
# primary (Standby.read).
STATE_TTL_S = 0.5
DEFAULT_MAX_LAG_S = 10.0
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")

STANDBY = "standby"
_POSTGRES = ("postgresql://", "postgresql+psycopg://")
PRIMARY = "primary"


def parse_lsn(text: str | None) -> int | None:
    """A WAL position as PostgreSQL prints it (``16/B374D848``) as a number; None if it is not one."""
    if not text:
        return None
    m = _LSN.match(text.strip())
    if m is None:
        return None
    return (int(m.group(1), 16) << 32) | int(m.group(2), 16)


@dataclass(frozen=True)
class StandbyState:
    """One measurement.  ``problem`` (a stable code and words, never a host or a
    user) says why reads go to the primary; None: the standby may answer."""

    lag_s: float | None
    replay_lsn: int | None
    problem: str | None = None
    code: str | None = None

    @property
    def usable(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class Choice:
    """Where one routed read goes and why (``reason``: standby, unavailable,
    lagging, your-write), for the metrics."""

    repo: Repository
    database: str  # STANDBY | PRIMARY
    reason: str
    state: StandbyState


class Standby:
    """The hot standby of ``primary``'s PostgreSQL cluster, for lag-tolerant reads."""

    def __init__(self, primary: SqlRepository, db: Database, *, max_lag_s: float = DEFAULT_MAX_LAG_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.primary = primary
        self.db = db
        self.max_lag_s = max_lag_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state: StandbyState | None = None
        self._measured = -math.inf
        self._same_cluster = False
        self._repo: StandbyRepository | None = None

    # ------------------------------------------------------------ positions
    def primary_position(self) -> int:
        """The primary's current WAL position (after a write has committed: at or past its commit)."""
        lsn = parse_lsn(str(_scalar(self.primary.db, "SELECT pg_current_wal_lsn()::text")))
        if lsn is None:
            raise StorageError("HT-0632", "the primary did not give its WAL position")
        return lsn

    def state(self, *, fresh: bool = False) -> StandbyState:
        """The standby's state, measured at most every STATE_TTL_S (``fresh``: now)."""
        now = self._clock()
        with self._lock:
            if not fresh and self._state is not None and now - self._measured < STATE_TTL_S:
                return self._state
        st = self._measure()
        with self._lock:
            self._state, self._measured = st, self._clock()
        return st

    def forget(self) -> None:
        """A read on the standby failed: measure again before the next one."""
        with self._lock:
            self._state = None

    def _measure(self) -> StandbyState:
        try:
            if not self._same_cluster:
                mine = _scalar(self.primary.db, "SELECT system_identifier FROM pg_control_system()")
                theirs = _scalar(self.db, "SELECT system_identifier FROM pg_control_system()")
                if mine != theirs:
                    return StandbyState(None, None, "the standby is a copy of another PostgreSQL cluster "
                                                    "(system identifier differs): not used", "HT-0631")
                self._same_cluster = True
            recovering, replay, age = _row(self.db, (
                "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, "
                "EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp()))::float8"))
            if not recovering or replay is None:
                return StandbyState(None, None, "the standby is not in recovery (promoted, or not a standby): "
                                                "not used", "HT-0633")
            replayed = parse_lsn(str(replay))
            written = self.primary_position()
        except Exception as e:  # driver errors differ; the kind only (a message may name host and user)
            return StandbyState(None, None, f"the standby does not answer ({type(e).__name__})", "HT-0632")
        if replayed is None:
            return StandbyState(None, None, "the standby gave no replay position", "HT-0633")
        lag = 0.0 if replayed >= written else (max(0.0, float(age)) if age is not None else math.inf)
        if lag > self.max_lag_s:
            return StandbyState(lag, replayed, f"the standby lags {lag:.1f} s, more than "
                                               f"HUTONG_STANDBY_MAX_LAG_SECONDS ({self.max_lag_s:g})", "HT-0634")
        return StandbyState(lag, replayed)

    # ------------------------------------------------------------ routing
    def repository(self) -> StandbyRepository:
        """The Repository on the standby: the primary's indexer, codec (keys),
        blind-index protector and write hooks (so the MPI is the primary's)."""
        with self._lock:
            if self._repo is None:
                r = StandbyRepository(self.db, self.primary.indexer, codec=self.primary.codec,
                                      clock=self.primary.clock)
                r.compiler.protector = self.primary.compiler.protector
                r.hooks[:] = list(self.primary.hooks)
                r.primary = self.primary
                self._repo = r
            return self._repo

    def choose(self, written: int | None) -> Choice:
        """Where a lag-tolerant read goes: the standby when it answers, lags at
        most ``max_lag_s`` and has replayed ``written`` (the caller's last write's
        WAL position, if any); else the primary."""
        st = self.state()
        if not st.usable:
            return Choice(self.primary, PRIMARY, "lagging" if st.code == "HT-0634" else "unavailable", st)
        if written is not None and (st.replay_lsn is None or st.replay_lsn < written):
            return Choice(self.primary, PRIMARY, "your-write", st)
        try:
            repo = self.repository()
        except Exception:  # e.g. its search parameter ids not replayed yet: the primary answers
            self.forget()
            return Choice(self.primary, PRIMARY, "unavailable", st)
        return Choice(repo, STANDBY, STANDBY, st)

    def read(self, written: int | None, fn: Callable[[Repository], T],
             chosen: Callable[[Choice], None] | None = None) -> T:
        """``fn`` on the chosen database; if it fails on the standby for the
        standby's sake (connection lost, a query cancelled by replay (docs
        27.4.2), a write attempted on it), once more on the primary.  Refusals
        (Forbidden and the like) are not retried: they come from the primary."""
        choice = self.choose(written)
        if choice.database == PRIMARY:
            if chosen is not None:
                chosen(choice)
            return fn(self.primary)
        try:
            out = fn(choice.repo)
        except Exception as e:
            if not _standby_failure(e):
                raise
            self.forget()
            choice = Choice(self.primary, PRIMARY, "unavailable", choice.state)
            if chosen is not None:
                chosen(choice)
            return fn(self.primary)
        if chosen is not None:
            chosen(choice)
        return out

    def close(self) -> None:
        self.db.close()


class StandbyRepository(SqlRepository):
    """Reads on the standby whose every row is the primary's current version.

    A row's body carries facts the policy judges it by (its subject, its
    meta.security labels: hutong.security.policy ``admit``), and during the
    lag the standby may hold an older version than the primary: a record
    relabelled sensitive, moved to another patient's registration or deleted
    a moment ago.  So the rows the standby returns are checked against the
    primary's ``(pk, version, deleted)`` in one indexed query per page, and
    a row that changed since is taken from the primary (dropped when deleted
    there).  What the standby spares the primary: finding the rows (the
    compartment scan, the search) and reading the bodies of unchanged ones.
    Rows the standby has not replayed yet are simply not there (the lag).
    """

    primary: SqlRepository

    def read(self, type: str, id: str) -> Stored | None:
        s = super().read(type, id)
        if s is None:  # not replayed yet (e.g. a person the MPI made a moment ago): the primary has it
            return self.primary.read(type, id)
        now = self._current([s])
        return now[0] if now else self.primary.read(type, id)  # deleted there since: as the primary says

    def fetch(self, refs: Iterable[tuple[str, str]]) -> list[Stored]:
        return self._current(super().fetch(refs))

    def everything(self, patient_ids: list[str], *, types: tuple[str, ...] | None, since: int | None,
                   after_pk: int, count: int) -> tuple[list[Stored], bool]:
        rows, more = super().everything(patient_ids, types=types, since=since, after_pk=after_pk, count=count)
        return self._current(rows), more

    def search(self, q: Query) -> SearchPage:
        page = super().search(q)
        page.matches = self._current(page.matches)
        page.includes = self._current(page.includes)
        return page

    def _current(self, rows: list[Stored]) -> list[Stored]:
        if not rows:
            return rows
        now: dict[int, tuple[int, bool]] = {}
        pks = [s.pk for s in rows]
        with self.primary.db.connection() as conn:
            cur = conn.cursor()
            try:
                for i in range(0, len(pks), 500):
                    chunk = pks[i:i + 500]
                    cur.execute(self.primary.db.sql(
                        "SELECT pk, version, deleted FROM resource WHERE pk IN ("  # noqa: S608 (placeholders only)
                        + ",".join("?" * len(chunk)) + ")"), chunk)
                    for pk, version, deleted in cur.fetchall():
                        now[int(pk)] = (int(version), bool(deleted))
            finally:
                cur.close()
        stale = [s for s in rows if now.get(s.pk) != (s.version, s.deleted)]
        if not stale:
            return rows
        fresh = {(x.type, x.id): x for x in self.primary.fetch([(s.type, s.id) for s in stale])}
        out = []
        for s in rows:
            if now.get(s.pk) == (s.version, s.deleted):
                out.append(s)
            elif (s.type, s.id) in fresh:
                out.append(fresh[(s.type, s.id)])
        return out


def _standby_failure(e: BaseException) -> bool:
    if isinstance(e, StorageError):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover - PostgreSQL installs it
        return False
    return isinstance(e, psycopg.Error)


def _row(db: Database, sql: str) -> tuple[Any, ...]:
    with db.connection() as conn:
        cur = conn.cursor()
        try:
            cur.execute(sql)
            row = cur.fetchone()
        finally:
            cur.close()
    return tuple(row) if row is not None else ()


def _scalar(db: Database, sql: str) -> Any:
    row = _row(db, sql)
    return row[0] if row else None


def check_setting(primary_url: str, url: str, max_lag_s: float = DEFAULT_MAX_LAG_S) -> None:
    """Refuse a standby setting that cannot work, before anything is opened
    (``hutong serve`` calls it before its workers start): SQLite has no
    standby (HT-0630), the standby must be PostgreSQL, the bound positive."""
    if not primary_url.startswith(_POSTGRES):
        raise ConfigError("HT-0630", "HUTONG_STANDBY_DATABASE_URL needs PostgreSQL: SQLite has no hot standby "
                                     "(unset it, or move the database to PostgreSQL)")
    if not url.startswith(_POSTGRES):
        raise ConfigError("HT-0630", "HUTONG_STANDBY_DATABASE_URL must be a postgresql:// URL of a hot standby "
                                     "of the primary")
    if not max_lag_s > 0 or math.isinf(max_lag_s):
        raise ConfigError("HT-0635", "HUTONG_STANDBY_MAX_LAG_SECONDS must be a positive number of seconds")


def open_standby(primary: Repository, url: str, *, max_lag_s: float = DEFAULT_MAX_LAG_S) -> Standby:
    """The standby at ``url`` for ``primary``.  PostgreSQL only: SQLite has no
    standby (refused, HT-0630).  Nothing is read here: a standby that is down
    at start only sends reads to the primary until it answers."""
    if not isinstance(primary, SqlRepository):
        raise ConfigError("HT-0630", "HUTONG_STANDBY_DATABASE_URL needs the SQL store on PostgreSQL")
    check_setting(primary.db.url, url, max_lag_s)
    # create=False: the schema is the primary's (a standby cannot be written); nothing connects yet.
    return Standby(primary, open_database(url, create=False), max_lag_s=max_lag_s)
