"""The audit HTTP routes over real HTTP (uvicorn in a thread), SQLite and PostgreSQL.

The app here is the audit routes alone behind a stand-in for the auth
middleware: it sets ``request.state.principal`` from an ``x-test-account``
header, so each role's view can be checked without the token machinery.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI, Request
from harness import serving
from starlette.responses import Response
from test_audit import AUDITOR, DELEGATE, DOCTOR, DOCTOR2, RESIDENT_A, clear_audit, read, sql

from hutong.errors import HutongError, operation_outcome
from hutong.fhir.assembly import open_repository
from hutong.security.audit import AuditLog
from hutong.security.principal import Principal, Role
from hutong.web import audit_routes

OPERATOR = Principal(account_id="acc-op-1", role=Role.OPERATOR, display="运维")
COMMISSION = Principal(account_id="acc-com-1", role=Role.COMMISSION, display="卫健委")
PRINCIPALS = {p.account_id: p for p in (AUDITOR, DELEGATE, DOCTOR, DOCTOR2, RESIDENT_A, OPERATOR, COMMISSION)}


@dataclass
class Api:
    client: httpx.Client
    audit: AuditLog

    def get(self, who: Principal | None, path: str, **params: str) -> httpx.Response:
        headers = {"x-test-account": who.account_id} if who else {}
        return self.client.get(path, params=params, headers=headers)

    def post(self, who: Principal | None, path: str, body: bytes) -> httpx.Response:
        headers = {"x-test-account": who.account_id} if who else {}
        return self.client.post(path, content=body, headers={**headers, "content-type": "application/json"})


def app_for(audit: AuditLog) -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def fake_auth(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        p = PRINCIPALS.get(request.headers.get("x-test-account", ""))
        if p is not None:
            request.state.principal = p
        return await call_next(request)

    @app.exception_handler(HutongError)
    async def error(_request: Request, e: HutongError) -> Response:
        import orjson

        return Response(orjson.dumps(operation_outcome(e)), status_code=e.status,
                        media_type="application/fhir+json")

    audit_routes.register(app, audit)
    return app


@pytest.fixture
def api(db_url: str) -> Iterator[Api]:
    repo = open_repository(db_url)
    audit = AuditLog(repo)
    clear_audit(repo)
    try:
        with serving(app_for(audit)) as root, httpx.Client(base_url=root, timeout=30) as client:
            yield Api(client, audit)
    finally:
        repo.db.close()


def code_of(r: httpx.Response) -> str:
    code: str = r.json()["issue"][0]["details"]["coding"][0]["code"]
    return code


def seed(audit: AuditLog) -> dict[str, int]:
    return {
        "doc_a": audit.record(read(("mpi-a",))),
        "doc2_b": audit.record(read(("mpi-b",), who=DOCTOR2)),
        "self_a": audit.record(read(("mpi-a",), who=RESIDENT_A, purpose="own-record")),
        "bg_a": audit.record(read(("mpi-a",), who=DOCTOR2, purpose="break-glass", reason="抢救")),
        "del_c": audit.record(read(("mpi-c",), who=DELEGATE, purpose="delegate", on_behalf_of="mpi-c")),
    }


def test_auditor_searches_events(api: Api) -> None:
    s = seed(api.audit)
    r = api.get(AUDITOR, "/audit/events")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json")
    b = r.json()
    assert b["resourceType"] == "Bundle" and b["type"] == "searchset"
    assert [e["resource"]["id"] for e in b["entry"]] == [str(x) for x in sorted(s.values(), reverse=True)]
    assert b["entry"][0]["fullUrl"].endswith(f"/audit/events/{s['del_c']}")
    r = api.get(AUDITOR, "/audit/events", person="mpi-a", account="acc-doc-2")
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [str(s["bg_a"])]
    # paging through the next link
    r = api.get(AUDITOR, "/audit/events", _count="2")
    nxt = [link["url"] for link in r.json()["link"] if link["relation"] == "next"]
    assert len(r.json()["entry"]) == 2 and nxt
    r2 = api.client.get(nxt[0], headers={"x-test-account": AUDITOR.account_id})
    assert [e["resource"]["id"] for e in r2.json()["entry"]] == [str(s["self_a"]), str(s["doc2_b"])]
    one = api.get(AUDITOR, f"/audit/events/{s['bg_a']}")
    assert one.status_code == 200 and one.json()["meta"]["security"][0]["code"] == "BTG"
    missing = api.get(AUDITOR, "/audit/events/999")
    assert missing.status_code == 404 and code_of(missing) == "HT-0141"
    for bad in ({"_count": "0"}, {"_count": "x"}, {"since": "yesterday"}, {"outcome": "5"}):
        r = api.get(AUDITOR, "/audit/events", **bad)
        assert r.status_code == 400 and code_of(r) == "HT-0145", bad
    r = api.get(AUDITOR, "/audit/events", since="2000-01-01", until="2000-01-02")
    assert r.status_code == 200 and r.json()["entry"] == []


def test_roles_are_enforced(api: Api) -> None:
    seed(api.audit)
    assert api.get(None, "/audit/events").status_code == 401
    assert code_of(api.get(None, "/me/access-log")) == "HT-0100"
    for who, path in ((DOCTOR, "/audit/events"), (RESIDENT_A, "/audit/events"), (OPERATOR, "/audit/events"),
                      (COMMISSION, "/audit/events"), (RESIDENT_A, "/audit/verify"), (DOCTOR, "/audit/verify"),
                      (DOCTOR, "/audit/break-glass"), (RESIDENT_A, "/audit/break-glass"),
                      (AUDITOR, "/me/access-log"), (DOCTOR, "/me/access-log"), (OPERATOR, "/audit/events/1")):
        r = api.get(who, path)
        assert r.status_code == 403 and code_of(r) == "HT-0104", (who.role, path)
    r = api.post(COMMISSION, "/audit/break-glass/4/review", b'{"verdict": "justified"}')
    assert r.status_code == 403 and code_of(r) == "HT-0104"


def test_verify_route(api: Api) -> None:
    seed(api.audit)
    for who in (AUDITOR, OPERATOR):
        r = api.get(who, "/audit/verify")
        assert r.status_code == 200 and r.json()["ok"] is True and r.json()["rows"] == 5
    head = r.json()["head_hash"]
    assert api.get(AUDITOR, "/audit/verify", checkpoint=f"5:{head}").json()["ok"] is True
    assert code_of(api.get(AUDITOR, "/audit/verify", checkpoint="5")) == "HT-0145"
    sql(api.audit.repo, "UPDATE audit_event SET purpose = 'treatment' WHERE seq = 4")
    r = api.get(AUDITOR, "/audit/verify")
    assert r.status_code == 200 and r.json()["ok"] is False and r.json()["bad_seq"] == 4


def test_break_glass_review_route(api: Api) -> None:
    s = seed(api.audit)
    for who in (AUDITOR, COMMISSION):
        r = api.get(who, "/audit/break-glass", reviewed="false")
        assert r.status_code == 200 and [i["seq"] for i in r.json()["items"]] == [s["bg_a"]]
    item = r.json()["items"][0]
    assert item["review"] is None and item["event"]["purposeOfEvent"][0]["text"] == "抢救"
    path = f"/audit/break-glass/{s['bg_a']}/review"
    r = api.post(AUDITOR, path, '{"verdict": "justified", "note": "符合规定"}'.encode())
    assert r.status_code == 200 and r.json()["verdict"] == "justified" and r.json()["reviewer"] == "acc-aud-1"
    assert api.get(AUDITOR, "/audit/break-glass", reviewed="false").json()["items"] == []
    done = api.get(AUDITOR, "/audit/break-glass", reviewed="true").json()["items"]
    assert done[0]["review"]["note"] == "符合规定"
    again = api.post(AUDITOR, path, b'{"verdict": "unjustified"}')
    assert again.status_code == 409 and code_of(again) == "HT-0144"
    bad = api.post(AUDITOR, f"/audit/break-glass/{s['doc_a']}/review", b'{"verdict": "justified"}')
    assert bad.status_code == 400 and code_of(bad) == "HT-0142"
    assert code_of(api.post(AUDITOR, path, b'{"verdict": "maybe"}')) == "HT-0143"
    assert code_of(api.post(AUDITOR, f"/audit/break-glass/{s['del_c']}/review", b'{"verdict": 1}')) == "HT-0143"
    assert code_of(api.post(AUDITOR, path, b"not json")) == "HT-0001"
    assert code_of(api.get(AUDITOR, "/audit/break-glass", reviewed="maybe")) == "HT-0145"
    assert api.get(AUDITOR, "/audit/verify").json()["ok"] is True


def test_residents_access_log(api: Api) -> None:
    s = seed(api.audit)
    r = api.get(RESIDENT_A, "/me/access-log")
    assert r.status_code == 200
    body = r.json()
    assert body["persons"] == ["mpi-a"]
    assert [e["seq"] for e in body["entries"]] == [s["bg_a"], s["self_a"], s["doc_a"]]
    bg, me, doc = body["entries"]
    assert bg["break_glass"] is True and bg["reason"] == "抢救" and bg["who"] == "李医生"
    assert me["relation"] == "self" and doc["who"] == "王医生" and doc["organization"] == "H001"
    assert doc["reason"] is None and doc["time"].endswith("Z")
    r = api.get(RESIDENT_A, "/me/access-log", person="mpi-b")
    assert r.status_code == 403 and code_of(r) == "HT-0146"
    # a delegate: one of theirs, or all of theirs
    r = api.get(DELEGATE, "/me/access-log", person="mpi-c")
    assert [e["seq"] for e in r.json()["entries"]] == [s["del_c"]]
    assert r.json()["entries"][0]["relation"] == "delegate"
    r = api.get(DELEGATE, "/me/access-log")
    assert [e["seq"] for e in r.json()["entries"]] == [s["del_c"], s["bg_a"], s["self_a"], s["doc_a"]]
    assert code_of(api.get(DELEGATE, "/me/access-log", person="mpi-b")) == "HT-0146"
    # paging
    r = api.get(RESIDENT_A, "/me/access-log", _count="2")
    assert len(r.json()["entries"]) == 2 and "next" in r.json()
    r2 = api.client.get(r.json()["next"], headers={"x-test-account": RESIDENT_A.account_id})
    assert [e["seq"] for e in r2.json()["entries"]] == [s["doc_a"]] and "next" not in r2.json()
