"""The portals' shared pieces: templates, rendering, sign-in and sign-out.

Portals (hutong.web.ui.clinician, .resident, .console) register their own
routes with :func:`register_portal`-style functions and render through
:class:`Pages`.  Sign-in uses the same account checks as the token endpoint
(hutong.security.accounts: lockout, TOTP, SMS codes) and puts the issued
tokens in the session cookies (hutong.web.ui.session).
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse, Response

from hutong.errors import HutongError
from hutong.security.accounts import OTP_MIN_INTERVAL_MS
from hutong.security.oauth import AuthService
from hutong.security.policy import Access
from hutong.security.principal import Principal, Role
from hutong.web.ui import session
from hutong.web.ui.i18n import LANGS, MESSAGES, SIGNIN_ERRORS, Translator

HERE = Path(__file__).parent
STATIC = HERE.parent / "static"

# Where each role lands after signing in.
HOME: dict[Role, str] = {Role.CLINICIAN: "/clinician", Role.RESIDENT: "/resident", Role.DELEGATE: "/resident",
                         Role.COMMISSION: "/console", Role.AUDITOR: "/console", Role.OPERATOR: "/console",
                         Role.COMMITTEE: "/console/rules"}


def _safe_next(nxt: str | None) -> str | None:
    """Only a local path (no open redirect to another site)."""
    if not nxt or not nxt.startswith("/") or nxt.startswith("//"):
        return None
    parts = urlsplit(nxt)
    return None if parts.scheme or parts.netloc else nxt


def error_key(code: str | None) -> str | None:
    """The message key for ``/?error=``: a known sign-in error code's words, any other text a generic line."""
    if not code:
        return None
    return f"signin.err.{code}" if code in SIGNIN_ERRORS else "signin.err.generic"


def error_words(e: HutongError, lang: str) -> str:
    """What the error page says: the code's words from the i18n table; else a
    raise site's own Chinese sentence; else (zh-CN) a generic line, the
    developer's English sentence only on English pages."""
    t = Translator(lang)
    key = f"error.{e.code}"
    if key in MESSAGES:
        return t(key)
    if any("\u4e00" <= ch <= "\u9fff" for ch in e.message) or lang == "en":
        return e.message
    return t("error.generic")


