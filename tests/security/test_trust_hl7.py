"""Issue 12, findings 4 and 5: trust in HL7 senders and in identity merges,
through a real MLLP socket (TLS with client certificates from a test CA) into
the real server of a two-hospital region (tests/security/region.py).

Finding 4: an institution registers a resident, registers an invented person,
and sends ADT^A40 merging the first into the second: the resident's golden
person must not be retired, their sources stay, their $everything and SMS
sign-in keep working, and the merge waits in the MPI review queue.
Finding 5: MSH-4 alone said who sent a message: a sender naming another
institution rewrote its registration and filed results under it.  Senders are
now authenticated per connection; MSH-4 must match (AR otherwise, audited).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from harness import Server
from pgcluster import free_port
from region import R_ID, S_ID, Region, build

from hutong.fhir.assembly import open_repository
from hutong.fhir.service import FhirService, mpi_of
from hutong.ingest.hl7v2.framing import END, START
from hutong.ingest.hl7v2.listener import start_in_thread
from hutong.ingest.pipeline import Ingestor
from hutong.mpi.relink import relink
from hutong.security.guard import as_operator
from hutong.security.senders import connection_identifier, mllp_authoriser, server_tls
from hutong.security.settings import SecuritySettings
from hutong.systems import ORGANIZATION

GOLDEN = ("_tag:not", "https://fhir.hutong.dev/CodeSystem/mpi|golden")


# ------------------------------------------------------------------ a test PKI
@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path
    der: bytes


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: Pair
    a: Pair          # client certificate of hospital A (organizationIdentifier = A's code)
    b: Pair          # of hospital B
    anonymous: Pair  # issued by the CA but naming no institution
    rogue_a: Pair    # names hospital A, issued by another CA


def _issue(dir: Path, name: str, subject: x509.Name, issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey,
           key: ec.EllipticCurvePrivateKey, *, ca: bool = False, server: bool = False) -> Pair:
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False, encipher_only=False,
                                          decipher_only=False), critical=True)
    elif server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(
            ipaddress.ip_address("127.0.0.1"))]), critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    cert = b.sign(issuer_key, hashes.SHA256())
    cert_path, key_path = dir / f"{name}.crt", dir / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return Pair(cert_path, key_path, cert.public_bytes(serialization.Encoding.DER))


def _name(cn: str, org_id: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org_id is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, org_id))
    return x509.Name(attrs)


CODE_A, CODE_B = "12110000400000001A", "12110000400000002B"  # region.build's institutions


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key, rogue_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name, rogue_name = _name("Hutong region test CA"), _name("Somebody else's CA")
    ca = _issue(d, "ca", ca_name, ca_name, ca_key, ca_key, ca=True)
    _issue(d, "rogue-ca", rogue_name, rogue_name, rogue_key, rogue_key, ca=True)

    def leaf(name: str, subject: x509.Name, *, server: bool = False, signer: tuple[x509.Name, Any] = (
            ca_name, ca_key)) -> Pair:
        return _issue(d, name, subject, signer[0], signer[1], ec.generate_private_key(ec.SECP256R1()), server=server)

    return Pki(ca.cert, leaf("server", _name("localhost"), server=True), leaf("a", _name("HIS A", CODE_A)),
               leaf("b", _name("HIS B", CODE_B)), leaf("anon", _name("some client")),
               leaf("rogue-a", _name("HIS A", CODE_A), signer=(rogue_name, rogue_key)))


def tls_settings(pki: Pki, **kw: Any) -> SecuritySettings:
    return SecuritySettings(mllp_tls_cert=pki.server.cert, mllp_tls_key=pki.server.key, mllp_tls_ca=pki.ca, **kw)


# ------------------------------------------------------------------ MLLP
@contextmanager
def listening(server: Server, settings: SecuritySettings) -> Iterator[int]:
    """The listener as `hutong serve --mllp-port` wires it (hutong.web.serve_cmd)."""
    ingestor = Ingestor(FhirService(server.repo), authorise=mllp_authoriser(server.repo, settings),
                        audit=server.app.platform.audit.record)
    port = free_port()
    listener = start_in_thread(ingestor, "127.0.0.1", port, tls=server_tls(settings),
                               identify=connection_identifier(settings))
    try:
        yield port
    finally:
        listener.stop()


def _exchange(sock: socket.socket, messages: tuple[str, ...]) -> list[str]:
    acks, buf = [], b""
    for m in messages:
        sock.sendall(START + m.encode() + END)
        while END not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the listener")
            buf += chunk
        frame, buf = buf.split(END, 1)
        acks.append(frame.lstrip(START).decode())
    return acks


def send_tls(port: int, pki: Pki, client: Pair | None, *messages: str) -> list[str]:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if client is not None:
        ctx.load_cert_chain(str(client.cert), str(client.key))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        return _exchange(s, messages)


def send_plain(port: int, *messages: str) -> list[str]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        return _exchange(s, messages)


def msh(kind: str, control: str, facility: str) -> str:
    return f"MSH|^~\\&|HIS|{facility}|HUTONG|REGION|20261120093000||{kind}|{control}|P|2.5.1|||||CHN|UNICODE UTF-8"


def pid(mrn: str, authority: str, name: str, birth: str, sex: str, *, idno: str | None = None,
        phone: str = "13700000009") -> str:
    ids = f"{mrn}^^^{authority}^MR" + (f"~{idno}^^^2.16.156.10011.1.3^NNCHN" if idno else "")
    return f"PID|1||{ids}||{name}||{birth}|{sex}|||海淀区学院路1号^^北京市^^100083^CHN||{phone}"


def adt(control: str, facility: str, trigger: str, patient: str) -> str:
    return "\r".join([msh(f"ADT^{trigger}^ADT_A01", control, facility), f"EVN|{trigger}|20261120093000", patient,
                      "PV1|1|O|精神科门诊^^^^^^^^精神科||||D009^赵^医生|||||||||||V-" + control])


def oru(control: str, facility: str, patient: str) -> str:
    return "\r".join([msh("ORU^R01^ORU_R01", control, facility), patient,
                      "OBR|1|P9|F9^LIS|11330-6^精神状况评估^LN|||20261120080000||||||||||||||||20261120100000|||F",
                      "OBX|1|ST|11330-6^精神状况评估^LN||重度抑郁，有自杀倾向||||||F|||20261120080000"])


def a40(control: str, facility: str, survivor: str, prior_mrn: str, prior_authority: str) -> str:
    return "\r".join([msh("ADT^A40^ADT_A39", control, facility), "EVN|A40|20261120100000", survivor,
                      f"MRG|{prior_mrn}^^^{prior_authority}^MR"])


def segment(ack: str, name: str) -> list[str]:
    return next((s.split("|") for s in ack.split("\r") if s.startswith(name + "|")), [])


def msa(ack: str) -> list[str]:
    return segment(ack, "MSA")


# ------------------------------------------------------------------ region facts
@pytest.fixture
def region(server: Server) -> Region:
    return build(server)


def stored(reg: Region, type: str, id: str) -> dict[str, Any]:
    r = reg.server.client.get(f"/{type}/{id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def count(reg: Region, type: str, **params: str) -> int:
    r = reg.server.client.get(f"/{type}", params={**params, "_summary": "count"})
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


def person_of(patient: dict[str, Any]) -> str:
    return str(next(ln["other"]["reference"] for ln in patient.get("link") or () if ln["type"] == "refer"))[8:]


def everything_ids(reg: Region, who: str, person: str) -> set[str]:
    with reg.client(who) as c:
        r = c.get(f"/Patient/{person}/$everything", params={"_count": "1000"})
        assert r.status_code == 200, r.text
        return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in r.json().get("entry", [])}


def sms_sign_in(reg: Region, id_number: str) -> tuple[int, dict[str, Any]]:
    """The resident's own sign-in: ID number + the code the SMS gateway got."""
    root = reg.server.root
    sms = reg.server.app.platform.sms
    before = len(sms.messages())
    with httpx.Client(base_url=root, timeout=30) as http:
        assert http.post("/auth/otp/send", json={"id_number": id_number}).status_code == 202
        sent = sms.messages()[before:]
        if not sent:
            return 0, {}
        code = next(w for w in str(sent[-1]["text"]).replace("，", " ").split() if w.isdigit() and len(w) == 6)
        r = http.post("/auth/otp/verify", json={"id_number": id_number, "code": code})
        return r.status_code, r.json()


