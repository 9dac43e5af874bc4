"""``$break-glass`` and ``$access-basis`` on a resident's record over HTTP
(the rules are in hutong.web.access_ops and hutong.security.grants)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from hutong.platform import Platform
from hutong.security.principal import Role
from hutong.web import access_ops, gate
from hutong.web.fhir_http import body_of, require, run, service

PatientId = Annotated[str, Path(description="Patient id (a golden person or a registration)")]


def fhir_router(platform: Platform) -> APIRouter:
    """Mounted inside the FHIR router (hutong.web.fhir_routes)."""
    limit = platform.settings.max_body_bytes
    notify = access_ops.sms_notifier(platform.repo, platform.sms.send)
    r = APIRouter(tags=["access"])

    @r.post("/fhir/Patient/{id}/$break-glass", summary="emergency access to a resident's whole record (reason required)")
    async def break_glass(id: PatientId, request: Request) -> Response:
        """Emergency access to a resident's whole record (reason required; flagged,
        the resident is told, auditors review: hutong.security.grants)."""
        access = require(request, Role.CLINICIAN, what="break-glass")
        body = await body_of(request, limit)
        return await run(lambda: access_ops.break_glass(service(platform, request), access, id, body, notify))

    @r.get("/fhir/Patient/{id}/$access-basis", summary="the caller's basis for a resident's record")
    async def access_basis(id: PatientId, request: Request) -> Response:
        """What basis this caller has for a resident's record, before opening it."""
        access = gate.access_of(request)
        return await run(lambda: access_ops.basis(service(platform, request), access, id))

    return r
