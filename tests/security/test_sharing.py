"""Sharing requests and exports (hutong.security.sharing / export / sharing_cmd, hutong.web.sharing_routes):
the workflow on SQLite and PostgreSQL, every refusal, scope and de-identification checked in the files."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI, Request
from harness import serving
from starlette.responses import Response

from hutong.cli import main as cli_main
from hutong.errors import HutongError, operation_outcome
from hutong.fhir.assembly import open_repository
from hutong.fhir.service import FhirService
from hutong.security.events import REFUSED, SUCCESS, AuditRecord
from hutong.security.export import export
from hutong.security.guard import as_operator
from hutong.security.principal import Principal, Role
from hutong.security.settings import SecuritySettings
from hutong.security.sharing import DAY_MS, SharingRequests
from hutong.store.sql import SqlRepository
from hutong.web.sharing_routes import register

ID_CARD = "urn:oid:2.16.156.10011.1.3"
ORG_OID = "urn:oid:2.16.156.10011.1.5"
CN = SecuritySettings()
T_OLD = 1_577_836_800_000        # 2020-01-01T00:00Z: before every scope period below
T_NOW = 1_767_225_600_000        # 2026-01-01T00:00Z

REQUESTER = Principal(account_id="acct-cdc", role=Role.INSTITUTION, organization="CDC-BJ")
OFFICER = Principal(account_id="acct-officer", role=Role.COMMISSION)
OFFICER2 = Principal(account_id="acct-officer-2", role=Role.COMMISSION)
CLINICIAN = Principal(account_id="acct-doc", role=Role.CLINICIAN)

ASSESSMENT = {"data_classification": "sensitive personal information (health)", "volume_estimate": 5000,
              "recipient_security_level": 3, "cross_border": False, "risk": "medium",
              "mitigations": ["transfer over the government network", "recipient deletes after 1 year"],
              "assessor": "王评估, 市卫健委数据安全处"}


def idno(first17: str) -> str:
    """A valid GB 11643 ID number (check digit computed)."""
    w = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return first17 + "10X98765432"[sum(int(c) * k for c, k in zip(first17, w, strict=True)) % 11]


PEOPLE = [  # (family, given, ID number, phone, MRN, institution)
    ("张", "三丰", idno("11010519800101123"), "13911112222", "MRN-A-0001", "H001"),
    ("李", "四海", idno("11010819850202234"), "13933334444", "MRN-A-0002", "H001"),
    ("王", "五岳", idno("11010219900303345"), "13955556666", "MRN-B-0003", "H002"),
]


@pytest.fixture
def audits() -> list[AuditRecord]:
    return []


class Clock:
    def __init__(self, t: int) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


def seed(repo: SqlRepository) -> dict[str, Any]:
    """Two institutions, three residents, their observations (one old) and conditions."""
    saved = repo.clock
    clock = Clock(T_NOW)
    repo.clock = clock
    # Bound after the clock is set: the operator's handle is a copy of the repository.
    svc = FhirService(as_operator(repo))

    def create(res: dict[str, Any]) -> str:
        r = svc.create(res["resourceType"], orjson.dumps(res), {})
        assert r.status == 201 and r.body is not None
        return str(orjson.loads(r.body)["id"])

    try:
        orgs = {code: create({"resourceType": "Organization", "name": f"医院{code}",
                              "identifier": [{"system": ORG_OID, "value": code}]}) for code in ("H001", "H002")}
        out: dict[str, Any] = {"orgs": orgs, "patients": {}, "obs": {}, "old_obs": None, "conditions": []}
        for family, given, number, phone, mrn, inst in PEOPLE:
            pid = create({"resourceType": "Patient", "name": [{"family": family, "given": [given],
                                                               "text": family + given}],
                          "identifier": [{"system": ID_CARD, "value": number},
                                         {"system": f"urn:hutong:mrn:{inst}", "value": mrn}],
                          "telecom": [{"system": "phone", "value": phone}], "gender": "male",
                          "birthDate": f"{number[6:10]}-{number[10:12]}-{number[12:14]}",
                          "address": [{"text": "北京市西城区某胡同1号"}],
                          "managingOrganization": {"reference": f"Organization/{orgs[inst]}"}})
            out["patients"][family + given] = pid
            out["obs"][family + given] = create({
                "resourceType": "Observation", "status": "final",
                "identifier": [{"system": f"urn:hutong:lis:{inst}", "value": f"{mrn}-LAB-1"}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}], "text": "血糖"},
                "subject": {"reference": f"Patient/{pid}", "display": family + given},
                "performer": [{"reference": f"Organization/{orgs[inst]}"}],
                "note": [{"text": f"{family + given} 空腹"}],
                "valueQuantity": {"value": 5.6, "unit": "mmol/L"}})
            out["conditions"].append(create({
                "resourceType": "Condition", "code": {"text": "2型糖尿病"},
                "subject": {"reference": f"Patient/{pid}", "display": family + given}}))
        clock.t = T_OLD
        out["old_obs"] = create({"resourceType": "Observation", "status": "final", "code": {"text": "old"},
                                 "subject": {"reference": f"Patient/{out['patients']['张三丰']}"}})
    finally:
        repo.clock = saved
    return out


def body(dest: str, **scope: Any) -> dict[str, Any]:
    basis = scope.pop("basis", "public-health")
    sc = {"types": ["Patient", "Observation"], **scope}
    return {"organisation": "北京市疾控中心", "purpose": "糖尿病监测 (diabetes surveillance)", "basis": basis,
            "scope": sc, "recipient": "CDC data office", "destination": dest, "assessment": ASSESSMENT}


def approved(reg: SharingRequests, dest: str, **scope: Any) -> str:
    rid = reg.create(REQUESTER, body(dest, **scope)).id
    reg.submit(rid, REQUESTER)
    reg.approve(rid, OFFICER, "ok")
    return rid


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x]


def code_of(ei: pytest.ExceptionInfo[HutongError]) -> str:
    return ei.value.code


# ---------------------------------------------------------------------- workflow
def test_workflow_and_scoped_export(repo: SqlRepository, tmp_path: Path, audits: list[AuditRecord]) -> None:
    data = seed(repo)
    reg = SharingRequests(repo, audits.append, settings=CN, region_map={})
    dest = f"file://{tmp_path}/out"
    req = reg.create(REQUESTER, body(dest, institutions=["H001"], **{"from": "2024-01-01"}))
    assert req.status == "draft" and req.requester == "acct-cdc" and req.scope.institutions == ("H001",)
    assert reg.submit(req.id, REQUESTER).status == "submitted"
    ok = reg.approve(req.id, OFFICER, "scope limited to H001")
    assert ok.status == "approved" and ok.approver == "acct-officer" and ok.note == "scope limited to H001"
    assert ok.expires is not None and ok.decided is not None and ok.expires - ok.decided == 30 * DAY_MS
    assert [r.id for r in reg.list(status="approved")] == [req.id]

    result = export(repo, req.id, dest, REQUESTER, audits.append, settings=CN, region_map={})
    out = tmp_path / "out" / req.id
    assert result.directory == out and result.region == "CN"
    assert sorted(p.name for p in out.iterdir()) == ["Observation.ndjson", "Patient.ndjson", "manifest.json"]
    assert oct(out.stat().st_mode & 0o777) == "0o700"
    assert oct((out / "Patient.ndjson").stat().st_mode & 0o777) == "0o600"
    pats = lines(out / "Patient.ndjson")
    obs = lines(out / "Observation.ndjson")
    # Scope: H001's two residents only (no H002 resident, no golden person records) ...
    assert sorted(p["id"] for p in pats) == sorted([data["patients"]["张三丰"], data["patients"]["李四海"]])
    # ... their observations inside the period (not the 2020 one), no conditions (type not in scope).
    assert sorted(o["id"] for o in obs) == sorted([data["obs"]["张三丰"], data["obs"]["李四海"]])
    assert result.counts == {"Patient": 2, "Observation": 2}
    manifest = json.loads((out / "manifest.json").read_text())
    assert {o["type"]: o["count"] for o in manifest["output"]} == {"Patient": 2, "Observation": 2}
    assert manifest["request"] == f"SharingRequest/{req.id}"
    # Not de-identified: the identified export does carry names (so the scan in the de-identified test means something).
    assert "张" in (out / "Patient.ndjson").read_text(encoding="utf-8")

    done = reg.get(req.id)
    assert done.status == "used" and done.used is not None
    assert [(e.outcome, e.counts, e.actor) for e in done.exports] == [
        ("ok", {"Patient": 2, "Observation": 2}, "acct-cdc")]
    with pytest.raises(HutongError) as ei:  # single use
        export(repo, req.id, dest, REQUESTER, audits.append, settings=CN, region_map={})
    assert code_of(ei) == "HT-0167"
    assert [r.id for r in reg.list(status="used")] == [req.id]

    trail = [(a.action, a.outcome, a.extra.get("status"), a.principal.account_id if a.principal else None)
             for a in audits]
    assert trail == [("sharing-request", SUCCESS, "draft", "acct-cdc"),
                     ("sharing-request", SUCCESS, "submitted", "acct-cdc"),
                     ("sharing-approve", SUCCESS, "approved", "acct-officer"),
                     ("export", SUCCESS, None, "acct-cdc"),
                     ("export", REFUSED, None, "acct-cdc")]
    assert audits[3].extra["counts"] == "Observation=2,Patient=2" and audits[4].code == "HT-0167"
    # The audit records name no resident: free text and identifiers stay out of them.
    assert "张" not in repr(audits) and PEOPLE[0][2] not in repr(audits)


def test_period_to_and_all_institutions(repo: SqlRepository, tmp_path: Path, audits: list[AuditRecord]) -> None:
    data = seed(repo)
    reg = SharingRequests(repo, audits.append, settings=CN, region_map={})
    dest = f"file://{tmp_path}/x"
    rid = approved(reg, dest, types=["Observation", "Condition"], **{"to": "2021-12-31"})
    res = export(repo, rid, dest, REQUESTER, audits.append, settings=CN, region_map={})
    assert res.counts == {"Observation": 1}  # only the 2020 observation, every institution
    assert [o["id"] for o in lines(res.directory / "Observation.ndjson")] == [data["old_obs"]]
    # The same period through the institutions' compartments (H001 holds the 2020 observation).
    rid1 = approved(reg, f"{dest}1", types=["Patient", "Observation"], institutions=["H001"], **{"to": "2021-12-31"})
    res1 = export(repo, rid1, f"{dest}1", REQUESTER, audits.append, settings=CN, region_map={})
    assert res1.counts == {"Observation": 1}
    assert [o["id"] for o in lines(res1.directory / "Observation.ndjson")] == [data["old_obs"]]
    rid2 = approved(reg, f"{dest}2", types=["Patient", "Condition"])
    res2 = export(repo, rid2, f"{dest}2", REQUESTER, audits.append, settings=CN, region_map={})
    assert res2.counts == {"Patient": 3, "Condition": 3}  # golden person records are not exported


def test_deidentified_export_removes_direct_identifiers(repo: SqlRepository, tmp_path: Path,
                                                        audits: list[AuditRecord]) -> None:
    data = seed(repo)
    reg = SharingRequests(repo, audits.append, settings=CN, region_map={})
    dest = f"file://{tmp_path}/research"
    rid = approved(reg, dest, basis="research-deidentified", deidentified=True,
                   types=["Patient", "Observation", "Condition", "Organization"])
    key = b"k" * 32
    res = export(repo, rid, dest, REQUESTER, audits.append, settings=CN, region_map={},
                 pseudonym_key=lambda: key)
    assert res.deidentified and res.counts["Patient"] == 3 and res.counts["Observation"] == 4
    text = "".join(p.read_text(encoding="utf-8") for p in res.directory.iterdir())
    forbidden = [f"{f}{g}" for f, g, *_ in PEOPLE] + [f'"{f}"' for f, *_ in PEOPLE] + [
        f'"{g}"' for _, g, *_ in PEOPLE] + [x for *_, n, ph, mrn, _i in PEOPLE for x in (n, ph, mrn)]
    forbidden += list(data["patients"].values()) + list(data["obs"].values()) + ["胡同", ID_CARD, "空腹"]
    leaked = [s for s in forbidden if s in text]
    assert leaked == []
    pats = lines(res.directory / "Patient.ndjson")
    assert all(set(p) <= {"resourceType", "id", "meta", "gender", "birthDate", "managingOrganization"}
               for p in pats), pats
    assert sorted(p["birthDate"] for p in pats) == ["1980", "1985", "1990"]
    # Pseudonyms are HMAC-SHA256(key, "Type/id") and references still join inside the export.
    want = {hmac.new(key, f"Patient/{pid}".encode(), hashlib.sha256).hexdigest()[:32]
            for pid in data["patients"].values()}
    assert {p["id"] for p in pats} == want
    subjects = {o["subject"]["reference"] for o in lines(res.directory / "Observation.ndjson")}
    assert subjects <= {f"Patient/{p}" for p in want} and len(subjects) == 3
    assert all("display" not in o["subject"] and "identifier" not in o and "note" not in o
               for o in lines(res.directory / "Observation.ndjson"))
    # Clinical content stays.
    assert {o["code"].get("text") for o in lines(res.directory / "Observation.ndjson")} == {"血糖", "old"}


def test_random_pseudonym_key_per_export(sqlite_url: str, tmp_path: Path, audits: list[AuditRecord]) -> None:
    repo = open_repository(sqlite_url)
    try:
        data = seed(repo)
        reg = SharingRequests(repo, audits.append, settings=CN, region_map={})
        ids = []
        for n in (1, 2):
            dest = f"file://{tmp_path}/r{n}"
            rid = approved(reg, dest, basis="research-deidentified", deidentified=True, types=["Patient"])
            res = export(repo, rid, dest, REQUESTER, audits.append, settings=CN, region_map={})
            ids.append({p["id"] for p in lines(res.directory / "Patient.ndjson")})
        assert len(ids[0]) == 3 and not ids[0] & ids[1]  # not linkable across exports
        assert not ids[0] & set(data["patients"].values())
    finally:
        repo.db.close()


# ---------------------------------------------------------------------- refusals
def test_export_refusals(repo: SqlRepository, tmp_path: Path, audits: list[AuditRecord]) -> None:
    seed(repo)
    clock = Clock(T_NOW)
    reg = SharingRequests(repo, audits.append, settings=CN, region_map={}, clock=clock)
    dest = f"file://{tmp_path}/out"

    def refused(rid: str, code: str, to: str = dest, actor: Principal = REQUESTER,
                settings: SecuritySettings = CN) -> None:
        n = len(audits)
        with pytest.raises(HutongError) as ei:
            export(repo, rid, to, actor, audits.append, settings=settings, region_map={}, clock=clock)
        assert code_of(ei) == code, ei.value
        assert [(a.action, a.outcome, a.code) for a in audits[n:]] == [("export", REFUSED, code)]
        assert not (tmp_path / "out" / rid).exists()

    # Without approval: a draft, then a submitted request.
    rid = reg.create(REQUESTER, body(dest)).id
    refused(rid, "HT-0167")
    reg.submit(rid, REQUESTER)
    refused(rid, "HT-0167")
    # The requester cannot approve their own request (even as a commission officer), nor can a clinician.
    own = Principal(account_id=REQUESTER.account_id, role=Role.COMMISSION)
    for who, code in ((own, "HT-0166"), (CLINICIAN, "HT-0104"), (REQUESTER, "HT-0104")):
        with pytest.raises(HutongError) as ei:
            reg.approve(rid, who)
        assert code_of(ei) == code
        assert (audits[-1].action, audits[-1].outcome, audits[-1].code) == ("sharing-approve", REFUSED, code)
    assert reg.get(rid).status == "submitted"
    refused(rid, "HT-0167")
    # Rejected: no export, and no approval afterwards.
    with pytest.raises(HutongError) as ei:
        reg.reject(rid, OFFICER, "  ")
    assert code_of(ei) == "HT-0163"
    assert reg.reject(rid, OFFICER, "purpose too broad").status == "rejected"
    refused(rid, "HT-0167")
    with pytest.raises(HutongError) as ei:
        reg.approve(rid, OFFICER2)
    assert code_of(ei) == "HT-0165"

    # Expired: 30 days after approval.
    rid = approved(reg, dest)
    clock.t += 30 * DAY_MS
    assert reg.get(rid).effective_status(clock()) == "expired"
    assert [r.id for r in reg.list(status="expired")] == [rid]
    refused(rid, "HT-0167")
    assert reg.get(rid).status == "expired"  # persisted by the refused attempt

    # Another destination than the approved one; another actor than the requester.
    rid = approved(reg, dest)
    refused(rid, "HT-0168", to=f"file://{tmp_path}/elsewhere")
    refused(rid, "HT-0104", actor=CLINICIAN)
    refused(rid, "HT-0104", actor=OFFICER)
    refused("sr-nonexistent", "HT-0164")
    assert reg.get(rid).status == "approved"  # the refusals consumed nothing

    # A foreign region: approval refused under today's configuration ...
    foreign = "s3://research-bucket/x?region=us-east-1"
    rid = reg.create(REQUESTER, body(foreign)).id
    reg.submit(rid, REQUESTER)
    with pytest.raises(HutongError) as ei:
        reg.approve(rid, OFFICER)
    assert code_of(ei) == "HT-0160" and "us-east-1" in ei.value.message
    # ... and an approval granted under an older, wider configuration does not survive it.
    wide = SecuritySettings(allowed_regions=("CN", "US"))
    SharingRequests(repo, audits.append, settings=wide, region_map={}, clock=clock).approve(rid, OFFICER)
    refused(rid, "HT-0160", to=foreign)
    refused(rid, "HT-0169", to=foreign, settings=wide)  # inside the regions, but only file:// is written
    assert reg.get(rid).status == "approved"


def test_request_validation(repo: SqlRepository, tmp_path: Path, audits: list[AuditRecord]) -> None:
    reg = SharingRequests(repo, audits.append, settings=CN, region_map={})
    dest = f"file://{tmp_path}/out"
    bad: list[tuple[Callable[[dict[str, Any]], None], str]] = [
        (lambda b: b.update(basis="because"), "HT-0163"),
        (lambda b: b.update(basis="research-deidentified"), "HT-0163"),  # needs de-identification
        (lambda b: b["scope"].update(types=[]), "HT-0163"),
        (lambda b: b["scope"].update(types=["Nonsense"]), "HT-0163"),
        (lambda b: b["scope"].update({"from": "2025-02-01", "to": "2025-01-01"}), "HT-0163"),
        (lambda b: b.update(assessment={**ASSESSMENT, "risk": "high", "mitigations": []}), "HT-0163"),
        (lambda b: b.update(assessment={**ASSESSMENT, "recipient_security_level": 7}), "HT-0163"),
        (lambda b: b.update(assessment={k: v for k, v in ASSESSMENT.items() if k != "cross_border"}), "HT-0163"),
        (lambda b: b.update(purpose=""), "HT-0163"),
        (lambda b: b.update(destination="not a url"), "HT-0163"),
    ]
    for change, code in bad:
        b = body(dest)
        change(b)
        with pytest.raises(HutongError) as ei:
            reg.create(REQUESTER, b)
        assert code_of(ei) == code, b
    with pytest.raises(HutongError) as ei:
        reg.create(Principal(account_id="r1", role=Role.RESIDENT), body(dest))
    assert code_of(ei) == "HT-0104"
    with pytest.raises(HutongError) as ei:
        reg.get("sr-0000")
    assert code_of(ei) == "HT-0164"
    assert reg.list() == []


def test_free_text_goes_through_the_store_codec(sqlite_url: str, tmp_path: Path,
                                                audits: list[AuditRecord]) -> None:
    class Reversing:
        def encode(self, body: bytes) -> bytes:
            return b"R" + body[::-1]

        def decode(self, stored: bytes) -> bytes:
            assert stored[:1] == b"R"
            return stored[1:][::-1]

    repo = open_repository(sqlite_url)
    try:
        repo.codec = Reversing()
        reg = SharingRequests(repo, audits.append, settings=CN, region_map={})
        rid = reg.create(REQUESTER, body(f"file://{tmp_path}/o")).id
        reg.submit(rid, REQUESTER)
        reg.approve(rid, OFFICER, "批准: 仅限糖尿病监测")
        raw = bytes(repo.query("SELECT body FROM sharing_request WHERE id = ?", (rid,))[0][0])
        for plain in ("糖尿病监测", "CDC data office", "王评估", "批准", str(tmp_path)):
            assert plain.encode() not in raw
        got = reg.get(rid)
        assert got.purpose.startswith("糖尿病监测") and got.note == "批准: 仅限糖尿病监测"
        assert got.assessment.assessor == "王评估, 市卫健委数据安全处"
    finally:
        repo.db.close()


def test_concurrent_exports_of_one_request(repo: SqlRepository, tmp_path: Path,
                                           audits: list[AuditRecord]) -> None:
    seed(repo)
    reg = SharingRequests(repo, audits.append, settings=CN, region_map={})
    dest = f"file://{tmp_path}/c"
    rid = approved(reg, dest)
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        barrier.wait()
        try:
            export(repo, rid, dest, REQUESTER, audits.append, settings=CN, region_map={})
            outcomes.append("ok")
        except HutongError as e:
            outcomes.append(e.code)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes)[-1] == "ok" and outcomes.count("ok") == 1, outcomes
    assert set(outcomes) - {"ok"} <= {"HT-0167", "HT-0165"}
    assert [e.outcome for e in reg.get(rid).exports] == ["ok"]


# ---------------------------------------------------------------------- HTTP routes
@pytest.fixture
def sharing_api(sqlite_url: str) -> Iterator[tuple[str, list[AuditRecord]]]:
    """A FastAPI app with only the sharing routes; the caller's Principal comes from a test header."""
    repo = open_repository(sqlite_url)
    audits: list[AuditRecord] = []
    people = {p.account_id: p for p in (REQUESTER, OFFICER, OFFICER2, CLINICIAN,
                                        Principal(account_id="acct-other-hosp", role=Role.INSTITUTION),
                                        Principal(account_id="acct-auditor", role=Role.AUDITOR))}
    app = FastAPI()

    @app.middleware("http")
    async def as_principal(request: Request, call_next: Any) -> Any:
        who = request.headers.get("x-test-account")
        if who:
            request.state.principal = people[who]
        return await call_next(request)

    @app.exception_handler(HutongError)
    async def hutong_error(_r: Request, e: HutongError) -> Response:
        return Response(orjson.dumps(operation_outcome(e)), status_code=e.status, media_type="application/json")

    register(app, repo, CN, audits.append)
    try:
        with serving(app) as root:
            yield root, audits
    finally:
        repo.db.close()


