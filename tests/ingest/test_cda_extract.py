"""Structured extraction from the five WS/T 500 types (hutong.ingest.cda.extract),
on hand-written documents with Chinese content, ICD-10 / ICD-9-CM-3 / LOINC codes and units."""

from __future__ import annotations

from typing import Any

import pytest
from cda_helpers import REALISTIC, SENDER, full_url, mapped, one, read, resources, validate_all

from hutong.ingest.cda.mapping import CdaMapped, to_bundle
from hutong.ingest.cda.parse import CdaError
from hutong.systems import document_system, order_system, visit_system

ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
V3_INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
EXT_SOURCE_DOC = "https://fhir.hutong.dev/StructureDefinition/source-document"


@pytest.fixture(scope="module")
def lab() -> CdaMapped:
    return mapped("realistic/C0007_lab_report.xml")


def by_code(m: CdaMapped, rtype: str) -> dict[str, dict[str, Any]]:
    out = {}
    for r in resources(m, rtype):
        coding = r["code"].get("coding") or [{}]
        out[coding[0].get("code") or r["code"]["text"]] = r
    return out


@pytest.mark.parametrize("name", sorted(p.name for p in REALISTIC.glob("*.xml")))
def test_every_extracted_resource_validates_and_points_at_its_document(name: str) -> None:
    m = mapped(f"realistic/{name}")
    validate_all(m)
    docref = full_url(m, one(m, "DocumentReference"))
    source = f"cda:{SENDER.code}#{m.document_id}"
    header = {"Patient", "Practitioner", "Encounter", "Binary", "DocumentReference"}
    extracted = [e for e in m.bundle["entry"] if e["resource"]["resourceType"] not in header]
    assert extracted
    for e in extracted:
        r = e["resource"]
        assert r["meta"]["source"] == source
        ident = r["identifier"][0]
        assert ident["system"] == document_system(SENDER.code) and ident["value"].startswith(m.document_id + "#")
        link = {
            "Observation": lambda r: r["derivedFrom"][0]["reference"],
            "MedicationStatement": lambda r: r["derivedFrom"][0]["reference"],
            "Procedure": lambda r: r["report"][0]["reference"],
            "Condition": lambda r: r["evidence"][0]["detail"][0]["reference"],
            "DiagnosticReport": lambda r: next(x["valueReference"]["reference"] for x in r["extension"]
                                               if x["url"] == EXT_SOURCE_DOC),
        }[r["resourceType"]](r)
        assert link == docref
        assert r["subject"]["reference"] == full_url(m, one(m, "Patient"))


def test_lab_report(lab: CdaMapped) -> None:
    report = one(lab, "DiagnosticReport")
    assert report["status"] == "final"
    assert report["category"] == [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                                               "code": "LAB", "display": "Laboratory"}], "text": "生化检验"}]
    assert report["code"]["coding"][0] == {"system": LOINC, "code": "11502-2", "display": "Laboratory report"}
    assert report["effectiveDateTime"] == "2024-03-15T10:15:00+08:00"
    assert report["issued"] == "2024-03-15T14:30:00+08:00"
    assert report["conclusion"] == "空腹血糖及糖化血红蛋白升高，甘油三酯升高，请结合临床。"
    assert {"type": {"text": "报告单号"}, "system": "urn:oid:2.16.156.10011.1.33", "value": "LIS2024031500123",
            "assigner": {"reference": "Organization/org-hutong-demo"}} in report["identifier"]
    assert report["basedOn"] == [{"identifier": {"system": order_system(SENDER.code), "value": "SQ2024031500871"},
                                  "display": "电子申请单"}]
    observations = resources(lab, "Observation")
    assert len(observations) == 7
    assert [r["reference"] for r in report["result"]] == [full_url(lab, o) for o in observations]
    assert report["encounter"]["reference"] == full_url(lab, one(lab, "Encounter"))


