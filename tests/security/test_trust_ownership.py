"""Trust between institutions (issue 12), findings 1, 8 and 14, through the real
server on SQLite and PostgreSQL (region.py: hospitals A and B, resident R at
both, resident S at B only).

- F1: who manages a source Patient is fixed when the registration is created;
  no PUT, transaction, conditional write, delete or re-creation of a deleted id
  moves it.  Only ``Patient/[id]/$transfer`` by the current owner (or the
  platform engine) does, audited.
- F8: a treatment basis comes from events the platform can trust (a referral
  another institution made, an encounter on the institution's own channel),
  never from what a caller declared about itself.
- F14: an institution rewrites only the Practitioners it registered, and may
  not forge correction requests or Tasks addressed to another institution.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fhirapi import issue_code
from harness import Server
from region import Region, build

from hutong.security.events import SUCCESS
from hutong.systems import mrn_system

REGISTRAR = "https://fhir.hutong.dev/CodeSystem/registrar"
ENTERED_BY = "https://fhir.hutong.dev/CodeSystem/entered-by"

# Consent.policyRule (R4 ppc-1: a Consent names its policy): the resident's own opt-in.
OPT_IN = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]}


@pytest.fixture
def region(server: Server) -> Iterator[Region]:
    yield build(server)


def refused(r: httpx.Response, status: int = 403, code: str | None = None) -> None:
    assert r.status_code == status, r.text[:400]
    assert r.json()["resourceType"] == "OperationOutcome"
    if code is not None:
        assert issue_code(r) == code, r.text[:400]


def stored(region: Region, type: str, id: str) -> dict[str, Any]:
    r = region.server.client.get(f"/{type}/{id}")
    assert r.status_code == 200, r.text[:300]
    body: dict[str, Any] = r.json()
    return body


def owner(region: Region, pid: str) -> str:
    return str(stored(region, "Patient", pid)["managingOrganization"]["reference"])


def everything_ids(c: httpx.Client, pid: str) -> set[str]:
    r = c.get(f"/Patient/{pid}/$everything", params={"_count": "500"})
    assert r.status_code == 200, r.text[:300]
    return {e["resource"]["id"] for e in r.json().get("entry", [])}


def days_ago(n: int) -> str:
    return (datetime.now(UTC) - timedelta(days=n)).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def hijacked(region: Region, pid: str) -> dict[str, Any]:
    """A's registration of R, as B would resend it naming itself as manager."""
    body = stored(region, "Patient", pid)
    body.pop("meta", None)
    return body | {"managingOrganization": {"reference": f"Organization/{region.ids['orgB']}"}}


def a_still_owns_pa(region: Region) -> None:
    ids = region.ids
    pa = stored(region, "Patient", ids["pA"])
    assert pa["managingOrganization"]["reference"] == f"Organization/{ids['orgA']}"
    assert pa["meta"]["versionId"] == "1", "nothing was written to A's registration"
    with region.client("docA") as a:
        assert a.get(f"/Patient/{ids['pA']}").status_code == 200
        assert {ids["obsA"], ids["psyA"], ids["encA"]} <= everything_ids(a, ids["pA"])
    with region.client("sysB") as b:
        refused(b.get(f"/Patient/{ids['pA']}/_history/1"))
        refused(b.get("/Observation", params={"patient": ids["pA"]}))
    # The MPI still has A's registration with R.
    with region.client("R") as r:
        assert ids["pA"] in everything_ids(r, ids["R"])


# ---------------------------------------------------------------- F1 ownership of registrations
def test_f1_patient_takeover_by_put_is_refused(region: Region) -> None:
    ids = region.ids
    with region.client("sysB") as b:
        refused(b.put(f"/Patient/{ids['pA']}", json=hijacked(region, ids["pA"])), 403, "HT-0102")
        # without managingOrganization (which would be stamped) it is still A's registration
        plain = hijacked(region, ids["pA"])
        plain.pop("managingOrganization")
        refused(b.put(f"/Patient/{ids['pA']}", json=plain), 403, "HT-0102")
        refused(b.delete(f"/Patient/{ids['pA']}"), 403, "HT-0102")
        refused(b.put(f"/Observation/{ids['obsA']}", json={
            "resourceType": "Observation", "id": ids["obsA"], "status": "final", "code": {"text": "x"},
            "subject": {"reference": f"Patient/{ids['pA']}"}}), 403, "HT-0102")
    a_still_owns_pa(region)


