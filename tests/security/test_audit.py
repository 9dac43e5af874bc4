"""The audit trail (issue 6): chain, tampering, concurrency, retention, access log, break-glass review.

Every test runs on SQLite and PostgreSQL (``db_url``), except the one that
reads the raw SQLite file.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hutong.errors import Conflict, Forbidden, InvalidRequest, NotFound
from hutong.fhir.registry import FhirIndexer
from hutong.security.audit import DAY_MS, AuditLog
from hutong.security.events import REFUSED, SUCCESS, AuditRecord
from hutong.security.principal import Principal, Role
from hutong.security.settings import SecuritySettings
from hutong.store.database import open_database
from hutong.store.sql import SqlRepository

AUDIT_TABLES = ("audit_person", "break_glass_review", "audit_anchor", "audit_event")
T0 = 1_780_000_000_000  # a fixed "now" (2026)

DOCTOR = Principal(account_id="acc-doc-1", role=Role.CLINICIAN, display="王医生", organization="H001",
                   peer="10.0.0.5")
DOCTOR2 = Principal(account_id="acc-doc-2", role=Role.CLINICIAN, display="李医生", organization="H002")
RESIDENT_A = Principal(account_id="acc-res-a", role=Role.RESIDENT, display="张三", persons=("mpi-a",))
DELEGATE = Principal(account_id="acc-del-1", role=Role.DELEGATE, display="张小三", persons=("mpi-a", "mpi-c"))
AUDITOR = Principal(account_id="acc-aud-1", role=Role.AUDITOR, display="审计员")


def clear_audit(repo: SqlRepository) -> None:
    """The PostgreSQL harness empties the store's tables between tests, not these."""
    with repo.db.connection() as conn:
        cur = conn.cursor()
        for t in AUDIT_TABLES:
            cur.execute(f"DELETE FROM {t}")  # noqa: S608


def sql(repo: SqlRepository, statement: str, args: tuple[Any, ...] = ()) -> None:
    """Direct SQL, around the AuditLog: what an attacker with database access does."""
    with repo.db.connection() as conn:
        conn.cursor().execute(repo.db.sql(statement), args)


class Clock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def audit(repo: SqlRepository, clock: Clock) -> AuditLog:
    log = AuditLog(repo, clock=clock, settings=SecuritySettings(audit_retention_days=180))
    clear_audit(repo)
    return log


def read(persons: tuple[str, ...], who: Principal = DOCTOR, **kw: Any) -> AuditRecord:
    kw.setdefault("purpose", "treatment")
    return AuditRecord(action="read", principal=who, persons=persons, entities=tuple(f"Patient/{p}" for p in persons),
                       interaction="GET /fhir/Patient/{id}", **kw)


def fill(audit: AuditLog, n: int) -> list[int]:
    return [audit.record(read((f"mpi-{i % 3}",), time_ms=T0 + i)) for i in range(n)]


# --------------------------------------------------------------------------- append and read back


def test_record_round_trip(audit: AuditLog) -> None:
    s1 = audit.record(AuditRecord(action="search", principal=DOCTOR, persons=("mpi-b", "mpi-a", "mpi-a"),
                                  entities=("Observation/o1",), interaction="GET /fhir/Observation",
                                  query="patient=mpi-a&code=1234-5", purpose="treatment"))
    s2 = audit.record(AuditRecord(action="login", outcome=REFUSED, claimed="someone", code="HT-0127",
                                  peer="192.0.2.7"))
    assert (s1, s2) == (1, 2)
    e = audit.get(1)
    assert e is not None
    assert (e.action, e.outcome, e.account_id, e.role, e.organization, e.display) == \
        ("search", SUCCESS, "acc-doc-1", "clinician", "H001", "王医生")
    assert e.persons == ("mpi-a", "mpi-b")  # deduplicated, sorted
    assert e.query == "patient=mpi-a&code=1234-5"
    assert e.peer == "10.0.0.5"  # the principal's address when the record has none
    assert e.time_ms == T0 and not e.break_glass
    f = audit.get(2)
    assert f is not None and f.account_id is None and f.claimed == "someone" and f.code == "HT-0127"
    assert audit.get(3) is None
    v = audit.verify()
    assert v.ok and v.rows == 2 and v.head_seq == 2 and v.first_seq == 1


