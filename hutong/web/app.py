"""The ASGI application: FHIR R4 REST at /fhir (http.html), sign-in, audit,
sharing, ingestion and the portals, one router per route group.

Every service comes from one :class:`~hutong.platform.Platform` (the
composition root); every error leaves as an OperationOutcome with a stable
HT code (hutong.web.outcomes).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from hutong import __version__
from hutong.config import Settings
from hutong.platform import Platform, build_platform
from hutong.security.settings import SecuritySettings
from hutong.store.repository import Repository
from hutong.web import (
    access_routes,
    audit_routes,
    auth_routes,
    cds_routes,
    fhir_http,
    fhir_routes,
    gate,
    health,
    identity_routes,
    ingest_routes,
    methods,
    metrics,
    outcomes,
    overload,
    public_assets,
    read_routing,
    sharing_routes,
    smart_routes,
    terminology_routes,
    transfer_ops,
)
from hutong.web.application import HutongApp, add_routes, get_platform
from hutong.web.direct import direct
from hutong.web.headers import SecurityHeaders
from hutong.web.hot import hot_first
from hutong.web.ui import clinician as clinician_portal
from hutong.web.ui import console as console_portal
from hutong.web.ui import corrections_inbox
from hutong.web.ui import pages as ui_pages
from hutong.web.ui import resident as resident_portal
from hutong.web.ui import session as ui_session

__all__ = ["HutongApp", "app_from_env", "create_app", "get_platform"]


def create_app(platform: Platform | Settings | None = None, repo: Repository | None = None, *,
               security: SecuritySettings | None = None) -> HutongApp:
    """The app serving ``platform``.  ``create_app(settings, repo=...)`` (tests,
    benchmarks) builds the platform around an already opened repository."""
    if not isinstance(platform, Platform):


        platform = build_platform(platform, repo=repo, security=security)
    p = platform
    # /docs is self-hosted (hutong.web.public_assets), never FastAPI's CDN page.
    app = HutongApp(p, title="Hutong FHIR R4", version=__version__, docs_url=None, redoc_url=None)
    ui = ui_pages.Pages()
    outcomes.install(app, page_error=ui.error)
    # The gate (authentication, the request's Access, one audit row per request)
    # in front of every route; outermost, the security headers on every answer,
    # the gate's refusals included (issue 12, finding 20).
    # Inside the gate: a literal FHIR path answers 405 for methods it lacks (hutong.web.methods).
    app.add_middleware(methods.OwnPaths, routes=app.routes)
    app.add_middleware(fhir_http.JsonOnly)  # _format / Accept: JSON, else 406 (hutong.web.fhir_http)
    gate.install(app, p.repo, p.security, p.authenticator, p.audit)
    # Outside the gate: a page write leaves the primary's WAL position in the browser (read-your-writes
    # for the reads a hot standby may answer; hutong.web.read_routing).  No standby: nothing is added.
    if p.standby is not None:
        read_routing.install(app, p)
    # Outside the gate (no audit row, no work for a request it sheds), inside the metrics:
    # at most max_in_flight requests, the next 503 + Retry-After (hutong.web.overload, issue 17).
    app.add_middleware(overload.ShedLoad, limit=p.settings.max_in_flight)
    # Requests counted and timed by route template (hutong.web.metrics), the gate's refusals included.
    app.add_middleware(metrics.Observe, routes=app.routes)
    app.add_middleware(methods.HeadAsGet)  # outside the gate: HEAD is authenticated and audited as GET
    app.add_middleware(SecurityHeaders, https=(p.settings.base_url or "").startswith("https:"))

    add_routes(app, auth_routes.router(p.auth, p.security))
    public_assets.register(app, app.title)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    health.register(app, p)  # /readyz: database, schema version, keys (issue 18)
    metrics.register(app, p.repo, address=p.settings.metrics_address)  # /metrics, or its own listener

    # The FHIR API first (the hot paths match first), its $-operations before
    # the instance routes they would otherwise be taken for.
    add_routes(app, fhir_routes.router(p, operations=[
        identity_routes.fhir_router(p), access_routes.fhir_router(p), terminology_routes.fhir_router(p)]))
    add_routes(app, transfer_ops.router(p.repo, p.audit))  # Patient/[id]/$transfer: the audited ownership move
    add_routes(app, identity_routes.router(p))
    add_routes(app, ingest_routes.router(p))
    add_routes(app, audit_routes.router(p.audit))
    add_routes(app, sharing_routes.router(p.repo, p.security, p.audit.record))
    add_routes(app, cds_routes.router(p))  # CDS Hooks 2.0: /cds-services (issue 14)
    # The portals (issue 7): pages over the same services, policy and audit.
    ui_pages.register(app, p.auth, ui)
    clinician_portal.register(app, ui, p)
    corrections_inbox.register(app, ui, p)  # 纠偏权: the institution answers residents' correction requests
    console_portal.register(app, ui, p)
    resident_portal.register(app, ui, p)
    smart_routes.register(app, ui, p)  # SMART App Launch: authorize, EHR launch, 已授权的应用 (issue 15)
    for route in app.routes:
        if isinstance(route, APIRoute) and ui_session.is_page(route.path):
            route.include_in_schema = False  # pages, not API: the OpenAPI description is the API's
    hot_first(app.router.routes)  # the FHIR read and search tried first, routing unchanged (hutong.web.hot)
    direct(app.router.routes)  # plain-string parameters read without FastAPI's solver (hutong.web.direct)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (multi-worker serving)."""
    return create_app(build_platform(Settings.from_env()))
