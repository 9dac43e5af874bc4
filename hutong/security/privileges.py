"""Clinical privileges of a clinician's post, for the CDS layer (issue 6).

The 2018 notice requires privilege control: prescribing right (处方权),
antibiotic tier (抗菌药物分级管理, 卫生部令第84号: 非限制使用级 for 住院医师 and
up, 限制使用级 for 主治医师 and up, 特殊使用级 for 副主任/主任医师, never in
outpatient care and only after consultation) and surgery grade (手术分级,
国卫办医政发〔2022〕18号: granted per physician, not by title).  They are
recorded on PractitionerRole as extensions (hutong.systems: PRESCRIBING_EXT,
ANTIBIOTIC_TIER_EXT, SURGERY_GRADE_EXT); this module reads them and answers
"may this post order that?".  Decisions carry a reason a CDS card can show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hutong.systems import ANTIBIOTIC_TIER_EXT, PRESCRIBING_EXT, SURGERY_GRADE_EXT

TIER_CODES = {"non-restricted": 1, "restricted": 2, "special": 3}
TIER_NAMES = {1: "非限制使用级", 2: "限制使用级", 3: "特殊使用级"}


@dataclass(frozen=True)
class Privileges:
    practitioner_role_id: str | None
    active: bool
    prescribing: bool          # 处方权
    antibiotic_tier: int       # highest tier the post may order (0: none)
    surgery_grade: int         # highest surgery grade the post may perform (0: none)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str                # for the clinician (zh-CN first), names the rule


def _ext(role: dict[str, Any], url: str) -> dict[str, Any] | None:
    for e in role.get("extension") or []:
        if isinstance(e, dict) and e.get("url") == url:
            return e
    return None


def privileges_of(role: dict[str, Any]) -> Privileges:
    """Read a PractitionerRole's privileges; anything unstated is not granted."""
    presc = _ext(role, PRESCRIBING_EXT)
    tier_ext = _ext(role, ANTIBIOTIC_TIER_EXT)
    grade_ext = _ext(role, SURGERY_GRADE_EXT)
    tier = TIER_CODES.get(str(((tier_ext or {}).get("valueCoding") or {}).get("code")), 0)
    grade_code = str(((grade_ext or {}).get("valueCoding") or {}).get("code") or "0")
    return Privileges(
        practitioner_role_id=role.get("id") if isinstance(role.get("id"), str) else None,
        active=role.get("active", True) is not False,
        prescribing=bool((presc or {}).get("valueBoolean", False)),
        antibiotic_tier=tier,
        surgery_grade=int(grade_code) if grade_code.isdigit() and 0 <= int(grade_code) <= 4 else 0,
    )


def may_order_antibiotic(p: Privileges, tier: int, *, inpatient: bool, consulted: bool = False) -> Decision:
    """卫生部令第84号 Art. 24-28: tier by title; special tier inpatient-only, after consultation."""
    if not p.active:
        return Decision(False, "该执业岗位已停用 (PractitionerRole inactive)")
    if not p.prescribing:
        return Decision(False, "无处方权 (no prescribing right)")
    if tier <= 0:
        return Decision(True, "非抗菌药物")
    if p.antibiotic_tier < tier:
        have = TIER_NAMES.get(p.antibiotic_tier, "无抗菌药物处方权")
        return Decision(False, f"{TIER_NAMES[tier]}抗菌药物超出本岗位权限（{have}）")
    if tier == 3 and not inpatient:
        return Decision(False, "特殊使用级抗菌药物不得在门诊使用")
    if tier == 3 and not consulted:
        return Decision(False, "特殊使用级抗菌药物须经抗菌药物管理工作组指定专业技术人员会诊同意")
    return Decision(True, f"{TIER_NAMES[tier]}：本岗位权限内")


def may_perform_surgery(p: Privileges, grade: int) -> Decision:
    if not p.active:
        return Decision(False, "该执业岗位已停用 (PractitionerRole inactive)")
    if not 1 <= grade <= 4:
        return Decision(False, f"未知手术级别 {grade}")
    if p.surgery_grade < grade:
        return Decision(False, f"{grade}级手术超出本岗位授权（最高{p.surgery_grade}级）" if p.surgery_grade
                        else f"{grade}级手术：本岗位无手术授权")
    return Decision(True, f"{grade}级手术：本岗位授权内")
