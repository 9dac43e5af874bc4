"""One ingestion envelope (issue 13, item 5): every channel's message becomes an
Envelope, the Ingestor answers a Receipt, and the channels say it in their
own terms -- HL7 ACKs (hutong.ingest.hl7v2.ack) and HTTP statuses
(hutong.web.ingest_routes) -- from the same decisions; one audit record
shape for MLLP and CDA; a dead-letter retry acts as the message's original
sender, narrowed by the operator, never as trusted code."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from cda_helpers import MINIMAL, make_fixtures
from fhirapi import issue_code
from harness import Server, serve_app
from pgcluster import free_port

from hutong.fhir.service import FhirService
from hutong.ingest.envelope import CDA, HL7V2, Credential, Envelope, Location, Outcome, Receipt
from hutong.ingest.hl7v2.ack import for_receipt
from hutong.ingest.hl7v2.framing import send_messages
from hutong.ingest.hl7v2.listener import start_in_thread
from hutong.ingest.pipeline import NOT_AUTHORISED, Ingestor
from hutong.security.senders import mllp_authoriser
from hutong.security.settings import SecuritySettings
from hutong.systems import ORGANIZATION
from hutong.web.receipts import status_of

CDA_TYPE = {"content-type": "application/hl7-cda+xml"}
CODE_A = make_fixtures.SENDER_CODE          # the CDA fixtures' custodian
CODE_B = make_fixtures.OTHER_SENDER_CODE
HOSPITAL = "12110000400000001X"
ORU = ("MSH|^~\\&|LIS|" + HOSPITAL + "|HUTONG|REGION|20261120093000||ORU^R01^ORU_R01|C42|P|2.5.1|||||CHN|UNICODE UTF-8\r"
       "PID|1||MR1^^^" + HOSPITAL + "^MR||张^伟||19800517|M\r"
       "OBR|1|P1|F1|24331-1^血脂四项^LN|||20261120080000\r"
       "OBX|1|NM|2093-3^总胆固醇^LN||5.9|mmol/L|3.1-5.7|H|||F")


def segments(ack: bytes) -> dict[str, list[str]]:
    return {s.split("|", 1)[0]: s.split("|") for s in ack.decode().split("\r") if s}


# ------------------------------------------------------------------ Receipt -> ACK, Receipt -> HTTP
ENV = Envelope(HL7V2, ORU.encode(), 1_795_000_000_000, "127.0.0.1:1", Credential(), sender=HOSPITAL,
               control_id="C42", kind="ORU^R01")
QUEUED = "HT-0195 the persons were not merged: the merge waits for review by an MPI steward"

# receipt, MSA-1, ERR (None: no ERR) as (ERR-2 location, ERR-3 condition, ERR-4 severity, text in ERR-8), HTTP
TABLE: list[tuple[Receipt, str, tuple[str, str, str, str] | None, int]] = [
    (Receipt(Outcome.STORED, ENV, references=("Observation/1",), message_id=7), "AA", None, 201),
    (Receipt(Outcome.STORED, ENV, code="HT-0195", reason=QUEUED, condition="0", location=Location("MRG", 1)),
     "AA", ("MRG^1^1", "0", "W", "HT-0195"), 201),
    (Receipt(Outcome.DUPLICATE, ENV, message_id=7), "AA", None, 200),
    (Receipt(Outcome.DEAD, ENV, code="HT-0312", reason="PID segment missing", condition="100",
             location=Location("PID")), "AE", ("PID^1", "100", "E", "PID segment missing"), 422),
    (Receipt(Outcome.DEAD, ENV, code="HT-0311", reason="unknown sending facility", condition="204",
             location=Location("MSH", 4), resend=False), "AR", ("MSH^1^4", "204", "E", "unknown sending"), 422),
    (Receipt(Outcome.DEAD, ENV, code="HT-0314", reason="application internal error", condition="207"),
     "AE", ("", "207", "E", "internal error"), 422),
    (Receipt(Outcome.REFUSED, ENV, code="HT-0190", reason=f"{NOT_AUTHORISED} (HT-0190): MSH-4 (B) does not name A",
             condition="207", location=Location("MSH", 4), resend=False), "AR",
     ("MSH^1^4", "207", "E", "HT-0190"), 403),
]


@pytest.mark.parametrize(("receipt", "code", "err", "http"), TABLE)
def test_receipt_to_ack_and_http(receipt: Receipt, code: str, err: tuple[str, str, str, str] | None,
                                 http: int) -> None:
    ack = for_receipt(receipt)
    seg = segments(ack)
    assert seg["MSA"][1:3] == [code, "C42"]
    assert seg["MSH"][8] == "ACK^R01^ACK" and seg["MSH"][17] == "UNICODE UTF-8"  # the sender's terms
    if err is None:
        assert "ERR" not in seg
    else:
        where, condition, severity, text = err
        assert seg["ERR"][2] == where and seg["ERR"][3].split("^")[0] == condition
        assert seg["ERR"][4] == severity and text in seg["ERR"][8]
    assert status_of(receipt) == http


def test_a_resend_is_answered_with_the_same_bytes() -> None:
    """The ACK is dated and numbered from the receipt, so the duplicate's receipt
    (carrying the first envelope) gets byte-identical ACKs."""
    first = Receipt(Outcome.STORED, ENV, message_id=7)
    again = Receipt(Outcome.DUPLICATE, ENV, message_id=7)
    assert for_receipt(first) == for_receipt(again)
    other = Receipt(Outcome.STORED, replace(ENV, control_id="C43", raw=ENV.raw.replace(b"|C42|", b"|C43|")),
                    message_id=8)
    assert segments(for_receipt(other))["MSH"][9] != segments(for_receipt(first))["MSH"][9]


def test_an_unreadable_message_is_acknowledged_from_its_salvaged_header(repo: Any) -> None:
    ing = Ingestor(FhirService(repo))
    ack = ing.hl7(ORU.replace("UNICODE UTF-8", "KLINGON").encode())
    seg = segments(ack)
    assert seg["MSA"][1:3] == ["AR", "C42"] and seg["ERR"][2] == "MSH^1^18"


# ------------------------------------------------------------------ through the real server
def register(server: Server, code: str, name: str) -> str:
    r = server.client.post("/Organization", content=json.dumps({
        "resourceType": "Organization", "name": name, "identifier": [{"system": ORGANIZATION, "value": code}]}))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def his_of(server: Server, org_a: str) -> Any:
    """Institution A's HIS: an OAuth2 client that may create and update its records."""
    accounts = server.app.platform.authenticator.tokens.accounts
    his, _secret = accounts.add_client("HIS A", organization=CODE_A, organization_id=org_a, scopes_text="system/*.cru")
    return his


