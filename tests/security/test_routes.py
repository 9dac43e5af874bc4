"""Every route goes through authentication, policy and audit (issue 6, "Done when").

The table below is the decision record of every (method, path) the app
serves: public (how a token is obtained, what the server is) or
authenticated, and what a resident gets from it.  The test enumerates
``app.routes`` and fails when a route is added, removed or changes methods
without a line here, so nobody adds an endpoint without deciding who may use
it.  Then, through the real server on SQLite and PostgreSQL:

- without a token every authenticated route answers 401 OperationOutcome
  with ``WWW-Authenticate`` (RFC 6750 section 3) and leaves a REFUSED audit
  row with HT-0100;
- as resident R every route answers what the table says (never 500) and
  writes one audit row naming R and the route; whatever succeeds holds none
  of resident S's records, and every route aimed at S's records is refused;
- the audit chain written during all of this verifies.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from fastapi.routing import APIRoute
from fhirapi import issue_code, resource_ids
from harness import Server
from region import S_ID, Region, build
from test_sharing import body as sharing_body

from hutong.security.events import FAILED, REFUSED, SUCCESS
from hutong.web.gate import is_public
from hutong.web.ui import session


@dataclass(frozen=True)
class Public:
    """Reachable without a token; no resident data behind it."""


@dataclass(frozen=True)
class Auth:
    """Needs a token.  ``own``: R's status with R's own ids in the path;
    ``other``: R's status with S's ids in the path (None: no id in the path)."""

    own: int
    other: int | None = None


PUBLIC = Public()

# Every route of the app.  A new route fails test_route_table_is_complete
# until it gets a line here (and so a decision).
ROUTES: dict[tuple[str, str], Public | Auth] = {
    # FastAPI's own description of the API; its docs page, self-hosted (hutong.web.public_assets), and the favicon
    ("GET", "/openapi.json"): PUBLIC, ("HEAD", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC, ("GET", "/docs/init.js"): PUBLIC, ("GET", "/docs/swagger-ui.css"): PUBLIC,
    ("GET", "/docs/swagger-ui-bundle.js"): PUBLIC, ("GET", "/favicon.ico"): PUBLIC,
    # sign-in (hutong.web.auth_routes): how a token is obtained
    ("POST", "/auth/token"): PUBLIC, ("POST", "/auth/revoke"): PUBLIC, ("GET", "/auth/jwks"): PUBLIC,
    ("POST", "/auth/login"): PUBLIC, ("POST", "/auth/password"): PUBLIC,
    ("POST", "/auth/otp/send"): PUBLIC, ("POST", "/auth/otp/verify"): PUBLIC,
    ("GET", "/auth/authorize"): PUBLIC,  # SMART apps start here (hutong.web.smart_routes; issue 15)
    ("GET", "/.well-known/smart-configuration"): PUBLIC, ("GET", "/fhir/.well-known/smart-configuration"): PUBLIC,
    ("GET", "/fhir/metadata"): PUBLIC, ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,  # load balancers' readiness probe: checks' names and codes only (issue 18)
    ("GET", "/metrics"): Auth(403),  # operator and platform accounts only (hutong.web.metrics; issue 18)
    # audit (hutong.web.audit_routes): auditors; residents see their own access log
    ("GET", "/audit/events"): Auth(403), ("GET", "/audit/events/{seq}"): Auth(403),
    ("GET", "/audit/verify"): Auth(403), ("GET", "/audit/break-glass"): Auth(403),
    ("POST", "/audit/break-glass/{seq}/review"): Auth(403),
    ("GET", "/me/access-log"): Auth(200),
    # CDS Hooks 2.0 (hutong.web.cds_routes; issue 14): clinicians and institution systems only
    ("GET", "/cds-services"): Auth(403), ("POST", "/cds-services/{id}"): Auth(403),
    ("POST", "/cds-services/{id}/feedback"): Auth(403),
    # sharing requests (hutong.web.sharing_routes): institutions, commission
    ("POST", "/sharing/requests"): Auth(403), ("GET", "/sharing/requests"): Auth(403),
    ("GET", "/sharing/requests/{request_id}"): Auth(403),
    ("POST", "/sharing/requests/{request_id}/submit"): Auth(403),
    ("POST", "/sharing/requests/{request_id}/approve"): Auth(403),
    ("POST", "/sharing/requests/{request_id}/reject"): Auth(403),
    # FHIR REST (hutong.web.app)
    ("POST", "/fhir"): Auth(200, 200), ("POST", "/fhir/"): Auth(200, 200),  # batch: entries judged one by one
    ("GET", "/fhir/_history"): Auth(403),
    ("GET", "/fhir/{type}"): Auth(200, 403), ("POST", "/fhir/{type}/_search"): Auth(200, 403),
    ("POST", "/fhir/{type}"): Auth(403), ("PUT", "/fhir/{type}"): Auth(403), ("DELETE", "/fhir/{type}"): Auth(403),
    ("GET", "/fhir/{type}/_history"): Auth(403),
    ("GET", "/fhir/{type}/{id}"): Auth(200, 403), ("PUT", "/fhir/{type}/{id}"): Auth(403, 403),
    ("DELETE", "/fhir/{type}/{id}"): Auth(403, 403), ("PATCH", "/fhir/{type}/{id}"): Auth(403, 403),
    ("GET", "/fhir/{type}/{id}/_history"): Auth(200, 403),
    ("GET", "/fhir/{type}/{id}/_history/{vid}"): Auth(200, 403),
    ("GET", "/fhir/{ctype}/{cid}/{type}"): Auth(200, 403),
    ("POST", "/fhir/Patient/$match"): Auth(403), ("GET", "/fhir/Patient/$ihe-pix"): Auth(403),
    ("POST", "/fhir/Patient/{op}"): Auth(403),
    ("POST", "/fhir/Patient/{id}/$break-glass"): Auth(403, 403),
    ("POST", "/fhir/Patient/{id}/$transfer"): Auth(403, 403),  # the owner institution's system, the platform
    ("GET", "/fhir/Patient/{id}/$access-basis"): Auth(200, 403),
    ("GET", "/fhir/Patient/{id}/$everything"): Auth(200, 403),
    ("POST", "/fhir/Patient/{id}/$everything"): Auth(200, 403),
    # identity stewardship and ingestion oversight
    ("GET", "/mpi/review"): Auth(403), ("POST", "/mpi/review/{review_id}/reject"): Auth(403),
    ("GET", "/ingest/timeliness"): Auth(403), ("GET", "/ingest/dead-letters"): Auth(403),
    ("POST", "/ingest/dead-letters/{message_id}/retry"): Auth(403),
    ("GET", "/ingest/flagged"): Auth(403), ("GET", "/ingest/quality"): Auth(403),
    ("POST", "/ingest/cda"): Auth(403),
    # the terminology service (hutong.web.terminology_routes; issue 15, item 8): any signed-in caller, no
    # resident data; the bare call lacks its parameters (400 HT-0244), past the gate and audited
    **{(m, f"/fhir/{op}"): Auth(400) for m in ("GET", "POST") for op in (
        "CodeSystem/$lookup", "CodeSystem/$validate-code", "ValueSet/$expand", "ValueSet/$validate-code",
        "ConceptMap/$translate")},
}


# Routes that, for R on R's own ids, answer with R's Observation obsA.
SHOWS_OWN_RECORDS = {("GET", "/fhir/{type}"), ("POST", "/fhir/{type}/_search"), ("GET", "/fhir/{type}/{id}"),
                     ("GET", "/fhir/{type}/{id}/_history"), ("GET", "/fhir/{type}/{id}/_history/{vid}"),
                     ("GET", "/fhir/{ctype}/{cid}/{type}"), ("GET", "/fhir/Patient/{id}/$everything"),
                     ("POST", "/fhir/Patient/{id}/$everything"), ("POST", "/fhir"), ("POST", "/fhir/")}


# The portals (hutong.web.ui): pages signed in by session cookie (or a bearer
# token).  ``resident``: what resident R's GET gets (POSTs without the page's
# CSRF token are always refused); public pages need no session.
@dataclass(frozen=True)
class Page:
    public: bool = False
    resident: int | None = None  # status of R's GET (None: a POST route)


PAGES: dict[tuple[str, str], Page] = {
    ("GET", "/"): Page(public=True, resident=200),
    ("POST", "/signin/staff"): Page(public=True), ("POST", "/signin/resident/code"): Page(public=True),
    ("POST", "/signin/resident"): Page(public=True), ("POST", "/signout"): Page(public=True),
    # clinician workspace: clinicians only
    ("GET", "/clinician"): Page(resident=403), ("POST", "/clinician/search"): Page(),
    ("GET", "/clinician/patient/{person}"): Page(resident=403),
    ("POST", "/clinician/patient/{person}/break-glass"): Page(),
    ("GET", "/clinician/patient/{person}/record"): Page(resident=403),
    ("GET", "/clinician/document/{doc_id}"): Page(resident=403),
    # the ordering panel (hutong.web.ui.ordering; issue 14, item 5): clinicians, after the access step
    ("GET", "/clinician/patient/{person}/order"): Page(resident=403),
    ("POST", "/clinician/patient/{person}/order"): Page(),
    ("POST", "/clinician/patient/{person}/order/feedback"): Page(),
    # correction requests inbox (hutong.web.ui.corrections_inbox): designated clinicians only
    ("GET", "/clinician/corrections"): Page(resident=403),
    ("GET", "/clinician/corrections/{task_id}"): Page(resident=403),
    ("POST", "/clinician/corrections/{task_id}"): Page(),
    # commission console: commission, auditors, operators
    ("GET", "/console"): Page(resident=403), ("GET", "/console/identity"): Page(resident=403),
    ("POST", "/console/identity/{review_id}/link"): Page(), ("POST", "/console/identity/{review_id}/reject"): Page(),
    ("GET", "/console/identity/{review_id}"): Page(resident=403),
    ("POST", "/console/identity/{review_id}/unlink"): Page(), ("GET", "/console/audit"): Page(resident=403),
    ("GET", "/console/break-glass"): Page(resident=403), ("POST", "/console/break-glass/{seq}/review"): Page(),
    ("GET", "/console/users"): Page(resident=403), ("POST", "/console/users/add"): Page(),
    ("POST", "/console/users/{account_id}/status"): Page(), ("POST", "/console/users/{account_id}/unlock"): Page(),
    # 互认 dashboard and rule management (hutong.web.ui.recognition_dashboard): commission, committee
    ("GET", "/console/recognition"): Page(resident=403), ("GET", "/console/rules"): Page(resident=403),
    ("GET", "/console/rules/new"): Page(resident=403), ("POST", "/console/rules/new"): Page(),
    ("GET", "/console/rules/v/{vid}"): Page(resident=403), ("GET", "/console/rules/diff"): Page(resident=403),
    ("POST", "/console/rules/v/{vid}/approve"): Page(), ("POST", "/console/rules/v/{vid}/retire"): Page(),
    # resident portal: residents and delegates
    ("GET", "/resident"): Page(resident=200), ("GET", "/resident/labs"): Page(resident=200),
    ("GET", "/resident/consents"): Page(resident=200), ("POST", "/resident/consents"): Page(),
    ("POST", "/resident/consents/{consent_id}/revoke"): Page(), ("GET", "/resident/delegates"): Page(resident=200),
    ("POST", "/resident/delegates/{account_id}/end"): Page(),
    ("GET", "/resident/access-log"): Page(resident=200), ("GET", "/resident/corrections"): Page(resident=200),
    ("POST", "/resident/corrections"): Page(), ("POST", "/resident/corrections/{task_id}/reply"): Page(),
    # SMART App Launch (hutong.web.smart_routes): the approval page reads the session itself
    ("GET", "/signin/authorize/{request_id}"): Page(public=True),
    ("POST", "/signin/authorize/{request_id}"): Page(public=True),
    ("GET", "/clinician/apps"): Page(resident=403), ("POST", "/clinician/launch"): Page(),
    ("GET", "/resident/apps"): Page(resident=200), ("POST", "/resident/apps/{grant_id}/revoke"): Page(),
}


def app_routes(app: Any, *, pages: bool = False) -> set[tuple[str, str]]:
    """The API routes (pages=False) or the portal pages (pages=True)."""
    out: set[tuple[str, str]] = set()
    for r in app.routes:
        if session.is_page(r.path) != pages:
            continue
        for m in getattr(r, "methods", None) or ():
            out.add((m, r.path))
    return out


@pytest.fixture
def region(server: Server, tmp_path: Path) -> Iterator[Region]:
    reg = build(server)
    # A real sharing request (institution B's draft), so the sharing routes are
    # tried on something that exists rather than answering 404.
    with reg.client("sysB") as b:
        made = httpx.post(server.root + "/sharing/requests", json=sharing_body(f"file://{tmp_path}/out"),
                          headers={"authorization": b.headers["authorization"]})
    assert made.status_code == 201, made.text
    reg.ids["sharing"] = made.json()["id"]
    yield reg


def fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def values_for(region: Region, *, other: bool) -> dict[str, str]:
    """Path parameters: R's own records, or (other=True) S's."""
    ids = region.ids
    return {
        "type": "Observation", "id": ids["obsS"] if other else ids["obsA"], "vid": "1",
        # the compartment of a source Patient (the golden person's compartment holds no clinical rows)
        "ctype": "Patient", "cid": ids["pS"] if other else ids["pA"], "op": "$mpi-link",
        "seq": "1", "review_id": "1", "message_id": "1", "request_id": ids["sharing"],
    }


def request_of(method: str, template: str, region: Region, *, other: bool) -> tuple[str, dict[str, Any]]:
    """The concrete path and httpx keyword arguments for one route."""
    ids = region.ids
    vals = values_for(region, other=other)
    if "/Patient/{id}/" in template:  # operations on a resident: the golden person id
        vals["id"] = ids["S"] if other else ids["R"]
    path = fill(template, vals)
    json_headers = {"content-type": "application/fhir+json"}
    kw: dict[str, Any] = {}
    if method in ("POST", "PUT"):
        body: dict[str, Any] = {"resourceType": "Parameters"}
        if template.endswith("/_search"):
            patient = ids["pS"] if other else ids["pA"]
            return path, {"content": f"patient={patient}", "headers": {
                "content-type": "application/x-www-form-urlencoded"}}
        if template.startswith("/sharing/"):
            return path, {"json": sharing_body("file:///tmp/out") | {"note": "route test"}}
        if template == "/ingest/cda":
            return path, {"content": b"<ClinicalDocument xmlns='urn:hl7-org:v3'/>",
                          "headers": {"content-type": "application/hl7-cda+xml"}}
        if template in ("/fhir", "/fhir/"):
            body = {"resourceType": "Bundle", "type": "batch", "entry": [
                {"request": {"method": "GET", "url": f"Observation/{vals['id']}"}}]}
        elif template.startswith("/fhir/{type}"):
            pid = ids["pS"] if other else ids["pA"]
            body = {"resourceType": "Observation", "status": "final", "code": {"text": "route test"},
                    "subject": {"reference": f"Patient/{pid}"}}
            if "{id}" in template:
                body["id"] = vals["id"]
        elif template.endswith("$break-glass"):
            body = {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "route test"}]}
        kw = {"content": orjson.dumps(body), "headers": json_headers}
    elif method == "PUT":
        kw = {"headers": json_headers}
    elif method == "PATCH":
        kw = {"content": orjson.dumps([{"op": "replace", "path": "/status", "value": "cancelled"}]),
              "headers": {"content-type": "application/json-patch+json"}}
    if method == "GET" and template == "/fhir/{type}":
        path += f"?patient={ids['pS'] if other else ids['pA']}"
    if method == "PUT" and template == "/fhir/{type}":
        path += f"?_id={vals['id']}"
    if method == "DELETE" and template == "/fhir/{type}":
        path += f"?_id={vals['id']}"
    return path, kw


def s_markers(region: Region) -> tuple[str, ...]:
    ids = region.ids
    # S's golden id, S's own records, ID number and family name.  S's source
    # Patient id (pS) is left out: R's "trap" Observation names it as a
    # performer, which is R's data; resource_ids() checks it is never a resource.
    return (ids["S"], ids["obsS"], ids["encS"], S_ID, "李")


def assert_nothing_of_s(region: Region, r: httpx.Response, what: str) -> None:
    for m in s_markers(region):
        assert m not in r.text, f"{what}: S's {m!r} in the response"
    if r.headers.get("content-type", "").split(";")[0].endswith("json") and r.content:
        got = resource_ids(r.json())
        s_records = {region.ids[k] for k in ("pS", "S", "obsS", "encS")}
        assert not got & s_records, f"{what}: S's records {got & s_records}"


def newest_seq(server: Server) -> int:
    rows = server.app.platform.audit.search(limit=1)
    return rows[0].seq if rows else 0


def new_rows(server: Server, after: int) -> list[Any]:
    return [e for e in server.app.platform.audit.search(limit=20) if e.seq > after]


# ---------------------------------------------------------------- the table
def test_route_table_is_complete(server: Server) -> None:
    served = app_routes(server.app)
    missing = served - ROUTES.keys()
    gone = ROUTES.keys() - served
    assert not missing, f"routes without a decision in ROUTES (public or authenticated?): {sorted(missing)}"
    assert not gone, f"ROUTES names routes the app no longer serves: {sorted(gone)}"
    # The table and the gate agree on what is public (a prefix like /auth/ may
    # not quietly open a new route: its line here must say PUBLIC).
    for (method, path), kind in ROUTES.items():
        concrete = fill(path, {k: "x" for k in re.findall(r"\{(\w+)\}", path)})
        assert is_public(concrete) == isinstance(kind, Public), (method, path)
    # Only APIRoutes and FastAPI's description of the API: no mounted sub-apps
    # or websocket routes that would bypass the table; the one mount is the
    # portals' static files (CSS, JS, Chart.js: no data).
    for r in server.app.routes:
        assert isinstance(r, APIRoute) or r.path in ("/openapi.json", "/static"), r
    served_pages = app_routes(server.app, pages=True)
    assert served_pages == PAGES.keys(), (sorted(served_pages - PAGES.keys()), sorted(PAGES.keys() - served_pages))
    for (method, path), page in PAGES.items():
        concrete = fill(path, {k: "x" for k in re.findall(r"\{(\w+)\}", path)})
        assert session.is_public_page(concrete) == page.public, (method, path)


def test_every_page_without_a_session_is_sent_to_sign_in(region: Region) -> None:
    server = region.server
    http = httpx.Client(base_url=server.root, timeout=30, follow_redirects=False)
    try:
        for (method, template), page in sorted(PAGES.items()):
            if page.public:
                continue
            path = fill(template, {k: "x" for k in re.findall(r"\{(\w+)\}", template)})
            before = newest_seq(server)
            r = http.request(method, path, data={"csrf": "forged"} if method == "POST" else None)
            assert r.status_code == 303 and r.headers["location"].startswith("/?next="), (method, template)
            rows = new_rows(server, before)
            assert [(x.action, x.outcome, x.code) for x in rows] == [("refuse", REFUSED, "HT-0100")], template
        # a static asset needs no session and carries no data
        assert http.get("/static/app.css").status_code == 200
    finally:
        http.close()


def test_every_page_as_a_resident(region: Region) -> None:
    """R's browser: its own portal answers, the others refuse with a page (not
    data); a POST without the page's CSRF token is refused; all audited."""
    server = region.server
    with region.client("R") as client:
        http = httpx.Client(base_url=server.root, timeout=30, follow_redirects=False,
                            headers={"authorization": client.headers["authorization"]})
        try:
            for (method, template), page in sorted(PAGES.items()):
                if page.public:
                    continue
                vals = {"person": region.ids["S"], "doc_id": region.ids["obsS"], "review_id": "1", "seq": "1",
                        "account_id": "acct-x", "consent_id": "x", "grant_id": "x", "task_id": "x",
                            "vid": "x"}
                path = fill(template, vals)
                before = newest_seq(server)
                r = http.request(method, path, data={"csrf": "forged"} if method == "POST" else None)
                what = f"{method} {template}"
                expected = page.resident if method == "GET" else 403
                assert r.status_code == expected, (what, r.status_code, r.text[:300])
                assert r.headers["content-type"].startswith("text/html"), what
                # The page echoes its own URL (language switch); nothing else of S may appear.
                text = r.text.replace(path, "")
                for m in s_markers(region):
                    assert m not in text, f"{what}: S's {m!r} in the page"
                rows = new_rows(server, before)
                assert len(rows) == 1 and rows[0].account_id == region.accounts["R"].id, (what, rows)
        finally:
            http.close()
    assert server.app.platform.audit.verify().ok


