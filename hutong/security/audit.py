"""The audit trail: every AuditRecord stored once, hash-chained, queryable.

Issue 6 (audit): every read, search, write, export, sign-in and refusal is
kept as an AuditEvent (FHIR R4 auditevent.html, rendered by
:mod:`hutong.security.auditevent`) with who, on behalf of whom, what, when,
from where, why and the outcome; kept at least 180 days; residents list who
accessed their record; auditors review break-glass accesses.  GB/T 22239-2019
level 3 (8.1.4.3 security audit) asks that audit records be protected from
unexpected deletion, modification or overwriting: here each row carries
``hash = HMAC-SHA256(chain key, prev_hash || canonical row bytes)``, so
changing, deleting or reordering any row breaks :meth:`AuditLog.verify`, and
nobody without the chain key -- which is not in the database or its
directory -- can re-hash the rows after a change (issue 12, finding 7).
Signed heads published outside the database (:mod:`hutong.security.auditheads`)
make cutting rows off the end, rebuilding the chain and planting an anchor
detectable without a hand-kept checkpoint.

Chains written before the chain key existed (plain SHA-256, "legacy") stay
readable: the first process of this release that opens such a database
appends one keyed ``audit-chain-keyed`` record naming the legacy head and
records the switch point in ``audit_chain``.  Rows before it verify as
legacy; the keyed switch record pins them (its prev_hash is the legacy head,
under the key), so they cannot be rewritten afterwards either.

Tables (on hutong.store.schema's MetaData, created by the migrations):

- ``audit_event``: one row per record.  ``seq`` is the global key (the
  person index, reviews and auditors' pages name it); ``chain`` is the node
  that wrote it ("" for a single node) and ``chain_seq`` its position in that
  chain (1, 2, 3 ...); along a chain seq increases too (both are drawn under
  the chain's lock).  Columns an auditor filters on are plain; everything else (display names,
  claimed user names, entities, the query, the break-glass reason) is one
  body blob that goes through the store codec, i.e. is encrypted at rest once
  keys are configured.
- ``audit_person``: (person_id, seq) for every golden person a record
  touched: the residents' access log ("谁看了我的档案") is an index range scan.
- ``audit_anchor``: per chain, after a retention purge, the last purged seq,
  its position and its hash; verification starts from it, and it must be the
  one the chain's newest ``audit-purge`` record (keyed, in the chain) names.
- ``audit_chain``: per chain, the position from which rows are keyed, and the
  chain key's id.
- ``audit_ledger``: each node's head every head interval, hash-chained.
- ``break_glass_review``: an auditor's verdict on a break-glass record.

Appends to one chain are serialised (SQLite: the write transaction;
PostgreSQL: a transaction advisory lock on "audit-chain", or "audit-chain:<node>"
for a node's chain; issue 18, item 2: nodes do not wait on each other) so each
chain stays linear across threads and processes; :meth:`AuditLog.record` batches concurrent callers
into one transaction (group commit) and returns only once the caller's row is
committed (:meth:`AuditLog.record_async` likewise, for the HTTP gate's event
loop).  Read requests' rows commit at SQLite ``synchronous=NORMAL``, fsynced
within a second (:meth:`hutong.store.database.Database.relaxed_durability`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
)

from hutong.errors import ConfigError, Conflict, Forbidden, InvalidRequest, NotFound
from hutong.security import audit_store
from hutong.security.audit_store import EVENT_COLS as EVENT_COLS
from hutong.security.auditchain import GENESIS as GENESIS
from hutong.security.auditchain import LOCK_KEY as LOCK_KEY
from hutong.security.auditchain import SWITCH_ACTION as SWITCH_ACTION
from hutong.security.auditchain import VERIFY_PAGE as VERIFY_PAGE
from hutong.security.auditchain import ChainVerifier, chain_lock, hash_of_row, ledger_hash
from hutong.security.auditchain import VerifyResult as VerifyResult
from hutong.security.auditchain import row_hash as row_hash
from hutong.security.auditheads import (
    AuditKeys,
    Head,
    heads_path_of,
    key_dir_of,
    read_heads,
)
from hutong.security.events import AuditRecord
from hutong.security.keycheck import audit_keys
from hutong.security.principal import LOCAL_OPERATOR, Principal, Role
from hutong.security.settings import SecuritySettings, node_id
from hutong.store.repository import Repository, Writer
from hutong.store.schema import PK, metadata

log = logging.getLogger("hutong.audit")

FLAG_BREAK_GLASS = 1
DAY_MS = 86_400_000
MIN_RETENTION_DAYS = 180    # issue 6 / 等保三级: audit records kept at least 180 days
VERDICTS = ("justified", "unjustified")
LEDGER_LOCK = "audit-ledger"   # appends to audit_ledger (once per head interval per node)
PURGE_LOCK = "audit-purge"     # one purge at a time (anchor rows of several chains)
MAX_BATCH = 256     # records per group transaction
WRITER_IDLE_S = 30.0  # record_async's writer thread ends after this long without records
# record_async's writer, when its last batch held several records (requests arrive together),
# waits up to this long for as many again before it commits: fewer, larger transactions
# (issue 17, item 4: "reads' rows group-committed with a short window").  After a batch of
# one it does not wait; the first request after a burst waits at most this long, once.
GATHER_S = 0.002
# Read-only requests (hutong.web.gate.action_of): their audit rows may commit at
# synchronous=NORMAL, fsynced within RELAXED_SYNC_S (README "Durability").
RELAXED_ACTIONS = frozenset({"read", "vread", "search", "history"})
# Called with each record's seconds from record()/record_async() to its durable
# commit, as its caller waits it (hutong.web.metrics: audit append latency; issue 18).
APPEND_OBSERVERS: list[Callable[[float], None]] = []

audit_event = Table(
    "audit_event",
    metadata,
    Column("seq", PK, primary_key=True, autoincrement=False),
    Column("time_ms", BigInteger, nullable=False),
    Column("action", String(32), nullable=False),
    Column("outcome", String(2), nullable=False),
    Column("account_id", String(128), nullable=True),
    Column("role", String(16), nullable=True),
    Column("organization", String(64), nullable=True),
    Column("on_behalf_of", String(64), nullable=True),
    Column("code", String(8), nullable=True),
    Column("peer", String(100), nullable=True),
    Column("purpose", String(32), nullable=True),
    Column("flags", SmallInteger, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("chain", String(32), nullable=False, server_default=""),   # the node's chain; "" = the single chain
    Column("chain_seq", BigInteger, nullable=True),                    # position in the chain (NULL: not ours)
    Index("ix_audit_event_time", "time_ms"),
    Index("ix_audit_event_account", "account_id", "seq"),
    Index("ix_audit_event_flags", "flags", "seq"),
    Index("ix_audit_event_chain", "chain", "seq"),
)

audit_person = Table(
    "audit_person",
    metadata,
    Column("person_id", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    PrimaryKeyConstraint("person_id", "seq", name="pk_audit_person"),
    Index("ix_audit_person_seq", "seq"),
)

audit_anchor = Table(
    "audit_anchor",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # 1 for chain ""
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("time_ms", BigInteger, nullable=False),
    Column("chain", String(32), nullable=False, server_default=""),
    Column("chain_seq", BigInteger, nullable=True),                 # NULL (rows before 0007): = seq
    Index("ux_audit_anchor_chain", "chain", unique=True),
)

audit_chain = Table(
    "audit_chain",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # 1 for chain "" (registered first)
    Column("keyed_from", BigInteger, nullable=False),               # first chain_seq hashed with the chain key
    Column("key_id", String(32), nullable=False),                   # auditheads.fingerprint of that key
    Column("time_ms", BigInteger, nullable=False),
    Column("chain", String(32), nullable=False, server_default=""),
    Index("ux_audit_chain_chain", "chain", unique=True),
)

# Every audit_head_seconds each node notes its chain's head here (issue 18, item 2):
# the ledger is the one place that names every chain's recent heads, itself
# hash-chained under the chain key, so verify can tell a chain cut below a head
# another node could see; appended under a short global lock, once per interval.
audit_ledger = Table(
    "audit_ledger",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=False),
    Column("chain", String(32), nullable=False),
    Column("chain_seq", BigInteger, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("time_ms", BigInteger, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
)

break_glass_review = Table(
    "break_glass_review",
    metadata,
    Column("seq", PK, primary_key=True, autoincrement=False),   # the reviewed audit_event
    Column("reviewer", String(128), nullable=False),
    Column("verdict", String(16), nullable=False),
    Column("note", LargeBinary, nullable=True),                 # through the codec: free text
    Column("time_ms", BigInteger, nullable=False),
    Column("review_seq", BigInteger, nullable=False),           # the audit record of the review itself
)

TABLES = (audit_event, audit_person, audit_anchor, audit_chain, audit_ledger, break_glass_review)



# The rows are read and written by hutong.security.audit_store (the one
# data-access module of the audit trail); this module keeps the chain's rules.

# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One stored record, decrypted (what auditors and the renderer see)."""

    seq: int
    time_ms: int
    action: str
    outcome: str
    account_id: str | None
    role: str | None
    organization: str | None
    on_behalf_of: str | None
    code: str | None
    peer: str | None
    purpose: str | None
    flags: int
    display: str | None = None
    claimed: str | None = None
    persons: tuple[str, ...] = ()
    entities: tuple[str, ...] = ()
    interaction: str = ""
    query: str | None = None
    reason: str | None = None
    actor_persons: tuple[str, ...] = ()   # the principal's own persons (resident: self; delegate: principals)
    organization_id: str | None = None
    practitioner_id: str | None = None
    practitioner_role_id: str | None = None
    client_id: str | None = None
    token_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def break_glass(self) -> bool:
        return bool(self.flags & FLAG_BREAK_GLASS)

    def to_json(self, *, with_query: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        d["persons"] = list(self.persons)
        d["entities"] = list(self.entities)
        d["actor_persons"] = list(self.actor_persons)
        d["break_glass"] = self.break_glass
        if not with_query:
            d.pop("query")
        return {k: v for k, v in d.items() if v not in (None, "", [], {})}


@dataclass(frozen=True, slots=True)
class AccessEntry:
    """One line of a resident's access log: who looked, when, why, with what outcome."""

    seq: int
    time_ms: int
    who: str                    # display name (a person's or a system's name), else the account id
    account_id: str | None
    role: str | None
    organization: str | None
    action: str
    purpose: str | None
    break_glass: bool
    reason: str | None          # shown to the resident for break-glass only (issue 6: "the resident is told")
    outcome: str
    relation: str | None        # "self" (the resident), "delegate" (a family delegate), None (anyone else)
    persons: tuple[str, ...]    # which of the asked-for persons the record touched
    # What the residents' grouped log needs (issue 16, item 4; hutong.web.ui.access_log):
    # the resource type of each entity touched (in order; never ids), the access token's
    # id (one sign-in's accesses go together), the error code of a refused or failed
    # attempt (to say why in words) and the route (GET .../$everything).
    kinds: tuple[str, ...] = ()
    session: str | None = None
    code: str | None = None
    interaction: str = ""

    def to_json(self) -> dict[str, Any]:
        from hutong.store.sql import instant

        return {"seq": self.seq, "time": instant(self.time_ms), "who": self.who, "account": self.account_id,
                "role": self.role, "organization": self.organization, "action": self.action,
                "purpose": self.purpose, "break_glass": self.break_glass, "reason": self.reason,
                "outcome": self.outcome, "relation": self.relation, "persons": list(self.persons)}


@dataclass(frozen=True, slots=True)
class PurgeResult:
    rows: int                 # rows deleted (or that would be, on a dry run)
    through_seq: int | None   # the new anchor
    cutoff_ms: int
    dry_run: bool
    chains: dict[str, int] = field(default_factory=dict)   # rows per chain, when several were purged

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"rows": self.rows, "through_seq": self.through_seq, "cutoff_ms": self.cutoff_ms,
                             "dry_run": self.dry_run}
        if self.chains:
            d["chains"] = self.chains
        return d


