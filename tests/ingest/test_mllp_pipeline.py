"""HL7 v2 over a real MLLP socket into the store, on SQLite and PostgreSQL:
ACKs, FHIR results, idempotency, identity linking, merges, dead letters and
retry, framing faults, charsets, timeliness."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from fhirapi import NOT_GOLDEN
from harness import Server
from pgcluster import free_port

from hutong.fhir.service import FhirService
from hutong.ingest.hl7v2.framing import END, START, send_messages
from hutong.ingest.hl7v2.listener import start_in_thread
from hutong.ingest.pipeline import Ingestor
from hutong.mpi.idnumber import check_char
from hutong.security.senders import mllp_authoriser
from hutong.security.settings import SecuritySettings
from hutong.systems import ID_CARD, ORGANIZATION, mrn_system

HOSPITAL = "12110000400000001X"   # 统一社会信用代码 of the sending hospital (test data)
BEIJING = timezone(timedelta(hours=8))


def id_number(birth: str, seq: str = "013") -> str:
    first = "110105" + birth + seq
    return first + check_char(first)


@dataclass
class Mllp:
    host: str
    port: int
    server: Server
    ingestor: Ingestor

    def send(self, *messages: str | bytes) -> list[str]:
        payloads = [m if isinstance(m, bytes) else m.encode() for m in messages]
        acks = asyncio.run(send_messages(self.host, self.port, payloads))
        return [a.decode("utf-8", "replace") for a in acks]


@pytest.fixture
def dev_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole server in development mode, as ``HUTONG_MLLP_DEV_LOOPBACK=1 hutong
    serve --mllp-port`` runs it: the web workers retry MLLP dead letters with the
    same sender rules as the listener (the retry re-authorises the connection)."""
    monkeypatch.setenv("HUTONG_MLLP_DEV_LOOPBACK", "1")


@pytest.fixture
def mllp(dev_loopback: None, server: Server) -> Iterator[Mllp]:
    org = {"resourceType": "Organization", "name": "北京市测试医院",
           "identifier": [{"system": ORGANIZATION, "value": HOSPITAL}]}
    assert server.client.post("/Organization", content=json.dumps(org)).status_code == 201
    # As `hutong serve --mllp-port` wires it: each message under its sender's
    # policy (hutong.security.senders) and audited.  Development mode: loopback
    # senders unauthenticated, taken at their MSH-4 (the default refuses them;
    # authenticated senders: tests/security/test_trust_hl7.py).
    dev = SecuritySettings(mllp_dev_loopback=True)
    ingestor = Ingestor(FhirService(server.repo), authorise=mllp_authoriser(server.repo, dev),
                        audit_log=server.app.platform.audit)
    port = free_port()
    listener = start_in_thread(ingestor, "127.0.0.1", port)
    yield Mllp("127.0.0.1", port, server, ingestor)
    listener.stop()


def msh(kind: str, control: str, *, facility: str = HOSPITAL, charset: str = "UNICODE UTF-8",
        version: str = "2.5.1", when: str = "20261120093000") -> str:
    return f"MSH|^~\\&|HIS|{facility}|HUTONG|REGION|{when}||{kind}|{control}|P|{version}|||||CHN|{charset}"


def pid(mrn: str = "MR0001", name: str = "张^伟", birth: str = "19800517", sex: str = "M",
        idno: str | None = "auto") -> str:
    ids = f"{mrn}^^^{HOSPITAL}^MR"
    if idno == "auto":
        idno = id_number(birth)
    if idno:
        ids += f"~{idno}^^^2.16.156.10011.1.3^NNCHN"
    return f"PID|1||{ids}||{name}||{birth}|{sex}|||朝阳区建国路88号^^北京市^^100022^CHN||13912345678"