def _code(r: httpx.Response) -> str:
    return str(r.json()["issue"][0]["details"]["coding"][0]["code"])


def test_routes(sharing_api: tuple[str, list[AuditRecord]], tmp_path: Path) -> None:
    base, audits = sharing_api
    with httpx.Client(base_url=base, timeout=30) as c:
        def as_(who: str) -> dict[str, str]:
            return {"x-test-account": who}

        dest = f"file://{tmp_path}/out"
        assert _code(c.post("/sharing/requests", json=body(dest))) == "HT-0100"  # not signed in
        r = c.post("/sharing/requests", json=body(dest), headers=as_("acct-doc"))
        assert r.status_code == 403 and _code(r) == "HT-0104"
        r = c.post("/sharing/requests", content=b"{nope", headers=as_("acct-cdc"))
        assert r.status_code == 400 and _code(r) == "HT-0001"
        r = c.post("/sharing/requests", json=body(dest), headers=as_("acct-cdc"))
        assert r.status_code == 201, r.text
        rid = r.json()["id"]
        assert r.json()["status"] == "draft" and r.json()["requester"] == "acct-cdc"

        r = c.post(f"/sharing/requests/{rid}/approve", headers=as_("acct-officer"))
        assert r.status_code == 409 and _code(r) == "HT-0165"  # still a draft
        r = c.post(f"/sharing/requests/{rid}/submit", headers=as_("acct-other-hosp"))
        assert r.status_code == 403 and _code(r) == "HT-0104"
        assert c.post(f"/sharing/requests/{rid}/submit", headers=as_("acct-cdc")).json()["status"] == "submitted"
        r = c.post(f"/sharing/requests/{rid}/approve", headers=as_("acct-cdc"))
        assert r.status_code == 403 and _code(r) == "HT-0104"
        r = c.post(f"/sharing/requests/{rid}/reject", json={}, headers=as_("acct-officer"))
        assert r.status_code == 400 and _code(r) == "HT-0163"
        r = c.post(f"/sharing/requests/{rid}/approve", json={"note": "同意"}, headers=as_("acct-officer"))
        assert r.status_code == 200 and r.json()["status"] == "approved" and r.json()["note"] == "同意"

        # Commission officer's own request: a colleague decides, never the officer.
        r = c.post("/sharing/requests", json=body(dest), headers=as_("acct-officer"))
        own = r.json()["id"]
        c.post(f"/sharing/requests/{own}/submit", headers=as_("acct-officer"))
        r = c.post(f"/sharing/requests/{own}/approve", headers=as_("acct-officer"))
        assert r.status_code == 403 and _code(r) == "HT-0166"
        r = c.post(f"/sharing/requests/{own}/reject", json={"note": "duplicate"}, headers=as_("acct-officer-2"))
        assert r.status_code == 200 and r.json()["status"] == "rejected"

        # Visibility: overseers see all; an institution its own; others nothing.
        assert {x["id"] for x in c.get("/sharing/requests", headers=as_("acct-auditor")).json()} == {rid, own}
        assert [x["id"] for x in c.get("/sharing/requests", headers=as_("acct-cdc")).json()] == [rid]
        assert c.get("/sharing/requests", headers=as_("acct-other-hosp")).json() == []
        assert [x["id"] for x in c.get("/sharing/requests?status=rejected",
                                       headers=as_("acct-officer")).json()] == [own]
        assert c.get(f"/sharing/requests/{rid}", headers=as_("acct-cdc")).json()["assessment"]["risk"] == "medium"
        r = c.get(f"/sharing/requests/{rid}", headers=as_("acct-other-hosp"))
        assert r.status_code == 403 and _code(r) == "HT-0104"
        r = c.get("/sharing/requests", headers=as_("acct-doc"))
        assert r.status_code == 403
        r = c.get("/sharing/requests/sr-missing", headers=as_("acct-officer"))
        assert r.status_code == 404 and _code(r) == "HT-0164"
    actions = [(a.action, a.outcome, a.code) for a in audits]
    assert ("sharing-approve", REFUSED, "HT-0166") in actions
    assert ("sharing-approve", SUCCESS, None) in actions