def review_items(reg: Region) -> list[dict[str, Any]]:
    r = reg.server.client.get(reg.server.root + "/mpi/review")
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


# ================================================================== finding 5: sender spoofing
def test_f5_msh4_naming_another_institution_is_refused_with_ar_and_audited(region: Region, pki: Pki) -> None:
    reg = region
    pb_before = stored(reg, "Patient", reg.ids["pB"])
    obs_before = count(reg, "Observation", subject=f"Patient/{reg.ids['pB']}")
    rewrite = adt("SPOOF1", CODE_B, "A08", pid("B-1", CODE_B, "冒^名", "19491231", "F", idno=R_ID,
                                                  phone="13000000666"))
    fabricate = oru("SPOOF2", CODE_B, pid("B-1", CODE_B, "王^小红", "19491231", "F", idno=R_ID))
    with listening(reg.server, tls_settings(pki)) as port:
        acks = send_tls(port, pki, pki.a, rewrite, fabricate)   # hospital A's certificate, MSH-4 = B
    for ack, control in zip(acks, ("SPOOF1", "SPOOF2"), strict=True):
        assert msa(ack)[1:3] == ["AR", control], ack
        assert "HT-0190" in "|".join(segment(ack, "ERR")) and CODE_A in "|".join(segment(ack, "ERR"))
    # B's registration and records are as they were.
    pb_after = stored(reg, "Patient", reg.ids["pB"])
    assert pb_after["meta"]["versionId"] == pb_before["meta"]["versionId"]
    assert pb_after["name"] == pb_before["name"] and pb_after["telecom"] == pb_before["telecom"]
    assert count(reg, "Observation", subject=f"Patient/{reg.ids['pB']}") == obs_before
    # Audited: who really sent (A, by certificate) and what it claimed (B).
    refusals = [e for e in reg.server.app.platform.audit.search(action="hl7", outcome="4") if e.code == "HT-0190"]
    assert len(refusals) == 2
    assert all(e.extra.get("authenticated_as") == CODE_A and e.claimed and CODE_B in e.claimed and
               e.extra.get("sender_auth") == "tls-certificate" and "sha256:" in e.extra.get("credential", "")
               for e in refusals)
    # Kept as dead letters of A (the real sender), and never retried into the store.
    dead = reg.server.client.get(reg.server.root + "/ingest/dead-letters").json()["items"]
    spoofed = [d for d in dead if d["control_id"] in ("SPOOF1", "SPOOF2")]
    assert len(spoofed) == 2 and {d["sender"] for d in spoofed} == {CODE_A}
    r = reg.server.client.post(reg.server.root + f"/ingest/dead-letters/{spoofed[0]['id']}/retry")
    assert r.status_code == 409 and "HT-0197" in r.text
    assert stored(reg, "Patient", reg.ids["pB"])["meta"]["versionId"] == pb_before["meta"]["versionId"]