def test_f1_managing_organization_is_fixed_at_registration(region: Region) -> None:
    """Not even the owner (or the platform engine) moves a registration by PUT."""
    ids = region.ids
    with region.client("sysA") as a:
        refused(a.put(f"/Patient/{ids['pA']}", json=hijacked(region, ids["pA"])), 403, "HT-0108")
    refused(region.server.client.put(f"/Patient/{ids['pA']}", json=hijacked(region, ids["pA"])), 403, "HT-0108")
    a_still_owns_pa(region)
    # The owner's own update without managingOrganization keeps it A's.
    with region.client("sysA") as a:
        body = hijacked(region, ids["pA"])
        body.pop("managingOrganization")
        body["telecom"] = [{"system": "phone", "value": "13912345679"}]
        r = a.put(f"/Patient/{ids['pA']}", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["managingOrganization"]["reference"] == f"Organization/{ids['orgA']}"


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_f1_takeover_through_a_bundle_is_refused(region: Region, kind: str) -> None:
    ids = region.ids
    before = region.server.client.get("/Observation", params={"_summary": "count"}).json()["total"]
    bundle = {"resourceType": "Bundle", "type": kind, "entry": [
        {"resource": hijacked(region, ids["pA"]), "request": {"method": "PUT", "url": f"Patient/{ids['pA']}"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "planted"},
                      "subject": {"reference": f"Patient/{ids['pA']}"}},
         "request": {"method": "POST", "url": "Observation"}},
        {"resource": {"resourceType": "Observation", "id": ids["obsA"], "status": "final",
                      "code": {"text": "altered"}, "subject": {"reference": f"Patient/{ids['pA']}"}},
         "request": {"method": "PUT", "url": f"Observation/{ids['obsA']}"}},
        {"request": {"method": "DELETE", "url": f"Condition/{ids['psyA']}"}}]}
    with region.client("sysB") as b:
        r = b.post("", json=bundle)
        if kind == "transaction":
            refused(r, 403)
        else:
            assert r.status_code == 200, r.text[:300]
            statuses = [e["response"]["status"] for e in r.json()["entry"]]
            assert all(s.startswith("403") for s in statuses), statuses
    a_still_owns_pa(region)
    assert region.server.client.get("/Observation", params={"_summary": "count"}).json()["total"] == before
    assert stored(region, "Observation", ids["obsA"])["meta"]["versionId"] == "1"
    assert stored(region, "Condition", ids["psyA"])["meta"]["versionId"] == "1"


def test_f1_conditional_update_and_delete_cannot_take_over(region: Region) -> None:
    ids = region.ids
    mrn_a = mrn_system(ids["orgA_code"])
    with region.client("sysB") as b:
        # The criteria never match A's registration (scoped to B's records); the body's id names it.
        r = b.put("/Patient", params={"identifier": "urn:oid:2.16.156.10011.1.3|11010519491231002X"},
                  json=hijacked(region, ids["pA"]))
        assert r.status_code in (400, 403), r.text[:300]
        r = b.put("/Patient", params={"identifier": f"{mrn_a}|A-1"}, json=hijacked(region, ids["pA"]))
        assert r.status_code in (400, 403), r.text[:300]
        b.delete("/Patient", params={"_id": ids["pA"]})
        b.delete("/Observation", params={"patient": ids["pA"]})
    a_still_owns_pa(region)
    assert stored(region, "Observation", ids["obsA"])["meta"]["versionId"] == "1"


