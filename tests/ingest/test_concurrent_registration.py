"""Concurrent messages about one NEW patient make exactly one registration
(issue 17, "Bad input and races"), on SQLite and PostgreSQL.

The bench saw it: two ORU^R01 about the same new patient on different MLLP
connections both found no Patient for the MRN and both created one; every
later message about that patient was then refused (HT-0013, ifNoneExist
matched 2).  Here many sockets (and many REST clients) send at once, lined up
on a barrier, and the store must end with one Patient per identifier and
every message acknowledged AA / 200-201.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cda_helpers import MINIMAL, make_fixtures
from fhirapi import NOT_GOLDEN
from harness import Server
from pgcluster import free_port

from hutong.fhir.service import FhirService
from hutong.ingest.hl7v2.framing import FrameDecoder, frame
from hutong.ingest.hl7v2.listener import start_in_thread
from hutong.ingest.pipeline import Ingestor
from hutong.mpi.idnumber import check_char
from hutong.security.senders import mllp_authoriser
from hutong.security.settings import SecuritySettings
from hutong.store.sql import SqlRepository
from hutong.systems import ID_CARD, ORGANIZATION, mrn_system

HOSPITAL = "12110000400000017X"   # 统一社会信用代码 of the sending hospital (test data)
SENDERS = 16


@dataclass
class Mllp:
    port: int
    server: Server


@pytest.fixture
def mllp(monkeypatch: pytest.MonkeyPatch, server: Server) -> Iterator[Mllp]:
    monkeypatch.setenv("HUTONG_MLLP_DEV_LOOPBACK", "1")
    org = {"resourceType": "Organization", "name": "北京市并发测试医院",
           "identifier": [{"system": ORGANIZATION, "value": HOSPITAL}]}
    assert server.client.post("/Organization", content=json.dumps(org)).status_code == 201
    ingestor = Ingestor(FhirService(server.repo), authorise=mllp_authoriser(server.repo, SecuritySettings(
        mllp_dev_loopback=True)), audit_log=server.app.platform.audit)
    port = free_port()
    listener = start_in_thread(ingestor, "127.0.0.1", port, threads=SENDERS)
    yield Mllp(port, server)
    listener.stop()


def _id_number(seq: int) -> str:
    first = f"110105198005{seq % 28 + 1:02d}{seq % 1000:03d}"
    return first + check_char(first)


def oru(control: str, mrn: str, idno: str) -> bytes:
    segs = [f"MSH|^~\\&|HIS|{HOSPITAL}|HUTONG|REGION|20261120093000||ORU^R01^ORU_R01|{control}|P|2.5.1|||||CHN|"
            "UNICODE UTF-8",
            f"PID|1||{mrn}^^^{HOSPITAL}^MR~{idno}^^^2.16.156.10011.1.3^NNCHN||赵^并发||19800517|M",
            f"OBR|1|P{control}|F{control}^LIS|24331-1^血脂四项^LN|||20261120080000||||||||||||||||20261120100000|||F",
            "OBX|1|NM|2093-3^总胆固醇^LN||5.9|mmol/L|3.1-5.7|H|||F|||20261120080000"]
    return "\r".join(segs).encode()


def _exchange(port: int, payload: bytes, barrier: threading.Barrier) -> str:
    """One connection: line up with the others, send one message, read its ACK."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        barrier.wait(timeout=60)
        s.sendall(frame(payload))
        decoder = FrameDecoder()
        while True:
            data = s.recv(65536)
            assert data, "connection closed before the ACK"
            for item in decoder.feed(data):
                return bytes(getattr(item, "payload", b"")).decode("utf-8", "replace")


@contextmanager
def _one_commit_for_all(server: Server, n: int) -> Iterator[None]:
    """Make the n writers of the block share one transaction, as they do under load.

    On SQLite concurrent writers share one COMMIT (hutong.store.groupcommit):
    under load the first message about a new patient and the next ones land in
    the same batch, each in its own savepoint.  Here another writer (standing
    for any process holding the database's write lock: an import, a backup)
    holds ``<db>.lock`` while an unrelated write takes the leader's seat and
    the n writers queue behind it; released, they run as one batch.  On
    PostgreSQL every message is its own transaction: the barrier alone."""
    repo: SqlRepository = server.repo
    group = getattr(repo, "_group", None)
    lock_path = getattr(repo.db, "_lock_path", None)
    if group is None or lock_path is None:
        yield
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    pilot = threading.Thread(target=lambda: server.client.post("/Organization", content=json.dumps(
        {"resourceType": "Organization", "name": "占位机构"})))
    try:
        pilot.start()
        deadline = time.monotonic() + 30
        while group._queue and time.monotonic() < deadline:  # the pilot's leader has taken it and waits
            time.sleep(0.005)
        yield
        while len(group._queue) < n and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        pilot.join(30)


def _all_at_once(n: int, work: Callable[[int, threading.Barrier], Any], server: Server) -> list[Any]:
    barrier = threading.Barrier(n)
    out: list[Any] = [None] * n

    def run(i: int) -> None:
        try:
            out[i] = work(i, barrier)
        except BaseException as e:  # reported by the assertion below, not lost in the thread
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    with _one_commit_for_all(server, n):
        for t in threads:
            t.start()
    for t in threads:
        t.join(120)
    return out


def _patients(server: Server, system: str, value: str) -> list[dict[str, Any]]:
    r = server.client.get("/Patient", params=[("identifier", f"{system}|{value}"), NOT_GOLDEN])
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


def _msa(ack: str) -> list[str]:
    return next((s for s in ack.split("\r") if s.startswith("MSA|")), "MSA|?").split("|")


