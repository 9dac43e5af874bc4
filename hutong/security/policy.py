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
and $everything rows pass :meth:`Access.admit`.  What was touched is kept on
the Access for the request's audit record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from hutong.errors import Forbidden
from hutong.mpi.golden import PERSON_IDENTIFIERS, PERSON_PREFIX, index_card
from hutong.mpi.idnumber import parse_id_number
from hutong.mpi.service import Mpi
from hutong.security import consent as consent_rules
from hutong.security import consent_authors, grants
from hutong.security.decision import (  # noqa: F401  (re-exported: the policy's vocabulary)
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
    decide_org_write,
    decide_person_write,
    decide_row,
    decide_scope,
    decide_write_role,
    golden_shown_whole,
    no_basis_message,
    scope_letter,
    treated_here,
)
from hutong.security.policy_store import PolicyFacts, body_of, mpi_of, security_context
from hutong.security.principal import Principal, Role
from hutong.security.settings import SecuritySettings
from hutong.security.trace import Trace
from hutong.store.query import AccessScope, Grant
from hutong.store.repository import Stored
from hutong.store.sql import SqlRepository, SqlWriter
from hutong.systems import ID_CARD

# Directory types an institution may write, when the resource names it as organization.
INSTITUTION_DIRECTORY = frozenset({"PractitionerRole", "Location", "HealthcareService", "Endpoint", "Practitioner"})
# Residents' correction requests (纠偏权, PIPL Art. 46): a Task they may create
# about their own record, which the owner institution answers.
CORRECTION = ("https://fhir.hutong.dev/CodeSystem/task", "correction-request")
# Marks the write hook puts on what it accepts (issue 12, findings 8 and 14):
# an Encounter a clinician entered (no treatment basis), and the institution
# that registered a Practitioner (only it changes it).  Whatever a writer puts
# in these systems is replaced on every write an institution or clinician makes.
REGISTRAR = "https://fhir.hutong.dev/CodeSystem/registrar"
# Search parameters whose value names the patient a search is about.
PATIENT_PARAMS = frozenset({"patient", "subject", "beneficiary", "_id", "link", "individual"})

# What may accompany an exact identifier in a lookup that finds the index card:
# paging and presentation only (no _has, _include, chains or other criteria).
LOOKUP_PARAMS = frozenset({"identifier", "_count", "_summary", "_elements", "_total", "_format", "_tag", "_cursor",
                           "_pretty"})