def adt(control: str, trigger: str = "A04", **kw: Any) -> str:
    segs = [msh(f"ADT^{trigger}^ADT_A01", control), f"EVN|{trigger}|20261120093000", pid(**kw),
            "PV1|1|O|内科门诊^^^^^^^^内科||||D001^李^医生|||||||||||V20261120001|||||||||||||||||||||||||20261120090000"]
    return "\r".join(segs)


def oru(control: str, *, with_pid: bool = True, obx: int = 3, **kw: Any) -> str:
    segs = [msh("ORU^R01^ORU_R01", control)]
    if with_pid:
        segs.append(pid(**kw))
    segs.append("OBR|1|P123|F456^LIS|24331-1^血脂四项^LN|||20261120080000||||||||||||||||20261120100000|||F")
    results = [("2093-3", "总胆固醇", "5.9", "mmol/L", "3.1-5.7", "H"),
               ("2571-8", "甘油三酯", "1.2", "mmol/L", "0.4-1.7", "N"),
               ("2085-9", "高密度脂蛋白胆固醇", "0.8", "mmol/L", "1.0-1.9", "L")]
    for i in range(obx):
        code, name, value, unit, rng, flag = results[i % 3]
        segs.append(f"OBX|{i + 1}|NM|{code}^{name}^LN||{value}|{unit}|{rng}|{flag}|||F|||20261120080000")
    return "\r".join(segs)


def msa(ack: str) -> list[str]:
    seg = next(s for s in ack.split("\r") if s.startswith("MSA|"))
    return seg.split("|")


def err(ack: str) -> str:
    return next((s for s in ack.split("\r") if s.startswith("ERR|")), "")


def fhir(server: Server, path: str, **params: Any) -> dict[str, Any]:
    items = list(params.items()) + ([NOT_GOLDEN] if path == "/Patient" else [])
    r = server.client.get(path, params=items)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_adt_creates_patient_and_encounter_linked_to_a_person(mllp: Mllp) -> None:
    [ack] = mllp.send(adt("C1"))
    assert msa(ack)[1:3] == ["AA", "C1"]
    b = fhir(mllp.server, "/Patient", identifier=f"{mrn_system(HOSPITAL)}|MR0001")
    assert len(b["entry"]) == 1
    patient = b["entry"][0]["resource"]
    assert patient["birthDate"] == "1980-05-17" and patient["gender"] == "male"
    assert any(i["system"] == ID_CARD for i in patient["identifier"])
    assert any(ln["other"]["reference"].startswith("Patient/mpi-") for ln in patient["link"])
    enc = fhir(mllp.server, "/Encounter", subject=f"Patient/{patient['id']}")
    assert len(enc["entry"]) == 1 and enc["entry"][0]["resource"]["class"]["code"] == "AMB"


def test_resent_message_changes_nothing_and_is_acknowledged_again(mllp: Mllp) -> None:
    [first] = mllp.send(oru("R1"))
    [again] = mllp.send(oru("R1"))
    assert msa(first)[1:3] == msa(again)[1:3] == ["AA", "R1"]
    assert first == again
    assert fhir(mllp.server, "/Observation", _summary="count")["total"] == 3
    assert fhir(mllp.server, "/DiagnosticReport", _summary="count")["total"] == 1


def test_oru_maps_results_with_units_ranges_and_flags(mllp: Mllp) -> None:
    [ack] = mllp.send(oru("R2"))
    assert msa(ack)[1] == "AA"
    obs = {o["resource"]["code"]["coding"][0]["code"]: o["resource"]
           for o in fhir(mllp.server, "/Observation")["entry"]}
    chol = obs["2093-3"]
    assert chol["valueQuantity"]["value"] == 5.9 and chol["valueQuantity"]["unit"] == "mmol/L"
    assert chol["referenceRange"][0]["low"]["value"] == 3.1 and chol["referenceRange"][0]["high"]["value"] == 5.7
    assert chol["interpretation"][0]["coding"][0]["code"] == "H"
    assert obs["2085-9"]["interpretation"][0]["coding"][0]["code"] == "L"
    rep = fhir(mllp.server, "/DiagnosticReport")["entry"][0]["resource"]
    assert sorted(r["reference"] for r in rep["result"]) == sorted(f"Observation/{o['id']}" for o in obs.values())