def test_f5_own_institution_over_tls_is_accepted(region: Region, pki: Pki) -> None:
    reg = region
    update = adt("OWN1", CODE_A, "A08", pid("A-1", CODE_A, "王^小红", "19491231", "F", idno=R_ID))
    with listening(reg.server, tls_settings(pki)) as port:
        [ack] = send_tls(port, pki, pki.a, update)
        [ack_b] = send_tls(port, pki, pki.b, oru("OWN2", CODE_B, pid("B-1", CODE_B, "王^小红", "19491231", "F",
                                                                         idno=R_ID)))
    assert msa(ack)[1:3] == ["AA", "OWN1"] and msa(ack_b)[1:3] == ["AA", "OWN2"]
    assert count(reg, "Encounter", subject=f"Patient/{reg.ids['pA']}") == 2   # region's + this visit
    ok = reg.server.app.platform.audit.search(action="hl7", outcome="0")
    assert {e.account_id for e in ok} == {f"mllp:{CODE_A}", f"mllp:{CODE_B}"}
    assert all(e.extra.get("sender_auth") == "tls-certificate" for e in ok)


def test_f5_msh4_naming_two_institutions_is_refused(region: Region, pki: Pki) -> None:
    """HD components: A's certificate cannot slip B in beside its own code."""
    msg = adt("TWO1", f"{CODE_B}^{CODE_A}", "A08", pid("B-1", CODE_B, "冒^名", "19491231", "F"))
    with listening(region.server, tls_settings(pki)) as port:
        [ack] = send_tls(port, pki, pki.a, msg)
    assert msa(ack)[1] == "AR" and "HT-0190" in ack


