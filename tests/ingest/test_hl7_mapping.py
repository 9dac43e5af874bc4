"""HL7 v2 -> FHIR R4 transaction Bundles: every message type, values checked, every resource valid."""

from __future__ import annotations

from typing import Any

import pytest
from hl7_fixtures import FIXTURES, LOCAL, MRN, ORDERS, SENDER, VISITS, build, entry, mapped, resources

from hutong import systems
from hutong.fhir.validation import validate
from hutong.ingest.hl7v2.mapping import Sender, to_bundle
from hutong.ingest.hl7v2.message import Hl7Error, get, parse

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
MAPPABLE = sorted(p.name for p in FIXTURES.glob("*.hl7") if p.name != "python_hl7_oru_r01_v24.hl7")


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return out + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


@pytest.mark.parametrize("name", MAPPABLE)
def test_every_fixture_maps_to_a_valid_transaction(name: str) -> None:
    m = mapped(name)  # validates every resource
    b = m.bundle
    assert b["resourceType"] == "Bundle" and b["type"] == "transaction"
    validate(b, "Bundle")
    urls = [e["fullUrl"] for e in b["entry"]]
    assert len(set(urls)) == len(urls) and all(u.startswith("urn:uuid:") for u in urls)
    control = parse((FIXTURES / name).read_bytes()).control_id
    for e in b["entry"]:
        assert e["resource"]["meta"]["source"] == f"hl7v2:{SENDER.code}#{control}"
        assert e["request"]["method"] in ("POST", "PUT")
        for ref in _refs(e["resource"]):
            assert ref in urls or ref == f"Organization/{SENDER.organization_id}", ref
    msh = parse((FIXTURES / name).read_bytes()).parsed[0]
    assert m.kind == f"{get(msh, 9, 1)}^{get(msh, 9, 2)}"


def test_mapping_is_deterministic() -> None:
    assert mapped("cn_oru_r01_gb18030.hl7").bundle == mapped("cn_oru_r01_gb18030.hl7").bundle


