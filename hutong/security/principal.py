"""Who is asking: the authenticated party every request carries.

A Principal is built by authentication (a verified access token, an MLLP
sender on an allowed address, or the local operator at the command line) and
is all that policy and audit look at.  It holds no secret and no resident
identifier except the opaque golden person ids a resident or delegate acts
for (ids, never ID numbers or names), so it may be logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    """The kinds of account (issue 6: institutions, clinicians, residents,
    delegates, commission staff, auditors, operators) plus the platform's
    own integration engine."""

    INSTITUTION = "institution"  # an institution's HIS/EMR/LIS/PACS (OAuth2 client credentials)
    CLINICIAN = "clinician"      # a person linked to Practitioner/PractitionerRole at one institution
    RESIDENT = "resident"        # a person linked to their golden Patient (mpi-...)
    DELEGATE = "delegate"        # family member / guardian acting for residents (亲友代办)
    COMMISSION = "commission"    # health-commission / information-centre staff
    AUDITOR = "auditor"          # reads the audit trail, reviews break-glass
    OPERATOR = "operator"        # manages accounts, keys, configuration; no clinical reads
    COMMITTEE = "committee"      # decision-support knowledge committee (seed 004): approves rule versions; no reads
    PLATFORM = "platform"        # the region's own integration engine and loaders (all institutions)


@dataclass(frozen=True, slots=True)
class Principal:
    account_id: str                      # stable account id: the audit "who"
    role: Role
    display: str = ""                    # name shown in residents' access logs (a person's or system's name)
    scopes: tuple[str, ...] = ()         # granted SMART v2 scopes, e.g. "user/*.rs", "system/Observation.cruds"
    organization: str | None = None      # institution identifier value (机构代码 / USCC) of the account
    organization_id: str | None = None   # that institution's Organization resource id
    practitioner_id: str | None = None   # clinicians: Practitioner resource id
    practitioner_role_id: str | None = None  # clinicians: PractitionerRole (privileges)
    persons: tuple[str, ...] = ()        # residents: own golden Patient id; delegates: those they act for
    token_id: str | None = None          # jti of the access token (revocation, audit correlation)
    client_id: str | None = None         # OAuth2 client the token was issued to
    peer: str | None = None              # network address the request came from
    attributes: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_person(self) -> bool:
        return self.role not in (Role.INSTITUTION, Role.PLATFORM)

    def with_peer(self, peer: str | None) -> Principal:
        from dataclasses import replace

        return replace(self, peer=peer)


# The operator at the machine's own command line (hutong import/mpi/keys ...):
# local shell access already implies control of the database and keys, so the
# CLI acts as the platform, but every write is still audited under this id.
LOCAL_OPERATOR = Principal(account_id="local-cli", role=Role.PLATFORM, display="local command line",
                           scopes=("system/*.cruds",))