def test_f5_plain_tcp_and_foreign_certificates_never_reach_the_pipeline(region: Region, pki: Pki) -> None:
    reg = region
    before = count(reg, "Patient")
    msg = adt("PLAIN1", CODE_A, "A04", pid("A-NEW", CODE_A, "新^人", "20000101", "M"))
    with listening(reg.server, tls_settings(pki)) as port:
        with pytest.raises((ConnectionError, OSError)):
            send_plain(port, msg)                              # TLS is required: no ACK, nothing stored
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            send_tls(port, pki, None, msg)                     # no client certificate
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            send_tls(port, pki, pki.rogue_a, msg)              # "hospital A" from another CA
        [ack] = send_tls(port, pki, pki.anonymous, msg)        # our CA, but no institution named
    assert msa(ack)[1] == "AR" and "HT-0192" in ack
    assert count(reg, "Patient") == before
    assert not any(e.account_id for e in reg.server.app.platform.audit.search(action="hl7", outcome="0"))


def test_f5_pinned_certificate_fingerprint_names_the_institution(region: Region, pki: Pki) -> None:
    pin = f"sha256:{hashlib.sha256(pki.anonymous.der).hexdigest()}={CODE_B}"
    with listening(region.server, tls_settings(pki, mllp_certs=(pin,))) as port:
        [to_b] = send_tls(port, pki, pki.anonymous, adt("PIN1", CODE_B, "A08",
                                                        pid("B-1", CODE_B, "王^小红", "19491231", "F", idno=R_ID)))
        [to_a] = send_tls(port, pki, pki.anonymous, adt("PIN2", CODE_A, "A08",
                                                        pid("A-1", CODE_A, "冒^名", "19491231", "F")))
    assert msa(to_b)[1] == "AA" and msa(to_a)[1] == "AR" and "HT-0190" in to_a


def test_f5_unauthenticated_senders_are_refused_by_default(region: Region) -> None:
    """No TLS, no configured address, no development mode: the default refuses
    (before, any sender on an allowed network was whoever its MSH-4 said)."""
    reg = region
    pb_before = stored(reg, "Patient", reg.ids["pB"])
    spoof = adt("DEF1", CODE_B, "A08", pid("B-1", CODE_B, "冒^名", "19491231", "F", idno=R_ID, phone="13000000666"))
    with listening(reg.server, SecuritySettings()) as port:
        [ack] = send_plain(port, spoof)
    assert msa(ack)[1] == "AR" and "HT-0191" in ack
    assert stored(reg, "Patient", reg.ids["pB"])["meta"]["versionId"] == pb_before["meta"]["versionId"]
    [row] = [e for e in reg.server.app.platform.audit.search(action="hl7", outcome="4")]
    assert row.code == "HT-0191" and row.extra.get("sender_auth") == "none"


def test_f5_configured_sender_address_is_one_institution(region: Region) -> None:
    """The transition mapping (HUTONG_MLLP_SENDERS): an address is exactly one institution."""
    reg = region
    settings = SecuritySettings(mllp_senders=(f"127.0.0.1/32={CODE_A}",))
    with listening(reg.server, settings) as port:
        [own, other] = send_plain(port, adt("ADDR1", CODE_A, "A08", pid("A-1", CODE_A, "王^小红", "19491231", "F",
                                                                       idno=R_ID)),
                                  adt("ADDR2", CODE_B, "A08", pid("B-1", CODE_B, "冒^名", "19491231", "F")))
    assert msa(own)[1] == "AA" and msa(other)[1] == "AR" and "HT-0190" in other
    [row] = [e for e in reg.server.app.platform.audit.search(action="hl7", outcome="4")]
    assert row.extra.get("sender_auth") == "configured-address" and row.extra.get("authenticated_as") == CODE_A


