"""The ASGI application: FHIR R4 REST at /fhir (http.html).

Routes only translate HTTP to :class:`hutong.fhir.service.FhirService` calls;
every error leaves as an OperationOutcome with a stable HT code.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from hutong import __version__
from hutong.config import Settings
from hutong.errors import (
    HutongError,
    InvalidRequest,
    NotFound,
    TooLarge,
    UnsupportedMediaType,
    operation_outcome,
)
from hutong.fhir.assembly import open_repository
from hutong.fhir.bundle import BundleProcessor
from hutong.fhir.capability import capability_statement
from hutong.fhir.identity import IdentityOperations
from hutong.fhir.response import FHIR_JSON, FhirResponse
from hutong.fhir.service import FhirService
from hutong.ingest import inbox
from hutong.ingest.pipeline import Ingestor
from hutong.security import consent_authors, grants
from hutong.security.audit import AuditLog
from hutong.security.guard import install as install_guard
from hutong.security.keys import default_key_dir
from hutong.security.policy import Access
from hutong.security.principal import Role
from hutong.security.settings import SecuritySettings
from hutong.security.sms import OutboxGateway
from hutong.store.sql import SqlRepository
from hutong.web import (
    access_ops,
    audit_routes,
    auth_routes,
    gate,
    public_assets,
    sharing_routes,
    transfer_ops,
)
from hutong.web.access_ops import find_person
from hutong.web.headers import SecurityHeaders
from hutong.web.ui import clinician as clinician_portal
from hutong.web.ui import console as console_portal
from hutong.web.ui import pages as ui_pages
from hutong.web.ui import resident as resident_portal
from hutong.web.ui import session as ui_session

log = logging.getLogger("hutong.web")
# Who may use the identity services: find a resident, steward the index, watch ingestion.
IDENTITY_LOOKUP = (Role.INSTITUTION, Role.CLINICIAN, Role.COMMISSION, Role.PLATFORM)
IDENTITY_STEWARDS = (Role.COMMISSION, Role.PLATFORM)
OVERSIGHT = (Role.COMMISSION, Role.OPERATOR, Role.PLATFORM)
JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")


def _to_response(r: FhirResponse) -> Response:
    return Response(content=r.body if r.body is not None else b"", status_code=r.status,
                    headers=r.headers, media_type=FHIR_JSON if r.body is not None else None)


def _error(e: HutongError) -> Response:
    return Response(content=FhirResponse.json(e.status, operation_outcome(e)).body, status_code=e.status,
                    media_type=FHIR_JSON)


def create_app(settings: Settings | None = None, repo: SqlRepository | None = None, *,
               security: SecuritySettings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    security = security or SecuritySettings.from_env()
    repository = repo or open_repository(settings.database_url)
    # /docs is self-hosted (hutong.web.public_assets), never FastAPI's CDN page.
    app = FastAPI(title="Hutong FHIR R4", version=__version__, docs_url=None, redoc_url=None)
    app.state.repo = repository
    app.state.settings = settings
    app.state.security = security
    # Security (hutong.security): the policy on every write path, the audit
    # log, token routes, and the gate every other request passes.
    install_guard(repository)
    audit = AuditLog(repository)
    app.state.audit = audit
    grants.create_tables(repository.db)
    key_dir = security.key_dir or default_key_dir(settings.database_url)
    # The development SMS gateway: a local outbox file, never a pretend carrier.
    sms = OutboxGateway(security.sms_outbox or key_dir / "sms-outbox.ndjson")
    authn = auth_routes.register(app, repository, security, key_dir, audit.record,
                                 lambda idno: find_person(repository, idno), sms=sms)
    app.state.authenticator = authn
    app.state.sms = sms
    notify = access_ops.sms_notifier(repository, sms.send)
    consent_authors.install(repository, sms.send)  # residents are told of Consents others record (issue 12)
    gate.install(app, repository, security, authn, audit)
    # Outermost: every answer, the gate's refusals included (issue 12, finding 20).
    app.add_middleware(SecurityHeaders, https=(settings.base_url or "").startswith("https:"))
    public_assets.register(app, app.title)
    # The portals' pages (issue 7); their routes are added after the API's (below),
    # so the hot FHIR paths match first.
    ui = ui_pages.Pages()
    app.state.pages = ui

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}
    # Primary-key reads (tens of microseconds on SQLite, one local round trip on
    # PostgreSQL) run on the event loop: measured 3.1k vs 1.7k req/s (SQLite)
    # and 2.1k vs 1.4k (PostgreSQL) against handing them to the thread pool.
    # HUTONG_INLINE_READS=0 turns this off (e.g. for a remote, slow database).
    inline_reads = os.environ.get("HUTONG_INLINE_READS", "1") != "0"

    def service(request: Request) -> FhirService:
        base = settings.base_url or str(request.base_url).rstrip("/") + "/fhir"
        return FhirService(repository, base, gate.access_of(request))

    def require(request: Request, *roles: Role, what: str) -> Access:
        access = gate.access_of(request)
        access.require_role(*roles, what=what)
        return access

    def headers_of(request: Request) -> dict[str, str]:
        return {k.lower(): v for k, v in request.headers.items()}

    async def body_of(request: Request) -> bytes:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in JSON_TYPES:
            raise UnsupportedMediaType("HT-0002", f"content type {ctype or '(none)'!r} is not supported; "
                                                  "send application/fhir+json")
        return await raw_body(request)

    async def raw_body(request: Request) -> bytes:
        limit = settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise TooLarge("HT-0003", f"body of {declared} bytes exceeds the limit of {limit} bytes")
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge("HT-0003", f"body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def check_format(request: Request) -> None:
        fmt = request.query_params.get("_format")
        if fmt and "json" not in fmt:
            raise HutongError("HT-0002", f"_format={fmt[:40]} is not supported; this server speaks JSON only",
                              status=406, issue_code="not-supported")

    @app.exception_handler(HutongError)
    async def hutong_error(request: Request, e: HutongError) -> Response:
        gate.remember_error(request, e)
        if ui_session.is_page(request.url.path):
            return ui.error(request, e)
        resp = _error(e)
        if e.status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="hutong"'
        return resp

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, e: RequestValidationError) -> Response:
        return _error(InvalidRequest("HT-0033", f"invalid request: {e.errors()[:3]}"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, e: StarletteHTTPException) -> Response:
        if e.status_code == 404:
            return _error(NotFound("HT-0009", "no such endpoint"))
        return _error(HutongError("HT-0033", str(e.detail), status=e.status_code))

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, e: Exception) -> Response:
        # The exception type only: messages may carry resident data (no identifiers in logs).
        log.error("internal error: %s", type(e).__name__, exc_info=False)
        return _error(HutongError("HT-0099", "internal error", status=500, issue_code="exception"))

    def run(fn: Callable[[], FhirResponse]) -> Awaitable[Response]:
        async def go() -> Response:
            return _to_response(await run_in_threadpool(fn))

        return go()

    # ------------------------------------------------------------------ routes
    @app.get("/fhir/metadata")
    async def metadata(request: Request) -> Response:
        # Public (gate.PUBLIC_PATHS): the gate gives it no Access, so not service(request).
        base = settings.base_url or str(request.base_url).rstrip("/") + "/fhir"
        return _to_response(FhirResponse.json(200, capability_statement(base)))

    @app.post("/fhir")
    @app.post("/fhir/")
    async def bundle(request: Request) -> Response:
        body = await body_of(request)
        svc = service(request)
        return await run(lambda: BundleProcessor(svc).process(body, headers_of(request)))

    @app.get("/fhir/_history")
    async def system_history(request: Request) -> Response:
        svc = service(request)
        return await run(lambda: svc.history(None, None, list(request.query_params.multi_items())))

    @app.get("/fhir/{type}")
    async def search(type: str, request: Request) -> Response:
        check_format(request)
        svc = service(request)
        return await run(lambda: svc.search(type, list(request.query_params.multi_items()), headers_of(request)))

    @app.post("/fhir/{type}/_search")
    async def search_post(type: str, request: Request) -> Response:
        ctype = request.headers.get("content-type", "").split(";")[0].strip()
        if ctype != "application/x-www-form-urlencoded":
            raise UnsupportedMediaType("HT-0002", "POST _search needs application/x-www-form-urlencoded")
        raw = await request.body()
        try:
            form = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise InvalidRequest("HT-0021", "_search body is not UTF-8") from None
        items = list(request.query_params.multi_items()) + form
        svc = service(request)
        return await run(lambda: svc.search(type, items, headers_of(request)))

    @app.post("/fhir/{type}")
    async def create(type: str, request: Request) -> Response:
        body = await body_of(request)
        svc = service(request)
        return await run(lambda: svc.create(type, body, headers_of(request)))

    @app.put("/fhir/{type}")
    async def conditional_update(type: str, request: Request) -> Response:
        body = await body_of(request)
        svc = service(request)
        q = request.url.query
        return await run(lambda: svc.conditional_update(type, q, body, headers_of(request)))

    @app.delete("/fhir/{type}")
    async def conditional_delete(type: str, request: Request) -> Response:
        svc = service(request)
        q = request.url.query
        return await run(lambda: svc.conditional_delete(type, q))

    @app.get("/fhir/{type}/_history")
    async def type_history(type: str, request: Request) -> Response:
        svc = service(request)
        return await run(lambda: svc.history(type, None, list(request.query_params.multi_items())))

    # ------------------------------------------------------------ identity (hutong.fhir.identity)
    @app.post("/fhir/Patient/$match")
    async def pdqm_match(request: Request) -> Response:
        require(request, *IDENTITY_LOOKUP, what="identity lookups ($match)")
        body = await body_of(request)
        ops = IdentityOperations(service(request))
        return await run(lambda: ops.match(body))

    @app.get("/fhir/Patient/$ihe-pix")
    async def pixm(request: Request) -> Response:
        require(request, *IDENTITY_LOOKUP, what="identity lookups ($ihe-pix)")
        ops = IdentityOperations(service(request))
        return await run(lambda: ops.pix(list(request.query_params.multi_items())))

    @app.post("/fhir/Patient/{op}")
    async def mpi_operation(op: str, request: Request) -> Response:
        handlers = {"$mpi-link": "link", "$mpi-unlink": "unlink", "$mpi-merge": "merge", "$mpi-unmerge": "unmerge"}
        if op not in handlers:
            raise NotFound("HT-0040", f"unknown Patient operation {op[:40]!r}")
        require(request, *IDENTITY_STEWARDS, what="identity stewardship (link, unlink, merge)")
        body = await body_of(request)
        ops = IdentityOperations(service(request))
        fn = getattr(ops, handlers[op])
        return await run(lambda: fn(body))

    @app.get("/mpi/review")
    async def mpi_review(request: Request) -> Response:
        require(request, *IDENTITY_STEWARDS, what="the identity review queue")
        ops = IdentityOperations(service(request))
        return await run(lambda: ops.review(list(request.query_params.multi_items())))

    @app.post("/mpi/review/{review_id}/reject")
    async def mpi_reject(review_id: str, request: Request) -> Response:
        require(request, *IDENTITY_STEWARDS, what="the identity review queue")
        body = await body_of(request) if request.headers.get("content-length", "0") != "0" else b""
        ops = IdentityOperations(service(request))
        return await run(lambda: ops.reject(review_id, body))

    # ------------------------------------------------------------ ingestion (hutong.ingest)
    ingestors: list[Ingestor] = []

    def ingestor(request: Request) -> Ingestor:
        if not ingestors:
            ingestors.append(Ingestor(FhirService(repository, service(request).base_url)))
        return ingestors[0]

    @app.get("/ingest/timeliness")
    async def timeliness(request: Request) -> Response:
        require(request, *OVERSIGHT, what="ingestion timeliness")
        q = dict(request.query_params)
        try:
            today = datetime.now(inbox.BEIJING).date()
            end = date.fromisoformat(q["to"]) if "to" in q else today
            start = date.fromisoformat(q["from"]) if "from" in q else end - timedelta(days=6)
        except ValueError:
            raise InvalidRequest("HT-0041", "from and to must be dates (YYYY-MM-DD)") from None
        if start > end or (end - start).days > 366:
            raise InvalidRequest("HT-0041", "from must not be after to, and the range at most 366 days")
        ing = ingestor(request)
        return await run(lambda: FhirResponse.json(200, inbox.timeliness(
            ing.repo, start=start, end=end, sender=q.get("institution"))))

    @app.get("/ingest/dead-letters")
    async def dead_letters(request: Request) -> Response:
        require(request, *OVERSIGHT, what="the dead-letter list")
        q = dict(request.query_params)
        try:
            limit, after = min(int(q.get("_count", "100")), 1000), int(q.get("after", "0"))
        except ValueError:
            raise InvalidRequest("HT-0041", "_count and after must be integers") from None
        ing = ingestor(request)
        return await run(lambda: FhirResponse.json(200, {"items": [
            r.summary() for r in inbox.dead_letters(ing.repo, limit=limit, after=after,
                                                    sender=q.get("institution"))]}))

    @app.post("/ingest/dead-letters/{message_id}/retry")
    async def retry_dead_letter(message_id: str, request: Request) -> Response:
        require(request, Role.COMMISSION, Role.PLATFORM, what="retrying dead letters")
        if not message_id.isdigit():
            raise InvalidRequest("HT-0041", "message id must be an integer")
        ing = ingestor(request)
        return await run(lambda: FhirResponse.json(200, ing.retry(int(message_id)).summary()))

    @app.post("/ingest/cda")
    async def post_cda(request: Request) -> Response:
        require(request, Role.INSTITUTION, Role.PLATFORM, what="sending CDA documents")
        gate.access_of(request).require_scope("DocumentReference", "create")
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("application/xml", "text/xml", "application/hl7-cda+xml"):
            raise UnsupportedMediaType("HT-0002", "send the CDA document as application/hl7-cda+xml")
        body = await raw_body(request)
        ing = ingestor(request)
        client = request.client
        peer = f"{client.host}:{client.port}" if client else None
        return await run(lambda: ing.cda_response(body, peer))

    @app.post("/fhir/Patient/{id}/$break-glass")
    async def break_glass(id: str, request: Request) -> Response:
        """Emergency access to a resident's whole record (reason required; flagged,
        the resident is told, auditors review: hutong.security.grants)."""
        access = require(request, Role.CLINICIAN, what="break-glass")
        body = await body_of(request)
        return await run(lambda: access_ops.break_glass(service(request), access, id, body, notify))

    @app.get("/fhir/Patient/{id}/$access-basis")
    async def access_basis(id: str, request: Request) -> Response:
        """What basis this caller has for a resident's record, before opening it."""
        access = gate.access_of(request)
        return await run(lambda: access_ops.basis(service(request), access, id))

    transfer_ops.register(app, repository, audit)  # POST Patient/[id]/$transfer: the audited ownership move

    @app.get("/fhir/Patient/{id}/$everything")
    @app.post("/fhir/Patient/{id}/$everything")
    async def everything(id: str, request: Request) -> Response:
        svc = service(request)
        return await run(lambda: svc.everything(id, list(request.query_params.multi_items())))

    @app.get("/fhir/{type}/{id}")
    async def read(type: str, id: str, request: Request) -> Response:
        check_format(request)
        svc = service(request)
        if inline_reads:
            return _to_response(svc.read(type, id, headers_of(request)))
        return await run(lambda: svc.read(type, id, headers_of(request)))

    @app.put("/fhir/{type}/{id}")
    async def update(type: str, id: str, request: Request) -> Response:
        body = await body_of(request)
        svc = service(request)
        return await run(lambda: svc.update(type, id, body, headers_of(request)))

    @app.delete("/fhir/{type}/{id}")
    async def delete(type: str, id: str, request: Request) -> Response:
        svc = service(request)
        return await run(lambda: svc.delete(type, id))

    @app.get("/fhir/{type}/{id}/_history")
    async def instance_history(type: str, id: str, request: Request) -> Response:
        svc = service(request)
        return await run(lambda: svc.history(type, id, list(request.query_params.multi_items())))

    @app.get("/fhir/{type}/{id}/_history/{vid}")
    async def vread(type: str, id: str, vid: str, request: Request) -> Response:
        svc = service(request)
        return await run(lambda: svc.vread(type, id, vid))

    @app.get("/fhir/{ctype}/{cid}/{type}")
    async def compartment_search(ctype: str, cid: str, type: str, request: Request) -> Response:
        svc = service(request)
        items = list(request.query_params.multi_items())
        return await run(lambda: svc.search(type, items, headers_of(request), compartment=(ctype, cid)))

    audit_routes.register(app, audit)
    sharing_routes.register(app, repository, security, audit.record)
    # The portals (issue 7): pages over the same services, policy and audit.
    ui_pages.register(app, app.state.auth_service, ui)
    clinician_portal.register(app, ui, repository)
    console_portal.register(app, ui, repository)
    resident_portal.register(app, ui, repository)
    for route in app.routes:
        if isinstance(route, APIRoute) and ui_session.is_page(route.path):
            route.include_in_schema = False  # pages, not API: the OpenAPI description is the API's
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (multi-worker serving)."""
    return create_app(Settings.from_env())
