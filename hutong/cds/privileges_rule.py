"""Privilege control at ordering and signing (seed 004, 国卫办医发〔2018〕20号): 处方权, 抗菌药物分级, 手术分级.

For each draft order of an order-select (the selected ones) or order-sign call:

- a MedicationRequest needs the prescribing right, and an antibiotic needs a tier
  the post holds; the special tier (特殊使用级) only for inpatients and only after
  consultation (《抗菌药物临床应用管理办法》 卫生部令第84号 §24-§28);
- a ServiceRequest for an operation (its grade in the ``SURGERY_GRADE_EXT``
  extension) needs a surgery grade the post was granted (《医疗机构手术分级管理办法》
  国卫办医政发〔2022〕18号: granted per physician).

Privileges come from the stored PractitionerRole of context.userId
(:attr:`hutong.cds.cards.HookRequest.user_role`, via hutong.security.privileges),
never from the request.  A drug's tier is the higher of the catalogue's (by ATC code:
a draft that leaves its tier out still meets the rule) and the one the order states.
Whether the order is inpatient: the order's category (``inpatient``) or the
context's Encounter class (IMP, ACUTE, NONAC).  Consultation: the order carries
:data:`ANTIBIOTIC_CONSULT_EXT` (a reference to the consultation, or true).

Configuration (:class:`PrivilegeConfig`: hard stop or warning per check, the tier
catalogue): the committee-approved version in force (hutong.cds.safety_config, four-eyes
like every decision-support knowledge), else the built-in defaults; the card names which.
"""

from __future__ import annotations

from typing import Any

from hutong.cds.cards import (
    ORDER_SELECT,
    ORDER_SIGN,
    Card,
    Coding,
    HookRequest,
    RuleContext,
    Source,
    order_name,
    remove_order,
)
from hutong.cds.safety_config import DEFAULT_TIERS, Action, PrivilegeConfig, in_force, region_day
from hutong.security.privileges import (
    TIER_CODES,
    Decision,
    may_order_antibiotic,
    may_perform_surgery,
    privileges_of,
)
from hutong.systems import ANTIBIOTIC_TIER_EXT, EXT_BASE, SURGERY_GRADE_EXT

ATC_SYSTEM = "http://www.whocc.no/atc"
ANTIBIOTIC_CONSULT_EXT = EXT_BASE + "antibiotic-consultation"
INPATIENT_CLASSES = frozenset({"IMP", "ACUTE", "NONAC"})
__all__ = ["ANTIBIOTIC_CONSULT_EXT", "DEFAULT_TIERS", "PrivilegeConfig", "PrivilegeRule"]

OVERRIDE_REASONS = (
    Coding("emergency-rescue", display="紧急抢救，事后补办审批"),
    Coding("superior-authorised", display="上级医师已授权"),
    Coding("other", display="其他（请注明）"),
)


