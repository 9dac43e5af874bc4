"""Issue 14, item 3 over real HTTP: the recognition rule behind the platform's CDS Hooks 2.0
service (hutong.cds.service, /cds-services/...), on SQLite and PostgreSQL.

The region: A 北京市怀柔中心医院 and B 北京市海淀区医院 (codes of the seed knowledge: A codes
血常规 JY0001, B codes it L-CBC), C 北京市房山区第二医院.  Resident R is registered at A and at B
(one person through the MPI).  A's own system reported a visit 5 days ago, so A's clinicians
have a treatment basis for R's records at B; B's last visit was 700 days ago, so B's clinicians
see only B's own registration; C never saw R.  B reported a 血常规 2 days ago (L-CBC), A a
糖化血红蛋白 10 days ago (LOINC).  The seed knowledge is loaded by one committee member and
approved by another.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from harness import Server, serve_app

from hutong.cds.knowledge import LOCAL_CODE_PREFIX
from hutong.cds.recognition import RULE_ID
from hutong.cds.versions import KnowledgeVersions, account_principal
from hutong.cli.cds import SEED
from hutong.security.principal import Role
from hutong.systems import ID_CARD, ORGANIZATION, mrn_system

R_ID = "11010519491231002X"
CODES = {"A": "121101164000124574", "B": "12110108400826012G", "C": "12110111400192291J"}
NAMES = {"A": "北京市怀柔中心医院", "B": "北京市海淀区医院", "C": "北京市房山区第二医院"}


@pytest.fixture
def server(db_url: str) -> Iterator[Server]:
    yield from serve_app(db_url)  # the app's own rule set (hutong.web.cds_routes.default_rules)


def _created(r: httpx.Response) -> str:
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _days_ago(n: int) -> str:
    return (datetime.now(UTC) - timedelta(days=n)).strftime("%Y-%m-%dT%H:%M:%S+00:00")


class Region:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.ids: dict[str, str] = {}
        self.accounts: dict[str, Any] = {}

    def call(self, who: str, body: dict[str, Any], service: str = "hutong-order-select") -> httpx.Response:
        with httpx.Client(base_url=self.server.root, timeout=30, headers={
                "authorization": f"Bearer {self.server.token(self.accounts[who])}"}) as cl:
            return cl.post(f"/cds-services/{service}", json=body)

    def feedback(self, who: str, service: str, items: list[dict[str, Any]]) -> httpx.Response:
        with httpx.Client(base_url=self.server.root, timeout=30, headers={
                "authorization": f"Bearer {self.server.token(self.accounts[who])}"}) as cl:
            return cl.post(f"/cds-services/{service}/feedback", json={"feedback": items})


@pytest.fixture
def region(server: Server) -> Region:
    c = server.client
    reg = Region(server)
    ids = reg.ids
    for key in ("A", "B", "C"):
        ids["org" + key] = _created(c.post("/Organization", json={
            "resourceType": "Organization", "name": NAMES[key],
            "identifier": [{"system": ORGANIZATION, "value": CODES[key]}]}))

    def patient(org: str, mrn: str) -> str:
        return _created(c.post("/Patient", json={
            "resourceType": "Patient", "managingOrganization": {"reference": f"Organization/{ids['org' + org]}"},
            "identifier": [{"system": ID_CARD, "value": R_ID}, {"system": mrn_system(CODES[org]), "value": mrn}],
            "name": [{"family": "王", "given": ["小红"]}], "birthDate": "1949-12-31", "gender": "female"}))

    ids["pA"], ids["pB"] = patient("A", "A-1"), patient("B", "B-1")
    for org, days in (("A", 5), ("B", 700)):
        _created(c.post("/Encounter", json={
            "resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
            "subject": {"reference": f"Patient/{ids['p' + org]}"},
            "serviceProvider": {"reference": f"Organization/{ids['org' + org]}"},
            "period": {"start": _days_ago(days), "end": _days_ago(days)}}))
    # B's 血常规 2 days ago, in B's own codes.
    when = _days_ago(2)
    wbc = _created(c.post("/Observation", json={
        "resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{ids['pB']}"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "6690-2"}], "text": "白细胞计数"},
        "effectiveDateTime": when, "valueQuantity": {"value": 6.2, "unit": "10*9/L"}}))
    ids["cbcB"] = _created(c.post("/DiagnosticReport", json={
        "resourceType": "DiagnosticReport", "status": "final", "subject": {"reference": f"Patient/{ids['pB']}"},
        "code": {"coding": [{"system": LOCAL_CODE_PREFIX + CODES["B"], "code": "L-CBC"}], "text": "血常规"},
        "effectiveDateTime": when, "result": [{"reference": f"Observation/{wbc}"}]}))
    # A's 糖化血红蛋白 10 days ago (LOINC).
    ids["a1cA"] = _created(c.post("/Observation", json={
        "resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{ids['pA']}"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}], "text": "糖化血红蛋白"},
        "effectiveDateTime": _days_ago(10), "valueQuantity": {"value": 6.1, "unit": "%"}}))

    acc = server.accounts
    for who, org in (("docA", "A"), ("docB", "B"), ("docC", "C")):
        prac = _created(c.post("/Practitioner", json={"resourceType": "Practitioner",
                                                      "name": [{"family": "医", "given": [who]}]}))
        ids[who + "_prac"] = prac
        reg.accounts[who], _, _ = acc.add_user(who.lower(), role=Role.CLINICIAN, name=f"{who}医生",
                                               organization=CODES[org], organization_id=ids["org" + org],
                                               practitioner_id=prac)
    # The knowledge: drafted by one committee member, approved by another.
    for name in ("wangwei", "lina"):
        acc.add_user(name, role=Role.COMMITTEE, name=name)
    versions = KnowledgeVersions(server.repo, server.app.platform.audit)
    v = versions.draft(account_principal(server.repo, "wangwei"), orjson.loads(SEED.read_bytes()),
                       effective_from="2025-01-01")
    versions.approve(v.id, account_principal(server.repo, "lina"))
    return reg


def order(patient: str, system: str, code: str, oid: str = "sr-1", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "id": oid, "status": "draft", "intent": "order",
            "subject": {"reference": f"Patient/{patient}"}, "code": {"coding": [{"system": system, "code": code}]},
            **extra}


def body(reg: Region, who: str, patient: str, orders: list[dict[str, Any]], hook: str = "order-select") -> dict[str, Any]:
    ctx: dict[str, Any] = {"userId": f"Practitioner/{reg.ids[who + '_prac']}", "patientId": patient,
                           "draftOrders": {"resourceType": "Bundle", "type": "collection",
                                           "entry": [{"resource": o} for o in orders]}}
    if hook == "order-select":
        ctx["selections"] = [f"ServiceRequest/{o['id']}" for o in orders]
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": ctx}


def cards(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 200, r.text
    return [c for c in r.json()["cards"] if c["source"]["label"].startswith("检查检验结果互认")]


def test_order_select_and_sign_find_the_other_institutions_result(region: Region) -> None:
    """A's clinician orders 血常规 in A's own code (JY0001): B's result (L-CBC) is the same item."""
    ids = region.ids
    local_a = LOCAL_CODE_PREFIX + CODES["A"]
    r = region.call("docA", body(region, "docA", ids["pA"], [order(ids["pA"], local_a, "JY0001")]))
    [c] = cards(r)
    assert c["indicator"] == "info" and NAMES["B"] in c["summary"] and "京津冀HR" in c["summary"]
    assert "6.2 10*9/L" in c["detail"] and "室间质评" in c["detail"]
    assert c["links"][-1]["url"].endswith(f"/fhir/DiagnosticReport/{ids['cbcB']}")
    assert c["links"][0]["url"].endswith(f"/clinician/patient/{ids['pA']}/record?tab=labs")
    [s] = c["suggestions"]
    assert s["actions"][0]["type"] == "delete" and s["actions"][0]["resourceId"] == "ServiceRequest/sr-1"
    # The link opens the result for this clinician (the same Access).
    with region.server.as_(region.accounts["docA"]) as cl:
        assert cl.get(f"/DiagnosticReport/{ids['cbcB']}").status_code == 200
    # Accepting the suggestion is recorded by the service's feedback endpoint.
    now = datetime.now(UTC).isoformat()
    fb = region.feedback("docA", "hutong-order-select", [{"card": c["uuid"], "outcome": "accepted",
                                                          "acceptedSuggestions": [{"id": s["uuid"]}],
                                                          "outcomeTimestamp": now}])
    assert fb.status_code == 200, fb.text
    # order-sign: a warning that needs one of the 不互认理由; an override with a reason is recorded.
    r = region.call("docA", body(region, "docA", ids["pA"], [order(ids["pA"], local_a, "JY0001")], "order-sign"),
                    "hutong-order-sign")
    [w] = cards(r)
    assert w["indicator"] == "warning"
    assert [x["display"] for x in w["overrideReasons"]] == ["病情变化", "结果存疑", "质量问题", "患者要求", "其他(需填写)"]
    fb = region.feedback("docA", "hutong-order-sign", [{
        "card": w["uuid"], "outcome": "overridden", "outcomeTimestamp": now,
        "overrideReason": {"reason": w["overrideReasons"][0], "userComment": "发热加重，需复查"}}])
    assert fb.status_code == 200, fb.text
    bad = region.feedback("docA", "hutong-order-sign", [{
        "card": w["uuid"], "outcome": "overridden", "outcomeTimestamp": now,
        "overrideReason": {"reason": {"system": w["overrideReasons"][0]["system"], "code": "too-expensive"}}}])
    assert bad.status_code == 400
    for words in (None, "", "  "):  # 其他(需填写): "other" needs the clinician's own words
        reason: dict[str, Any] = {"reason": w["overrideReasons"][4]}
        if words is not None:
            reason["userComment"] = words
        other = region.feedback("docA", "hutong-order-sign", [{
            "card": w["uuid"], "outcome": "overridden", "outcomeTimestamp": now, "overrideReason": reason}])
        assert other.status_code == 400 and "HT-0534" in other.text, other.text
    audit = region.server.app.platform.audit
    rows = [e.extra for e in audit.search(action="cds-feedback", limit=20)]
    assert {(x.get("rule"), x.get("outcome"), x.get("overrideReason")) for x in rows} == {
        (RULE_ID, "accepted", None), (RULE_ID, "overridden", "condition-changed")}
    # An emergency (stat) order is never recognised.
    r = region.call("docA", body(region, "docA", ids["pA"], [order(ids["pA"], local_a, "JY0001", priority="stat")]))
    assert cards(r) == []