def test_empty_log_verifies(audit: AuditLog) -> None:
    v = audit.verify()
    assert v.ok and v.rows == 0


# --------------------------------------------------------------------------- tampering


def test_edited_column_is_detected(audit: AuditLog, repo: SqlRepository) -> None:
    fill(audit, 6)
    sql(repo, "UPDATE audit_event SET outcome = '4' WHERE seq = 4")
    v = audit.verify()
    assert not v.ok and v.bad_seq == 4 and v.reason == "hash mismatch at seq 4" and v.rows == 3


def test_edited_body_is_detected(audit: AuditLog, repo: SqlRepository) -> None:
    fill(audit, 5)
    other = repo.query("SELECT body FROM audit_event WHERE seq = 5")[0][0]
    sql(repo, "UPDATE audit_event SET body = ? WHERE seq = 2", (bytes(other),))
    v = audit.verify()
    assert not v.ok and v.bad_seq == 2 and v.reason == "hash mismatch at seq 2"


def test_edited_row_with_recomputed_hash_breaks_the_next_link(audit: AuditLog, repo: SqlRepository) -> None:
    from hutong.security.audit import row_hash

    fill(audit, 5)
    r = repo.query("SELECT seq, time_ms, action, outcome, account_id, role, organization, on_behalf_of, code, "
                   "peer, purpose, flags, body, prev_hash FROM audit_event WHERE seq = 3")[0]
    # Without the chain key (issue 12, finding 7) the forger cannot even make the edited row's own hash.
    forged = row_hash(r[13], r[0], r[1], "read", "0", "acc-someone-else", *r[5:11], r[11], bytes(r[12]))
    sql(repo, "UPDATE audit_event SET account_id = 'acc-someone-else', hash = ? WHERE seq = 3", (forged,))
    v = audit.verify()
    assert not v.ok and v.bad_seq == 3 and v.reason == "hash mismatch at seq 3"
    # With it (a thief of the key directory too), the next link still breaks.
    forged = row_hash(r[13], r[0], r[1], "read", "0", "acc-someone-else", *r[5:11], r[11], bytes(r[12]),
                      key=audit.keys.chain_key)
    sql(repo, "UPDATE audit_event SET hash = ? WHERE seq = 3", (forged,))
    v = audit.verify()
    assert not v.ok and v.bad_seq == 4 and v.reason == "prev_hash mismatch at seq 4"


def test_deleted_row_is_detected(audit: AuditLog, repo: SqlRepository) -> None:
    fill(audit, 6)
    sql(repo, "DELETE FROM audit_person WHERE seq = 3")
    sql(repo, "DELETE FROM audit_event WHERE seq = 3")
    v = audit.verify()
    assert not v.ok and v.bad_seq == 3 and v.reason == "gap between 2 and 4"


def test_deleted_first_row_is_detected(audit: AuditLog, repo: SqlRepository) -> None:
    fill(audit, 3)
    sql(repo, "DELETE FROM audit_person WHERE seq = 1")
    sql(repo, "DELETE FROM audit_event WHERE seq = 1")
    v = audit.verify()
    assert not v.ok and v.bad_seq == 1 and v.reason == "gap between 0 and 2"


