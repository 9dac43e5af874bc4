"""Issue 14, item 4: the privilege and drug-allergy rules answer as their configuration says
(hard stop or warning), and the cards keep to CDS Hooks 2.0's shapes.  The rules alone, on
a record source of fixed resources and a configuration given to them (the HTTP tests in
test_cds_hooks_service.py run them through the service, the policy and both databases, and
test_cds_safety_versions.py with committee-approved configuration)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from hutong.cds.allergy_rule import AllergyConfig, AllergyRule, Conflict
from hutong.cds.cards import HookRequest, RuleContext
from hutong.cds.privileges_rule import PrivilegeConfig, PrivilegeRule
from hutong.security.policy import Access
from hutong.security.principal import Principal, Role
from hutong.store.repository import Repository
from hutong.synth.catalog.drugs import DRUGS
from hutong.systems import PRESCRIBING_EXT

ATC = "http://www.whocc.no/atc"


class Records:
    def __init__(self, resources: list[dict[str, Any]]) -> None:
        self.items = resources

    def resources(self, type: str) -> list[dict[str, Any]]:
        return [r for r in self.items if r["resourceType"] == type]

    def read(self, type: str, id: str) -> dict[str, Any] | None:
        return next((r for r in self.items if r["resourceType"] == type and r.get("id") == id), None)


class Facts:
    """What the allergy rule asks of the Access: the institution managing a source patient."""

    def managing_org(self, patient_id: str) -> str | None:
        return {"pA": "orgA", "pB": "orgB"}.get(patient_id)


def request(order: dict[str, Any], role: dict[str, Any] | None) -> HookRequest:
    principal = Principal("acct-1", Role.CLINICIAN, organization_id="orgA", practitioner_id="prac-1")
    ctx = {"userId": "Practitioner/prac-1", "patientId": "pA", "selections": ["MedicationRequest/d1"],
           "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": order}]}}
    return HookRequest(hook="order-select", hook_instance="00000000-0000-4000-8000-000000000001", context=ctx,
                       principal=principal, access=cast(Access, Facts()), user_role=role)


def context(resources: list[dict[str, Any]]) -> RuleContext:
    return RuleContext(records=Records(resources), repo=cast(Repository, None), now=datetime.now(UTC))


ALLERGY = {"resourceType": "AllergyIntolerance", "id": "a1", "patient": {"reference": "Patient/pB"},
           "code": {"coding": [{"system": ATC, "code": "J01C"}], "text": "青霉素类"}}
ORG_B = {"resourceType": "Organization", "id": "orgB", "name": "乙医院"}
ORDER = {"resourceType": "MedicationRequest", "id": "d1", "status": "draft", "intent": "order",
         "subject": {"reference": "Patient/pA"}, "medicationCodeableConcept": DRUGS["amoxicillin"].concept}


def test_allergy_conflict_is_a_hard_stop_or_a_warning_as_configured() -> None:
    hard = AllergyRule(AllergyConfig()).evaluate(request(ORDER, None), context([ALLERGY, ORG_B]))
    assert [(c.indicator, c.override_reasons) for c in hard] == [("critical", ())]
    assert "乙医院" in hard[0].summary and len(hard[0].summary) < 140
    j = hard[0].to_json()
    assert "overrideReasons" not in j and j["selectionBehavior"] == "at-most-one"
    assert j["suggestions"][0]["actions"] == [{"type": "delete", "description": "撤销此医嘱",
                                              "resourceId": "MedicationRequest/d1"}]
    soft = AllergyRule(AllergyConfig(conflicts=(Conflict("J01C", ("J01C",), "warning", "慎用"),))).evaluate(
        request(ORDER, None), context([ALLERGY, ORG_B]))
    assert [c.indicator for c in soft] == ["warning"] and soft[0].override_reasons
    assert {r["code"] for r in soft[0].to_json()["overrideReasons"]} >= {"skin-test-negative", "other"}
    # A refuted allergy, or one of another drug class, gives nothing.
    refuted = {**ALLERGY, "verificationStatus": {"coding": [{"code": "refuted"}]}}
    assert AllergyRule(AllergyConfig()).evaluate(request(ORDER, None), context([refuted, ORG_B])) == []
    other = {**ORDER, "medicationCodeableConcept": DRUGS["azithromycin"].concept}
    assert AllergyRule(AllergyConfig()).evaluate(request(other, None), context([ALLERGY, ORG_B])) == []


def test_privilege_check_is_a_hard_stop_or_a_warning_as_configured() -> None:
    post = {"resourceType": "PractitionerRole", "id": "r1", "extension": [
        {"url": PRESCRIBING_EXT, "valueBoolean": False}]}
    hard = PrivilegeRule(PrivilegeConfig()).evaluate(request(ORDER, post), context([]))
    assert [(c.indicator, c.override_reasons) for c in hard] == [("critical", ())]
    soft = PrivilegeRule(PrivilegeConfig(prescribing="warning")).evaluate(request(ORDER, post), context([]))
    assert [c.indicator for c in soft] == ["warning"] and soft[0].override_reasons
    # No post on record: the rule says it cannot check, never that the order is allowed.
    unknown = PrivilegeRule(PrivilegeConfig()).evaluate(request(ORDER, None), context([]))
    assert [c.indicator for c in unknown] == ["warning"] and "PractitionerRole" in unknown[0].summary
