"""Issue 14, items 1 and 4: the CDS Hooks 2.0 service and the privilege / drug-allergy rules,
over real HTTP against the running server, on SQLite and PostgreSQL.

The region: hospitals A (甲医院), B (乙医院) and C (丙医院).  Resident R is registered at A
and at B (one person through the MPI); A's own system reported a visit 5 days ago, so A's
clinicians have a treatment basis for R's records elsewhere; B's last visit was 700 days
ago, so B's clinicians see only B's own registration; C never saw R.  R's penicillin
allergy (ATC J01C) was recorded at B, a sulfonamide allergy (J01E) at A.  Drugs and
allergens are coded as the synthetic region codes them (hutong.synth.catalog: the drug's
ATC code, the allergen's ATC class), which is what the allergy rule matches on.

Posts (PractitionerRole) carry the privileges hutong.security.privileges reads: docA
prescribes up to the non-restricted tier and grade-2 operations; nopresc has no
prescribing right; chief holds the special tier.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from harness import Server, serve_app

from hutong.cds import service as cds_service
from hutong.cds.allergy_rule import AllergyRule
from hutong.cds.cards import Card, HookRequest, RuleContext
from hutong.cds.privileges_rule import ANTIBIOTIC_CONSULT_EXT, PrivilegeRule
from hutong.security.accounts import Delegation
from hutong.security.principal import Role
from hutong.synth.catalog.allergens import ALLERGEN_SYSTEM
from hutong.synth.catalog.drugs import DRUGS
from hutong.systems import (
    ANTIBIOTIC_TIER_EXT,
    ANTIBIOTIC_TIER_SYSTEM,
    ID_CARD,
    ORGANIZATION,
    PRESCRIBING_EXT,
    SURGERY_GRADE_EXT,
    mrn_system,
)
from hutong.web import cds_routes

R_ID = "11010519491231002X"
ATC = "http://www.whocc.no/atc"


class Exploding:
    """A rule that fails: its cards must be left out, the hook must still answer."""

    id = "exploding-test-rule"
    hooks = frozenset({"order-select", "order-sign", "patient-view"})

    def evaluate(self, request: HookRequest, ctx: RuleContext) -> list[Card]:
        raise RuntimeError(f"boom for {request.patient_id}")  # the message names the patient: never logged


@pytest.fixture
def server(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    # The app's rule set, plus one broken rule (the rule factory is the seam).
    monkeypatch.setattr(cds_routes, "default_rules", lambda: [Exploding(), PrivilegeRule(), AllergyRule()])
    yield from serve_app(db_url)


def _created(r: httpx.Response) -> str:
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _days_ago(n: int) -> str:
    return (datetime.now(UTC) - timedelta(days=n)).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _role(org: str, prac: str, *, prescribing: bool, tier: str | None, grade: int | None) -> dict[str, Any]:
    ext: list[dict[str, Any]] = [{"url": PRESCRIBING_EXT, "valueBoolean": prescribing}]
    if tier:
        ext.append({"url": ANTIBIOTIC_TIER_EXT, "valueCoding": {"system": ANTIBIOTIC_TIER_SYSTEM, "code": tier}})
    if grade:
        ext.append({"url": SURGERY_GRADE_EXT, "valueCoding": {"code": str(grade)}})
    return {"resourceType": "PractitionerRole", "active": True, "extension": ext,
            "practitioner": {"reference": f"Practitioner/{prac}"}, "organization": {"reference": f"Organization/{org}"}}


class Region:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.ids: dict[str, str] = {}
        self.accounts: dict[str, Any] = {}

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(base_url=self.server.root, timeout=30, headers={
            "authorization": f"Bearer {self.token(who)}", "content-type": "application/json"})

    def token(self, who: str) -> str:
        return self.server.token(self.accounts[who])


@pytest.fixture
def region(server: Server) -> Region:
    c = server.client
    reg = Region(server)
    ids = reg.ids
    for key, code, name in (("A", "12110000400000001A", "甲医院"), ("B", "12110000400000002B", "乙医院"),
                            ("C", "12110000400000003C", "丙医院")):
        ids["org" + key] = _created(c.post("/Organization", json={
            "resourceType": "Organization", "name": name, "identifier": [{"system": ORGANIZATION, "value": code}]}))
        ids["code" + key] = code

    def patient(org: str, mrn: str) -> str:
        return _created(c.post("/Patient", json={
            "resourceType": "Patient", "managingOrganization": {"reference": f"Organization/{ids['org' + org]}"},
            "identifier": [{"system": ID_CARD, "value": R_ID}, {"system": mrn_system(ids["code" + org]), "value": mrn}],
            "name": [{"family": "王", "given": ["小红"]}], "birthDate": "1949-12-31", "gender": "female"}))

    ids["pA"], ids["pB"] = patient("A", "A-1"), patient("B", "B-1")
    for org, days in (("A", 5), ("B", 700)):
        _created(c.post("/Encounter", json={
            "resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
            "subject": {"reference": f"Patient/{ids['p' + org]}"},
            "serviceProvider": {"reference": f"Organization/{ids['org' + org]}"},
            "period": {"start": _days_ago(days), "end": _days_ago(days)}}))
    ids["inpatient"] = _created(c.post("/Encounter", json={
        "resourceType": "Encounter", "status": "in-progress", "class": {"code": "IMP"},
        "subject": {"reference": f"Patient/{ids['pA']}"}, "serviceProvider": {"reference": f"Organization/{ids['orgA']}"},
        "period": {"start": _days_ago(1)}}))

    def allergy(org: str, key: str, name: str, atc: str, recorded: str) -> str:
        return _created(c.post("/AllergyIntolerance", json={
            "resourceType": "AllergyIntolerance", "patient": {"reference": f"Patient/{ids['p' + org]}"},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                                           "code": "active"}]},
            "verificationStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                "code": "confirmed"}]},
            "category": ["medication"], "criticality": "low", "recordedDate": recorded,
            "code": {"coding": [{"system": ALLERGEN_SYSTEM, "code": key, "display": name},
                                {"system": ATC, "code": atc}], "text": name},
            "reaction": [{"manifestation": [{"text": "皮疹"}]}]}))

    ids["penicillinB"] = allergy("B", "penicillin", "青霉素类", "J01C", "2019-03-02")
    ids["sulfaA"] = allergy("A", "sulfonamide", "磺胺类", "J01E", "2023-05-06")

    acc = server.accounts
    posts = {"docA": ("A", True, "non-restricted", 2), "nopresc": ("A", False, None, None),
             "chief": ("A", True, "special", 4), "docB": ("B", True, "special", 4), "docC": ("C", True, "special", 4)}
    for who, (org, presc, tier, grade) in posts.items():
        prac = _created(c.post("/Practitioner", json={"resourceType": "Practitioner",
                                                      "name": [{"family": "医", "given": [who]}]}))
        role = _created(c.post("/PractitionerRole", json=_role(ids["org" + org], prac, prescribing=presc,
                                                                tier=tier, grade=grade)))
        ids[who + "_prac"], ids[who + "_role"] = prac, role
        reg.accounts[who], _, _ = acc.add_user(who.lower(), role=Role.CLINICIAN, name=f"{who}医生",
                                               organization=ids["code" + org], organization_id=ids["org" + org],
                                               practitioner_id=prac, practitioner_role_id=role)
    reg.accounts["sysA"], _ = acc.add_client("HIS A", organization=ids["codeA"], organization_id=ids["orgA"])
    person = c.get("/Patient", params={"identifier": f"{ID_CARD}|{R_ID}",
                                       "_tag": "https://fhir.hutong.dev/CodeSystem/mpi|golden"})
    ids["R"] = person.json()["entry"][0]["resource"]["id"]
    reg.accounts["R"] = acc.add_resident(ids["R"], phone="13912345678")
    reg.accounts["delegate"] = acc.add_delegate("mpi-someone-else", acts_for=[Delegation(ids["R"], "family", None)],
                                                phone="13800000001", name="家属")
    reg.accounts["sysB"], _ = acc.add_client("HIS B", organization=ids["codeB"], organization_id=ids["orgB"])
    return reg


def drug_order(patient: str, key: str, oid: str = "draft-1", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "MedicationRequest", "id": oid, "status": "draft", "intent": "order",
            "subject": {"reference": f"Patient/{patient}"}, "medicationCodeableConcept": DRUGS[key].concept, **extra}


def hook_body(reg: Region, who: str, patient: str, orders: list[dict[str, Any]], *, hook: str = "order-select",
              **extra: Any) -> dict[str, Any]:
    ctx: dict[str, Any] = {"userId": f"Practitioner/{reg.ids[who + '_prac']}", "patientId": patient,
                           "draftOrders": {"resourceType": "Bundle", "type": "collection",
                                           "entry": [{"resource": o} for o in orders]}}
    if hook == "order-select":
        ctx["selections"] = [f"{o['resourceType']}/{o['id']}" for o in orders]
    if hook == "patient-view":
        ctx = {"userId": ctx["userId"], "patientId": patient}
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": ctx, **extra}


def call(reg: Region, who: str, body: dict[str, Any], service: str = "hutong-order-select") -> httpx.Response:
    with reg.client(who) as cl:
        return cl.post(f"/cds-services/{service}", json=body)


def cards_of(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 200, r.text
    data = r.json()
    assert set(data) == {"cards"}
    for c in data["cards"]:  # CDS Hooks 2.0 "Card Attributes"
        assert len(c["summary"]) < 140 and c["indicator"] in ("info", "warning", "critical")
        assert c["source"]["label"] and uuid.UUID(c["uuid"])
        if c.get("suggestions"):
            assert c["selectionBehavior"] in ("at-most-one", "any")
            for s in c["suggestions"]:
                assert s["label"] and uuid.UUID(s["uuid"])
                for a in s.get("actions", []):
                    assert a["type"] in ("create", "update", "delete") and a["description"]
    return list(data["cards"])


def test_discovery_lists_one_service_per_hook_with_prefetch(region: Region) -> None:
    with region.client("docA") as cl:
        r = cl.get("/cds-services")
    assert r.status_code == 200
    services = r.json()["services"]
    assert {s["hook"] for s in services} == {"order-select", "order-sign", "patient-view"}
    for s in services:
        assert s["id"] and s["title"] and s["description"]
        assert s["prefetch"]["patient"] == "Patient/{{context.patientId}}"
        assert s["prefetch"]["allergies"] == "AllergyIntolerance?patient={{context.patientId}}"
    # Discovery is behind the gate too: the platform's bearer token is required.
    assert httpx.get(region.server.root + "/cds-services").status_code == 401


def test_allergy_from_another_institution_is_a_hard_stop(region: Region) -> None:
    """Penicillin allergy recorded at B; A's clinician (treatment basis) orders amoxicillin (J01CA04)."""
    ids = region.ids
    cards = cards_of(call(region, "docA", hook_body(region, "docA", ids["pA"], [drug_order(ids["pA"], "amoxicillin")])))
    assert len(cards) == 1, cards  # the exploding rule gave nothing, privileges are fine (tier 1)
    c = cards[0]
    assert c["indicator"] == "critical" and "overrideReasons" not in c
    assert "乙医院" in c["summary"] and "青霉素类" in c["summary"] and "阿莫西林" in c["summary"]
    assert c["suggestions"][0]["actions"] == [{"type": "delete", "description": "撤销此医嘱",
                                               "resourceId": "MedicationRequest/draft-1"}]
    # Cross-reactivity (cefuroxime, J01DC02) is a warning with override reasons; on order-sign too.
    body = hook_body(region, "docA", ids["pA"], [drug_order(ids["pA"], "cefuroxime-po")], hook="order-sign")
    cards = cards_of(call(region, "docA", body, "hutong-order-sign"))
    assert [c["indicator"] for c in cards] == ["warning"]
    assert {r["code"] for r in cards[0]["overrideReasons"]} >= {"skin-test-negative", "other"}
    # A drug of no allergic class: no card.
    assert cards_of(call(region, "docA", hook_body(region, "docA", ids["pA"], [drug_order(ids["pA"], "amlodipine")]))) == []