def count(server: Server, type: str) -> int:
    return int(server.client.get(f"/{type}", params={"_summary": "count"}).json()["total"])


@pytest.fixture
def dev_server(monkeypatch: pytest.MonkeyPatch, db_url: str) -> Iterator[Server]:
    """The server as ``HUTONG_MLLP_DEV_LOOPBACK=1 hutong serve`` runs it."""
    monkeypatch.setenv("HUTONG_MLLP_DEV_LOOPBACK", "1")
    yield from serve_app(db_url)


def listen(server: Server) -> Any:
    ing = Ingestor(FhirService(server.repo), authorise=mllp_authoriser(server.repo, SecuritySettings(
        mllp_dev_loopback=True)), audit=server.app.platform.audit.record)
    port = free_port()
    return start_in_thread(ing, "127.0.0.1", port), port


def test_one_audit_record_shape_for_mllp_and_cda(dev_server: Server) -> None:
    server = dev_server
    org_a = register(server, CODE_A, "互通示范医院")
    register(server, HOSPITAL, "北京市测试医院")
    listener, port = listen(server)
    try:
        [ack] = asyncio.run(send_messages("127.0.0.1", port, [ORU.encode()]))
    finally:
        listener.stop()
    assert segments(ack)["MSA"][1] == "AA"
    his = his_of(server, org_a)
    with server.as_(his) as a:
        r = a.post(server.root + "/ingest/cda", content=(MINIMAL / "C0001.xml").read_bytes(), headers=CDA_TYPE)
    assert r.status_code == 201, r.text
    audit = server.app.platform.audit
    # (the HTTP gate keeps its own row of the request, action "cda" too, without the channel's fields)
    [hl7] = [e for e in audit.search(action="hl7") if "channel" in e.extra]
    [cda] = [e for e in audit.search(action="cda") if "channel" in e.extra]
    for e, account, kind in ((hl7, f"mllp:{HOSPITAL}", "ORU^R01"), (cda, his.id, "C0001")):
        assert e.outcome == "0" and e.account_id == account and e.interaction.endswith(kind)
        assert e.persons and e.persons[0].startswith("mpi-") and e.entities
        assert e.purpose == "own-institution" and e.peer and e.peer.startswith("127.0.0.1")
    # the same fields, each channel's values
    assert set(hl7.extra) == set(cda.extra) == {"channel", "outcome", "sender_auth", "authenticated_as",
                                                "credential", "sender", "control_id", "message_id"}
    assert (hl7.extra["channel"], cda.extra["channel"]) == (HL7V2, CDA)
    assert (hl7.extra["sender_auth"], cda.extra["sender_auth"]) == ("none", "bearer-token")
    assert (hl7.extra["sender"], cda.extra["sender"]) == (HOSPITAL, CODE_A)


