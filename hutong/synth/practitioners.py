"""Physicians (Practitioner) and their posts (PractitionerRole) at each institution.

Titles are the four clinical 职称 (住院医师 < 主治医师 < 副主任医师 < 主任医师).
Privileges are modelled per physician, as the rules require:

- 处方权 (prescribing right): most physicians; residents in their first
  years (规培) often do not yet have it.
- 抗菌药物处方权 tier (卫生部令第84号 §24): 非限制使用级 from 初级 (住院医师),
  限制使用级 from 中级 (主治医师), 特殊使用级 from 高级 (副主任/主任医师); primary
  care does not grant 特殊使用级.
- 手术分级 (国卫办医政发〔2022〕18号): the maximum grade a surgeon may perform,
  granted per surgeon (correlated with, not set by, title); grade 4 only in
  三级 hospitals.

Qualification and licence numbers follow the structure published for the
医师资格证书编码 (27 digits: year, province, level, category, ID number) and
the 医师执业证书编码 (15 digits); that structure is unconfirmed, so treat the
numbers as opaque identifiers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date
from typing import Any

from hutong.synth import idcard, names
from hutong.synth.catalog.drugs import TIER_SYSTEM, TIERS
from hutong.synth.departments import Department
from hutong.synth.institutions import Institution
from hutong.systems import (
    ANTIBIOTIC_TIER_EXT,
    CODESYSTEM_BASE,
    PRACTITIONER_LICENSE,
    PRACTITIONER_QUALIFICATION,
    PRESCRIBING_EXT,
    SURGERY_GRADE_EXT,
    SURGERY_GRADE_SYSTEM,
)

TITLE_SYSTEM = CODESYSTEM_BASE + "physician-title"
QUALIFICATION_SYSTEM = CODESYSTEM_BASE + "physician-qualification"

# rank -> (code, 中文)
TITLES: dict[int, tuple[str, str]] = {
    1: ("resident", "住院医师"),
    2: ("attending", "主治医师"),
    3: ("associate-chief", "副主任医师"),
    4: ("chief", "主任医师"),
}
SURGERY_GRADES: dict[int, str] = {1: "一级手术", 2: "二级手术", 3: "三级手术", 4: "四级手术"}


def grade_coding(grade: int) -> dict[str, str]:
    return {"system": SURGERY_GRADE_SYSTEM, "code": str(grade), "display": SURGERY_GRADES[grade]}


def tier_coding(tier: int) -> dict[str, str]:
    code, name = TIERS[tier]
    return {"system": TIER_SYSTEM, "code": code, "display": name}


@dataclass(slots=True)
class Role:
    """One physician's post at one institution, with what the generator needs to pick them."""

    id: str  # PractitionerRole.id
    practitioner_id: str
    name: str
    rank: int  # TITLES key
    department: Department
    prescribing: bool
    antibiotic_tier: int  # 0 none, else TIERS key
    surgery_grade: int  # 0 none, else 1-4
    reference: dict[str, str]  # Practitioner reference, shared by every resource citing them


@dataclass(slots=True)
class Physician:
    practitioner: dict[str, Any]
    roles: list[dict[str, Any]]


def staff(inst: Institution, rng: random.Random) -> list[Physician]:
    """Physicians of one institution; fills ``inst.roles_by_department``."""
    arch = inst.archetype
    hospital = arch.hospital
    max_rank = 4 if arch.tertiary else 3 if arch.level in ("2", "chc") else 2
    out: list[Physician] = []
    k = 0
    for dept in inst.departments:
        roles: list[Role] = []
        for slot in range(arch.per_department):
            k += 1
            # Slot 0 is the department's senior; later slots are juniors.
            if slot == 0:
                rank = max_rank if rng.random() < 0.6 else max(1, max_rank - 1)
            else:
                rank = 1 + int(rng.random() * min(2, max_rank))
            phys, role = _physician(inst, dept, rank, k, hospital, rng)
            roles.append(role)
            out.append(phys)
        inst.roles_by_department[dept.code] = roles
    return out


