"""/openapi.json documents the FHIR API (issue 13, item 6): the path, query and
header parameters and request bodies of read, search and create, taken from the
running server; and one error mapping answers an unexpected failure the same
way on a public path and on a gated one."""

from __future__ import annotations

from typing import Any

import httpx
from harness import Server
from starlette.requests import Request


def _params(op: dict[str, Any]) -> set[tuple[str, str]]:
    return {(p["name"], p["in"]) for p in op.get("parameters", [])}


def test_openapi_documents_read_search_and_create(server: Server) -> None:
    r = httpx.get(server.root + "/openapi.json")  # public: no token
    assert r.status_code == 200
    paths = r.json()["paths"]
    read = paths["/fhir/{type}/{id}"]["get"]
    assert {("type", "path"), ("id", "path"), ("_format", "query")} <= _params(read)
    search = paths["/fhir/{type}"]["get"]
    assert {("type", "path"), ("_count", "query"), ("_sort", "query"), ("_include", "query"),
            ("_revinclude", "query"), ("_summary", "query"), ("_elements", "query"),
            ("_format", "query")} <= _params(search)
    create = paths["/fhir/{type}"]["post"]
    assert {("type", "path"), ("If-None-Exist", "header")} <= _params(create)
    assert "application/fhir+json" in create["requestBody"]["content"]
    update = paths["/fhir/{type}/{id}"]["put"]
    assert ("If-Match", "header") in _params(update) and "requestBody" in update
    assert {("_count", "query"), ("_since", "query")} <= _params(paths["/fhir/{type}/{id}/_history"]["get"])
    assert ("vid", "path") in _params(paths["/fhir/{type}/{id}/_history/{vid}"]["get"])
    assert ("sourceIdentifier", "query") in _params(paths["/fhir/Patient/$ihe-pix"]["get"])
    assert {("from", "query"), ("to", "query"), ("institution", "query")} <= _params(
        paths["/ingest/timeliness"]["get"])
    # Every FHIR operation says what it is, and no portal page is in the API's description.
    for path, ops in paths.items():
        assert not path.startswith(("/clinician", "/console", "/resident", "/signin")), path
        for method, op in ops.items():
            if path.startswith("/fhir"):
                assert op.get("summary"), (method, path)


def test_declared_parameters_keep_fhir_answers(server: Server) -> None:
    """Declaring parameters changed no answer: FHIR's own codes, repeated parameters."""
    c = server.client
    pid = c.post("/Patient", json={"resourceType": "Patient", "gender": "female"}).json()["id"]
    r = c.get(f"/Patient/{pid}", params={"_format": "xml"})
    assert r.status_code == 406 and "HT-0002" in r.text
    assert c.get(f"/Patient/{pid}", params={"_format": "json"}).status_code == 200
    r = c.get("/Patient", params=[("_count", "abc")])
    assert r.status_code == 400 and "HT-0023" in r.text  # the search parser's code, not a validation error
    r = c.get("/Patient", params=[("_id", pid), ("_include", "Patient:organization"),
                                   ("_include", "Patient:general-practitioner")])
    assert r.status_code == 200 and r.json()["entry"][0]["resource"]["id"] == pid


def _boom(request: Request) -> None:
    raise RuntimeError("resident data that must not leak: 110101199003077777")


def test_one_error_mapping_for_public_and_gated_paths(server: Server) -> None:
    """An unexpected failure is HT-0099 as an OperationOutcome on a public path
    (/auth/...) as on a gated one, the message never leaks, and the gated one is audited."""
    server.app.add_api_route("/auth/boom", _boom, methods=["GET"])
    server.app.add_api_route("/fhir-boom", _boom, methods=["GET"])
    with httpx.Client(base_url=server.root) as anonymous:
        for client, path in ((anonymous, "/auth/boom"), (server.client, server.root + "/fhir-boom")):
            r = client.get(path)
            assert r.status_code == 500, (path, r.text)
            body = r.json()
            assert body["resourceType"] == "OperationOutcome" and "HT-0099" in r.text, body
            assert "110101199003077777" not in r.text
        # The public failure did not drop the connection: the same client goes on.
        assert anonymous.get("/healthz").status_code == 200
    rows = server.app.platform.audit.search(limit=5)
    assert any(e.code == "HT-0099" and e.interaction == "GET /fhir-boom" for e in rows)