def test_swapped_rows_are_detected(audit: AuditLog, repo: SqlRepository) -> None:
    fill(audit, 6)
    cols = ("time_ms", "action", "outcome", "account_id", "role", "organization", "on_behalf_of", "code", "peer",
            "purpose", "flags", "body", "prev_hash", "hash")
    rows = {r[0]: r[1:] for r in repo.query(f"SELECT seq, {', '.join(cols)} FROM audit_event "  # noqa: S608
                                            "WHERE seq IN (2, 5)")}
    sets = ", ".join(f"{c} = ?" for c in cols)
    # Move the seq-5 row aside first: nothing else may share its values meanwhile.
    sql(repo, f"UPDATE audit_event SET {sets} WHERE seq = 2", tuple(rows[5]))  # noqa: S608
    sql(repo, f"UPDATE audit_event SET {sets} WHERE seq = 5", tuple(rows[2]))  # noqa: S608
    v = audit.verify()
    assert not v.ok and v.bad_seq == 2 and v.reason == "prev_hash mismatch at seq 2"


def test_removed_person_index_row_is_detected(audit: AuditLog, repo: SqlRepository) -> None:
    """Hiding an access from a resident's access log by deleting its index row."""
    fill(audit, 4)
    sql(repo, "DELETE FROM audit_person WHERE seq = 2")
    v = audit.verify()
    assert not v.ok and v.bad_seq == 2 and v.reason == "person index mismatch at seq 2"


def test_checkpoint_detects_truncated_tail(audit: AuditLog, repo: SqlRepository) -> None:
    fill(audit, 5)
    head = audit.verify()
    assert head.head_seq == 5 and head.head_hash
    assert audit.verify(checkpoint=(5, head.head_hash)).ok
    sql(repo, "DELETE FROM audit_person WHERE seq = 5")
    sql(repo, "DELETE FROM audit_event WHERE seq = 5")
    assert audit.verify().ok  # a shorter chain is still a chain ...
    v = audit.verify(checkpoint=(5, head.head_hash))
    assert not v.ok and v.bad_seq == 5  # ... but the noted head is gone


def test_verify_from_checkpoint_checks_only_newer_rows(audit: AuditLog, repo: SqlRepository) -> None:
    fill(audit, 4)
    head = audit.verify()
    assert head.head_hash is not None
    fill(audit, 3)
    v = audit.verify((4, head.head_hash), from_checkpoint=True)
    assert v.ok and v.rows == 3 and v.first_seq == 5 and v.head_seq == 7
    sql(repo, "UPDATE audit_event SET action = 'delete' WHERE seq = 2")  # before the checkpoint: not looked at
    assert audit.verify((4, head.head_hash), from_checkpoint=True).ok
    assert audit.verify().bad_seq == 2
    sql(repo, "UPDATE audit_event SET action = 'delete' WHERE seq = 6")
    v = audit.verify((4, head.head_hash), from_checkpoint=True)
    assert not v.ok and v.bad_seq == 6 and v.reason == "hash mismatch at seq 6"
    v = audit.verify((4, "ab" * 32), from_checkpoint=True)
    assert not v.ok and v.bad_seq == 4 and v.reason == "checkpoint mismatch at seq 4"


# --------------------------------------------------------------------------- concurrency


def test_concurrent_appends_stay_one_chain(audit: AuditLog, repo: SqlRepository, db_url: str,
                                           clock: Clock) -> None:
    """8 threads on this log plus 4 on a second pool (another process's view of
    the database): every record lands once, seqs 1..N without gaps, chain verifies."""
    from hutong.fhir.assembly import open_repository

    repo2 = open_repository(db_url)
    audit2 = AuditLog(repo2, clock=clock)
    per_thread = 40
    errors: list[BaseException] = []
    seqs: list[int] = []
    lock = threading.Lock()

    def worker(log: AuditLog, k: int) -> None:
        try:
            mine = [log.record(read((f"mpi-{k}",), time_ms=T0 + i)) for i in range(per_thread)]
            with lock:
                seqs.extend(mine)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(audit if k < 8 else audit2, k)) for k in range(12)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        repo2.db.close()
    assert not errors, errors
    n = 12 * per_thread
    assert sorted(seqs) == list(range(1, n + 1))
    assert repo.query("SELECT COUNT(*), MIN(seq), MAX(seq) FROM audit_event")[0] == (n, 1, n)
    v = audit.verify()
    assert v.ok and v.rows == n
    assert len(audit.access_log(["mpi-3"], limit=1000)) == per_thread


