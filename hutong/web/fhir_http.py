"""FHIR over HTTP, shared by the route groups: bodies, formats, responses and
the request's :class:`~hutong.fhir.service.FhirService` (http.html)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from hutong.errors import HutongError, TooLarge, UnsupportedMediaType
from hutong.fhir.response import FHIR_JSON, FhirResponse
from hutong.fhir.service import FhirService
from hutong.platform import Platform
from hutong.security.policy import Access
from hutong.security.principal import Role
from hutong.web import gate

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


async def body_of(request: Request, limit: int) -> bytes:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in JSON_TYPES:
        raise UnsupportedMediaType("HT-0002", f"content type {ctype or '(none)'!r} is not supported; "
                                              "send application/fhir+json")
    return await raw_body(request, limit)


def check_format(fmt: str | None) -> None:
    """http.html section 3.1.0.1.8: _format; this server speaks JSON only."""
    if fmt and "json" not in fmt:
        raise HutongError("HT-0002", f"_format={fmt[:40]} is not supported; this server speaks JSON only",
                          status=406, issue_code="not-supported")
