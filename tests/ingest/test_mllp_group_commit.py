"""Messages that share a commit (issue 17): each is all or nothing on its own,
each ACK leaves only after the commit that stored it, and each has one audit
row, committed with it -- through a real MLLP socket on SQLite and PostgreSQL.

On SQLite concurrent messages share one transaction (hutong.store.groupcommit),
each in its own savepoint, and the audit row of a stored message is appended
in its savepoint (hutong.ingest.pipeline, ``audit_log``).  Here several
connections send at once while another writer holds the database's write lock,
so the messages line up in one shared commit; one of them fails after its
resources were written.  On PostgreSQL each message is its own transaction:
the same assertions hold.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness import Server
from pgcluster import free_port

from hutong.errors import HutongError
from hutong.fhir.bundle import BundleProcessor
from hutong.fhir.service import FhirService
from hutong.ingest.hl7v2.framing import FrameDecoder, frame
from hutong.ingest.hl7v2.listener import start_in_thread
from hutong.ingest.pipeline import Ingestor
from hutong.mpi.idnumber import check_char
from hutong.security.audit import AuditLog
from hutong.security.auditheads import AuditKeys
from hutong.security.senders import mllp_authoriser
from hutong.security.settings import SecuritySettings
from hutong.store.repository import Writer
from hutong.systems import ORGANIZATION, mrn_system

HOSPITAL = "12110000400000071X"   # 统一社会信用代码 of the sending hospital (test data)
GOOD = 6
BAD_MRN = "BAD-1"


@dataclass
class Mllp:
    port: int
    server: Server
    ingestor: Ingestor


class FailingBundles(BundleProcessor):
    """The real transaction, then a failure for the message about BAD_MRN: its
    resources are written when it fails (a late failure inside the transaction)."""

    def run_in(self, w: Writer, entries: list[Any]) -> list[tuple[str, str, int]]:
        done = super().run_in(w, entries)
        for e in entries:
            ids = (e.resource or {}).get("identifier") or []
            if e.type == "Patient" and any(i.get("value") == BAD_MRN for i in ids):
                raise HutongError("HT-0057", "test: a failure after this message's resources were written",
                                  status=422, issue_code="processing")
        return done


@pytest.fixture
def mllp(monkeypatch: pytest.MonkeyPatch, server: Server) -> Iterator[Mllp]:
    monkeypatch.setenv("HUTONG_MLLP_DEV_LOOPBACK", "1")
    org = {"resourceType": "Organization", "name": "北京市组提交测试医院",
           "identifier": [{"system": ORGANIZATION, "value": HOSPITAL}]}
    assert server.client.post("/Organization", content=json.dumps(org)).status_code == 201
    # As `hutong serve --mllp-port` wires it: the audit row of a stored message commits with it.
    svc = FhirService(server.repo)
    ingestor = Ingestor(svc, authorise=mllp_authoriser(server.repo, SecuritySettings(mllp_dev_loopback=True)),
                        audit_log=server.app.platform.audit)
    ingestor.bundles = FailingBundles(svc)
    port = free_port()
    listener = start_in_thread(ingestor, "127.0.0.1", port, threads=GOOD + 2)
    yield Mllp(port, server, ingestor)
    listener.stop()


def _id_number(seq: int) -> str:
    first = f"110105198106{seq % 28 + 1:02d}{seq % 1000:03d}"
    return first + check_char(first)


def oru(control: str, mrn: str, seq: int) -> bytes:
    segs = [f"MSH|^~\\&|HIS|{HOSPITAL}|HUTONG|REGION|20261120093000||ORU^R01^ORU_R01|{control}|P|2.5.1|||||CHN|"
            "UNICODE UTF-8",
            f"PID|1||{mrn}^^^{HOSPITAL}^MR~{_id_number(seq)}^^^2.16.156.10011.1.3^NNCHN||孙^组提交||19810617|F",
            f"OBR|1|P{control}|F{control}^LIS|24331-1^血脂四项^LN|||20261120080000||||||||||||||||20261120100000|||F",
            "OBX|1|NM|2093-3^总胆固醇^LN||5.9|mmol/L|3.1-5.7|H|||F|||20261120080000",
            "OBX|2|NM|2571-8^甘油三酯^LN||1.2|mmol/L|0.4-1.7|N|||F|||20261120080000"]
    return "\r".join(segs).encode()


def _msa(ack: str) -> list[str]:
    return next((s for s in ack.split("\r") if s.startswith("MSA|")), "MSA|?").split("|")


def _stored(server: Server, control: str) -> bool:
    """Committed: another connection sees the message's inbox row."""
    rows = server.repo.query("SELECT status FROM ingest_message WHERE control_id = ? AND channel = 'hl7v2'",
                             (control,))
    return any(r[0] == "ok" for r in rows)