def test_record_in_rolls_back_with_the_write(audit: AuditLog, repo: SqlRepository) -> None:
    audit.record(read(("mpi-a",)))

    def failing(w: Any) -> None:
        audit.record_in(w, read(("mpi-a",)))
        raise RuntimeError("the write failed")

    with pytest.raises(RuntimeError):
        repo.transact(failing)
    assert repo.transact(lambda w: audit.record_in(w, read(("mpi-b",)))) == 2
    assert [e.seq for e in audit.search()] == [2, 1]
    assert audit.verify().ok


def test_failed_write_in_a_group_commit_batch_keeps_the_chain(audit: AuditLog, repo: SqlRepository) -> None:
    """Concurrent transactions, some failing after their audit append (rolled back
    to their savepoint inside a shared COMMIT on SQLite): no gap, no fork."""
    ok: list[int] = []
    lock = threading.Lock()

    def work(k: int) -> None:
        for i in range(20):
            def fn(w: Any, fail: bool = (k + i) % 3 == 0) -> int:
                s = audit.record_in(w, read((f"mpi-{k}",)))
                if fail:
                    raise ValueError("rolled back")
                return s
            try:
                s = repo.transact(fn)
                with lock:
                    ok.append(s)
            except ValueError:
                pass

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(ok) == list(range(1, len(ok) + 1))
    assert audit.verify().ok and audit.verify().rows == len(ok)


def test_a_bad_record_in_a_batch_fails_alone(audit: AuditLog) -> None:
    """A batch whose transaction fails is retried record by record."""
    from concurrent.futures import Future

    bad = AuditRecord(action="read", principal=DOCTOR, extra={"x": object()})  # type: ignore[dict-item]
    futures: list[Future[int]] = [Future(), Future(), Future()]
    audit._batcher._commit(list(zip([read(("mpi-a",)), bad, read(("mpi-b",))], futures, strict=True)))
    assert futures[0].result() == 1 and futures[2].result() == 2
    with pytest.raises(TypeError):
        futures[1].result()
    with pytest.raises(TypeError):
        audit.record(bad)
    assert audit.record(read(("mpi-c",))) == 3
    assert audit.verify().ok and audit.verify().rows == 3


def test_one_batch_appends_many(audit: AuditLog, repo: SqlRepository) -> None:
    seqs = repo.transact(lambda w: audit.append_in(w, [read((f"mpi-{i}",)) for i in range(150)]))
    assert seqs == list(range(1, 151))
    assert audit.verify().rows == 150 and audit.verify().ok
    assert [e.seq for e in audit.access_log(["mpi-149"])] == [150]