@dataclass
class Access:
    repo: SqlRepository
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
    facts: PolicyFacts = field(init=False)

    def __post_init__(self) -> None:
        if self.mpi is None:
            self.mpi = mpi_of(self.repo)
        self.facts = PolicyFacts(self.repo, self.mpi, self.clock)

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

    # ------------------------------------------------------------ lookups
    def now_iso(self) -> str:
        return datetime.fromtimestamp(self.clock() / 1000, UTC).isoformat()

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
                            now=datetime.fromtimestamp(self.clock() / 1000, UTC),
                            window_days=self.settings.treatment_window_days)

    def break_glass(self, w: SqlWriter, person_id: str, reason: str) -> grants.AccessGrant:
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
        if type == "Task" and org:
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
        if s.type == "Task" and org and _owner(s) == f"Organization/{org}":
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

    def write_visible(self, rows: Sequence[Stored]) -> list[Stored]:
        """:meth:`write_scope` for rows found another way (bundle identifier lookups)."""
        if self.unrestricted:
            return list(rows)
        comps = self.compartments([s.pk for s in rows])
        mine = set(self.my_patients()) if self.role in PERSON_ROLES else set()
        org = self.principal.organization_id if self.role in ORG_ROLES else None
        out = []
        for s in rows:
            if s.type in DIRECTORY_TYPES:
                out.append(s)
            elif self.role in PERSON_ROLES and comps.get(s.pk, set()) & mine:
                out.append(s)
            elif org and any(self.managing_org(p) == org for p in comps.get(s.pk, set())):
                out.append(s)
        return out

    # ------------------------------------------------------------ writing
    def check_write(self, w: SqlWriter, type: str, id: str, resource: dict[str, Any] | None,
                    current: Stored | None, patients: set[str]) -> bool:
        """Called by the store's write hook inside the transaction; returns True
        when it stamped the resource (an institution's Patient without
        managingOrganization gets its owner, a clinician's Encounter its
        ``entered-by`` tag, an institution's Practitioner its registrar).

        Ownership (issue 12 finding 1): which institution manages a source Patient
        is fixed by its first version; what a write claims never moves it.  The
        owner of an existing registration is read from what is stored (a deleted
        one: its last version before deletion, so re-creating a deleted id is the
        last owner's alone); the pending owner of a registration this transaction
        creates counts only while no stored one exists (:meth:`expect_patients`).
        managingOrganization changes only through :meth:`transfer`, for every
        principal, the platform engine included.  The same holds for every other
        record: re-creating a deleted id is for the institution (or resident) the
        record belonged to, since its earlier versions become readable through it.
        """
        if type == "Patient" and resource is not None and self.unrestricted and current is not None:
            return self._keep_owner(w, id, resource, self._registration_owner(w, current))
        if self.unrestricted:
            return False
        if type in DIRECTORY_TYPES:
            return self._check_directory_write(w, type, resource, current)
        if type == "Binary":
            # A Binary belongs to the patient its securityContext names (the CDA
            # documents of hutong.ingest.cda), for writes as for reads.
            patients = patients or _security_context(resource) | _security_context(_body(current))
        gate = decide_write_role(self.role, type, correction=resource is None or _is_correction(resource),
                                 has_org=bool(self.principal.organization_id))
        if not gate.allowed:
            raise gate.refusal()
        if self.role in PERSON_ROLES:
            d = decide_person_write(patients, self._stored_patients(w, current), set(self.my_patients()))
            if not d.allowed:
                raise d.refusal()
            self.persons.update(self.my_persons())
            return False
        org = self.principal.organization_id
        assert org is not None
        if type == "Task" and self._check_task_write(org, resource, current):
            return False
        stamped = False
        if type == "Patient" and resource is not None:
            if current is not None:
                was = self._registration_owner(w, current)
                if was != org:
                    raise Forbidden("HT-0102", f"Patient/{id} is another institution's registration")
                stamped = self._keep_owner(w, id, resource, was)
            else:
                ref = _ref(resource.get("managingOrganization"))
                if not ref:
                    resource["managingOrganization"] = {"reference": f"Organization/{org}"}
                    stamped = True
                elif ref != f"Organization/{org}":
                    raise Forbidden("HT-0102", "a Patient sent by an institution must be managed by that "
                                               f"institution (managingOrganization Organization/{org})")
            if current is None or current.deleted:
                # Created (or re-created by its owner) here: records later in this
                # transaction may be filed under it before its row is visible.
                w.ctx.pending_owners[id] = org
            self.facts.know_owner(id, w.ctx.transfers.get(id, org))
        elif resource is not None:
            d = decide_org_write(type, {p: self._managed_in(w, p) for p in patients}, org)
            if not d.allowed:
                raise d.refusal()
            if type == "Encounter" and self.role is Role.CLINICIAN:
                # A visit a clinician types in is no treatment basis (_treated_here);
                # the mark goes on every version a clinician writes.
                stamped = _set_tag(resource, ENTERED_BY[0], ENTERED_BY[1])
        if current is not None and type != "Patient":
            for p in self._stored_patients(w, current):
                if self._managed_in(w, p) != org:
                    raise Forbidden("HT-0102", f"{type}/{id} is another institution's record")
        elif current is not None and resource is None and self._registration_owner(w, current) != org:
            raise Forbidden("HT-0102", f"Patient/{id} is another institution's registration")
        self.written.update({id} if type == "Patient" else patients)
        return stamped

    def _check_task_write(self, org: str, resource: dict[str, Any] | None, current: Stored | None) -> bool:
        """Tasks an institution writes (issue 12 finding 14).  Correction requests
        (纠偏权) are made by residents only; the institution they are addressed to
        answers them (True: an answer, which needs no registration of its own), and
        may neither delete, readdress nor re-purpose them.  Any other Task is the
        institution's own work item: it may not be addressed to another institution
        (``owner`` Organization: that would put it in their queue) nor be turned
        into a correction request, and its ``for`` and ``owner`` stay as created."""
        own = f"Organization/{org}"
        earlier = _body(current) if current is not None and not current.deleted else None
        if earlier is not None and _is_correction(earlier) and _owner_of(None, current) == own:
            if resource is None:
                raise Forbidden("HT-0102", "a correction request is answered (status, note), not deleted")
            if resource.get("for") != earlier.get("for") or resource.get("owner") != earlier.get("owner"):
                raise Forbidden("HT-0102", "an answer may not change whose request it is or whom it is to")
            if not _is_correction(resource):
                raise Forbidden("HT-0102", "only correction requests are answered this way")
            return True
        if resource is None:
            return False
        if _is_correction(resource):
            raise Forbidden("HT-0102", "correction requests are made by residents; institutions answer them")
        addressee = _owner_of(resource, None)
        if addressee and addressee.startswith("Organization/") and addressee != own:
            raise Forbidden("HT-0102", "a Task may not be addressed to another institution")
        if earlier is not None and (resource.get("for") != earlier.get("for")
                                    or resource.get("owner") != earlier.get("owner")):
            raise Forbidden("HT-0102", "a Task's for and owner stay as created")
        return False

    def _keep_owner(self, w: SqlWriter, id: str, resource: dict[str, Any], was: str | None) -> bool:
        """A later version of a registration names its stored owner (stamped when
        left out); naming another one is refused unless :meth:`transfer` allowed it."""
        ref = _ref(resource.get("managingOrganization"))
        moving = w.ctx.transfers.get(id)
        if not ref:
            if was is None:
                return False
            resource["managingOrganization"] = {"reference": f"Organization/{was}"}
            return True
        if ref == f"Organization/{was}" or (moving is not None and ref == f"Organization/{moving}"):
            return False
        raise Forbidden("HT-0108", f"Patient/{id} is managed by Organization/{was}: managingOrganization is "
                                   "fixed when a registration is created; its owner moves it with "
                                   "POST Patient/[id]/$transfer")

    def transfer(self, w: SqlWriter, current: Stored, to_org: str) -> str | None:
        """May this caller move the registration ``current`` to Organization ``to_org``?
        Its owner's institution system (or the platform engine) may; the next
        write of it in ``w`` may then name the new owner (:meth:`_keep_owner`).
        Returns the owner it is moved from (hutong.web.transfer_ops writes the
        version and the audit record)."""
        self.require_role(Role.INSTITUTION, Role.PLATFORM, what="registration transfers ($transfer)")
        was = self._registration_owner(w, current)
        if not self.unrestricted and (was is None or was != self.principal.organization_id):
            raise Forbidden("HT-0102", f"Patient/{current.id} is not your institution's registration: only its "
                                       "owner transfers it")
        w.ctx.transfers[current.id] = to_org
        self.facts.forget_owner(current.id)
        return was

    def expect_patients(self, w: SqlWriter, patients: list[tuple[str, dict[str, Any]]]) -> None:
        """Patients a transaction is about to create as this institution's own
        (each is still checked when written: this only orders the checks).  Only
        ids with no stored registration, or a deleted one this institution owned,
        are pending: an existing registration keeps its stored owner whatever
        the bundle says (issue 12 finding 1)."""
        org = self.principal.organization_id
        if self.unrestricted or self.role not in ORG_ROLES or not org or not patients:
            return
        pending = w.ctx.pending_owners
        wanted = {pid for pid, res in patients
                  if _ref(res.get("managingOrganization")) in ("", f"Organization/{org}")}
        existing = self.facts.existing_patients(w, sorted(wanted))
        for pid in wanted:
            if pid in existing:
                current = w.read_current("Patient", pid)
                if current is None or not current.deleted or self._registration_owner(w, current) != org:
                    continue
            pending[pid] = org

    def _managed_in(self, w: SqlWriter, patient_id: str) -> str | None:
        return self.facts.managed_in(w, patient_id)

    def _registration_owner(self, w: SqlWriter, current: Stored) -> str | None:
        """The stored owner of an existing registration (a deleted one: of its
        last version before deletion)."""
        ref = _ref((self._last_live(w, current) or {}).get("managingOrganization"))
        return ref.split("/", 1)[1] if ref.startswith("Organization/") else None

    def _last_live(self, w: SqlWriter, current: Stored) -> dict[str, Any] | None:
        return self.facts.last_live(w, current)

    def _stored_patients(self, w: SqlWriter, current: Stored | None) -> set[str]:
        return self.facts.stored_patients(w, current)

    def _check_directory_write(self, w: SqlWriter, type: str, resource: dict[str, Any] | None,
                               current: Stored | None) -> bool:
        if self.role is not Role.INSTITUTION or type not in INSTITUTION_DIRECTORY:
            raise Forbidden("HT-0104", f"a {self.role.value} account may not write {type} (directory data is "
                                       "kept by the platform)")
        org = f"Organization/{self.principal.organization_id}"
        if type == "Practitioner":
            # A Practitioner names no institution, so the platform records which one
            # registered it (issue 12 finding 14): the registrar tag, set here on
            # every version an institution writes, whatever the body claimed.  Only
            # that institution changes or deletes it; the platform's own entries
            # (no registrar) only the platform.
            before = self._last_live(w, current) if current is not None else None
            if before is not None and _tag_code(before, REGISTRAR) != org:
                raise Forbidden("HT-0102", f"Practitioner/{current.id if current else ''} was registered by "
                                           "another institution (or the platform): only it may change it")
            return resource is not None and _set_tag(resource, REGISTRAR, org)
        for res in (resource, self._last_live(w, current) if current is not None else None):
            if res is None:
                continue
            key = "managingOrganization" if type == "Location" else \
                "providedBy" if type == "HealthcareService" else \
                "managingOrganization" if type == "Endpoint" else "organization"
            if consent_rules.ref_key(((res.get(key) or {}).get("reference")) or "") != org:
                raise Forbidden("HT-0102", f"a {type} written by an institution must name it as {key}")
        return False


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


