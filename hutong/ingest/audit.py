"""One audit record per received message, whatever the channel (issue 13, item 5).

MLLP, CDA over HTTP, the folder import and dead-letter retries all end in
:func:`record_of`: who acted (the principal, and how the transport
authenticated it), what arrived (the envelope), what became of it (the
receipt) and what the policy touched (persons and entities, so residents see
institutions' writes in 谁看了我的档案).  The purpose is the policy's basis
when it recorded one, else the principal's standing: an institution writes
its own patients' records (``own-institution``), the platform engine for the
region (``platform``).
"""

from __future__ import annotations

from hutong.ingest.envelope import HL7V2, Envelope, Outcome, Receipt
from hutong.security.events import FAILED, REFUSED, SUCCESS, AuditRecord
from hutong.security.policy import Access
from hutong.security.principal import Principal, Role
from hutong.security.trace import to_audit_record

ACTIONS = {HL7V2: "hl7"}  # audit action per channel (AuditRecord.action); others are their channel name
OUTCOMES = {Outcome.STORED: SUCCESS, Outcome.DUPLICATE: SUCCESS, Outcome.DEAD: FAILED, Outcome.REFUSED: REFUSED}
STANDING = {Role.INSTITUTION: "own-institution", Role.PLATFORM: "platform"}


def record_of(principal: Principal | None, envelope: Envelope, receipt: Receipt,
              touched: Access | None) -> AuditRecord:
    """The AuditRecord of one receipt (``touched``: the Access the writes ran
    under, settled, or None when the message never got that far), made by
    the one function every entry point uses (hutong.security.trace)."""
    cred = envelope.credential
    # The same keys on every channel's record ("" when not known), so one query
    # reads them all; retry_of, retried_by and note only when they apply.
    extra: dict[str, str] = {
        "channel": envelope.channel, "outcome": receipt.outcome.value, "sender_auth": cred.method,
        "authenticated_as": cred.institution or "", "credential": (cred.description or "")[:300],
        "sender": envelope.sender, "control_id": envelope.control_id[:200],
        "message_id": str(receipt.message_id) if receipt.message_id is not None else ""}
    if envelope.retry_of is not None:
        extra["retry_of"] = str(envelope.retry_of)
    if envelope.retried_by is not None:
        extra["retried_by"] = envelope.retried_by
    if receipt.warning is not None:
        extra["note"] = receipt.warning[:300]
    action = ACTIONS.get(envelope.channel, envelope.channel)
    outcome = REFUSED if receipt.forbidden else OUTCOMES[receipt.outcome]
    return to_audit_record(
        touched.trace if touched is not None else None, action=action, principal=principal, outcome=outcome,
        interaction=f"{action} {envelope.kind}".strip(), code=receipt.code, peer=envelope.peer,
        claimed=envelope.claimed, purpose=STANDING.get(principal.role) if principal is not None else None,
        extra=extra)
