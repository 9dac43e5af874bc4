"""Drug–allergy conflicts against the patient's AllergyIntolerance from every institution (seed 004).

Matching is by code, on the WHO ATC hierarchy (http://www.whocc.no/atc): the
synthetic region and Hutong's allergen codes give a drug allergy its ATC class
(penicillins J01C, cephalosporins J01D, sulfonamides J01E, salicylates N02BA,
iodinated contrast V08A; hutong.synth.catalog.allergens) and every drug its ATC
code (amoxicillin J01CA04; hutong.synth.catalog.drugs).  A :class:`Conflict` says
which allergen class conflicts with which drug class and whether that is a hard
stop (critical card, no override) or a warning (override with a reason).  An
allergy whose ATC code is a prefix of the drug's that no conflict names gets
``AllergyConfig.fallback``.

The allergies are read through the caller's Access across every source patient
the MPI links to the hook's patient (:class:`hutong.cds.cards.RecordSource`): an
allergy recorded at another institution shows only to a caller with a basis for
the resident; the institution is named on the card.  Active allergies only
(clinicalStatus active or unstated; verificationStatus neither refuted nor
entered-in-error).  Drugs coded by medicationCodeableConcept (a draft's
medicationReference is not followed).

patient-view: an information card lists the allergies recorded at other
institutions (so a clinician sees them before ordering).

Configuration (:class:`AllergyConfig`): the committee-approved version in force
(hutong.cds.safety_config, four-eyes like every decision-support knowledge), else the
built-in defaults; the card names which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hutong.cds.cards import (
    ORDER_SELECT,
    ORDER_SIGN,
    PATIENT_VIEW,
    Card,
    Coding,
    HookRequest,
    RuleContext,
    Source,
    order_name,
    remove_order,
)
from hutong.cds.safety_config import (
    CEPHALOSPORINS,
    DEFAULT_CONFLICTS,
    AllergyConfig,
    Conflict,
    in_force,
    region_day,
)

ATC_SYSTEM = "http://www.whocc.no/atc"
__all__ = ["CEPHALOSPORINS", "DEFAULT_CONFLICTS", "AllergyConfig", "AllergyRule", "Conflict"]


OVERRIDE_REASONS = (
    Coding("skin-test-negative", display="皮试阴性"),
    Coding("benefit-outweighs-risk", display="获益大于风险，已告知患者并监护"),
    Coding("allergy-history-doubtful", display="过敏史存疑"),
    Coding("other", display="其他（请注明）"),
)


@dataclass(frozen=True, slots=True)
class _Hit:
    conflict: Conflict
    allergy: dict[str, Any]


class AllergyRule:
    """:class:`hutong.cds.cards.Rule`: drug orders against recorded allergies."""

    id = "drug-allergy"
    hooks = frozenset({ORDER_SELECT, ORDER_SIGN, PATIENT_VIEW})

    def __init__(self, config: AllergyConfig | None = None) -> None:
        self.fixed = config  # None: the committee-approved version in force (hutong.cds.safety_config)

    def evaluate(self, request: HookRequest, ctx: RuleContext) -> list[Card]:
        if request.hook == PATIENT_VIEW:
            return self._elsewhere(request, ctx)
        meds = [o for o in request.selected_orders() if o.get("resourceType") == "MedicationRequest"]
        if not meds:
            return []
        config = self.fixed or in_force(ctx.repo, region_day(int(ctx.now.timestamp() * 1000))).allergy
        allergies = [a for a in ctx.records.resources("AllergyIntolerance") if _active(a) and _atc(a.get("code"))]
        cards = []
        for m in meds:
            drug = _atc(m.get("medicationCodeableConcept"))
            hits = [h for a in allergies for h in [_match(config, a, drug)] if h is not None]
            if not hits:
                continue
            worst = min(hits, key=lambda h: h.conflict.action != "hard-stop")
            cards.append(self._card(request, ctx, m, worst, hits, config.version))
        return cards

    def _card(self, request: HookRequest, ctx: RuleContext, order: dict[str, Any], worst: _Hit,
              hits: list[_Hit], version: str) -> Card:
        hard = worst.conflict.action == "hard-stop"
        name = order_name(order)
        allergen = _text(worst.allergy)
        where = _institution(request, ctx, worst.allergy)
        lines = [f"- {_text(h.allergy)}（{_institution(request, ctx, h.allergy)}，"
                 f"记录于 {h.allergy.get('recordedDate') or '日期不详'}；反应：{_reaction(h.allergy)}）："
                 f"{h.conflict.note}" for h in hits]
        detail = ("**药物过敏冲突**\n\n" + "\n".join(lines)
                  + f"\n\n依据：药物过敏规则 {_version_words(version)}。"
                  + ("\n\n此为硬性拦截，不可开具。" if hard else "\n\n如需继续，请选择理由。"))
        return Card(summary=f"过敏冲突：{name}——患者对{allergen}过敏（{where}记录）",
                    indicator="critical" if hard else "warning", source=self._source(), detail=detail,
                    suggestions=(remove_order(order),), override_reasons=() if hard else OVERRIDE_REASONS,
                    rule=self.id)

    def _elsewhere(self, request: HookRequest, ctx: RuleContext) -> list[Card]:
        org = request.principal.organization_id
        others = [a for a in ctx.records.resources("AllergyIntolerance") if _active(a)
                  and _org_of(request, a) not in (None, org)]
        if not others:
            return []
        items = "；".join(f"{_text(a)}（{_institution(request, ctx, a)}）" for a in others[:5])
        more = f" 等 {len(others)} 项" if len(others) > 5 else ""
        return [Card(summary=f"其他机构记录的过敏：{items}{more}", indicator="info", source=self._source(),
                     detail="\n".join(f"- {_text(a)}：{_institution(request, ctx, a)}，记录于 "
                                      f"{a.get('recordedDate') or '日期不详'}，反应：{_reaction(a)}" for a in others),
                     rule=self.id)]

    def _source(self) -> Source:
        return Source(label="互通区域平台·药物过敏规则", topic=Coding("drug-allergy", display="药物过敏"))


def _match(config: AllergyConfig, allergy: dict[str, Any], drug: list[str]) -> _Hit | None:
    found: _Hit | None = None
    for a in _atc(allergy.get("code")):
        for c in config.conflicts:
            if (a.startswith(c.allergen) or c.allergen.startswith(a)) and any(
                    d.startswith(c.drugs) for d in drug):
                if found is None or (c.action == "hard-stop" and found.conflict.action != "hard-stop"):
                    found = _Hit(c, allergy)
        if found is None and len(a) >= 4 and any(d.startswith(a) for d in drug):
            found = _Hit(Conflict(a, (a,), config.fallback, "与过敏药物同类"), allergy)
    return found


def _version_words(version: str) -> str:
    return version if "委员会" in version else f"{version}（内置默认，尚无委员会批准的版本）"


def _atc(cc: object) -> list[str]:
    if not isinstance(cc, dict):
        return []
    return [str(c["code"]) for c in cc.get("coding") or []
            if isinstance(c, dict) and c.get("system") == ATC_SYSTEM and isinstance(c.get("code"), str)]


def _status(a: dict[str, Any], key: str) -> str | None:
    cc = a.get(key)
    for c in (cc or {}).get("coding") or [] if isinstance(cc, dict) else []:
        if isinstance(c, dict) and isinstance(c.get("code"), str):
            return str(c["code"])
    return None


def _active(a: dict[str, Any]) -> bool:
    return (_status(a, "clinicalStatus") in (None, "active")
            and _status(a, "verificationStatus") not in ("refuted", "entered-in-error"))


def _text(a: dict[str, Any]) -> str:
    cc = a.get("code") or {}
    if isinstance(cc.get("text"), str) and cc["text"]:
        return str(cc["text"])
    for c in cc.get("coding") or []:
        if isinstance(c, dict) and c.get("display"):
            return str(c["display"])
    return "某药物"


def _reaction(a: dict[str, Any]) -> str:
    for r in a.get("reaction") or []:
        for m in (r or {}).get("manifestation") or []:
            if isinstance(m, dict) and m.get("text"):
                return str(m["text"])
    return "未记录"


def _org_of(request: HookRequest, a: dict[str, Any]) -> str | None:
    ref = (a.get("patient") or {}).get("reference") if isinstance(a.get("patient"), dict) else None
    if not isinstance(ref, str) or not ref.startswith("Patient/"):
        return None
    pid = ref.removeprefix("Patient/")
    org = request.access.managing_org(pid)
    if org is None and pid == request.patient_id:
        return request.principal.organization_id  # the caller's own (prefetched) data about the hook's patient
    return org


def _institution(request: HookRequest, ctx: RuleContext, a: dict[str, Any]) -> str:
    org = _org_of(request, a)
    if org is None:
        return "机构不详"
    if org == request.principal.organization_id:
        return "本机构"
    o = ctx.records.read("Organization", org)
    name = (o or {}).get("name")
    return str(name) if isinstance(name, str) and name else "其他机构"