def _owner_of(resource: dict[str, Any] | None, current: Stored | None) -> str | None:
    for res in (resource, _body(current)):
        if res is not None:
            ref = ((res.get("owner") or {}).get("reference")) if isinstance(res.get("owner"), dict) else None
            return consent_rules.ref_key(ref) if isinstance(ref, str) else None
    return None


def _is_correction(resource: dict[str, Any]) -> bool:
    codings = ((resource.get("code") or {}).get("coding")) or []
    return any(isinstance(c, dict) and (c.get("system"), c.get("code")) == CORRECTION for c in codings)


def _ref(value: Any) -> str:
    """"Type/id" of a Reference (empty when it is not one)."""
    ref = value.get("reference") if isinstance(value, dict) else None
    return consent_rules.ref_key(ref) if isinstance(ref, str) and ref else ""


def _tags(resource: dict[str, Any]) -> list[Any]:
    meta = resource.get("meta")
    tags = meta.get("tag") if isinstance(meta, dict) else None
    return tags if isinstance(tags, list) else []


def _tag_code(resource: dict[str, Any], system: str) -> str | None:
    codes = [t.get("code") for t in _tags(resource) if isinstance(t, dict) and t.get("system") == system]
    return str(codes[0]) if len(codes) == 1 and isinstance(codes[0], str) else None


def _set_tag(resource: dict[str, Any], system: str, code: str) -> bool:
    """Leave exactly one tag of ``system``, with ``code``; True when that changed the resource."""
    tags = _tags(resource)
    if [t for t in tags if isinstance(t, dict) and t.get("system") == system] == [{"system": system, "code": code}]:
        return False
    meta = resource.get("meta")
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta["tag"] = [t for t in tags if not (isinstance(t, dict) and t.get("system") == system)] + [
        {"system": system, "code": code}]
    resource["meta"] = meta
    return True