@pytest.mark.parametrize("gather_s, trickle_batches", [(0.4, (1, 1)), (0.0, (4, 6))])
def test_record_async_gathers_requests_that_arrive_together(audit: AuditLog, monkeypatch: pytest.MonkeyPatch,
                                                           gather_s: float, trickle_batches: tuple[int, int]) -> None:
    """The gate's writer (record_async), once a batch held several records, waits up to
    GATHER_S for as many again (issue 17, item 4): callers arriving one after another
    share a transaction, each still with its own committed, chained row.  Made visible
    with a long window (callers 20 ms apart, far longer than a commit) against none."""
    import asyncio

    from hutong.security import audit as audit_mod

    monkeypatch.setattr(audit_mod, "GATHER_S", gather_s)
    sizes: list[int] = []
    run = audit._batcher._run

    def counted(recs: list[AuditRecord]) -> list[int]:
        sizes.append(len(recs))
        return run(recs)

    audit._batcher._run = counted

    async def scenario() -> tuple[list[int], list[int]]:
        together = await asyncio.gather(*(audit.record_async(read((f"mpi-{i}",))) for i in range(6)))
        assert sizes and max(sizes) > 1  # callers queued at once share a batch, window or not

        async def one(i: int) -> int:
            await asyncio.sleep(0.02 * i)
            return await audit.record_async(read((f"mpi-t{i}",)))
        sizes.clear()
        audit._last_batch = 6  # as if the burst had been one batch of six (the writer may split it 5 + 1)
        return together, await asyncio.gather(*(one(i) for i in range(6)))

    together, trickle = asyncio.run(scenario())
    assert sorted(together + trickle) == list(range(1, 13))  # every caller its own row, none lost
    # with the window, six callers 20 ms apart in one batch; without, nearly one each (two may
    # meet in one commit on a loaded machine)
    assert trickle_batches[0] <= len(sizes) <= trickle_batches[1], sizes
    v = audit.verify()
    assert v.ok and v.rows == 12


# --------------------------------------------------------------------------- retention


def test_purge_keeps_the_chain_verifiable(audit: AuditLog, repo: SqlRepository, clock: Clock) -> None:
    for i in range(10):  # 10 records, one a day, ending "now"
        audit.record(read(("mpi-a",), time_ms=T0 - (201 - i * 5) * DAY_MS))   # 201..156 days old
    clock.now = T0
    with pytest.raises(InvalidRequest) as e:
        audit.purge(T0 - 10 * DAY_MS)  # would delete records inside the 180 days
    assert e.value.code == "HT-0147"
    dry = audit.purge(dry_run=True)
    assert (dry.rows, dry.through_seq) == (5, 5)  # 201, 196, 191, 186, 181 days old
    assert audit.verify().rows == 10
    res = audit.purge()
    assert (res.rows, res.through_seq) == (5, 5)
    v = audit.verify()
    assert v.ok and v.anchor_seq == 5 and v.first_seq == 6 and v.rows == 6  # 5 left + the purge's own record
    purge_rec = audit.search(action="audit-purge")
    assert len(purge_rec) == 1 and purge_rec[0].extra["through_seq"] == "5"
    assert repo.query("SELECT COUNT(*) FROM audit_person WHERE seq <= 5")[0][0] == 0
    audit.record(read(("mpi-a",)))
    assert audit.verify().ok
    # Tampering with the anchor, or with the first row after it, is detected.
    sql(repo, "UPDATE audit_anchor SET hash = ? WHERE id = 1", ("ab" * 32,))
    v = audit.verify()
    assert not v.ok and v.bad_seq == 6 and v.reason == "anchor mismatch at seq 6"
    with pytest.raises(Conflict) as c:
        audit.purge()
    assert c.value.code == "HT-0148"


def test_purge_of_everything_then_append(repo: SqlRepository, clock: Clock) -> None:
    audit = AuditLog(repo, clock=clock, settings=SecuritySettings(audit_retention_days=1))
    clear_audit(repo)
    fill(audit, 4)
    clock.now = T0 + 3 * DAY_MS
    assert audit.purge().rows == 4
    v = audit.verify()
    assert v.ok and v.anchor_seq == 4 and v.rows == 1  # the purge record, seq 5, chained to the anchor
    assert audit.record(read(("mpi-a",))) == 6
    assert audit.verify().ok
    sql(repo, "DELETE FROM audit_event WHERE seq = 5")
    v = audit.verify()
    assert not v.ok and v.reason == "anchor mismatch at seq 6: anchor is seq 4"


def test_retention_setting_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUTONG_AUDIT_RETENTION_DAYS", "365")
    assert SecuritySettings.from_env().audit_retention_days == 365


# --------------------------------------------------------------------------- residents' access log


