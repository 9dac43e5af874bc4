"""The CapabilityStatement says what the server does (issue 15, item 7 and
"Done when": "the CapabilityStatement is generated from behaviour and a test
compares it with what the server does"), through the running server on SQLite
and PostgreSQL.

For every resource type it lists, every interaction, conditional flag and
operation it lists is called and must do what FHIR R4 says it does
(http.html); every search parameter it lists is accepted with
``Prefer: handling=strict``; every format and patch format it lists is
served.  A sample of what it does not list is refused.  The samples are
minimal instances built for each type (minimal_resources.py)."""

from __future__ import annotations

from datetime import timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

import httpx
import orjson
from fhirapi import issue_code
from harness import Server
from minimal_resources import minimal_resource

from hutong.errors import HutongError
from hutong.fhir.validation import validate

STRICT = {"prefer": "handling=strict"}


def _statement(server: Server) -> dict[str, Any]:
    r = httpx.get(f"{server.url}/metadata")  # public
    assert r.status_code == 200
    cs: dict[str, Any] = r.json()
    return cs


def _sample(type: str) -> dict[str, Any] | None:
    """The type's minimal instance, if the server's own validation accepts it."""
    body = minimal_resource(type)
    try:
        validate(orjson.loads(orjson.dumps(body)), type)
    except HutongError:
        return None
    return body


def _lifecycle(c: httpx.Client, type: str, body: dict[str, Any], r: dict[str, Any]) -> None:
    """Every interaction and conditional flag ``r`` (rest.resource) lists, on one stored instance."""
    does = {i["code"] for i in r["interaction"]}
    what = type
    assert "create" in does, what
    made = c.post(f"/{type}", json=body)
    assert made.status_code == 201, (what, made.text[:300])
    rid = made.json()["id"]
    assert made.headers["etag"] == 'W/"1"' and made.headers["location"].endswith(f"/{type}/{rid}/_history/1")
    version = 1
    if "read" in does:
        got = c.get(f"/{type}/{rid}")
        assert got.status_code == 200 and got.json()["id"] == rid, what
        head = c.head(f"/{type}/{rid}")
        assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == got.headers["etag"]
        modes = r["conditionalRead"]
        if modes in ("not-match", "full-support"):
            assert c.get(f"/{type}/{rid}", headers={"if-none-match": got.headers["etag"]}).status_code == 304
            assert c.get(f"/{type}/{rid}", headers={"if-none-match": 'W/"99"'}).status_code == 200
        if modes in ("modified-since", "full-support"):
            last = got.headers["last-modified"]
            assert c.get(f"/{type}/{rid}", headers={"if-modified-since": last}).status_code == 304, what
            before = format_datetime(parsedate_to_datetime(last) - timedelta(days=1), usegmt=True)
            assert c.get(f"/{type}/{rid}", headers={"if-modified-since": before}).status_code == 200, what
    if "vread" in does or r.get("readHistory"):
        assert c.get(f"/{type}/{rid}/_history/1").status_code == 200, what
    if "update" in does:
        put = c.put(f"/{type}/{rid}", json=body | {"id": rid})
        version += 1
        assert put.status_code == 200 and put.headers["etag"] == f'W/"{version}"', (what, put.text[:300])
        if r["versioning"] == "versioned-update":
            stale = c.put(f"/{type}/{rid}", json=body | {"id": rid}, headers={"if-match": 'W/"1"'})
            assert stale.status_code == 412, what
    if "patch" in does:
        patched = c.patch(f"/{type}/{rid}", content=b'[{"op": "add", "path": "/language", "value": "zh-CN"}]',
                          headers={"content-type": "application/json-patch+json"})
        version += 1
        assert patched.status_code == 200 and patched.json()["language"] == "zh-CN", (what, patched.text[:300])
    if "history-instance" in does:
        h = c.get(f"/{type}/{rid}/_history").json()
        assert h["type"] == "history" and len(h["entry"]) == version, what
    if "history-type" in does:
        h = c.get(f"/{type}/_history", params={"_count": "1"}).json()
        assert h["type"] == "history" and h["entry"][0]["resource"]["resourceType"] == type, what
    if "search-type" in does:
        found = c.get(f"/{type}", params={"_id": rid}).json()
        assert [e["resource"]["id"] for e in found["entry"]] == [rid], what
    if r.get("conditionalCreate"):
        again = c.post(f"/{type}", json=body, headers={"if-none-exist": f"_id={rid}"})
        assert again.status_code == 200 and again.json()["id"] == rid, (what, again.text[:300])
    if r.get("conditionalUpdate"):
        cu = c.put(f"/{type}", params={"_id": rid}, json=body | {"id": rid})
        assert cu.status_code == 200 and cu.json()["id"] == rid, (what, cu.text[:300])
    if "delete" in does:
        assert c.delete(f"/{type}/{rid}").status_code == 204, what
        assert c.get(f"/{type}/{rid}").status_code == 410, what
    if r.get("conditionalDelete") in ("single", "multiple"):
        other = c.post(f"/{type}", json=body).json()["id"]
        assert c.delete(f"/{type}", params={"_id": other}).status_code == 204, what
        assert c.get(f"/{type}/{other}").status_code == 410, what


