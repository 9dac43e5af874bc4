"""One error mapping for every HTTP path: HutongError -> OperationOutcome.

FHIR R4 http.html section 3.1.0.4 ("the server SHOULD return an
OperationOutcome") and operationoutcome.html: every failure leaves as an
OperationOutcome carrying the raise site's stable HT code, whether the request
passed the gate (hutong.web.gate) or was public (/healthz, /fhir/metadata,
/auth/*).  An unexpected exception is answered here once, as HT-0099, by the
gate for both kinds of request: never by Starlette's ServerErrorMiddleware,
which answers outside the gate (unaudited) and re-raises (uvicorn drops the
keep-alive connection).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from hutong.errors import HutongError, InvalidRequest, NotFound, operation_outcome
from hutong.fhir.response import FHIR_JSON, FhirResponse
from hutong.web import allow

log = logging.getLogger("hutong.web")

# RFC 6750 section 3: a refused bearer token names the scheme, never echoes the token.
BEARER_CHALLENGE = 'Bearer realm="hutong"'


def error_response(e: HutongError, *, challenge: str | None = None) -> Response:
    """The OperationOutcome answer of ``e`` (401s carry a Bearer challenge)."""
    resp = Response(content=FhirResponse.json(e.status, operation_outcome(e)).body, status_code=e.status,
                    media_type=FHIR_JSON)
    if e.status == 401:
        resp.headers["WWW-Authenticate"] = challenge or BEARER_CHALLENGE
    return resp


def internal_error(e: BaseException) -> HutongError:
    """What an unexpected exception becomes.  Only its type is logged: messages
    may carry resident data (no identifiers in logs)."""
    log.error("internal error: %s", type(e).__name__)
    return HutongError("HT-0099", "internal error", status=500, issue_code="exception")


def remember_error(request: Request, e: HutongError) -> None:
    """The audit record carries the HT code of a failed request (hutong.web.gate)."""
    request.state.error_code = e.code


PageError = Callable[[Request, HutongError], Response]


def install(app: FastAPI, *, page_error: PageError | None = None) -> None:
    """Map the errors routes raise.  ``page_error(request, e)`` renders them for
    portal pages (hutong.web.ui); everything else gets an OperationOutcome."""
    from hutong.web.ui import session as ui_session

    async def hutong_error(request: Request, e: Exception) -> Response:
        assert isinstance(e, HutongError)
        remember_error(request, e)
        if page_error is not None and ui_session.is_page(request.url.path):
            return page_error(request, e)
        return error_response(e)

    async def validation_error(request: Request, e: Exception) -> Response:
        assert isinstance(e, RequestValidationError)
        return error_response(InvalidRequest("HT-0033", f"invalid request: {e.errors()[:3]}"))

    async def http_error(request: Request, e: Exception) -> Response:
        assert isinstance(e, StarletteHTTPException)
        if e.status_code == 404:
            return error_response(NotFound("HT-0009", "no such endpoint"))
        if e.status_code == 405:
            # RFC 9110 section 15.5.6: a 405 names the methods the path allows
            # (of every route matching it, not only the route Starlette tried).
            err = allow.not_allowed(request.app.routes, request.url.path, request.method)
            remember_error(request, err)
            resp = error_response(err)
            resp.headers.update(allow.allow_header(request.app.routes, request.url.path))
            return resp
        return error_response(HutongError("HT-0033", str(e.detail), status=e.status_code))

    app.add_exception_handler(HutongError, hutong_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
