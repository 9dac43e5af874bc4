"""Issue 14, item 3: the mutual-recognition (检查检验结果互认) rule, directly.

The rule reads the patient's record only through a :class:`hutong.cds.cards.RecordSource`
(what the caller's Access admits; tests/cds/test_recognition_http.py checks that over HTTP with
the real service).  Here the record source is an in-memory list, so each rule of the engine is
checked alone: equivalence through two institutions' different local codes, the window per item
and region, QC eligibility, the negative list (always, emergency, pregnancy from the order or
the record), scope marks (京HR / 京津冀HR), imaging by modality + body site, and the cards of
order-select and order-sign.  The knowledge is the packaged seed (hutong/cds/seed), and the
last tests run it from the store through its approved version (both databases).

Institutions (codes as in the seed, the synthetic region's org-0001 ... ):
A 北京市怀柔中心医院 codes labs JY..., B 北京市海淀区医院 codes them L-..., C 北京市房山区第二医院
failed CT QC, E 北京市西城中医医院 whose QC ended 2026-06-30, T a Tianjin hospital (region 12).
"""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest

from hutong.cds.cards import ORDER_SELECT, ORDER_SIGN, HookRequest
from hutong.cds.knowledge import ITEM_SYSTEM, LOCAL_CODE_PREFIX, SITUATION_SYSTEM, Knowledge, parse
from hutong.cds.recognition import OVERRIDE_REASONS, RecognitionRule, find_equivalents
from hutong.cli.cds import SEED
from hutong.security.principal import Principal, Role
from hutong.synth.catalog.imaging import EXAM_SYSTEM
from hutong.systems import ORGANIZATION

NOW = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)  # 12:00 in Beijing
TODAY = date(2026, 12, 7)
CODES = {"A": "121101164000124574", "B": "12110108400826012G", "C": "12110111400192291J",
         "E": "12110102400522289D", "T": "12120101MB0000001X"}
NAMES = {"A": "北京市怀柔中心医院", "B": "北京市海淀区医院", "C": "北京市房山区第二医院", "E": "北京市西城中医医院",
         "T": "天津市第一中心医院"}
ICD10 = "http://hl7.org/fhir/sid/icd-10"


def seed_data() -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(SEED.read_bytes())
    # The Tianjin hospital passed QC for everything (the seed is the Beijing demo region's).
    data["quality"].append({"institution": CODES["T"], "program": "室间质评", "items": ["*"],
                            "valid_from": "2025-01-01", "valid_to": "2027-12-31"})
    return data


KNOWLEDGE = Knowledge.of("kv-test", parse(seed_data()))