def test_f1_a_deleted_registration_is_not_anyones_to_recreate(region: Region) -> None:
    """Re-creating a deleted id would make its history (and every record still
    pointing at it) the new writer's: only the last owner may."""
    ids = region.ids
    with region.client("sysA") as a:
        made = a.post("/Patient", json={"resourceType": "Patient", "name": [{"text": "已注销患者"}]})
        assert made.status_code == 201, made.text
        px = made.json()["id"]
        obs = a.post("/Observation", json={"resourceType": "Observation", "status": "final",
                                           "code": {"text": "A 的化验"}, "subject": {"reference": f"Patient/{px}"}})
        assert obs.status_code == 201
        gone = a.post("/Observation", json={"resourceType": "Observation", "status": "final",
                                            "code": {"text": "A 删除的化验"},
                                            "subject": {"reference": f"Patient/{px}"}}).json()["id"]
        assert a.delete(f"/Observation/{gone}").status_code == 204
        assert a.delete(f"/Patient/{px}").status_code == 204
    with region.client("sysB") as b:
        refused(b.put(f"/Patient/{px}", json={"resourceType": "Patient", "id": px,
                                              "managingOrganization": {"reference": f"Organization/{ids['orgB']}"}}),
                403, "HT-0102")
        refused(b.put(f"/Patient/{px}", json={"resourceType": "Patient", "id": px}), 403, "HT-0102")
        refused(b.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "id": px}, "request": {"method": "PUT", "url": f"Patient/{px}"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                          "subject": {"reference": f"Patient/{px}"}},
             "request": {"method": "POST", "url": "Observation"}}]}), 403)
        # a deleted record of A's under B's own patient: its history would become B's
        refused(b.put(f"/Observation/{gone}", json={"resourceType": "Observation", "id": gone, "status": "final",
                                                    "code": {"text": "x"},
                                                    "subject": {"reference": f"Patient/{ids['pB']}"}}),
                403, "HT-0102")
        refused(b.get(f"/Observation/{obs.json()['id']}"))
        refused(b.get(f"/Observation/{gone}/_history/1"))
    # a resident re-creating another resident's deleted Consent under their own name
    with region.client("S") as s:
        c = s.post("/Consent", json={"resourceType": "Consent", "status": "active", "scope": {"text": "x"},
                                     "category": [{"text": "x"}], "patient": {"reference": f"Patient/{ids['S']}"},
                                     "policyRule": OPT_IN})  # ppc-1
        assert c.status_code == 201, c.text
    cid = c.json()["id"]
    assert region.server.client.delete(f"/Consent/{cid}").status_code == 204
    with region.client("R") as r:
        refused(r.put(f"/Consent/{cid}", json={"resourceType": "Consent", "id": cid, "status": "inactive",
                                               "scope": {"text": "x"}, "category": [{"text": "x"}],
                                               "patient": {"reference": f"Patient/{ids['R']}"},
                                               "policyRule": OPT_IN}), 403)
        refused(r.get(f"/Consent/{cid}/_history/1"))
    # A itself may bring its registration back.
    with region.client("sysA") as a:
        back = a.put(f"/Patient/{px}", json={"resourceType": "Patient", "id": px, "name": [{"text": "恢复"}]})
        assert back.status_code == 201, back.text
        assert back.json()["managingOrganization"]["reference"] == f"Organization/{ids['orgA']}"


def transfer(c: httpx.Client, pid: str, org: str, reason: str = "患者转诊至乙医院长期随访") -> httpx.Response:
    return c.post(f"/Patient/{pid}/$transfer", json={"resourceType": "Parameters", "parameter": [
        {"name": "organization", "valueReference": {"reference": f"Organization/{org}"}},
        {"name": "reason", "valueString": reason}]})


