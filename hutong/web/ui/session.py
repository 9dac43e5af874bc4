"""Browser sessions: the platform's own tokens, carried in cookies.

A signed-in page holds the same access and refresh tokens an API client
would get (hutong.security.tokens), in HttpOnly, SameSite=Strict cookies
(Secure when served over HTTPS), so JavaScript never sees them and another
site cannot send them.  Forms also carry a CSRF token (double submit: a
cookie and a hidden field must agree); signing in gives the browser a new one
(OWASP CSRF Prevention Cheat Sheet: a token known before sign-in -- planted,
or read by someone at the same browser -- must not survive it; issue 12,
finding 20), and signing out drops it.  The gate (hutong.web.gate) reads the
cookie only for page paths, never for /fhir or /auth, which need the
Authorization header.
"""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

ACCESS_COOKIE = "hutong_at"
REFRESH_COOKIE = "hutong_rt"
CSRF_COOKIE = "hutong_csrf"
LANG_COOKIE = "lang"

# Paths served as pages (everything else is the API).  "/" and sign-in are public.
PAGE_PREFIXES = ("/clinician", "/resident", "/console", "/signin", "/signout", "/static/")
PUBLIC_PAGES = ("/", "/signin", "/signout")


def is_page(path: str) -> bool:
    return path == "/" or path.startswith(PAGE_PREFIXES)


def is_public_page(path: str) -> bool:
    return path in PUBLIC_PAGES or path.startswith(("/signin/", "/static/"))


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_tokens(request: Request, response: Response, tokens: dict[str, object], *,
               sign_in: bool = True) -> None:
    """Put the tokens in the session cookies; at a sign-in (not a silent refresh
    of the session, whose open forms hold the current token) the CSRF token
    is replaced too."""
    secure = _secure(request)
    if sign_in:
        response.set_cookie(CSRF_COOKIE, secrets.token_urlsafe(24), httponly=True, samesite="strict",
                            secure=secure, path="/")
    response.set_cookie(ACCESS_COOKIE, str(tokens["access_token"]), httponly=True, samesite="strict",
                        secure=secure, path="/")
    if tokens.get("refresh_token"):
        response.set_cookie(REFRESH_COOKIE, str(tokens["refresh_token"]), httponly=True, samesite="strict",
                            secure=secure, path="/")


def clear(response: Response) -> None:
    for name in (ACCESS_COOKIE, REFRESH_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path="/")


def csrf_token(request: Request) -> str:
    """The form token of this browser (made once, kept in a cookie)."""
    tok = request.cookies.get(CSRF_COOKIE)
    if not tok:
        tok = getattr(request.state, "new_csrf", None) or secrets.token_urlsafe(24)
        request.state.new_csrf = tok
    return tok


def remember_csrf(request: Request, response: Response) -> None:
    tok = getattr(request.state, "new_csrf", None)
    if tok and not request.cookies.get(CSRF_COOKIE):
        response.set_cookie(CSRF_COOKIE, tok, httponly=True, samesite="strict", secure=_secure(request), path="/")


def csrf_ok(request: Request, submitted: str | None) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE)
    return bool(cookie and submitted and hmac.compare_digest(cookie, submitted))