class Records:
    """An in-memory RecordSource: what the caller's Access would have admitted."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.asked: list[str] = []
        self.n = 0
        for key, code in CODES.items():
            self.rows.append({"resourceType": "Organization", "id": f"org{key}", "name": NAMES[key],
                              "identifier": [{"system": ORGANIZATION, "value": code}]})
            self.rows.append({"resourceType": "Patient", "id": f"p{key}",
                              "managingOrganization": {"reference": f"Organization/org{key}"}})

    def resources(self, type: str) -> list[dict[str, Any]]:
        self.asked.append(type)
        return [r for r in self.rows if r["resourceType"] == type]

    def read(self, type: str, id: str) -> dict[str, Any] | None:
        return next((r for r in self.rows if r["resourceType"] == type and r["id"] == id), None)

    def add(self, r: dict[str, Any]) -> str:
        self.n += 1
        r.setdefault("id", f"{r['resourceType'][:3].lower()}{self.n}")
        self.rows.append(r)
        return str(r["id"])

    def lab(self, at: str, days: int, system: str, code: str, *, report: bool = True, value: float = 6.2,
            status: str = "final") -> str:
        when = (NOW - timedelta(days=days)).isoformat()
        # In a report, the value is one analyte of the panel (白细胞计数); alone, the item itself.
        analyte = {"system": "http://loinc.org", "code": "6690-2"} if report else {"system": system, "code": code}
        o = {"resourceType": "Observation", "status": status, "subject": {"reference": f"Patient/p{at}"},
             "code": {"coding": [analyte], "text": "白细胞计数"}, "effectiveDateTime": when,
             "valueQuantity": {"value": value, "unit": "mmol/L"}}
        oid = self.add(o)
        if not report:
            return oid
        return self.add({"resourceType": "DiagnosticReport", "status": status, "effectiveDateTime": when,
                         "subject": {"reference": f"Patient/p{at}"}, "result": [{"reference": f"Observation/{oid}"}],
                         "code": {"coding": [{"system": system, "code": code}]}})

    def study(self, at: str, days: int, *, exam: str | None, modality: str = "CT", site: str = "51185008") -> str:
        s: dict[str, Any] = {
            "resourceType": "ImagingStudy", "status": "available", "subject": {"reference": f"Patient/p{at}"},
            "started": (NOW - timedelta(days=days)).isoformat(), "modality": [{"code": modality}],
            "series": [{"uid": "1.2", "modality": {"code": modality}, "bodySite": {"code": site}}]}
        if exam:
            s["procedureCode"] = [{"coding": [{"system": EXAM_SYSTEM, "code": exam}]}]
        sid = self.add(s)
        self.add({"resourceType": "DiagnosticReport", "status": "final", "subject": {"reference": f"Patient/p{at}"},
                  "imagingStudy": [{"reference": f"ImagingStudy/{sid}"}], "conclusion": "双肺未见明显异常"})
        return sid


def order(code: str, system: str, oid: str = "sr-1", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "id": oid, "status": "draft", "intent": "order",
            "subject": {"reference": "Patient/pB"}, "code": {"coding": [{"system": system, "code": code}]}, **extra}


def request(orders: list[dict[str, Any]], hook: str = ORDER_SELECT, org: str = "orgB") -> HookRequest:
    ctx = {"userId": "Practitioner/x", "patientId": "pB", "selections": [f"ServiceRequest/{o['id']}" for o in orders],
           "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": o} for o in orders]}}
    p = Principal(account_id="acct-doc", role=Role.CLINICIAN, organization_id=org)
    return HookRequest(hook=hook, hook_instance="x", context=ctx, principal=p, access=None)  # type: ignore[arg-type]


def found(rec: Records, orders: list[dict[str, Any]], k: Knowledge = KNOWLEDGE) -> list[tuple[str, str, str]]:
    return [(e.order_id, e.resource_id, e.item.key) for e in find_equivalents(k, request(orders), rec, NOW)]


LOCAL_A, LOCAL_B = LOCAL_CODE_PREFIX + CODES["A"], LOCAL_CODE_PREFIX + CODES["B"]


def test_equivalence_across_two_institutions_with_different_local_codes() -> None:
    """B orders 血常规 as L-CBC; A reported one 3 days ago as JY0001: the same item (cbc)."""
    rec = Records()
    dr = rec.lab("A", 3, LOCAL_A, "JY0001")
    assert found(rec, [order("L-CBC", LOCAL_B)]) == [("sr-1", dr, "cbc")]
    # Ordered by LOINC or by the item code itself: the same result.
    assert found(rec, [order("58410-2", "http://loinc.org")]) == [("sr-1", dr, "cbc")]
    assert found(rec, [order("cbc", ITEM_SYSTEM)]) == [("sr-1", dr, "cbc")]
    # A's code under B's system, or an unmapped code, is not the same test.
    assert found(rec, [order("JY0001", LOCAL_B)]) == []
    assert found(rec, [order("L-XYZ", LOCAL_B)]) == []
    # Another item (肝功能) is not recognised from a 血常规.
    assert found(rec, [order("L-LFT", LOCAL_B)]) == []
    # Each draft order gets its own answer; only the selected ones on order-select.
    hba1c = rec.lab("A", 20, "http://loinc.org", "4548-4", report=False, value=6.1)
    orders = [order("L-CBC", LOCAL_B, "sr-1"), order("L-A1C", LOCAL_B, "sr-2")]
    assert found(rec, orders) == [("sr-1", dr, "cbc"), ("sr-2", hba1c, "hba1c")]
    req = request(orders)
    req.context["selections"] = ["ServiceRequest/sr-2"]
    assert [e.order_id for e in find_equivalents(KNOWLEDGE, req, rec, NOW)] == ["sr-2"]
    # A result entered in error is no result.
    rec2 = Records()
    rec2.lab("A", 3, LOCAL_A, "JY0001", status="entered-in-error")
    assert found(rec2, [order("L-CBC", LOCAL_B)]) == []


def test_window_per_item_and_region() -> None:
    rec = Records()
    rec.lab("A", 8, LOCAL_A, "JY0001")  # 血常规: 7 days
    assert found(rec, [order("L-CBC", LOCAL_B)]) == []
    seven = rec.lab("A", 7, LOCAL_A, "JY0001")
    assert found(rec, [order("L-CBC", LOCAL_B)]) == [("sr-1", seven, "cbc")]
    # The newest recognisable result is the one shown.
    newer = rec.lab("B", 1, LOCAL_B, "L-CBC")
    assert found(rec, [order("L-CBC", LOCAL_B)]) == [("sr-1", newer, "cbc")]
    # 胸部CT: 90 days from a Beijing hospital, 60 from a Tianjin one (per item and region).
    rec = Records()
    rec.study("T", 70, exam="ct-chest")
    assert found(rec, [order("R-CT-CHEST", LOCAL_B)]) == []
    a70 = rec.study("A", 70, exam="ct-chest")
    assert found(rec, [order("R-CT-CHEST", LOCAL_B)]) == [("sr-1", a70, "ct-chest")]
    # Days are Beijing days: 23:30 UTC on 11-29 is 07:30 on 11-30 in Beijing, 7 days before 12-07.
    for when, shown in (("2026-11-29T15:00:00Z", False), ("2026-11-29T23:30:00Z", True),
                        ("2026-11-30T07:30:00+08:00", True), ("2026-11-30", True)):
        rec = Records()
        dr = rec.lab("A", 0, LOCAL_A, "JY0001")
        rec.read("DiagnosticReport", dr)["effectiveDateTime"] = when  # type: ignore[index]
        assert found(rec, [order("L-CBC", LOCAL_B)]) == ([("sr-1", dr, "cbc")] if shown else []), when
    # A result dated in the future is not taken.
    rec = Records()
    rec.lab("A", -2, LOCAL_A, "JY0001")
    assert found(rec, [order("L-CBC", LOCAL_B)]) == []


def test_qc_eligibility_of_the_institution() -> None:
    rec = Records()
    rec.study("C", 10, exam="ct-chest")  # C failed CT QC (passed: false)
    assert found(rec, [order("R-CT-CHEST", LOCAL_B)]) == []
    dx = rec.study("C", 10, exam="dx-chest", modality="DX")  # ... but passed DR
    assert found(rec, [order("R-DR-CHEST", LOCAL_B)]) == [("sr-1", dx, "dx-chest")]
    rec = Records()
    rec.lab("E", 2, "http://loinc.org", "58410-2")  # E's 室间质评 ended 2026-06-30
    assert found(rec, [order("L-CBC", LOCAL_B)]) == []
    # An institution the knowledge does not know has no QC: never eligible.
    rec.rows.append({"resourceType": "Organization", "id": "orgX", "name": "X",
                     "identifier": [{"system": ORGANIZATION, "value": "12110105400999999X"}]})
    rec.rows.append({"resourceType": "Patient", "id": "pX", "managingOrganization": {"reference": "Organization/orgX"}})
    rec.lab("X", 2, "http://loinc.org", "58410-2")
    assert found(rec, [order("L-CBC", LOCAL_B)]) == []


def test_negative_list_items_and_situations() -> None:
    rec = Records()
    rec.lab("A", 1, "http://loinc.org", "10839-9", report=False)  # 肌钙蛋白: never recognised
    assert found(rec, [order("10839-9", "http://loinc.org")]) == []
    dr = rec.lab("A", 2, LOCAL_A, "JY0001")
    ct = rec.study("A", 20, exam="ct-chest")
    assert found(rec, [order("L-CBC", LOCAL_B)]) == [("sr-1", dr, "cbc")]
    # 急诊: a stat order, or an order in an emergency encounter.
    assert found(rec, [order("L-CBC", LOCAL_B, priority="stat")]) == []
    rec.add({"resourceType": "Encounter", "id": "enc-e", "class": {"code": "EMER"}})
    assert found(rec, [order("L-CBC", LOCAL_B, encounter={"reference": "Encounter/enc-e"})]) == []
    rec.add({"resourceType": "Encounter", "id": "enc-a", "class": {"code": "AMB"}})
    assert found(rec, [order("L-CBC", LOCAL_B, encounter={"reference": "Encounter/enc-a"})]) == [("sr-1", dr, "cbc")]
    # 病情急性变化 named outright in the order's reasonCode.
    acute = {"reasonCode": [{"coding": [{"system": SITUATION_SYSTEM, "code": "acute-change"}]}]}
    assert found(rec, [order("L-CBC", LOCAL_B, **acute)]) == []
    # 妊娠 (ICD-10 O26.9 as the order's reason): no 血常规, but 胸部CT is not on that list.
    preg = {"reasonCode": [{"coding": [{"system": ICD10, "code": "O26.9"}]}]}
    assert found(rec, [order("L-CBC", LOCAL_B, **preg)]) == []
    assert found(rec, [order("R-CT-CHEST", LOCAL_B, **preg)]) == [("sr-1", ct, "ct-chest")]
    # ... or from the record: an active pregnancy Condition (Z34.9) the caller may see.
    rec.add({"resourceType": "Condition", "clinicalStatus": {"coding": [{"code": "active"}]},
             "code": {"coding": [{"system": ICD10, "code": "Z34.9"}]}, "subject": {"reference": "Patient/pA"}})
    assert found(rec, [order("L-CBC", LOCAL_B)]) == []
    rec.rows[-1]["clinicalStatus"] = {"coding": [{"code": "resolved"}]}
    assert found(rec, [order("L-CBC", LOCAL_B)]) == [("sr-1", dr, "cbc")]


def test_the_institution_is_the_registrations_never_what_a_result_claims() -> None:
    """A result whose Patient the caller cannot read (or a golden person's, as only a made-up
    prefetch could be) does not become A's result because it names A as performer."""
    rec = Records()
    rec.add({"resourceType": "DiagnosticReport", "status": "final", "subject": {"reference": "Patient/mpi-1"},
             "effectiveDateTime": (NOW - timedelta(days=1)).isoformat(), "performer": [{"reference": "Organization/orgA"}],
             "code": {"coding": [{"system": LOCAL_A, "code": "JY0001"}]}, "conclusion": "正常"})
    rec.add({"resourceType": "DiagnosticReport", "status": "final", "subject": {"reference": "Patient/pGone"},
             "effectiveDateTime": (NOW - timedelta(days=1)).isoformat(), "performer": [{"reference": "Organization/orgA"}],
             "code": {"coding": [{"system": LOCAL_A, "code": "JY0001"}]}, "conclusion": "正常"})
    assert found(rec, [order("L-CBC", LOCAL_B)]) == []


