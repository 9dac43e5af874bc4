"""Bad input: each gets a clear OperationOutcome with a stable code, nothing is
partially written, and the server keeps serving."""

from __future__ import annotations

import json

import httpx
from fhirapi import issue_code, patient
from harness import Server

from hutong.errors import CODES


def test_bad_requests(server: Server) -> None:
    c = server.client
    cases = [
        (c.post("/Patient", content=b"{not json"), 400, "HT-0001"),
        (c.post("/Patient", content=b"[1,2]"), 400, "HT-0008"),
        (c.post("/Patient", content=json.dumps(patient()), headers={"content-type": "text/plain"}), 415, "HT-0002"),
        (c.post("/Frobnicator", content=json.dumps({"resourceType": "Frobnicator"})), 404, "HT-0004"),
        (c.post("/Patient", content=json.dumps(patient() | {"resourceType": "Observation"})), 400, "HT-0006"),
        (c.get("/Patient/bad id!"), 400, "HT-0005"),
        (c.get("/Patient/" + "x" * 65), 400, "HT-0005"),
        (c.get("/Patient/nope"), 404, "HT-0009"),
        (c.get("/Patient", params={"_format": "xml"}), 406, "HT-0002"),
        (c.get("/no/such/endpoint/at/all"), 404, "HT-0009"),
    ]
    for r, status, code in cases:
        assert r.status_code == status, (code, r.text)
        assert issue_code(r) == code
    # structural problems name the element path
    r = c.post("/Patient", content=json.dumps({"resourceType": "Patient", "birthDate": "1990-13-45",
                                               "name": [{"family": 3}], "foo": 1}))
    assert r.status_code == 422 and issue_code(r) == "HT-0008"
    exprs = [x for i in r.json()["issue"] for x in i.get("expression", [])]
    assert {"Patient.birthDate", "Patient.name[0].family", "Patient.foo"} <= set(exprs)
    r = c.post("/Observation", content=json.dumps({"resourceType": "Observation", "status": "final",
                                                   "code": {"text": "x"}, "subject": {"reference": "Patient/"}}))
    assert r.status_code == 422 and "Observation.subject.reference" in r.json()["issue"][0]["expression"]
    r = c.post("/Observation", content=json.dumps({"resourceType": "Observation", "status": "final"}))
    assert r.status_code == 422 and "Observation.code" in r.json()["issue"][0]["expression"]
    assert c.get("/Patient", params={"_summary": "count"}).json()["total"] == 0
    assert c.get("/metadata").status_code == 200


def test_oversized_body_413(small_body_server: Server) -> None:
    c = small_body_server.client
    big = patient() | {"name": [{"family": "王" * 3000}]}
    r = c.post("/Patient", content=json.dumps(big))
    assert r.status_code == 413 and issue_code(r) == "HT-0003"

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(10):
            yield b"x" * 1000

    r = httpx.post(small_body_server.url + "/Patient", content=chunks(),
                   headers={"content-type": "application/fhir+json",
                            "authorization": small_body_server.client.headers["authorization"]})
    assert r.status_code == 413
    assert c.get("/Patient", params={"_summary": "count"}).json()["total"] == 0
    assert c.post("/Patient", content=json.dumps(patient())).status_code == 201


def test_error_codes_are_unique_and_documented() -> None:
    assert all(k.startswith("HT-") and len(k) == 7 for k in CODES)
    assert len(set(CODES.values())) == len(CODES)


def test_capability_statement(server: Server) -> None:
    cs = server.client.get("/metadata").json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    types = {r["type"]: r for r in cs["rest"][0]["resource"]}
    for t in ["Patient", "Practitioner", "PractitionerRole", "Organization", "Location", "Encounter", "Condition",
              "Observation", "DiagnosticReport", "MedicationRequest", "AllergyIntolerance", "Immunization",
              "Procedure", "DocumentReference", "ServiceRequest", "ImagingStudy", "Consent", "AuditEvent", "Device"]:
        names = {p["name"] for p in types[t]["searchParam"]}
        assert {"_id", "_lastUpdated"} <= names, t
    pnames = {p["name"] for p in types["Patient"]["searchParam"]}
    assert {"identifier", "name", "family", "given", "birthdate", "gender"} <= pnames
    assert types["Patient"]["operation"][0]["name"] == "everything"
    assert {i["code"] for i in cs["rest"][0]["interaction"]} == {"transaction", "batch", "history-system"}
    # every advertised parameter really works (no 400 for any advertised name)
    for p in types["Observation"]["searchParam"]:
        if p["type"] in ("token", "string", "uri"):
            r = server.client.get("/Observation", params={p["name"]: "x"}, headers={"Prefer": "handling=strict"})
            assert r.status_code == 200, (p["name"], r.text)


def test_library_crashes_become_422_not_500(server: Server) -> None:
    """Inputs on which fhir.resources raises KeyError/AttributeError instead of a
    ValidationError still get a clear 422 (found by the fastvalidate soak)."""
    c = server.client
    bad_contained = patient() | {"contained": [{"resourceType": "Foo", "id": "x"}]}
    r = c.post("/Patient", content=json.dumps(bad_contained))
    assert r.status_code == 422 and issue_code(r) == "HT-0008"
    att = {"resourceType": "Binary", "_contentType": {"extension": [{"url": "http://x", "valueString": "y"}]}}
    r = c.post("/Binary", content=json.dumps(att))
    assert r.status_code in (201, 422), r.text
    deep: dict = {"url": "http://x", "valueString": "v"}
    for _ in range(400):
        deep = {"url": "http://x", "extension": [deep]}
    r = c.post("/Patient", content=json.dumps(patient() | {"extension": [deep]}))
    assert r.status_code in (201, 422), r.text
    assert c.get("/metadata").status_code == 200


def test_uri_elements_named_reference_are_not_references(server: Server) -> None:
    # DetectedIssue.reference is a uri, not a Reference: any URL is fine there.
    di = {"resourceType": "DetectedIssue", "status": "final", "reference": "http://example.org/guidance.html"}
    r = server.client.post("/DetectedIssue", content=json.dumps(di))
    assert r.status_code == 201, r.text