# ---------------------------------------------------------------- no token
def test_every_authenticated_route_refuses_without_a_token(region: Region) -> None:
    server = region.server
    http = httpx.Client(base_url=server.root, timeout=30)
    checked = 0
    try:
        for (method, template), kind in sorted(ROUTES.items()):
            path, kw = request_of(method, template, region, other=False)
            before = newest_seq(server)
            r = http.request(method, path, **kw)
            what = f"{method} {template}"
            if isinstance(kind, Public):
                # Public routes answer without a token, and a bodiless call is at
                # worst a 400: never a refusal to authenticate, never a 500.
                assert r.status_code < 500 and r.status_code != 403, (what, r.status_code, r.text[:300])
                continue
            assert r.status_code == 401, (what, r.status_code, r.text[:300])
            assert issue_code(r) == "HT-0100", what
            assert r.headers["www-authenticate"].startswith("Bearer"), what
            assert r.headers["content-type"].startswith("application/fhir+json"), what
            rows = new_rows(server, before)
            assert len(rows) == 1, (what, rows)
            row = rows[0]
            assert (row.action, row.outcome, row.code, row.account_id) == ("refuse", REFUSED, "HT-0100", None), what
            assert row.interaction == f"{method} {path.split('?')[0]}", what
            checked += 1
    finally:
        http.close()
    assert checked == sum(isinstance(k, Auth) for k in ROUTES.values())
    assert server.app.platform.audit.verify().ok