def test_scope_marks() -> None:
    """C反应蛋白 is 京HR (Beijing only), 血常规 京津冀HR: a Tianjin result counts only for the latter."""
    rec = Records()
    rec.lab("T", 1, "http://loinc.org", "1988-5", report=False)
    assert found(rec, [order("L-CRP", LOCAL_B)]) == []
    cbc = rec.lab("T", 1, "http://loinc.org", "58410-2")
    [e] = find_equivalents(KNOWLEDGE, request([order("L-CBC", LOCAL_B)]), rec, NOW)
    assert (e.resource_id, e.rule.scope_mark, e.institution.region, e.institution.name) == \
        (cbc, "京津冀HR", "12", NAMES["T"])
    crp = rec.lab("A", 1, "http://loinc.org", "1988-5", report=False)
    [e] = find_equivalents(KNOWLEDGE, request([order("L-CRP", LOCAL_B)]), rec, NOW)
    assert (e.resource_id, e.rule.scope_mark, e.rule.window_days) == (crp, "京HR", 3)


def test_the_record_is_read_only_for_what_the_orders_need() -> None:
    """An order of no known item reads nothing; an imaging order no lab values; the record's
    Conditions (pregnancy) only once there is a result to recognise."""
    rec = Records()
    rec.lab("A", 3, LOCAL_A, "JY0001")
    assert found(rec, [order("L-XYZ", LOCAL_B)]) == [] and rec.asked == []
    assert found(rec, [order("R-CT-CHEST", LOCAL_B)]) == [] and set(rec.asked) == {"DiagnosticReport", "ImagingStudy"}
    rec.asked.clear()
    assert len(found(rec, [order("L-CBC", LOCAL_B, "a"), order("L-CBC", LOCAL_B, "b")])) == 2
    assert set(rec.asked) == {"Condition", "DiagnosticReport", "Observation"}


