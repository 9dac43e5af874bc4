"""Clinically coherent synthetic data (issue 16, item 11): a blood count whose
red-cell indices agree (WS/T 405-2012: Hct = RBC x MCV, Hb = RBC x MCH,
MCHC = Hb / Hct), a visit to 急诊医学科 typed as an emergency (v3 ActCode EMER),
and an operation in a department of its specialty (a gastrectomy is not done
under 骨科)."""

from __future__ import annotations

from pathlib import Path

import orjson

from hutong.synth import SynthConfig, build_region, iter_residents
from hutong.synth import departments as dp
from hutong.synth.care import EMER
from hutong.synth.sampling import stream

CBC = "58410-2"
RBC, HGB, HCT, MCV, MCH, MCHC = "789-8", "718-7", "4544-3", "787-2", "785-6", "786-4"


def test_blood_counts_add_up(small_region: Path) -> None:
    values: dict[str, float] = {}
    for line in (small_region / "Observation.ndjson").read_bytes().splitlines():
        o = orjson.loads(line)
        if "valueQuantity" in o:
            values[o["id"]] = float(o["valueQuantity"]["value"])
    codes = {}
    for line in (small_region / "Observation.ndjson").read_bytes().splitlines():
        o = orjson.loads(line)
        codes[o["id"]] = o["code"]["coding"][0]["code"]
    checked = 0
    for line in (small_region / "DiagnosticReport.ndjson").read_bytes().splitlines():
        dr = orjson.loads(line)
        if dr["code"]["coding"][0]["code"] != CBC:
            continue
        v = {codes[r["reference"].split("/")[1]]: values[r["reference"].split("/")[1]] for r in dr["result"]
             if r["reference"].split("/")[1] in values}
        # Tolerances are the reported values' rounding (Hb whole g/L, Hct 0.1 %, RBC 0.01, MCV/MCH 0.1).
        assert abs(v[RBC] * v[MCV] / 10 - v[HCT]) <= 0.15, v
        assert abs(v[RBC] * v[MCH] - v[HGB]) <= 1.0, v
        assert abs(v[HGB] / v[HCT] * 100 - v[MCHC]) <= 2.5, v
        checked += 1
    assert checked > 20


def _plans(cfg: SynthConfig) -> list[object]:
    region = build_region(cfg)
    rng = stream(cfg.seed, "realism")
    visits = []
    for chunk in iter_residents(cfg):
        for r in chunk:
            visits += region.planner.plan(rng, r).visits
    return visits


def test_emergency_departments_see_emergencies_and_operations_fit_their_specialty() -> None:
    visits = _plans(SynthConfig(residents=6000, institutions=40, seed=16))
    er = [v for v in visits if v.dept.code == dp.EMERGENCY.code]  # type: ignore[attr-defined]
    assert er and all(v.cls == EMER for v in er)  # type: ignore[attr-defined]
    operated = [v for v in visits if v.procedures  # type: ignore[attr-defined]
                and any(d.key.endswith("-cancer") for d in v.diagnoses)]  # type: ignore[attr-defined]
    assert operated
    wrong = [(v.diagnoses[0].name, v.dept.name) for v in operated  # type: ignore[attr-defined]
             if v.dept.code not in (dp.GENERAL_SURGERY.code, dp.SURGERY.code, dp.GYNAECOLOGY.code)]  # type: ignore[attr-defined]
    assert not wrong, wrong[:5]


def test_an_infectious_disease_hospital_has_patients() -> None:
    """A 传染病医院 treats chronic hepatitis B and HIV: more than a handful of patients a year."""
    cfg = SynthConfig(residents=6000, institutions=40, seed=16)
    region = build_region(cfg)
    rng = stream(cfg.seed, "realism")
    patients: set[str] = set()
    for chunk in iter_residents(cfg):
        for r in chunk:
            for v in region.planner.plan(rng, r).visits:
                if v.inst.archetype.specialty == "infectious":
                    patients.add(r.key)
    per_thousand_a_year = len(patients) * 1000 / cfg.residents / cfg.years
    assert per_thousand_a_year >= 4, per_thousand_a_year