class PrivilegeRule:
    """:class:`hutong.cds.cards.Rule` for 处方权, 抗菌药物分级 and 手术分级."""

    id = "privileges"
    hooks = frozenset({ORDER_SELECT, ORDER_SIGN})

    def __init__(self, config: PrivilegeConfig | None = None) -> None:
        self.fixed = config  # None: the committee-approved version in force (hutong.cds.safety_config)

    def evaluate(self, request: HookRequest, ctx: RuleContext) -> list[Card]:
        orders = request.selected_orders()
        meds = [o for o in orders if o.get("resourceType") == "MedicationRequest"]
        surgery = [(o, g) for o in orders if o.get("resourceType") == "ServiceRequest"
                   for g in [_grade(o)] if g is not None]
        if not meds and not surgery:
            return []
        if request.user_role is None:
            return [Card(summary="未找到医嘱者的执业岗位（PractitionerRole），无法核对处方权与手术授权",
                         indicator="warning", source=self._source(), rule=self.id,
                         detail="处方权、抗菌药物分级与手术分级按执业岗位授予（国卫办医发〔2018〕20号）；"
                                "请由医务部门在平台登记该岗位后再开具。")]
        config = self.fixed or in_force(ctx.repo, region_day(int(ctx.now.timestamp() * 1000))).privileges
        p = privileges_of(request.user_role)
        inpatient_visit = self._inpatient_visit(request, ctx)
        cards: list[Card] = []
        for m in meds:
            tier = max(_stated_tier(m), *(config.tiers.get(c, 0) for c in _atc(m)), 0)
            d = may_order_antibiotic(p, tier, inpatient=inpatient_visit or _inpatient_order(m),
                                     consulted=_consulted(m))
            if not d.allowed:
                sev = config.prescribing if not p.prescribing or not p.active else config.antibiotic
                cards.append(self._card(m, d, sev, "处方权限" if tier == 0 else "抗菌药物分级", config.version))
        for o, grade in surgery:
            d = may_perform_surgery(p, grade)
            if not d.allowed:
                cards.append(self._card(o, d, config.surgery, "手术分级", config.version))
        return cards

    def _card(self, order: dict[str, Any], d: Decision, severity: Action, what: str, version: str) -> Card:
        name = order_name(order)
        hard = severity == "hard-stop"
        detail = (f"**{what}**：{d.reason}。\n\n"
                  f"依据：国卫办医发〔2018〕20号（权限控制）、卫生部令第84号（抗菌药物分级）、"
                  f"国卫办医政发〔2022〕18号（手术分级）；规则版本 {_version_words(version)}。"
                  + ("\n\n此为硬性拦截，不可越权执行。" if hard else "\n\n如需继续，请选择理由。"))
        return Card(summary=f"{what}：{name}——{d.reason}", indicator="critical" if hard else "warning",
                    source=self._source(), detail=detail, suggestions=(remove_order(order),),
                    override_reasons=() if hard else OVERRIDE_REASONS, rule=self.id)

    def _source(self) -> Source:
        return Source(label="互通区域平台·医疗权限规则", topic=Coding("privileges", display="处方与手术权限"))

    def _inpatient_visit(self, request: HookRequest, ctx: RuleContext) -> bool:
        eid = request.encounter_id
        if not eid:
            return False
        enc = ctx.records.read("Encounter", eid)
        cls = (enc or {}).get("class")
        return isinstance(cls, dict) and cls.get("code") in INPATIENT_CLASSES


def _version_words(version: str) -> str:
    return version if "委员会" in version else f"{version}（内置默认，尚无委员会批准的版本）"


def _atc(order: dict[str, Any]) -> list[str]:
    cc = order.get("medicationCodeableConcept") or {}
    return [str(c["code"]) for c in cc.get("coding") or []
            if isinstance(c, dict) and c.get("system") == ATC_SYSTEM and isinstance(c.get("code"), str)]


def _ext(order: dict[str, Any], url: str) -> dict[str, Any] | None:
    for e in order.get("extension") or []:
        if isinstance(e, dict) and e.get("url") == url:
            return e
    return None


def _stated_tier(order: dict[str, Any]) -> int:
    e = _ext(order, ANTIBIOTIC_TIER_EXT) or {}
    return TIER_CODES.get(str((e.get("valueCoding") or {}).get("code")), 0)


def _grade(order: dict[str, Any]) -> int | None:
    e = _ext(order, SURGERY_GRADE_EXT)
    if e is None:
        return None
    code = str((e.get("valueCoding") or {}).get("code") or "")
    return int(code) if code.isdigit() else 0


def _consulted(order: dict[str, Any]) -> bool:
    e = _ext(order, ANTIBIOTIC_CONSULT_EXT)
    return e is not None and (e.get("valueBoolean") is True or isinstance(e.get("valueReference"), dict))


def _inpatient_order(order: dict[str, Any]) -> bool:
    for cat in order.get("category") or []:
        for c in (cat or {}).get("coding") or []:
            if isinstance(c, dict) and c.get("code") == "inpatient":
                return True
    return False