@dataclass(frozen=True, slots=True)
class Review:
    seq: int
    reviewer: str
    verdict: str
    note: str | None
    time_ms: int
    review_seq: int

    def to_json(self) -> dict[str, Any]:
        from hutong.store.sql import instant

        return {"seq": self.seq, "reviewer": self.reviewer, "verdict": self.verdict, "note": self.note,
                "time": instant(self.time_ms), "review_seq": self.review_seq}


@dataclass(frozen=True, slots=True)
class BreakGlassItem:
    entry: AuditEntry
    review: Review | None


def _body_of(rec: AuditRecord) -> dict[str, Any]:
    p = rec.principal
    d: dict[str, Any] = {
        "display": p.display if p else None,
        "claimed": rec.claimed,
        "persons": sorted(set(rec.persons)),
        "entities": list(rec.entities),
        "interaction": rec.interaction,
        "query": rec.query,
        "reason": rec.reason,
        "actor_persons": list(p.persons) if p else [],
        "organization_id": p.organization_id if p else None,
        "practitioner_id": p.practitioner_id if p else None,
        "practitioner_role_id": p.practitioner_role_id if p else None,
        "client_id": p.client_id if p else None,
        "token_id": p.token_id if p else None,
        "extra": dict(rec.extra),
    }
    return {k: v for k, v in d.items() if v not in (None, "", [], {})}


