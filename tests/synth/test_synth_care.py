"""Care planning at population scale (plans only, no resources): realistic rates of what matters."""

from __future__ import annotations

from collections import Counter

from hutong.synth import SynthConfig, build_region, iter_residents
from hutong.synth.sampling import stream

CFG = SynthConfig(residents=12000, institutions=60, seed=21)


def test_population_rates() -> None:
    region = build_region(CFG)
    rng = stream(CFG.seed, "plan-test")
    n = 0
    security: Counter[str] = Counter()
    people: Counter[str] = Counter()
    classes: Counter[str] = Counter()
    institutions_per_resident = 0
    for chunk in iter_residents(CFG):
        for r in chunk:
            plan = region.planner.plan(rng, r)
            n += 1
            labels = {v.security or next((d.security for d in v.diagnoses if d.security), None) for v in plan.visits}
            for label in labels - {None}:
                people[str(label)] += 1
            for v in plan.visits:
                classes[v.cls] += 1
                if v.security:
                    security[v.security] += 1
            institutions_per_resident += len({v.inst.index for v in plan.visits} | {i.inst.index for i in plan.immunizations})
            assert plan.visits, "every resident is seen at least once"
            assert all(v.day < CFG.today.toordinal() and v.end_day < CFG.today.toordinal() for v in plan.visits)
    years = CFG.years
    # Sensitive care, share of residents (rough targets: psychiatric care ~2.6%, HIV ~0.09%, reproductive ~2-5%).
    assert 0.015 < people["PSY"] / n < 0.04
    assert 0 < people["HIV"] / n < 0.003
    assert 0.01 < people["SEX"] / n < 0.07
    # Encounters per 100 residents per year: outpatient hundreds, emergency tens, admissions several.
    assert 250 < classes["AMB"] * 100 / n / years < 700
    assert 8 < classes["EMER"] * 100 / n / years < 40
    assert 4 < classes["IMP"] * 100 / n / years < 20
    assert 1.8 < institutions_per_resident / n < 4.5