def test_every_listed_interaction_is_served_on_every_type(server: Server) -> None:
    cs = _statement(server)
    rest = cs["rest"][0]
    c = server.client
    listed = {r["type"]: r for r in rest["resource"]}
    unsampled = []
    for type, r in sorted(listed.items()):
        body = _sample(type)
        if body is None:
            unsampled.append(type)
            continue
        _lifecycle(c, type, body, r)
    # Every type has a sample the server's own validation accepts, so every listed
    # interaction above ran on every listed type.
    assert not unsampled, unsampled
    # The system interactions.
    system = {i["code"] for i in rest["interaction"]}
    pid = c.post("/Patient", json=minimal_resource("Patient")).json()["id"]
    if "transaction" in system:
        t = c.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "POST", "url": "Basic"}, "resource": minimal_resource("Basic")}]})
        assert t.status_code == 200 and t.json()["type"] == "transaction-response"
    if "batch" in system:
        b = c.post("", json={"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": f"Patient/{pid}"}}]})
        assert b.status_code == 200 and b.json()["entry"][0]["resource"]["id"] == pid
    if "history-system" in system:
        h = c.get("/_history", params={"_count": "5"})
        assert h.status_code == 200 and h.json()["type"] == "history"
    assert ("search-system" in system) == (c.get("", params={"_id": pid}).status_code == 200)
    if rest.get("compartment"):
        comp = c.get(f"/Patient/{pid}/Observation")
        assert comp.status_code == 200 and comp.json()["type"] == "searchset"


def _value(p: dict[str, Any]) -> str | None:
    return {"token": "sample", "string": "样", "date": "ge2000-01-01", "number": "1", "quantity": "1",
            "uri": "http://example.org/sample"}.get(p["type"])


def test_every_listed_search_parameter_and_include_is_accepted(server: Server) -> None:
    cs = _statement(server)
    c = server.client
    refused = []
    for r in cs["rest"][0]["resource"]:
        for p in r["searchParam"]:
            value = _value(p)
            name = p["name"] if value is not None else f"{p['name']}:missing"
            got = c.get(f"/{r['type']}", params={name: value if value is not None else "false"}, headers=STRICT)
            if got.status_code != 200:
                refused.append((r["type"], p["name"], p["type"], got.status_code, got.text[:160]))
        # _include and _revinclude as listed (search.html#include).
        for key, field in (("_include", "searchInclude"), ("_revinclude", "searchRevInclude")):
            for value in r.get(field, []):
                got = c.get(f"/{r['type']}", params={key: value}, headers=STRICT)
                if got.status_code != 200:
                    refused.append((r["type"], key, value, got.status_code, got.text[:160]))
    assert not refused, refused[:20]


