"""No personal data in the logs (issue 18, item 3): a representative workload --
FHIR create, read and search over HTTP with names, ID numbers and phone numbers;
an HL7 v2 ADT over a real MLLP socket; a resident's sign-in with an SMS code --
runs with every logger at DEBUG, each record formatted as the server writes it
(hutong.logs.JsonFormatter), and no line holds any of the names, ID numbers,
phone numbers or codes used.  The test's own HTTP client (httpx, httpcore) is
left out of the scan: it is the caller, not the server, and logs its URLs.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator

import httpx
import pytest
from harness import Server, free_port

from hutong import logs
from hutong.fhir.service import FhirService
from hutong.ingest.hl7v2.listener import start_in_thread
from hutong.ingest.pipeline import Ingestor
from hutong.logs import JsonFormatter, request_id
from hutong.security.senders import mllp_authoriser
from hutong.security.settings import SecuritySettings
from hutong.systems import ID_CARD, ORGANIZATION

# Written for this test (valid GB 11643 check digits; numbers in the 139/137 ranges).
HTTP_NAME, HTTP_PINYIN, HTTP_ID, HTTP_PHONE = "司马青云", "Sima Qingyun", "110108197703142632", "13987654321"
HL7_NAME, HL7_ID, HL7_PHONE, HL7_MRN = "上官明月", "320502198509215524", "13755554444", "MRN-778899"
CLIENT_ONLY = ("httpx", "httpcore")
START, END = b"\x0b", b"\x1c\x0d"


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(CLIENT_ONLY):
            self.lines.append(self.format(record))


@pytest.fixture
def captured() -> Iterator[Keep]:
    keep = Keep()
    root = logging.getLogger()
    touched = [root] + [logging.getLogger(n) for n in ("hutong", "uvicorn", "uvicorn.error", "uvicorn.access")]
    saved = [(lg.level, lg.propagate) for lg in touched]
    root.addHandler(keep)
    for lg in touched:
        lg.setLevel(logging.DEBUG)
    # uvicorn's access logger as `hutong serve` configures it (it writes raw paths and queries)
    server_side = logs.config("json", "debug")["loggers"]["uvicorn.access"]
    touched[-1].setLevel(server_side["level"])
    touched[-1].propagate = server_side["propagate"]
    try:
        yield keep
    finally:
        root.removeHandler(keep)
        for lg, (level, propagate) in zip(touched, saved, strict=True):
            lg.setLevel(level)
            lg.propagate = propagate


def _mllp(port: int, message: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(START + message.encode() + END)
        buf = b""
        while END not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the listener")
            buf += chunk
    return buf.split(END, 1)[0].lstrip(START).decode()


def _adt(control: str, facility: str, name: str, idno: str, phone: str) -> str:
    return "\r".join([
        f"MSH|^~\\&|HIS|{facility}|HUTONG|REGION|20261201093000||ADT^A04^ADT_A01|{control}|P|2.5.1|||||CHN|UNICODE UTF-8",
        "EVN|A04|20261201093000",
        f"PID|1||{HL7_MRN}^^^{facility}^MR~{idno}^^^2.16.156.10011.1.3^NNCHN||{name}||19850921|F|||朝阳区建国路8号^^北京市"
        f"^^100022^CHN||{phone}",
        "PV1|1|O|内科门诊||||D001^钱^医生|||||||||||V-" + control])


def _boom() -> None:
    try:
        int(f"{HTTP_NAME} {HTTP_ID}")
    except ValueError:
        logging.getLogger("hutong.web").exception("parsing the resident's number failed")
    raise RuntimeError(f"resident {HTTP_NAME} {HTTP_ID} {HTTP_PHONE}")


def _workload(server: Server) -> dict[str, str]:
    c = server.client
    # FHIR over HTTP: create, read, search by identifier, name and phone; a refused create
    made = c.post("/Patient", json={
        "resourceType": "Patient", "name": [{"text": HTTP_NAME}, {"family": "Sima", "given": ["Qingyun"]}],
        "identifier": [{"system": ID_CARD, "value": HTTP_ID}], "gender": "male", "birthDate": "1977-03-14",
        "telecom": [{"system": "phone", "value": HTTP_PHONE}]})
    assert made.status_code == 201, made.text
    pid = made.json()["id"]
    assert c.get(f"/Patient/{pid}").status_code == 200
    for params in ({"identifier": f"{ID_CARD}|{HTTP_ID}"}, {"name": HTTP_NAME}, {"family": "Sima"},
                   {"telecom": HTTP_PHONE}, {"phone": HTTP_PHONE}):
        r = c.get("/Patient", params=params)
        assert r.status_code in (200, 400), r.text
    bad = c.post("/Patient", json={"resourceType": "Patient", "name": [{"text": HTTP_NAME}], "gender": HTTP_PHONE,
                                   "identifier": [{"system": ID_CARD, "value": HTTP_ID + "9"}]})
    assert bad.status_code in (400, 422), bad.text
    assert c.post("/Patient", content=b'{"resourceType": "Patient", "name": [{"text": "' + HTTP_NAME.encode() +
                  b'"}', headers={"content-type": "application/fhir+json"}).status_code == 400
    # an unexpected failure whose exception quotes resident data, on a gated and a public path
    server.app.add_api_route("/fhir-scan-boom", _boom, methods=["GET"])
    server.app.add_api_route("/auth/scan-boom", _boom, methods=["GET"])
    assert httpx.get(server.root + "/fhir-scan-boom", headers={"authorization": c.headers["authorization"]}
                     ).status_code == 500
    assert httpx.get(server.root + "/auth/scan-boom").status_code == 500
    # HL7 v2 over MLLP from a registered institution (loopback development senders)
    org = c.post("/Organization", json={"resourceType": "Organization", "name": "朝阳社区卫生服务中心",
                                        "identifier": [{"system": ORGANIZATION, "value": "H7701"}]})
    assert org.status_code == 201, org.text
    settings = SecuritySettings(mllp_dev_loopback=True)
    ingestor = Ingestor(FhirService(server.repo), authorise=mllp_authoriser(server.repo, settings),
                        audit=server.app.platform.audit.record)
    port = free_port()
    listener = start_in_thread(ingestor, "127.0.0.1", port)
    try:
        ack = _mllp(port, _adt("SCAN-1", "H7701", HL7_NAME, HL7_ID, HL7_PHONE))
        assert "MSA|AA|SCAN-1" in ack, ack
        ack = _mllp(port, _adt("SCAN-2", "H7701", HL7_NAME, HL7_ID, HL7_PHONE).replace("|19850921|", "|1985x921|"))
        assert "MSA|A" in ack, ack
        ack = _mllp(port, _adt("SCAN-3", "H9999", HL7_NAME, HL7_ID, HL7_PHONE))  # an unknown sender: refused
        assert "MSA|AR|SCAN-3" in ack or "MSA|AE|SCAN-3" in ack, ack
        _mllp(port, f"PID|1||{HL7_ID}||{HL7_NAME}||||||||{HL7_PHONE}")  # not a message at all
    finally:
        listener.stop()
    # the resident signs in with an SMS code
    person = server.app.platform.mpi.person_of(pid)
    server.accounts.add_resident(person, phone=HTTP_PHONE)
    sms = server.app.platform.sms
    with httpx.Client(base_url=server.root, timeout=30) as http:
        assert http.post("/auth/otp/send", json={"id_number": HTTP_ID}).status_code == 202
        text = str(sms.messages()[-1]["text"])
        code = next(w for w in text.replace("，", " ").split() if w.isdigit() and len(w) == 6)
        wrong = "000000" if code != "000000" else "111111"
        assert http.post("/auth/otp/verify", json={"id_number": HTTP_ID, "code": wrong}).status_code == 401
        r = http.post("/auth/otp/verify", json={"id_number": HTTP_ID, "code": code})
        assert r.status_code == 200, r.text
        me = httpx.get(server.url + f"/Patient/{person}/$everything",
                       headers={"authorization": f"Bearer {r.json()['access_token']}"}, timeout=30)
        assert me.status_code == 200 and HTTP_NAME in me.text
    return {"code": code, "pid": pid}


def test_logs_hold_no_names_id_numbers_phones_or_codes(server: Server, captured: Keep) -> None:
    used = _workload(server)
    lines = captured.lines
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    # the scan saw the server at work: its access lines (route templates), each with a request id
    access = [r for r in records if r["logger"] == "hutong.access"]
    assert any(r["route"] == "/fhir/{type}/{id}" and r["status"] == 200 for r in access), access[:5]
    assert all(r.get("request_id") for r in access)
    # the failure was logged -- its kind and stack, with the request's id -- but not its message
    failed = [r for r in records if r["logger"] == "hutong.web" and r.get("error") == "ValueError"]
    assert failed and failed[0]["stack"] and failed[0].get("request_id"), records
    forbidden = [HTTP_NAME, HTTP_PINYIN, "Qingyun", HTTP_ID, HTTP_ID.lower(), HTTP_ID[:-1], HTTP_PHONE,
                 HL7_NAME, HL7_ID, HL7_PHONE, HL7_MRN, used["code"]]
    leaks = [(word, line) for line in lines for word in forbidden if word in line]
    # json.dumps escapes non-ASCII only when asked; check the escaped forms too
    escaped = [json.dumps(w)[1:-1] for w in (HTTP_NAME, HL7_NAME)]
    leaks += [(word, line) for line in lines for word in escaped if word in line]
    assert not leaks, "\n".join(f"{w!r} in {line[:400]}" for w, line in leaks[:10])


def test_request_id_is_returned_and_a_personal_one_replaced(server: Server) -> None:
    r = server.client.get("/metadata")
    made = r.headers["x-request-id"]
    assert len(made) >= 16 and r.status_code == 200
    assert server.client.get("/metadata", headers={"x-request-id": "lb-7f3a-bb21"}).headers["x-request-id"] == \
        "lb-7f3a-bb21"
    for personal in (HTTP_ID, f"req-{HTTP_PHONE}", HTTP_NAME, "x" * 200, "a b c d e f", "req-\n-injected"):
        try:
            got = server.client.get("/metadata", headers={"x-request-id": personal}).headers["x-request-id"]
        except (httpx.LocalProtocolError, UnicodeEncodeError):
            continue  # the client itself would not send it
        assert got != personal and len(got) == 24
    assert request_id(None) != request_id(None)
    assert request_id("req-8c1d2e") == "req-8c1d2e" and request_id("req-110108") != "req-110108"