def test_imaging_from_the_other_institution(region: Region) -> None:
    """B's 胸部CT 20 days ago (a study without exam code: CT + SNOMED 胸部 as the synthetic PACS
    writes series; its report's conclusion is the card's result) for A's order coded JC1001; a
    头颅MR order finds nothing."""
    ids, c = region.ids, region.server.client
    sid = _created(c.post("/ImagingStudy", json={
        "resourceType": "ImagingStudy", "status": "available", "subject": {"reference": f"Patient/{ids['pB']}"},
        "started": _days_ago(20), "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}],
        "series": [{"uid": "1.2.3", "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"},
                    "bodySite": {"system": "http://snomed.info/sct", "code": "51185008"}}]}))
    _created(c.post("/DiagnosticReport", json={
        "resourceType": "DiagnosticReport", "status": "final", "subject": {"reference": f"Patient/{ids['pB']}"},
        "code": {"coding": [{"system": LOCAL_CODE_PREFIX + CODES["B"], "code": "R-CT-CHEST"}]},
        "effectiveDateTime": _days_ago(20), "imagingStudy": [{"reference": f"ImagingStudy/{sid}"}],
        "conclusion": "右肺上叶小结节，建议随访"}))
    local_a = LOCAL_CODE_PREFIX + CODES["A"]
    [card] = cards(region.call("docA", body(region, "docA", ids["pA"], [order(ids["pA"], local_a, "JC1001")])))
    assert NAMES["B"] in card["summary"] and "右肺上叶小结节" in card["detail"] and "京津冀HR" in card["summary"]
    assert card["links"][0]["url"].endswith("tab=imaging")
    assert cards(region.call("docA", body(region, "docA", ids["pA"], [order(ids["pA"], local_a, "JC2001")]))) == []