def test_imaging_by_modality_and_body_site() -> None:
    """A study without an exam code is the item of its modality and body site (CT, 胸部)."""
    rec = Records()
    sid = rec.study("A", 5, exam=None, modality="CT", site="51185008")
    rec.study("A", 5, exam=None, modality="MR", site="51185008")  # no such item
    assert found(rec, [order("JC1001", LOCAL_A)]) == [("sr-1", sid, "ct-chest")]
    assert found(rec, [order("R-MR-HEAD", LOCAL_B)]) == []


def test_cards_of_order_select_and_order_sign() -> None:
    rec = Records()
    dr = rec.lab("A", 3, LOCAL_A, "JY0001")
    rule = RecognitionRule()
    k = KNOWLEDGE
    req = request([order("L-CBC", LOCAL_B, "sr-9")])
    [e] = find_equivalents(k, req, rec, NOW)
    card = rule._card(req, k, e, "https://hutong.example/fhir", "https://hutong.example")
    j = card.to_json()
    assert j["indicator"] == "info" and "overrideReasons" not in j
    assert NAMES["A"] in j["summary"] and "京津冀HR" in j["summary"] and "2026-12-04" in j["summary"]
    for words in ("6.2 mmol/L", "2026-12-04", NAMES["A"], "京津冀HR", "室间质评", "7 天"):
        assert words in j["detail"], words
    assert j["source"]["topic"] == {"system": ITEM_SYSTEM, "code": "cbc", "display": "血常规"}
    assert [lk["url"] for lk in j["links"]] == ["https://hutong.example/clinician/patient/pB/record?tab=labs",
                                                f"https://hutong.example/fhir/DiagnosticReport/{dr}"]
    [s] = j["suggestions"]
    assert s["actions"] == [{"type": "delete", "description": s["actions"][0]["description"],
                             "resourceId": "ServiceRequest/sr-9"}] and j["selectionBehavior"] == "at-most-one"
    sign = request([order("L-CBC", LOCAL_B, "sr-9")], hook=ORDER_SIGN)
    j = rule._card(sign, k, e, "https://hutong.example/fhir", "").to_json()
    assert j["indicator"] == "warning" and len(j["summary"]) < 140
    assert [(r["code"], r["display"]) for r in j["overrideReasons"]] == [
        ("condition-changed", "病情变化"), ("result-doubtful", "结果存疑"), ("quality-concern", "质量问题"),
        ("patient-request", "患者要求"), ("other", "其他(需填写)")]
    assert len(OVERRIDE_REASONS) == 5 and [lk["label"] for lk in j["links"]] == ["打开该结果"]
    # The ordering institution's own result is marked as such.
    own = rule._card(request([order("JY0001", LOCAL_A)], org="orgA"), k, e, "https://h/fhir", "").to_json()
    assert "本院" in own["summary"]