def test_f5_serve_over_tls_and_refuses_to_start_unauthenticated(tmp_path: Path, pki: Pki) -> None:
    """`hutong serve --mllp-port`: with no sender authentication it does not start;
    with --mllp-tls-* it speaks TLS and knows senders by certificate."""
    db = f"sqlite:///{tmp_path}/serve.db"
    repo = open_repository(db)
    for code in (CODE_A, CODE_B):
        org = {"resourceType": "Organization", "name": code, "identifier": [{"system": ORGANIZATION, "value": code}]}
        assert FhirService(as_operator(repo)).create("Organization", json.dumps(org).encode(), {}).status == 201
    repo.db.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUTONG_MLLP")}
    env["PYTHONUNBUFFERED"] = "1"
    base = [sys.executable, "-m", "hutong.cli", "serve", "--database", db, "--port", str(free_port()),
            "--workers", "1", "--mllp-port"]
    refused = subprocess.run([*base, str(free_port())], env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "must be authenticated" in refused.stderr
    mllp = free_port()
    proc = subprocess.Popen([*base, str(mllp), "--mllp-tls-cert", str(pki.server.cert), "--mllp-tls-key",
                             str(pki.server.key), "--mllp-tls-ca", str(pki.ca)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", mllp), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline and proc.poll() is None, "listener did not start"
                time.sleep(0.2)
        own = adt("SRV1", CODE_A, "A04", pid("A-7", CODE_A, "孙^七", "19770707", "M"))
        spoof = adt("SRV2", CODE_B, "A04", pid("B-7", CODE_B, "孙^七", "19770707", "M"))
        acks = send_tls(mllp, pki, pki.a, own, spoof)
        assert [msa(a)[1] for a in acks] == ["AA", "AR"]
        with pytest.raises((ConnectionError, OSError)):
            send_plain(mllp, own)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ================================================================== finding 4: identity hijack by A40
def _register_invented(port: int, pki: Pki, control: str = "INV1") -> str:
    invented = adt(control, CODE_A, "A04", pid("A-X", CODE_A, "钱^多多", "19900909", "M", phone="13000000777"))
    [ack] = send_tls(port, pki, pki.a, invented)
    assert msa(ack)[1] == "AA", ack
    return "A-X"


def _patient_by_mrn(reg: Region, code: str, mrn: str) -> dict[str, Any]:
    r = reg.server.client.get("/Patient", params=[("identifier", f"urn:hutong:mrn:{code}|{mrn}"), GOLDEN])
    [entry] = r.json()["entry"]
    return dict(entry["resource"])


def test_f4_a40_cannot_retire_a_residents_person(region: Region, pki: Pki) -> None:
    reg = region
    person_r = reg.ids["R"]
    whole = everything_ids(reg, "R", person_r)
    assert {f"Observation/{reg.ids['obsA']}", f"Observation/{reg.ids['obsB']}"} <= whole
    with listening(reg.server, tls_settings(pki)) as port:
        _register_invented(port, pki)
        invented = _patient_by_mrn(reg, CODE_A, "A-X")
        hijack = a40("HIJACK1", CODE_A, pid("A-X", CODE_A, "钱^多多", "19900909", "M"), "A-1", CODE_A)
        [ack] = send_tls(port, pki, pki.a, hijack)
        [again] = send_tls(port, pki, pki.a, a40("HIJACK2", CODE_A, pid("A-X", CODE_A, "钱^多多", "19900909", "M"),
                                                 "A-1", CODE_A))
    # Accepted, with a warning that the persons were not merged (ERR-4 severity W).
    assert msa(ack)[1:3] == ["AA", "HIJACK1"], ack
    err = segment(ack, "ERR")
    assert err and err[4] == "W" and "HT-0195" in err[8]
    assert msa(again)[1] == "AA"
    # The resident's golden person stands, with every source still linked.
    golden = stored(reg, "Patient", person_r)
    assert golden["active"] is True and not any(ln["type"] == "replaced-by" for ln in golden.get("link") or ())
    assert person_of(stored(reg, "Patient", reg.ids["pA"])) == person_r
    assert person_of(stored(reg, "Patient", reg.ids["pB"])) == person_r
    assert person_of(invented) != person_r
    assert sorted(mpi_of(reg.server.repo).sources(person_r)) == sorted([reg.ids["pA"], reg.ids["pB"]])
    # Their own record is whole and their SMS sign-in still works.
    assert everything_ids(reg, "R", person_r) == whole
    status, token = sms_sign_in(reg, R_ID)
    assert status == 200, token
    # One request for a steward: A's registration of R, and the invented person.
    items = [i for i in review_items(reg) if i["patient"] == reg.ids["pA"]]
    assert len(items) == 1 and items[0]["person"] == person_of(invented)
    assert items[0]["reason"].startswith("merge request") and CODE_A in items[0]["reason"]
    # A relink (new model) leaves the request for the steward.
    relink(mpi_of(reg.server.repo))
    assert [i["id"] for i in review_items(reg) if i["patient"] == reg.ids["pA"]] == [items[0]["id"]]
    assert mpi_of(reg.server.repo).person_of(reg.ids["pB"]) == person_r


def test_f4_a40_merging_only_own_registrations_works_as_before(region: Region, pki: Pki) -> None:
    reg = region
    with listening(reg.server, tls_settings(pki)) as port:
        acks = send_tls(port, pki, pki.a,
                        adt("OWNM1", CODE_A, "A04", pid("A-OLD", CODE_A, "孙^丽", "19700101", "F",
                                                        phone="13000000101")),
                        adt("OWNM2", CODE_A, "A04", pid("A-NEW", CODE_A, "孙^莉", "19710110", "F",
                                                        phone="13000000202")))
        assert [msa(a)[1] for a in acks] == ["AA", "AA"]
        old, new = _patient_by_mrn(reg, CODE_A, "A-OLD"), _patient_by_mrn(reg, CODE_A, "A-NEW")
        assert person_of(old) != person_of(new)
        [ack] = send_tls(port, pki, pki.a, a40("OWNM3", CODE_A, pid("A-NEW", CODE_A, "孙^莉", "19710110", "F"),
                                               "A-OLD", CODE_A))
    assert msa(ack)[1] == "AA" and not segment(ack, "ERR"), ack
    old_now, new_now = stored(reg, "Patient", old["id"]), stored(reg, "Patient", new["id"])
    assert old_now["active"] is False
    assert {"other": {"reference": f"Patient/{new['id']}"}, "type": "replaced-by"} in old_now["link"]
    assert person_of(old_now) == person_of(new_now)
    retired = stored(reg, "Patient", person_of(old))         # the prior's person, merged away
    assert retired["active"] is False
    assert {"other": {"reference": f"Patient/{person_of(new_now)}"}, "type": "replaced-by"} in retired["link"]
    assert not [i for i in review_items(reg) if i["patient"] in (old["id"], new["id"])]


def test_f4_a40_naming_another_institutions_registration_is_refused(region: Region, pki: Pki) -> None:
    """MRNs in an A40 are the sender's own (the mapping scopes them), but an ID
    number reaches every institution's registrations of that resident."""
    reg = region
    ps_before = stored(reg, "Patient", reg.ids["pS"])          # resident S: registered at B only
    s_id = f"{S_ID}^^^2.16.156.10011.1.3^NNCHN"
    with listening(reg.server, tls_settings(pki)) as port:
        _register_invented(port, pki)
        prior_is_b = "\r".join([msh("ADT^A40^ADT_A39", "XB1", CODE_A), "EVN|A40|20261120100000",
                                pid("A-X", CODE_A, "钱^多多", "19900909", "M"), f"MRG|{s_id}"])
        survivor_is_b = "\r".join([msh("ADT^A40^ADT_A39", "XB2", CODE_A), "EVN|A40|20261120100000",
                                   f"PID|1||{s_id}", f"MRG|A-X^^^{CODE_A}^MR"])
        acks = send_tls(port, pki, pki.a, prior_is_b, survivor_is_b)
    assert msa(acks[0])[1] == "AE" and "HT-0194" in acks[0], acks[0]
    # The second one registers S at A (PID-3 by ID number: A's own new registration,
    # linked to S) and merges A's invented person into it: only A's registrations
    # move, S is not retired.  Whatever A may do, B's registration stays S's.
    ps = stored(reg, "Patient", reg.ids["pS"])
    assert ps["meta"]["versionId"] == ps_before["meta"]["versionId"] and ps.get("active", True) is True
    assert person_of(ps) == reg.ids["S"] and stored(reg, "Patient", reg.ids["S"])["active"] is True
    assert reg.ids["pS"] in mpi_of(reg.server.repo).sources(reg.ids["S"])


def test_f4_mpi_merge_by_an_institution_is_refused(region: Region, pki: Pki) -> None:
    reg = region
    with listening(reg.server, tls_settings(pki)) as port:
        _register_invented(port, pki)
    invented_person = person_of(_patient_by_mrn(reg, CODE_A, "A-X"))
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "source-person", "valueReference": {"reference": f"Patient/{reg.ids['R']}"}},
        {"name": "target-person", "valueReference": {"reference": f"Patient/{invented_person}"}}]}
    link = {"resourceType": "Parameters", "parameter": [
        {"name": "source-patient", "valueReference": {"reference": f"Patient/{reg.ids['pB']}"}},
        {"name": "target-person", "valueReference": {"reference": f"Patient/{invented_person}"}}]}
    for who in ("sysA", "docA"):
        with reg.client(who) as c:
            assert c.post("/Patient/$mpi-merge", json=body).status_code == 403
            assert c.post("/Patient/$mpi-link", json=link).status_code == 403
            assert c.post("/Patient/$mpi-unlink", json={"resourceType": "Parameters", "parameter": [
                {"name": "source-patient", "valueReference": {"reference": f"Patient/{reg.ids['pB']}"}}]}
                          ).status_code == 403
    assert stored(reg, "Patient", reg.ids["R"])["active"] is True
    assert sorted(mpi_of(reg.server.repo).sources(reg.ids["R"])) == sorted([reg.ids["pA"], reg.ids["pB"]])
