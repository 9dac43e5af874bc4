"""CDS Hooks 2.0 over HTTP: ``GET /cds-services``, ``POST /cds-services/{id}``, ``POST /cds-services/{id}/feedback``.

The service itself is hutong.cds.service; this module reads bodies, names the
platform's own FHIR base (so a ``fhirAuthorization`` for it is checked) and counts
rule failures for the operator (``hutong_cds_rule_failures`` by rule id).  Every
route is behind the gate (hutong.web.gate): the caller's bearer token is the
platform's (401 without one), the request's Access decides what a card may show,
and the gate audits each request.  Errors leave as OperationOutcome with their
HT code and the status CDS Hooks 2.0 names ("HTTP Response": 400, 401, 403, 404, 412).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import Counter
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from hutong.cds import service as cds_service
from hutong.cds.allergy_rule import AllergyRule
from hutong.cds.cards import Rule
from hutong.cds.privileges_rule import PrivilegeRule
from hutong.cds.recognition import RecognitionRule
from hutong.platform import Platform
from hutong.web import gate
from hutong.web.fhir_http import body_of

MAX_BODY = 2 * 1024 * 1024  # a draftOrders bundle with prefetch: well below this

RULE_FAILURES = Counter("hutong_cds_rule_failures", "CDS rules that raised while evaluating a hook call (their "
                        "cards left out), by rule id", ["rule"])


def _count_failure(rule_id: str) -> None:
    RULE_FAILURES.labels(rule_id).inc()


if _count_failure not in cds_service.RULE_FAILURE_OBSERVERS:
    cds_service.RULE_FAILURE_OBSERVERS.append(_count_failure)


def default_rules() -> list[Rule]:
    """Every rule the platform's CDS services run (issue 14, items 3 and 4)."""
    return [PrivilegeRule(), AllergyRule(), RecognitionRule()]


def _fhir_bases(p: Platform, request: Request) -> list[str]:
    """The URLs naming this platform's FHIR API: as configured, and as this request reached it."""
    out = [str(request.base_url).rstrip("/") + "/fhir"]
    if p.settings.base_url:
        out.append(p.settings.base_url.rstrip("/") + "/fhir")
    return out


def router(p: Platform, rules: list[Rule] | None = None) -> APIRouter:
    hooks = cds_service.CdsHooks(p.repo, p.authenticator, p.audit, default_rules() if rules is None else rules)
    r = APIRouter(tags=["cds-hooks"])

    @r.get("/cds-services", summary="CDS Hooks discovery")
    async def discovery(request: Request) -> dict[str, Any]:
        """CDS Hooks 2.0 "Discovery": the services, their hooks and prefetch templates."""
        cds_service.caller(gate.access_of(request))
        return hooks.discovery()

    @r.post("/cds-services/{id}", summary="call a CDS service (a hook)")
    async def call(id: str, request: Request) -> Response:
        """CDS Hooks 2.0 "Calling a CDS Service": cards for the hook's patient, under the caller's Access."""
        access = gate.access_of(request)
        cds_service.caller(access)  # refused by role before the body is read
        hooks.service(id)  # 404 before the body is read
        body = await body_of(request, MAX_BODY, send="application/json")
        peer = request.client.host if request.client else None
        out = await run_in_threadpool(hooks.call, id, body, access, fhir_bases=_fhir_bases(p, request),
                                      base_url=str(request.base_url).rstrip("/") + "/fhir", peer=peer)
        return JSONResponse(out)

    @r.post("/cds-services/{id}/feedback", summary="feedback on cards (accepted / overridden)")
    async def feedback(id: str, request: Request) -> Response:
        """CDS Hooks 2.0 "Feedback": recorded on the audit trail (AuditEvent, action cds-feedback)."""
        access = gate.access_of(request)
        cds_service.caller(access)
        hooks.service(id)
        body = await body_of(request, MAX_BODY, send="application/json")
        peer = request.client.host if request.client else None
        await run_in_threadpool(hooks.feedback, id, body, access, peer=peer)
        return Response(status_code=200)

    return r