def test_formats_and_patch_formats_listed_are_served_and_others_refused(server: Server) -> None:
    cs = _statement(server)
    c = server.client
    pid = c.post("/Patient", json=minimal_resource("Patient")).json()["id"]
    for fmt in cs["format"]:
        assert c.get(f"/Patient/{pid}", params={"_format": fmt}).status_code == 200, fmt
        if "/" in fmt:
            assert c.get(f"/Patient/{pid}", headers={"accept": fmt}).status_code == 200, fmt
    for fmt in ("xml", "application/fhir+xml", "ttl"):
        assert fmt not in cs["format"]
        assert c.get(f"/Patient/{pid}", params={"_format": fmt}).status_code == 406, fmt
    for fmt in cs.get("patchFormat", []):
        body = b'[{"op": "add", "path": "/active", "value": true}]'
        r = c.patch(f"/Patient/{pid}", content=body, headers={"content-type": fmt})
        assert r.status_code == 200, (fmt, r.text[:200])
    for fmt in ("application/fhir+json", "application/xml-patch+xml"):
        assert fmt not in cs.get("patchFormat", [])
        r = c.patch(f"/Patient/{pid}", content=b"{}", headers={"content-type": fmt})
        assert r.status_code == 415 and issue_code(r) == "HT-0223", fmt


def test_listed_operations_are_served_and_others_are_not(server: Server) -> None:
    cs = _statement(server)
    c = server.client
    listed = {r["type"]: {o["name"] for o in r.get("operation", [])} for r in cs["rest"][0]["resource"]}
    served_paths = {(route.path, m) for route in server.app.routes for m in getattr(route, "methods", ()) or ()}
    for type, names in listed.items():
        for name in names:
            # Every listed operation is a registered route of its own or of an {op} route
            # declaring it (hutong.web.identity_routes), on the type or on {type}.
            candidates = {f"/fhir/{type}/${name}", f"/fhir/{type}/{{id}}/${name}", "/fhir/{type}/$" + name,
                          f"/fhir/{type}/{{op}}"}
            assert candidates & {p for p, _m in served_paths}, (type, name)
    # Patient/$everything does what it says on the record of one patient.
    pid = c.post("/Patient", json=minimal_resource("Patient")).json()["id"]
    assert "everything" in listed["Patient"]
    everything = c.get(f"/Patient/{pid}/$everything")
    assert everything.status_code == 200 and pid in {e["resource"]["id"] for e in everything.json()["entry"]}
    # Not listed: not served.
    assert "everything" not in listed["Observation"]
    assert c.get(f"/Observation/{pid}/$everything").status_code in (400, 404, 405)
    r = c.post("/Patient/$no-such-operation", json={"resourceType": "Parameters"})
    assert r.status_code == 404
    # Types not listed are not served.
    assert "NoSuchType" not in listed
    r = c.get("/NoSuchType")
    assert r.status_code == 404 and issue_code(r) == "HT-0004"


def test_the_statement_follows_the_routes(server: Server) -> None:
    """The statement is read off the route table: a route removed from the app
    disappears from it (here PATCH and conditional delete), and comes back."""
    from hutong.fhir.capability import capability_statement

    app = server.app
    removed = [r for r in app.routes if (getattr(r, "path", ""), getattr(r, "methods", None)) in (
        ("/fhir/{type}/{id}", {"PATCH"}), ("/fhir/{type}", {"DELETE"}))]
    assert len(removed) == 2
    for route in removed:
        app.router.routes.remove(route)
    capability_statement.cache_clear()
    try:
        cs = _statement(server)
        patient = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Patient")
        assert "patch" not in {i["code"] for i in patient["interaction"]} and "patchFormat" not in cs
        assert patient["conditionalDelete"] == "not-supported"
        # ... and the server indeed no longer does them.
        assert server.client.patch("/Patient/x", content=b"[]",
                                   headers={"content-type": "application/json-patch+json"}).status_code == 405
    finally:
        app.router.routes.extend(removed)
        capability_statement.cache_clear()
    cs = _statement(server)
    patient = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Patient")
    assert "patch" in {i["code"] for i in patient["interaction"]} and patient["conditionalDelete"] == "single"
