"""FHIR REST interactions through real HTTP on SQLite and PostgreSQL (http.html)."""

from __future__ import annotations

import json
import threading

from fhirapi import issue_code, observation, patient
from harness import Server


def create(server: Server, res: dict, **headers: str) -> dict:
    r = server.client.post(f"/{res['resourceType']}", content=json.dumps(res), headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def test_create_read_vread_update_delete_history(server: Server) -> None:
    c = server.client
    r = c.post("/Patient", content=json.dumps(patient()))
    assert r.status_code == 201
    p = r.json()
    pid = p["id"]
    assert p["meta"]["versionId"] == "1"
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["location"] == f"{server.url}/Patient/{pid}/_history/1"
    assert "last-modified" in r.headers

    r = c.get(f"/Patient/{pid}")
    assert r.status_code == 200 and r.json()["name"][0]["family"] == "王"
    assert r.headers["content-type"].startswith("application/fhir+json")

    p["name"][0]["family"] = "李"
    r = c.put(f"/Patient/{pid}", content=json.dumps(p))
    assert r.status_code == 200 and r.json()["meta"]["versionId"] == "2"
    assert c.get(f"/Patient/{pid}/_history/1").json()["name"][0]["family"] == "王"
    assert c.get(f"/Patient/{pid}/_history/2").json()["name"][0]["family"] == "李"
    assert c.get(f"/Patient/{pid}/_history/9").status_code == 404

    r = c.delete(f"/Patient/{pid}")
    assert r.status_code == 204
    r = c.get(f"/Patient/{pid}")
    assert r.status_code == 410 and issue_code(r) == "HT-0010"
    # the tombstone is a version; earlier versions stay readable
    assert c.get(f"/Patient/{pid}/_history/2").status_code == 200
    assert c.get(f"/Patient/{pid}/_history/3").status_code == 410
    h = c.get(f"/Patient/{pid}/_history").json()
    assert h["type"] == "history"
    assert [e["request"]["method"] for e in h["entry"]] == ["DELETE", "PUT", "POST"]
    assert "resource" not in h["entry"][0]
    # a deleted resource is not found by search, and deleting again is fine
    assert c.get("/Patient", params={"_id": pid}).json()["total"] == 0
    assert c.delete(f"/Patient/{pid}").status_code == 204
    # update revives it as a new version
    r = c.put(f"/Patient/{pid}", content=json.dumps(p))
    assert r.status_code == 201 and r.json()["meta"]["versionId"] == "4"


def test_update_as_create_with_client_id(server: Server) -> None:
    p = patient() | {"id": "zhang-san-1"}
    r = server.client.put("/Patient/zhang-san-1", content=json.dumps(p))
    assert r.status_code == 201 and r.json()["id"] == "zhang-san-1"
    assert server.client.get("/Patient/zhang-san-1").status_code == 200


def test_update_id_mismatch_and_missing(server: Server) -> None:
    c = server.client
    r = c.put("/Patient/a1", content=json.dumps(patient() | {"id": "b2"}))
    assert r.status_code == 400 and issue_code(r) == "HT-0007"
    r = c.put("/Patient/a1", content=json.dumps(patient()))
    assert r.status_code == 400 and issue_code(r) == "HT-0007"
    assert c.get("/Patient/a1").status_code == 404


def test_if_match_optimistic_locking(server: Server) -> None:
    c = server.client
    p = create(server, patient())
    pid = p["id"]
    r = c.put(f"/Patient/{pid}", content=json.dumps(p), headers={"If-Match": 'W/"1"'})
    assert r.status_code == 200
    r = c.put(f"/Patient/{pid}", content=json.dumps(p), headers={"If-Match": 'W/"1"'})
    assert r.status_code == 412 and issue_code(r) == "HT-0012"
    assert c.get(f"/Patient/{pid}").json()["meta"]["versionId"] == "2"
    r = c.put(f"/Patient/{pid}", content=json.dumps(p), headers={"If-Match": "garbage"})
    assert r.status_code == 400 and issue_code(r) == "HT-0014"


def test_concurrent_updates_with_if_match_one_wins(server: Server) -> None:
    p = create(server, patient())
    results: list[int] = []

    def upd() -> None:
        import httpx

        with httpx.Client(base_url=server.url, headers=server.client.headers) as c:
            results.append(c.put(f"/Patient/{p['id']}", content=json.dumps(p),
                                 headers={"If-Match": 'W/"1"'}).status_code)

    ts = [threading.Thread(target=upd) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(results) == [200] + [412] * 7


def test_prefer_return(server: Server) -> None:
    c = server.client
    r = c.post("/Patient", content=json.dumps(patient()), headers={"Prefer": "return=minimal"})
    assert r.status_code == 201 and r.content == b"" and "location" in r.headers
    r = c.post("/Patient", content=json.dumps(patient()), headers={"Prefer": "return=OperationOutcome"})
    assert r.status_code == 201 and r.json()["resourceType"] == "OperationOutcome"
    r = c.post("/Patient", content=json.dumps(patient()), headers={"Prefer": "return=representation"})
    assert r.json()["resourceType"] == "Patient"


def test_if_none_match_read(server: Server) -> None:
    p = create(server, patient())
    r = server.client.get(f"/Patient/{p['id']}", headers={"If-None-Match": 'W/"1"'})
    assert r.status_code == 304


def test_type_and_system_history(server: Server) -> None:
    c = server.client
    for i in range(5):
        create(server, patient(given=f"明{i}"))
    create(server, observation("x1"))
    h = c.get("/Patient/_history", params={"_count": 2}).json()
    assert len(h["entry"]) == 2
    seen = [e["resource"]["id"] for e in h["entry"]]
    nxt = [lk["url"] for lk in h["link"] if lk["relation"] == "next"][0]
    while nxt:
        page = c.get(nxt).json()
        seen += [e["resource"]["id"] for e in page["entry"]]
        nxt = next((lk["url"] for lk in page["link"] if lk["relation"] == "next"), None)
    sources = [s for s in seen if not s.startswith("mpi-")]
    assert len(sources) == len(set(sources)) == 5
    # One person (same ID number): its golden record has a version per new source.
    golden = [s for s in seen if s.startswith("mpi-")]
    assert len(golden) == 5 and len(set(golden)) == 1
    assert len(c.get("/_history").json()["entry"]) == 11


def test_conditional_create(server: Server) -> None:
    c = server.client
    hdr = {"If-None-Exist": "identifier=urn:oid:2.16.156.10011.1.3|11010519491231002X"}
    r1 = c.post("/Patient", content=json.dumps(patient()), headers=hdr)
    r2 = c.post("/Patient", content=json.dumps(patient()), headers=hdr)
    assert r1.status_code == 201 and r2.status_code == 200
    assert r1.json()["id"] == r2.json()["id"]
    create(server, patient())  # a plain create of a duplicate is allowed
    r3 = c.post("/Patient", content=json.dumps(patient()), headers=hdr)
    assert r3.status_code == 412 and issue_code(r3) == "HT-0013"


def test_concurrent_conditional_creates_make_exactly_one(server: Server) -> None:
    """The defect most reported against HAPI FHIR and Medplum: racing If-None-Exist creates."""
    import httpx

    hdr = {"If-None-Exist": "identifier=urn:oid:2.16.156.10011.1.3|440524188001010014",
           "content-type": "application/fhir+json"}
    body = json.dumps(patient(idno="440524188001010014"))
    barrier = threading.Barrier(16)
    statuses: list[int] = []
    ids: list[str] = []

    def go() -> None:
        with httpx.Client(base_url=server.url, timeout=60, headers={"authorization": server.client.headers["authorization"]}) as c:
            barrier.wait()
            r = c.post("/Patient", content=body, headers=hdr)
            statuses.append(r.status_code)
            ids.append(r.json()["id"])

    ts = [threading.Thread(target=go) for _ in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert statuses.count(201) == 1 and statuses.count(200) == 15, statuses
    assert len(set(ids)) == 1
    b = server.client.get("/Patient", params={"identifier": "440524188001010014"}).json()
    assert b["total"] == 1


def test_conditional_update_and_delete(server: Server) -> None:
    c = server.client
    q = "identifier=urn:oid:2.16.156.10011.1.3|34052419800101001X"
    r = c.put(f"/Patient?{q}", content=json.dumps(patient(idno="34052419800101001X")))
    assert r.status_code == 201
    pid = r.json()["id"]
    r = c.put(f"/Patient?{q}", content=json.dumps(patient(idno="34052419800101001X", given="二")))
    assert r.status_code == 200 and r.json()["id"] == pid and r.json()["meta"]["versionId"] == "2"
    create(server, patient(idno="34052419800101001X"))
    r = c.put(f"/Patient?{q}", content=json.dumps(patient(idno="34052419800101001X")))
    assert r.status_code == 412
    r = c.delete(f"/Patient?{q}")
    assert r.status_code == 412
    r = c.delete(f"/Patient?_id={pid}")
    assert r.status_code == 204
    assert c.get(f"/Patient/{pid}").status_code == 410


def test_concurrent_update_as_create_of_one_id(server: Server) -> None:
    import httpx

    body = json.dumps(patient() | {"id": "same-new-id"})
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def go() -> None:
        with httpx.Client(base_url=server.url, timeout=60, headers=server.client.headers) as c:
            barrier.wait()
            statuses.append(c.put("/Patient/same-new-id", content=body).status_code)

    ts = [threading.Thread(target=go) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(statuses) == [200] * 7 + [201]
    assert server.client.get("/Patient/same-new-id").json()["meta"]["versionId"] == "8"
