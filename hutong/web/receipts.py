"""Ingestion receipts in HTTP terms (FHIR R4 http.html, operationoutcome.html).

The pipeline answers every message with a :class:`~hutong.ingest.envelope.Receipt`;
this module says it in HTTP, for the CDA route and the dead-letter retry route
(hutong.web.ingest_routes): stored 201, a resend already stored 200, kept as a
dead letter 422, refused for who sent it 403 -- each refusal or failure with an
OperationOutcome carrying the stable code.  Who acts is the request's
principal; a retry acts as the message's original sender, narrowed by the
operator (hutong.ingest.acting.ByRetry).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hutong.errors import HutongError, operation_outcome
from hutong.fhir.response import FhirResponse
from hutong.fhir.service import FhirService
from hutong.ingest.acting import ByPrincipal, credential_of
from hutong.ingest.cda.doctypes import BY_CODE
from hutong.ingest.envelope import CDA, Envelope, Outcome, Receipt
from hutong.ingest.pipeline import Ingestor
from hutong.security.events import AuditRecord
from hutong.security.principal import Principal
from hutong.security.senders import mllp_authoriser
from hutong.security.settings import SecuritySettings
from hutong.store.repository import Repository

ISSUE = {Outcome.DEAD: "invalid", Outcome.REFUSED: "forbidden"}  # OperationOutcome issue code
STATUS = {Outcome.STORED: 201, Outcome.DUPLICATE: 200, Outcome.DEAD: 422, Outcome.REFUSED: 403}


def status_of(receipt: Receipt) -> int:
    """HTTP status of a receipt (http.html: 201 created, 200 already there,
    422 not processable, 409 it conflicts with what is stored (HL7 table 0357
    205, e.g. a CDA document id already naming another document), 403 the
    sender may not)."""
    if receipt.outcome is Outcome.DEAD and receipt.condition == "205":
        return 409
    return STATUS[receipt.outcome]


def ingestor(repo: Repository, svc: FhirService, security: SecuritySettings,
             audit: Callable[[AuditRecord], Any]) -> Ingestor:
    """The web workers' ingestor: CDA documents, and retries of dead letters
    from any channel (MLLP senders re-authorised with the same settings as
    ``hutong serve --mllp-port``)."""
    return Ingestor(svc, authorise=mllp_authoriser(repo, security), audit=audit,
                    settings=security)


def problem(receipt: Receipt, what: str) -> FhirResponse:
    issue, status = ISSUE[receipt.outcome], status_of(receipt)
    code = receipt.code or "HT-0062"
    return FhirResponse.json(status, operation_outcome(HutongError(
        code, f"{what}: {receipt.reason or code}", status=status, issue_code=issue)))


def post_cda(ing: Ingestor, principal: Principal, xml: bytes, peer: str | None) -> FhirResponse:
    """POST /ingest/cda: one WS/T 500 document sent by ``principal``."""
    env = Envelope(CDA, xml, ing.clock(), peer, credential_of(principal))
    receipt = ing.receive(env, ByPrincipal(ing.repo, principal, ing.settings))
    if receipt.accepted:
        body = receipt.summary()
        doctype = BY_CODE.get(receipt.envelope.kind)
        body["title"] = doctype.title if doctype is not None else None
        return FhirResponse.json(status_of(receipt), body)
    if receipt.outcome is Outcome.DEAD:
        # HT-0062 stays the answer's code (callers match on it); the cause's code is in the text.
        status = status_of(receipt)
        return FhirResponse.json(status, operation_outcome(HutongError(
            "HT-0062", f"CDA document not stored ({receipt.code}): {receipt.reason}; kept as a dead letter",
            status=status, issue_code="conflict" if status == 409 else "invalid")))
    return problem(receipt, "CDA document refused")


def retry(ing: Ingestor, operator: Principal, message_id: int) -> FhirResponse:
    """POST /ingest/dead-letters/{id}/retry: 200 with the row when stored now;
    422 (failed again, still a dead letter) or 403 (its sender is refused)."""
    row, receipt = ing.retry(message_id, operator)
    if receipt.accepted:
        return FhirResponse.json(200, row.summary())
    return problem(receipt, f"inbox message {message_id} not stored")