def test_f1_transfer_by_the_owner_is_the_one_way_and_is_audited(region: Region) -> None:
    ids = region.ids
    audit = region.server.app.platform.audit
    with region.client("sysB") as b:
        refused(transfer(b, ids["pA"], ids["orgB"]), 403, "HT-0102")
    with region.client("docA") as d:
        refused(transfer(d, ids["pA"], ids["orgB"]), 403, "HT-0104")   # a system's act, not a clinician's
    with region.client("R") as r:
        refused(transfer(r, ids["pA"], ids["orgB"]), 403, "HT-0104")
    a_still_owns_pa(region)
    with region.client("sysA") as a:
        refused(transfer(a, ids["pA"], "no-such-org"), 400, "HT-0109")
        refused(transfer(a, ids["pA"], ids["orgA"]), 400, "HT-0109")          # already A's
        refused(transfer(a, ids["pA"], ids["orgB"], reason=""), 400, "HT-0109")
        refused(transfer(a, ids["R"], ids["orgB"]), 400, "HT-0109")           # golden: the platform's
        refused(a.post(f"/Patient/{ids['pA']}/$transfer", json={"resourceType": "Parameters"}), 400, "HT-0109")
        moved = transfer(a, ids["pA"], ids["orgB"])
        assert moved.status_code == 200, moved.text
        assert moved.json()["managingOrganization"]["reference"] == f"Organization/{ids['orgB']}"
        refused(a.get(f"/Observation/{ids['obsA']}"), 403)   # A's registration is now B's
    pa = stored(region, "Patient", ids["pA"])
    assert pa["managingOrganization"]["reference"] == f"Organization/{ids['orgB']}" and pa["meta"]["versionId"] == "2"
    with region.client("docB") as d:
        assert d.get(f"/Observation/{ids['obsA']}").status_code == 200
    rows = audit.search(action="transfer", limit=10)
    assert len(rows) == 1, rows
    row = rows[0]
    assert row.outcome == SUCCESS and row.account_id == region.accounts["sysA"].id
    assert ids["R"] in row.persons and f"Patient/{ids['pA']}" in row.entities
    assert row.extra == {"from": f"Organization/{ids['orgA']}", "to": f"Organization/{ids['orgB']}"}
    assert row.reason == "患者转诊至乙医院长期随访"
    # the request's own row too, and R sees the transfer in the access log
    assert any(e.seq == row.seq for e in audit.search(person=ids["R"], limit=50))
    # the platform engine may transfer (e.g. on the commission's decision)
    back = transfer(region.server.client, ids["pA"], ids["orgA"], reason="卫健委裁定退回")
    assert back.status_code == 200, back.text
    assert owner(region, ids["pA"]) == f"Organization/{ids['orgA']}"
    assert audit.verify().ok


# ---------------------------------------------------------------- F8 treatment basis
def referral(pid: str, performer: str, *, status: str = "active", authored: str | None = None) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "status": status, "intent": "order",
            "code": {"text": "转诊"}, "subject": {"reference": f"Patient/{pid}"},
            "performer": [{"reference": performer}], "authoredOn": authored or days_ago(0)}


def visit(pid: str, org: str, *, when: str | None = None, status: str = "finished") -> dict[str, Any]:
    when = when or days_ago(0)
    return {"resourceType": "Encounter", "status": status, "class": {"code": "AMB"},
            "subject": {"reference": f"Patient/{pid}"}, "serviceProvider": {"reference": f"Organization/{org}"},
            "period": {"start": when, "end": when}}


def no_basis(region: Region, who: str = "docB") -> None:
    ids = region.ids
    with region.client(who) as c:
        refused(c.get(f"/Observation/{ids['obsA']}"), 403, "HT-0103")
        refused(c.get(f"/Condition/{ids['psyA']}"), 403, "HT-0103")
        refused(c.get("/Observation", params={"patient": ids["pA"]}), 403, "HT-0103")
        basis = c.get(f"/Patient/{ids['R']}/$access-basis").json()
        assert {"name": "basis", "valueCode": "treatment"} not in basis["parameter"]