# ------------------------------------------------------------------ ADT
def test_adt_a01_patient_and_encounter() -> None:
    m = mapped("cn_adt_a01_utf8.hl7")
    assert m.kind == "ADT^A01"
    assert m.event_time == "2024-01-05T10:20:00+08:00"  # EVN-6
    assert m.patient_identifier == {"system": MRN, "value": "00012345"}
    assert m.merge is None
    pe = entry(m, "Patient")
    assert pe["request"] == {"method": "PUT", "url": f"Patient?identifier={MRN}|00012345"}
    p = pe["resource"]
    assert p["identifier"] == [
        {"use": "usual", "system": MRN, "value": "00012345"},
        {"use": "official", "system": systems.ID_CARD, "value": "11010519491231002X"},
        {"system": systems.HEALTH_CARD, "value": "H110105001"},
    ]
    assert p["name"] == [{"text": "张伟", "family": "张", "given": ["伟"]}]
    assert p["gender"] == "male"  # GB/T 2261.1 code 1
    assert p["birthDate"] == "1949-12-31"
    assert p["telecom"] == [
        {"system": "phone", "value": "13812345678", "use": "mobile"},
        {"system": "email", "value": "zhangwei@example.cn", "use": "home"},
        {"system": "phone", "value": "010-65123456", "use": "work"},
    ]
    assert p["address"] == [{"use": "home", "text": "北京市朝阳区建国路88号", "line": ["朝阳区建国路88号"],
                             "city": "北京市", "district": "110105", "state": "北京市", "postalCode": "100022",
                             "country": "CHN"}]
    assert p["managingOrganization"] == {"reference": "Organization/org-pumch"}
    ee = entry(m, "Encounter")
    assert ee["request"] == {"method": "PUT", "url": f"Encounter?identifier={VISITS}|Z2024000123"}
    e = ee["resource"]
    assert e["status"] == "in-progress"
    assert e["class"] == {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"}
    assert e["identifier"] == [{"system": VISITS, "value": "Z2024000123", "use": "official"}]
    assert e["subject"] == {"reference": pe["fullUrl"]}
    assert e["period"] == {"start": "2024-01-05T10:00:00+08:00"}
    assert e["location"] == [{"location": {"display": "心内科/301/2"}, "status": "active"}]
    assert e["serviceProvider"] == {"reference": "Organization/org-pumch"}
    assert e["participant"][0]["individual"] == {"display": "王建国"}


def test_adt_a02_transfer_changes_location() -> None:
    e = resources(mapped("cn_adt_a02_utf8.hl7"), "Encounter")[0]
    assert e["status"] == "in-progress"
    assert e["location"] == [{"location": {"display": "ICU/05/1"}, "status": "active"},
                             {"location": {"display": "心内科/301/2"}, "status": "completed"}]


def test_adt_a03_discharge_from_gb18030() -> None:
    m = mapped("cn_adt_a03_gb18030.hl7")
    e = resources(m, "Encounter")[0]
    assert e["status"] == "finished"
    assert e["period"] == {"start": "2024-01-05T10:00:00+08:00", "end": "2024-01-10T15:30:00+08:00"}
    p = resources(m, "Patient")[0]
    assert p["name"][0]["text"] == "张伟"
    # authority 身份证 means the resident identity card
    assert {"use": "official", "system": systems.ID_CARD, "value": "11010519491231002X"} in p["identifier"]
    assert m.event_time == "2024-01-10T16:00:00+08:00"  # EVN-2 (no EVN-6)


def test_adt_a03_without_pv1_45_ends_at_the_event() -> None:
    data = build("EVN|A03|20240110160000", "PID|||7^^^^MR||王^五", "PV1|1|E|||||||||||||||||V9",
                 msg_type="ADT^A03^ADT_A03")
    e = resources(to_bundle(parse(data), SENDER), "Encounter")[0]
    assert e["status"] == "finished"
    assert e["period"] == {"end": "2024-01-10T16:00:00+08:00"}
    assert e["class"]["code"] == "EMER"


def test_adt_a04_outpatient_registration() -> None:
    m = mapped("cn_adt_a04_utf8.hl7")
    p = resources(m, "Patient")[0]
    assert p["name"] == [{"text": "欧阳娜娜", "family": "欧阳", "given": ["娜娜"]}]
    assert p["gender"] == "female"
    e = resources(m, "Encounter")[0]
    assert (e["status"], e["class"]["code"]) == ("in-progress", "AMB")
    assert e["identifier"][0]["value"] == "M2024020100031"


def test_adt_a08_updates_the_patient_only() -> None:
    m = mapped("cn_adt_a08_utf8.hl7")
    assert [e["resource"]["resourceType"] for e in m.bundle["entry"]] == ["Patient"]
    p = m.bundle["entry"][0]
    assert p["request"]["method"] == "PUT"
    assert p["resource"]["address"][0]["text"] == "北京市海淀区中关村大街1号"


@pytest.mark.parametrize("name", ["cn_adt_a28_utf8.hl7", "cn_adt_a31_utf8.hl7"])
def test_adt_a28_a31_patient_only(name: str) -> None:
    m = mapped(name)
    assert [e["resource"]["resourceType"] for e in m.bundle["entry"]] == ["Patient"]
    assert m.bundle["entry"][0]["request"] == {"method": "PUT", "url": f"Patient?identifier={MRN}|00099999"}


def test_whole_han_name_in_family_and_passport() -> None:
    p = resources(mapped("cn_adt_a28_utf8.hl7"), "Patient")[0]
    assert p["name"] == [{"text": "李四", "family": "李四"}]
    assert {"system": systems.PASSPORT, "value": "CHN:E12345678"} in p["identifier"]
    assert {"use": "official", "system": systems.ID_CARD, "value": "34052419800101001X"} in p["identifier"]


def test_adt_a40_merge() -> None:
    m = mapped("cn_adt_a40_utf8.hl7")
    assert m.merge == ({"system": MRN, "value": "00054321"}, {"system": MRN, "value": "00012345"})
    assert [e["resource"]["resourceType"] for e in m.bundle["entry"]] == ["Patient"]
    assert m.event_time == "2024-02-05T08:55:00+08:00"


def test_adt_a40_public_sample_with_foreign_authority() -> None:
    m = mapped("linuxforhealth_adt_a40.hl7")
    assert m.merge == ({"system": "urn:hutong:id:XYZ", "value": "MR2"},
                       {"system": "urn:hutong:id:XYZ", "value": "MR1"})
    assert m.patient_identifier == {"system": "urn:hutong:id:XYZ", "value": "MR1"}


def test_adt_a40_with_identifiers_only_never_blanks_the_record() -> None:
    data = build("EVN|A40|20240205", "PID|||00012345^^^^MR", "MRG|00054321^^^^MR", msg_type="ADT^A40^ADT_A39")
    e = to_bundle(parse(data), SENDER).bundle["entry"][0]
    assert e["request"] == {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={MRN}|00012345"}


def test_adt_public_ascii_sample() -> None:
    m = mapped("python_hl7_adt_a04_v25.hl7")
    p = resources(m, "Patient")[0]
    assert p["identifier"] == [{"system": "urn:hutong:id:100", "value": "0000112234"}]
    assert p["gender"] == "male"
    e = entry(m, "Encounter")
    assert e["request"] == {"method": "POST", "url": "Encounter"}  # no visit number: a plain create
    assert e["resource"]["class"]["code"] == "AMB"


# ------------------------------------------------------------------ ORU
def test_oru_r01_public_nist_sample() -> None:
    m = mapped("nist_elr_oru_r01_case1.hl7")
    assert m.kind == "ORU^R01"
    assert m.event_time == "2008-08-15T10:30:00-07:00"  # OBR-7
    assert m.patient_identifier == {"system": MRN, "value": "9817566735"}
    pe = entry(m, "Patient")
    assert pe["request"] == {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={MRN}|9817566735"}
    assert pe["resource"]["name"] == [{"text": "Philip Johnson", "family": "Johnson", "given": ["Philip"]}]
    assert pe["resource"]["telecom"] == [{"system": "phone", "value": "303-5548889", "use": "home"}]
    assert resources(m, "Encounter") == []  # no PV1
    dre = entry(m, "DiagnosticReport")
    assert dre["request"] == {"method": "PUT", "url": f"DiagnosticReport?identifier={ORDERS}|9700123"}
    dr = dre["resource"]
    assert dr["status"] == "final"
    assert dr["code"]["coding"][0] == {"system": LOINC, "code": "10368-9", "display": "Lead BldC-mCnc"}
    assert dr["code"]["coding"][1] == {"system": LOCAL, "code": "3456543", "display": "Blood lead test"}
    assert dr["issued"] == "2008-08-18T18:00:00-07:00"
    assert dr["effectiveDateTime"] == "2008-08-15T10:30:00-07:00"
    oe = entry(m, "Observation")
    assert dr["result"] == [{"reference": oe["fullUrl"]}]
    o = oe["resource"]
    assert o["valueQuantity"] == {"value": 50, "unit": "ug/dL", "system": UCUM, "code": "ug/dL"}
    assert o["interpretation"] == [{"coding": [{"system": INTERP, "code": "H"}], "text": "H"}]
    assert o["referenceRange"] == [{"text": "<9 mcg/dL:  Acceptable background lead exposure"}]
    assert o["status"] == "final"
    assert o["category"][0]["coding"][0]["code"] == "laboratory"
    assert o["subject"] == {"reference": pe["fullUrl"]}


def test_oru_r01_string_results() -> None:
    m = mapped("nist_elr_oru_r01_case6.hl7")
    obs = resources(m, "Observation")
    assert [o["valueString"] for o in obs] == ["Isolated", "Isolated", "Not Isolated"]
    assert [o["code"]["coding"][0]["code"] for o in obs] == ["6331-3", "20995-1", "17576-0"]
    assert m.event_time == "2010-07-26T11:00:00+08:00"


def test_oru_r01_chinese_lab_report_gb18030() -> None:
    m = mapped("cn_oru_r01_gb18030.hl7")
    assert m.patient_identifier == {"system": MRN, "value": "00012345"}
    enc = entry(m, "Encounter")
    assert enc["request"] == {"method": "POST", "url": "Encounter",
                              "ifNoneExist": f"identifier={VISITS}|Z2024000123"}
    dr = resources(m, "DiagnosticReport")[0]
    assert dr["code"] == {"coding": [{"system": LOCAL, "code": "BLD-CBC", "display": "血常规"}], "text": "血常规"}
    assert dr["issued"] == "2024-01-05T11:25:00+08:00"
    assert dr["encounter"] == {"reference": enc["fullUrl"]}
    assert [i["value"] for i in dr["identifier"]] == ["LAB2024010500123", "SQ2024010500088"]
    assert len(dr["result"]) == 7
    wbc, hgb, plt, abo, hbsag, titer, glu = resources(m, "Observation")
    assert wbc["code"]["coding"] == [{"system": LOCAL, "code": "WBC", "display": "白细胞计数"},
                                     {"system": LOINC, "code": "6690-2", "display": "Leukocytes"}]
    unit = {"unit": "10^9/L", "system": UCUM, "code": "10*9/L"}
    assert wbc["valueQuantity"] == {"value": 11.2, **unit}  # "10^9/L" unescaped in the message
    assert plt["valueQuantity"] == {"value": 210, **unit}  # "10\S\9/L" escaped
    assert wbc["referenceRange"] == [{"text": "3.5-9.5", "low": {"value": 3.5, **unit},
                                      "high": {"value": 9.5, **unit}}]
    assert plt["referenceRange"][0]["low"]["value"] == 125 and plt["referenceRange"][0]["high"]["value"] == 350
    assert wbc["interpretation"][0]["coding"] == [{"system": INTERP, "code": "H"}]  # ↑
    assert hgb["interpretation"][0]["coding"] == [{"system": INTERP, "code": "L"}]  # ↓
    assert plt["note"] == [{"text": "标本轻度溶血"}]
    assert abo["valueString"] == "A型"
    assert hbsag["valueCodeableConcept"] == {"coding": [{"system": LOCAL, "code": "NEG", "display": "阴性"}],
                                             "text": "阴性"}
    assert hbsag["referenceRange"] == [{"text": "阴性"}]
    assert titer["valueRatio"] == {"numerator": {"value": 1}, "denominator": {"value": 128}}
    assert titer["status"] == "preliminary"
    assert glu["valueQuantity"] == {"value": 2.0, "comparator": "<", "unit": "mmol/L", "system": UCUM,
                                    "code": "mmol/L"}
    assert glu["referenceRange"] == [{"text": ">3.9", "low": {"value": 3.9, "unit": "mmol/L", "system": UCUM,
                                                              "code": "mmol/L"}}]
    assert glu["status"] == "corrected"
    # each result is keyed on filler number + test code, so a correction replaces it
    oe = entry(m, "Observation", 6)
    assert oe["request"] == {"method": "PUT", "url": f"Observation?identifier={ORDERS}|LAB2024010500123/GLU"}


def _oru(*obx: str, obr: str = "OBR|1|P1|F1|CBC^血常规^L|||20240105080000|||||||||||||||||F") -> Any:
    data = build("PID|||1^^^^MR||张^三||19800101|M", obr, *obx)
    return to_bundle(parse(data), SENDER)


@pytest.mark.parametrize(("obx5", "expected"), [
    ("^182", {"valueQuantity": {"value": 182, "unit": "mg/dl", "system": UCUM, "code": "mg/dl"}}),
    (">^10", {"valueQuantity": {"value": 10, "comparator": ">", "unit": "mg/dl", "system": UCUM,
                                 "code": "mg/dl"}}),
    ("^2^-^5", {"valueRange": {"low": {"value": 2, "unit": "mg/dl", "system": UCUM, "code": "mg/dl"},
                               "high": {"value": 5, "unit": "mg/dl", "system": UCUM, "code": "mg/dl"}}}),
    ("^1^/^64", {"valueRatio": {"numerator": {"value": 1}, "denominator": {"value": 64}}}),
    ("^2^+", {"valueString": "2+"}),
])
def test_structured_numeric(obx5: str, expected: dict[str, Any]) -> None:
    o = resources(_oru(f"OBX|1|SN|1554-5^GLUCOSE^LN||{obx5}|mg/dl|70-105||||F"), "Observation")[0]
    validate(o, "Observation")
    assert {k: v for k, v in o.items() if k.startswith("value")} == expected


def test_result_status_interpretation_and_ranges() -> None:
    m = _oru("OBX|1|NM|A^a^L||5|%|<5|HH|||X", "OBX|2|TX|B^b^L||line one~line two||||||W",
             "OBX|3|NM|C^c^L||positive||3.5--5.5|阳性|||I|||20240106", "OBX|4|ST|D^d^L||x||normal|Q|||")
    a, b, c, d = resources(m, "Observation")
    assert a["status"] == "cancelled" and a["referenceRange"] == [{"text": "<5", "high": {
        "value": 5, "unit": "%", "system": UCUM, "code": "%"}}]
    assert a["interpretation"] == [{"coding": [{"system": INTERP, "code": "HH"}], "text": "HH"}]
    assert b["status"] == "entered-in-error" and b["valueString"] == "line one\nline two"
    assert c["status"] == "registered"
    assert c["valueString"] == "positive"  # NM that is not a number: the text is kept
    assert c["effectiveDateTime"] == "2024-01-06"  # OBX-14 over OBR-7
    assert [c["referenceRange"][0][k]["value"] for k in ("low", "high")] == [3.5, 5.5]
    assert c["interpretation"][0]["coding"][0]["code"] == "POS"
    assert d["status"] == "unknown" and d["interpretation"] == [{"text": "Q"}]
    assert d["referenceRange"] == [{"text": "normal"}]
    for o in (a, b, c, d):
        validate(o, "Observation")


def test_same_test_twice_gets_distinct_keys() -> None:
    m = _oru("OBX|1|NM|718-7^Hb^LN||120|g/L||||F", "OBX|2|NM|718-7^Hb^LN||121|g/L||||F")
    urls = [e["request"]["url"] for e in m.bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    assert urls == [f"Observation?identifier={ORDERS}|F1/718-7", f"Observation?identifier={ORDERS}|F1/718-7%232"]


def test_results_without_filler_number_are_plain_creates() -> None:
    m = _oru("OBX|1|NM|718-7^Hb^LN||120|g/L||||F", obr="OBR|1|||718-7^Hb^LN|||20240105")
    assert [e["request"] for e in m.bundle["entry"][1:]] == [{"method": "POST", "url": "Observation"},
                                                             {"method": "POST", "url": "DiagnosticReport"}]
    assert resources(m, "DiagnosticReport")[0]["status"] == "unknown"


def test_two_reports_and_two_patients_in_one_message() -> None:
    data = build("PID|||1^^^^MR||张^三", "OBR|1||F1|A^a^L", "OBX|1|NM|x^x^L||1||||||F",
                 "OBR|2||F2|B^b^L", "OBX|1|NM|y^y^L||2||||||P",
                 "PID|||2^^^^MR||李^四", "OBR|1||F3|C^c^L", "OBX|1|NM|z^z^L||3||||||F",
                 "PID|||1^^^^MR||张^三", "OBR|1||F4|D^d^L", "OBX|1|NM|w^w^L||4||||||F")
    m = to_bundle(parse(data), SENDER)
    patients = [e for e in m.bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    assert [p["resource"]["identifier"][0]["value"] for p in patients] == ["1", "2"]  # patient 1 once
    reports = resources(m, "DiagnosticReport")
    assert [r["subject"]["reference"] for r in reports] == [patients[0]["fullUrl"], patients[0]["fullUrl"],
                                                            patients[1]["fullUrl"], patients[0]["fullUrl"]]
    assert [len(r["result"]) for r in reports] == [1, 1, 1, 1]
    assert m.patient_identifier == {"system": MRN, "value": "1"}


# ------------------------------------------------------------------ orders
def test_oml_o21_two_orders() -> None:
    m = mapped("cn_oml_o21_utf8.hl7")
    assert m.kind == "OML^O21"
    assert m.event_time == "2024-03-01T08:55:00+08:00"
    srs = [e for e in m.bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest"]
    assert [e["request"] for e in srs] == [
        {"method": "PUT", "url": f"ServiceRequest?identifier={ORDERS}|SQ2024030100001"},
        {"method": "PUT", "url": f"ServiceRequest?identifier={ORDERS}|SQ2024030100002"}]
    first, second = (e["resource"] for e in srs)
    assert (first["status"], first["intent"]) == ("active", "order")
    assert first["code"]["coding"] == [{"system": LOCAL, "code": "BLD-CRP", "display": "C反应蛋白"}]
    assert second["code"]["coding"][0]["system"] == LOINC
    assert first["requester"] == {"display": "赵敏"}
    assert first["authoredOn"] == "2024-03-01T08:55:00+08:00"
    assert first["priority"] == "stat"  # ORC-7.6 S
    assert first["identifier"] == [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                         "code": "PLAC"}]},
                                    "system": ORDERS, "value": "SQ2024030100001"}]
    enc = entry(m, "Encounter")
    assert first["encounter"] == {"reference": enc["fullUrl"]}
    assert enc["request"]["ifNoneExist"] == f"identifier={VISITS}|M2024030100007"
    assert entry(m, "Patient")["request"]["method"] == "POST"  # orders never overwrite demographics


def test_orm_o01_cancel() -> None:
    m = mapped("cn_orm_o01_utf8.hl7")
    sr = resources(m, "ServiceRequest")[0]
    assert sr["status"] == "revoked"
    assert [i["value"] for i in sr["identifier"]] == ["SQ2024030200009", "RIS2024030200009"]
    assert sr["code"]["text"] == "胸部CT平扫"


def test_orm_o01_public_sample() -> None:
    m = mapped("linuxforhealth_orm_o01_v23.hl7")
    sr = resources(m, "ServiceRequest")[0]
    assert sr["status"] == "active"  # ORC-1 SN
    assert sr["requester"] == {"display": "ORDERING PROVIDER"}
    assert sr["code"]["coding"] == [{"system": LOCAL, "code": "4916", "display": "Diffusion-weighted imaging"}]
    assert m.event_time == "2021-04-07T19:17:58+08:00"
    assert resources(m, "Encounter")[0]["class"]["code"] == "IMP"  # PV1-2 "IP"


def test_oml_o21_public_sample() -> None:
    m = mapped("linuxforhealth_oml_o21.hl7")
    sr = resources(m, "ServiceRequest")[0]
    assert sr["code"]["coding"] == [{"system": LOINC, "code": "58410-2",
                                     "display": "CBC panel - Blood by Automated count"}]
    assert sr["authoredOn"] == "2021-08-24T00:00:00+05:30"
    assert sr["requester"] == {"display": "Reginald Hahn"}
    p = resources(m, "Patient")[0]
    assert p["birthDate"] == "2011-09-26"
    assert p["name"][0]["use"] == "official"


# ------------------------------------------------------------------ identifiers
@pytest.mark.parametrize(("cx", "system", "value"), [
    ("110105194912310021^^^^NNCHN", systems.ID_CARD, "110105194912310021"),
    ("11010519491231002x^^^2.16.156.10011.1.3", systems.ID_CARD, "11010519491231002X"),
    ("11010519491231002X^^^&2.16.156.10011.1.3&ISO^NI", systems.ID_CARD, "11010519491231002X"),
    ("11010519491231002X^^^ID", systems.ID_CARD, "11010519491231002X"),
    ("H123^^^^HC", systems.HEALTH_CARD, "H123"),
    ("H123^^^&2.16.156.10011.1.19&ISO", systems.HEALTH_CARD, "H123"),
    ("E123^^^^PPN", systems.PASSPORT, "USA:E123"),  # PID-28 nationality
    ("42^^^^MR", MRN, "42"),
    ("42^^^^PI", MRN, "42"),
    ("42", MRN, "42"),
    ("42^^^12110000400000000X", MRN, "42"),  # the sender as authority
    ("42^^^BJYB&1.2.3&ISO^SS", "urn:hutong:id:1.2.3", "42"),
    ("42^^^北京医保", "urn:hutong:id:%E5%8C%97%E4%BA%AC%E5%8C%BB%E4%BF%9D", "42"),
    ("42^^^^AN", "urn:hutong:id:12110000400000000X:AN", "42"),
])
def test_pid3_identifier_rules(cx: str, system: str, value: str) -> None:
    data = build(f"PID|||{cx}||王^芳|||||||||||||||||||||||USA", msg_type="ADT^A28^ADT_A05")
    p = to_bundle(parse(data), SENDER).bundle["entry"][0]["resource"]
    validate(p, "Patient")
    assert [(i["system"], i["value"]) for i in p["identifier"]] == [(system, value)]


def test_western_name_and_sex_codes() -> None:
    data = build("PID|||1^^^^MR||Smith^John^Q^Jr^Dr^^L||19800101|U", msg_type="ADT^A31^ADT_A05")
    p = to_bundle(parse(data), SENDER).bundle["entry"][0]["resource"]
    assert p["name"] == [{"use": "official", "text": "Dr John Q Smith Jr", "family": "Smith", "given": ["John", "Q"],
                          "prefix": ["Dr"], "suffix": ["Jr"]}]
    assert p["gender"] == "unknown"


# ------------------------------------------------------------------ errors
def _error(data: bytes) -> Hl7Error:
    with pytest.raises(Hl7Error) as e:
        to_bundle(parse(data), SENDER)
    return e.value


def test_unsupported_type_and_event() -> None:
    e = _error(build("PID|||1", msg_type="SIU^S12^SIU_S12"))
    assert (e.code, e.ack, e.segment, e.field) == ("200", "AR", "MSH", 9)
    e = _error(build("PID|||1", msg_type="ADT^A11^ADT_A09"))
    assert (e.code, e.ack) == ("201", "AR")
    assert "ADT^A11" in e.text


@pytest.mark.parametrize("msg_type", ["ADT^A01^ADT_A01", "ORU^R01^ORU_R01", "ORM^O01^ORM_O01",
                                      "OML^O21^OML_O21"])
def test_missing_pid(msg_type: str) -> None:
    e = _error(build("PV1|1|O", "ORC|NW|1", "OBR|1|1||A^a^L", msg_type=msg_type))
    assert (e.code, e.ack, e.segment) == ("101", "AE", "PID")


def test_content_errors() -> None:
    e = _error(build("PID|||", msg_type="ADT^A28^ADT_A05"))
    assert (e.code, e.ack, e.segment, e.field) == ("101", "AE", "PID", 3)
    # a sex outside table 0001 is no longer an error (issue 15, item 11): a warning, the text kept
    m = to_bundle(parse(build("PID|||1^^^^MR||张^三||19800101|X", msg_type="ADT^A28^ADT_A05")), Sender("X1", "o1"))
    assert [(w.code, w.condition, w.segment, w.field) for w in m.warnings] == [("HT-0260", "103", "PID", 8)]
    assert "gender" not in resources(m, "Patient")[0]
    e = _error(build("PID|||1^^^^MR", msg_type="ADT^A01^ADT_A01"))
    assert (e.code, e.segment) == ("101", "PV1")
    e = _error(build("PID|||1^^^^MR", msg_type="ADT^A40^ADT_A39"))
    assert (e.code, e.segment) == ("101", "MRG")
    e = _error(build("PID|||1^^^^MR", "OBX|1|NM|A^a^L||1"))
    assert (e.code, e.ack, e.segment) == ("100", "AE", "OBX")
    e = _error(build("PID|||1^^^^MR", "OBR|1||F1|", "OBX|1|NM|A^a^L||1"))
    assert (e.code, e.segment, e.field) == ("101", "OBR", 4)
    e = _error(build("PID|||1^^^^MR", "OBR|1||F1|A^a^L|||2024-01-05"))
    assert (e.code, e.ack, e.segment, e.field) == ("102", "AE", "OBR", 7)


def test_public_sample_with_an_invalid_birth_date() -> None:
    # python-hl7's sample has PID-7 "196203520": a content error, AE 102 at PID-7
    e = _error((FIXTURES / "python_hl7_oru_r01_v24.hl7").read_bytes())
    assert (e.code, e.ack, e.segment, e.field) == ("102", "AE", "PID", 7)
    fixed = (FIXTURES / "python_hl7_oru_r01_v24.hl7").read_bytes().replace(b"|196203520|", b"|19620320|")
    m = to_bundle(parse(fixed), Sender("X1", "o1"))
    o = resources(m, "Observation")[0]
    assert o["valueQuantity"]["value"] == 182  # SN "^182"
    assert o["referenceRange"] == [{"text": "70_105"}]
    assert resources(m, "Patient")[0]["identifier"] == [{"use": "usual", "system": "urn:hutong:mrn:X1",
                                                         "value": "555-44-4444"}]


def test_codes_with_stray_whitespace_are_normalised() -> None:
    o = resources(_oru("OBX|1|NM| A  B ^x^L||1||||||F"), "Observation")[0]
    validate(o, "Observation")
    assert o["code"]["coding"][0]["code"] == "A B"


def test_mutated_messages_fail_only_with_hl7_errors() -> None:
    """Seeded random damage to every sample: each outcome is a Bundle of valid resources or an
    Hl7Error, and either way an ACK can be built."""
    import random

    from hutong.ingest.hl7v2.ack import build_ack

    rnd = random.Random(20240105)
    samples = [p.read_bytes() for p in sorted(FIXTURES.glob("*.hl7"))]
    alphabet = b"|^~\\&\r\n0123456789AZaz \"-+.<>:" + "张".encode()
    outcomes = {"mapped": 0, "rejected": 0}
    for _ in range(600):
        data = bytearray(rnd.choice(samples))
        for _ in range(rnd.randint(1, 4)):
            pos = rnd.randrange(len(data) + 1)
            if rnd.random() < 0.4:
                del data[pos:pos + rnd.randint(1, 5)]
            else:
                data[pos:pos] = bytes(rnd.choice(alphabet) for _ in range(rnd.randint(1, 3)))
        raw = bytes(data)
        msg = None
        try:
            msg = parse(raw)
            for e in to_bundle(msg, SENDER).bundle["entry"]:
                validate(e["resource"], e["resource"]["resourceType"])
            build_ack(msg, raw, "AA")
            outcomes["mapped"] += 1
        except Hl7Error as err:
            assert build_ack(msg, raw, err.ack, err).startswith(b"MSH")
            outcomes["rejected"] += 1
    assert outcomes["mapped"] > 100 and outcomes["rejected"] > 100, outcomes
