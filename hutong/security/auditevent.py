"""A stored audit record rendered as a FHIR R4 AuditEvent (auditevent.html).

Codes follow the FHIR R4 guidance for RESTful interactions (auditevent.html
section 6.4.5.1: type ``rest`` from audit-event-type, subtype from
restful-interaction) and DICOM PS3.15 A.5 / DCM for the rest (110114 User
Authentication with 110122 Login / 110123 Logout, 110106 Export, 110107
Import, 110113 Security Alert, 110101 Audit Log Used).  The access basis goes
to ``agent.purposeOfUse`` as v3 PurposeOfUse (TREAT, ETREAT for break-glass,
PATRQT for a resident's own request, FAMRQT for a family delegate's ...);
break-glass records also carry the v3 ActCode ``BTG`` security label.
"""

from __future__ import annotations

import base64
from typing import Any

from hutong.errors import CODES
from hutong.security.audit import AuditEntry
from hutong.store.sql import instant

AUDIT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
PURPOSE = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
OUTCOME = "http://hl7.org/fhir/audit-event-outcome"
ACCOUNT = "urn:hutong:account"
ORG_SYSTEM = "urn:oid:2.16.156.10011.1.5"
ORG_EXT = "urn:hutong:extension:agent-organization"

# action -> restful-interaction code (auditevent.html 6.4.5.1).
REST = {"read": "read", "vread": "vread", "search": "search-type", "create": "create", "update": "update",
        "delete": "delete", "history": "history-instance", "operation": "operation", "patch": "patch",
        "transaction": "transaction", "batch": "batch", "capabilities": "capabilities"}
# action -> (DCM type, display, DCM subtype or None)
DICOM: dict[str, tuple[str, str, tuple[str, str] | None]] = {
    "login": ("110114", "User Authentication", ("110122", "Login")),
    "token": ("110114", "User Authentication", ("110122", "Login")),
    "otp": ("110114", "User Authentication", ("110122", "Login")),
    "logout": ("110114", "User Authentication", ("110123", "Logout")),
    "revoke": ("110114", "User Authentication", ("110123", "Logout")),
    "export": ("110106", "Export", None),
    "import": ("110107", "Import", None),
    "hl7": ("110107", "Import", None),
    "cda": ("110107", "Import", None),
    "break-glass": ("110113", "Security Alert", None),
    "refuse": ("110113", "Security Alert", None),
    "consent": ("110110", "Patient Record", None),
    "break-glass-review": ("110101", "Audit Log Used", None),
    "audit-purge": ("110101", "Audit Log Used", None),
}
# AuditEvent.action (audit-event-action): C R U D E.
ACTION = {"create": "C", "import": "C", "hl7": "C", "cda": "C", "read": "R", "vread": "R", "history": "R",
          "export": "R", "update": "U", "patch": "U", "consent": "U", "delete": "D", "audit-purge": "D"}
# our access basis -> v3 PurposeOfUse (a subset of v3-ActReason).
PURPOSE_OF_USE: dict[str, tuple[str, str]] = {
    "treatment": ("TREAT", "treatment"),
    "own-institution": ("TREAT", "treatment"),
    "consent": ("TREAT", "treatment"),
    "break-glass": ("ETREAT", "Emergency Treatment"),
    "own-record": ("PATRQT", "patient requested"),
    "delegate": ("FAMRQT", "family requested"),
    "system": ("HOPERAT", "healthcare operations"),
    "platform": ("HOPERAT", "healthcare operations"),
    "commission": ("HOPERAT", "healthcare operations"),
    "audit": ("HSYSADMIN", "healthcare system administration"),
}
OUTCOME_DISPLAY = {"0": "Success", "4": "Minor failure", "8": "Serious failure", "12": "Major failure"}