def test_lab_quantitative_result_with_range_and_interpretation(lab: CdaMapped) -> None:
    glucose = by_code(lab, "Observation")["2345-7"]
    assert glucose["code"] == {"coding": [{"system": LOINC, "code": "2345-7", "display": "葡萄糖"}], "text": "葡萄糖"}
    assert glucose["category"][0]["coding"][0]["code"] == "laboratory"
    assert glucose["valueQuantity"] == {"value": 7.8, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"}
    assert glucose["referenceRange"] == [{
        "low": {"value": 3.9, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"},
        "high": {"value": 6.1, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"}}]
    assert glucose["interpretation"][0] == {"coding": [{"system": V3_INTERP, "code": "H", "display": "High"}]}
    assert glucose["interpretation"][1]["coding"] == [
        {"system": "urn:oid:2.16.156.10011.2.3.2.38", "code": "2", "display": "异常"}]
    assert glucose["effectiveDateTime"] == "2024-03-15T10:15:00+08:00"
    assert glucose["method"] == {"text": "全自动生化分析仪"}
    assert glucose["note"] == [{"text": "标本：血清"}]
    assert glucose["status"] == "final"


def test_lab_units_to_ucum_and_interpretation_from_result_words(lab: CdaMapped) -> None:
    obs = by_code(lab, "Observation")
    assert obs["2160-0"]["valueQuantity"] == {"value": 68, "unit": "μmol/L", "system": UCUM, "code": "umol/L"}
    assert obs["4548-4"]["valueQuantity"]["code"] == "%"
    # 偏高 in the 检验结果代码 names the v3 code when no interpretationCode does
    tg = obs["2571-8"]
    assert {"system": V3_INTERP, "code": "H", "display": "High"} in tg["interpretation"][0]["coding"]
    assert tg["referenceRange"] == [{"text": "0.45-1.70"}]
    assert {"system": V3_INTERP, "code": "N", "display": "Normal"} in obs["2160-0"]["interpretation"][0]["coding"]


def test_lab_comparator_qualitative_and_plain_results(lab: CdaMapped) -> None:
    obs = by_code(lab, "Observation")
    assert obs["30522-7"]["valueQuantity"] == {"value": 0.5, "comparator": "<", "unit": "mg/L", "system": UCUM,
                                               "code": "mg/L"}
    hbsag = obs["HBSAG"]
    assert hbsag["code"] == {"coding": [{"code": "HBSAG"}], "text": "乙型肝炎病毒表面抗原"}
    assert hbsag["valueString"] == "阴性" and hbsag["effectiveDateTime"] == "2024-03-15T11:30:00+08:00"
    alt = obs["1742-6"]  # the CCD-style result observation
    assert alt["valueQuantity"] == {"value": 35, "unit": "U/L", "system": UCUM, "code": "U/L"}
    assert alt["interpretation"] == [{"coding": [{"system": V3_INTERP, "code": "N", "display": "Normal"}]}]
    assert alt["referenceRange"][0]["high"]["value"] == 40


def test_exam_report() -> None:
    m = mapped("realistic/C0006_exam_report.xml")
    report = one(m, "DiagnosticReport")
    assert report["code"] == {"coding": [{"system": LOINC, "code": "24627-2", "display": "胸部CT平扫"}],
                              "text": "胸部CT平扫"}
    assert report["category"] == [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                                               "code": "CT", "display": "CAT Scan"}], "text": "CT"}]
    assert report["conclusion"] == "右肺上叶实性结节，建议3个月后复查胸部CT。"
    assert "右肺上叶尖段见一实性结节" in report["text"]["div"] and "诊断意见" in report["text"]["div"]
    assert report["effectiveDateTime"] == "2024-03-16T14:20:00+08:00"
    assert report["issued"] == "2024-03-16T16:05:00+08:00"
    assert {"system": "urn:oid:2.16.156.10011.1.32", "value": "PACS202403160045"}.items() <= \
        report["identifier"][1].items()
    findings = resources(m, "Observation")
    assert [r["reference"] for r in report["result"]] == [full_url(m, o) for o in findings]
    coded, measured = findings
    assert coded["valueCodeableConcept"]["coding"][0] == {"system": "urn:oid:2.16.156.10011.2.3.2.38",
                                                          "code": "2", "display": "异常"}
    assert coded["category"][0]["coding"][0]["code"] == "imaging"
    assert measured["code"] == {"text": "结节最大径"}
    assert measured["valueQuantity"] == {"value": 8, "unit": "mm", "system": UCUM, "code": "mm"}


def test_outpatient_record() -> None:
    m = mapped("realistic/C0002_outpatient_record.xml")
    enc = one(m, "Encounter")
    assert enc["class"]["code"] == "AMB" and enc["status"] == "finished"
    assert enc["period"] == {"start": "2024-03-10T09:20:00+08:00"}  # author/time: 就诊日期时间
    assert enc["reasonCode"] == [{"text": "咳嗽、咳痰伴发热3天"}]
    assert enc["location"] == [{"location": {"display": "呼吸内科门诊"}}]
    # no encompassingEncounter, so no visit number: the visit is identified by the document
    assert enc["identifier"] == [{"system": document_system(SENDER.code), "value": "MZBL20240310000078#Encounter-1"}]
    conditions = resources(m, "Condition")
    assert [(c["code"]["coding"][0]["system"], c["code"]["coding"][0]["code"], c["code"]["text"])
            for c in conditions] == [(ICD10, "J20.900", "急性支气管炎"), (ICD10, "I10.x00", "原发性高血压")]
    assert conditions[0]["recordedDate"] == "2024-03-10T09:45:00+08:00"
    assert conditions[0]["category"][0]["coding"][0]["code"] == "encounter-diagnosis"
    assert [d["condition"]["reference"] for d in enc["diagnosis"]] == [full_url(m, c) for c in conditions]
    assert [d["rank"] for d in enc["diagnosis"]] == [1, 2]
    vitals = {o["code"]["text"]: o for o in resources(m, "Observation")}
    assert set(vitals) == {"体温", "脉率", "呼吸频率", "血压"}
    assert vitals["体温"]["code"]["coding"][0] == {"system": LOINC, "code": "8310-5"}
    assert vitals["体温"]["valueQuantity"] == {"value": 38.2, "unit": "℃", "system": UCUM, "code": "Cel"}
    assert vitals["脉率"]["valueQuantity"]["code"] == "/min"
    bp = vitals["血压"]
    assert bp["code"]["coding"][0]["code"] == "85354-9"
    assert [(c["code"]["coding"][0]["code"], c["valueQuantity"]["value"], c["valueQuantity"]["code"])
            for c in bp["component"]] == [("8480-6", 128, "mm[Hg]"), ("8462-4", 82, "mm[Hg]")]
    assert all(o["category"][0]["coding"][0]["code"] == "vital-signs" for o in vitals.values())
    assert all(o["effectiveDateTime"] == "2024-03-10T09:20:00+08:00" for o in vitals.values())
    patient = one(m, "Patient")
    assert patient["address"][0]["text"] == "北京市市辖区朝阳区六里屯街道朝阳北路3号楼2单元501室"
    assert patient["address"][0]["district"] == "朝阳区" and patient["address"][0]["postalCode"] == "100025"
    assert patient["telecom"] == [{"system": "phone", "value": "13612345678", "use": "mobile"}]
    assert {"system": "urn:oid:2.16.156.10011.1.2", "value": "110105001002003004"}.items() <= \
        patient["identifier"][1].items()


def test_discharge_summary() -> None:
    m = mapped("realistic/C0053_discharge_summary.xml")
    enc = one(m, "Encounter")
    assert enc["class"]["code"] == "IMP" and enc["status"] == "finished"
    assert enc["period"] == {"start": "2024-03-01T10:30:00+08:00", "end": "2024-03-12T10:00:00+08:00"}
    assert enc["identifier"] == [{"system": visit_system(SENDER.code), "value": "ZY0066031-03"}]
    assert enc["location"] == [{"location": {"display": "心血管内科"}}]
    conditions = resources(m, "Condition")
    roles = [(c["code"]["coding"][0]["code"], c["extension"][0]["valueCoding"]["code"]) for c in conditions]
    assert roles == [("I20.000", "AD"), ("I25.103", "DD"), ("I10.x05", "DD"), ("E11.900", "DD")]
    assert all(c["code"]["coding"][0]["system"] == ICD10 for c in conditions)  # .11.5 is an ICD-10 table too
    assert [(d["use"]["coding"][0]["code"], d["rank"]) for d in enc["diagnosis"]] == [
        ("AD", 1), ("DD", 1), ("DD", 2), ("DD", 3)]
    meds = resources(m, "MedicationStatement")
    assert [s["medicationCodeableConcept"]["text"] for s in meds] == [
        "阿司匹林肠溶片", "硫酸氢氯吡格雷片", "阿托伐他汀钙片", "盐酸二甲双胍片"]
    aspirin, _, _, metformin = meds
    assert aspirin["dosage"][0]["text"] == "阿司匹林肠溶片 100mg 口服 每日一次"
    assert aspirin["dosage"][0]["doseAndRate"] == [{"doseQuantity": {"value": 100, "unit": "mg", "system": UCUM,
                                                                     "code": "mg"}}]
    assert aspirin["dosage"][0]["route"]["text"] == "口服"
    assert metformin["dosage"][0]["text"] == "盐酸二甲双胍片 每次0.5g 3次/日 口服"
    assert all(s["status"] == "active" and s["category"]["coding"][0]["code"] == "community" for s in meds)
    assert all(s["effectivePeriod"] == {"start": "2024-03-12T10:00:00+08:00"} for s in meds)
    assert all(s["context"]["reference"] == full_url(m, enc) for s in meds)
    assert resources(m, "Procedure") == []  # not in the C0053 extraction


def test_front_page() -> None:
    m = mapped("realistic/C0032_front_page.xml")
    enc = one(m, "Encounter")
    assert enc["period"] == {"start": "2024-03-13T21:30:00+08:00", "end": "2024-03-19T10:00:00+08:00"}
    assert enc["hospitalization"]["admitSource"]["coding"][0] == {
        "system": "urn:oid:2.16.156.10011.2.3.1.270", "code": "2", "display": "急诊"}
    assert enc["hospitalization"]["dischargeDisposition"]["text"] == "医嘱离院"
    assert enc["length"] == {"value": 6, "unit": "d", "system": UCUM, "code": "d"}
    assert enc["location"] == [
        {"location": {"display": "普通外科"}, "status": "completed", "period": {"start": "2024-03-13T21:30:00+08:00"}},
        {"location": {"display": "胃肠外科"}, "status": "completed", "period": {"end": "2024-03-19T10:00:00+08:00"}}]
    conditions = resources(m, "Condition")
    # the principal (主要诊断) ranks first although the document lists it second; 门急诊诊断 is not extracted
    principal = next(c for c in conditions if c["code"]["coding"][0]["code"] == "K35.900x002")
    other = next(c for c in conditions if c["code"]["coding"][0]["code"] == "K65.001")
    assert len(conditions) == 2 and principal["code"]["text"] == "急性化脓性阑尾炎"
    ranks = {d["condition"]["reference"]: d["rank"] for d in enc["diagnosis"]}
    assert ranks == {full_url(m, principal): 1, full_url(m, other): 2}
    procedures = resources(m, "Procedure")
    assert [(p["code"]["coding"][0]["system"], p["code"]["coding"][0]["code"], p["code"]["text"])
            for p in procedures] == [("http://hl7.org/fhir/sid/icd-9-cm", "47.0100", "腹腔镜下阑尾切除术"),
                                     ("http://hl7.org/fhir/sid/icd-9-cm", "54.9100", "经皮腹腔引流术")]
    appendectomy, drainage = procedures
    assert appendectomy["performedDateTime"] == "2024-03-14T09:30:00+08:00"
    assert appendectomy["performer"] == [{"function": {"text": "术者"}, "actor": {"display": "马强"}}]
    assert drainage["performedPeriod"] == {"start": "2024-03-14T10:00:00+08:00", "end": "2024-03-14T10:15:00+08:00"}
    assert all(p["status"] == "completed" and p["encounter"]["reference"] == full_url(m, enc) for p in procedures)
    patient = one(m, "Patient")
    kinds = [i["type"]["text"] for i in patient["identifier"]]
    assert kinds == ["居民健康卡", "住院号", "病案号", "居民身份证"]
    assert m.patient_identifier is not None and m.patient_identifier["value"] == "ZY0081177"  # 住院号 before 病案号


def test_malformed_body_time_is_refused_with_its_xpath() -> None:
    data = read(REALISTIC / "C0032_front_page.xml").replace(b'value="20240314093000"', b'value="2024-03-14"')
    with pytest.raises(CdaError) as e:
        to_bundle(data, SENDER)
    assert e.value.code == "cda-body"
    assert e.value.text.startswith("/ClinicalDocument/component/structuredBody/component[4]/section/entry[1]"
                                   "/procedure/effectiveTime/@value")


def test_empty_values_are_skipped_not_refused() -> None:
    data = read(REALISTIC / "C0007_lab_report.xml").replace(b'<value xsi:type="REAL" value="7.8"/>',
                                                            b'<value xsi:type="REAL" value=""/>')
    glucose = by_code(to_bundle(data, SENDER), "Observation")["2345-7"]
    # the 检验结果代码 still says something: it becomes the value
    assert glucose["valueCodeableConcept"]["text"] == "异常"


def test_words_in_a_number_field_are_kept() -> None:
    data = read(REALISTIC / "C0007_lab_report.xml").replace(b'value="35" unit="U/L"', b'value="+++" unit="U/L"')
    assert by_code(to_bundle(data, SENDER), "Observation")["1742-6"]["valueString"] == "+++"