def test_gb18030_message_with_chinese_name(mllp: Mllp) -> None:
    text = adt("G1", name="欧阳^娜娜", birth="19920304", sex="F", idno=id_number("19920304", "024"),
               mrn="MR-GB").replace("UNICODE UTF-8", "GB 18030-2000")
    [ack] = mllp.send(text.encode("gb18030"))
    assert msa(ack)[1] == "AA", ack
    p = fhir(mllp.server, "/Patient", identifier=f"{mrn_system(HOSPITAL)}|MR-GB")["entry"][0]["resource"]
    name = p["name"][0]
    assert (name.get("text") or name.get("family", "") + "".join(name.get("given", []))) == "欧阳娜娜"


def test_unknown_sender_missing_pid_and_bad_dates_are_naked_and_kept(mllp: Mllp) -> None:
    unknown = oru("U1").replace(HOSPITAL, "NOT-REGISTERED", 1)
    [a1] = mllp.send(unknown)
    assert msa(a1)[1] == "AR" and "MSH" in err(a1)
    [a2] = mllp.send(oru("U2", with_pid=False))
    assert msa(a2)[1] == "AE" and "PID" in err(a2)
    bad_date = adt("U3").replace("|19800517|", "|19801317|")
    [a3] = mllp.send(bad_date)
    assert msa(a3)[1] in ("AE", "AR") and err(a3)
    unknown_type = adt("U4").replace("ADT^A04^ADT_A01", "ZZZ^Z99")
    [a4] = mllp.send(unknown_type)
    assert msa(a4)[1] == "AR"
    # declared UTF-8, sent in GB 18030: refused, not stored as mojibake
    wrong = adt("U5", name="欧阳^娜娜", mrn="MR-U5").encode("gb18030")
    [a5] = mllp.send(wrong)
    assert msa(a5)[1] == "AR" and "UTF-8" in err(a5).upper()
    dead = mllp.server.client.get(mllp.server.root + "/ingest/dead-letters").json()["items"]
    assert {d["control_id"] for d in dead} >= {"U1", "U2", "U3", "U4", "U5"}
    assert all(d["reason"] for d in dead)
    assert fhir(mllp.server, "/Observation", _summary="count")["total"] == 0


def test_dead_letter_retry_after_the_cause_is_fixed(mllp: Mllp) -> None:
    other = "12110000400000002Y"
    [a1] = mllp.send(oru("D1").replace(HOSPITAL, other))
    assert msa(a1)[1] == "AR"
    [row] = mllp.server.client.get(mllp.server.root + "/ingest/dead-letters").json()["items"]
    # the institution gets registered; the dead letter is re-processed
    org = {"resourceType": "Organization", "name": "第二医院", "identifier": [{"system": ORGANIZATION, "value": other}]}
    assert mllp.server.client.post("/Organization", content=json.dumps(org)).status_code == 201
    r = mllp.server.client.post(mllp.server.root + f"/ingest/dead-letters/{row['id']}/retry")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "retried"
    assert fhir(mllp.server, "/Observation", _summary="count")["total"] == 3
    assert mllp.server.client.get(mllp.server.root + "/ingest/dead-letters").json()["items"] == []