def test_no_basis_no_card_content_from_elsewhere(region: Region) -> None:
    """B's clinician has no basis for R's records at A: A's 糖化血红蛋白 gives no card, and
    nothing of A reaches the answer; B's own 血常规 does (marked 本院).  C (no registration, no
    basis) is refused before any rule runs."""
    ids = region.ids
    local_b = LOCAL_CODE_PREFIX + CODES["B"]
    r = region.call("docB", body(region, "docB", ids["pB"], [order(ids["pB"], local_b, "L-A1C")]))
    assert cards(r) == [] and NAMES["A"] not in r.text and ids["a1cA"] not in r.text
    # Through the golden person too.
    person = region.server.client.get("/Patient", params={
        "identifier": f"{ID_CARD}|{R_ID}", "_tag": "https://fhir.hutong.dev/CodeSystem/mpi|golden"}).json()
    golden = person["entry"][0]["resource"]["id"]
    r = region.call("docB", body(region, "docB", golden, [order(golden, local_b, "L-A1C")]))
    assert r.status_code in (200, 403) and NAMES["A"] not in r.text and ids["a1cA"] not in r.text
    # A's clinician (treatment basis) is shown A's own result for the same order.
    r = region.call("docA", body(region, "docA", ids["pA"], [order(ids["pA"], local_b, "L-A1C")]))
    [c] = cards(r)
    assert NAMES["A"] in c["summary"] and "本院" in c["summary"]
    # B's own 血常规: a card for B's clinician.
    [c] = cards(region.call("docB", body(region, "docB", ids["pB"], [order(ids["pB"], local_b, "L-CBC")])))
    assert NAMES["B"] in c["summary"] and "本院" in c["summary"]
    # C: refused (403 HT-0528), no card, no name.
    r = region.call("docC", body(region, "docC", ids["pA"], [order(ids["pA"], local_b, "L-CBC")]))
    assert r.status_code == 403 and NAMES["B"] not in r.text


