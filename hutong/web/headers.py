"""Security headers on every answer (issue 12, finding 20).

One ASGI middleware, outermost, so refusals of the gate, redirects, static
files and errors carry them too:

- ``X-Content-Type-Options: nosniff``: a browser never runs a JSON or text
  answer as script or style (Fetch standard, "X-Content-Type-Options").
- ``Referrer-Policy: no-referrer``: page URLs hold person ids and record
  reasons; they leave with no link (W3C Referrer Policy).
- ``X-Frame-Options: DENY`` and CSP ``frame-ancestors 'none'``: no page is
  framed (clickjacking; RFC 7034, CSP Level 3).
- ``Content-Security-Policy``: pages set their own (hutong.web.ui.pages; the
  templates have no inline script or style), /docs its own
  (hutong.web.public_assets); every other answer is data, for which
  ``default-src 'none'`` forbids everything should a browser render it.
- ``Strict-Transport-Security`` when the request came over HTTPS, or the
  public base URL (HUTONG_BASE_URL) is https -- a TLS proxy in front (RFC 6797
  section 7.2: not over plain HTTP otherwise).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DATA_CSP = b"default-src 'none'; frame-ancestors 'none'"
HSTS = b"max-age=31536000"
ALWAYS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", DATA_CSP),
)


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, https: bool = False) -> None:
        self.app = app
        self.https = https   # the public base URL is https (behind a TLS proxy)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        hsts = self.https or scope.get("scheme") == "https"

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _v in headers}
                headers += [(k, v) for k, v in ALWAYS if k not in present]
                if hsts and b"strict-transport-security" not in present:
                    headers.append((b"strict-transport-security", HSTS))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)