def test_framing_faults_get_naks_and_the_listener_keeps_serving(mllp: Mllp) -> None:
    with socket.create_connection((mllp.host, mllp.port), timeout=10) as s:
        s.sendall(b"garbage before any frame" + START + adt("F1").encode() + END)
        data = b""
        while data.count(END) < 2:
            chunk = s.recv(65536)
            assert chunk, "connection closed early"
            data += chunk
        frames = [f.strip(b"\x0b") for f in data.split(END) if f]
        assert msa(frames[0].decode())[1] == "AR"      # the garbage
        assert msa(frames[1].decode())[1:3] == ["AA", "F1"]
    # a truncated frame, then the peer hangs up: kept as a dead letter
    with socket.create_connection((mllp.host, mllp.port), timeout=10) as s:
        s.sendall(START + adt("F2").encode()[:60])
    # another connection is served normally
    [ack] = mllp.send(adt("F3", mrn="MR-F3"))
    assert msa(ack)[1] == "AA"
    for _ in range(50):
        dead = mllp.server.client.get(mllp.server.root + "/ingest/dead-letters").json()["items"]
        if any("truncated" in (d["reason"] or "") for d in dead):
            break
        import time
        time.sleep(0.05)
    assert any("truncated" in (d["reason"] or "") for d in dead)


def test_a40_merge_links_the_two_records(mllp: Mllp) -> None:
    # Two registrations at the same hospital, no shared ID number: two persons.
    [a1] = mllp.send(adt("M1", mrn="OLD-1", idno=None, name="王^小红", birth="19700101", sex="F"))
    second = adt("M2", mrn="NEW-1", idno=None, name="汪^虹", birth="19710110", sex="F")
    [a2] = mllp.send(second.replace("13912345678", "13700000001").replace("朝阳区建国路88号", "海淀区学院路1号"))
    assert msa(a1)[1] == msa(a2)[1] == "AA"
    old = fhir(mllp.server, "/Patient", identifier=f"{mrn_system(HOSPITAL)}|OLD-1")["entry"][0]["resource"]
    new = fhir(mllp.server, "/Patient", identifier=f"{mrn_system(HOSPITAL)}|NEW-1")["entry"][0]["resource"]

    def person(p: dict[str, Any]) -> str:
        return str(next(ln["other"]["reference"] for ln in p["link"] if ln["type"] == "refer"))

    assert person(old) != person(new)
    merge = "\r".join([msh("ADT^A40^ADT_A39", "M3"), "EVN|A40|20261120100000",
                       pid(mrn="NEW-1", idno=None, name="汪^虹", birth="19710110", sex="F"),
                       f"MRG|OLD-1^^^{HOSPITAL}^MR"])
    [a3] = mllp.send(merge)
    assert msa(a3)[1] == "AA", a3
    old = mllp.server.client.get(f"/Patient/{old['id']}").json()
    new = mllp.server.client.get(f"/Patient/{new['id']}").json()
    assert old["active"] is False
    assert {"other": {"reference": f"Patient/{new['id']}"}, "type": "replaced-by"} in old["link"]
    assert person(old) == person(new)


def test_timeliness_per_institution_and_day(mllp: Mllp) -> None:
    now = datetime.now(BEIJING)
    recent = (now - timedelta(hours=2)).strftime("%Y%m%d%H%M%S")
    late = (now - timedelta(days=3)).strftime("%Y%m%d%H%M%S")
    m1 = oru("T1").replace("20261120080000", recent)
    m2 = oru("T2", mrn="MR-T2").replace("20261120080000", late)
    assert [msa(a)[1] for a in mllp.send(m1, m2)] == ["AA", "AA"]
    mllp.send(oru("T3", with_pid=False))
    r = mllp.server.client.get(mllp.server.root + "/ingest/timeliness", params={"institution": HOSPITAL})
    assert r.status_code == 200, r.text
    body = r.json()
    [day] = [d for d in body["days"] if d["channel"] == "hl7v2"]
    assert day["date"] == now.date().isoformat()
    assert day["messages"] == 2 and day["dead_letters"] == 1
    assert day["delay_hours"]["lt6h"] == 1 and day["delay_hours"]["lt7d"] == 1
    assert day["within_24h"] == 0.5
    assert body["last_seen"][HOSPITAL]["hl7v2"]["kind"] == "ORU^R01"
    r = mllp.server.client.get(mllp.server.root + "/ingest/timeliness", params={"from": "2026-13-01"})
    assert r.status_code == 400


