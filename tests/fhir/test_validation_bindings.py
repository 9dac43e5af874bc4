"""Issue 15, item 2: required bindings (terminologies.html#required) and the core
invariants of the types Hutong stores most, checked on every write path, through HTTP
on both databases; each refusal is a 422 OperationOutcome naming the element and the
allowed codes (or the invariant's key)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fhirapi import issue_code, observation, patient
from harness import Server


def _refused(r: httpx.Response, code: str, element: str) -> dict[str, Any]:
    assert r.status_code == 422, r.text
    assert issue_code(r) == code, r.text
    issue = r.json()["issue"][0]
    assert issue["expression"] == [element], issue
    return dict(issue)


def test_required_code_bindings_on_create_and_update(server: Server) -> None:
    c = server.client
    bad = patient(gender="bogus")
    issue = _refused(c.post("/Patient", json=bad), "HT-0240", "Patient.gender")
    assert "male, female, other, unknown" in issue["diagnostics"]
    assert "administrative-gender" in issue["diagnostics"] and issue["code"] == "code-invalid"

    obs = observation("x1") | {"status": "done"}
    issue = _refused(c.post("/Observation", json=obs), "HT-0240", "Observation.status")
    assert "final" in issue["diagnostics"] and "'done'" in issue["diagnostics"]

    # bindings inside data types and backbone elements, and inside contained resources
    p = patient()
    p["name"][0]["use"] = "formal"
    _refused(c.post("/Patient", json=p), "HT-0240", "Patient.name[0].use")
    p = patient()
    p["telecom"] = [{"system": "wechat", "value": "x"}]
    _refused(c.post("/Patient", json=p), "HT-0240", "Patient.telecom[0].system")
    p = patient()
    p["contact"] = [{"name": {"text": "王母"}, "gender": "F"}]
    _refused(c.post("/Patient", json=p), "HT-0240", "Patient.contact[0].gender")
    obs = observation("x1") | {"contained": [{"resourceType": "Patient", "id": "p", "gender": "M"}]}
    _refused(c.post("/Observation", json=obs), "HT-0240", "Observation.contained[0].gender")

    # a required CodeableConcept: one coding must come from the value set
    cond = {"resourceType": "Condition", "subject": {"reference": "Patient/x"}, "code": {"text": "高血压"},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "healed"}]}}
    _refused(c.post("/Condition", json=cond), "HT-0240", "Condition.clinicalStatus")
    cond["clinicalStatus"] = {"text": "好转"}  # text alone is not a concept from the value set
    issue = _refused(c.post("/Condition", json=cond), "HT-0240", "Condition.clinicalStatus")
    assert "text only" in issue["diagnostics"] and "resolved" in issue["diagnostics"]
    cond["clinicalStatus"] = {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                                             "valueCode": "unknown"}]}
    assert c.post("/Condition", json=cond).status_code == 201

    # update (PUT) and transaction entries are checked the same way; nothing is stored
    ok = c.post("/Patient", json=patient())
    assert ok.status_code == 201, ok.text
    pid = ok.json()["id"]
    _refused(c.put(f"/Patient/{pid}", json=patient(gender="woman") | {"id": pid}), "HT-0240", "Patient.gender")
    assert c.get(f"/Patient/{pid}").json()["gender"] == "female"
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:8a4c5e0e-1d2b-4b4f-9c1e-1f4a7b2c3d4e", "resource": patient(idno="110105194912310020"),
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": observation("x") | {"status": "done",
                                         "subject": {"reference": "urn:uuid:8a4c5e0e-1d2b-4b4f-9c1e-1f4a7b2c3d4e"}},
         "request": {"method": "POST", "url": "Observation"}}]}
    r = c.post("", json=tx)
    assert r.status_code in (400, 422) and "HT-0240" in r.text and "Observation.status" in r.text, r.text
    assert c.get("/Patient", params={"identifier": "110105194912310020", "_summary": "count"}).json()["total"] == 0

    # the valid codes pass, in every position checked above
    good = patient(gender="other", idno="110101199003077736")
    good["contact"] = [{"name": {"text": "王母"}, "gender": "female", "telecom": [{"system": "phone",
                                                                                "value": "13900000000"}]}]
    assert c.post("/Patient", json=good).status_code == 201


@pytest.mark.parametrize(("resource", "element", "key"), [
    ({"resourceType": "Patient", "contact": [{"relationship": [{"text": "母亲"}]}]}, "Patient.contact[0]", "pat-1"),
    ({"resourceType": "Observation", "status": "final", "code": {"text": "血糖"}, "valueQuantity": {"value": 5.1},
      "dataAbsentReason": {"text": "未测"}}, "Observation.dataAbsentReason", "obs-6"),
    ({"resourceType": "Observation", "status": "final", "valueQuantity": {"value": 120},
      "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
      "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
                     "valueQuantity": {"value": 120}}]}, "Observation.component[0].code", "obs-7"),
    ({"resourceType": "Observation", "status": "final", "code": {"text": "血钾"},
      "referenceRange": [{"appliesTo": [{"text": "成人"}]}]}, "Observation.referenceRange[0]", "obs-3"),
    ({"resourceType": "Condition", "subject": {"reference": "Patient/x"}, "abatementDateTime": "2026-01-01",
      "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                     "code": "active"}]}}, "Condition.clinicalStatus", "con-4"),
    ({"resourceType": "Condition", "subject": {"reference": "Patient/x"},
      "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                         "code": "entered-in-error"}]},
      "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                     "code": "active"}]}}, "Condition.clinicalStatus", "con-5"),
    ({"resourceType": "Condition", "subject": {"reference": "Patient/x"}, "evidence": [{}]},
     "Condition.evidence[0]", "con-2"),
    ({"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/x"}, "code": {"text": "青霉素"}},
     "AllergyIntolerance.clinicalStatus", "ait-1"),
    ({"resourceType": "Consent", "status": "active", "scope": {"text": "隐私"}, "category": [{"text": "授权"}],
      "patient": {"reference": "Patient/x"}}, "Consent", "ppc-1"),
    ({"resourceType": "Composition", "status": "final", "type": {"text": "出院小结"}, "date": "2026-01-01",
      "author": [{"display": "李医生"}], "title": "出院小结", "section": [{"title": "空"}]},
     "Composition.section[0]", "cmp-1"),
    ({"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
      "contained": [{"resourceType": "Patient", "id": "p1", "meta": {"versionId": "3"}}]},
     "Encounter.contained[0].meta", "dom-4"),
    ({"resourceType": "Observation", "status": "final", "code": {"text": "血糖"},
      "performer": [{"reference": "#lab1"}], "contained": [{"resourceType": "Organization", "id": "lab2"}]},
     "Observation", "ref-1"),
    ({"resourceType": "Patient", "extension": [{"url": "https://example.org/x", "valueString": "a",
                                                 "extension": [{"url": "y", "valueString": "b"}]}]},
     "Patient.extension[0]", "ext-1"),
])
def test_invariants(server: Server, resource: dict[str, Any], element: str, key: str) -> None:
    issue = _refused(server.client.post(f"/{resource['resourceType']}", json=resource), "HT-0241", element)
    assert issue["diagnostics"].split(": ")[2] == key or f"{key}:" in issue["diagnostics"], issue
    assert issue["code"] == "invariant"
