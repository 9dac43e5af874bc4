"""The Chinese code systems Hutong uses, as FHIR CodeSystems, ValueSets and a ConceptMap.

Sources: ../shared/domain/cn-standards.md and the code that emits or reads
the codes (hutong.systems, hutong.synth, hutong.ingest).  Where Hutong knows
only part of a national table (GB/T 2260 regions: the districts and counties
it uses; WS 364 value domains: the codes its CDA mapping meets) the
CodeSystem says ``content: fragment`` (codesystem.html#CodeSystem.content),
so $validate-code answers "not known" rather than "invalid" for the rest.

:func:`build` is run by ``python -m hutong.terminology.generate``; the
service reads the JSON it wrote (data/cn.json), not this module.
"""

from __future__ import annotations

from typing import Any

from hutong.systems import (
    AUTHOR,
    CODESYSTEM_BASE,
    GB_REGION,
    GB_SEX,
    HEALTH_CARD,
    HEALTH_RECORD,
    ID_CARD,
    INPATIENT_NO,
    MEDICAL_INSURANCE,
    ORGANIZATION,
    PASSPORT,
    PRACTITIONER_LICENSE,
    PRACTITIONER_QUALIFICATION,
    WST500_DOCTYPE,
)

VALUESET_BASE = "https://fhir.hutong.dev/ValueSet/"
CONCEPTMAP_BASE = "https://fhir.hutong.dev/ConceptMap/"
ADMINISTRATIVE_GENDER = "http://hl7.org/fhir/administrative-gender"

# GB/T 2261.1-2003 人的性别代码.
GB_SEX_CODES = (("0", "未知的性别"), ("1", "男性"), ("2", "女性"), ("9", "未说明的性别"))

# WS/T 500-2016: the 53 shared documents, C0001-C0053 (cn-standards.md).
WST500_TITLES = (
    "病历概要 门(急)诊病历 急诊留观病历 西药处方 中药处方 检查报告 检验报告 治疗记录 一般手术记录 "
    "麻醉术前访视记录 麻醉记录 麻醉术后访视记录 输血记录 待产记录 阴道分娩记录 剖宫产记录 一般护理记录 "
    "病重(病危)护理记录 手术护理记录 生命体征测量记录 出入量记录 高值耗材使用记录 入院评估 护理计划 "
    "出院评估与指导 手术知情同意书 麻醉知情同意书 输血治疗同意书 特殊检查及特殊治疗同意书 病危(重)通知书 "
    "其他知情同意书 住院病案首页 中医住院病案首页 入院记录 24h内入出院记录 24h内入院死亡记录 首次病程记录 "
    "日常病程记录 上级医师查房记录 疑难病例讨论记录 交接班记录 转科记录 阶段小结 抢救记录 会诊记录 术前小结 "
    "术前讨论 术后首次病程记录 出院记录 死亡记录 死亡病例讨论记录 住院医嘱 出院小结"
).split()

# Identifier systems (WS/T 500 header OIDs under 2.16.156.10011.1, and Hutong's own).
IDENTIFIER_SYSTEMS = (
    (ID_CARD, "居民身份证 (GB 11643)"), (HEALTH_RECORD, "健康档案号"), (ORGANIZATION, "机构标识"),
    (AUTHOR, "作者 (医务人员)"), ("urn:oid:2.16.156.10011.1.11", "门(急)诊号"), (INPATIENT_NO, "住院号"),
    ("urn:oid:2.16.156.10011.1.13", "病案号"), (HEALTH_CARD, "居民健康卡"),
    ("urn:oid:2.16.156.10011.1.24", "电子申请单编号"), (PASSPORT, "护照 (国家:号码)"),
    (MEDICAL_INSURANCE, "医保卡号"), (PRACTITIONER_QUALIFICATION, "医师资格证书编号"),
    (PRACTITIONER_LICENSE, "医师执业证书编号"),
)

