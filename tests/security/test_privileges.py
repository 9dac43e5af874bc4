"""Clinical privileges from PractitionerRole (hutong.security.privileges), read
from the posts the synthetic region generates."""

from __future__ import annotations

import random

from hutong.security.privileges import (
    Privileges,
    may_order_antibiotic,
    may_perform_surgery,
    privileges_of,
)
from hutong.systems import ANTIBIOTIC_TIER_EXT, ANTIBIOTIC_TIER_SYSTEM, PRESCRIBING_EXT, SURGERY_GRADE_EXT


def role(title_tier: int | None, prescribing: bool = True, grade: int | None = None) -> dict[str, object]:
    ext: list[dict[str, object]] = [{"url": PRESCRIBING_EXT, "valueBoolean": prescribing}]
    if title_tier:
        code = {1: "non-restricted", 2: "restricted", 3: "special"}[title_tier]
        ext.append({"url": ANTIBIOTIC_TIER_EXT, "valueCoding": {"system": ANTIBIOTIC_TIER_SYSTEM, "code": code}})
    if grade:
        ext.append({"url": SURGERY_GRADE_EXT, "valueCoding": {"code": str(grade)}})
    return {"resourceType": "PractitionerRole", "id": "r1", "active": True, "extension": ext}


def test_resident_doctor_cannot_order_a_special_use_antibiotic() -> None:
    resident = privileges_of(role(1))
    assert resident.antibiotic_tier == 1 and resident.prescribing
    assert may_order_antibiotic(resident, 1, inpatient=False).allowed
    d = may_order_antibiotic(resident, 3, inpatient=True, consulted=True)
    assert not d.allowed and "特殊使用级" in d.reason
    assert not may_order_antibiotic(resident, 2, inpatient=True).allowed


def test_chief_physician_special_tier_needs_ward_and_consultation() -> None:
    chief = privileges_of(role(3, grade=4))
    assert not may_order_antibiotic(chief, 3, inpatient=False, consulted=True).allowed
    assert not may_order_antibiotic(chief, 3, inpatient=True, consulted=False).allowed
    assert may_order_antibiotic(chief, 3, inpatient=True, consulted=True).allowed
    assert may_perform_surgery(chief, 4).allowed


def test_unstated_privileges_are_not_granted() -> None:
    bare = privileges_of({"resourceType": "PractitionerRole", "id": "x"})
    assert bare == Privileges("x", True, False, 0, 0)
    assert not may_order_antibiotic(bare, 0, inpatient=False).allowed  # no prescribing right at all
    assert not may_perform_surgery(bare, 1).allowed
    inactive = privileges_of({**role(3, grade=4), "active": False})
    assert not may_order_antibiotic(inactive, 1, inpatient=True).allowed


def test_surgery_grade_is_per_post_not_by_title() -> None:
    p = privileges_of(role(2, grade=2))
    assert may_perform_surgery(p, 2).allowed and not may_perform_surgery(p, 3).allowed


def test_generated_posts_read_back_as_generated() -> None:
    # The synthetic region writes these extensions (hutong.synth.practitioners):
    # whatever it grants must be what this module reads.
    from hutong.synth import institutions, practitioners
    from hutong.synth.regions import DISTRICTS

    rng = random.Random(3)
    seen = 0
    for inst in institutions.build(6, DISTRICTS, rng):
        by_id: dict[str, dict[str, object]] = {}
        for phys in practitioners.staff(inst, rng):
            for r in phys.roles:
                by_id[r["id"]] = r
        for roles in inst.roles_by_department.values():
            for granted in roles:
                p = privileges_of(by_id[granted.id])
                assert (p.prescribing, p.antibiotic_tier, p.surgery_grade) == (
                    granted.prescribing, granted.antibiotic_tier, granted.surgery_grade)
                seen += 1
    assert seen > 20