# ---------------------------------------------------------------------- command line
def test_cli(sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUTONG_ALLOWED_REGIONS", raising=False)
    monkeypatch.delenv("HUTONG_STORAGE_REGION", raising=False)
    repo = open_repository(sqlite_url)
    try:
        data = seed(repo)
    finally:
        repo.db.close()
    (tmp_path / "assessment.json").write_text(json.dumps(ASSESSMENT), encoding="utf-8")
    dest = f"file://{tmp_path}/cli-out"

    def run(*argv: str) -> Any:
        rc = cli_main(list(argv))
        out, err = capsys.readouterr()
        assert rc == 0, err
        return json.loads(out)

    db = ["--database", sqlite_url]
    req = run("sharing", *db, "request", "--requester", "acct-cdc", "--organisation", "北京市疾控中心",
              "--purpose", "监测", "--basis", "public-health", "--types", "Patient,Condition",
              "--institutions", "H002", "--recipient", "CDC", "--destination", dest,
              "--assessment", str(tmp_path / "assessment.json"))
    rid = req["id"]
    assert req["status"] == "draft" and req["scope"]["types"] == ["Patient", "Condition"]
    assert run("sharing", *db, "submit", rid)["status"] == "submitted"
    assert cli_main(["sharing", *db, "approve", rid, "--approver", "acct-cdc"]) == 2  # four-eyes
    assert "HT-0166" in capsys.readouterr().err
    assert cli_main(["export", *db, "--request", rid, "--to", dest]) == 2
    assert "HT-0167" in capsys.readouterr().err
    assert run("sharing", *db, "approve", rid, "--approver", "acct-officer", "--note", "ok")["status"] == "approved"
    assert [r["id"] for r in run("sharing", *db, "list", "--status", "approved")] == [rid]
    res = run("export", *db, "--request", rid, "--to", dest)
    assert res["counts"] == {"Patient": 1, "Condition": 1}
    assert [p["id"] for p in lines(Path(res["directory"]) / "Patient.ndjson")] == [data["patients"]["王五岳"]]
    shown = run("sharing", *db, "show", rid)
    assert shown["status"] == "used" and shown["exports"][0]["counts"] == {"Patient": 1, "Condition": 1}
    # Every step is in the audit log.
    from hutong.security.audit import AuditLog

    repo = open_repository(sqlite_url)
    try:
        log = AuditLog(repo)
        got = [(e.action, e.outcome) for e in reversed(log.search(limit=50))
               if e.action in ("sharing-request", "sharing-approve", "export")]
        assert got == [("sharing-request", SUCCESS), ("sharing-request", SUCCESS), ("sharing-approve", REFUSED),
                       ("export", REFUSED), ("sharing-approve", SUCCESS), ("export", SUCCESS)]
        assert log.verify().ok
    finally:
        repo.db.close()