def _is_break_glass(rec: AuditRecord) -> bool:
    return rec.purpose == "break-glass" or rec.action == "break-glass"


class _Batcher:
    """Leader/follower queue (group commit): one caller at a time (the leader)
    takes every record queued so far and appends them in one transaction --
    one COMMIT, one WAL fsync -- then hands each caller its seq.  Nobody is
    answered before their record is committed.

    Followers sleep on their own event, not on a leader lock: with a shared
    lock every follower of a committed batch had to take the lock in turn
    just to see it was done, and a newly arrived caller often won the lock
    first and committed its record alone (measured, issue 13: 813 of 1,503
    batches held one record at 16 clients).  Here the leader, once its batch
    is committed, wakes that batch's callers and hands the lead to the
    oldest waiting caller, who takes everything queued during the commit.

    Unlike GroupCommit there is no savepoint per item: a batch is a handful
    of statements whatever its size (one multi-row INSERT per table).  If the
    batch fails, each of its records is retried alone, so one bad record
    fails only its own caller.
    """

    def __init__(self, run: Callable[[list[AuditRecord]], list[int]]) -> None:
        self._run = run
        self._queue: deque[tuple[AuditRecord, Future[int], threading.Event]] = deque()
        self._queue_lock = threading.Lock()
        self._busy = False          # a leader is committing; invariant: not busy => queue empty
        self.batches = 0            # committed batches and records (for benchmarks: mean batch size)
        self.records = 0

    def submit(self, rec: AuditRecord) -> int:
        fut: Future[int] = Future()
        wake = threading.Event()
        with self._queue_lock:
            self._queue.append((rec, fut, wake))
            lead = not self._busy
            self._busy = True
        if not lead:
            wake.wait()             # set when our record is committed, or when the lead is handed to us
        if not fut.done():
            self._lead()
        return fut.result()

    def _lead(self) -> None:
        with self._queue_lock:
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_BATCH))]
        try:
            self._commit([(r, f) for r, f, _w in batch])
            self.batches += 1
            self.records += len(batch)
        finally:
            for _r, f, w in batch:
                if not f.done():    # interrupted (BaseException) mid-batch: nobody waits forever
                    f.set_exception(RuntimeError("audit batch interrupted"))
                w.set()
            with self._queue_lock:
                if self._queue:
                    self._queue[0][2].set()  # the oldest waiter leads next (busy stays set)
                else:
                    self._busy = False

    def _commit(self, batch: list[tuple[AuditRecord, Future[int]]]) -> None:
        try:
            seqs = self._run([r for r, _f in batch])
        except Exception as e:
            if len(batch) == 1:
                batch[0][1].set_exception(e)
                return
            for one in batch:
                self._commit([one])
            return
        except BaseException as e:
            for _r, f in batch:
                f.set_exception(e)
            raise
        for (_r, f), seq in zip(batch, seqs, strict=True):
            f.set_result(seq)


