"""Who may see and write what (hutong.security.policy), through the real server
on SQLite and PostgreSQL: institutions, clinicians, residents, consent,
break-glass, sensitive categories, and the audit row of every refusal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fhirapi import issue_code
from harness import Server
from region import Region, build

from hutong.security.events import REFUSED


@pytest.fixture
def region(server: Server) -> Iterator[Region]:
    yield build(server)


def ids_of(bundle: dict[str, Any], mode: str = "match") -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == mode}


def refused(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert issue_code(r) == code
    assert "entry" not in r.json()


def consent(person: str, actor: str, *, kind: str = "permit", labels: tuple[str, ...] = (),
            end: str = "2099-01-01") -> dict[str, Any]:
    prov: dict[str, Any] = {"type": kind, "period": {"start": "2020-01-01", "end": end},
                            "actor": [{"role": {"coding": [{"code": "PRCP"}]}, "reference": {"reference": actor}}]}
    if labels:
        prov["securityLabel"] = [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": x}
                                 for x in labels]
    return {"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}], "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
            "patient": {"reference": f"Patient/{person}"}, "provision": prov}


# ---------------------------------------------------------------- clinicians
def test_own_institution_records_only_without_a_basis(region: Region) -> None:
    ids = region.ids
    with region.client("docB") as b:
        # B's last encounter with R is 700 days old: outside the treatment window.
        assert b.get(f"/Observation/{ids['obsB']}").status_code == 200  # B's own record
        refused(b.get(f"/Observation/{ids['obsA']}"), 403, "HT-0103")
        refused(b.get("/Observation", params={"patient": ids["pA"]}), 403, "HT-0103")
        refused(b.get(f"/Patient/{ids['pA']}"), 403, "HT-0103")
        found = b.get("/Observation", params={"_count": "100"}).json()
        assert ids_of(found) == {ids["obsB"], ids["obsS"], ids["hivB"], ids["trap"]}
        assert found["total"] == 4
        count = b.get("/Observation", params={"_summary": "count"}).json()
        assert count["total"] == 4


def test_treatment_relationship_opens_other_institutions_records_but_not_sensitive_ones(region: Region) -> None:
    ids = region.ids
    with region.client("docA") as a:
        # A saw R five days ago: B's records of R are open to A's clinicians ...
        assert a.get(f"/Observation/{ids['obsB']}").status_code == 200
        assert a.get(f"/Condition/{ids['dxB']}").status_code == 200
        # ... except the sensitive categories (PSY and HIV at B), which stay masked
        refused(a.get(f"/Condition/{ids['psyB']}"), 403, "HT-0103")
        refused(a.get(f"/Observation/{ids['hivB']}"), 403, "HT-0103")
        conds = a.get("/Condition", params={"patient": ids["pB"]}).json()
        assert ids_of(conds) == {ids["dxB"]}
        # A's own psychiatric diagnosis is A's own record
        assert a.get(f"/Condition/{ids['psyA']}").status_code == 200
        everything = a.get(f"/Patient/{ids['R']}/$everything").json()
        got = {e["resource"]["id"] for e in everything["entry"]}
        assert {ids["obsA"], ids["obsB"], ids["dxB"], ids["psyA"]} <= got
        assert not got & {ids["psyB"], ids["hivB"], ids["obsS"]}
        # S has never been seen at A
        refused(a.get(f"/Observation/{ids['obsS']}"), 403, "HT-0103")
        refused(a.get(f"/Patient/{ids['S']}/$everything"), 403, "HT-0103")


def test_consent_grants_then_revocation_withdraws(region: Region) -> None:
    ids = region.ids
    with region.client("R") as r, region.client("docB") as b:
        refused(b.get(f"/Observation/{ids['obsA']}"), 403, "HT-0103")
        made = r.post("/Consent", json=consent(ids["R"], f"Practitioner/{ids['docB']}"))
        assert made.status_code == 201, made.text
        assert b.get(f"/Observation/{ids['obsA']}").status_code == 200
        basis = b.get(f"/Patient/{ids['R']}/$access-basis").json()
        assert {"name": "basis", "valueCode": "consent"} in basis["parameter"]
        # a consent without labels does not unmask sensitive categories
        refused(b.get(f"/Condition/{ids['psyA']}"), 403, "HT-0103")
        withdrawn = {**made.json(), "status": "inactive"}
        assert r.put(f"/Consent/{withdrawn['id']}", json=withdrawn).status_code == 200
        refused(b.get(f"/Observation/{ids['obsA']}"), 403, "HT-0103")


def test_category_consent_unmasks_only_that_category(region: Region) -> None:
    ids = region.ids
    with region.client("R") as r, region.client("docA") as a:
        refused(a.get(f"/Condition/{ids['psyB']}"), 403, "HT-0103")
        assert r.post("/Consent", json=consent(ids["R"], f"Organization/{ids['orgA']}",
                                               labels=("PSY",))).status_code == 201
        assert a.get(f"/Condition/{ids['psyB']}").status_code == 200
        refused(a.get(f"/Observation/{ids['hivB']}"), 403, "HT-0103")


def test_resident_deny_overrides_treatment_relationship(region: Region) -> None:
    ids = region.ids
    with region.client("R") as r, region.client("docA") as a:
        assert a.get(f"/Observation/{ids['obsB']}").status_code == 200
        assert r.post("/Consent", json=consent(ids["R"], f"Organization/{ids['orgA']}",
                                               kind="deny")).status_code == 201
        refused(a.get(f"/Observation/{ids['obsB']}"), 403, "HT-0103")
        assert a.get(f"/Observation/{ids['obsA']}").status_code == 200  # A's own record stays A's


def test_expired_consent_counts_for_nothing(region: Region) -> None:
    ids = region.ids
    with region.client("R") as r, region.client("docB") as b:
        assert r.post("/Consent", json=consent(ids["R"], f"Practitioner/{ids['docB']}",
                                               end="2021-01-01")).status_code == 201
        refused(b.get(f"/Observation/{ids['obsA']}"), 403, "HT-0103")


def test_break_glass_needs_a_reason_is_flagged_and_the_resident_is_told(region: Region) -> None:
    ids = region.ids
    server = region.server
    with region.client("docB") as b:
        refused(b.get(f"/Condition/{ids['psyA']}"), 403, "HT-0103")
        short = b.post(f"/Patient/{ids['pA']}/$break-glass", json={"reason": "急"})
        assert short.status_code == 403 and issue_code(short) == "HT-0106"
        missing = b.post(f"/Patient/{ids['pA']}/$break-glass", json={"resourceType": "Parameters"})
        assert missing.status_code == 400 and issue_code(missing) == "HT-0106"
        ok = b.post(f"/Patient/{ids['pA']}/$break-glass", json={
            "resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "昏迷送急诊，需查既往病史与用药"}]})
        assert ok.status_code == 200, ok.text
        assert b.get(f"/Condition/{ids['psyA']}").status_code == 200
        assert b.get(f"/Observation/{ids['obsA']}").status_code == 200
    with region.client("R") as r:
        # a resident cannot break the glass
        refused(r.post(f"/Patient/{ids['pS']}/$break-glass", json={"reason": "I want to see my neighbour"}),
                403, "HT-0104")
    audit = server.app.platform.audit
    flagged = audit.break_glass_list(None)
    assert len(flagged) >= 1
    text = server.app.platform.sms.path.read_text(encoding="utf-8")
    assert "紧急授权" in text and "昏迷" not in text  # told, without the reason


# ---------------------------------------------------------------- residents
def test_resident_sees_own_record_across_institutions_and_nothing_else(region: Region) -> None:
    ids = region.ids
    with region.client("R") as r:
        for key in ("obsA", "obsB", "psyA", "psyB", "hivB"):
            assert r.get(f"/{'Condition' if key.startswith('psy') else 'Observation'}/{ids[key]}").status_code == 200
        refused(r.get(f"/Observation/{ids['obsS']}"), 403, "HT-0103")
        refused(r.get(f"/Patient/{ids['pS']}"), 403, "HT-0103")
        refused(r.get("/Observation", params={"patient": ids["pS"]}), 403, "HT-0103")
        refused(r.get("/Observation", params={"subject": f"Patient/{ids['pS']}", "_summary": "count"}), 403,
                "HT-0103")
        refused(r.get(f"/Patient/{ids['S']}/$everything"), 403, "HT-0103")
        mine = r.get("/Observation", params={"_count": "100"}).json()
        assert ids_of(mine) == {ids["obsA"], ids["obsB"], ids["hivB"], ids["trap"]} and mine["total"] == 4
        # _include through a reference to S: S's Patient must not come back
        inc = r.get("/Observation", params={"_id": ids["trap"], "_include": "Observation:performer"}).json()
        assert ids_of(inc) == {ids["trap"]} and ids_of(inc, "include") == set()
        rev = r.get("/Patient", params={"_id": ids["pB"], "_revinclude": "Observation:subject"}).json()
        assert ids["obsS"] not in ids_of(rev, "include")
        # residents write only Consents about themselves (their scopes say so, and so does the policy)
        obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
               "subject": {"reference": f"Patient/{ids['pA']}"}}
        refused(r.post("/Observation", json=obs), 403, "HT-0101")
    with region.client("R", "patient/*.cruds") as wide:
        refused(wide.post("/Observation", json=obs), 403, "HT-0104")
    with region.client("R") as r:
        refused(r.post("/Consent", json=consent(ids["S"], f"Organization/{ids['orgA']}")), 403, "HT-0103")
    with region.client("S") as s:
        got = s.get("/Observation", params={"_count": "100"}).json()
        # the trap names S as performer: it is in S's compartment too, so S sees that one row
        assert ids_of(got) == {ids["obsS"], ids["trap"]}


def test_system_history_and_directory(region: Region) -> None:
    with region.client("R") as r:
        refused(r.get("/_history"), 403, "HT-0104")
        refused(r.get("/Observation/_history"), 403, "HT-0104")
        assert r.get(f"/Organization/{region.ids['orgA']}").status_code == 200  # directory data
    with region.client("commission") as c:
        refused(c.get(f"/Observation/{region.ids['obsA']}"), 403, "HT-0104")
        refused(c.get("/Observation"), 403, "HT-0104")
    with region.client("auditor") as a:
        refused(a.get("/Patient"), 403, "HT-0101")  # no Patient scope at all


# ---------------------------------------------------------------- institution systems
def test_institution_writes_only_its_own_patients_records(region: Region) -> None:
    ids = region.ids
    with region.client("sysB") as b:
        refused(b.post("/Observation", json={
            "resourceType": "Observation", "status": "final", "code": {"text": "glucose"},
            "subject": {"reference": f"Patient/{ids['pA']}"}}), 403, "HT-0102")
        refused(b.put(f"/Observation/{ids['obsA']}", json={
            "resourceType": "Observation", "id": ids["obsA"], "status": "final", "code": {"text": "x"},
            "subject": {"reference": f"Patient/{ids['pB']}"}}), 403, "HT-0102")
        refused(b.delete(f"/Observation/{ids['obsA']}"), 403, "HT-0102")
        refused(b.post("/Patient", json={"resourceType": "Patient", "managingOrganization": {
            "reference": f"Organization/{ids['orgA']}"}}), 403, "HT-0102")
        # a Patient without managingOrganization becomes B's
        made = b.post("/Patient", json={"resourceType": "Patient", "name": [{"text": "新患者"}]})
        assert made.status_code == 201
        assert made.json()["managingOrganization"]["reference"] == f"Organization/{ids['orgB']}"
        # a transaction with one foreign entry is refused whole
        tx = b.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "ok"},
                          "subject": {"reference": f"Patient/{ids['pB']}"}},
             "request": {"method": "POST", "url": "Observation"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "not mine"},
                          "subject": {"reference": f"Patient/{ids['pA']}"}},
             "request": {"method": "POST", "url": "Observation"}}]})
        assert tx.status_code == 403, tx.text
        # conditional criteria never match another institution's record
        cond = b.post("/Patient", json={"resourceType": "Patient", "identifier": [
            {"system": "urn:oid:2.16.156.10011.1.3", "value": "11010519491231002X"}]},
            headers={"If-None-Exist": "identifier=urn:oid:2.16.156.10011.1.3|11010519491231002X"})
        assert cond.status_code == 200 and cond.json()["id"] == ids["pB"]
    count = region.server.client.get("/Observation", params={"code": "x", "_summary": "count"}).json()["total"]
    assert count == 0  # nothing of the refused writes is stored


def test_scope_escalation_and_narrow_scopes(region: Region) -> None:
    ids = region.ids
    with region.client("sysB", "system/Observation.rs") as b:
        assert b.get(f"/Observation/{ids['obsB']}").status_code == 200
        refused(b.post("/Observation", json={"resourceType": "Observation", "status": "final",
                                             "code": {"text": "x"}, "subject": {"reference": f"Patient/{ids['pB']}"}}),
                403, "HT-0101")
        refused(b.get(f"/Patient/{ids['pB']}"), 403, "HT-0101")


def test_every_refusal_is_audited(region: Region) -> None:
    audit = region.server.app.platform.audit
    before = len(audit.search(outcome=REFUSED, limit=1000))
    with region.client("R") as r:
        r.get(f"/Observation/{region.ids['obsS']}")
    httpx.get(region.server.url + "/Observation")
    httpx.get(region.server.url + "/Observation", headers={"authorization": "Bearer not.a.token"})
    after = audit.search(outcome=REFUSED, limit=1000)
    assert len(after) == before + 3
    codes = sorted(e.code for e in after[:3])
    assert codes[0] == "HT-0100" and "HT-0103" in codes


# ---------------------------------------------------------------- correction requests and documents
def correction(person: str, item: str, owner: str) -> dict[str, Any]:
    return {"resourceType": "Task", "status": "requested", "intent": "order",
            "code": {"coding": [{"system": "https://fhir.hutong.dev/CodeSystem/task", "code": "correction-request"}]},
            "for": {"reference": f"Patient/{person}"}, "focus": {"reference": item},
            "owner": {"reference": f"Organization/{owner}"}, "description": "血糖结果不是我的"}


def test_correction_request_is_answered_by_the_institution_it_is_addressed_to(region: Region) -> None:
    ids = region.ids
    with region.client("R", "patient/*.rs patient/Task.cru") as r:
        made = r.post("/Task", json=correction(ids["R"], f"Observation/{ids['obsB']}", ids["orgB"]))
        assert made.status_code == 201, made.text
        task = made.json()
        refused(r.post("/Task", json={**correction(ids["R"], "Observation/x", ids["orgB"]), "code": {"text": "x"}}),
                403, "HT-0104")
        refused(r.post("/Task", json=correction(ids["S"], f"Observation/{ids['obsS']}", ids["orgB"])), 403,
                "HT-0103")
    with region.client("S") as s:
        assert ids_of(s.get("/Task").json()) == set()
    with region.client("sysA") as a:
        assert ids_of(a.get("/Task").json()) == set()
        refused(a.put(f"/Task/{task['id']}", json={**task, "status": "rejected"}), 403, "HT-0102")
        refused(a.post("/Task", json=correction(ids["R"], f"Observation/{ids['obsA']}", ids["orgA"])), 403,
                "HT-0102")
    with region.client("sysB") as b:
        assert ids_of(b.get("/Task").json()) == {task["id"]}
        answered = {**task, "status": "completed", "note": [{"text": "已核实并更正"}]}
        assert b.put(f"/Task/{task['id']}", json=answered).status_code == 200
        refused(b.put(f"/Task/{task['id']}", json={**answered, "for": {"reference": f"Patient/{ids['S']}"}}),
                403, "HT-0102")
    with region.client("R") as r:
        got = r.get(f"/Task/{task['id']}").json()
        assert got["status"] == "completed" and got["note"][0]["text"] == "已核实并更正"


def test_a_document_binary_follows_its_security_context(region: Region) -> None:
    ids = region.ids
    doc = {"resourceType": "Binary", "contentType": "application/hl7-cda+xml", "data": "PENsaW5pY2FsRG9jdW1lbnQvPg==",
           "securityContext": {"reference": f"Patient/{ids['pA']}"}}
    with region.client("sysB") as b:
        refused(b.post("/Binary", json=doc), 403, "HT-0102")
    with region.client("sysA") as a:
        made = a.post("/Binary", json=doc)
        assert made.status_code == 201, made.text
    with region.client("R") as r:
        assert r.get(f"/Binary/{made.json()['id']}").status_code == 200
    with region.client("S") as s:
        refused(s.get(f"/Binary/{made.json()['id']}"), 403, "HT-0103")
    with region.client("docB") as d:
        refused(d.get(f"/Binary/{made.json()['id']}"), 403, "HT-0103")


def test_refused_looks_show_in_the_residents_access_log(region: Region) -> None:
    ids = region.ids
    audit = region.server.app.platform.audit
    with region.client("docB") as b:
        refused(b.get(f"/Observation/{ids['obsA']}"), 403, "HT-0103")
        refused(b.get("/Observation", params={"patient": ids["pA"]}), 403, "HT-0103")
    with region.client("S") as s:
        refused(s.get("/Observation", params={"patient": ids["pA"]}), 403, "HT-0103")
    log = audit.access_log([ids["R"]], limit=20)
    refusals = [e for e in log if e.outcome == REFUSED]
    assert len(refusals) == 3, log


def test_a_delegate_sees_the_record_masked_until_the_resident_ends_the_delegation(region: Region) -> None:
    from hutong.security.accounts import Delegation

    ids = region.ids
    accounts = region.server.accounts
    # R's daughter, with a record (and so a golden person) of her own, acts for R.
    c = region.server.client
    daughter_id = "110105197501010026"  # valid GB 11643 (female: 2)
    assert c.post("/Patient", json={"resourceType": "Patient", "identifier": [
        {"system": "urn:oid:2.16.156.10011.1.3", "value": daughter_id}], "name": [{"family": "王", "given": ["女儿"]}],
        "birthDate": "1975-01-01", "gender": "female",
        "managingOrganization": {"reference": f"Organization/{ids['orgA']}"}}).status_code == 201
    golden = c.get("/Patient", params={"identifier": f"urn:oid:2.16.156.10011.1.3|{daughter_id}",
                                       "_tag": "https://fhir.hutong.dev/CodeSystem/mpi|golden"}).json()
    delegate = accounts.add_delegate(golden["entry"][0]["resource"]["id"],
                                     acts_for=[Delegation(ids["R"], "family", None)], phone="13800000001", name="家属")
    with region.client_for(delegate) as d:
        assert d.get(f"/Observation/{ids['obsA']}").status_code == 200
        refused(d.get(f"/Observation/{ids['hivB']}"), 403, "HT-0103")   # sensitive: masked for delegates
        assert accounts.end_delegation(delegate.id, ids["R"]) is True
        # the token issued before still names R, but the delegation is gone: refused at once
        refused(d.get(f"/Observation/{ids['obsA']}"), 403, "HT-0103")
    assert accounts.end_delegation(delegate.id, ids["R"]) is False