def test_f8_self_made_referral_is_no_treatment_basis(region: Region) -> None:
    ids = region.ids
    no_basis(region)   # B's only encounter with R is 700 days old
    with region.client("docB") as d:
        made = d.post("/ServiceRequest", json=referral(ids["pB"], f"Organization/{ids['orgB']}"))
        assert made.status_code == 201, made.text
        made = d.post("/ServiceRequest", json=referral(ids["pB"], f"Practitioner/{ids['docB']}"))
        assert made.status_code == 201, made.text
    with region.client("sysB") as b:
        assert b.post("/ServiceRequest", json=referral(ids["pB"], f"Organization/{ids['orgB']}")).status_code == 201
    no_basis(region)
    no_basis(region, "sysB")


def test_f8_clinician_entered_or_implausible_encounters_are_no_basis(region: Region) -> None:
    ids = region.ids
    # A clinician account whose grant includes Encounter writes (a hospital may configure it).
    with region.client("docB", "user/*.cruds") as d:
        made = d.post("/Encounter", json=visit(ids["pB"], ids["orgB"]))
        assert made.status_code == 201, made.text
        tags = {(t.get("system"), t.get("code")) for t in made.json()["meta"].get("tag", [])}
        assert (ENTERED_BY, "clinician") in tags
        # and cannot take the mark off by rewriting it
        body = made.json()
        body["meta"] = {}
        assert d.put(f"/Encounter/{body['id']}", json=body).status_code == 200
        assert (ENTERED_BY, "clinician") in {(t.get("system"), t.get("code"))
                                             for t in stored(region, "Encounter", body["id"])["meta"]["tag"]}
    no_basis(region)
    with region.client("sysB") as b:
        for enc in (visit(ids["pB"], ids["orgB"], when="2099-01-01T08:00:00+00:00"),       # future
                    visit(ids["pB"], ids["orgB"], status="planned"),                         # not a visit
                    visit(ids["pB"], ids["orgB"], status="cancelled"),
                    visit(ids["pB"], ids["orgA"])):                                         # someone else's visit
            assert b.post("/Encounter", json=enc).status_code == 201
    no_basis(region)
    # An institution cannot hand another one a basis by naming it serviceProvider
    # on its own registration (S has been seen at B only).
    with region.client("sysB") as b:
        assert b.post("/Encounter", json=visit(ids["pS"], ids["orgA"])).status_code == 201
    with region.client("docA") as a:
        refused(a.get(f"/Observation/{ids['obsS']}"), 403, "HT-0103")
    # The institution's own system channel reporting a visit today is a basis
    # (the rule for encounters: policy.Access._treated_here).
    with region.client("sysB") as b:
        assert b.post("/Encounter", json=visit(ids["pB"], ids["orgB"])).status_code == 201
    with region.client("docB") as d:
        assert d.get(f"/Observation/{ids['obsA']}").status_code == 200
        refused(d.get(f"/Condition/{ids['psyA']}"), 403, "HT-0103")   # sensitive: still masked


def test_f8_referral_by_another_institution_is_a_basis(region: Region) -> None:
    ids = region.ids
    with region.client("sysA") as a:
        for sr in (referral(ids["pA"], f"Organization/{ids['orgB']}", status="draft"),
                   referral(ids["pA"], f"Organization/{ids['orgB']}", status="revoked"),
                   referral(ids["pA"], f"Organization/{ids['orgB']}", authored="2099-01-01"),
                   referral(ids["pA"], f"Organization/{ids['orgB']}", authored=days_ago(400))):
            assert a.post("/ServiceRequest", json=sr).status_code == 201
    no_basis(region)
    with region.client("docA") as a:
        made = a.post("/ServiceRequest", json=referral(ids["pA"], f"Organization/{ids['orgB']}"))
        assert made.status_code == 201, made.text
    with region.client("docB") as d:
        assert d.get(f"/Observation/{ids['obsA']}").status_code == 200
        refused(d.get(f"/Condition/{ids['psyA']}"), 403, "HT-0103")
        basis = d.get(f"/Patient/{ids['R']}/$access-basis").json()
        assert {"name": "basis", "valueCode": "treatment"} in basis["parameter"]