def test_a_database_failure_is_an_ae_and_the_listener_keeps_serving(mllp: Mllp,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_fn: Any) -> Any:
        raise RuntimeError("disk full")

    monkeypatch.setattr(mllp.ingestor.repo, "transact", broken)
    [ack] = mllp.send(oru("X1"))
    assert msa(ack)[1:3] == ["AE", "X1"] and "resend" in err(ack)
    monkeypatch.undo()
    [ack] = mllp.send(oru("X1"))  # the resend is taken
    assert msa(ack)[1:3] == ["AA", "X1"]
    assert fhir(mllp.server, "/Observation", _summary="count")["total"] == 3


def test_concurrent_first_messages_of_a_day_are_all_acknowledged(mllp: Mllp) -> None:
    """Several connections recording a sender's first messages of the day at
    once: the timeliness roll-up row is created by one of them, every message
    is acknowledged (PostgreSQL: a SELECT-then-INSERT roll-up raced here)."""
    import threading

    # The patients exist already (registered over FHIR), so the messages queue
    # neither on the MPI's locks nor on one conditional create: they overlap.
    n_conn = 12
    for n in range(n_conn):
        patient = {"resourceType": "Patient", "identifier": [{"system": mrn_system(HOSPITAL), "value": f"MR-C{n}"}],
                   "name": [{"text": f"赵敏{n}"}], "gender": "female", "birthDate": "1990-02-02"}
        assert mllp.server.client.post("/Patient", content=json.dumps(patient)).status_code == 201
    acks: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(n_conn)

    def send(n: int) -> None:
        start.wait()
        [ack] = mllp.send(oru(f"P{n}", mrn=f"MR-C{n}", idno=None).replace("F456", f"F-P{n}"))
        with lock:
            acks.append(msa(ack)[1])

    threads = [threading.Thread(target=send, args=(n,)) for n in range(n_conn)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert acks == ["AA"] * n_conn
    body = mllp.server.client.get(mllp.server.root + "/ingest/timeliness",
                                  params={"institution": HOSPITAL}).json()
    assert sum(d["messages"] for d in body["days"]) == n_conn


def test_senders_outside_the_allowed_networks_are_refused_and_audited(server: Server) -> None:
    org = {"resourceType": "Organization", "name": "北京市测试医院",
           "identifier": [{"system": ORGANIZATION, "value": HOSPITAL}]}
    assert server.client.post("/Organization", content=json.dumps(org)).status_code == 201
    only_vpn = SecuritySettings(mllp_allow=("10.8.0.0/16",), mllp_dev_loopback=True)
    ingestor = Ingestor(FhirService(server.repo), authorise=mllp_authoriser(server.repo, only_vpn),
                        audit=server.app.platform.audit.record)
    port = free_port()
    listener = start_in_thread(ingestor, "127.0.0.1", port)
    try:
        ack = Mllp("127.0.0.1", port, server, ingestor).send(adt("NOPE1"))[0]
    finally:
        listener.stop()
    assert msa(ack)[1] == "AR" and "not authorised" in err(ack)
    assert fhir(server, "/Patient", _summary="count")["total"] == 0
    refusals = server.app.platform.audit.search(action="hl7", outcome="4")
    assert len(refusals) == 1 and refusals[0].code == "HT-0104"


def test_accepted_messages_are_audited_with_the_resident(mllp: Mllp) -> None:
    assert msa(mllp.send(adt("AUD1"))[0])[1] == "AA"
    rows = mllp.server.app.platform.audit.search(action="hl7", outcome="0")
    assert len(rows) == 1
    e = rows[0]
    assert e.account_id == f"mllp:{HOSPITAL}" and e.persons and e.persons[0].startswith("mpi-")
