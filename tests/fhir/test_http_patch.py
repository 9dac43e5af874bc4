"""PATCH with a JSON Patch document (issue 15, item 7: "PATCH answered with a
misleading error code ... Support JSON Patch as HAPI and Medplum do"), through
the running server on SQLite and PostgreSQL.

FHIR R4 http.html#patch, RFC 6902 (JSON Patch), RFC 5789 section 2.2 (415 for
an unsupported patch format, 409 for a patch the current state cannot take).
A patch is an update: the same validation, If-Match, versioning, ownership
rules (issue 12) and audit as a PUT of the patched resource."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import orjson
from fhirapi import issue_code
from harness import Server

from hutong.systems import ID_CARD, ORGANIZATION, mrn_system

JSON_PATCH = {"content-type": "application/json-patch+json"}


def _patch(c: httpx.Client, path: str, ops: Any, **headers: str) -> httpx.Response:
    return c.patch(path, content=orjson.dumps(ops), headers={**JSON_PATCH, **headers})


def _lab(c: httpx.Client) -> dict[str, Any]:
    """A sample written for this test: a preliminary potassium result of an invented patient."""
    pid = c.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "周", "given": ["九"]}],
                                   "gender": "male", "birthDate": "1988-08-08"}).json()["id"]
    r = c.post("/Observation", json={
        "resourceType": "Observation", "status": "preliminary", "code": {"text": "血钾"},
        "subject": {"reference": f"Patient/{pid}"},
        "valueQuantity": {"value": 3.9, "unit": "mmol/L"}})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def test_json_patch_is_an_update(server: Server) -> None:
    c = server.client
    obs = _lab(c)
    oid = obs["id"]
    r = _patch(c, f"/Observation/{oid}", [
        {"op": "test", "path": "/status", "value": "preliminary"},
        {"op": "replace", "path": "/status", "value": "final"},
        {"op": "add", "path": "/note", "value": [{"text": "复核"}]},
        {"op": "remove", "path": "/valueQuantity/unit"}])
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == 'W/"2"'
    assert r.headers["location"].endswith(f"/Observation/{oid}/_history/2")
    got = c.get(f"/Observation/{oid}").json()
    assert got["status"] == "final" and got["note"] == [{"text": "复核"}] and "unit" not in got["valueQuantity"]
    assert got["meta"]["versionId"] == "2" and got["subject"] == obs["subject"]
    history = c.get(f"/Observation/{oid}/_history").json()
    assert [e["resource"]["status"] for e in history["entry"]] == ["final", "preliminary"]
    # Prefer: return=minimal answers without the body, like an update.
    r = _patch(c, f"/Observation/{oid}", [{"op": "replace", "path": "/status", "value": "amended"}],
               prefer="return=minimal")
    assert r.status_code == 200 and r.content == b"" and r.headers["etag"] == 'W/"3"'
    # Audited as a patch.
    rows = server.app.platform.audit.search(limit=1)
    assert rows[0].action == "patch"


def test_if_match_and_failures_leave_the_resource_as_it_was(server: Server) -> None:
    c = server.client
    oid = _lab(c)["id"]
    path = f"/Observation/{oid}"
    replace = [{"op": "replace", "path": "/status", "value": "final"}]
    cases: list[tuple[Any, dict[str, str], int, str]] = [
        (replace, {"if-match": 'W/"7"'}, 412, "HT-0012"),                      # stale If-Match
        ([{"op": "test", "path": "/status", "value": "final"}], {}, 409, "HT-0222"),   # failed test
        ([{"op": "remove", "path": "/interpretation"}], {}, 409, "HT-0222"),           # no such path
        ({"op": "replace", "path": "/status", "value": "final"}, {}, 400, "HT-0221"),  # not an array
        ([{"op": "replace", "path": "/status"}], {}, 400, "HT-0221"),                  # no value
        ([{"op": "frobnicate", "path": "/status"}], {}, 400, "HT-0221"),               # no such op
        ([], {}, 400, "HT-0221"),
        ([{"op": "replace", "path": "/id", "value": "other-id"}], {}, 400, "HT-0007"),
        ([{"op": "add", "path": "/bogusElement", "value": 1}], {}, 422, "HT-0008"),    # not a valid Observation
    ]
    for ops, headers, status, code in cases:
        r = _patch(c, path, ops, **headers)
        assert r.status_code == status, (ops, r.status_code, r.text[:300])
        assert issue_code(r) == code, (ops, r.text[:300])
    assert c.get(path).json()["meta"]["versionId"] == "1"
    r = _patch(c, path, replace, **{"if-match": 'W/"1"'})
    assert r.status_code == 200 and r.headers["etag"] == 'W/"2"'
    # Nothing there: 404; deleted: 410.
    assert _patch(c, "/Observation/not-there", replace).status_code == 404
    assert c.delete(path).status_code == 204
    assert _patch(c, path, replace).status_code == 410


def test_other_patch_formats_are_415(server: Server) -> None:
    c = server.client
    oid = _lab(c)["id"]
    fhirpath_patch = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "Observation.status"},
        {"name": "value", "valueCode": "final"}]}]}
    for ctype, body in (("application/fhir+json", orjson.dumps(fhirpath_patch)),
                        ("application/xml-patch+xml", b"<diff/>"),
                        ("application/merge-patch+json", b'{"status": "final"}'),
                        ("", orjson.dumps([{"op": "replace", "path": "/status", "value": "final"}]))):
        r = c.patch(f"/Observation/{oid}", content=body, headers={"content-type": ctype})
        assert r.status_code == 415, (ctype, r.status_code, r.text[:300])
        assert issue_code(r) == "HT-0223"
        assert r.json()["issue"][0]["code"] == "not-supported"
        assert r.headers["accept-patch"] == "application/json-patch+json"  # RFC 5789 section 2.2
    assert c.get(f"/Observation/{oid}").json()["status"] == "preliminary"


def _created(r: httpx.Response) -> str:
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_patch_keeps_the_trust_rules(server: Server) -> None:
    """Issue 12: a patch may not move a registration (managingOrganization is
    fixed at creation), and an institution patches only what it may write.
    A sample region written for this test: hospitals A and B, one resident
    registered at A, another at B."""
    c = server.client
    orgs = {}
    for key, code in (("A", "12110000400000091A"), ("B", "12110000400000092B")):
        orgs[key] = _created(c.post("/Organization", json={
            "resourceType": "Organization", "name": f"{key}医院", "identifier": [{"system": ORGANIZATION,
                                                                                 "value": code}]}))
        orgs[key + "code"] = code

    def registration(org: str, mrn: str, idno: str) -> str:
        return _created(c.post("/Patient", json={
            "resourceType": "Patient", "managingOrganization": {"reference": f"Organization/{orgs[org]}"},
            "identifier": [{"system": ID_CARD, "value": idno}, {"system": mrn_system(orgs[org + "code"]),
                                                                "value": mrn}],
            "name": [{"family": "吴", "given": [mrn]}], "gender": "male", "birthDate": "1966-06-06",
            "telecom": [{"system": "phone", "value": "13911112222"}]}))

    pa = registration("A", "A-77", "110105196606060017")
    pb = registration("B", "B-77", "110105196606060033")
    obs = _created(c.post("/Observation", json={"resourceType": "Observation", "status": "final",
                                                "code": {"text": "血糖"}, "subject": {"reference": f"Patient/{pa}"}}))
    sys_a, _ = server.accounts.add_client("HIS A (patch test)", organization=orgs["Acode"],
                                          organization_id=orgs["A"])
    with server.as_(sys_a) as a:
        r = _patch(a, f"/Patient/{pa}", [
            {"op": "replace", "path": "/managingOrganization/reference", "value": f"Organization/{orgs['B']}"}])
        assert r.status_code == 403 and issue_code(r) == "HT-0108", r.text[:300]
        # Its own registration's phone: allowed, and it stays A's.
        r = _patch(a, f"/Patient/{pa}", [{"op": "replace", "path": "/telecom/0/value", "value": "13700000000"}])
        assert r.status_code == 200, r.text[:300]
        assert r.json()["managingOrganization"]["reference"] == f"Organization/{orgs['A']}"
        # Another institution's registration: refused, untouched.
        r = _patch(a, f"/Patient/{pb}", [{"op": "replace", "path": "/gender", "value": "female"}])
        assert r.status_code == 403, r.text[:300]
        # Its own lab result: allowed.
        r = _patch(a, f"/Observation/{obs}", [{"op": "add", "path": "/note", "value": [{"text": "已复核"}]}])
        assert r.status_code == 200, r.text[:300]
    assert c.get(f"/Patient/{pa}").json()["managingOrganization"]["reference"] == f"Organization/{orgs['A']}"
    assert c.get(f"/Patient/{pb}").json()["gender"] == "male"
    # A resident reads their own lab result but may not patch it.
    golden = c.get("/Patient", params={"identifier": f"{ID_CARD}|110105196606060017",
                                       "_tag": "https://fhir.hutong.dev/CodeSystem/mpi|golden"}).json()
    resident = server.accounts.add_resident(golden["entry"][0]["resource"]["id"], phone="13911112222")
    with server.as_(resident) as me:
        assert me.get(f"/Observation/{obs}").status_code == 200
        r = _patch(me, f"/Observation/{obs}", [{"op": "replace", "path": "/status", "value": "cancelled"}])
        assert r.status_code == 403, r.text[:300]
    assert c.get(f"/Observation/{obs}").json()["status"] == "final"


def test_patch_keeps_decimals_as_written(server: Server) -> None:
    """Issue 15, item 3 holds through a patch: decimals the patch does not
    touch, and decimals it writes, come back as written (datatypes.html#decimal)."""
    c = server.client
    raw = (b'{"resourceType": "Observation", "status": "final", "code": {"text": "sample"},'
           b' "valueQuantity": {"value": 3.90, "unit": "mmol/L"},'
           b' "referenceRange": [{"low": {"value": 3.50}, "high": {"value": 5.30}}]}')
    oid = c.post("/Observation", content=raw).json()["id"]
    r = c.patch(f"/Observation/{oid}", content=b'[{"op": "replace", "path": "/valueQuantity/value", "value": 4.10},'
                                                b' {"op": "test", "path": "/referenceRange/0/low/value", "value": 3.5}]',
                headers=JSON_PATCH)
    assert r.status_code == 200, r.text
    text = c.get(f"/Observation/{oid}").text
    assert '"value":4.10' in text.replace(" ", "") and '"value":3.50' in text.replace(" ", "")
    assert '"value":5.30' in text.replace(" ", "")


def _binary(ops: Any, ctype: str = "application/json-patch+json") -> dict[str, Any]:
    """http.html#transaction: a PATCH entry's patch document is a Binary."""
    return {"resourceType": "Binary", "contentType": ctype, "data": base64.b64encode(orjson.dumps(ops)).decode()}


def test_patch_entries_in_transaction_and_batch(server: Server) -> None:
    c = server.client
    oid = _lab(c)["id"]
    final = [{"op": "replace", "path": "/status", "value": "final"}]
    basic = {"resourceType": "Basic", "code": {"text": "补丁样例"}}
    # A transaction: the PATCH entry and a create, together.
    r = c.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "PATCH", "url": f"Observation/{oid}"}, "resource": _binary(final)},
        {"request": {"method": "POST", "url": "Basic"}, "resource": basic}]})
    assert r.status_code == 200, r.text[:300]
    out = r.json()["entry"]
    assert out[0]["response"]["status"] == "200 OK" and out[0]["response"]["etag"] == 'W/"2"'
    assert out[1]["response"]["status"].startswith("201")
    assert c.get(f"/Observation/{oid}").json()["status"] == "final"
    # All or nothing: a failing test op undoes the create beside it.
    before = c.get("/Basic", params={"_summary": "count"}).json()["total"]
    r = c.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "POST", "url": "Basic"}, "resource": basic},
        {"request": {"method": "PATCH", "url": f"Observation/{oid}"},
         "resource": _binary([{"op": "test", "path": "/status", "value": "preliminary"}])}]})
    assert r.status_code == 409 and issue_code(r) == "HT-0222", r.text[:300]
    assert c.get("/Basic", params={"_summary": "count"}).json()["total"] == before
    # ifMatch on a PATCH entry; FHIRPath Patch (Parameters) and other types are 415.
    r = c.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "PATCH", "url": f"Observation/{oid}", "ifMatch": 'W/"1"'},
         "resource": _binary(final)}]})
    assert r.status_code == 412, r.text[:300]
    r = c.post("", json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "PATCH", "url": f"Observation/{oid}"},
         "resource": {"resourceType": "Parameters", "parameter": []}},
        {"request": {"method": "PATCH", "url": f"Observation/{oid}"}, "resource": _binary(final, "text/plain")},
        {"request": {"method": "PATCH", "url": f"Observation/{oid}"},
         "resource": _binary([{"op": "add", "path": "/note", "value": [{"text": "批量"}]}])}]})
    assert r.status_code == 200, r.text[:300]
    statuses = [e["response"]["status"][:3] for e in r.json()["entry"]]
    assert statuses == ["415", "415", "200"], statuses
    assert r.json()["entry"][0]["response"]["outcome"]["issue"][0]["details"]["coding"][0]["code"] == "HT-0223"
    assert c.get(f"/Observation/{oid}").json()["note"] == [{"text": "批量"}]