def test_a_forged_prefetch_result_is_never_another_institutions(region: Region) -> None:
    """B's clinician sends, as prefetch, a 糖化血红蛋白 "performed by A" about R's golden person:
    the platform does not hold it, so it is the caller's own data, and a result's institution is
    the registration that holds it, never the performer it names: no card naming A."""
    ids = region.ids
    person = region.server.client.get("/Patient", params={
        "identifier": f"{ID_CARD}|{R_ID}", "_tag": "https://fhir.hutong.dev/CodeSystem/mpi|golden"}).json()
    golden = person["entry"][0]["resource"]["id"]
    forged = {"resourceType": "Observation", "id": "forged-1", "status": "final",
              "subject": {"reference": f"Patient/{golden}"}, "performer": [{"reference": f"Organization/{ids['orgA']}"}],
              "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
              "effectiveDateTime": _days_ago(1), "valueQuantity": {"value": 5.0, "unit": "%"}}
    b = body(region, "docB", golden, [order(golden, LOCAL_CODE_PREFIX + CODES["B"], "L-A1C")])
    b["prefetch"] = {"a1c": {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": forged}]}}
    r = region.call("docB", b)
    assert r.status_code == 200, r.text
    assert cards(r) == [] and NAMES["A"] not in r.text


def test_no_approved_knowledge_no_card(region: Region) -> None:
    """Retire the only version: the rule says nothing any more."""
    versions = KnowledgeVersions(region.server.repo, region.server.app.platform.audit)
    [v] = versions.list()
    versions.retire(v.id, account_principal(region.server.repo, "wangwei"))
    ids = region.ids
    r = region.call("docA", body(region, "docA", ids["pA"],
                                 [order(ids["pA"], LOCAL_CODE_PREFIX + CODES["A"], "JY0001")]))
    assert cards(r) == []


def test_a_report_with_only_issued_and_a_value_over_a_period_are_found(region: Region) -> None:
    """A report may have no effective date (DiagnosticReport.effective[x] is 0..1), only when it was
    released (``issued``); a value may be measured over a period (effectivePeriod).  The rule's
    search by ``date`` did not see the first, and it dated the second from nothing (no card).
    Both are B's, found through the real store for A's orders."""
    ids, c = region.ids, region.server.client
    lft = _created(c.post("/DiagnosticReport", json={
        "resourceType": "DiagnosticReport", "status": "final", "subject": {"reference": f"Patient/{ids['pB']}"},
        "code": {"coding": [{"system": LOCAL_CODE_PREFIX + CODES["B"], "code": "L-LFT"}], "text": "肝功能"},
        "issued": _days_ago(4)}))
    local_a = LOCAL_CODE_PREFIX + CODES["A"]
    [card] = cards(region.call("docA", body(region, "docA", ids["pA"], [order(ids["pA"], local_a, "JY0012")])))
    assert NAMES["B"] in card["summary"] and card["links"][-1]["url"].endswith(f"/fhir/DiagnosticReport/{lft}")
    glu = _created(c.post("/Observation", json={
        "resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{ids['pB']}"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "14771-0"}], "text": "空腹血糖"},
        "effectivePeriod": {"start": _days_ago(3), "end": _days_ago(3)}, "valueQuantity": {"value": 5.4,
                                                                                          "unit": "mmol/L"}}))
    [card] = cards(region.call("docA", body(region, "docA", ids["pA"], [order(ids["pA"], local_a, "JY0031")])))
    assert card["links"][-1]["url"].endswith(f"/fhir/Observation/{glu}") and "5.4 mmol/L" in card["detail"]