def test_clinician_without_basis_gets_no_card_content_from_elsewhere(region: Region) -> None:
    """B's clinician (own registration, no treatment basis for A's records) never sees A's
    sulfonamide allergy on a card; C's clinician (no registration, no basis) is refused."""
    ids = region.ids
    order = drug_order(ids["pB"], "amoxicillin")
    order["medicationCodeableConcept"] = {"coding": [{"system": ATC, "code": "J01EE01"}], "text": "复方磺胺甲噁唑片"}
    r = call(region, "docB", hook_body(region, "docB", ids["pB"], [order]))
    assert cards_of(r) == [] and "磺胺" not in r.text and "甲医院" not in r.text
    # The same order at A, whose own record holds the allergy: a card.
    order_a = {**order, "subject": {"reference": f"Patient/{ids['pA']}"}}
    assert [c["indicator"] for c in cards_of(call(region, "docA", hook_body(region, "docA", ids["pA"], [order_a])))] \
        == ["critical"]
    # A prefetch naming A's stored allergy does not smuggle it in: stored data is read through the Access.
    stolen = region.server.client.get(f"/AllergyIntolerance/{ids['sulfaA']}").json()
    stolen["patient"] = {"reference": f"Patient/{ids['pB']}"}
    body = hook_body(region, "docB", ids["pB"], [order],
                     prefetch={"allergies": {"resourceType": "Bundle", "type": "searchset",
                                             "entry": [{"resource": stolen}]}})
    r = call(region, "docB", body)
    assert cards_of(r) == [] and "甲医院" not in r.text
    # C: no registration, no basis -> 403, for the source patient and for the golden person.
    for pid in (ids["pA"], ids["R"]):
        r = call(region, "docC", hook_body(region, "docC", pid, [drug_order(pid, "amoxicillin")]))
        assert r.status_code == 403 and "HT-0528" in r.text and "青霉素" not in r.text