def test_access_log_lists_exactly_that_persons_accesses(audit: AuditLog) -> None:
    mine = []
    mine.append(audit.record(read(("mpi-a",))))                                       # 1 doctor reads A
    audit.record(read(("mpi-b",), who=DOCTOR2))                                      # 2 B only
    mine.append(audit.record(AuditRecord(action="search", principal=DOCTOR2, persons=("mpi-a", "mpi-b"),
                                         purpose="consent")))                        # 3 A and B
    audit.record(AuditRecord(action="login", principal=RESIDENT_A))                  # 4 no person
    mine.append(audit.record(read(("mpi-a",), who=RESIDENT_A, purpose="own-record")))  # 5 self
    mine.append(audit.record(read(("mpi-a",), who=DELEGATE, purpose="delegate",
                                  on_behalf_of="mpi-a")))                            # 6 delegate
    mine.append(audit.record(read(("mpi-a",), who=DOCTOR2, purpose="break-glass",
                                  reason="昏迷急诊，无法取得同意")))                   # 7 break-glass
    mine.append(audit.record(read(("mpi-a",), who=DOCTOR2, outcome=REFUSED, code="HT-0103",
                                  purpose=None)))                                    # 8 refused
    audit.record(read(("mpi-c",), who=DELEGATE, purpose="delegate"))                 # 9 C
    log = audit.access_log(["mpi-a"])
    assert [e.seq for e in log] == sorted(mine, reverse=True)
    by = {e.seq: e for e in log}
    assert by[1].who == "王医生" and by[1].organization == "H001" and by[1].relation is None
    assert by[3].persons == ("mpi-a",)  # only the asked-for person is shown
    assert by[5].relation == "self" and by[6].relation == "delegate"
    assert by[7].break_glass and by[7].reason == "昏迷急诊，无法取得同意" and by[7].purpose == "break-glass"
    assert not by[1].break_glass and by[1].reason is None
    assert by[8].outcome == REFUSED
    # paging: newest first, after = last seq of the previous page
    p1 = audit.access_log(["mpi-a"], limit=2)
    p2 = audit.access_log(["mpi-a"], limit=2, after_seq=p1[-1].seq)
    assert [e.seq for e in p1 + p2] == [8, 7, 6, 5]
    # a delegate asking for both persons sees each record once
    assert [e.seq for e in audit.access_log(["mpi-a", "mpi-c"])] == [9, *sorted(mine, reverse=True)]
    assert audit.access_log([]) == []


def test_access_log_time_window(audit: AuditLog) -> None:
    for i in range(5):
        audit.record(read(("mpi-a",), time_ms=T0 + i * DAY_MS))
    got = audit.access_log(["mpi-a"], since=T0 + DAY_MS, until=T0 + 3 * DAY_MS)
    assert [e.seq for e in got] == [3, 2]


def test_auditor_search_filters(audit: AuditLog) -> None:
    audit.record(read(("mpi-a",), time_ms=T0))
    audit.record(read(("mpi-b",), who=DOCTOR2, time_ms=T0 + 1))
    audit.record(AuditRecord(action="create", principal=DOCTOR, persons=("mpi-b",), purpose="own-institution",
                             time_ms=T0 + 2))
    audit.record(read(("mpi-a",), who=DOCTOR2, outcome=REFUSED, purpose=None, time_ms=T0 + 3))
    assert [e.seq for e in audit.search(account="acc-doc-1")] == [3, 1]
    assert [e.seq for e in audit.search(person="mpi-b")] == [3, 2]
    assert [e.seq for e in audit.search(action="read", outcome=REFUSED)] == [4]
    assert [e.seq for e in audit.search(purpose="own-institution")] == [3]
    assert [e.seq for e in audit.search(since=T0 + 1, until=T0 + 3)] == [3, 2]
    assert [e.seq for e in audit.search(limit=2, after_seq=4)] == [3, 2]


# --------------------------------------------------------------------------- break-glass review


