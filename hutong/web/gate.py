"""The HTTP gate: every request is authenticated, acts under its policy, and is audited.

One ASGI middleware in front of every route: it resolves the bearer token to
a :class:`~hutong.security.principal.Principal` (hutong.security.authn),
builds the request's :class:`~hutong.security.policy.Access` (the routes
write through a repository bound to it, never through ambient state:
hutong.security.guard), and appends one AuditEvent per request -- success, refusal (401/403) or
failure -- before the response leaves (hutong.security.audit).  Only the
routes that hand out tokens or describe the server are public
(:data:`PUBLIC_PATHS`); the route enumeration test checks every other route
refuses a request without a token.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hutong.errors import HutongError
from hutong.security.audit import AuditLog
from hutong.security.authn import Authenticator
from hutong.security.events import ERROR, FAILED, REFUSED, SUCCESS, AuditRecord
from hutong.security.policy import Access
from hutong.security.principal import Principal
from hutong.security.settings import SecuritySettings
from hutong.security.trace import PURPOSE_ORDER, primary_purpose, to_audit_record  # noqa: F401  (re-exported)
from hutong.store.database import storage_failure
from hutong.store.repository import Repository
from hutong.web import outcomes, public_assets
from hutong.web.outcomes import remember_error
from hutong.web.ui import session

log = logging.getLogger("hutong.web")

# Exact paths and prefixes reachable without a token: getting a token, and
# describing the server (no resident data behind any of them).
# The favicon and the API docs' assets (hutong.web.public_assets) are neither
# authenticated nor audited: a browser fetches the favicon with every page.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/fhir/metadata", "/.well-known/smart-configuration",
                          "/fhir/.well-known/smart-configuration", "/openapi.json",
                          *public_assets.PUBLIC_PATHS})
PUBLIC_PREFIXES = ("/auth/",)

def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def action_of(method: str, route: str) -> str:
    """The audit action of a request, from its route template."""
    if "$" in route:
        return "operation"
    if route.startswith("/fhir"):
        if "_history" in route:
            return "vread" if route.endswith("{vid}") else "history"
        if method == "GET":
            return "read" if route.endswith("{id}") else "search"
        if method == "POST":
            return "search" if route.endswith("_search") else ("transaction" if route in ("/fhir", "/fhir/")
                                                                 else "create")
        return {"PUT": "update", "DELETE": "delete"}.get(method, method.lower())
    if route.startswith("/ingest/cda"):
        return "cda"
    return "read" if method == "GET" else "operation"


def _outcome(status: int) -> str:
    if status < 400:
        return SUCCESS
    if status in (401, 403):
        return REFUSED
    return ERROR if status >= 500 else FAILED


def _page_principal(authn: Authenticator, request: Request, peer: str | None) -> tuple[Principal, dict[str, Any]]:
    """A page request's caller: the Authorization header, else the session
    cookie, else (access token expired) a rotation of the refresh cookie."""
    header = request.headers.get("authorization")
    if header:
        return authn.authenticate(header, peer), {}
    token = request.cookies.get(session.ACCESS_COOKIE)
    try:
        return authn.authenticate(f"Bearer {token}" if token else None, peer), {}
    except HutongError:
        refresh = request.cookies.get(session.REFRESH_COOKIE)
        if not refresh:
            raise
        _account, fresh = authn.tokens.refresh(refresh)
        return authn.authenticate(f"Bearer {fresh['access_token']}", peer), fresh


class Gate:
    """Plain ASGI middleware (Starlette's BaseHTTPMiddleware cost ~0.5 ms a
    request, public ones included).  The answer is held until its audit row
    is committed: an unaudited answer never leaves (503 instead)."""

    def __init__(self, app: ASGIApp, repo: Repository, settings: SecuritySettings, authn: Authenticator,
                 audit: AuditLog) -> None:
        self.app = app
        self.repo = repo
        self.settings = settings
        self.authn = authn
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        page = session.is_page(path)
        if is_public(path) or (page and session.is_public_page(path)):
            if page and path == "/":
                self._landing_principal(Request(scope, receive))
            await _public(self.app, scope, receive, send)
            return
        request = Request(scope, receive)
        peer = request.client.host if request.client else None
        authn = self.authn
        fresh: dict[str, Any] = {}
        try:
            if page:
                principal, fresh = await run_in_threadpool(_page_principal, authn, request, peer)
            else:
                principal = authn.authenticate(request.headers.get("authorization"), peer)
        except HutongError as e:
            rec = AuditRecord(action="refuse", outcome=REFUSED, interaction=f"{request.method} {path[:200]}",
                              code=e.code, peer=peer)
            await self.audit.record_async(rec)
            had = any(request.cookies.get(c) for c in (session.ACCESS_COOKIE, session.REFRESH_COOKIE))
            await _refusal(e, page, path, had_session=had)(scope, receive, send)
            return
        access = Access(self.repo, principal, self.settings)
        request.state.principal = principal
        request.state.access = access
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        try:
            await self.app(scope, receive, hold)
        except Exception as e:
            # Handled here, not by Starlette's ServerErrorMiddleware: that one
            # answers outside this gate (so the request went unaudited) and
            # re-raises (so uvicorn drops the keep-alive connection).
            err = outcomes.internal_error(e)
            remember_error(request, err)
            held = []
            await outcomes.error_response(err)(scope, receive, hold)
        status = next((int(m["status"]) for m in held if m["type"] == "http.response.start"), 500)
        access.settle()
        route = getattr(scope.get("route"), "path", path[:200])
        code = getattr(request.state, "error_code", None)
        # A break-glass claim is one action whichever door it came through (the API's
        # $break-glass or the clinician portal's form): the auditors' review queue
        # lists claims by it (issue 12, finding 18).  Access.reason is set by the claim only.
        action = "break-glass" if access.reason is not None else action_of(request.method, route)
        # One function turns what a request, message or command touched into its
        # audit row, whichever door it came through (hutong.security.trace).
        rec = to_audit_record(access.trace, action=action, outcome=_outcome(status), principal=principal,
                              interaction=f"{request.method} {route}", query=request.url.query or None,
                              code=code, peer=peer)
        try:
            await self.audit.record_async(rec)
        except Exception as e:  # an unaudited answer must not leave: refuse instead
            log.error("audit write failed: %s", type(e).__name__)
            # Fail closed, also for reads (issue 12, finding 15; README "Audit"): on a
            # full disk say so, so the caller and support know it is storage, not them.
            if storage_failure(e) is not None:
                err = HutongError("HT-0159", "storage is full or failing: the request could not be audited, so "
                                             "nothing was returned; try again later", status=503, issue_code="transient")
            else:
                err = HutongError("HT-0099", "the request could not be audited; nothing was returned", status=503,
                                  issue_code="transient")
            await outcomes.error_response(err)(scope, receive, send)
            return
        if fresh:
            cookies = Response()
            session.set_tokens(request, cookies, fresh, sign_in=False)
            extra = [(k, v) for k, v in cookies.raw_headers if k == b"set-cookie"]
            for m in held:
                if m["type"] == "http.response.start":
                    m["headers"] = [*m.get("headers", []), *extra]
        for m in held:
            await send(m)

    def _landing_principal(self, request: Request) -> None:
        """The landing page says who is signed in (nothing else: no Access, no data)."""
        token = request.cookies.get(session.ACCESS_COOKIE)
        if token:
            try:
                request.state.principal = self.authn.authenticate(f"Bearer {token}", None)
            except HutongError:
                pass


async def _public(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """A public request (no principal, nothing to audit): an unexpected failure
    gets the same OperationOutcome (HT-0099) as a gated one, and the connection
    stays open, unless the answer had already begun (then only re-raising is left)."""
    started = False

    async def watch(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, receive, watch)
    except Exception as e:
        if started:
            raise
        await outcomes.error_response(outcomes.internal_error(e))(scope, receive, send)


def _refusal(e: HutongError, page: bool, path: str, had_session: bool = False) -> Response:
    if page:
        # A browser is sent to sign in (again, when its session ended: only then
        # does the page say so; a first visit is simply asked to sign in), not shown JSON.
        resp: Response = RedirectResponse(f"/?next={quote(path)}" + ("&expired=1" if had_session else ""),
                                          status_code=303)
        session.clear(resp)
        return resp
    # RFC 6750 section 3: say which scheme, and why, without echoing the token.
    return outcomes.error_response(e, challenge='Bearer realm="hutong", error="invalid_token"')


def install(app: FastAPI, repo: Repository, settings: SecuritySettings, authn: Authenticator,
            audit: AuditLog) -> None:
    app.add_middleware(Gate, repo=repo, settings=settings, authn=authn, audit=audit)


def access_of(request: Request) -> Access:
    a: Any = getattr(request.state, "access", None)
    assert isinstance(a, Access), "route reached without the gate"
    return a