def _settle(af: asyncio.Future[int], f: Future[int]) -> None:
    """Hand a committed (or failed) record's outcome to its waiting coroutine."""
    if af.cancelled():
        return
    e = f.exception()
    if e is not None:
        af.set_exception(e)
    else:
        af.set_result(f.result())


# --------------------------------------------------------------------------- the log


class AuditLog:
    """Append, verify, purge and query the audit trail of one database.

    Each node appends to its own chain (``settings.node_id``; issue 18, item 2):
    its appends take that chain's lock only, so nodes on one PostgreSQL do not
    wait on each other's audited requests.  Node id "" is the one chain of a
    single-node deployment and of every database written before there were
    several chains.  :meth:`verify` checks every chain.
    """

    def __init__(self, repo: Repository, clock: Callable[[], int] | None = None,
                 settings: SecuritySettings | None = None, keys: AuditKeys | None = None) -> None:
        self.repo = repo
        self.clock = clock or repo.clock
        self.settings = settings or SecuritySettings.from_env()
        self.chain = node_id(self.settings.node_id)   # settings made in code are checked too (HT-0149)
        # The chain key and head-signing key: the one seam to the key directory
        # (outside the database directory: hutong.security.keys.default_key_dir).
        if keys is None:
            kd = key_dir_of(repo, settings)
            # The keys the database records (issue 18, item 2): a key directory that is not a copy of
            # the other nodes' is refused (HT-0636/0638/0639) before it keys a chain or appends a row.
            keys = audit_keys(repo.db, kd, heads_path_of(kd, settings), self.clock())
        self.keys = keys
        self._batcher = _Batcher(self._commit_batch)
        # record_async: callers on an event loop (the HTTP gate) queue here for
        # one writer thread instead of each taking a threadpool thread.
        self._pending: deque[tuple[AuditRecord, asyncio.AbstractEventLoop, asyncio.Future[int]]] = deque()
        self._pending_cv = threading.Condition()
        self._writer: threading.Thread | None = None
        self._last_batch = 1                    # records in record_async's last batch (GATHER_S)
        self._published_at = time.monotonic()   # the first head after one interval (not on every CLI command)
        self._publish_lock = threading.Lock()
        self._several = False                   # seen a node chain registered (PostgreSQL: number from audit_seq)
        self._ensure_keyed()

    # ------------------------------------------------------------- the chain key
    def _ensure_keyed(self) -> None:
        """Record where the keyed chain starts, once per database and chain.

        An empty chain is keyed from position 1.  A chain "" whose newest row
        verifies as legacy (unkeyed SHA-256) gets a keyed ``audit-chain-keyed``
        record naming the legacy head, and the switch point is that record's
        position -- but only while no head has been published from this key
        directory: once one has, the chain was keyed, and a chain that looks
        legacy now was rewritten (``audit_chain`` deleted and every row
        re-hashed without the key); it is left as it is and :meth:`verify`
        reports it.  A node's chain (never legacy) is registered keyed from 1,
        after chain "" (whose lock every registration takes: on PostgreSQL the
        first node chain moves ``audit_seq`` past the seqs chain "" numbered
        itself).  Either way a head is published at once, so the switch point
        and the chain's existence are on record outside the database.
        """
        made: list[tuple[str, int, int, str, int]] = []   # chain, seq, chain_seq, hash, keyed_from
        if audit_store.chain_row_now(self.repo) is None:
            made += self._key_single_chain()
        mine = self.chain
        if mine and audit_store.chain_row_now(self.repo, mine) is None:
            def register(w: Writer) -> None:
                w.lock_key(LOCK_KEY)
                if audit_store.chain_row_in(w, mine) is not None:
                    return
                if self.repo.db.dialect == "postgresql" and not audit_store.several_chains(w):
                    audit_store.start_sequence(w)
                audit_store.set_chain(w, 1, self.keys.chain_key_id, self.clock(), mine)
                made.append((mine, 0, 0, GENESIS, 1))

            self.repo.transact(register)
        for chain, seq, cs, h, keyed_from in made:
            try:
                self.keys.publish(self.keys.sign(seq, h, keyed_from, self.clock(), chain=chain, chain_seq=cs))
            except OSError as e:
                log.error("audit head not published: %s", type(e).__name__)

    def _key_single_chain(self) -> list[tuple[str, int, int, str, int]]:
        try:
            published = any(h is not None and not h.chain for _n, h in read_heads(self.keys.heads))
        except ConfigError:
            published = True
        made: list[tuple[str, int, int, str, int]] = []

        def go(w: Writer) -> None:
            w.lock_key(LOCK_KEY)
            if audit_store.chain_row_in(w) is not None:
                return
            now = self.clock()
            r = audit_store.newest_event(w)
            if r is None and not audit_store.anchored(w):
                audit_store.set_chain(w, 1, self.keys.chain_key_id, now)
                made.append(("", 0, 0, GENESIS, 1))
                return
            if r is None or hash_of_row(r, None) != str(r[14]) or published:
                log.error("the audit_chain row is missing from a keyed audit chain; hutong audit verify reports it")
                return
            switch = (int(r[0]) if r[16] is None else int(r[16])) + 1
            audit_store.set_chain(w, switch, self.keys.chain_key_id, now)
            done = self._append(w, [AuditRecord(action=SWITCH_ACTION, principal=LOCAL_OPERATOR, purpose="audit",
                                                time_ms=now, extra={"legacy_through": str(switch - 1),
                                                                    "legacy_head": str(r[14])})], chain="")
            made.append(("", *done[0], switch))

        self.repo.transact(go)
        return made

    # ------------------------------------------------------------- append
    def record(self, rec: AuditRecord) -> int:
        """Store ``rec``; returns its seq once it is committed (durable before the caller answers).

        Concurrent callers share one transaction (see :class:`_Batcher`).
        """
        t0 = time.perf_counter()
        seq = self._batcher.submit(rec)
        for observe in APPEND_OBSERVERS:
            observe(time.perf_counter() - t0)
        return seq

    async def record_async(self, rec: AuditRecord) -> int:
        """:meth:`record` for a caller on an event loop: returns once ``rec`` is committed.

        One writer thread per log takes everything queued since its last commit
        and appends it in one transaction (the same rules as :class:`_Batcher`:
        a failed batch is retried record by record).  Measured (issue 13): handing
        each request's record to the threadpool and waking it again was a
        visible part of an authenticated read's cost.
        """
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        fut: asyncio.Future[int] = loop.create_future()
        with self._pending_cv:
            self._pending.append((rec, loop, fut))
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="audit-writer", daemon=True)
                self._writer.start()
            self._pending_cv.notify()
        seq = await fut
        for observe in APPEND_OBSERVERS:
            observe(time.perf_counter() - t0)
        return seq

    def _write_loop(self) -> None:
        while True:
            with self._pending_cv:
                if not self._pending and not self._pending_cv.wait_for(lambda: bool(self._pending), WRITER_IDLE_S):
                    self._writer = None  # idle: the next record_async starts another
                    return
                want = min(self._last_batch, MAX_BATCH)
                if want > 1 and len(self._pending) < want:
                    self._pending_cv.wait_for(functools.partial(self._gathered, want), GATHER_S)
                batch = [self._pending.popleft() for _ in range(min(len(self._pending), MAX_BATCH))]
                self._last_batch = len(batch)
            done: list[Future[int]] = [Future() for _ in batch]
            try:
                self._batcher._commit([(rec, f) for (rec, _l, _a), f in zip(batch, done, strict=True)])
            except BaseException as e:  # noqa: BLE001 -- the thread must live on; every caller hears of it
                for f in done:
                    if not f.done():
                        f.set_exception(e if isinstance(e, Exception) else RuntimeError("audit writer interrupted"))
            for (_r, loop, af), f in zip(batch, done, strict=True):
                with contextlib.suppress(RuntimeError):  # the caller's loop has closed: nobody waits
                    loop.call_soon_threadsafe(_settle, af, f)

    def _gathered(self, want: int) -> bool:
        """At least ``want`` records wait for the writer (called under ``_pending_cv``)."""
        return len(self._pending) >= want

    def _commit_batch(self, recs: list[AuditRecord]) -> list[int]:
        # A batch of read requests' rows only commits at synchronous=NORMAL
        # (Database.relaxed_durability): committed before any answer leaves, fsynced
        # within a second.  Anything else -- a write's row, a refusal, a sign-in, a
        # break-glass claim -- commits FULL, and so syncs the relaxed rows before it.
        relaxed = all(r.action in RELAXED_ACTIONS and not _is_break_glass(r) for r in recs)
        with self.repo.db.relaxed_durability() if relaxed else contextlib.nullcontext(), \
                self.repo.write() as w:
            done = self._append(w, recs)
        # Committed: a head may now name the last of them.
        if time.monotonic() - self._published_at >= self.settings.audit_head_seconds:
            self._publish_after_commit(*done[-1])
        return [seq for seq, _cs, _h in done]

    # ------------------------------------------------------------- heads
    def _publish_after_commit(self, seq: int, chain_seq: int, hash: str) -> None:
        if not self._publish_lock.acquire(blocking=False):
            return  # another thread is publishing
        try:
            self._published_at = time.monotonic()
            # A head names a seq; a power cut must not take that row (relaxed read rows).
            self.repo.db.sync_relaxed()
            self.keys.publish(self.keys.sign(seq, hash, self._keyed_from(), self.clock(), chain=self.chain,
                                             chain_seq=chain_seq))
            self._note_in_ledger(seq, chain_seq, hash)
        except Exception as e:  # the records are committed; a missed head only widens the window
            log.error("audit head not published: %s", type(e).__name__)
        finally:
            self._publish_lock.release()

    def _keyed_from(self, chain: str | None = None) -> int:
        row = audit_store.chain_row_now(self.repo, self.chain if chain is None else chain)
        return row[0] if row is not None else 1

    def _note_in_ledger(self, seq: int, chain_seq: int, hash: str) -> None:
        """Append this chain's head to the shared ledger (a short global lock, once per
        head interval per node: it never waits on another node's requests)."""
        if seq == 0:
            return

        def go(w: Writer) -> None:
            w.lock_key(LEDGER_LOCK)
            last_id, prev = audit_store.ledger_head_in(w) or (0, GENESIS)
            now = self.clock()
            eh = ledger_hash(self.keys.chain_key, prev, last_id + 1, self.chain, chain_seq, seq, hash, now)
            audit_store.ledger_append(w, (last_id + 1, self.chain, chain_seq, seq, hash, now, prev, eh))

        self.repo.transact(go)

    def publish_head(self) -> Head:
        """Sign this node's chain's current head (newest committed row), append it
        to the heads file and note it in the shared ledger."""
        seq, cs, h = audit_store.head(self.repo, self.chain) or (0, 0, GENESIS)
        head = self.keys.sign(seq, h, self._keyed_from(), self.clock(), chain=self.chain, chain_seq=cs)
        self.keys.publish(head)
        self._note_in_ledger(seq, cs, h)
        self._published_at = time.monotonic()
        return head

    def heads(self, path: Path | None = None) -> list[Head | None]:
        """The published heads (None for a malformed line), oldest first."""
        return [h for _n, h in read_heads(path or self.keys.heads)]

    def publish_if_due(self) -> None:
        """After committing rows appended with :meth:`record_in` (the MLLP listener's
        messages, issue 17): a signed head once per ``audit_head_seconds``, as
        :meth:`record` does after its batches.  Never raises: the rows are committed."""
        if time.monotonic() - self._published_at < self.settings.audit_head_seconds:
            return
        try:
            head = audit_store.head(self.repo, self.chain)
        except Exception as e:  # a missed head only widens the window
            log.error("audit head not published: %s", type(e).__name__)
            return
        if head is not None:
            self._publish_after_commit(*head)

    def record_in(self, w: Writer, rec: AuditRecord) -> int:
        """Append ``rec`` inside the open write transaction ``w`` (it commits or
        rolls back with the caller's write).  Holds this node's chain lock until then."""
        return self.append_in(w, [rec])[0]

    def append_in(self, w: Writer, recs: Sequence[AuditRecord]) -> list[int]:
        """Append ``recs`` in order inside ``w``; their seqs."""
        return [seq for seq, _cs, _h in self._append(w, recs)]

    def _from_sequence(self, chain: str) -> bool | None:
        """How :func:`audit_store.next_seqs` numbers rows: from ``audit_seq``
        (PostgreSQL, once any node chain exists), else MAX(seq) + 1 (SQLite's one
        writer; PostgreSQL's single chain, whose lock every writer then takes:
        seqs stay 1, 2, 3 ... as before); None: PostgreSQL's chain "" asks."""
        if self.repo.db.dialect != "postgresql":
            return False
        return True if chain or self._several else None

    def _append(self, w: Writer, recs: Sequence[AuditRecord], chain: str | None = None) -> list[tuple[int, int, str]]:
        """(seq, chain_seq, hash) of each of ``recs`` appended to ``chain`` (this node's by default)."""
        if not recs:
            return []
        chain = self.chain if chain is None else chain
        # Read the head on every call, never cache it across calls: a savepoint
        # rolled back after an append (the caller's write failed) must not
        # leave a stale head behind.
        from_sequence = self._from_sequence(chain)
        if from_sequence:  # PostgreSQL, numbered from audit_seq: lock, head and seqs in one flight
            head, seqs = audit_store.locked_head_and_seqs(w, chain, chain_lock(chain), len(recs))
            self._several = True
        else:
            w.lock_key(chain_lock(chain))
            head = audit_store.head_in(w, chain)
            seqs, self._several = audit_store.next_seqs(w, len(recs), from_sequence)
        _seq, cs, prev = head or (0, 0, GENESIS)
        events: list[tuple[Any, ...]] = []
        people: list[tuple[str, int]] = []
        now = self.clock()
        for rec, seq in zip(recs, seqs, strict=True):
            cs += 1
            p = rec.principal
            time_ms = rec.time_ms if rec.time_ms is not None else now
            flags = FLAG_BREAK_GLASS if _is_break_glass(rec) else 0
            body = self.repo.codec.encode(orjson.dumps(_body_of(rec)))
            peer = rec.peer or (p.peer if p else None)
            cols = (seq, time_ms, rec.action[:32], rec.outcome, p.account_id if p else None,
                    str(p.role) if p else None, p.organization if p else None, rec.on_behalf_of, rec.code,
                    peer[:100] if peer else None, rec.purpose, flags)
            h = row_hash(prev, *cols, body, key=self.keys.chain_key, chain=chain, chain_seq=cs)
            events.append((*cols, body, prev, h, chain, cs))
            people += [(pid, seq) for pid in sorted(set(rec.persons))]
            prev = h
        audit_store.append(w, events, people)
        return [(int(e[0]), int(e[16]), str(e[14])) for e in events]

    # ------------------------------------------------------------- verify
    def verify(self, checkpoint: tuple[int, str] | None = None, *, from_checkpoint: bool = False,
               heads: Path | None = None) -> VerifyResult:
        """Recompute every chain from its anchor (or its start) to its head, in one
        snapshot, and check each against every published head and the ledger.

        Detected without anything kept by hand: an edited, inserted, reordered
        or deleted row (keyed hashes: nobody without the chain key can re-hash);
        a row moved to another chain, or a chain planted (a node chain's hashes
        cover its name and each row's position); rows cut off the end or a chain
        rebuilt from scratch (a signed head or a ledger entry names a seq the
        chain no longer has, or a different hash there); the oldest rows
        deleted and an anchor planted (the anchor must be the one the chain's
        newest ``audit-purge`` record names); a moved legacy switch point.

        ``heads``: a heads file to check against instead of the configured one
        (e.g. the copy shipped elsewhere).  ``checkpoint``: a (seq, hash) noted
        earlier; it must still be in its chain unless purged since.
        ``from_checkpoint``: check only that chain's rows after it (a daily run
        then costs the day's records of that chain, not the whole retention period's).

        The result's top-level figures are this node's chain's (rows and heads:
        all chains'); with several chains, ``chains`` holds each one's result.
        """
        try:
            published = list(read_heads(heads or self.keys.heads))
        except ConfigError as e:
            return VerifyResult(False, 0, None, e.message)
        with audit_store.snapshot(self.repo) as snap:
            return ChainVerifier(self.keys, self.repo.codec, self.chain).run(snap, checkpoint, from_checkpoint,
                                                                             published)

    # ------------------------------------------------------------- retention
    def retention_cutoff(self, now: int | None = None) -> int:
        """Epoch ms before which records may be purged under the retention setting."""
        now = self.clock() if now is None else now
        return now - self.settings.audit_retention_days * DAY_MS

    def purge(self, older_than_ms: int | None = None, *, by: Principal = LOCAL_OPERATOR,
              dry_run: bool = False) -> PurgeResult:
        """Delete each chain's oldest records (a prefix of the chain, all older
        than the cutoff) and keep it verifiable through its anchor row.

        The cutoff may not be later than the retention setting allows
        (HT-0147).  Refused when the trail does not verify (HT-0148): purging
        would destroy the evidence.  The purge of each chain is audited in that
        chain (its newest audit-purge record names its anchor).
        """
        limit = self.retention_cutoff()
        cutoff = limit if older_than_ms is None else older_than_ms
        if cutoff > limit:
            raise InvalidRequest("HT-0147", f"records younger than {self.settings.audit_retention_days} days "
                                            "are kept (audit retention)")
        v = self.verify()
        if not v.ok:
            raise Conflict("HT-0148", f"audit chain does not verify ({v.reason}); purge refused")
        names = [c.chain for c in v.chains] if v.chains else [self.chain]

        def go(w: Writer, chain: str) -> tuple[int, int | None]:
            w.lock_key(PURGE_LOCK)
            w.lock_key(chain_lock(chain))
            last, n = audit_store.prefix_before(w, cutoff, chain)
            if n == 0 or dry_run:
                return n, last if n else None
            now = self.clock()
            h, cs = audit_store.cut_prefix(w, last, now, chain)
            extra = {"through_seq": str(last), "through_hash": h, "rows": str(n), "cutoff_ms": str(cutoff),
                     "through_chain_seq": str(cs)}
            self._append(w, [AuditRecord(action="audit-purge", principal=by, purpose="audit", time_ms=now,
                                         extra=extra)], chain=chain)
            return n, last

        done: dict[str, tuple[int, int | None]] = {}
        for name in names:
            done[name] = self.repo.transact(partial(go, chain=name))
        mine = done.get(self.chain, (0, None))
        if not mine[0]:
            mine = next((d for d in done.values() if d[0]), mine)
        per_chain = {c: n for c, (n, _l) in done.items() if n} if len(done) > 1 else {}
        return PurgeResult(sum(n for n, _l in done.values()), mine[1], cutoff, dry_run, per_chain)

    # ------------------------------------------------------------- queries
    def _entry(self, r: Sequence[Any]) -> AuditEntry:
        b = orjson.loads(self.repo.codec.decode(bytes(r[12])))
        return AuditEntry(
            seq=int(r[0]), time_ms=int(r[1]), action=r[2], outcome=r[3], account_id=r[4], role=r[5],
            organization=r[6], on_behalf_of=r[7], code=r[8], peer=r[9], purpose=r[10], flags=int(r[11]),
            display=b.get("display"), claimed=b.get("claimed"), persons=tuple(b.get("persons", ())),
            entities=tuple(b.get("entities", ())), interaction=b.get("interaction", ""), query=b.get("query"),
            reason=b.get("reason"), actor_persons=tuple(b.get("actor_persons", ())),
            organization_id=b.get("organization_id"), practitioner_id=b.get("practitioner_id"),
            practitioner_role_id=b.get("practitioner_role_id"), client_id=b.get("client_id"),
            token_id=b.get("token_id"), extra=dict(b.get("extra", {})),
        )

    def get(self, seq: int) -> AuditEntry | None:
        row = audit_store.event(self.repo, seq)
        return self._entry(row) if row is not None else None

    def search(self, *, account: str | None = None, person: str | None = None, action: str | None = None,
               outcome: str | None = None, since: int | None = None, until: int | None = None,
               purpose: str | None = None, limit: int = 50, after_seq: int | None = None) -> list[AuditEntry]:
        """Auditors' search, newest first.  ``after_seq``: the last seq of the
        previous page (the next page holds older records); ``until`` is exclusive."""
        equals = {col: val for col, val in (("account_id", account), ("action", action), ("outcome", outcome),
                                            ("purpose", purpose)) if val is not None}
        rows = audit_store.events(self.repo, equals=equals, persons=None if person is None else [person],
                                  since=since, until=until, after_seq=after_seq, limit=limit)
        return [self._entry(r) for r in rows]

    def access_log(self, person_ids: Sequence[str], since: int | None = None, until: int | None = None,
                   limit: int = 50, after_seq: int | None = None) -> list[AccessEntry]:
        """Everything recorded about these persons' records, newest first, for
        the residents themselves: everyone's accesses, their own and their
        delegates' included (marked by ``relation``)."""
        ids = sorted(set(person_ids))
        if not ids:
            return []
        out = []
        rows = audit_store.events(self.repo, persons=ids, since=since, until=until, after_seq=after_seq, limit=limit)
        for e in (self._entry(r) for r in rows):
            relation = None
            if e.role == Role.RESIDENT and set(e.actor_persons) & set(e.persons):
                relation = "self"
            elif e.role == Role.DELEGATE:
                relation = "delegate"
            out.append(AccessEntry(
                seq=e.seq, time_ms=e.time_ms, who=e.display or e.account_id or "(unknown)",
                account_id=e.account_id, role=e.role, organization=e.organization, action=e.action,
                purpose=e.purpose, break_glass=e.break_glass, reason=e.reason if e.break_glass else None,
                outcome=e.outcome, relation=relation, persons=tuple(p for p in e.persons if p in ids),
                kinds=tuple(x.split("/", 1)[0] for x in e.entities if "/" in x), session=e.token_id,
                code=e.code, interaction=e.interaction))
        return out

    # ------------------------------------------------------------- break-glass review
    def _review(self, r: Sequence[Any]) -> Review:
        note = self.repo.codec.decode(bytes(r[3])).decode() if r[3] is not None else None
        return Review(int(r[0]), r[1], r[2], note, int(r[4]), int(r[5]))

    def break_glass_list(self, reviewed: bool | None = None, *, limit: int = 100,
                         after_seq: int | None = None) -> list[BreakGlassItem]:
        """Break-glass records with their review, newest first (``reviewed``:
        True only reviewed, False only awaiting review, None both)."""
        return [BreakGlassItem(self._entry(r[:15]), self._review(r[15:]) if r[15] is not None else None)
                for r in audit_store.break_glass_rows(self.repo, reviewed, after_seq, limit)]

    def review_break_glass(self, seq: int, reviewer: Principal | str, verdict: str, note: str = "") -> Review:
        """An auditor's verdict on break-glass record ``seq``; the review is itself
        audited (action ``break-glass-review``) in the same transaction."""
        if verdict not in VERDICTS:
            raise InvalidRequest("HT-0143", f"verdict must be one of {', '.join(VERDICTS)}")
        who = reviewer if isinstance(reviewer, Principal) else Principal(account_id=reviewer, role=Role.AUDITOR)
        if who.role != Role.AUDITOR and who is not LOCAL_OPERATOR:
            raise Forbidden("HT-0104", "only auditors review break-glass accesses")
        note = note[:2000]

        def go(w: Writer) -> Review:
            flags = audit_store.flags_of(w, seq)
            if flags is None:
                raise NotFound("HT-0141", f"no audit record {seq}")
            if not flags & FLAG_BREAK_GLASS:
                raise InvalidRequest("HT-0142", f"audit record {seq} is not a break-glass access")
            if audit_store.is_reviewed(w, seq):
                raise Conflict("HT-0144", f"audit record {seq} has been reviewed already")
            now = self.clock()
            rseq = self.record_in(w, AuditRecord(
                action="break-glass-review", principal=who, purpose="audit", entities=(f"AuditEvent/{seq}",),
                reason=note or None, time_ms=now, extra={"verdict": verdict, "reviewed_seq": str(seq)}))
            audit_store.add_review(w, seq, who.account_id, verdict,
                                   self.repo.codec.encode(note.encode()) if note else None, now, rseq)
            return Review(seq, who.account_id, verdict, note or None, now, rseq)

        return self.repo.transact(go)