def test_mllp_connections_sending_one_new_patient_make_one_registration(mllp: Mllp) -> None:
    for round_ in range(3):  # several new patients: a race that slips once in a while still shows
        mrn = f"RACE{uuid.uuid4().hex[:10].upper()}"
        idno = _id_number(round_)
        acks = _all_at_once(SENDERS, lambda i, b, mrn=mrn, idno=idno: _exchange(
            mllp.port, oru(f"{mrn}-{i}", mrn, idno), b), mllp.server)
        bad = [a if isinstance(a, BaseException) else (_msa(a)[1:3], a.split("\r")[2:3]) for a in acks
               if isinstance(a, BaseException) or _msa(a)[1] != "AA"]
        assert not bad, bad
        assert len(_patients(mllp.server, mrn_system(HOSPITAL), mrn)) == 1
        # Every message was stored against that one registration, linked to one person.
        patient = _patients(mllp.server, mrn_system(HOSPITAL), mrn)[0]
        persons = {ln["other"]["reference"] for ln in patient.get("link", [])}
        assert len(persons) == 1, patient.get("link")
        r = mllp.server.client.get("/Observation", params={"subject": f"Patient/{patient['id']}", "_count": "100"})
        assert r.status_code == 200 and r.json()["total"] == SENDERS


def _transaction(mrn: str, i: int, org_id: str) -> dict[str, Any]:
    system = REST_SYSTEM
    full_url = "urn:uuid:" + str(uuid.uuid4())
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": full_url,
         "resource": {"resourceType": "Patient", "identifier": [{"system": system, "value": mrn}],
                      "managingOrganization": {"reference": f"Organization/{org_id}"},
                      "name": [{"family": "钱", "given": ["并发"]}]},
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={system}|{mrn}"}},
        {"resource": {"resourceType": "Observation", "status": "final",
                      "code": {"text": f"第{i}次"}, "subject": {"reference": full_url}},
         "request": {"method": "POST", "url": "Observation"}}]}


REST_SYSTEM = "urn:oid:2.16.156.10011.1.99.17"


@pytest.mark.parametrize("kind", ["transaction", "batch", "create"])
def test_rest_writers_creating_one_new_patient_make_one_registration(server: Server, kind: str) -> None:
    """A hospital's system (an institution principal: its conditional criteria
    match only its own registrations) sending the same new patient at once."""
    code = "12110000400000171X"
    r = server.client.post("/Organization", content=json.dumps({
        "resourceType": "Organization", "name": "北京市并发测试医院二",
        "identifier": [{"system": ORGANIZATION, "value": code}]}))
    assert r.status_code == 201, r.text
    org_id = r.json()["id"]
    his, _ = server.accounts.add_client("HIS (concurrency test)", organization=code, organization_id=org_id)
    token = server.token(his)
    for _ in range(2):
        mrn = f"REST{uuid.uuid4().hex[:10].upper()}"

        def send(i: int, barrier: threading.Barrier, mrn: str = mrn) -> int:
            with httpx.Client(base_url=server.url, timeout=60, headers={
                    "content-type": "application/fhir+json", "authorization": f"Bearer {token}"}) as c:
                bundle = _transaction(mrn, i, org_id)
                if kind == "create":
                    barrier.wait(timeout=60)
                    r = c.post("/Patient", content=json.dumps(bundle["entry"][0]["resource"]),
                               headers={"if-none-exist": f"identifier={REST_SYSTEM}|{mrn}"})
                    assert r.status_code in (200, 201), r.text
                    return r.status_code
                if kind == "batch":
                    bundle["type"] = "batch"
                    bundle["entry"] = bundle["entry"][:1]
                barrier.wait(timeout=60)
                r = c.post("", content=json.dumps(bundle))
                assert r.status_code == 200, r.text
                statuses = [e["response"]["status"] for e in r.json()["entry"]]
                assert all(s.startswith(("200", "201")) for s in statuses), r.text
                return 200

        codes = _all_at_once(SENDERS, send, server)
        assert all(c in (200, 201) for c in codes), codes
        assert len(_patients(server, REST_SYSTEM, mrn)) == 1


def test_cda_documents_about_one_new_patient_make_one_registration(server: Server) -> None:
    """WS/T 500 documents (POST /ingest/cda) from a hospital's system, each a
    different document about the same new patient, sent at once."""
    code = make_fixtures.SENDER_CODE
    r = server.client.post("/Organization", content=json.dumps({
        "resourceType": "Organization", "name": "互通示范医院",
        "identifier": [{"system": ORGANIZATION, "value": code}]}))
    assert r.status_code == 201, r.text
    his, _ = server.accounts.add_client("HIS (CDA concurrency test)", organization=code,
                                        organization_id=r.json()["id"])
    token = server.token(his)
    template = (MINIMAL / "C0001.xml").read_bytes()
    for round_ in range(2):
        mrn = f"MZ{uuid.uuid4().hex[:8].upper()}"
        idno = _id_number(100 + round_)

        def send(i: int, barrier: threading.Barrier, mrn: str = mrn, idno: str = idno) -> int:
            xml = (template.replace(b"MZ20240001", mrn.encode()).replace(b"110105198503120231", idno.encode())
                   .replace(b"DOC-C0001-0001", f"DOC-{mrn}-{i}".encode()))
            with httpx.Client(timeout=60, headers={"authorization": f"Bearer {token}",
                                                   "content-type": "application/hl7-cda+xml"}) as c:
                barrier.wait(timeout=60)
                r = c.post(server.root + "/ingest/cda", content=xml)
                assert r.status_code == 201, r.text
                return r.status_code

        codes = _all_at_once(SENDERS, send, server)
        assert codes == [201] * SENDERS, codes
        assert len(_patients(server, ID_CARD, idno)) == 1
        assert len(_patients(server, mrn_system(code), mrn)) == 1