# ---------------------------------------------------------------- as a resident
def _outcome_of(status: int) -> str:
    return SUCCESS if status < 400 else REFUSED if status in (401, 403) else FAILED


def test_every_route_as_a_resident(region: Region) -> None:
    """R gets what the table says, on R's own ids and on S's; every call is
    audited under R with its route template; nothing of S ever comes back."""
    server = region.server
    r_account = region.accounts["R"]
    seen: dict[str, int] = {}
    wrong: list[tuple[str, int, str]] = []
    with region.client("R") as client:
        http = httpx.Client(base_url=server.root, timeout=30, headers={
            "authorization": client.headers["authorization"]})
        try:
            for (method, template), kind in sorted(ROUTES.items()):
                if not isinstance(kind, Auth):
                    continue
                for other in (False, True):
                    expected = kind.other if other else kind.own
                    if other and expected is None:
                        continue
                    path, kw = request_of(method, template, region, other=other)
                    before = newest_seq(server)
                    r = http.request(method, path, **kw)
                    what = f"{method} {path} ({'S' if other else 'own'})"
                    seen[what] = r.status_code
                    if r.status_code != expected:
                        wrong.append((what, r.status_code, r.text[:300]))
                        continue
                    assert_nothing_of_s(region, r, what)
                    if not other and (method, template) in SHOWS_OWN_RECORDS:
                        assert region.ids["obsA"] in r.text, what  # success means R's data, not an empty page
                    if r.status_code >= 400:
                        assert r.json()["resourceType"] == "OperationOutcome", what
                    rows = [e for e in new_rows(server, before) if e.interaction == f"{method} {template}"]
                    assert len(rows) == 1, (what, new_rows(server, before))
                    row = rows[0]
                    assert row.account_id == r_account.id and row.role == "resident", what
                    assert row.outcome == _outcome_of(r.status_code), (what, row.outcome)
                    if r.status_code == 403:
                        assert row.code is not None and row.code.startswith("HT-01"), (what, row.code)
        finally:
            http.close()
    assert not wrong, "\n".join(map(str, wrong))
    assert server.app.platform.audit.verify().ok
    assert len(seen) == sum(1 + (k.other is not None) for k in ROUTES.values() if isinstance(k, Auth))


