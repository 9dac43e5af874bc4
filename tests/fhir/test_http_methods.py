"""HEAD and 405 on the FHIR API (issue 15, item 7: "HEAD unsupported; 405
without Allow"), through the running server on SQLite and PostgreSQL.

FHIR R4 http.html#read (HEAD wherever GET), RFC 9110 sections 9.3.2 (HEAD:
the GET's header fields, no content) and 15.5.6 (405 carries Allow)."""

from __future__ import annotations

import httpx
from fhirapi import issue_code
from harness import Server


def _sample(server: Server) -> str:
    """A sample written for this test: a lab result of an invented patient."""
    c = server.client
    pid = c.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "赵", "given": ["六"]}],
                                   "gender": "other"}).json()["id"]
    r = c.post("/Observation", json={"resourceType": "Observation", "status": "final",
                                     "code": {"text": "HEAD sample"}, "subject": {"reference": f"Patient/{pid}"}})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_head_answers_as_get_without_body(server: Server) -> None:
    c = server.client
    oid = _sample(server)
    for path, params in ((f"/Observation/{oid}", None), ("/Observation", {"_id": oid}),
                         (f"/Observation/{oid}/_history", None), (f"/Observation/{oid}/_history/1", None)):
        get = c.get(path, params=params)
        head = c.head(path, params=params)
        assert get.status_code == 200 and head.status_code == 200, (path, head.status_code, head.text)
        assert head.content == b"", path
        for h in ("content-type", "etag", "last-modified"):
            assert head.headers.get(h) == get.headers.get(h), (path, h)
    # The read's Content-Length is the GET's (RFC 9110 section 9.3.2).
    assert c.head(f"/Observation/{oid}").headers["content-length"] == c.get(f"/Observation/{oid}").headers[
        "content-length"]
    # HEAD goes through the gate like the GET it answers as: refused without a token,
    # and audited as a read.
    anonymous = httpx.head(f"{server.url}/Observation/{oid}")
    assert anonymous.status_code == 401 and anonymous.content == b""
    audit = server.app.platform.audit
    before = audit.search(limit=1)[0].seq
    assert c.head(f"/Observation/{oid}").status_code == 200
    rows = [e for e in audit.search(limit=5) if e.seq > before]
    assert [x.action for x in rows] == ["read"]
    # A deleted resource: 410 without a body; an unknown one: 404.
    assert c.delete(f"/Observation/{oid}").status_code == 204
    gone = c.head(f"/Observation/{oid}")
    assert gone.status_code == 410 and gone.content == b""
    assert c.head("/Observation/no-such-id").status_code == 404


def test_405_carries_allow(server: Server) -> None:
    c = server.client
    oid = _sample(server)
    for method, path, must, must_not in (
        ("POST", f"/Observation/{oid}", {"GET", "HEAD", "PUT", "DELETE"}, {"POST"}),
        ("PUT", f"/Observation/{oid}/_history", {"GET", "HEAD"}, {"PUT", "POST", "DELETE"}),
        # Paths with routes of their own are theirs, not a resource type "metadata":
        # DELETE /fhir/metadata was a 500, GET Patient/$match a read of an id "$match".
        ("DELETE", "/metadata", {"GET", "HEAD"}, {"DELETE", "POST", "PUT"}),
        ("POST", "/_history", {"GET", "HEAD"}, {"POST"}),
        ("GET", "/Patient/$match", {"POST"}, {"GET", "HEAD"}),
    ):
        r = c.request(method, path, content=b"{}")
        assert r.status_code == 405, (method, path, r.status_code, r.text)
        assert issue_code(r) == "HT-0220"
        allow = {m.strip() for m in r.headers["allow"].split(",")}
        assert must <= allow and not must_not & allow, (method, path, allow)
        # Every method Allow names is one the path takes (its answer is not 405).
        for m in allow - {"HEAD"}:
            got = c.request(m, path, content=b'{"resourceType":"Parameters"}')
            assert got.status_code != 405, (m, path)
    # The public metadata path refuses other methods without a token too (no 500).
    r = httpx.post(f"{server.url}/metadata", json={})
    assert r.status_code == 405 and "GET" in r.headers["allow"]