def test_break_glass_review(audit: AuditLog) -> None:
    audit.record(read(("mpi-a",)))
    bg1 = audit.record(AuditRecord(action="break-glass", principal=DOCTOR2, persons=("mpi-a",),
                                   purpose="break-glass", reason="急诊抢救"))
    bg2 = audit.record(read(("mpi-a",), who=DOCTOR2, purpose="break-glass", reason="急诊抢救"))
    assert [i.entry.seq for i in audit.break_glass_list()] == [bg2, bg1]
    assert [i.entry.seq for i in audit.break_glass_list(reviewed=False)] == [bg2, bg1]
    assert audit.break_glass_list(reviewed=True) == []
    r = audit.review_break_glass(bg1, AUDITOR, "justified", "患者昏迷，符合规定")
    assert (r.seq, r.reviewer, r.verdict, r.note) == (bg1, "acc-aud-1", "justified", "患者昏迷，符合规定")
    assert [i.entry.seq for i in audit.break_glass_list(reviewed=False)] == [bg2]
    done = audit.break_glass_list(reviewed=True)
    assert len(done) == 1 and done[0].review is not None and done[0].review.note == "患者昏迷，符合规定"
    assert done[0].entry.reason == "急诊抢救"
    # the review is itself audited, in the chain
    rec = audit.get(r.review_seq)
    assert rec is not None and rec.action == "break-glass-review" and rec.account_id == "acc-aud-1"
    assert rec.entities == (f"AuditEvent/{bg1}",) and rec.extra["verdict"] == "justified"
    assert audit.verify().ok
    with pytest.raises(Conflict) as e1:
        audit.review_break_glass(bg1, AUDITOR, "unjustified")
    assert e1.value.code == "HT-0144"
    with pytest.raises(InvalidRequest) as e2:
        audit.review_break_glass(1, AUDITOR, "justified")
    assert e2.value.code == "HT-0142"
    with pytest.raises(NotFound) as e3:
        audit.review_break_glass(999, AUDITOR, "justified")
    assert e3.value.code == "HT-0141"
    with pytest.raises(InvalidRequest) as e4:
        audit.review_break_glass(bg2, AUDITOR, "maybe")
    assert e4.value.code == "HT-0143"
    with pytest.raises(Forbidden) as e5:
        audit.review_break_glass(bg2, DOCTOR, "justified")
    assert e5.value.code == "HT-0104"
    # a refused review left nothing behind
    assert audit.verify().rows == 4


# --------------------------------------------------------------------------- encryption seam


class ReversingCodec:
    """Stands in for the AES-GCM codec: stored bytes are not the plaintext."""

    def encode(self, body: bytes) -> bytes:
        return b"R" + body[::-1]

    def decode(self, stored: bytes) -> bytes:
        assert stored[:1] == b"R"
        return stored[1:][::-1]


@pytest.fixture
def reversed_repo(tmp_path: Path) -> Iterator[SqlRepository]:
    r = SqlRepository(open_database(f"sqlite:///{tmp_path}/enc.db"), FhirIndexer(), codec=ReversingCodec())
    yield r
    r.db.close()


def test_free_text_goes_through_the_codec(reversed_repo: SqlRepository, tmp_path: Path) -> None:
    reason = "患者昏迷需要紧急查看既往史 unique-reason-7f3a"
    audit = AuditLog(reversed_repo)
    seq = audit.record(read(("mpi-a",), who=DOCTOR2, purpose="break-glass", reason=reason,
                            query="identifier=110101199003077777"))
    audit.review_break_glass(seq, AUDITOR, "unjustified", "note-text-9c1e")
    body, = reversed_repo.query("SELECT body FROM audit_event WHERE seq = ?", (seq,))[0]
    assert reason.encode() not in bytes(body) and b"110101199003077777" not in bytes(body)
    assert bytes(body)[:1] == b"R"
    reversed_repo.db.close()  # checkpoint the WAL into the file
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("enc.db*") if p.is_file())
    for secret in (reason.encode(), b"unique-reason-7f3a", b"110101199003077777", b"note-text-9c1e"):
        assert secret not in raw
    reopened = SqlRepository(open_database(f"sqlite:///{tmp_path}/enc.db"), FhirIndexer(), codec=ReversingCodec())
    try:
        again = AuditLog(reopened)
        e = again.get(seq)
        assert e is not None and e.reason == reason and e.query == "identifier=110101199003077777"
        items = again.break_glass_list(reviewed=True)
        assert items[0].review is not None and items[0].review.note == "note-text-9c1e"
        assert again.verify().ok
    finally:
        reopened.db.close()