def test_knowledge_is_checked_whole() -> None:
    bad = seed_data()
    bad["items"][0]["scope"] = "沪HR"
    with pytest.raises(Exception) as e:
        parse(bad)
    assert getattr(e.value, "code", None) == "HT-0501" and "items[0].scope" in str(e.value)
    bad = seed_data()
    bad["local_codes"][0]["codes"]["JY9999"] = "no-such-item"
    with pytest.raises(Exception) as e:
        parse(bad)
    assert "JY9999" in str(e.value)
    bad = copy.deepcopy(seed_data())
    bad["quality"][0]["valid_to"] = "2024-01-01"
    with pytest.raises(Exception) as e:
        parse(bad)
    assert "valid_to" in str(e.value)


def test_the_seed_is_the_demo_regions_knowledge() -> None:
    ks = parse(orjson.loads(SEED.read_bytes()))
    labs = [i for i in ks.items if i.kind == "lab"]
    imaging = [i for i in ks.items if i.kind == "imaging"]
    assert len(labs) >= 24 and len(imaging) >= 12
    assert all(i.loinc for i in labs) and all(i.modality and i.body_site and i.proc_code for i in imaging)
    assert {r.scope_mark for r in ks.regions} == {"京HR", "京津冀HR"}
    assert len({c.institution for c in ks.local_codes}) >= 2 and len({c.institution for c in ks.quality}) >= 5
    # the two institutions code the same items differently
    by_inst: dict[str, dict[str, str]] = {}
    for c in ks.local_codes:
        by_inst.setdefault(c.institution, {})[c.item] = c.code
    a, b = by_inst[CODES["A"]], by_inst[CODES["B"]]
    assert set(a) & set(b) and all(a[i] != b[i] for i in set(a) & set(b))
