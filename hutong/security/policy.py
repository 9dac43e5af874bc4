"""Who may see and write what: the one place access is decided.

Every request's :class:`Access` is built from its authenticated
:class:`~hutong.security.principal.Principal` and answers the FHIR layer
(:mod:`hutong.fhir.service`), the store's write hook (:mod:`hutong.security.guard`)
and the web layer.  Rules (issue 6):

- SMART v2 scopes bound every interaction (``c r u d s`` per type).
- A record belongs to the institution that manages the source Patient whose
  compartment holds it (Patient.managingOrganization; each institution has its
  own source Patient for a resident, linked to one golden person by the MPI).
  The owner is fixed when the registration is created and moves only by the
  owner's audited ``$transfer`` (issue 12; :meth:`Access.check_write`).
- Institution systems and clinicians see their own institution's records.  A
  record of another institution needs a basis for that resident, evaluated per
  golden person: a treatment relationship (a referral from another
  institution, or a visit the caller's institution reported on its own
  channel, within ``treatment_window_days``: :meth:`Access._treated_here`), the resident's
  consent (hutong.security.consent), or break-glass (hutong.security.grants).
  A resident's deny overrides a treatment relationship; only break-glass
  overrides a deny.
- Sensitive categories (meta.security PSY, HIV, SEX ...; labelled by
  hutong.security.sensitivity) of other institutions stay masked unless the
  resident consented to that category specifically or the clinician broke
  the glass.
- Residents read their own record (every source of their golden person);
  delegates the records of those they act for, with sensitive categories
  masked.  Residents and delegates write only Consents about themselves.
- Commission staff, auditors and operators read the directory, not records.
- The platform (the region's own integration engine) is bound by scopes only.

Searches get an :class:`~hutong.store.query.AccessScope` compiled into SQL, so
neither pages nor totals hold a row the caller may not see; reads, includes
and $everything rows pass :meth:`Access.admit`.

:class:`Access` is the facade the FHIR and web layers call, composed of four
parts (issue 13): the rules themselves, pure and table-tested
(:mod:`hutong.security.decision`); the facts they need, with all of the
policy's SQL and per-request caches (:mod:`hutong.security.policy_store`);
what the request touched, turned into its audit row by one function
(:mod:`hutong.security.trace`); and the write rules the store's write hook
runs (:mod:`hutong.security.write_policy`).  One Access serves one caller for
one request or job: writes reach it only through a repository bound to it
(``repo.acting_as(access)``, hutong.security.guard), never ambient state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import orjson

from hutong.errors import Forbidden
from hutong.mpi.golden import PERSON_IDENTIFIERS, PERSON_PREFIX, index_card
from hutong.mpi.idnumber import parse_id_number
from hutong.mpi.service import Mpi
from hutong.security import consent as consent_rules
from hutong.security import consent_authors, corrections, grants
from hutong.security.decision import (
    BREAK_GLASS,
    CONSENT,
    DELEGATE,
    DIRECTORY,
    DIRECTORY_TYPES,
    ENTERED_BY,
    IDENTITY,
    ORG_ROLES,
    OWN_INSTITUTION,
    OWN_RECORD,
    PERSON_ROLES,
    PLATFORM,
    TREATMENT,
    Basis,
    PatientFacts,
    RowFacts,
    basis_of,
    decide_row,
    decide_scope,
    golden_shown_whole,
    no_basis_message,
    scope_letter,
    treated_here,
)
from hutong.security.policy_store import PolicyFacts, body_of, mpi_of, security_context
from hutong.security.principal import Principal, Role
from hutong.security.settings import SecuritySettings
from hutong.security.trace import Trace
from hutong.security.write_policy import (
    CORRECTION,
    INSTITUTION_DIRECTORY,
    REGISTRAR,
    WritePolicy,
    _owner_of,
)
from hutong.store.query import AccessScope, Grant
from hutong.store.repository import Repository, Stored, Writer
from hutong.systems import ID_CARD, REGION_TZ

# The policy's vocabulary, re-exported for the layers above (purposes as the
# audit trail records them, roles, the marks the write rules put on records).
__all__ = ["BREAK_GLASS", "CONSENT", "CORRECTION", "DELEGATE", "DIRECTORY", "DIRECTORY_TYPES", "ENTERED_BY",
           "IDENTITY", "INSTITUTION_DIRECTORY", "LOOKUP_PARAMS", "ORG_ROLES", "OWN_INSTITUTION", "OWN_RECORD",
           "PATIENT_PARAMS", "PERSON_ROLES", "PLATFORM", "REGISTRAR", "TREATMENT", "Access", "Basis",
           "scope_letter"]

# Search parameters whose value names the patient a search is about.
PATIENT_PARAMS = frozenset({"patient", "subject", "beneficiary", "_id", "link", "individual"})

# What may accompany an exact identifier in a lookup that finds the index card:
# paging and presentation only (no _has, _include, chains or other criteria).
LOOKUP_PARAMS = frozenset({"identifier", "_count", "_summary", "_elements", "_total", "_format", "_tag", "_cursor",
                           "_pretty"})

# The region's time zone (Beijing): the days residents and institutions write dates in.


@dataclass
class Access:
    repo: Repository
    principal: Principal
    settings: SecuritySettings = field(default_factory=SecuritySettings)
    clock: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    # The MPI (identity: person of a patient, patients of a person), injected by
    # whoever builds the Access; the repository's own when left out.
    mpi: Mpi | None = None
    # what this request touched, for its audit record (hutong.security.trace)
    trace: Trace = field(default_factory=Trace)
    _bases: dict[str, Basis] = field(default_factory=dict)
    _supplied: set[tuple[str, str]] = field(default_factory=set)  # person identifiers this request looked up by
    _lookup: bool = False  # a Patient search by identifier: the persons found are named on the audit row
    _answers: bool | None = None  # a clinician's post answers correction requests (read once a request)
    facts: PolicyFacts = field(init=False)
    writes: WritePolicy = field(init=False)

    def __post_init__(self) -> None:
        if self.mpi is None:
            self.mpi = mpi_of(self.repo)
        self.facts = PolicyFacts(self.repo, self.mpi, self.clock)
        self.writes = WritePolicy(self)

    # ------------------------------------------------------------ the trace (what was touched)
    @property
    def persons(self) -> set[str]:
        return self.trace.persons

    @property
    def entities(self) -> list[str]:
        return self.trace.entities

    @property
    def purposes(self) -> set[str]:
        return self.trace.purposes

    @property
    def reason(self) -> str | None:
        return self.trace.reason

    @reason.setter
    def reason(self, value: str | None) -> None:
        self.trace.reason = value

    @property
    def written(self) -> set[str]:
        return self.trace.written

    # ------------------------------------------------------------ basics
    @property
    def role(self) -> Role:
        return self.principal.role

    @property
    def unrestricted(self) -> bool:
        return self.role is Role.PLATFORM

    def require_role(self, *roles: Role, what: str = "this") -> None:
        if self.role not in roles:
            raise Forbidden("HT-0104", f"a {self.role.value} account may not do {what}")

    def require_scope(self, type: str, interaction: str) -> None:
        d = decide_scope(self.principal.scopes, type, interaction)
        if not d.allowed:
            raise d.refusal()

    def settle(self) -> None:
        """After the request: the persons of the patients it wrote (known only once
        the MPI has linked them, in the same transaction)."""
        assert self.mpi is not None
        self.trace.settle(self.mpi.person_of)

    def attempted(self, patient_id: str) -> None:
        """A refused look at someone's record still names them on the audit row:
        residents see attempts in "who looked at my record", not only reads."""
        person = self.person_of(patient_id)
        if person is not None:
            self.persons.add(person)

    def touched(self, stored: Iterable[Stored], purpose: str | None = None) -> None:
        self.trace.touched(stored, purpose)

    def searched(self, matches: Sequence[Stored]) -> None:
        """A search's matches (already scoped in SQL) go on the trace, and so do
        the persons whose records they are: a search by the caller's own
        institution (``Observation?patient=...``, ``Observation?code=...``) is a
        look at those residents' records as much as a read by id, and their
        谁看了我的档案 must show it (DESIGN.md trust model).  Reads name the
        persons row by row (:meth:`_row_purpose`); a search's scope is in its
        WHERE clause, so its persons are looked up here: one query for the
        page's compartments and one for their persons."""
        self.touched(matches)
        if self.unrestricted or self.role in PERSON_ROLES or not matches:
            # a resident's or delegate's persons are named by search_scope; the platform's
            # unrestricted jobs name no persons on reads by id either (_row_facts)
            return
        comps = self.compartments([s.pk for s in matches])
        patients = {p for ps in comps.values() for p in ps}
        patients.update(s.id for s in matches if s.type == "Patient" and not s.id.startswith(PERSON_PREFIX))
        for patient, person in self.facts.persons_of(patients).items():
            self.persons.add(person or patient)

    # ------------------------------------------------------------ lookups
    def now_iso(self) -> str:
        """Now in the region's own time (Beijing, UTC+8): a Consent's period is written in
        calendar days as the resident lives them (``2026-12-08`` starts at 00:00 in Beijing,
        16:00 UTC the day before), and ``_in_period`` compares dates as text, so a UTC "now"
        left a consent granted between 00:00 and 08:00 without effect until 08:00."""
        return datetime.fromtimestamp(self.clock() / 1000, REGION_TZ).isoformat()

    def managing_org(self, patient_id: str) -> str | None:
        """Organization id managing a source Patient (None: golden, unknown, or unmanaged)."""
        return self.facts.managing_org(patient_id)

    def person_of(self, patient_id: str) -> str | None:
        return self.facts.person_of(patient_id)

    def patients_of(self, person_id: str) -> list[str]:
        """The golden person and every linked source Patient."""
        return self.facts.patients_of(person_id)

    def compartments(self, pks: Sequence[int]) -> dict[int, set[str]]:
        return self.facts.compartments(pks)

    def my_persons(self) -> tuple[str, ...]:
        """A resident's own person; a delegate's are those still delegated now
        (the token's list, less any delegation ended or expired since it was issued)."""
        if self.role is not Role.DELEGATE:
            return self.principal.persons
        live = self.facts.live_delegations(self.principal.account_id)
        return tuple(p for p in self.principal.persons if p in live)

    def my_patients(self) -> list[str]:
        out: list[str] = []
        for p in self.my_persons():
            out += self.patients_of(p)
        return out

    # ------------------------------------------------------------ basis
    def basis(self, person_id: str) -> Basis:
        """Why this institution's caller may see another institution's records of a person."""
        if person_id in self._bases:
            return self._bases[person_id]
        b = self._evaluate_basis(person_id)
        self._bases[person_id] = b
        return b

    def _actor_refs(self) -> set[str]:
        p = self.principal
        refs = set()
        if p.organization_id:
            refs.add(f"Organization/{p.organization_id}")
        if p.practitioner_id:
            refs.add(f"Practitioner/{p.practitioner_id}")
        if p.practitioner_role_id:
            refs.add(f"PractitionerRole/{p.practitioner_role_id}")
        return refs

    def _evaluate_basis(self, person_id: str) -> Basis:
        labels = tuple(x.upper() for x in self.settings.sensitive_labels)
        now = self.clock()
        glass = grants.active(self.repo, self.principal.account_id, person_id, now) \
            if self.role is Role.CLINICIAN else None
        if glass is not None:
            return basis_of(glass=glass.id, consent=consent_rules.ConsentDecision(), treated=False,
                            sensitive_labels=labels)
        patients = self.patients_of(person_id)
        rows = self.facts.basis_records(patients)
        loaded = [(s, orjson.loads(s.body)) for s in rows if s.body is not None]
        bodies = [(s.type, b) for s, b in loaded]
        # A Consent counts only as its current version's author may make it: the
        # resident, a delegate, an institution on documented instruction (issue 12).
        counted = consent_authors.in_force(self.repo, [(s, b) for s, b in loaded if s.type == "Consent"], labels)
        decision = consent_rules.evaluate(counted, self._actor_refs(), self.now_iso())
        treated = not decision.deny and not decision.permit and self._treated_here(bodies, patients)
        return basis_of(glass=None, consent=decision, treated=treated, sensitive_labels=labels)

    def _treated_here(self, bodies: list[tuple[str, dict[str, Any]]], patients: list[str]) -> bool:
        """A treatment relationship at the caller's institution, from events the
        platform can trust (DESIGN.md trust model; issue 12 finding 8), never from
        what the caller declared about itself:

        - **A referral by someone else**: a ServiceRequest, ``active`` or
          ``completed``, authored within ``treatment_window_days`` (and not in the
          future), naming the caller's institution (or the calling clinician, or
          their PractitionerRole) as performer, and filed in a registration the
          caller's institution does not manage: since only a registration's owner
          (or the platform engine) writes into it, that means another institution
          (or the region's referral system) sent it.  A ServiceRequest in the
          caller's own registration is the caller's own order and never counts.
        - **A visit the institution reported on its own channel**: an Encounter in
          a registration the caller's institution manages, at that institution
          (``serviceProvider`` absent or the institution itself), that happened:
          ``finished`` within the window and not in the future, or still under
          way (``arrived``/``triaged``/``in-progress``/``onleave``, started by now).
          It counts only when the institution's system (HIS over REST, MLLP or a
          CDA post) or the platform engine reported it: an Encounter a clinician
          entered through the API carries the ``entered-by|clinician`` tag the
          write hook puts on it (:meth:`check_write`) and is no basis.  An
          Encounter another institution files naming the caller as
          ``serviceProvider`` is that institution's statement, not the caller's
          visit (a referral is how one institution sends a patient to another).
          Planned, cancelled, erroneous and unknown encounters never count.

        What remains trusted is the institution's own system: a hospital's HIS can
        register a resident and report a visit.  That is the accountable channel
        the region relies on (the system is authenticated, the write is audited,
        the resident sees every look the basis allows in 谁看了我的档案 with the
        purpose "treatment", and a resident's deny overrides it).
        """
        org = self.principal.organization_id
        if not org:
            return False
        mine = {p for p in patients if self.managing_org(p) == org}
        return treated_here(bodies, mine=mine, org=org, actor_refs=self._actor_refs(),
                            now=datetime.fromtimestamp(self.clock() / 1000, REGION_TZ),
                            window_days=self.settings.treatment_window_days)

    def break_glass(self, w: Writer, person_id: str, reason: str) -> grants.AccessGrant:
        """Claim emergency access to one person's record (clinicians only; reason required)."""
        self.require_role(Role.CLINICIAN, what="break-glass")
        if len(reason.strip()) < 10:
            raise Forbidden("HT-0106", "break-glass needs a written reason of at least 10 characters")
        g = grants.add(w, self.principal.account_id, person_id, "break-glass", reason.strip(), self.clock(),
                       self.settings.break_glass_hours)
        self._bases.pop(person_id, None)
        self.persons.add(person_id)
        self.purposes.add(BREAK_GLASS)
        self.reason = reason.strip()
        return g

    # ------------------------------------------------------------ reading
    def search_scope(self, type: str, items: Sequence[tuple[str, str]],
                     compartment: str | None = None) -> AccessScope | None:
        """The rows of ``type`` this caller's search may return (None: all of them)."""
        if self.unrestricted or type in DIRECTORY_TYPES:
            if type in DIRECTORY_TYPES:
                self.purposes.add(DIRECTORY)
            return None
        if self.role in PERSON_ROLES:
            hide = self._delegate_hide()
            targets = self._targets(type, items, compartment)
            mine = set(self.my_patients())
            for t in targets:
                if t not in mine:
                    self.attempted(t)
                    raise Forbidden("HT-0103", "you may only see your own record (or the records of those you "
                                               "act for)")
            self.persons.update(self.my_persons())
            self.purposes.add(OWN_RECORD if self.role is Role.RESIDENT else DELEGATE)
            return AccessScope((Grant(patients=tuple(sorted(mine)), hide_labels=hide),))
        if self.role not in ORG_ROLES:
            raise Forbidden("HT-0104", f"a {self.role.value} account does not read residents' records")
        org = self.principal.organization_id
        out = [Grant(managed_by=org)] if org else []
        lookup = self._exact_lookup(type, items, compartment)
        self._lookup = type == "Patient" and any(k.split(":")[0] == "identifier" for k, _ in items)
        self.purposes.add(IDENTITY if lookup else OWN_INSTITUTION)
        for t in self._targets(type, items, compartment):
            if org and self.managing_org(t) == org:
                continue
            person = self.person_of(t)
            if person is None:
                raise Forbidden("HT-0103", f"no access basis for Patient/{t}")
            b = self.basis(person)
            if b.purpose is None:
                self.attempted(person)
                raise Forbidden("HT-0103", self._no_basis_message(b))
            self.persons.add(person)
            self.purposes.add(b.purpose)
            out.append(Grant(patients=tuple(self.patients_of(person)), hide_labels=b.hide))
        if type == "Task" and org and self.answers_corrections(org):
            out.append(Grant(owner_org=org))  # correction requests addressed to this institution
        if lookup:
            # Finding a resident by an exact, complete person identifier (ID number,
            # health card, ...): the golden record, which present() cuts to the
            # region's index card unless the caller has a basis (issue 12, finding 3).
            # Anything broader (identifier:missing, system|, :not, :text, several
            # values, other criteria) finds the caller's own registrations only.
            out.append(Grant(golden=True))
        return AccessScope(tuple(out))

    def _exact_lookup(self, type: str, items: Sequence[tuple[str, str]], compartment: str | None) -> bool:
        """A Patient search for one resident by one exact, complete person identifier."""
        if type != "Patient" or compartment or any(k not in LOOKUP_PARAMS for k, _ in items):
            return False
        values = [v for k, v in items if k == "identifier"]
        if len(values) != 1 or "," in values[0]:
            return False
        system, sep, value = values[0].partition("|")
        value = value.strip()
        if not sep or system not in PERSON_IDENTIFIERS or len(value) < 6:
            return False
        if system == ID_CARD:
            idn = parse_id_number(value)
            if not idn.valid or idn.value is None:
                return False
            value = idn.value
        self._supplied.add((system, value))
        return True

    def _delegate_hide(self) -> tuple[str, ...]:
        if self.role is Role.DELEGATE:
            return tuple(x.upper() for x in self.settings.sensitive_labels)
        return ()

    def _no_basis_message(self, b: Basis) -> str:
        return no_basis_message(b, self.settings.treatment_window_days)

    def _targets(self, type: str, items: Sequence[tuple[str, str]], compartment: str | None) -> list[str]:
        """Patient ids a search names (patient=, subject=, Patient?_id=, the compartment)."""
        out = [compartment] if compartment else []
        for k, v in items:
            name = k.split(":")[0]
            if name not in PATIENT_PARAMS or (name == "_id" and type != "Patient") or "." in k:
                continue
            for one in v.split(","):
                one = one.strip()
                if not one:
                    continue
                kind, _, rid = one.rpartition("/")
                if kind and kind.rsplit("/", 1)[-1] != "Patient":
                    continue
                out.append(rid)
        return out

    def admit(self, rows: Sequence[Stored], *, explicit: bool = False) -> list[Stored]:
        """The rows this caller may see, in order; ``explicit`` (a read by id)
        raises instead of dropping, so the caller learns why."""
        if self.unrestricted:
            self.touched(rows, PLATFORM)
            return list(rows)
        clinical = [s for s in rows if s.type not in DIRECTORY_TYPES]
        comps = self.compartments([s.pk for s in clinical]) if clinical else {}
        for s in clinical:
            if s.type == "Binary" and not comps.get(s.pk):
                comps[s.pk] = _security_context(_body(s))
        out = []
        for s in rows:
            if s.type in DIRECTORY_TYPES:
                out.append(s)
                self.purposes.add(DIRECTORY)
                continue
            why = self._row_purpose(s, comps.get(s.pk, set()))
            if isinstance(why, str):
                out.append(s)
                self.purposes.add(why)
            elif explicit:
                for p in comps.get(s.pk, set()):
                    self.attempted(p)
                raise why
        self.touched(out)
        return out

    def _row_purpose(self, s: Stored, patients: set[str]) -> str | Forbidden:
        """The facts of one row, judged by :func:`hutong.security.decision.decide_row`;
        the persons it allowed go on the trace."""
        d = decide_row(self._row_facts(s, patients))
        if not d.allowed:
            return d.refusal()
        assert d.purpose is not None
        if self.role in PERSON_ROLES:
            mine = set(self.my_patients())
            self.persons.update(self.person_of(p) or p for p in patients & mine)
        elif d.patient is not None:
            self.persons.add(d.patient if d.purpose == IDENTITY else (self.person_of(d.patient) or d.patient))
        return d.purpose

    def answers_corrections(self, org: str) -> bool:
        """Correction requests addressed to the institution (Task.owner) are read by
        its system and by the clinicians whose post it designates to answer them
        (hutong.security.corrections), not by every clinician there: a resident's
        reasons often tell health details beyond one visit, and minimum necessary
        use (PIPL Art. 6) keeps them with the staff who decide (issue 16, item 8)."""
        if self.role is not Role.CLINICIAN:
            return True
        if self._answers is None:
            post = self.principal.practitioner_role_id
            s = self.repo.read("PractitionerRole", post) if post else None
            self._answers = corrections.designated(body_of(s) if s is not None and not s.deleted else None, org,
                                                   self.principal.practitioner_id)
        return self._answers

    def _row_facts(self, s: Stored, patients: set[str]) -> RowFacts:
        labels = frozenset(_labels(s))
        common = {"role": self.role, "type": s.type, "labels": labels, "ref": f"{s.type}/{s.id}",
                  "window_days": self.settings.treatment_window_days}
        if self.unrestricted or s.type in DIRECTORY_TYPES:
            return RowFacts(**common)  # type: ignore[arg-type]
        if self.role in PERSON_ROLES:
            return RowFacts(**common, in_own_record=bool(patients & set(self.my_patients())),  # type: ignore[arg-type]
                            delegate_hide=frozenset(self._delegate_hide()))
        if self.role not in ORG_ROLES:
            return RowFacts(**common)  # type: ignore[arg-type]
        org = self.principal.organization_id
        if s.type == "Task" and org and _owner(s) == f"Organization/{org}" and self.answers_corrections(org):
            return RowFacts(**common, task_to_caller=True)  # type: ignore[arg-type]
        # Facts are gathered lazily, in the order decide_row reads them, so a row
        # of the caller's own institution costs one ownership lookup, as before.
        facts: list[PatientFacts] = []
        for p in sorted(patients):
            if org and self.managing_org(p) == org:
                facts.append(PatientFacts(p, own_institution=True))
                break
            if s.type == "Patient" and p == s.id and p.startswith(PERSON_PREFIX) and self._golden_lookup_ok():
                facts.append(PatientFacts(p, golden_self=True))
                break
            person = self.person_of(p)
            b = self.basis(person) if person is not None else None
            facts.append(PatientFacts(p, basis=b))
            if b is not None and b.purpose is not None and not labels & set(b.hide):
                break
        return RowFacts(**common, patients=tuple(facts))  # type: ignore[arg-type]

    def _golden_lookup_ok(self) -> bool:
        """Who may see a golden record at all (as its index card, see :meth:`present`)."""
        return self.role in ORG_ROLES

    def supplied(self, system: str, value: str) -> None:
        """A person identifier the caller gave in this request ($match input): its
        index cards may show it back."""
        if system in PERSON_IDENTIFIERS and value:
            idn = parse_id_number(value) if system == ID_CARD else None
            self._supplied.add((system, idn.value if idn is not None and idn.value else value))

    def present(self, rows: Sequence[Stored]) -> list[Stored]:
        """What of each admitted row the caller is shown.  A golden person record
        is the platform's (DESIGN.md trust model; issue 12, finding 3): whole only
        to callers with a basis for that person (treatment, consent, break-glass);
        to other institutions' callers it is the index card
        (:func:`hutong.mpi.golden.index_card`: golden id, name, sex, birth date,
        the identifiers they already hold, links to their own registrations).
        Every person shown is named on the audit row, so the resident sees the
        lookup in 谁看了我的档案."""
        if self.unrestricted or self.role not in ORG_ROLES:
            return list(rows)
        org = self.principal.organization_id
        out: list[Stored] = []
        for s in rows:
            if s.type != "Patient" or s.body is None:
                out.append(s)
                continue
            if not s.id.startswith(PERSON_PREFIX):
                if self._lookup:
                    self.persons.add(self.person_of(s.id) or s.id)
                out.append(s)
                continue
            self.persons.add(s.id)
            self.purposes.add(IDENTITY)
            if golden_shown_whole(self.role, self.basis(s.id)):
                out.append(s)
                continue
            own = [p for p in self.patients_of(s.id) if p != s.id and org and self.managing_org(p) == org]
            known = set(self._supplied)
            for src in self.facts.fetch_patients(own):
                for ident in (_body(src) or {}).get("identifier") or ():
                    if isinstance(ident, dict) and ident.get("system") in PERSON_IDENTIFIERS:
                        known.add((str(ident["system"]), str(ident.get("value"))))
            card = index_card(orjson.loads(s.body), known=known, own_sources=set(own))
            out.append(replace(s, body=orjson.dumps(card)))
        return out

    def check_read(self, s: Stored) -> None:
        self.admit([s], explicit=True)

    def may(self, interaction: str, type: str) -> bool:
        from hutong.security.scopes import allows

        return allows(self.principal.scopes, type, scope_letter(interaction))

    def check_record(self, patient_id: str) -> None:
        """May this caller open Patient/[id]/$everything at all?  Its rows are
        then filtered one by one (:meth:`admit`)."""
        if self.unrestricted:
            return
        if self.role in PERSON_ROLES:
            if patient_id not in set(self.my_patients()):
                self.attempted(patient_id)
                raise Forbidden("HT-0103", "you may only see your own record (or the records of those you act for)")
            return
        if self.role not in ORG_ROLES:
            raise Forbidden("HT-0104", f"a {self.role.value} account does not read residents' records")
        org = self.principal.organization_id
        person = self.person_of(patient_id)
        if org and self.managing_org(patient_id) == org:
            return
        if person is None:
            raise Forbidden("HT-0103", f"no access basis for Patient/{patient_id}")
        b = self.basis(person)
        if b.purpose is None and not (org and any(self.managing_org(p) == org for p in self.patients_of(person))):
            self.attempted(person)
            raise Forbidden("HT-0103", self._no_basis_message(b))

    def write_scope(self, type: str) -> AccessScope | None:
        """What conditional-write criteria may match: the caller's own records."""
        if self.unrestricted or type in DIRECTORY_TYPES:
            return None
        if self.role in PERSON_ROLES:
            return AccessScope((Grant(patients=tuple(sorted(self.my_patients()))),))
        if self.role in ORG_ROLES and self.principal.organization_id:
            return AccessScope((Grant(managed_by=self.principal.organization_id),))
        return AccessScope(())

    def write_visible(self, w: Writer, rows: Sequence[Stored]) -> list[Stored]:
        """:meth:`write_scope` for rows found another way inside the write ``w``
        (bundle identifier lookups).  The facts are read through ``w``: a
        registration an earlier savepoint of the same group commit created is
        not committed yet, and judged from outside it looked like nobody's, so
        the next message about that new patient created a second one (issue 17)."""
        if self.unrestricted:
            return list(rows)
        comps = self.facts.compartments_in(w, [s.pk for s in rows])
        mine = set(self.my_patients()) if self.role in PERSON_ROLES else set()
        org = self.principal.organization_id if self.role in ORG_ROLES else None
        out = []
        for s in rows:
            if s.type in DIRECTORY_TYPES:
                out.append(s)
            elif self.role in PERSON_ROLES and comps.get(s.pk, set()) & mine:
                out.append(s)
            elif org and any(self.facts.managed_in(w, p) == org for p in comps.get(s.pk, set())):
                out.append(s)
        return out

    # ------------------------------------------------------------ writing (hutong.security.write_policy)
    def check_write(self, w: Writer, type: str, id: str, resource: dict[str, Any] | None,
                    current: Stored | None, patients: set[str]) -> bool:
        """Called by the store's write hook inside the transaction; True when it
        stamped the resource (:meth:`WritePolicy.check_write`)."""
        return self.writes.check_write(w, type, id, resource, current, patients)

    def transfer(self, w: Writer, current: Stored, to_org: str) -> str | None:
        """May this caller move the registration ``current`` to ``to_org``? (:meth:`WritePolicy.transfer`)"""
        return self.writes.transfer(w, current, to_org)

    def expect_patients(self, w: Writer, patients: list[tuple[str, dict[str, Any]]]) -> None:
        """Patients a transaction is about to create (:meth:`WritePolicy.expect_patients`)."""
        self.writes.expect_patients(w, patients)


_body = body_of
_security_context = security_context


def _labels(s: Stored) -> set[str]:
    if s.body is None or b'"security"' not in s.body:
        return set()
    meta = orjson.loads(s.body).get("meta") or {}
    return {c["code"].upper() for c in meta.get("security") or []
            if isinstance(c, dict) and isinstance(c.get("code"), str)}


def _owner(s: Stored) -> str | None:
    return _owner_of(None, s)


