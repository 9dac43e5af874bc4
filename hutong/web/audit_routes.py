"""HTTP routes of the audit trail (issue 6: audit, break-glass review, residents' access log).

    GET  /audit/events                  auditors: search, a Bundle of AuditEvent (auditevent.html), newest first
    GET  /audit/events/{seq}            auditors: one AuditEvent
    GET  /audit/verify                  auditors, operators: the hash chain check
    GET  /audit/break-glass             auditors, commission: break-glass accesses and their reviews
    POST /audit/break-glass/{seq}/review  auditors: {"verdict": "justified"|"unjustified", "note": "..."}
    GET  /me/access-log                 residents and delegates: who accessed the record (谁看了我的档案)

Paging everywhere is newest first: ``_count`` (1-500, default 50) and
``after`` (the last seq of the previous page; the ``next`` link carries it).
``since`` / ``until`` are FHIR dates or dateTimes (a date is Beijing
midnight; ``until`` is exclusive) or epoch milliseconds.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from hutong.errors import Forbidden, InvalidRequest, NotFound
from hutong.ingest.inbox import to_ms
from hutong.security.audit import AuditLog
from hutong.security.auditevent import to_fhir
from hutong.security.principal import Principal, Role
from hutong.web.principal import principal_of

FHIR_JSON = "application/fhir+json"
MAX_COUNT = 500


def _json(data: Any, media_type: str = "application/json", status: int = 200) -> Response:
    return Response(content=orjson.dumps(data), status_code=status, media_type=media_type)


def _require(p: Principal, *roles: Role) -> None:
    if p.role not in roles:
        raise Forbidden("HT-0104", f"{p.role} accounts may not do this (needs {' or '.join(roles)})")


def _int(request: Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    v = request.query_params.get(name)
    if v is None or v == "":
        return default
    if not v.isdigit() or not lo <= int(v) <= hi:
        raise InvalidRequest("HT-0145", f"{name} must be an integer from {lo} to {hi}")
    return int(v)


def _time(request: Request, name: str) -> int | None:
    v = request.query_params.get(name)
    if v is None or v == "":
        return None
    if v.isdigit():
        return int(v)
    ms = to_ms(v)
    if ms is None:
        raise InvalidRequest("HT-0145", f"{name} must be a date (YYYY-MM-DD), a dateTime or epoch milliseconds")
    return ms


def _page_args(request: Request) -> tuple[int, int | None, int | None, int | None]:
    count = _int(request, "_count", 50, 1, MAX_COUNT)
    assert count is not None
    return count, _int(request, "after", None, 1, 2**62), _time(request, "since"), _time(request, "until")


def _next_url(request: Request, last_seq: int) -> str:
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "after"]
    params.append(("after", str(last_seq)))
    return str(request.url.replace(query=urlencode(params)))


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def register(app: FastAPI, audit: AuditLog) -> None:
    app.include_router(router(audit))


def router(audit: AuditLog) -> APIRouter:
    """The audit routes (the caller comes from :func:`principal_of`)."""
    app = APIRouter(tags=["audit"])

    @app.get("/audit/events")
    def audit_events(request: Request) -> Response:
        _require(principal_of(request), Role.AUDITOR)
        count, after, since, until = _page_args(request)
        q = request.query_params
        outcome = q.get("outcome") or None
        if outcome is not None and outcome not in ("0", "4", "8", "12"):
            raise InvalidRequest("HT-0145", "outcome must be 0, 4, 8 or 12 (audit-event-outcome)")
        entries = audit.search(account=q.get("account") or None, person=q.get("person") or None,
                               action=q.get("action") or None, outcome=outcome,
                               purpose=q.get("purpose") or None, since=since, until=until, limit=count,
                               after_seq=after)
        base = _base(request)
        links = [{"relation": "self", "url": str(request.url)}]
        if len(entries) == count:
            links.append({"relation": "next", "url": _next_url(request, entries[-1].seq)})
        bundle = {"resourceType": "Bundle", "type": "searchset", "link": links,
                  "entry": [{"fullUrl": f"{base}/audit/events/{e.seq}", "resource": to_fhir(e),
                             "search": {"mode": "match"}} for e in entries]}
        return _json(bundle, FHIR_JSON)

    @app.get("/audit/events/{seq}")
    def audit_event(seq: int, request: Request) -> Response:
        _require(principal_of(request), Role.AUDITOR)
        e = audit.get(seq)
        if e is None:
            raise NotFound("HT-0141", f"no audit record {seq}")
        return _json(to_fhir(e), FHIR_JSON)

    @app.get("/audit/verify")
    def audit_verify(request: Request) -> Response:
        _require(principal_of(request), Role.AUDITOR, Role.OPERATOR)
        cp = request.query_params.get("checkpoint")
        checkpoint = None
        if cp:
            seq, _, h = cp.partition(":")
            if not seq.isdigit() or len(h) != 64:
                raise InvalidRequest("HT-0145", "checkpoint must be SEQ:HASH (64 hex digits)")
            checkpoint = (int(seq), h.lower())
        return _json(audit.verify(checkpoint).to_json())

    @app.get("/audit/break-glass")
    def break_glass(request: Request) -> Response:
        _require(principal_of(request), Role.AUDITOR, Role.COMMISSION)
        count, after, _since, _until = _page_args(request)
        r = request.query_params.get("reviewed")
        if r not in (None, "", "true", "false"):
            raise InvalidRequest("HT-0145", "reviewed must be true or false")
        reviewed = None if not r else r == "true"
        items = audit.break_glass_list(reviewed, limit=count, after_seq=after)
        out: dict[str, Any] = {"items": [{"seq": i.entry.seq, "event": to_fhir(i.entry),
                                          "review": i.review.to_json() if i.review else None} for i in items]}
        if len(items) == count:
            out["next"] = _next_url(request, items[-1].entry.seq)
        return _json(out)

    @app.post("/audit/break-glass/{seq}/review")
    async def review(seq: int, request: Request) -> Response:
        p = principal_of(request)
        _require(p, Role.AUDITOR)
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as e:
            raise InvalidRequest("HT-0001", "request body is not valid JSON") from e
        if not isinstance(body, dict) or not isinstance(body.get("verdict"), str) \
                or not isinstance(body.get("note", ""), str):
            raise InvalidRequest("HT-0143", 'send {"verdict": "justified" | "unjustified", "note": "..."}')
        rv = await run_in_threadpool(audit.review_break_glass, seq, p, body["verdict"], body.get("note", ""))
        return _json(rv.to_json())

    @app.get("/me/access-log")
    def access_log(request: Request) -> Response:
        p = principal_of(request)
        _require(p, Role.RESIDENT, Role.DELEGATE)
        count, after, since, until = _page_args(request)
        asked = request.query_params.getlist("person")
        # p.persons are the delegations live now (hutong.security.tokens verify),
        # not those the token was issued with: an ex-delegate sees nothing.
        if not p.persons:
            raise Forbidden("HT-0146", "this account acts for nobody at the moment (the delegation may have ended)")
        for pid in asked:
            if pid not in p.persons:
                raise Forbidden("HT-0146", "you may see the access log of your own record and of the "
                                           "residents you act for only")
        persons = asked or list(p.persons)
        entries = audit.access_log(persons, since=since, until=until, limit=count, after_seq=after)
        out: dict[str, Any] = {"persons": persons, "entries": [e.to_json() for e in entries]}
        if len(entries) == count:
            out["next"] = _next_url(request, entries[-1].seq)
        return _json(out)

    return app
