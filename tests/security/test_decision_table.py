"""The access rules as a table, without a database (hutong.security.decision).

Each row: who asks (role, scopes), what the row is (type, labels, whose
registration), the basis the caller has for the person, the interaction ->
allow / mask / deny, the purpose recorded or the error code.  The same
functions decide for the running server (hutong.security.policy.Access calls
them with the facts it looked up); tests/security/test_policy.py checks the
same rules end to end through HTTP.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from hutong.security.consent import ConsentDecision
from hutong.security.decision import (
    Basis,
    Effect,
    PatientFacts,
    RowFacts,
    basis_of,
    decide,
    decide_org_write,
    decide_person_write,
    decide_write_role,
    golden_shown_whole,
    treated_here,
)
from hutong.security.principal import Role

INST, C, R, D, CO, AU, OP, PF = (Role.INSTITUTION, Role.CLINICIAN, Role.RESIDENT, Role.DELEGATE, Role.COMMISSION,
                              Role.AUDITOR, Role.OPERATOR, Role.PLATFORM)
ALL = ("system/*.cruds", "user/*.cruds", "patient/*.cruds")
READ_ONLY = ("system/*.rs", "user/*.rs", "patient/*.rs")
OBS_ONLY = ("user/Observation.rs", "system/Observation.rs", "patient/Observation.rs")

NONE = Basis(None, ("PSY", "HIV"))
DENIED = Basis(None, ("PSY", "HIV"), denied=True)
TREAT = Basis("treatment", ("PSY", "HIV"))
CONSENT = Basis("consent", ("PSY", "HIV"))
CONSENT_PSY = Basis("consent", ("HIV",))            # the resident unmasked PSY for this caller
GLASS = Basis("break-glass", ())

OWN = "own"          # the row is in a registration of the caller's institution
OTHER = "other"      # another institution's registration (basis decides)
UNLINKED = "unlinked"  # another institution's registration no person is linked to yet
NOBODY = "nobody"    # in no patient's compartment
MINE = "mine"        # residents/delegates: in their own (or delegated) record
NOT_MINE = "not-mine"
GOLDEN = "golden"    # the golden person's own Patient record

ROWS: list[tuple[Role, tuple[str, ...], str, str, Basis | None, frozenset[str], str, str, str | None]] = [
    # role, scopes, type, whose, basis, labels, interaction -> effect, purpose or code
    # --- institution systems and clinicians: their own registrations
    (INST, ALL, "Observation", OWN, None, frozenset(), "read", "allow", "own-institution"),
    (C, ALL, "Observation", OWN, None, frozenset(), "read", "allow", "own-institution"),
    (C, ALL, "Observation", OWN, None, frozenset({"PSY"}), "read", "allow", "own-institution"),
    (C, ALL, "Condition", OWN, None, frozenset({"HIV"}), "search", "allow", "own-institution"),
    (C, ALL, "Observation", OWN, None, frozenset(), "vread", "allow", "own-institution"),
    (C, ALL, "Observation", OWN, None, frozenset(), "history-instance", "allow", "own-institution"),
    (INST, ALL, "Observation", OWN, NONE, frozenset(), "read", "allow", "own-institution"),
    # --- another institution's record: the basis decides
    (C, ALL, "Observation", OTHER, NONE, frozenset(), "read", "deny", "HT-0103"),
    (INST, ALL, "Observation", OTHER, NONE, frozenset(), "search", "deny", "HT-0103"),
    (C, ALL, "Observation", OTHER, DENIED, frozenset(), "read", "deny", "HT-0103"),
    (C, ALL, "Observation", OTHER, TREAT, frozenset(), "read", "allow", "treatment"),
    (INST, ALL, "Encounter", OTHER, TREAT, frozenset(), "search", "allow", "treatment"),
    (C, ALL, "Observation", OTHER, TREAT, frozenset({"PSY"}), "read", "mask", "HT-0103"),
    (C, ALL, "Observation", OTHER, TREAT, frozenset({"HIV"}), "read", "mask", "HT-0103"),
    (C, ALL, "Observation", OTHER, TREAT, frozenset({"R"}), "read", "allow", "treatment"),  # not a masked category
    (C, ALL, "Observation", OTHER, CONSENT, frozenset(), "read", "allow", "consent"),
    (C, ALL, "Observation", OTHER, CONSENT, frozenset({"PSY"}), "read", "mask", "HT-0103"),
    (C, ALL, "Observation", OTHER, CONSENT_PSY, frozenset({"PSY"}), "read", "allow", "consent"),
    (C, ALL, "Observation", OTHER, CONSENT_PSY, frozenset({"HIV"}), "read", "mask", "HT-0103"),
    (C, ALL, "Observation", OTHER, CONSENT_PSY, frozenset({"PSY", "HIV"}), "read", "mask", "HT-0103"),
    (C, ALL, "Observation", OTHER, GLASS, frozenset(), "read", "allow", "break-glass"),
    (C, ALL, "Observation", OTHER, GLASS, frozenset({"PSY", "HIV"}), "read", "allow", "break-glass"),
    (C, ALL, "Condition", OTHER, GLASS, frozenset({"SEX"}), "search", "allow", "break-glass"),
    (C, ALL, "Observation", UNLINKED, None, frozenset(), "read", "deny", "HT-0103"),
    (C, ALL, "Observation", NOBODY, None, frozenset(), "read", "deny", "HT-0102"),
    (INST, ALL, "Observation", NOBODY, None, frozenset(), "search", "deny", "HT-0102"),
    # --- golden person records: admitted to institution callers (present() cuts them to the card)
    (C, ALL, "Patient", GOLDEN, None, frozenset(), "read", "allow", "identity"),
    (INST, ALL, "Patient", GOLDEN, None, frozenset(), "search", "allow", "identity"),
    # --- scopes come first, whoever asks
    (C, READ_ONLY, "Observation", OWN, None, frozenset(), "read", "allow", "own-institution"),
    (C, READ_ONLY, "Observation", OWN, None, frozenset(), "search", "allow", "own-institution"),
    (C, OBS_ONLY, "Observation", OWN, None, frozenset(), "read", "allow", "own-institution"),
    (C, OBS_ONLY, "Condition", OWN, None, frozenset(), "read", "deny", "HT-0101"),
    (C, OBS_ONLY, "Condition", OTHER, GLASS, frozenset(), "read", "deny", "HT-0101"),
    (INST, (), "Observation", OWN, None, frozenset(), "read", "deny", "HT-0101"),
    (PF, (), "Observation", OWN, None, frozenset(), "read", "deny", "HT-0101"),
    (R, (), "Observation", MINE, None, frozenset(), "read", "deny", "HT-0101"),
    (R, ("patient/Observation.r",), "Observation", MINE, None, frozenset(), "search", "deny", "HT-0101"),
    (R, ("patient/Observation.r",), "Observation", MINE, None, frozenset(), "read", "allow", "own-record"),
    # --- residents and delegates
    (R, ALL, "Observation", MINE, None, frozenset(), "read", "allow", "own-record"),
    (R, ALL, "Observation", MINE, None, frozenset({"PSY"}), "read", "allow", "own-record"),
    (R, ALL, "Condition", MINE, None, frozenset({"HIV"}), "search", "allow", "own-record"),
    (R, ALL, "Observation", NOT_MINE, None, frozenset(), "read", "deny", "HT-0103"),
    (R, ALL, "Observation", NOBODY, None, frozenset(), "read", "deny", "HT-0103"),
    (D, ALL, "Observation", MINE, None, frozenset(), "read", "allow", "delegate"),
    (D, ALL, "Observation", MINE, None, frozenset({"PSY"}), "read", "mask", "HT-0103"),
    (D, ALL, "Condition", MINE, None, frozenset({"HIV"}), "search", "mask", "HT-0103"),
    (D, ALL, "Observation", MINE, None, frozenset({"R"}), "read", "allow", "delegate"),
    (D, ALL, "Observation", NOT_MINE, None, frozenset(), "read", "deny", "HT-0103"),
    # --- commission, auditors, operators: the directory, no records
    (CO, ALL, "Observation", OTHER, None, frozenset(), "read", "deny", "HT-0104"),
    (CO, ALL, "Observation", OTHER, None, frozenset(), "search", "deny", "HT-0104"),
    (AU, ALL, "Condition", OTHER, None, frozenset(), "read", "deny", "HT-0104"),
    (OP, ALL, "Patient", OTHER, None, frozenset(), "read", "deny", "HT-0104"),
    # a committee member approves decision-support knowledge and reads no record (issue 14)
    (Role.COMMITTEE, ALL, "Observation", OTHER, None, frozenset(), "read", "deny", "HT-0104"),
    (CO, ALL, "Organization", NOBODY, None, frozenset(), "search", "allow", "directory"),
    (AU, ALL, "Practitioner", NOBODY, None, frozenset(), "read", "allow", "directory"),
    (OP, ALL, "Location", NOBODY, None, frozenset(), "read", "allow", "directory"),
    (C, ALL, "Organization", NOBODY, None, frozenset(), "read", "allow", "directory"),
    (R, ALL, "Medication", NOBODY, None, frozenset(), "search", "allow", "directory"),
    (OP, READ_ONLY, "Organization", NOBODY, None, frozenset(), "create", "deny", "HT-0101"),
    # --- the platform engine: scopes only
    (PF, ALL, "Observation", OTHER, None, frozenset({"PSY", "HIV"}), "read", "allow", "platform"),
    (PF, ALL, "Observation", NOBODY, None, frozenset(), "search", "allow", "platform"),
    (PF, ALL, "Patient", GOLDEN, None, frozenset(), "read", "allow", "platform"),
    (PF, READ_ONLY, "Observation", OTHER, None, frozenset(), "read", "allow", "platform"),
]


def _facts(role: Role, type: str, whose: str, basis: Basis | None, labels: frozenset[str]) -> RowFacts:
    patients: tuple[PatientFacts, ...] = ()
    if whose == OWN:
        patients = (PatientFacts("p1", own_institution=True),)
    elif whose == OTHER:
        patients = (PatientFacts("p2", basis=basis),)
    elif whose == UNLINKED:
        patients = (PatientFacts("p3", basis=None),)
    elif whose == GOLDEN:
        patients = (PatientFacts("mpi-1", golden_self=True),)
    hide = frozenset({"PSY", "HIV", "SEX"}) if role is Role.DELEGATE else frozenset()
    return RowFacts(role=role, type=type, labels=labels, in_own_record=whose == MINE, delegate_hide=hide,
                    patients=patients, ref=f"{type}/x")


@pytest.mark.parametrize(("role", "scopes", "type", "whose", "basis", "labels", "interaction", "effect", "then"),
                         ROWS, ids=[f"{r[0].value}-{r[2]}-{r[3]}-{r[4].purpose if r[4] else '-'}-"
                                    f"{'+'.join(sorted(r[5])) or 'plain'}-{r[6]}-{n}" for n, r in enumerate(ROWS)])
def test_read_decision(role: Role, scopes: tuple[str, ...], type: str, whose: str, basis: Basis | None,
                       labels: frozenset[str], interaction: str, effect: str, then: str | None) -> None:
    d = decide(_facts(role, type, whose, basis, labels), scopes, interaction)
    assert d.effect is Effect(effect), d
    if d.effect is Effect.ALLOW:
        assert d.purpose == then and d.code is None
    else:
        assert d.code == then and d.purpose is None
        assert d.refusal().code == then and d.refusal().status == 403


def test_the_table_covers_every_role_and_effect() -> None:
    assert {r[0] for r in ROWS} == set(Role)
    assert {r[7] for r in ROWS} == {e.value for e in Effect}
    assert len(ROWS) >= 60


def test_a_row_of_several_patients_takes_the_first_that_allows() -> None:
    f = RowFacts(role=C, type="Observation", patients=(
        PatientFacts("a", basis=NONE), PatientFacts("b", basis=TREAT), PatientFacts("c", own_institution=True)))
    d = decide(f, ALL, "read")
    assert (d.effect, d.purpose, d.patient) == (Effect.ALLOW, "treatment", "b")
    # a denial and a mask: the last refusal is the one told
    f = RowFacts(role=C, type="Observation", labels=frozenset({"PSY"}),
                 patients=(PatientFacts("a", basis=NONE), PatientFacts("b", basis=TREAT)))
    assert decide(f, ALL, "read").effect is Effect.MASK


def test_a_task_addressed_to_the_institution_is_its_own() -> None:
    f = RowFacts(role=INST, type="Task", task_to_caller=True)
    assert decide(f, ALL, "read").purpose == "own-institution"
    assert decide(RowFacts(role=INST, type="Task"), ALL, "read").code == "HT-0102"


def test_a_refusal_tells_a_denied_resident_from_a_missing_basis() -> None:
    denied = decide(_facts(C, "Observation", OTHER, DENIED, frozenset()), ALL, "read")
    missing = decide(_facts(C, "Observation", OTHER, NONE, frozenset()), ALL, "read")
    assert "refused your access" in denied.message
    assert "break-glass" in missing.message and "30 days" in missing.message


# ------------------------------------------------------------------ the basis
NO_CONSENT = ConsentDecision()
PERMIT = ConsentDecision(permit=True, consent_ids=["c1"])
PERMIT_PSY = ConsentDecision(permit=True, unmasked={"PSY"}, consent_ids=["c1"])
DENY = ConsentDecision(deny=True)
MASK_R = ConsentDecision(permit=True, masked={"R"})

BASIS_ROWS: list[tuple[str | None, ConsentDecision, bool, str | None, tuple[str, ...], bool]] = [
    # glass grant, consents, treated -> purpose, hidden labels, denied
    (None, NO_CONSENT, False, None, ("PSY", "HIV"), False),
    (None, NO_CONSENT, True, "treatment", ("PSY", "HIV"), False),
    (None, PERMIT, False, "consent", ("PSY", "HIV"), False),
    (None, PERMIT, True, "consent", ("PSY", "HIV"), False),
    (None, PERMIT_PSY, False, "consent", ("HIV",), False),
    (None, MASK_R, False, "consent", ("PSY", "HIV", "R"), False),
    (None, DENY, True, None, ("PSY", "HIV"), True),     # a deny overrides treatment
    (None, DENY, False, None, ("PSY", "HIV"), True),
    ("g1", DENY, False, "break-glass", (), False),      # only break-glass overrides a deny
    ("g1", NO_CONSENT, True, "break-glass", (), False),
]


@pytest.mark.parametrize(("glass", "consent", "treated", "purpose", "hide", "denied"), BASIS_ROWS)
def test_basis(glass: str | None, consent: ConsentDecision, treated: bool, purpose: str | None,
               hide: tuple[str, ...], denied: bool) -> None:
    b = basis_of(glass=glass, consent=consent, treated=treated, sensitive_labels=("psy", "HIV"))
    assert (b.purpose, b.hide, b.denied) == (purpose, hide, denied)


def test_golden_records_are_whole_only_with_a_basis() -> None:
    assert not golden_shown_whole(C, NONE) and not golden_shown_whole(INST, DENIED)
    assert golden_shown_whole(C, TREAT) and golden_shown_whole(INST, GLASS)
    assert golden_shown_whole(PF, NONE) and golden_shown_whole(R, NONE)


# ------------------------------------------------------------------ the treatment relationship
NOW = datetime(2026, 6, 15, 12, tzinfo=UTC)
ME = {"Organization/o1", "Practitioner/d1"}


def enc(status: str, start: str, end: str = "", subject: str = "pMine", provider: str | None = "o1",
        entered: bool = False) -> tuple[str, dict[str, Any]]:
    b: dict[str, Any] = {"status": status, "subject": {"reference": f"Patient/{subject}"},
                         "period": {"start": start, **({"end": end} if end else {})}}
    if provider:
        b["serviceProvider"] = {"reference": f"Organization/{provider}"}
    if entered:
        b["meta"] = {"tag": [{"system": "https://fhir.hutong.dev/CodeSystem/entered-by", "code": "clinician"}]}
    return "Encounter", b


def ref(status: str, authored: str, performer: str = "Organization/o1",
        subject: str = "pOther") -> tuple[str, dict[str, Any]]:
    return "ServiceRequest", {"status": status, "authoredOn": authored, "subject": {"reference": f"Patient/{subject}"},
                              "performer": [{"reference": performer}]}


TREATMENT_ROWS = [
    (enc("finished", "2026-06-10", "2026-06-10"), True),
    (enc("finished", "2026-04-01", "2026-04-01"), False),               # outside 30 days
    (enc("finished", "2026-07-01", "2026-07-01"), False),               # in the future
    (enc("in-progress", "2026-06-15"), True),
    (enc("in-progress", "2026-08-01"), False),                          # starts in the future
    (enc("planned", "2026-06-10"), False),
    (enc("cancelled", "2026-06-10", "2026-06-10"), False),
    (enc("finished", "2026-06-10", "2026-06-10", entered=True), False),  # a clinician typed it in
    (enc("finished", "2026-06-10", "2026-06-10", provider="o2"), False),  # another institution's visit
    (enc("finished", "2026-06-10", "2026-06-10", provider=None), True),
    (enc("finished", "2026-06-10", "2026-06-10", subject="pOther"), False),  # not in my registration
    (ref("active", "2026-06-01"), True),                                # a referral to me by someone else
    (ref("completed", "2026-06-01", "Practitioner/d1"), True),
    (ref("active", "2026-06-01", "Organization/o2"), False),
    (ref("draft", "2026-06-01"), False),
    (ref("active", "2026-01-01"), False),                               # too old
    (ref("active", "2026-06-01", subject="pMine"), False),              # my own order
]


@pytest.mark.parametrize(("event", "treated"), TREATMENT_ROWS)
def test_treatment_relationship(event: tuple[str, dict[str, Any]], treated: bool) -> None:
    assert treated_here([event], mine={"pMine"}, org="o1", actor_refs=ME, now=NOW, window_days=30) is treated


# The window in the region's days (the policy's now is Beijing time): 01:00 on 06-16 in
# Beijing is 17:00 UTC on 06-15; the 30-day window starts on 05-17 (Beijing).
NOW_BEIJING = datetime(2026, 6, 16, 1, tzinfo=timezone(timedelta(hours=8)))
REGION_DAY_ROWS = [
    (enc("finished", "2026-05-16T16:30:00Z", "2026-05-16T16:30:00Z"), True),        # 05-17 00:30 in Beijing
    (enc("finished", "2026-05-16T23:00:00+08:00", "2026-05-16T23:00:00+08:00"), False),  # 05-16: 31 days ago
    (enc("finished", "2026-05-17T00:10:00+08:00", "2026-05-17T00:10:00+08:00"), True),
    (enc("finished", "2026-05-17", "2026-05-17"), True),                              # a date: as written
    (ref("active", "2026-05-16T17:00:00Z"), True),                                    # 05-17 01:00 in Beijing
    (ref("active", "2026-05-16T08:00:00+08:00"), False),
]


@pytest.mark.parametrize(("event", "treated"), REGION_DAY_ROWS)
def test_treatment_window_counts_the_regions_days(event: tuple[str, dict[str, Any]], treated: bool) -> None:
    assert treated_here([event], mine={"pMine"}, org="o1", actor_refs=ME, now=NOW_BEIJING,
                        window_days=30) is treated


# ------------------------------------------------------------------ writes
WRITE_ROWS = [
    # role, type, correction, has_org -> effect, purpose or code
    (PF, "Observation", False, False, "allow", "platform"),
    (INST, "Observation", False, True, "allow", "own-institution"),
    (C, "Encounter", False, True, "allow", "own-institution"),
    (C, "Encounter", False, False, "deny", "HT-0104"),
    (R, "Consent", False, False, "allow", "own-record"),
    (D, "Consent", False, False, "allow", "delegate"),
    (R, "Task", True, False, "allow", "own-record"),
    (R, "Task", False, False, "deny", "HT-0104"),
    (R, "Observation", False, False, "deny", "HT-0104"),
    (D, "Condition", False, False, "deny", "HT-0104"),
    (CO, "Observation", False, False, "deny", "HT-0104"),
    (AU, "Consent", False, False, "deny", "HT-0104"),
    (OP, "Patient", False, False, "deny", "HT-0104"),
]


@pytest.mark.parametrize(("role", "type", "correction", "has_org", "effect", "then"), WRITE_ROWS)
def test_write_role(role: Role, type: str, correction: bool, has_org: bool, effect: str, then: str) -> None:
    d = decide_write_role(role, type, correction=correction, has_org=has_org)
    assert d.effect is Effect(effect)
    assert (d.purpose if d.allowed else d.code) == then


def test_writes_are_about_ones_own_patients() -> None:
    assert decide_org_write("Observation", {"p1": "o1"}, "o1").allowed
    assert decide_org_write("Observation", {"p1": "o1", "p2": "o2"}, "o1").code == "HT-0102"
    assert decide_org_write("Observation", {"p1": None}, "o1").code == "HT-0102"
    assert decide_org_write("Observation", {}, "o1").code == "HT-0102"
    assert decide_person_write({"p1"}, set(), {"p1", "mpi-1"}).allowed
    assert decide_person_write({"p1", "p9"}, set(), {"p1"}).code == "HT-0103"
    assert decide_person_write({"p1"}, {"p9"}, {"p1"}).code == "HT-0103"   # it was someone else's
    assert decide_person_write(set(), set(), {"p1"}).code == "HT-0103"
