"""Issue 15, item 4: DELETE honours If-Match (http.html#concurrency), alone and
as ``request.ifMatch`` in transaction and batch bundles; through HTTP on both databases."""

from __future__ import annotations

from typing import Any

from harness import Server


def _org(server: Server, name: str) -> str:
    c = server.client
    r = c.post("/Organization", json={"resourceType": "Organization", "name": name})
    assert r.status_code == 201, r.text
    oid = str(r.json()["id"])
    r = c.put(f"/Organization/{oid}", json={"resourceType": "Organization", "id": oid, "name": name + " 2"})
    assert r.status_code == 200 and r.headers["etag"] == 'W/"2"'
    return oid


def _bundle(kind: str, oid: str, if_match: str) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": [
        {"request": {"method": "DELETE", "url": f"Organization/{oid}", "ifMatch": if_match}}]}


def test_delete_if_match(server: Server) -> None:
    c = server.client
    oid = _org(server, "测试医院 If-Match")
    r = c.delete(f"/Organization/{oid}", headers={"If-Match": 'W/"1"'})
    assert r.status_code == 412, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert c.get(f"/Organization/{oid}").status_code == 200  # still there
    assert c.delete(f"/Organization/{oid}", headers={"If-Match": "nonsense"}).status_code == 400
    assert c.delete(f"/Organization/{oid}", headers={"If-Match": 'W/"2"'}).status_code == 204
    assert c.get(f"/Organization/{oid}").status_code == 410
    # deleted already: a version-guarded delete has nothing to match
    assert c.delete(f"/Organization/{oid}", headers={"If-Match": 'W/"2"'}).status_code == 412


def test_delete_if_match_in_bundles(server: Server) -> None:
    c = server.client
    oid = _org(server, "测试医院 bundle")
    r = c.post("/", json=_bundle("transaction", oid, 'W/"1"'))
    assert r.status_code == 412, r.text
    assert c.get(f"/Organization/{oid}").status_code == 200
    r = c.post("/", json=_bundle("batch", oid, 'W/"1"'))
    assert r.status_code == 200 and r.json()["entry"][0]["response"]["status"].startswith("412"), r.text
    assert c.get(f"/Organization/{oid}").status_code == 200
    r = c.post("/", json=_bundle("transaction", oid, 'W/"2"'))
    assert r.status_code == 200, r.text
    assert c.get(f"/Organization/{oid}").status_code == 410
