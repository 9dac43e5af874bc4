"""transaction (atomic) and batch Bundles (http.html#transaction)."""

from __future__ import annotations

import json
from typing import Any

from fhirapi import NOT_GOLDEN, issue_code, observation, patient
from harness import Server


def tx(entries: list[dict[str, Any]], type: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": type, "entry": entries}


def count(server: Server, type: str) -> int:
    params = [("_summary", "count")] + ([NOT_GOLDEN] if type == "Patient" else [])
    return int(server.client.get(f"/{type}", params=params).json()["total"])


def test_transaction_resolves_urn_uuid_and_conditional(server: Server) -> None:
    pu = "urn:uuid:0b3f6c5e-0000-4000-8000-000000000001"
    ou = "urn:uuid:0b3f6c5e-0000-4000-8000-000000000002"
    org = {"resourceType": "Organization", "name": "朝阳医院",
           "identifier": [{"system": "urn:oid:2.16.156.10011.1.5", "value": "ORG-1"}]}
    server.client.post("/Organization", content=json.dumps(org))
    obs = observation("placeholder")
    obs["subject"] = {"reference": pu}
    obs["performer"] = [{"reference": "Organization?identifier=urn:oid:2.16.156.10011.1.5|ORG-1"}]
    rep = {"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "血常规"},
           "subject": {"reference": pu}, "result": [{"reference": ou}]}
    b = tx([
        {"request": {"method": "POST", "url": "DiagnosticReport"}, "resource": rep},
        {"fullUrl": ou, "request": {"method": "POST", "url": "Observation"}, "resource": obs},
        {"fullUrl": pu, "request": {"method": "POST", "url": "Patient",
                                    "ifNoneExist": "identifier=11010519491231002X"}, "resource": patient()},
    ])
    r = server.client.post("", content=json.dumps(b))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["type"] == "transaction-response"
    assert [e["response"]["status"] for e in out["entry"]] == ["201 Created"] * 3
    pid = out["entry"][2]["resource"]["id"]
    oid = out["entry"][1]["resource"]["id"]
    stored_obs = server.client.get(f"/Observation/{oid}").json()
    assert stored_obs["subject"]["reference"] == f"Patient/{pid}"
    org_id = server.client.get("/Organization").json()["entry"][0]["resource"]["id"]
    assert stored_obs["performer"][0]["reference"] == f"Organization/{org_id}"
    rep_out = out["entry"][0]["resource"]
    assert rep_out["result"][0]["reference"] == f"Observation/{oid}"
    # the same transaction again: ifNoneExist finds the patient, no duplicate
    r = server.client.post("", content=json.dumps(b))
    assert r.json()["entry"][2]["response"]["status"] == "200 OK"
    assert count(server, "Patient") == 1


def test_transaction_is_all_or_nothing(server: Server) -> None:
    before = {"Patient": count(server, "Patient"), "Observation": count(server, "Observation")}
    existing = server.client.post("/Patient", content=json.dumps(patient(idno="X1"))).json()
    bad_entries = [
        # 1. a failing entry (stale If-Match) after valid ones
        [{"request": {"method": "POST", "url": "Patient"}, "resource": patient(idno="X2")},
         {"request": {"method": "PUT", "url": f"Patient/{existing['id']}", "ifMatch": 'W/"7"'},
          "resource": existing}],
        # 2. an invalid resource
        [{"request": {"method": "POST", "url": "Patient"}, "resource": patient(idno="X3")},
         {"request": {"method": "POST", "url": "Observation"}, "resource": {"resourceType": "Observation",
                                                                            "bogus": 1}}],
        # 3. an unresolvable urn:uuid reference
        [{"request": {"method": "POST", "url": "Observation"},
          "resource": observation("x") | {"subject": {"reference": "urn:uuid:0b3f6c5e-0000-4000-8000-0000000000ff"}}}],
        # 4. a conditional reference matching nothing
        [{"request": {"method": "POST", "url": "Patient"}, "resource": patient(idno="X4")},
         {"request": {"method": "POST", "url": "Observation"},
          "resource": observation("x") | {"subject": {"reference": "Patient?identifier=NOBODY"}}}],
        # 5. a delete then a bad entry: the delete must be undone
        [{"request": {"method": "DELETE", "url": f"Patient/{existing['id']}"}},
         {"request": {"method": "GET", "url": "Patient/does-not-exist"}}],
    ]
    codes = []
    for entries in bad_entries:
        r = server.client.post("", content=json.dumps(tx(entries)))
        assert r.status_code >= 400, r.text
        codes.append(issue_code(r))
        assert "Bundle.entry" in r.json()["issue"][0]["diagnostics"]
    assert codes == ["HT-0012", "HT-0008", "HT-0032", "HT-0032", "HT-0009"]
    assert count(server, "Patient") == before["Patient"] + 1
    assert count(server, "Observation") == before["Observation"]
    assert server.client.get(f"/Patient/{existing['id']}").status_code == 200


def test_transaction_put_delete_get_and_duplicates(server: Server) -> None:
    p = patient() | {"id": "p-tx-1"}
    r = server.client.post("", content=json.dumps(tx([
        {"request": {"method": "PUT", "url": "Patient/p-tx-1"}, "resource": p},
        {"request": {"method": "GET", "url": "Patient?identifier=11010519491231002X&_tag:not="
                                            "https://fhir.hutong.dev/CodeSystem/mpi%7Cgolden"}},
    ])))
    assert r.status_code == 200
    assert r.json()["entry"][0]["response"]["status"] == "201 Created"
    assert r.json()["entry"][1]["resource"]["total"] == 1  # GETs run after writes
    dup = "urn:uuid:0b3f6c5e-0000-4000-8000-000000000009"
    r = server.client.post("", content=json.dumps(tx([
        {"fullUrl": dup, "request": {"method": "POST", "url": "Patient"}, "resource": patient()},
        {"fullUrl": dup, "request": {"method": "POST", "url": "Patient"}, "resource": patient()},
    ])))
    assert r.status_code == 400 and issue_code(r) == "HT-0034"
    r = server.client.post("", content=json.dumps(tx([
        {"request": {"method": "DELETE", "url": "Patient/p-tx-1"}}])))
    assert r.status_code == 200 and r.json()["entry"][0]["response"]["status"] == "204 No Content"
    assert server.client.get("/Patient/p-tx-1").status_code == 410


def test_batch_reports_each_entry(server: Server) -> None:
    r = server.client.post("", content=json.dumps(tx([
        {"request": {"method": "POST", "url": "Patient"}, "resource": patient()},
        {"request": {"method": "POST", "url": "Patient"}, "resource": {"resourceType": "Patient", "x": 1}},
        {"request": {"method": "GET", "url": "Patient/nope"}},
        {"request": {"method": "PUT", "url": "Patient/b-1"}, "resource": patient() | {"id": "b-1"}},
        {"request": {"method": "FROB", "url": "Patient"}},
    ], type="batch")))
    assert r.status_code == 200
    out = r.json()
    assert out["type"] == "batch-response"
    st = [e["response"]["status"] for e in out["entry"]]
    assert st[0] == "201 Created" and st[1] == "422" and st[2] == "404" and st[3] == "201 Created" and st[4] == "400"
    assert out["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert count(server, "Patient") == 2


def test_bundle_type_errors(server: Server) -> None:
    r = server.client.post("", content=json.dumps({"resourceType": "Bundle", "type": "collection"}))
    assert r.status_code == 400 and issue_code(r) == "HT-0030"
    r = server.client.post("", content=json.dumps(patient()))
    assert r.status_code == 400 and issue_code(r) == "HT-0030"
