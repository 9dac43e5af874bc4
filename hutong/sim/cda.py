"""Filled WS/T 500-2016 shared documents (CDA R2) of a simulated EMR, built with lxml.

Seven common types: C0002 门(急)诊病历, C0004 西药处方, C0006 检查报告, C0007
检验报告, C0034 入院记录, C0032 住院病案首页, C0053 出院小结.  Header as WS/T
500's common header (realmCode CN, templateId 2.16.156.10011.2.1.1.<20+n>,
recordTarget with the 身份证 OID 2.16.156.10011.1.3, custodian under the 机构
OID 2.16.156.10011.1.5); body sections and data elements (DE codes of
WS 363 卫生信息数据元目录, section LOINC codes) as the platform's extractor reads
them (hutong.ingest.cda.body).  Every date comes from one :class:`Visit`, so
an 入院记录 is dated at admission and an 出院小结 at discharge, after it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from lxml import etree
from lxml.builder import ElementMaker

from hutong.ingest.cda.doctypes import BY_CODE
from hutong.sim.clinic import DRUGS, EMERGENCY, EXAMS, INPATIENT, Result, Visit
from hutong.sim.region import Hospital, Person

V3 = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
E = ElementMaker(namespace=V3, nsmap={None: V3, "xsi": XSI})
XSI_TYPE = f"{{{XSI}}}type"
DE = "2.16.156.10011.2.2.1"  # 卫生信息数据元目录
LOINC = "2.16.840.1.113883.6.1"
ICD10 = "2.16.156.10011.2.3.3.11"
ICD9CM3 = "2.16.156.10011.2.3.3.12"
ROUTE = "2.16.156.10011.2.3.1.158"


def ts(t: datetime) -> str:
    return t.strftime("%Y%m%d%H%M%S")


def _de(code: str, name: str) -> etree._Element:
    return E.code(code=code, displayName=name, codeSystem=DE, codeSystemName="卫生信息数据元目录")


def _st(text: str) -> etree._Element:
    return E.value(text, {XSI_TYPE: "ST"})


def _obs(code: str, name: str, value: etree._Element, when: datetime | None = None) -> etree._Element:
    parts = [_de(code, name)]
    if when is not None:
        parts.append(E.effectiveTime(value=ts(when)))
    return E.entry(E.observation(*parts, value, classCode="OBS", moodCode="EVN"))


def _section(loinc: str, name: str, text: str, *entries: etree._Element) -> etree._Element:
    return E.component(E.section(E.code(code=loinc, displayName=name, codeSystem=LOINC, codeSystemName="LOINC"),
                                 E.text(text), *entries))


def _dx_entry(code: str, name: str, when: datetime) -> etree._Element:
    return E.entry(E.organizer(
        E.statusCode(),
        E.component(E.observation(_de("DE05.01.025.00", "诊断名称"), _st(name), classCode="OBS", moodCode="EVN")),
        E.component(E.observation(_de("DE05.01.024.00", "诊断代码"), E.effectiveTime(value=ts(when)),
                                  E.value({XSI_TYPE: "CD"}, code=code, codeSystem=ICD10,
                                          codeSystemName="诊断代码表(ICD-10)", displayName=name),
                                  classCode="OBS", moodCode="EVN")),
        classCode="CLUSTER", moodCode="EVN"))


def _header(code: str, doc_id: str, h: Hospital, p: Person, v: Visit, when: datetime) -> list[etree._Element]:
    t = BY_CODE[code]
    inpatient = v.setting == INPATIENT
    # 门(急)诊号 (2.16.156.10011.1.11): the HIS's patient number, the same as PID-3's MR, so the
    # document lands on the patient the ADT registered.
    patient_ids = [E.id(root="2.16.156.10011.1.11", extension=p.mrn)]
    person = [E.name(p.name),
              E.administrativeGenderCode(code="1" if p.male else "2", codeSystem="2.16.156.10011.2.3.3.4",
                                         codeSystemName="生理性别代码表(GB/T 2261.1)",
                                         displayName="男性" if p.male else "女性"),
              E.birthTime(value=p.birth)]
    if p.id_number:
        person.insert(0, E.id(root="2.16.156.10011.1.3", extension=p.id_number))
    role = E.patientRole(*patient_ids, classCode="PAT")
    if p.phone:
        role.append(E.telecom(use="MP", value=f"tel:{p.phone}"))
    role.append(E.patient(*person, classCode="PSN", determinerCode="INSTANCE"))
    org = E.representedCustodianOrganization(E.id(root="2.16.156.10011.1.5", extension=h.code), E.name(h.name),
                                             classCode="ORG", determinerCode="INSTANCE")
    low_high = [E.low(value=ts(v.start))] + ([E.high(value=ts(v.end))] if inpatient and v.end > v.start else [])
    encounter = E.encompassingEncounter(
        E.id(root="2.16.156.10011.1.12" if inpatient else "2.16.156.10011.1.11", extension=v.number),
        E.effectiveTime(*low_high),
        E.location(E.healthCareFacility(E.serviceProviderOrganization(E.asOrganizationPartOf(E.wholeOrganization(
            E.id(root="2.16.156.10011.1.26", extension=v.department), E.name(v.department),
            E.asOrganizationPartOf(E.wholeOrganization(E.id(root="2.16.156.10011.1.5", extension=h.code),
                                                       E.name(h.name), classCode="ORG", determinerCode="INSTANCE"),
                                   classCode="PART"),
            classCode="ORG", determinerCode="INSTANCE"), classCode="PART")))),
        classCode="ENC", moodCode="EVN")
    return [
        E.realmCode(code="CN"),
        E.typeId(root="2.16.840.1.113883.1.3", extension="POCD_MT000040"),
        E.templateId(root=t.template_id),
        E.id(root="2.16.156.10011.1.1", extension=doc_id),
        E.code(code=t.code, codeSystem="2.16.156.10011.2.4", codeSystemName="卫生信息共享文档规范编码体系"),
        E.title(t.title),
        E.effectiveTime(value=ts(when)),
        E.confidentialityCode(code="N", codeSystem="2.16.840.1.113883.5.25", codeSystemName="Confidentiality",
                              displayName="正常访问保密级别"),
        E.languageCode(code="zh-CN"),
        E.recordTarget(role, typeCode="RCT", contextControlCode="OP"),
        E.author(E.time(value=ts(when)),
                 E.assignedAuthor(E.id(root="2.16.156.10011.1.7", extension=f"D{sum(map(ord, v.doctor)) % 10000:04d}"),
                                  E.assignedPerson(E.name(v.doctor)), classCode="ASSIGNED"),
                 typeCode="AUT", contextControlCode="OP"),
        E.custodian(E.assignedCustodian(org, classCode="ASSIGNED"), typeCode="CST"),
        E.componentOf(encounter),
    ]


def _lab_entry(r: Result, when: datetime) -> etree._Element:
    a = r.analyte
    item = E.observation(_de("DE04.30.019.00", "检验项目代码"), E.effectiveTime(value=ts(when)),
                         E.value({XSI_TYPE: "CD"}, code=a.loinc, codeSystem=LOINC, codeSystemName="LOINC",
                                 displayName=a.name), classCode="OBS", moodCode="EVN")
    normal = r.flag == "N"
    verdict = E.observation(_de("DE04.30.017.00", "检验结果代码"),
                            E.value({XSI_TYPE: "CD"}, code="1" if normal else "2", displayName="正常" if normal else "异常",
                                    codeSystem="2.16.156.10011.2.3.2.38", codeSystemName="检查/检验结果代码表"),
                            classCode="OBS", moodCode="EVN")
    quant = E.observation(_de("DE04.30.015.00", "检验定量结果"), E.value({XSI_TYPE: "REAL"}, value=r.text),
                          classCode="OBS", moodCode="EVN")
    if not normal:
        quant.append(E.interpretationCode(code=r.flag, codeSystem="2.16.840.1.113883.5.83",
                                          displayName="偏高" if r.flag == "H" else "偏低"))
    quant.append(E.entryRelationship(E.observation(_de("DE04.30.016.00", "检查定量结果计量单位"), _st(a.unit),
                                                   classCode="OBS", moodCode="EVN"), typeCode="COMP"))
    quant.append(E.referenceRange(E.observationRange(E.value(
        {XSI_TYPE: "IVL_PQ"}, E.low(value=f"{a.low:g}", unit=a.unit), E.high(value=f"{a.high:g}", unit=a.unit)))))
    return E.entry(E.organizer(E.statusCode(), E.component(item), E.component(verdict), E.component(quant),
                               classCode="CLUSTER", moodCode="EVN"))


def _drug_entry(key: str) -> etree._Element:
    d = DRUGS[key]
    return E.entry(E.substanceAdministration(
        E.text(f"{d.name} {d.spec} {d.dose}{d.unit} {d.route} {d.frequency} {d.days}天"),
        E.routeCode(code="1" if d.route == "口服" else "9", codeSystem=ROUTE, codeSystemName="用药途径代码表",
                    displayName=d.route),
        E.doseQuantity(value=d.dose, unit=d.unit),
        E.consumable(E.manufacturedProduct(E.manufacturedLabeledDrug(E.code(), E.name(d.name)))),
        classCode="SBADM", moodCode="EVN"))


def _doc(header: list[etree._Element], *sections: etree._Element) -> bytes:
    root = E.ClinicalDocument(*header, E.component(E.structuredBody(*sections)))
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def outpatient_record(h: Hospital, p: Person, v: Visit, doc_id: str) -> bytes:
    """C0002 门(急)诊病历: 主诉, 现病史, 生命体征, 诊断."""
    dx = v.diagnosis
    fever = dx.icd10[0] == "J" and dx.icd10 != "J45.900"
    return _doc(_header("C0002", doc_id, h, p, v, v.end),
                _section("10154-3", "CHIEF COMPLAINT", dx.complaint, _obs("DE04.01.119.00", "主诉", _st(dx.complaint))),
                _section("10164-2", "HISTORY OF PRESENT ILLNESS", f"患者{dx.complaint}，{'急诊' if v.setting == EMERGENCY else '门诊'}就诊。",
                         _obs("DE02.10.071.00", "现病史", _st(f"患者{dx.complaint}，来我院{v.department}就诊。"))),
                _section("8716-3", "VITAL SIGNS", "生命体征",
                         _obs("DE04.10.186.00", "体温", E.value({XSI_TYPE: "PQ"}, value="38.3" if fever else "36.6", unit="℃")),
                         _obs("DE04.10.118.00", "脉率", E.value({XSI_TYPE: "PQ"}, value="96" if fever else "76", unit="次/min"))),
                _section("29548-5", "Diagnosis", dx.name, _dx_entry(dx.icd10, dx.name, v.end)))


def prescription(h: Hospital, p: Person, v: Visit, doc_id: str) -> bytes:
    """C0004 西药处方: the drugs of the visit with dose, route, frequency and days."""
    dx = v.diagnosis
    return _doc(_header("C0004", doc_id, h, p, v, v.end),
                _section("29548-5", "Diagnosis", dx.name, _dx_entry(dx.icd10, dx.name, v.end)),
                _section("10160-0", "HISTORY OF MEDICATION USE", "西药处方",
                         *[_drug_entry(k) for k in dx.drugs]))


def exam_report(h: Hospital, p: Person, v: Visit, doc_id: str, when: datetime) -> bytes:
    """C0006 检查报告: 检查项目, 客观所见, 主观提示."""
    assert v.diagnosis.exam is not None
    code, name, finding, impression = EXAMS[v.diagnosis.exam]
    return _doc(_header("C0006", doc_id, h, p, v, when),
                _section("29548-5", "Diagnosis", v.diagnosis.name,
                         _dx_entry(v.diagnosis.icd10, v.diagnosis.name, v.start)),
                _section("30954-2", "STUDIES SUMMARY", f"{name}：{finding}",
                         _obs("DE04.30.020.00", "检查项目名称", _st(name), when),
                         _obs("DE04.50.131.00", "检查报告结果-客观所见", _st(finding)),
                         _obs("DE04.50.132.00", "检查报告结果-主观提示", _st(impression))))


def lab_report(h: Hospital, p: Person, v: Visit, doc_id: str, results: list[Result], when: datetime) -> bytes:
    """C0007 检验报告: one organizer per analyte (value, unit, range, flag)."""
    return _doc(_header("C0007", doc_id, h, p, v, when),
                _section("29548-5", "Diagnosis", v.diagnosis.name,
                         _dx_entry(v.diagnosis.icd10, v.diagnosis.name, v.start)),
                _section("30954-2", "STUDIES SUMMARY", "检验结果",
                         _obs("DE04.30.018.00", "检验类别", _st("临床检验")),
                         *[_lab_entry(r, v.start) for r in results]))


def admission_record(h: Hospital, p: Person, v: Visit, doc_id: str) -> bytes:
    """C0034 入院记录, written within hours of admission (dated then, before discharge)."""
    dx = v.diagnosis
    return _doc(_header("C0034", doc_id, h, p, v, v.start),
                _section("10154-3", "CHIEF COMPLAINT", dx.complaint, _obs("DE04.01.119.00", "主诉", _st(dx.complaint))),
                _section("10164-2", "HISTORY OF PRESENT ILLNESS", f"患者{dx.complaint}，门诊以“{dx.name}”收入{v.department}。",
                         _obs("DE02.10.071.00", "现病史", _st(f"患者{dx.complaint}，门诊以“{dx.name}”收入院。"))),
                _section("46241-6", "HOSPITAL ADMISSION DX", dx.name, _dx_entry(dx.icd10, dx.name, v.start)))


def discharge_summary(h: Hospital, p: Person, v: Visit, doc_id: str) -> bytes:
    """C0053 出院小结: 入院诊断, 出院诊断, 诊疗经过, 住院天数, 出院带药."""
    dx = v.diagnosis
    sections = [
        _section("46241-6", "HOSPITAL ADMISSION DX", dx.name, _dx_entry(dx.icd10, dx.name, v.start)),
        _section("11535-2", "Discharge Diagnosis", dx.name, _dx_entry(dx.icd10, dx.name, v.end),
                 _obs("DE06.00.193.00", "出院情况", _st("病情好转，生命体征平稳。"))),
        _section("8648-8", "Hospital Course", "诊疗经过",
                 _obs("DE06.00.296.00", "诊疗过程描述", _st(f"入院后完善检查，明确诊断为{dx.name}，予规范治疗后好转。")),
                 _obs("DE06.00.310.00", "实际住院天数", E.value({XSI_TYPE: "PQ"}, value=str(v.days), unit="d"))),
    ]
    if dx.drugs:
        # 出院医嘱 in words, and the 出院带药 section (C-CDA 10183-2, entries as WS/T 500.4's
        # 用药章节), which the platform stores as MedicationStatements of the stay.
        orders = "；".join(f"{DRUGS[k].name} {DRUGS[k].dose}{DRUGS[k].unit} {DRUGS[k].route} {DRUGS[k].frequency}"
                          for k in dx.drugs)
        sections.append(_section("46209-3", "Provider Orders", f"出院带药：{orders}",
                                 _obs("DE06.00.287.00", "出院医嘱", _st(f"出院带药：{orders}。定期门诊复查。"))))
        sections.append(_section("10183-2", "HOSPITAL DISCHARGE MEDICATIONS", "出院带药",
                                 *[_drug_entry(k) for k in dx.drugs]))
    return _doc(_header("C0053", doc_id, h, p, v, v.end), *sections)


def front_page(h: Hospital, p: Person, v: Visit, doc_id: str) -> bytes:
    """C0032 住院病案首页: 出院诊断 (ICD-10), 手术 (ICD-9-CM-3), 实际住院天数."""
    dx = v.diagnosis
    sections = [
        _section("11535-2", "Discharge Diagnosis", dx.name, _dx_entry(dx.icd10, dx.name, v.end)),
        _section("8648-8", "Hospital Course", "住院天数",
                 _obs("DE06.00.310.00", "实际住院天数", E.value({XSI_TYPE: "PQ"}, value=str(v.days), unit="d")),
                 _obs("DE06.00.223.00", "离院方式", E.value({XSI_TYPE: "CD"}, code="1", displayName="医嘱离院",
                                                          codeSystem="2.16.156.10011.2.3.1.265"))),
    ]
    if dx.procedure is not None:
        code, name = dx.procedure
        day = (v.start + timedelta(days=1)).replace(hour=9, minute=0, second=0)  # operated the day after admission
        sections.append(_section("47519-4", "HISTORY OF PROCEDURES", name, E.entry(E.procedure(
            E.code(code=code, codeSystem=ICD9CM3, codeSystemName="手术(操作)代码表(ICD-9-CM)", displayName=name),
            E.effectiveTime(value=ts(min(day, v.end))), classCode="PROC", moodCode="EVN"))))
    return _doc(_header("C0032", doc_id, h, p, v, v.end), *sections)
