"""Formats on the FHIR API (issue 15, item 7: "Accept: application/fhir+xml
answered with JSON while _format=xml gives 406"), through the running server
on SQLite and PostgreSQL.

Hutong answers in FHIR JSON only (hutong.web.fhir_http: why not XML); a client
asking for XML, by Accept or by _format (http.html#mime-type), gets the same
406 with a JSON OperationOutcome on every FHIR route; asking for JSON among
other types, or for anything (*/*), gets JSON."""

from __future__ import annotations

import httpx
from fhirapi import issue_code
from harness import Server


def _paths(server: Server) -> list[str]:
    c = server.client
    pid = c.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "钱", "given": ["七"]}],
                                   "gender": "female", "birthDate": "1971-07-07"}).json()["id"]
    return [f"/Patient/{pid}", "/Patient", f"/Patient/{pid}/_history", f"/Patient/{pid}/_history/1",
            "/Patient/_history", f"/Patient/{pid}/$everything", "/metadata"]


def test_xml_is_refused_the_same_way_both_ways(server: Server) -> None:
    c = server.client
    for path in _paths(server):
        by_accept = c.get(path, headers={"accept": "application/fhir+xml"})
        by_format = c.get(path, params={"_format": "xml"})
        by_format_mime = c.get(path, params={"_format": "application/fhir+xml"})
        for r in (by_accept, by_format, by_format_mime):
            assert r.status_code == 406, (path, r.request.url, r.request.headers.get("accept"), r.status_code)
            assert r.headers["content-type"].startswith("application/fhir+json")
            assert issue_code(r) == "HT-0002"
            assert r.json()["issue"][0]["code"] == "not-supported"
    # The public CapabilityStatement, without a token, says the same.
    r = httpx.get(f"{server.url}/metadata", headers={"accept": "application/xml"})
    assert r.status_code == 406 and issue_code(r) == "HT-0002"
    # A write asking for an XML answer is refused before anything is stored.
    before = c.get("/Patient", params={"_summary": "count", "family": "孙"}).json()["total"]
    r = c.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "孙"}]},
               headers={"accept": "application/fhir+xml"})
    assert r.status_code == 406
    assert c.get("/Patient", params={"_summary": "count", "family": "孙"}).json()["total"] == before


def test_json_among_others_is_served(server: Server) -> None:
    c = server.client
    for path in _paths(server):
        for accept in ("application/fhir+xml, application/fhir+json;q=0.5", "*/*", "application/json",
                       "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"):
            r = c.get(path, headers={"accept": accept})
            assert r.status_code == 200, (path, accept, r.status_code, r.text[:200])
            assert r.headers["content-type"].startswith("application/fhir+json")
        # _format overrides Accept (http.html#mime-type).
        r = c.get(path, params={"_format": "json"}, headers={"accept": "application/fhir+xml"})
        assert r.status_code == 200, path
        r = c.get(path, params={"_format": "application/fhir+json"})
        assert r.status_code == 200, path
    # JSON explicitly refused (q=0) is not served either.
    r = c.get("/Patient", headers={"accept": "application/fhir+json;q=0, application/fhir+xml"})
    assert r.status_code == 406
