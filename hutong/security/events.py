"""What happened: the record every audited action produces.

Built by the code that acted (policy enforcement, sign-in, ingestion) and
handed to the audit log (:mod:`hutong.security.audit`), which chains, stores
and renders it as a FHIR AuditEvent (auditevent.html).  Free-text fields
(``reason``, ``query``) may hold resident data, so the audit log stores them
encrypted; ``persons`` are opaque golden person ids, never ID numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hutong.security.principal import Principal

# Outcomes, as AuditEvent.outcome (http://hl7.org/fhir/audit-event-outcome).
SUCCESS = "0"
REFUSED = "4"       # minor failure: the request was refused (401/403/lockout)
FAILED = "8"        # serious failure: the request failed (4xx other than refusal)
ERROR = "12"        # major failure: internal error


@dataclass(frozen=True, slots=True)
class AuditRecord:
    action: str                        # read vread search history create update delete operation export import
                                       # login logout token revoke otp break-glass consent refuse hl7 cda
    outcome: str = SUCCESS
    principal: Principal | None = None  # None: nobody authenticated (failed sign-in, missing token)
    claimed: str | None = None          # who they claimed to be on a failed sign-in (username or client id;
                                        # a resident's ID number only as a blind-index digest)
    on_behalf_of: str | None = None     # golden person id a delegate acted for
    persons: tuple[str, ...] = ()       # golden person ids whose record was touched (residents' access log)
    entities: tuple[str, ...] = ()      # "Type/id" of the resources read or written (capped by the caller)
    interaction: str = ""               # e.g. "GET /fhir/Observation" (path template, no query values)
    query: str | None = None            # search criteria as sent (stored encrypted)
    purpose: str | None = None          # access basis: own-record delegate own-institution treatment consent
                                        # break-glass system platform
    reason: str | None = None           # free text (break-glass reason; stored encrypted)
    code: str | None = None             # HT error code of a refusal or failure
    peer: str | None = None             # network address
    time_ms: int | None = None          # None = now
    extra: dict[str, str] = field(default_factory=dict)
