"""The record model both portals render (hutong.record): the abnormal-flag
rule as a table, the Encounter–Condition resolution both ways, lab grouping,
trends, and "recent equivalent results elsewhere" (hutong.cds.equivalents).

The same two clinical cases through both portals over HTTP are
tests/ui/test_record_portals.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from hutong.cds.equivalents import recent_equivalents
from hutong.record import Flag, build_record, flag_of, resolve_diagnoses
from hutong.record.flags import COMPARATOR, NO_RANGE, NOT_NUMERIC, UNIT_MISMATCH
from hutong.systems import ID_CARD

INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


def obs(value: float | str | None = None, *, low: float | None = 3.9, high: float | None = 6.1,
        interp: str | None = None, unit: str = "mmol/L", range_unit: str | None = "mmol/L",
        comparator: str | None = None, text: str | None = None) -> dict[str, Any]:
    o: dict[str, Any] = {"resourceType": "Observation", "id": "o1", "status": "final"}
    if isinstance(value, int | float):
        q: dict[str, Any] = {"value": value, "unit": unit}
        if comparator:
            q["comparator"] = comparator
        o["valueQuantity"] = q
    elif isinstance(value, str):
        o["valueString"] = value
    rr: dict[str, Any] = {}
    for k, v in (("low", low), ("high", high)):
        if v is not None:
            rr[k] = {"value": v, **({"unit": range_unit} if range_unit else {})}
    if text:
        rr["text"] = text
    if rr:
        o["referenceRange"] = [rr]
    if interp:
        o["interpretation"] = [{"coding": [{"system": INTERP, "code": interp}]}]
    return o


# (case, observation, verdict, by_range, by_sender, disagree, why the range was not used)
FLAG_TABLE: list[tuple[str, dict[str, Any], str, str, str, bool, str]] = [
    ("in range, sender N", obs(5.0, interp="N"), "N", "N", "N", False, ""),
    ("in range, no interpretation", obs(5.0), "N", "N", "", False, ""),
    ("on the upper bound is in range", obs(6.1), "N", "N", "", False, ""),
    ("out of range high, sender N: both, flagged", obs(7.9, interp="N"), "H", "H", "N", True, ""),
    ("out of range low, sender N: both, flagged", obs(2.0, interp="N"), "L", "L", "N", True, ""),
    ("out of range high, no interpretation", obs(7.9), "H", "H", "", False, ""),
    ("out of range low, no interpretation", obs(3.0), "L", "L", "", False, ""),
    ("out of range high, sender H", obs(7.9, interp="H"), "H", "H", "H", False, ""),
    ("out of range high, sender A agrees", obs(7.9, interp="A"), "H", "H", "A", False, ""),
    ("out of range high, sender L: range shown, flagged", obs(7.9, interp="L"), "H", "H", "L", True, ""),
    ("in range, sender H: sender shown, flagged", obs(5.0, interp="H"), "H", "N", "H", True, ""),
    ("H with no range", obs(7.9, low=None, high=None, interp="H"), "H", "", "H", False, NO_RANGE),
    ("no range, no interpretation: unknown", obs(7.9, low=None, high=None), "", "", "", False, NO_RANGE),
    ("non-numeric, sender POS", obs("阳性", interp="POS"), "A", "", "A", False, NOT_NUMERIC),
    ("non-numeric, sender NEG", obs("阴性", interp="NEG"), "N", "", "N", False, NOT_NUMERIC),
    ("non-numeric, nothing said", obs("见报告"), "", "", "", False, NOT_NUMERIC),
    ("unit mismatch, no interpretation: not compared", obs(140.0, unit="mg/dL"), "", "", "", False,
     UNIT_MISMATCH),
    ("unit mismatch, sender H", obs(140.0, unit="mg/dL", interp="H"), "H", "", "H", False, UNIT_MISMATCH),
    ("range without unit is the value's unit", obs(7.9, range_unit=None), "H", "H", "", False, ""),
    ("upper bound only", obs(5.3, low=None, high=5.2), "H", "H", "", False, ""),
    ("lower bound only", obs(59.0, low=60.0, high=None), "L", "L", "", False, ""),
    ("comparator decides: <2.0 below low", obs(2.0, comparator="<"), "L", "L", "", False, ""),
    ("comparator undecided: <5.0", obs(5.0, comparator="<", interp="N"), "N", "", "N", False, COMPARATOR),
    ("comparator decides: >10 above high", obs(10.0, comparator=">"), "H", "H", "", False, ""),
    ("critical HH", obs(25.0, interp="HH"), "H", "H", "H", False, ""),
    ("unknown sender code says nothing", obs(5.0, interp="IND"), "N", "N", "", False, ""),
]


@pytest.mark.parametrize(("case", "o", "verdict", "by_range", "by_sender", "disagree", "why"), FLAG_TABLE,
                         ids=[row[0] for row in FLAG_TABLE])
def test_flag_rule(case: str, o: dict[str, Any], verdict: str, by_range: str, by_sender: str, disagree: bool,
                   why: str) -> None:
    f = flag_of(o)
    assert (f.verdict, f.by_range, f.by_sender, f.disagree, f.not_compared) == (
        verdict, by_range, by_sender, disagree, why), case


@pytest.mark.parametrize("value", [2.0, 3.0, 6.2, 7.9, 100.0])
@pytest.mark.parametrize("interp", [None, "N", "NEG", "S", "H", "L", "A", "IND"])
def test_outside_the_range_is_never_normal(value: float, interp: str | None) -> None:
    f = flag_of(obs(value, interp=interp))
    assert f.abnormal and f.verdict in ("H", "L") and f.verdict != "N"
    assert f.disagree == (interp in ("N", "NEG", "S") or (interp == "L" and value > 6.1)
                          or (interp == "H" and value < 3.9))


def test_critical_and_v2_flags() -> None:
    assert flag_of(obs(1.0, interp="LL")).critical
    assert not flag_of(obs(3.0, interp="L")).critical
    v2 = obs(7.9)
    v2["interpretation"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0078", "code": "N"}]}]
    assert flag_of(v2).disagree
    local = obs(7.9)
    local["interpretation"] = [{"coding": [{"system": "urn:example:local", "code": "N"}]}]
    assert flag_of(local) == Flag("H", "H", "", "", "", False)  # another system's "N" is not the v3 code


def test_range_text_and_first_normal_range() -> None:
    o = obs(7.9)
    o["referenceRange"] = [{"type": {"coding": [{"code": "treatment"}]}, "low": {"value": 1.0},
                            "high": {"value": 10.0}}, {"low": {"value": 3.9}, "high": {"value": 6.1}}]
    assert flag_of(o).verdict == "H"  # the normal range, not the therapeutic one
    rec = build_record("p", [{"resourceType": "Patient", "id": "p"}, {**o, "subject": {"reference": "Patient/p"}}])
    (x,) = rec.labs
    assert (x.range_text, x.low, x.high, x.value, x.unit) == ("3.9–6.1", 3.9, 6.1, "7.9", "mmol/L")


# ------------------------------------------------------------------ Encounter–Condition
def _enc(eid: str, start: str, *dx: tuple[str, int | None]) -> dict[str, Any]:
    e: dict[str, Any] = {"resourceType": "Encounter", "id": eid, "status": "finished",
                         "subject": {"reference": "Patient/p-a"}, "period": {"start": start},
                         "serviceProvider": {"reference": "Organization/a"}}
    if dx:
        e["diagnosis"] = [{"condition": {"reference": f"Condition/{c}"}, **({"rank": r} if r else {})}
                          for c, r in dx]
    return e


def _cond(cid: str, code: str, name: str, encounter: str | None, recorded: str) -> dict[str, Any]:
    c: dict[str, Any] = {"resourceType": "Condition", "id": cid, "subject": {"reference": "Patient/p-a"},
                         "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": code,
                                              "display": name}]},
                         "clinicalStatus": {"coding": [{"code": "active"}]}, "recordedDate": recorded}
    if encounter:
        c["encounter"] = {"reference": f"Encounter/{encounter}"}
    return c


def test_encounter_conditions_resolved_both_ways() -> None:
    first = _enc("e1", "2025-01-10T09:00:00+08:00")
    # A later visit names the Condition recorded at the first (a chronic problem followed up).
    later = _enc("e2", "2025-06-01T09:00:00+08:00", ("c-htn", 2), ("c-dm", 1), ("c-withheld", None))
    htn = _cond("c-htn", "I10", "原发性高血压", "e1", "2025-01-10")
    dm = _cond("c-dm", "E11.9", "2型糖尿病", "e1", "2025-01-10")
    cold = _cond("c-cold", "J00", "急性鼻咽炎", "e2", "2025-06-01")  # points to the visit only
    out = resolve_diagnoses([first, later], [htn, dm, cold])
    assert [(d.condition_id, d.code, d.rank) for d in out["e2"]] == [
        ("c-dm", "E11.9", 1), ("c-htn", "I10", 2), ("c-cold", "J00", None)]  # by rank, then pointing ones
    assert [d.display for d in out["e1"]] == ["原发性高血压", "2型糖尿病"]  # Condition.encounter -> e1
    # named both ways: once
    both = _enc("e3", "2025-07-01", ("c-x", None))
    assert [d.condition_id for d in resolve_diagnoses([both], [_cond("c-x", "K29", "胃炎", "e3", "")])["e3"]] == \
        ["c-x"]

    rec = build_record("mpi-x", [{"resourceType": "Patient", "id": "p-a",
                                  "managingOrganization": {"reference": "Organization/a"}},
                                 {"resourceType": "Organization", "id": "a", "name": "甲医院"},
                                 first, later, htn, dm, cold])
    assert [e.id for e in rec.encounters] == ["e2", "e1"]
    assert rec.encounters[0].diagnosis_names == ["2型糖尿病", "原发性高血压", "急性鼻咽炎"]
    assert rec.encounters[0].source.name == "甲医院"


# ------------------------------------------------------------------ labs, trends, elsewhere
def _lab(i: int, org: str, day: str, value: float, interp: str | None = None,
         encounter: str | None = None) -> dict[str, Any]:
    o: dict[str, Any] = {
        "resourceType": "Observation", "id": f"o{i}", "subject": {"reference": f"Patient/p-{org}"},
        "category": [{"coding": [{"code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "葡萄糖"}]},
        "effectiveDateTime": day + "T08:00:00+08:00", "valueQuantity": {"value": value, "unit": "mmol/L"},
        "referenceRange": [{"low": {"value": 3.9}, "high": {"value": 6.1}}]}
    if interp:
        o["interpretation"] = [{"coding": [{"code": interp}]}]
    if encounter:
        o["encounter"] = {"reference": f"Encounter/{encounter}"}
    return o


ROWS: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "mpi-x", "name": [{"text": "测试"}], "gender": "female",
     "identifier": [{"system": ID_CARD, "value": "11010519900101002X"}], "link": [
         {"type": "seealso", "other": {"reference": "Patient/p-a"}},
         {"type": "seealso", "other": {"reference": "Patient/p-b"}}]},
    {"resourceType": "Patient", "id": "p-a", "managingOrganization": {"reference": "Organization/a"}},
    {"resourceType": "Patient", "id": "p-b", "managingOrganization": {"reference": "Organization/b"}},
    {"resourceType": "Organization", "id": "a", "name": "甲医院"},
    {"resourceType": "Organization", "id": "b", "name": "乙医院"},
]


def test_labs_grouped_flagged_trended_and_elsewhere() -> None:
    now = datetime(2026, 11, 20, tzinfo=UTC)
    enc = {**_enc("e9", "2026-11-10T08:00:00+08:00"), "subject": {"reference": "Patient/p-b"}}
    report = {"resourceType": "DiagnosticReport", "id": "r1", "subject": {"reference": "Patient/p-b"},
              "code": {"text": "空腹血糖"}, "effectiveDateTime": "2026-11-10T08:00:00+08:00",
              "encounter": {"reference": "Encounter/e9"}, "result": [{"reference": "Observation/o2"}]}
    rows = [*ROWS, _lab(1, "a", "2026-11-18", 5.0), _lab(2, "b", "2026-11-10", 7.9, "N"),
            _lab(3, "b", "2026-09-01", 3.1, "L"), report, enc]
    rec = build_record("mpi-x", rows)
    assert rec.demographics is not None and rec.demographics.id_number_masked == "110105********002X"
    assert [(x.id, x.flag.verdict, x.flag.disagree) for x in rec.labs] == [
        ("o1", "N", False), ("o2", "H", True), ("o3", "L", False)]
    assert [x.source.name for x in rec.labs] == ["甲医院", "乙医院", "乙医院"]
    assert rec.labs[1].panel == "空腹血糖" and rec.labs[1].report_id == "r1"
    # groups: the report with its result; unreported results by institution and day
    assert [(r.id, r.name, [x.id for x in r.results], r.abnormal) for r in rec.reports] == [
        ("obs-o1", "", ["o1"], 0), ("r1", "空腹血糖", ["o2"], 1), ("obs-o3", "", ["o3"], 1)]
    (visit,) = rec.encounters
    assert [r.id for r in visit.reports] == ["r1"]
    (s,) = rec.series
    assert [p.number for p in s.points] == [3.1, 7.9, 5.0]  # oldest first
    (eq,) = recent_equivalents(rec.labs, rec.imaging, "a", now)  # own results are not "elsewhere"; o3 too old
    assert eq.source.name == "乙医院" and eq.value == "7.9 mmol/L" and eq.age_days == 10
    assert {e.ref for e in rec.entries} >= {"Observation/o1", "DiagnosticReport/r1", "Encounter/e9"}


def test_imaging_equivalents_by_modality_within_180_days() -> None:
    now = datetime(2026, 11, 20, tzinfo=UTC)

    def study(i: int, org: str, day: str, mod: str) -> dict[str, Any]:
        return {"resourceType": "ImagingStudy", "id": f"s{i}", "subject": {"reference": f"Patient/p-{org}"},
                "started": day + "T10:00:00+08:00", "modality": [{"code": mod}], "description": f"{mod} 检查"}

    rec = build_record("mpi-x", [*ROWS, study(1, "b", "2026-10-01", "CT"), study(2, "b", "2026-08-01", "CT"),
                                 study(3, "b", "2026-03-01", "MR"), study(4, "a", "2026-11-01", "DX")])
    out = recent_equivalents(rec.labs, rec.imaging, "a", now)
    assert [(e.kind, e.code, e.date[:10]) for e in out] == [("imaging", "CT", "2026-10-01")]


def test_problem_list_merges_institutions() -> None:
    def cond(i: int, org: str, onset: str) -> dict[str, Any]:
        return {"resourceType": "Condition", "id": f"c{i}", "subject": {"reference": f"Patient/p-{org}"},
                "clinicalStatus": {"coding": [{"code": "active"}]}, "onsetDateTime": onset,
                "category": [{"coding": [{"code": "problem-list-item"}]}],
                "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10", "display": "高血压"}]}}

    rec = build_record("mpi-x", [*ROWS, cond(1, "a", "2020-01-01"), cond(2, "b", "2018-05-01")])
    (g,) = rec.problem_list  # one problem, known at two institutions, since the earliest onset
    assert g.code == "I10" and g.onset == "2018-05-01" and {s.name for s in g.sources} == {"甲医院", "乙医院"}


def test_timeline_entries_of_every_shape() -> None:
    doc = {"resourceType": "DocumentReference", "id": "d1", "subject": {"reference": "Patient/p-a"},
           "type": {"coding": [{"code": "C0002", "display": "门（急）诊病历"}]}, "date": "2026-01-02T10:00:00+08:00"}
    allergy = {"resourceType": "AllergyIntolerance", "id": "al1", "patient": {"reference": "Patient/p-a"},
               "type": "allergy", "code": {"text": "青霉素"}, "recordedDate": "2025-03-01"}
    visit = {**_enc("e1", "2025-04-01T09:00:00+08:00"), "type": [{"text": "门诊"}]}
    rec = build_record("mpi-x", [*ROWS, doc, allergy, visit])
    assert [(e.ref, e.label, e.date, e.source.name) for e in rec.entries] == [
        ("DocumentReference/d1", "门（急）诊病历", "2026-01-02", "甲医院"),
        ("Encounter/e1", "门诊", "2025-04-01", "甲医院"),
        ("AllergyIntolerance/al1", "青霉素", "2025-03-01", "甲医院")]


def test_discharge_medications_are_medicines_of_their_visit() -> None:
    """A MedicationStatement (a discharge summary's 出院带药) is a medicine like a
    prescription: its name, the day it was taken from, its dosage and its visit."""
    visit = {**_enc("e9", "2026-03-10T09:00:00+08:00"), "type": [{"text": "住院"}]}
    stated = {"resourceType": "MedicationStatement", "id": "ms1", "status": "active",
              "subject": {"reference": "Patient/p-a"}, "context": {"reference": "Encounter/e9"},
              "medicationCodeableConcept": {"text": "阿司匹林肠溶片"},
              "effectivePeriod": {"start": "2026-03-13T21:30:00+08:00"},
              "dosage": [{"text": "100mg 口服 每日一次"}]}
    asserted = {"resourceType": "MedicationStatement", "id": "ms2", "status": "completed",
                "subject": {"reference": "Patient/p-a"}, "medicationCodeableConcept": {"text": "二甲双胍"},
                "dateAsserted": "2026-02-01"}
    rec = build_record("mpi-x", [*ROWS, visit, stated, asserted])
    by_id = {m.id: m for m in rec.medications}
    ms1, ms2 = by_id["ms1"], by_id["ms2"]
    assert (ms1.name, ms1.authored, ms1.dosage, ms1.encounter_id, ms1.current) == (
        "阿司匹林肠溶片", "2026-03-13", "100mg 口服 每日一次", "e9", True)
    assert (ms2.name, ms2.authored, ms2.current) == ("二甲双胍", "2026-02-01", False)
    assert "阿司匹林肠溶片" in next(e for e in rec.encounters if e.id == "e9").medications
    assert ("MedicationStatement/ms1", "阿司匹林肠溶片", "2026-03-13") in [(e.ref, e.label, e.date) for e in rec.entries]
