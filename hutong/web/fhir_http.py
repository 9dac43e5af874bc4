"""FHIR over HTTP, shared by the route groups: bodies, formats, responses and
the request's :class:`~hutong.fhir.service.FhirService` (http.html)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from hutong.errors import HutongError, TooLarge, UnsupportedMediaType
from hutong.fhir.capability import RestRoute
from hutong.fhir.response import FHIR_JSON, FhirResponse
from hutong.fhir.service import FhirService
from hutong.platform import Platform
from hutong.security.policy import Access
from hutong.security.principal import Role
from hutong.web import gate, methods, outcomes

JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")


def to_response(r: FhirResponse) -> Response:
    return Response(content=r.body if r.body is not None else b"", status_code=r.status,
                    headers=r.headers, media_type=FHIR_JSON if r.body is not None else None)


def run(fn: Callable[[], FhirResponse]) -> Awaitable[Response]:
    """Run a service call in the thread pool (it may block on the database)."""
    async def go() -> Response:
        return to_response(await run_in_threadpool(fn))

    return go()


def base_url(platform: Platform, request: Request) -> str:
    return platform.settings.base_url or str(request.base_url).rstrip("/") + "/fhir"


def service(platform: Platform, request: Request) -> FhirService:
    """The FHIR service acting as the request's caller (the gate's Access)."""
    return FhirService(platform.repo, base_url(platform, request), gate.access_of(request))


def require(request: Request, *roles: Role, what: str) -> Access:
    access = gate.access_of(request)
    access.require_role(*roles, what=what)
    return access


def headers_of(request: Request) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers.items()}


async def raw_body(request: Request, limit: int) -> bytes:
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


async def body_of(request: Request, limit: int, *, send: str = "application/fhir+json") -> bytes:
    """A JSON request body of at most ``limit`` bytes (HT-0002 for another media
    type, naming ``send``; HT-0003 when larger)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in JSON_TYPES:
        raise UnsupportedMediaType("HT-0002", f"content type {ctype or '(none)'!r} is not supported; "
                                              f"send {send}")
    return await raw_body(request, limit)


# http.html#mime-type: what a client may ask for and get JSON.  XML is answered
# 406, whichever way it is asked for (Accept or _format): fhir.resources 8 has
# no XML serialiser (its models' .xml() is gone) and its models are R4B/R5, so
# XML through them would change R4 content (decimal precision, item 3; R4-only
# elements, item 5); a hand-written serialiser is a second format to keep
# exact.  JSON only, said the same way for both (and in the CapabilityStatement).
SERVED_FORMATS = ("application/fhir+json", "json")  # CapabilityStatement.format
FORMAT_ALIASES = frozenset({"json", "application/fhir+json", "application/json", "application/json+fhir",
                            "text/json"})
ACCEPTED_RANGES = frozenset({*JSON_TYPES, "application/*", "*/*"})


def _not_acceptable(what: str) -> HutongError:
    return HutongError("HT-0002", f"{what} is not supported: this server answers in FHIR JSON only "
                                  "(application/fhir+json)", status=406, issue_code="not-supported")


def accepts_json(accept: str) -> bool:
    """Whether an Accept header (RFC 9110 section 12.5.1) admits a JSON answer."""
    for part in accept.split(","):
        media, *params = (x.strip() for x in part.split(";"))
        if media.lower() not in ACCEPTED_RANGES:
            continue
        q = 1.0
        for p in params:
            k, _, v = p.partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        if q > 0:
            return True
    return False


def check_format(fmt: str | None, accept: str | None = None) -> None:
    """http.html#mime-type: ``_format`` overrides Accept; either may ask only for JSON."""
    if fmt:
        if fmt.split(";")[0].strip().lower() not in FORMAT_ALIASES:
            raise _not_acceptable(f"_format={fmt[:40]}")
        return
    if accept and accept.strip() and not accepts_json(accept):
        raise _not_acceptable(f"Accept: {accept[:60]}")


def _may_rule_out_json(scope: Scope) -> bool:
    """Cheap pre-check on the raw request (most carry no ``_format`` and accept
    JSON or anything): only these are parsed, so the check costs the hot read
    path no Request object (bench.bench_gate_ab)."""
    if b"_format" in scope.get("query_string", b""):
        return True
    for k, v in scope["headers"]:
        if k == b"accept":
            return v not in (b"*/*", b"application/fhir+json", b"application/json")
    return False


class JsonOnly:
    """Inside the gate (refusals audited with their code): every FHIR request
    whose ``_format`` or ``Accept`` rules out JSON is answered 406 with a JSON
    OperationOutcome, on every FHIR route, operations and metadata included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and methods.under_fhir(scope["path"]) and _may_rule_out_json(scope):
            request = Request(scope)
            try:
                check_format(request.query_params.get("_format"), request.headers.get("accept"))
            except HutongError as e:
                outcomes.remember_error(request, e)
                await outcomes.error_response(e)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def rest_routes(routes: Sequence[BaseRoute]) -> tuple[RestRoute, ...]:
    """The FHIR routes the app registered, as the CapabilityStatement reads
    them (hutong.fhir.capability): method, path below /fhir, declared request
    headers, and the ``$`` names an ``{op}`` path parameter declares (enum)."""
    out: list[RestRoute] = []
    for r in routes:
        if not isinstance(r, APIRoute) or not methods.under_fhir(r.path):
            continue
        path = r.path[len(methods.FHIR_PREFIX):].strip("/")
        headers = frozenset(p.alias.lower() for p in r.dependant.header_params)
        ops: list[str] = []
        for p in r.dependant.path_params:
            extra = p.field_info.json_schema_extra
            values = extra.get("enum") if isinstance(extra, dict) else None
            if isinstance(values, list):
                ops += [str(v) for v in values if str(v).startswith("$")]
        for m in sorted(r.methods or ()):
            out.append(RestRoute(m, path, headers, r.summary or "", tuple(ops)))
    return tuple(out)