# WS 364 value domains met in the CDA documents Hutong reads (hutong.ingest.cda):
# only the codes seen there are known, so these are fragments.
WS364_FRAGMENTS = (
    ("urn:oid:2.16.156.10011.2.3.2.38", "ws364-result-code", "WS 364 检查/检验结果代码 (fragment)",
     (("2", "异常"),)),
    ("urn:oid:2.16.156.10011.2.3.1.270", "ws364-patient-type", "WS 364 患者类型代码 (fragment)",
     (("2", "急诊"),)),
)


def _code_system(url: str, name: str, title: str, rows: list[list[str]], content: str = "complete",
                 ) -> dict[str, Any]:
    return {"url": url, "version": None, "name": name, "title": title, "status": "active", "content": content,
            "caseSensitive": True, "concepts": rows}


def _value_set(name: str, title: str, system: str) -> dict[str, Any]:
    return {"url": VALUESET_BASE + name, "version": None, "name": name, "title": title, "status": "active",
            "compose": {"include": [{"system": system}]}}


def _regions() -> list[list[str]]:
    from hutong.synth.regions import BEIJING_CITY_CODE, BEIJING_NAME, DISTRICTS, ORIGIN_REGIONS  # noqa: PLC0415

    rows = [[BEIJING_CITY_CODE, BEIJING_NAME]]
    rows += [[d.code, d.name, BEIJING_CITY_CODE] for d in DISTRICTS]
    rows += [[o.code, o.name] for o in ORIGIN_REGIONS]
    return rows


def build() -> dict[str, Any]:
    code_systems = [
        _code_system(GB_SEX, "GBT2261_1", "GB/T 2261.1-2003 人的性别代码", [list(r) for r in GB_SEX_CODES]),
        _code_system(GB_REGION, "GBT2260", "GB/T 2260 中华人民共和国行政区划代码 (Hutong's regions)", _regions(),
                     content="fragment"),
        _code_system(WST500_DOCTYPE, "WST500", "WS/T 500-2016 电子病历共享文档",
                     [[f"C{n:04d}", t] for n, t in enumerate(WST500_TITLES, 1)]),
        _code_system(CODESYSTEM_BASE + "identifier-system", "HutongIdentifierSystem",
                     "Identifier systems (WS/T 500 OIDs and Hutong's)", [list(r) for r in IDENTIFIER_SYSTEMS]),
    ]
    value_sets = [
        _value_set("gb-sex", "GB/T 2261.1 人的性别代码", GB_SEX),
        _value_set("gb-region", "GB/T 2260 行政区划代码 (Hutong's regions)", GB_REGION),
        _value_set("wst500-document-type", "WS/T 500 共享文档类型", WST500_DOCTYPE),
        _value_set("identifier-system", "Identifier systems", CODESYSTEM_BASE + "identifier-system"),
    ]
    for url, name, title, codes in WS364_FRAGMENTS:
        code_systems.append(_code_system(url, name, title, [list(r) for r in codes], content="fragment"))
        value_sets.append(_value_set(name, title, url))
    # GB/T 2261.1 -> administrative-gender, as the CDA and HL7 v2 mappings do it
    # (hutong.ingest.cda.mapping._GENDER): 9 "not stated" is wider than unknown.
    gender_map = {"url": CONCEPTMAP_BASE + "gb-sex-to-administrative-gender", "version": None,
                  "name": "GBSexToAdministrativeGender", "title": "GB/T 2261.1 性别 -> FHIR administrative-gender",
                  "status": "active", "source": VALUESET_BASE + "gb-sex",
                  "target": "http://hl7.org/fhir/ValueSet/administrative-gender",
                  "group": [{"source": GB_SEX, "target": ADMINISTRATIVE_GENDER, "element": [
                      {"code": "0", "target": [{"code": "unknown", "equivalence": "equivalent"}]},
                      {"code": "1", "target": [{"code": "male", "equivalence": "equivalent"}]},
                      {"code": "2", "target": [{"code": "female", "equivalence": "equivalent"}]},
                      {"code": "9", "target": [{"code": "unknown", "equivalence": "wider"}]},
                  ]}]}
    return {"source": "hutong.terminology.cn (../shared/domain/cn-standards.md)", "codeSystems": code_systems,
            "valueSets": value_sets, "conceptMaps": [gender_map]}