# ---------------------------------------------------------------- paths that only look public
LOOKALIKES = (
    "/auth/../fhir/Observation", "/auth/%2e%2e/fhir/Observation", "/auth/..%2Ffhir%2FObservation",
    "/auth%2F..%2Ffhir/Observation", "/healthz/../fhir/Observation", "/fhir/metadata/../Observation",
    "/fhir/metadata/..%2FObservation", "/fhir/metadata%2F..%2FObservation", "/fhir/metadata;/../Observation",
    "/docs/../fhir/Observation", "/fhir/.well-known/smart-configuration/../../Observation",
    "//fhir/Observation", "/fhir//Observation", "/FHIR/Observation", "/fhir/Observation?x=1#/auth/",
    "/openapi.json/../fhir/Observation",
)


def raw_get(server: Server, path: str) -> tuple[int, bytes]:
    """One request with the path exactly as written (httpx would normalise dot segments)."""
    u = urlsplit(server.root)
    with socket.create_connection((u.hostname or "127.0.0.1", u.port or 80), timeout=30) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_paths_that_only_look_public_are_not(region: Region) -> None:
    """Dot segments, encoded slashes, doubled slashes and case games never
    route a request past the gate (the gate and the router see one path)."""
    for path in LOOKALIKES:
        status, body = raw_get(region.server, path)
        assert status in (401, 404), (path, status, body[:200])
        assert region.ids["obsA"].encode() not in body and b'"Bundle"' not in body, path