def test_prefetched_data_of_the_callers_own_emr_is_used(region: Region) -> None:
    """An allergy the EMR holds but the platform does not (prefetch) gives a card."""
    ids = region.ids
    local = {"resourceType": "AllergyIntolerance", "id": "emr-local-1", "patient": {"reference": f"Patient/{ids['pB']}"},
             "code": {"coding": [{"system": ATC, "code": "N02BA01"}], "text": "阿司匹林"}}
    order = drug_order(ids["pB"], "amoxicillin")
    order["medicationCodeableConcept"] = {"coding": [{"system": ATC, "code": "N02BA01"}], "text": "阿司匹林肠溶片"}
    body = hook_body(region, "docB", ids["pB"], [order],
                     prefetch={"allergies": {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": local}]},
                               "patient": None})
    cards = cards_of(call(region, "docB", body))
    assert [c["indicator"] for c in cards] == ["critical"] and "本机构" in cards[0]["summary"]


def test_privilege_cards(region: Region) -> None:
    ids = region.ids
    pid = ids["pA"]
    # No prescribing right: even a non-antibiotic is stopped.
    cards = cards_of(call(region, "nopresc", hook_body(region, "nopresc", pid, [drug_order(pid, "amlodipine")])))
    assert [(c["indicator"], "无处方权" in c["summary"]) for c in cards] == [("critical", True)]
    # Special tier (meropenem) for an outpatient, by a chief who holds the tier: refused.
    cards = cards_of(call(region, "chief", hook_body(region, "chief", pid, [drug_order(pid, "meropenem")])))
    assert len(cards) == 1 and "门诊" in cards[0]["summary"] and cards[0]["indicator"] == "critical"
    # Inpatient but without consultation: refused; with it: allowed.
    body = hook_body(region, "chief", pid, [drug_order(pid, "meropenem")])
    body["context"]["encounterId"] = ids["inpatient"]
    cards = cards_of(call(region, "chief", body))
    assert len(cards) == 1 and "会诊" in cards[0]["summary"]
    consulted = drug_order(pid, "meropenem", extension=[{"url": ANTIBIOTIC_CONSULT_EXT, "valueBoolean": True}])
    body = hook_body(region, "chief", pid, [consulted])
    body["context"]["encounterId"] = ids["inpatient"]
    assert cards_of(call(region, "chief", body)) == []
    # A restricted-tier drug beyond docA's post (non-restricted only); its tier comes from the catalogue
    # even though the draft leaves it out.
    cards = cards_of(call(region, "docA", hook_body(region, "docA", pid, [drug_order(pid, "levofloxacin")])))
    assert len(cards) == 1 and "限制使用级" in cards[0]["summary"]
    # A forged request: a draft stating a lower tier, and a prefetched post granting everything,
    # change nothing (the tier comes from the catalogue, the post from the store).
    forged = drug_order(pid, "levofloxacin", extension=[{"url": ANTIBIOTIC_TIER_EXT, "valueCoding": {
        "system": ANTIBIOTIC_TIER_SYSTEM, "code": "non-restricted"}}])
    fake_post = {**_role(ids["orgA"], ids["nopresc_prac"], prescribing=True, tier="special", grade=4),
                 "id": ids["nopresc_role"]}
    body = hook_body(region, "docA", pid, [forged], prefetch={"post": fake_post})
    cards = cards_of(call(region, "docA", body))
    assert len(cards) == 1 and "限制使用级" in cards[0]["summary"]
    body = hook_body(region, "nopresc", pid, [drug_order(pid, "amlodipine")], prefetch={"post": fake_post})
    cards = cards_of(call(region, "nopresc", body))
    assert len(cards) == 1 and "无处方权" in cards[0]["summary"]
    # An operation of grade 4 by a surgeon granted grade 2.
    op = {"resourceType": "ServiceRequest", "id": "op-1", "status": "draft", "intent": "order",
          "subject": {"reference": f"Patient/{pid}"}, "code": {"text": "腹腔镜胰十二指肠切除术"},
          "extension": [{"url": SURGERY_GRADE_EXT, "valueCoding": {"code": "4"}}]}
    cards = cards_of(call(region, "docA", hook_body(region, "docA", pid, [op], hook="order-sign"), "hutong-order-sign"))
    assert len(cards) == 1 and "手术分级" in cards[0]["summary"] and "最高2级" in cards[0]["summary"]
    # The institution's own system calling for its clinician's post: same decision.
    body = hook_body(region, "docA", pid, [op], hook="order-sign")
    body["context"]["userId"] = f"PractitionerRole/{ids['docA_role']}"
    assert len(cards_of(call(region, "sysA", body, "hutong-order-sign"))) == 1


def test_patient_view_shows_allergies_recorded_elsewhere(region: Region) -> None:
    ids = region.ids
    cards = cards_of(call(region, "docA", hook_body(region, "docA", ids["pA"], [], hook="patient-view"),
                          "hutong-patient-view"))
    assert len(cards) == 1 and cards[0]["indicator"] == "info" and "乙医院" in cards[0]["summary"]
    # B's clinician has no basis for A's records: nothing from A.
    r = call(region, "docB", hook_body(region, "docB", ids["pB"], [], hook="patient-view"), "hutong-patient-view")
    assert cards_of(r) == []


def test_error_codes(region: Region) -> None:
    ids = region.ids
    pid = ids["pA"]
    good = hook_body(region, "docA", pid, [drug_order(pid, "amoxicillin")])
    with region.client("docA") as cl:
        # 400 malformed
        r = cl.post("/cds-services/hutong-order-select", content=b"{not json")
        assert r.status_code == 400 and "HT-0520" in r.text
        r = cl.post("/cds-services/hutong-order-select", json={**good, "hookInstance": "x"})
        assert r.status_code == 400 and "hookInstance" in r.text
        r = cl.post("/cds-services/hutong-order-select", json={**good, "hook": "order-sign"})
        assert r.status_code == 400 and "HT-0522" in r.text
        bad = {**good, "context": {k: v for k, v in good["context"].items() if k != "draftOrders"}}
        r = cl.post("/cds-services/hutong-order-select", json=bad)
        assert r.status_code == 400 and "HT-0523" in r.text and "draftOrders" in r.text
        r = cl.post("/cds-services/hutong-order-select", json={**good, "prefetch": {"patient": {
            "resourceType": "Patient", "id": ids["pB"]}}})
        assert r.status_code == 400 and "HT-0536" in r.text
        # 404 unknown service
        r = cl.post("/cds-services/no-such-service", json=good)
        assert r.status_code == 404 and "HT-0521" in r.text
        # 412 a patient the platform does not know, without prefetch
        unknown = hook_body(region, "docA", "not-here-1", [drug_order("not-here-1", "amoxicillin")])
        r = cl.post("/cds-services/hutong-order-select", json=unknown)
        assert r.status_code == 412 and "HT-0530" in r.text
        # ... and with the patient prefetched it answers (the EMR's own data only).
        unknown["prefetch"] = {"patient": {"resourceType": "Patient", "id": "not-here-1"}}
        assert cards_of(cl.post("/cds-services/hutong-order-select", json=unknown)) == []
        # 403 context.userId of another clinician
        other = {**good, "context": {**good["context"], "userId": f"Practitioner/{ids['chief_prac']}"}}
        r = cl.post("/cds-services/hutong-order-select", json=other)
        assert r.status_code == 403 and "HT-0529" in r.text
    # 401 without a token, and with a forged one
    r = httpx.post(region.server.root + "/cds-services/hutong-order-select", json=good)
    assert r.status_code == 401
    r = httpx.post(region.server.root + "/cds-services/hutong-order-select", json=good,
                   headers={"authorization": "Bearer forged.token.value"})
    assert r.status_code == 401
    # 403 a resident's account, and a family delegate acting for R
    for who in ("R", "delegate"):
        r = call(region, who, good)
        assert r.status_code == 403 and "HT-0104" in r.text and "青霉素" not in r.text
        with region.client(who) as cl:
            assert cl.get("/cds-services").status_code == 403
    # 403 B's clinician naming a post of theirs at another institution (A): privileges are per post and place
    post_at_a = _created(region.server.client.post("/PractitionerRole", json=_role(
        ids["orgA"], ids["docB_prac"], prescribing=True, tier="special", grade=4)))
    body = {**good, "context": {**good["context"], "userId": f"PractitionerRole/{post_at_a}", "patientId": ids["pB"]}}
    r = call(region, "docB", body)
    assert r.status_code == 403 and "HT-0529" in r.text
    # 403 another institution's system naming A's clinician's post as the user
    body = {**good, "context": {**good["context"], "userId": f"PractitionerRole/{ids['docA_role']}",
                                "patientId": ids["pB"]}}
    r = call(region, "sysB", body)
    assert r.status_code == 403 and "HT-0529" in r.text


def test_fhir_authorization_must_be_the_callers_own(region: Region) -> None:
    ids = region.ids
    pid = ids["pA"]
    base = region.server.root + "/fhir"

    def auth(token: str) -> dict[str, Any]:
        return {"access_token": token, "token_type": "Bearer", "expires_in": 300, "scope": "user/*.rs",
                "subject": "hutong-cds"}

    body = hook_body(region, "docA", pid, [drug_order(pid, "amoxicillin")], fhirServer=base,
                     fhirAuthorization=auth(region.token("docA")))
    assert len(cards_of(call(region, "docA", body))) == 1
    # Another user's token: refused, even though it is valid.
    body["fhirAuthorization"] = auth(region.token("docB"))
    r = call(region, "docA", body)
    assert r.status_code == 403 and "HT-0526" in r.text
    # A forged token: 401.
    body["fhirAuthorization"] = auth("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.")
    r = call(region, "docA", body)
    assert r.status_code == 401 and "HT-0525" in r.text
    # Malformed (token_type not Bearer): 400.
    body["fhirAuthorization"] = {**auth(region.token("docA")), "token_type": "MAC"}
    r = call(region, "docA", body)
    assert r.status_code == 400 and "HT-0524" in r.text
    # C borrowing A's clinician's token in fhirAuthorization does not lend C A's basis.
    body = hook_body(region, "docC", pid, [drug_order(pid, "amoxicillin")], fhirServer=base,
                     fhirAuthorization=auth(region.token("docA")))
    r = call(region, "docC", body)
    assert r.status_code == 403 and "青霉素" not in r.text


def test_feedback_is_recorded_and_counted(region: Region) -> None:
    ids = region.ids
    pid = ids["pA"]
    hard = cards_of(call(region, "docA", hook_body(region, "docA", pid, [drug_order(pid, "amoxicillin")])))[0]
    warn = cards_of(call(region, "docA", hook_body(region, "docA", pid, [drug_order(pid, "cefuroxime-po")])))[0]
    now = datetime.now(UTC).isoformat()
    with region.client("docA") as cl:
        r = cl.post("/cds-services/hutong-order-select/feedback", json={"feedback": [
            {"card": hard["uuid"], "outcome": "accepted", "outcomeTimestamp": now,
             "acceptedSuggestions": [{"id": hard["suggestions"][0]["uuid"]}]},
            {"card": warn["uuid"], "outcome": "overridden", "outcomeTimestamp": now,
             "overrideReason": {"reason": {"system": warn["overrideReasons"][0]["system"], "code": "skin-test-negative"},
                                "userComment": "皮试阴性，已观察30分钟"}}]})
        assert r.status_code == 200, r.text
        # A hard stop cannot be overridden; a reason the card did not offer is refused; nothing recorded then.
        r = cl.post("/cds-services/hutong-order-select/feedback", json={"feedback": [
            {"card": hard["uuid"], "outcome": "overridden", "outcomeTimestamp": now}]})
        assert r.status_code == 400 and "HT-0534" in r.text
        r = cl.post("/cds-services/hutong-order-select/feedback", json={"feedback": [
            {"card": warn["uuid"], "outcome": "overridden", "outcomeTimestamp": now,
             "overrideReason": {"reason": {"code": "made-up"}}}]})
        assert r.status_code == 400 and "HT-0534" in r.text
        r = cl.post("/cds-services/hutong-order-select/feedback", json={"feedback": [{"card": warn["uuid"]}]})
        assert r.status_code == 400 and "HT-0532" in r.text
    # Another clinician cannot report on docA's cards (counts stay honest).
    with region.client("chief") as cl:
        r = cl.post("/cds-services/hutong-order-select/feedback", json={"feedback": [
            {"card": warn["uuid"], "outcome": "overridden", "outcomeTimestamp": now,
             "overrideReason": {"reason": {"code": "other"}}}]})
        assert r.status_code == 403 and "HT-0533" in r.text
    audit = region.server.app.platform.audit
    counts = cds_service.feedback_counts(audit)["drug-allergy"]
    assert counts == {"issued": 2, "accepted": 1, "overridden": 1, "reason:skin-test-negative": 1}
    rows = audit.search(action=cds_service.FEEDBACK_ACTION)
    assert len(rows) == 2 and all(e.persons == (ids["R"],) for e in rows)
    assert {e.reason for e in rows} == {None, "皮试阴性，已观察30分钟"}
    # The residents see it in their access log too (the card was about them).
    assert any(e.action == "cds-feedback" for e in audit.access_log([ids["R"]]))


def test_a_failing_rule_gives_no_card_and_is_reported(region: Region, caplog: pytest.LogCaptureFixture) -> None:
    ids = region.ids
    with caplog.at_level(logging.ERROR, logger="hutong.cds"):
        cards = cards_of(call(region, "docA", hook_body(region, "docA", ids["pA"], [drug_order(ids["pA"], "amoxicillin")])))
    assert len(cards) == 1 and cards[0]["indicator"] == "critical"  # the other rules still answered
    lines = [r.getMessage() for r in caplog.records if r.name == "hutong.cds"]
    assert any("exploding-test-rule" in x and "RuntimeError" in x for x in lines)
    assert not any(ids["pA"] in x or ids["R"] in x for x in lines)  # no personal data in the log
    text = region.server.client.get(region.server.root + "/metrics").text
    assert 'hutong_cds_rule_failures_total{rule="exploding-test-rule"}' in text