def _type(e: AuditEntry) -> tuple[dict[str, str], list[dict[str, str]]]:
    if e.action in REST:
        return ({"system": AUDIT_TYPE, "code": "rest", "display": "RESTful Operation"},
                [{"system": RESTFUL, "code": REST[e.action]}])
    code, display, sub = DICOM.get(e.action, ("110100", "Application Activity", None))
    return ({"system": DCM, "code": code, "display": display},
            [{"system": DCM, "code": sub[0], "display": sub[1]}] if sub else [])


def _purpose(e: AuditEntry) -> list[dict[str, Any]]:
    if e.purpose is None:
        return []
    code, display = PURPOSE_OF_USE.get(e.purpose, ("", ""))
    cc: dict[str, Any] = {"text": e.purpose}
    if code:
        cc["coding"] = [{"system": PURPOSE, "code": code, "display": display}]
    return [cc]


def to_fhir(e: AuditEntry, *, with_query: bool = True) -> dict[str, Any]:
    """The AuditEvent of one record.  ``with_query=False`` leaves out the search
    criteria (they may name a resident) for viewers who are not auditors."""
    typ, subtype = _type(e)
    agent: dict[str, Any] = {"requestor": True}
    who: dict[str, Any] = {}
    if e.account_id is not None:
        who["identifier"] = {"system": ACCOUNT, "value": e.account_id}
    if e.practitioner_role_id:
        who["reference"] = f"PractitionerRole/{e.practitioner_role_id}"
    if e.display:
        who["display"] = e.display
    if who:
        agent["who"] = who
    if e.role:
        agent["type"] = {"text": e.role}
    if e.claimed:
        agent["altId"] = e.claimed
    if e.organization:
        # R4 AuditEvent.agent has no organization element: an extension carries
        # the institution (机构代码, OID 2.16.156.10011.1.5) the account belongs to.
        org: dict[str, Any] = {"identifier": {"system": ORG_SYSTEM, "value": e.organization}}
        if e.organization_id:
            org["reference"] = f"Organization/{e.organization_id}"
        agent["extension"] = [{"url": ORG_EXT, "valueReference": org}]
    if e.peer:
        # network.type 2 = IP address (network-type)
        agent["network"] = {"address": e.peer, "type": "2"}
    purpose = _purpose(e)
    if purpose:
        agent["purposeOfUse"] = purpose
    entity: list[dict[str, Any]] = []
    for p in e.persons:
        entity.append({"what": {"reference": f"Patient/{p}"},
                       "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                       "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"}})
    if e.on_behalf_of and e.on_behalf_of not in e.persons:
        entity.append({"what": {"reference": f"Patient/{e.on_behalf_of}"},
                       "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                       "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
                       "description": "on behalf of"})
    for ref in e.entities:
        if ref.startswith("Patient/") and ref[len("Patient/"):] in e.persons:
            continue  # already listed as the person
        entity.append({"what": {"reference": ref},
                       "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"}})
    if with_query and e.query:
        entity.append({"type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                       "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
                       "query": base64.b64encode(e.query.encode()).decode()})
    out: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(e.seq),
        "type": typ,
        "recorded": instant(e.time_ms),
        "outcome": e.outcome,
        "agent": [agent],
        "source": {"observer": {"display": "Hutong regional platform"},
                   "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}]},
    }
    if subtype:
        out["subtype"] = subtype
    act = ACTION.get(e.action, "E")  # search, operations, sign-in: execute
    out["action"] = act
    desc = []
    if e.code:
        desc.append(f"{e.code}: {CODES.get(e.code, '')}".rstrip(": "))
    if e.interaction:
        desc.append(e.interaction)
    if desc:
        out["outcomeDesc"] = "; ".join(desc)
    if e.break_glass:
        out["meta"] = {"security": [{"system": ACT_CODE, "code": "BTG", "display": "break the glass"}]}
    if purpose:
        pe = [dict(purpose[0])]
        if e.reason:
            pe[0]["text"] = e.reason  # the break-glass / access reason as the resident and auditor read it
        out["purposeOfEvent"] = pe
    elif e.reason:
        out["purposeOfEvent"] = [{"text": e.reason}]
    if entity:
        out["entity"] = entity
    return out
