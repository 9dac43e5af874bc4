"""Load shedding: a full worker answers 503 with Retry-After at once (issue 17).

Each worker process runs its requests on one event loop and their blocking
parts in a thread pool; without a bound, requests beyond what the pool and
the database can take wait in memory until the client gives up (a timeout,
after which the client cannot know whether a write happened).  Here at most
``limit`` requests are in flight per worker (``HUTONG_MAX_IN_FLIGHT``); the
next one is answered before anything of it is read or done: 503 Service
Unavailable with ``Retry-After`` (RFC 9110 sections 15.6.4 and 10.2.3) and an
OperationOutcome of issue type ``transient`` (FHIR R4 operationoutcome.html;
HT-0560), portal pages a zh-CN page.  A refused request wrote nothing, so a
client that retries loses nothing; an accepted one is answered after its
commit as before (DESIGN "Trust model").

It sits outside the gate: shedding must cost less than the work it sheds,
and the gate writes a durable audit row per request.  A refused request
reads and writes no data, so there is nothing to audit; the metrics
middleware, outside it, still counts the 503s (hutong.web.metrics).
/healthz, /readyz and /metrics always pass: an operator watching a busy
server must still see it.
"""

from __future__ import annotations

from html import escape

from starlette.types import ASGIApp, Receive, Scope, Send

from hutong.errors import HutongError, operation_outcome
from hutong.fhir.response import FHIR_JSON, FhirResponse
from hutong.web.ui import i18n
from hutong.web.ui import session as ui_session

RETRY_AFTER_S = 1
ALWAYS_SERVED = frozenset({"/healthz", "/readyz", "/metrics"})

i18n.add({
    "busy.title": ("服务器繁忙", "Server busy"),
    "busy.body": ("当前请求过多，本次请求未被处理，也未保存任何内容。请稍后重试。",
                  "Too many requests at the moment: this one was not processed and nothing was saved. "
                  "Please try again shortly."),
})


class ShedLoad:
    """Pure ASGI middleware: at most ``limit`` requests in flight (0: no limit).

    The counter needs no lock: it is read and changed only on the worker's
    event loop."""

    def __init__(self, app: ASGIApp, *, limit: int, retry_after: int = RETRY_AFTER_S) -> None:
        self.app = app
        self.limit = limit
        self.retry_after = retry_after
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.limit <= 0 or scope["path"] in ALWAYS_SERVED:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            await self._refuse(scope, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _refuse(self, scope: Scope, send: Send) -> None:
        headers = [(b"retry-after", str(self.retry_after).encode()), (b"cache-control", b"no-store")]
        if ui_session.is_page(scope["path"]) and scope["method"] in ("GET", "HEAD"):
            t = i18n.Translator("zh-CN")
            body = (f'<!doctype html><html lang="zh-CN"><meta charset="utf-8"><title>{escape(t("busy.title"))}'
                    f"</title><h1>{escape(t('busy.title'))}</h1><p>{escape(t('busy.body'))}</p></html>").encode()
            headers.append((b"content-type", b"text/html; charset=utf-8"))
        else:
            e = HutongError("HT-0560", f"this server has {self.limit} requests in hand; the request was not "
                                       f"processed, nothing was stored: retry after {self.retry_after} s",
                            status=503, issue_code="transient")
            body = FhirResponse.json(503, operation_outcome(e)).body or b""
            headers.append((b"content-type", FHIR_JSON.encode()))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body if scope["method"] != "HEAD" else b""})