class ResendWait:
    """The one-a-minute limit on sign-in codes (hutong.security.accounts
    OTP_MIN_INTERVAL_MS), told to the person pressing 获取验证码 again: keyed
    by the ID number typed (whether or not it has an account, so the wait tells
    nothing about accounts), under a per-process salt, forgotten after a minute."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._salt = secrets.token_bytes(16)
        self._last: dict[bytes, float] = {}

    def wait_s(self, id_number: str) -> int:
        """Seconds until another code may be asked for this ID number (0: now; the ask is remembered)."""
        now = self._clock()
        window = OTP_MIN_INTERVAL_MS / 1000
        self._last = {k: t for k, t in self._last.items() if now - t < window}
        key = hashlib.sha256(self._salt + id_number.strip().upper().encode()).digest()
        if key in self._last:
            return max(1, math.ceil(window - (now - self._last[key])))
        self._last[key] = now
        return 0


class Pages:
    def __init__(self) -> None:
        self.env = Environment(loader=FileSystemLoader(str(HERE / "templates")),
                               autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)

    def lang(self, request: Request) -> str:
        q = request.query_params.get("lang")
        if q in LANGS:
            return q
        c = request.cookies.get(session.LANG_COOKIE)
        return c if c in LANGS else "zh-CN"

    def render(self, request: Request, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        lang = self.lang(request)
        t = Translator(lang)
        principal = getattr(request.state, "principal", None)
        other = "en" if lang == "zh-CN" else "zh-CN"
        q = dict(request.query_params)
        q["lang"] = other
        switch = request.url.path + "?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in q.items())
        body = self.env.get_template(template).render(
            t=t, lang=lang, switch_lang_url=switch, principal=principal, csrf=session.csrf_token(request),
            path=request.url.path, home=HOME.get(principal.role) if isinstance(principal, Principal) else None,
            **ctx)
        resp = HTMLResponse(body, status_code=status)
        if request.query_params.get("lang") in LANGS:
            resp.set_cookie(session.LANG_COOKIE, lang, samesite="lax", path="/")
        session.remember_csrf(request, resp)
        # Pages hold resident data: never cached, never framed.
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                                   "script-src 'self'; frame-ancestors 'none'")
        return resp

    def error(self, request: Request, e: HutongError) -> HTMLResponse:
        return self.render(request, "error.html", status=e.status, error=e, words=error_words(e, self.lang(request)))


def access_of(request: Request) -> Access:
    a = getattr(request.state, "access", None)
    assert isinstance(a, Access), "page reached without the gate"
    return a


async def form_of(request: Request) -> dict[str, str]:
    """The posted form, after checking its CSRF token (refused: HT-0104)."""
    form = await request.form()
    data = {k: v for k, v in form.items() if isinstance(v, str)}
    if not session.csrf_ok(request, data.get("csrf")):
        raise HutongError("HT-0104", "the form has expired or came from another site; reload the page",
                          status=403, issue_code="forbidden")
    return data


def register(app: FastAPI, auth: AuthService, pages: Pages | None = None) -> Pages:
    """Landing page, sign-in and sign-out; the sign-in checks are the token
    endpoint's own (hutong.security.oauth.AuthService: lockout, TOTP, SMS codes,
    audit)."""
    pages = pages or Pages()
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/", response_class=HTMLResponse)
    async def index(request: Request) -> Response:
        nxt = _safe_next(request.query_params.get("next"))
        return pages.render(request, "index.html", next=nxt,
                            expired=request.query_params.get("expired") == "1", needed=nxt is not None,
                            error=error_key(request.query_params.get("error")), sent=False)

    def _signed_in(request: Request, tokens: dict[str, Any], nxt: str | None) -> Response:
        role = Role(tokens["account"]["role"])
        resp = RedirectResponse(_safe_next(nxt) or HOME.get(role, "/"), status_code=303)
        session.set_tokens(request, resp, tokens)
        return resp

    def _failed(e: HutongError, nxt: str | None, anchor: str = "") -> Response:
        # The link carries the error code only: the page words it (a crafted
        # /?error=... with a message of someone's choosing shows nothing of it).
        safe = _safe_next(nxt)
        q = f"/?error={quote(e.code)}" + (f"&next={quote(safe)}" if safe else "")
        return RedirectResponse(q + anchor, status_code=303)

    def peer_of(request: Request) -> str | None:
        return request.client.host if request.client else None

    @app.post("/signin/staff")
    async def signin_staff(request: Request) -> Response:
        form = await form_of(request)
        body = {"username": form.get("username", ""), "password": form.get("password", ""),
                "totp": form.get("totp") or None}
        try:
            tokens = await run_in_threadpool(auth.login, body, peer_of(request))
        except HutongError as e:
            return _failed(e, form.get("next"))
        return _signed_in(request, tokens, form.get("next"))

    resend = ResendWait()

    @app.post("/signin/resident/code")
    async def signin_send_code(request: Request) -> Response:
        form = await form_of(request)
        id_number = form.get("id_number", "")
        wait = resend.wait_s(id_number)
        if not wait:
            try:
                await run_in_threadpool(auth.otp_send, {"id_number": id_number}, peer_of(request))
            except HutongError as e:
                return _failed(e, form.get("next"), "#resident")
        # Rendered, not redirected: the ID number stays out of URLs and history.
        return pages.render(request, "index.html", next=_safe_next(form.get("next")), expired=False, error=None,
                            sent=not wait, wait=wait, request_id_number=id_number[:18])

    @app.post("/signin/resident")
    async def signin_resident(request: Request) -> Response:
        form = await form_of(request)
        body = {"id_number": form.get("id_number", ""), "code": form.get("code", "")}
        try:
            tokens = await run_in_threadpool(auth.otp_verify, body, peer_of(request))
        except HutongError as e:
            return _failed(e, form.get("next"), "#resident")
        return _signed_in(request, tokens, form.get("next"))

    @app.post("/signout")
    async def signout(request: Request) -> Response:
        await form_of(request)
        for name in (session.REFRESH_COOKIE, session.ACCESS_COOKIE):
            tok = request.cookies.get(name)
            if tok:
                try:
                    await run_in_threadpool(auth.revoke, {"token": tok}, peer_of(request))
                except Exception:  # an unknown or already revoked token: signing out still succeeds
                    pass
        resp = RedirectResponse("/", status_code=303)
        session.clear(resp)
        return resp

    return pages