# ---------------------------------------------------------------- F14 directory and Tasks
def test_f14_another_institutions_practitioner_cannot_be_rewritten(region: Region) -> None:
    ids = region.ids
    doc_a = stored(region, "Practitioner", ids["docA"])
    forged = {k: v for k, v in doc_a.items() if k != "meta"} | {"name": [{"family": "冒", "given": ["名"]}]}
    with region.client("sysB") as b:
        refused(b.put(f"/Practitioner/{ids['docA']}", json=forged), 403, "HT-0102")
        refused(b.delete(f"/Practitioner/{ids['docA']}"), 403, "HT-0102")
        refused(b.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": forged, "request": {"method": "PUT", "url": f"Practitioner/{ids['docA']}"}}]}), 403)
        # B registers its own practitioner (a registrar tag B may not choose) and keeps it up to date
        made = b.post("/Practitioner", json={"resourceType": "Practitioner", "name": [{"text": "乙院新医生"}],
                                             "meta": {"tag": [{"system": REGISTRAR,
                                                               "code": f"Organization/{ids['orgA']}"}]}})
        assert made.status_code == 201, made.text
        mine = made.json()
        assert [t["code"] for t in mine["meta"]["tag"] if t["system"] == REGISTRAR] == [f"Organization/{ids['orgB']}"]
        mine["name"] = [{"text": "乙院新医生（主治）"}]
        assert b.put(f"/Practitioner/{mine['id']}", json=mine).status_code == 200
    with region.client("sysA") as a:
        refused(a.put(f"/Practitioner/{mine['id']}", json=mine), 403, "HT-0102")
        refused(a.put(f"/Practitioner/{ids['docA']}", json=forged), 403, "HT-0102")  # the platform's entry
    assert stored(region, "Practitioner", ids["docA"])["meta"]["versionId"] == "1"
    assert stored(region, "Practitioner", mine["id"])["name"] == [{"text": "乙院新医生（主治）"}]


def task(pid: str, owner: str, *, correction: bool = True) -> dict[str, Any]:
    t: dict[str, Any] = {"resourceType": "Task", "status": "requested", "intent": "order",
                         "for": {"reference": f"Patient/{pid}"}, "owner": {"reference": owner},
                         "description": "请核对"}
    t["code"] = {"coding": [{"system": "https://fhir.hutong.dev/CodeSystem/task", "code": "correction-request"}]} \
        if correction else {"text": "随访"}
    return t


def test_f14_institutions_cannot_forge_tasks_addressed_to_others(region: Region) -> None:
    ids = region.ids
    org_a, org_b = f"Organization/{ids['orgA']}", f"Organization/{ids['orgB']}"
    with region.client("sysB") as b:
        refused(b.post("/Task", json=task(ids["pB"], org_a)), 403, "HT-0102")
        refused(b.post("/Task", json=task(ids["pB"], org_b)), 403, "HT-0102")       # only residents ask
        refused(b.post("/Task", json=task(ids["pB"], org_a, correction=False)), 403, "HT-0102")
        own = b.post("/Task", json=task(ids["pB"], org_b, correction=False))
        assert own.status_code == 201, own.text
        t = own.json()
        refused(b.put(f"/Task/{t['id']}", json=t | {"owner": {"reference": org_a}}), 403, "HT-0102")
        refused(b.put(f"/Task/{t['id']}", json=t | {"for": {"reference": f"Patient/{ids['pS']}"}}), 403, "HT-0102")
        refused(b.put(f"/Task/{t['id']}", json=t | {"code": task(ids["pB"], org_b)["code"]}), 403, "HT-0102")
        assert b.put(f"/Task/{t['id']}", json=t | {"status": "completed"}).status_code == 200
    with region.client("sysA") as a:
        assert a.get("/Task").json().get("total", 0) == 0
    with region.client("docA") as a:
        assert a.get("/Task").json().get("total", 0) == 0