# --------------------------------------------------------------------------- AuditEvent rendering


def test_rendered_audit_events_are_valid_r4(audit: AuditLog) -> None:
    from hutong.fhir.validation import validate
    from hutong.security.auditevent import to_fhir

    doc = Principal(account_id="acc-doc-1", role=Role.CLINICIAN, display="王医生", organization="H001",
                    organization_id="org-h001", practitioner_role_id="pr-1", peer="10.0.0.5")
    audit.record(AuditRecord(action="search", principal=doc, persons=("mpi-a",),
                             entities=("Patient/mpi-a", "Observation/o1"), query="patient=mpi-a",
                             interaction="GET /fhir/Observation", purpose="treatment"))
    audit.record(AuditRecord(action="read", principal=doc, persons=("mpi-a",), purpose="break-glass",
                             reason="急诊抢救", entities=("Patient/mpi-a",)))
    audit.record(AuditRecord(action="login", outcome=REFUSED, claimed="wang", code="HT-0127", peer="192.0.2.1"))
    audit.record(AuditRecord(action="read", principal=DELEGATE, persons=("mpi-a",), on_behalf_of="mpi-a",
                             purpose="delegate"))
    audit.record(AuditRecord(action="cda", principal=None, purpose="platform", entities=("DocumentReference/d1",)))
    events = [to_fhir(e) for e in sorted(audit.search(), key=lambda e: e.seq)]
    for ev in events:
        validate(ev, "AuditEvent")
    search, bg, login, deleg, cda = events
    assert search["type"]["code"] == "rest" and search["subtype"] == [
        {"system": "http://hl7.org/fhir/restful-interaction", "code": "search-type"}]
    assert search["action"] == "E" and search["outcome"] == "0" and search["id"] == "1"
    agent = search["agent"][0]
    assert agent["requestor"] is True and agent["network"] == {"address": "10.0.0.5", "type": "2"}
    assert agent["who"]["identifier"]["value"] == "acc-doc-1" and agent["who"]["display"] == "王医生"
    assert agent["purposeOfUse"][0]["coding"][0]["code"] == "TREAT"
    patient = [x for x in search["entity"] if x.get("what", {}).get("reference") == "Patient/mpi-a"]
    assert len(patient) == 1 and patient[0]["role"]["code"] == "1" and patient[0]["type"]["code"] == "1"
    assert any(x.get("query") for x in search["entity"])
    assert not any(x.get("query") for x in to_fhir(audit.search(action="search")[0], with_query=False)["entity"])
    assert bg["action"] == "R" and bg["meta"]["security"][0]["code"] == "BTG"
    assert bg["agent"][0]["purposeOfUse"][0]["coding"][0]["code"] == "ETREAT"
    assert bg["purposeOfEvent"][0]["text"] == "急诊抢救"
    assert login["type"]["code"] == "110114" and login["subtype"][0]["code"] == "110122"
    assert login["outcome"] == "4" and login["agent"][0]["altId"] == "wang" and "HT-0127" in login["outcomeDesc"]
    assert deleg["agent"][0]["purposeOfUse"][0]["coding"][0]["code"] == "FAMRQT"
    assert cda["type"]["code"] == "110107" and cda["action"] == "C"
