"""Access decisions as pure rules: facts in, a decision out (no database, no clock).

:class:`hutong.security.policy.Access` gathers the facts
(:mod:`hutong.security.policy_store`) and records what was touched
(:mod:`hutong.security.trace`); the rules themselves live here, so they can be
read in one place and table-tested without a database
(tests/security/test_decision_table.py).  Rules (issue 6, issue 12):

- SMART v2 scopes bound every interaction (scopes-and-launch-context.html:
  ``c r u d s`` per type): HT-0101.
- Directory data (Organization, Practitioner, ...) is readable by every
  signed-in caller; the platform engine is bound by scopes only.
- Residents read their own record (every source of their golden person),
  delegates the records of those they act for with sensitive categories
  masked: otherwise HT-0103.  Commission staff, auditors and operators read
  no resident's record: HT-0104.
- An institution's system or clinician reads its own institution's
  registrations; another institution's record needs a basis for that person
  (break-glass > consent > treatment; a resident's deny overrides all but
  break-glass), and its sensitive categories stay masked unless the basis
  unmasks them: HT-0103.  A record in no patient's compartment: HT-0102.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from enum import StrEnum
from typing import Any

from hutong.errors import Forbidden
from hutong.security.consent import ConsentDecision
from hutong.security.principal import Role
from hutong.security.scopes import allows

# Shared directory data every signed-in caller may read (no resident's record).
DIRECTORY_TYPES = frozenset({
    "Organization", "Practitioner", "PractitionerRole", "Location", "HealthcareService", "Endpoint",
    "Medication", "Substance", "ValueSet", "CodeSystem", "ConceptMap", "NamingSystem", "StructureDefinition",
    "SearchParameter", "CapabilityStatement", "OperationDefinition", "Questionnaire", "PlanDefinition",
    "ActivityDefinition", "Library",
})
PERSON_ROLES = (Role.RESIDENT, Role.DELEGATE)
ORG_ROLES = (Role.INSTITUTION, Role.CLINICIAN)

# Purposes, as recorded in the audit trail.
OWN_RECORD, DELEGATE, OWN_INSTITUTION = "own-record", "delegate", "own-institution"
TREATMENT, CONSENT, BREAK_GLASS, PLATFORM, DIRECTORY = "treatment", "consent", "break-glass", "platform", "directory"
IDENTITY = "identity"  # a lookup in the identity index (residents see it as 核对身份)

# A Practitioner's or an institution's Encounter the write hook marked as typed
# in by a clinician: no treatment basis (issue 12, finding 8).
ENTERED_BY = ("https://fhir.hutong.dev/CodeSystem/entered-by", "clinician")
UNDER_WAY = ("arrived", "triaged", "in-progress", "onleave")


class Effect(StrEnum):
    ALLOW = "allow"   # shown
    MASK = "mask"     # exists, but in a category masked for this caller: a read is refused, a search leaves it out
    DENY = "deny"     # refused


@dataclass(frozen=True)
class Decision:
    effect: Effect
    purpose: str | None = None   # the basis an allowed access used (audit purpose)
    code: str | None = None      # the stable error code of a refusal or mask
    message: str = ""
    patient: str | None = None   # the patient whose registration or person allowed it

    @property
    def allowed(self) -> bool:
        return self.effect is Effect.ALLOW

    def refusal(self) -> Forbidden:
        assert self.code is not None, "an allowed decision has no refusal"
        return Forbidden(self.code, self.message)


def allow(purpose: str, patient: str | None = None) -> Decision:
    return Decision(Effect.ALLOW, purpose, patient=patient)


def deny(code: str, message: str) -> Decision:
    return Decision(Effect.DENY, None, code, message)


def mask(message: str) -> Decision:
    return Decision(Effect.MASK, None, "HT-0103", message)


@dataclass(frozen=True)
class Basis:
    """Why (and how far) an institution's caller may see one person's record."""

    purpose: str | None                 # treatment | consent | break-glass | None (no basis)
    hide: tuple[str, ...]               # labels (upper-case ActCodes) masked on other institutions' records
    denied: bool = False                # the resident refused this caller (consent deny)
    detail: str = ""


# ------------------------------------------------------------------ scopes
def scope_letter(interaction: str) -> str:
    """SMART v2 permission letter of a FHIR interaction (scopes-and-launch-context.html)."""
    return {"create": "c", "read": "r", "vread": "r", "history-instance": "r", "update": "u", "patch": "u",
            "delete": "d", "search": "s", "history-type": "s", "history-system": "s", "operation": "r"}[interaction]


def decide_scope(scopes: Sequence[str], type: str, interaction: str) -> Decision:
    letter = scope_letter(interaction)
    if allows(scopes, type, letter):
        return allow(interaction)
    return deny("HT-0101", f"the token's scopes do not allow {interaction} on {type} "
                           f"(needs {type}.{letter} or *.{letter})")


# ------------------------------------------------------------------ basis
def basis_of(*, glass: str | None, consent: ConsentDecision, treated: bool,
             sensitive_labels: Iterable[str]) -> Basis:
    """An institution caller's basis for one person: an active break-glass grant
    (id ``glass``) first; then the resident's consents (a deny overrides a
    treatment relationship); then a treatment relationship.  Sensitive labels
    stay hidden unless a consent unmasks them specifically; a consent can hide more."""
    if glass is not None:
        return Basis(BREAK_GLASS, (), detail=glass)
    labels = tuple(x.upper() for x in sensitive_labels)
    hide = tuple(x for x in labels if x not in consent.unmasked) + tuple(
        x for x in consent.masked if x not in labels)
    if consent.deny:
        return Basis(None, hide, denied=True, detail="the resident has refused access (Consent)")
    if consent.permit:
        return Basis(CONSENT, hide, detail=",".join(consent.consent_ids))
    if treated:
        return Basis(TREATMENT, hide)
    return Basis(None, hide)


def no_basis_message(b: Basis, window_days: int) -> str:
    if b.denied:
        return "the resident has refused your access to their record (Consent); only break-glass overrides"
    return ("no access basis for this resident: no treatment relationship at your institution in the last "
            f"{window_days} days and no consent; in an emergency use "
            "POST Patient/[id]/$break-glass with a reason")


def _ref(value: Any) -> str:
    from hutong.security.consent import ref_key

    ref = value.get("reference") if isinstance(value, dict) else None
    return ref_key(ref) if isinstance(ref, str) and ref else ""


def _day(value: Any, tz: tzinfo | None = None) -> str:
    """The calendar day of a FHIR date or dateTime: in ``tz`` when the dateTime
    carries an offset (FHIR datatypes.html#dateTime: a time has a zone), else as written."""
    if not isinstance(value, str) or len(value) < 10:
        return ""
    if tz is not None and len(value) > 10:
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value[:10]
        if when.tzinfo is not None:
            return when.astimezone(tz).date().isoformat()
    return value[:10]


def _tagged(resource: dict[str, Any], tag: tuple[str, str]) -> bool:
    meta = resource.get("meta")
    tags = meta.get("tag") if isinstance(meta, dict) else None
    return any(isinstance(t, dict) and (t.get("system"), t.get("code")) == tag for t in tags or ())


def treated_here(bodies: Iterable[tuple[str, dict[str, Any]]], *, mine: set[str], org: str,
                 actor_refs: set[str], now: datetime, window_days: int) -> bool:
    """A treatment relationship at institution ``org`` (whose registrations of the
    person are ``mine``), from events the platform can trust (issue 12 finding 8;
    the rule is spelt out on :meth:`hutong.security.policy.Access._treated_here`):
    a referral (ServiceRequest active/completed, authored in the window) naming the
    caller as performer and filed in another institution's registration, or a
    visit (Encounter finished in the window, or under way) the institution's own
    system reported in its own registration, at itself, not typed in by a clinician."""
    # Days are the region's days (``now``'s zone: Beijing from the policy), an event's
    # dateTime taken into that zone: a visit that ended at 23:00 Beijing time 31 days
    # ago is outside a 30-day window, though its UTC "now" date was one day behind.
    tz = now.tzinfo
    cutoff = (now - timedelta(days=window_days)).date().isoformat()
    latest = (now + timedelta(days=1)).date().isoformat()  # a day's grace for time zones, no later
    for t, b in bodies:
        subject = _ref(b.get("subject"))
        in_mine = subject.startswith("Patient/") and subject.split("/", 1)[1] in mine
        if t == "Encounter":
            if not in_mine or _tagged(b, ENTERED_BY):
                continue
            provider = _ref(b.get("serviceProvider"))
            if provider and provider != f"Organization/{org}":
                continue
            period = b.get("period")
            period = period if isinstance(period, dict) else {}
            start, end = _day(period.get("start"), tz), _day(period.get("end"), tz)
            status = b.get("status")
            if status in UNDER_WAY and (start or cutoff) <= latest:
                return True
            day = end or start
            if status == "finished" and day and cutoff <= day <= latest:
                return True
        elif t == "ServiceRequest":
            if in_mine or b.get("status") not in ("active", "completed"):
                continue
            performers = {_ref(p) for p in b.get("performer") or []}
            authored = _day(b.get("authoredOn"), tz)
            if performers & actor_refs and authored and cutoff <= authored <= latest:
                return True
    return False


# ------------------------------------------------------------------ reading one stored row
@dataclass(frozen=True)
class PatientFacts:
    """One patient whose compartment holds the row, as an institution caller sees it."""

    patient: str
    own_institution: bool = False        # a registration the caller's institution manages
    golden_self: bool = False            # the row is this golden person's own Patient record
    basis: Basis | None = None           # the caller's basis for the patient's person (None: no person known)


@dataclass(frozen=True)
class RowFacts:
    role: Role
    type: str
    labels: frozenset[str] = frozenset()          # the row's meta.security codes, upper-case
    in_own_record: bool = False                   # residents/delegates: in a compartment of theirs
    delegate_hide: frozenset[str] = frozenset()   # delegates: the categories masked for them
    task_to_caller: bool = False                  # a Task addressed (owner) to the caller's institution
    patients: tuple[PatientFacts, ...] = field(default_factory=tuple)  # sorted by patient id
    window_days: int = 30
    ref: str = ""                                 # "Type/id" of the row, for messages


def decide_row(f: RowFacts) -> Decision:
    """May the caller see one stored row (a read, a search match, an include)?"""
    if f.role is Role.PLATFORM:
        return allow(PLATFORM)
    if f.type in DIRECTORY_TYPES:
        return allow(DIRECTORY)
    if f.role in PERSON_ROLES:
        if not f.in_own_record:
            return deny("HT-0103", "you may only see your own record (or the records of those you act for)")
        if f.labels & f.delegate_hide:
            return mask("this record is in a sensitive category the resident keeps private")
        return allow(OWN_RECORD if f.role is Role.RESIDENT else DELEGATE)
    if f.role not in ORG_ROLES:
        return deny("HT-0104", f"a {f.role.value} account does not read residents' records")
    if f.type == "Task" and f.task_to_caller:
        return allow(OWN_INSTITUTION)
    if not f.patients:
        return deny("HT-0102", f"{f.ref or f.type} belongs to no patient record you may see")
    refusal: Decision | None = None
    for p in f.patients:
        if p.own_institution:
            return allow(OWN_INSTITUTION, p.patient)
        if p.golden_self:
            return allow(IDENTITY, p.patient)  # Access.present cuts it to the index card without a basis
        b = p.basis
        if b is None:
            continue
        if b.purpose is None:
            refusal = deny("HT-0103", no_basis_message(b, f.window_days))
            continue
        if f.labels & set(b.hide):
            refusal = mask("this record is in a sensitive category the resident has not consented to share "
                           "with you")
            continue
        return allow(b.purpose, p.patient)
    return refusal or deny("HT-0103", f"no access basis for {f.ref or f.type}")


def golden_shown_whole(role: Role, basis: Basis) -> bool:
    """Is a golden (MPI) person record shown whole, or cut to its index card
    (issue 12, finding 3)?  Whole to the platform, to residents and delegates
    (whose own it is: admitted only then), and to institution callers with a
    basis for that person."""
    if role is Role.PLATFORM or role not in ORG_ROLES:
        return True
    return basis.purpose is not None


def decide(f: RowFacts, scopes: Sequence[str], interaction: str) -> Decision:
    """A read-type interaction on one row: the scope first, then the row."""
    d = decide_scope(scopes, f.type, interaction)
    return d if not d.allowed else decide_row(f)


# ------------------------------------------------------------------ writing a record
def decide_write_role(role: Role, type: str, *, correction: bool, has_org: bool) -> Decision:
    """Who may write a resident's record of ``type`` at all (before ownership)."""
    if role is Role.PLATFORM:
        return allow(PLATFORM)
    if role in PERSON_ROLES:
        if type == "Task" and not correction or type not in ("Consent", "Task"):
            return deny("HT-0104", "residents and delegates write only Consents and correction requests"
                        + ("" if type == "Task" else " about themselves"))
        return allow(OWN_RECORD if role is Role.RESIDENT else DELEGATE)
    if role not in ORG_ROLES or not has_org:
        return deny("HT-0104", f"a {role.value} account does not write residents' records")
    return allow(OWN_INSTITUTION)


def decide_person_write(patients: set[str], before: set[str], mine: set[str]) -> Decision:
    """A resident's or delegate's Consent or correction request: about their own record only."""
    if not patients or not patients <= mine or not before <= mine:
        return deny("HT-0103", "a Consent may only be about your own record (or those you act for)")
    return allow(OWN_RECORD)


def decide_org_write(type: str, patients: dict[str, str | None], org: str) -> Decision:
    """An institution's record: every patient it belongs to is a registration
    the institution manages (``patients``: patient id -> managing organization)."""
    if not patients:
        return deny("HT-0102", f"a {type} must belong to one of your institution's patients")
    for p, owner in sorted(patients.items()):
        if owner != org:
            return deny("HT-0102", f"{type} refers to Patient/{p}, which is not your institution's patient")
    return allow(OWN_INSTITUTION)