def _exchange(mllp: Mllp, control: str, payload: bytes, barrier: threading.Barrier) -> tuple[str, bool]:
    """Send one message on its own connection; (its ACK, whether it was committed when the ACK came)."""
    with socket.create_connection(("127.0.0.1", mllp.port), timeout=60) as s:
        barrier.wait(timeout=60)
        s.sendall(frame(payload))
        decoder = FrameDecoder()
        while True:
            data = s.recv(65536)
            assert data, "connection closed before the ACK"
            for item in decoder.feed(data):
                ack = bytes(getattr(item, "payload", b"")).decode("utf-8", "replace")
                return ack, _stored(mllp.server, control)


def _pg_key(key: str) -> int:
    """hutong.store.sql.SqlWriter.lock_key's advisory lock id for ``key``."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


@contextmanager
def _store_held(server: Server, keys: list[str]) -> Iterator[None]:
    """Another writer holds what the messages' transactions need: on SQLite the
    database's write lock (so concurrent messages queue for one shared commit),
    on PostgreSQL the messages' own locks (hutong.ingest.pipeline: one per
    sender and control id)."""
    if server.repo.db.dialect == "sqlite":
        lock_path = getattr(server.repo.db, "_lock_path", None)
        assert lock_path is not None
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return
    with psycopg.connect(server.repo.db.url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as c:
        for k in keys:
            c.execute("SELECT pg_advisory_lock(%s)", (_pg_key(k),))
        try:
            yield
        finally:
            c.execute("SELECT pg_advisory_unlock_all()")


def _queued(mllp: Mllp, n: int) -> None:
    """Wait until n messages wait for the store (SQLite: in the group commit's queue)."""
    group = getattr(mllp.ingestor.repo, "_group", None)
    deadline = time.monotonic() + 30
    if group is None:
        time.sleep(1.0)
        return
    while len(group._queue) < n - 1 and time.monotonic() < deadline:  # the leader holds one
        time.sleep(0.005)


def test_a_failing_message_in_a_shared_commit_is_naked_alone_and_acks_follow_the_commit(mllp: Mllp) -> None:
    controls = [f"GC{i}" for i in range(GOOD)] + ["GCBAD"]
    payloads = [oru(c, f"GC-MR{i}", i) for i, c in enumerate(controls[:-1])] + [oru("GCBAD", BAD_MRN, 99)]
    barrier = threading.Barrier(len(controls) + 1)
    out: list[Any] = [None] * len(controls)

    def run(i: int) -> None:
        try:
            out[i] = _exchange(mllp, controls[i], payloads[i], barrier)
        except BaseException as e:  # reported by the assertions below
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(controls))]
    keys = [f"ingest:hl7v2:{HOSPITAL}:{c}" for c in controls]
    with _store_held(mllp.server, keys):
        for t in threads:
            t.start()
        barrier.wait(timeout=60)
        _queued(mllp, len(controls))
        time.sleep(0.3)
        # Nothing is acknowledged while the store cannot commit.
        assert all(o is None for o in out), out
        assert not any(_stored(mllp.server, c) for c in controls)
    for t in threads:
        t.join(60)
    assert all(isinstance(o, tuple) for o in out), out
    acks = {c: o[0] for c, o in zip(controls, out, strict=True)}
    committed_at_ack = {c: o[1] for c, o in zip(controls, out, strict=True)}
    for c in controls[:-1]:
        assert _msa(acks[c])[1:3] == ["AA", c], acks[c]
        assert committed_at_ack[c], f"{c} was acknowledged before its commit"
    bad = acks["GCBAD"]
    assert _msa(bad)[1:3] == ["AE", "GCBAD"] and "HT-0057" in bad, bad
    # The failed message: a dead letter, and nothing of what it wrote before failing.
    repo = mllp.server.repo
    rows = repo.query("SELECT control_id, status FROM ingest_message WHERE channel = 'hl7v2'", ())
    assert sorted(rows) == sorted([(c, "ok") for c in controls[:-1]] + [("GCBAD", "dead")])
    r = mllp.server.client.get("/Patient", params={"identifier": f"{mrn_system(HOSPITAL)}|{BAD_MRN}"})
    assert r.status_code == 200 and r.json()["total"] == 0
    r = mllp.server.client.get("/Observation", params={"_summary": "count"})
    assert r.json()["total"] == 2 * GOOD
    # One audit row per message: six stored, one failed.
    audit = mllp.server.app.platform.audit
    ok_rows = audit.search(action="hl7", outcome="0")
    failed = [e for e in audit.search(action="hl7") if e.outcome != "0"]
    assert sorted(e.extra.get("control_id", "") for e in ok_rows) == sorted(controls[:-1])
    assert [e.extra.get("control_id") for e in failed] == ["GCBAD"] and failed[0].code == "HT-0057"
    assert all(e.persons and e.persons[0].startswith("mpi-") for e in ok_rows), [e.persons for e in ok_rows]
    assert audit.verify().ok