def _physician(inst: Institution, dept: Department, rank: int, k: int, hospital: bool,
               rng: random.Random) -> tuple[Physician, Role]:
    sex = "male" if rng.random() < 0.45 else "female"  # most Chinese physicians are women
    age = 26 + 4 * rank + int(rng.random() * 10)
    birth_year = 2026 - age
    surname, given = names.draw_chinese(rng, sex, birth_year)
    full = surname + given
    pid = f"prac-{inst.index + 1:04d}-{k:03d}"
    # A physician's own ID number only feeds the qualification number.
    seq = (2 * int(rng.random() * 499) + (1 if sex == "male" else 2)) % 1000
    own_id = idcard.make(inst.district.code, date(birth_year, 1 + int(rng.random() * 12), 1 + int(rng.random() * 28)), seq)
    qual_year = birth_year + 24 + int(rng.random() * 3)
    category = "21" if dept.code == "50" else "11"  # 中医 / 临床
    qualification = f"{qual_year}112{category}{own_id}"  # year, 北京, 执业医师, category, ID
    licence = f"1{category}{inst.district.code}{int(rng.random() * 1_000_000):06d}"

    prescribing = rank > 1 or rng.random() < 0.85
    tier = min(rank, 3)
    if not hospital or inst.level == "1":
        tier = min(tier, 2)
    if tier > 1 and rng.random() < 0.05:
        tier -= 1  # not yet trained/assessed for the higher tier
    if not prescribing:
        tier = 0
    grade = 0
    if dept.surgical and hospital:
        grade = max(1, min(4, rank + (0 if rng.random() < 0.7 else -1)))
        if not inst.archetype.tertiary:
            grade = min(grade, 3)

    ref = {"reference": f"Practitioner/{pid}", "display": full}
    title_code, title_name = TITLES[rank]
    practitioner: dict[str, Any] = {
        "resourceType": "Practitioner",
        "id": pid,
        "identifier": [
            {"system": PRACTITIONER_QUALIFICATION, "value": qualification},
            {"system": PRACTITIONER_LICENSE, "value": licence},
        ],
        "active": True,
        "name": [{"use": "official", "text": full, "family": surname, "given": [given]}],
        "gender": sex,
        "qualification": [
            {"identifier": [{"system": PRACTITIONER_QUALIFICATION, "value": qualification}],
             "code": {"coding": [{"system": QUALIFICATION_SYSTEM, "code": "qualification",
                                  "display": "医师资格证书"}], "text": "医师资格证书"}},
            {"identifier": [{"system": PRACTITIONER_LICENSE, "value": licence}],
             "code": {"coding": [{"system": QUALIFICATION_SYSTEM, "code": "licence",
                                  "display": "医师执业证书"}], "text": "医师执业证书"},
             "issuer": {"display": f"北京市{inst.district.name}卫生健康委员会"}},
        ],
    }
    ext: list[dict[str, Any]] = [{"url": PRESCRIBING_EXT, "valueBoolean": prescribing}]
    if tier:
        ext.append({"url": ANTIBIOTIC_TIER_EXT, "valueCoding": tier_coding(tier)})
    if grade:
        ext.append({"url": SURGERY_GRADE_EXT, "valueCoding": grade_coding(grade)})
    role_res: dict[str, Any] = {
        "resourceType": "PractitionerRole",
        "id": f"role-{inst.index + 1:04d}-{k:03d}",
        "extension": ext,
        "active": True,
        "practitioner": ref,
        "organization": inst.reference,
        "code": [{"coding": [{"system": TITLE_SYSTEM, "code": title_code, "display": title_name}],
                  "text": title_name}],
        "specialty": [dept.concept],
    }
    role = Role(role_res["id"], pid, full, rank, dept, prescribing, tier, grade, ref)
    return Physician(practitioner, [role_res]), role