def test_cda_refused_for_another_institution_is_403_and_kept_unretryable(server: Server) -> None:
    org_a = register(server, CODE_A, "互通示范医院")
    register(server, CODE_B, "另一家医院")
    his = his_of(server, org_a)
    doc_b = (MINIMAL / "C0001.xml").read_bytes().replace(CODE_A.encode(), CODE_B.encode())
    with server.as_(his) as a:
        r = a.post(server.root + "/ingest/cda", content=doc_b, headers=CDA_TYPE)
    assert r.status_code == 403 and issue_code(r) == "HT-0102", r.text
    assert count(server, "DocumentReference") == 0
    [dead] = server.client.get(server.root + "/ingest/dead-letters").json()["items"]
    assert dead["reason"].startswith(NOT_AUTHORISED)
    r = server.client.post(server.root + f"/ingest/dead-letters/{dead['id']}/retry")
    assert r.status_code == 409 and issue_code(r) == "HT-0197"


def test_a_retry_acts_as_the_original_sender_and_cannot_file_it_under_another(server: Server) -> None:
    """Institution A sends a document naming a custodian nobody registered (a
    dead letter).  Somebody then registers that code as institution B.  The
    operator's retry runs as A (the sender on record), so it cannot file A's
    message under B: refused, kept, and refused for good."""
    org_a = register(server, CODE_A, "互通示范医院")
    his = his_of(server, org_a)
    doc_b = (MINIMAL / "C0001.xml").read_bytes().replace(CODE_A.encode(), CODE_B.encode())
    with server.as_(his) as a:
        r = a.post(server.root + "/ingest/cda", content=doc_b, headers=CDA_TYPE)
    assert r.status_code == 422 and "HT-0311" in r.text, r.text
    [dead] = server.client.get(server.root + "/ingest/dead-letters").json()["items"]
    register(server, CODE_B, "另一家医院")
    r = server.client.post(server.root + f"/ingest/dead-letters/{dead['id']}/retry")   # the platform operator
    assert r.status_code == 403 and issue_code(r) == "HT-0102", r.text
    assert count(server, "DocumentReference") == 0 and count(server, "Binary") == 0
    [still] = server.client.get(server.root + "/ingest/dead-letters").json()["items"]
    assert still["id"] == dead["id"] and still["attempts"] == 2 and still["reason"].startswith(NOT_AUTHORISED)
    assert server.client.post(server.root + f"/ingest/dead-letters/{dead['id']}/retry").status_code == 409
    # The retry's audit row names the original sender (A's system) and the operator who retried.
    [retry] = [e for e in server.app.platform.audit.search(action="cda") if e.extra.get("retry_of")]
    operator = server.app.platform.authenticator.authenticate(server.client.headers["authorization"], None)
    assert retry.outcome == "4" and retry.code == "HT-0102" and retry.account_id == his.id
    assert retry.organization == CODE_A and retry.extra["retried_by"] == operator.account_id
    assert retry.extra["retry_of"] == str(dead["id"])


def test_a_retry_stores_as_the_sender_and_names_the_operator(dev_server: Server) -> None:
    """An MLLP message from a sender registered only afterwards: the retry
    re-authorises the connection on record (the same sender rules as the
    listener) and writes as that institution; the audit row says who retried."""
    server = dev_server
    listener, port = listen(server)
    try:
        [ack] = asyncio.run(send_messages("127.0.0.1", port, [ORU.encode()]))
    finally:
        listener.stop()
    assert segments(ack)["MSA"][1] == "AR"
    [dead] = server.client.get(server.root + "/ingest/dead-letters").json()["items"]
    register(server, HOSPITAL, "北京市测试医院")
    r = server.client.post(server.root + f"/ingest/dead-letters/{dead['id']}/retry")
    assert r.status_code == 200 and r.json()["status"] == "retried", r.text
    assert count(server, "Observation") == 1
    [row] = [e for e in server.app.platform.audit.search(action="hl7", outcome="0") if e.extra.get("retry_of")]
    operator = server.app.platform.authenticator.authenticate(server.client.headers["authorization"], None)
    assert row.account_id == f"mllp:{HOSPITAL}" and row.organization == HOSPITAL
    assert row.extra["retried_by"] == operator.account_id and row.persons


def test_only_oversight_roles_retry(server: Server) -> None:
    org_a = register(server, CODE_A, "互通示范医院")
    his = his_of(server, org_a)
    with server.as_(his) as a:
        a.post(server.root + "/ingest/cda", content=b"<not-cda/>", headers=CDA_TYPE)
        [dead] = server.client.get(server.root + "/ingest/dead-letters").json()["items"]
        r = a.post(server.root + f"/ingest/dead-letters/{dead['id']}/retry")
    assert r.status_code == 403