def test_a_resend_in_the_same_shared_commit_is_stored_once(mllp: Mllp) -> None:
    """The same message on several connections at once (a sender retrying on a new
    connection): stored once, every copy answered AA, one audit row each."""
    payload = oru("GCDUP", "GC-DUP", 7)
    barrier = threading.Barrier(5)
    out: list[Any] = [None] * 4

    def run(i: int) -> None:
        try:
            out[i] = _exchange(mllp, "GCDUP", payload, barrier)
        except BaseException as e:
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    with _store_held(mllp.server, ["ingest:hl7v2:" + HOSPITAL + ":GCDUP"]):
        for t in threads:
            t.start()
        barrier.wait(timeout=60)
        _queued(mllp, 4)
    for t in threads:
        t.join(60)
    assert all(isinstance(o, tuple) and _msa(o[0])[1:3] == ["AA", "GCDUP"] and o[1] for o in out), out
    rows = mllp.server.repo.query("SELECT status FROM ingest_message WHERE control_id = 'GCDUP'", ())
    assert rows == [("ok",)]
    r = mllp.server.client.get("/Observation", params={"_summary": "count"})
    assert r.json()["total"] == 2
    assert len(mllp.server.app.platform.audit.search(action="hl7", outcome="0")) == 4


def test_a_head_is_published_after_messages_audited_in_their_transaction(mllp: Mllp, tmp_path: Path) -> None:
    """The listener's rows are appended inside the messages' transactions, never through
    AuditLog.record: the head is still signed and published once per interval
    (AuditLog.publish_if_due), naming the newest committed row."""
    platform_log = mllp.server.app.platform.audit
    # Heads to a file of this test's own: PostgreSQL tests share one server and its key
    # directory, and a head left in the shared file names a seq that the next test's chain
    # (numbered from 1 again after the truncation) holds with another hash.
    keys = AuditKeys(platform_log.keys.dir, heads=tmp_path / "audit-heads.ndjson")
    due = AuditLog(mllp.server.repo, settings=replace(platform_log.settings, audit_head_seconds=0), keys=keys)
    mllp.ingestor.audit_log = due
    before = len(due.heads())
    ok = _exchange(mllp, "GCHEAD", oru("GCHEAD", "GC-HEAD", 11), threading.Barrier(1))
    assert _msa(ok[0])[1:3] == ["AA", "GCHEAD"] and ok[1]
    [row] = [e for e in due.search(action="hl7", outcome="0") if e.extra.get("control_id") == "GCHEAD"]
    heads = due.heads()
    assert len(heads) > before and heads[-1] is not None and heads[-1].seq == row.seq
    assert due.verify().ok
