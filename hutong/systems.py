"""Identifier and code systems used across Hutong.

OIDs come from WS/T 500 / WS 363 (see ../shared/domain/cn-standards.md):
the national health-data OID arc is 2.16.156.10011.
"""

from __future__ import annotations

from datetime import timedelta, timezone

# The region's own time (China Standard Time, UTC+8, no daylight saving): the
# calendar days people live in -- a consent's period, a treatment window, "today"
# on a dashboard, the day a result counts for mutual recognition -- are its days.
REGION_TZ = timezone(timedelta(hours=8))

ID_CARD = "urn:oid:2.16.156.10011.1.3"  # 居民身份证 (GB 11643)
HEALTH_RECORD = "urn:oid:2.16.156.10011.1.2"  # 健康档案号
ORGANIZATION = "urn:oid:2.16.156.10011.1.5"  # 机构 (institution identifier)
AUTHOR = "urn:oid:2.16.156.10011.1.7"  # 作者 / practitioner
INPATIENT_NO = "urn:oid:2.16.156.10011.1.12"  # 住院号
HEALTH_CARD = "urn:oid:2.16.156.10011.1.19"  # 居民健康卡
PASSPORT = "urn:hutong:id:passport"  # passports: value is "<country>:<number>"
MEDICAL_INSURANCE = "urn:hutong:id:medical-insurance"  # 医保卡
PRACTITIONER_QUALIFICATION = "urn:hutong:id:physician-qualification"  # 医师资格证书编号
PRACTITIONER_LICENSE = "urn:hutong:id:physician-license"  # 医师执业证书编号

# GB/T 2261.1 sex codes (CDA codeSystem 2.16.156.10011.2.3.3.4)
GB_SEX = "urn:oid:2.16.156.10011.2.3.3.4"
# GB/T 2260 administrative division codes
GB_REGION = "urn:oid:2.16.156.10011.2.3.3.2"
# WS/T 500 document type codes C0001..C0053
WST500_DOCTYPE = "urn:oid:2.16.156.10011.2.4"

MRN_PREFIX = "urn:hutong:mrn:"  # + institution identifier value (机构代码)


def mrn_system(institution_code: str) -> str:
    """The identifier system of one institution's medical record numbers.

    Every institution numbers its own patients (门诊号/住院号); the system is
    scoped by the institution's registered identifier so two hospitals' MRN
    "000123" never collide.
    """
    return MRN_PREFIX + institution_code

# Canonical base of Hutong's own extensions and code systems.
EXT_BASE = "https://fhir.hutong.dev/StructureDefinition/"
CODESYSTEM_BASE = "https://fhir.hutong.dev/CodeSystem/"

VISIT_PREFIX = "urn:hutong:visit:"  # + institution code: 就诊流水号 / HL7 PV1-19 visit number
ORDER_PREFIX = "urn:hutong:order:"  # + institution code: placer/filler order numbers (ORC-2/ORC-3, OBR-2/OBR-3)
DOCUMENT_PREFIX = "urn:hutong:document:"  # + institution code: CDA document ids (ClinicalDocument.id)


def visit_system(institution_code: str) -> str:
    return VISIT_PREFIX + institution_code


def order_system(institution_code: str) -> str:
    return ORDER_PREFIX + institution_code


def document_system(institution_code: str) -> str:
    return DOCUMENT_PREFIX + institution_code

# Clinician privileges on PractitionerRole (处方权, 抗菌药物分级 卫生部令第84号, 手术分级
# 国卫办医政发〔2022〕18号): hutong.security.privileges reads them, hutong.synth writes them.
PRESCRIBING_EXT = EXT_BASE + "prescribing-right"
ANTIBIOTIC_TIER_EXT = EXT_BASE + "antibiotic-tier"
SURGERY_GRADE_EXT = EXT_BASE + "surgery-grade"
ANTIBIOTIC_TIER_SYSTEM = CODESYSTEM_BASE + "antibiotic-tier"
SURGERY_GRADE_SYSTEM = CODESYSTEM_BASE + "surgery-grade"
# A post an institution designates to answer residents' correction requests
# (纠偏权, PIPL Art. 46: 医务科/病案管理): a PractitionerRole.code coding
# (practitionerrole-definitions.html#PractitionerRole.code, "roles which this
# practitioner is authorized to perform"); hutong.security.corrections reads it.
DUTY_SYSTEM = CODESYSTEM_BASE + "practitioner-duty"
CORRECTION_OFFICER = "correction-officer"
