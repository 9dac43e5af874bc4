"""HTTP routes of the sharing-request register (JSON, not FHIR).

    POST /sharing/requests                  create a draft (institutions, commission, platform)
    GET  /sharing/requests[?status=S]       list (commission, auditors, platform: all; institutions: own)
    GET  /sharing/requests/{id}             one request with its exports
    POST /sharing/requests/{id}/submit      draft -> submitted (the requester)
    POST /sharing/requests/{id}/approve     submitted -> approved ({"note": ...}; commission, not the requester)
    POST /sharing/requests/{id}/reject      submitted -> rejected ({"note": ...} required)

Exports themselves run from the command line (``hutong export``): they write
to the platform's own disks, which no HTTP caller should be able to aim.
Policy (roles, four-eyes) lives in :class:`hutong.security.sharing.SharingRequests`;
these routes only translate HTTP and hand it the authenticated caller.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from hutong.errors import Forbidden, InvalidRequest
from hutong.fhir.service import parse_json
from hutong.security.principal import Principal
from hutong.security.settings import SecuritySettings
from hutong.security.sharing import OVERSIGHT_ROLES, REQUESTER_ROLES, Audit, SharingRequest, SharingRequests
from hutong.store.repository import Repository
from hutong.web.principal import principal_of

MAX_BODY = 64 * 1024


def _json(status: int, data: Any) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def _body(request: Request, *, required: bool) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise InvalidRequest("HT-0163", f"request body over {MAX_BODY} bytes")
    if not raw.strip():
        if required:
            raise InvalidRequest("HT-0163", "send a JSON object")
        return {}
    data = parse_json(raw)  # the API's one JSON body parser (HT-0001)
    if not isinstance(data, dict):
        raise InvalidRequest("HT-0163", "send a JSON object")
    return data


def _may_see(p: Principal, req: SharingRequest) -> bool:
    return p.role in OVERSIGHT_ROLES or p.account_id == req.requester


def register(app: FastAPI, repo: Repository, settings: SecuritySettings, audit: Audit) -> None:
    app.include_router(router(repo, settings, audit))


def router(repo: Repository, settings: SecuritySettings, audit: Audit) -> APIRouter:
    """The sharing-request routes."""
    app = APIRouter(tags=["sharing"])
    reg = SharingRequests(repo, audit, settings=settings)

    @app.post("/sharing/requests")
    async def create(request: Request) -> Response:
        p = principal_of(request)
        data = await _body(request, required=True)
        req = await run_in_threadpool(reg.create, p, data)
        return _json(201, req.to_json(reg.clock()))

    @app.get("/sharing/requests")
    async def list_requests(request: Request) -> Response:
        p = principal_of(request)
        if p.role not in OVERSIGHT_ROLES and p.role not in REQUESTER_ROLES:
            raise Forbidden("HT-0104", f"role {p.role} may not see sharing requests")
        status = request.query_params.get("status")
        # Requesters who are not overseers see only their own requests.
        mine = None if p.role in OVERSIGHT_ROLES else p.account_id
        rows = await run_in_threadpool(lambda: reg.list(status=status, requester=mine))
        now = reg.clock()
        return _json(200, [r.to_json(now) for r in rows])

    @app.get("/sharing/requests/{request_id}")
    async def show(request: Request, request_id: str) -> Response:
        p = principal_of(request)
        req = await run_in_threadpool(reg.get, request_id)
        if not _may_see(p, req):
            raise Forbidden("HT-0104", "not your sharing request")
        return _json(200, req.to_json(reg.clock()))

    @app.post("/sharing/requests/{request_id}/submit")
    async def submit(request: Request, request_id: str) -> Response:
        p = principal_of(request)
        req = await run_in_threadpool(reg.submit, request_id, p)
        return _json(200, req.to_json(reg.clock()))

    @app.post("/sharing/requests/{request_id}/approve")
    async def approve(request: Request, request_id: str) -> Response:
        p = principal_of(request)
        data = await _body(request, required=False)
        note = data.get("note")
        if note is not None and not isinstance(note, str):
            raise InvalidRequest("HT-0163", "note must be text")
        req = await run_in_threadpool(reg.approve, request_id, p, note)
        return _json(200, req.to_json(reg.clock()))

    @app.post("/sharing/requests/{request_id}/reject")
    async def reject(request: Request, request_id: str) -> Response:
        p = principal_of(request)
        data = await _body(request, required=True)
        note = data.get("note")
        if not isinstance(note, str):
            raise InvalidRequest("HT-0163", "a rejection needs a note saying why")
        req = await run_in_threadpool(reg.reject, request_id, p, note)
        return _json(200, req.to_json(reg.clock()))

    return app
