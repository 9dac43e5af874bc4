"""Source Patients: one resident as registered by one institution (patient.html).

Identifiers: the institution's 门诊号 (and 住院号 once admitted) under
``mrn_system(机构代码)``, the ID number under the 身份证 OID (18 or legacy 15
characters as recorded), a passport under PASSPORT, and the 居民健康卡 under
its OID; identifier types are HL7 v2 table 0203 (MR, NI, PPN, HC).
Patient.gender is the FHIR code; GB/T 2261.1 and GB/T 3304 ride along as
extensions for the CDA side.
"""

from __future__ import annotations

from typing import Any

from hutong.synth.institutions import Institution
from hutong.synth.noise import Demographics
from hutong.synth.regions import BEIJING_NAME
from hutong.synth.residents import Resident
from hutong.systems import CODESYSTEM_BASE, EXT_BASE, GB_SEX, HEALTH_CARD, ID_CARD, PASSPORT, mrn_system

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
ETHNICITY_SYSTEM = CODESYSTEM_BASE + "gb3304-ethnicity"
GB_SEX_EXT = EXT_BASE + "gb-sex"
ETHNICITY_EXT = EXT_BASE + "ethnicity"

_TYPE_MR_OUT = {"coding": [{"system": V2_0203, "code": "MR"}], "text": "门诊号"}
_TYPE_MR_IN = {"coding": [{"system": V2_0203, "code": "MR"}], "text": "住院号"}
_TYPE_NI = {"coding": [{"system": V2_0203, "code": "NI"}], "text": "居民身份证"}
_TYPE_PPN = {"coding": [{"system": V2_0203, "code": "PPN"}], "text": "护照"}
_TYPE_HC = {"coding": [{"system": V2_0203, "code": "HC"}], "text": "居民健康卡"}
_GB_SEX = {
    "male": [{"url": GB_SEX_EXT, "valueCoding": {"system": GB_SEX, "code": "1", "display": "男性"}}],
    "female": [{"url": GB_SEX_EXT, "valueCoding": {"system": GB_SEX, "code": "2", "display": "女性"}}],
}
_MARITAL = {
    "S": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "S",
                      "display": "Never Married"}], "text": "未婚"},
    "M": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M",
                      "display": "Married"}], "text": "已婚"},
    "W": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "W",
                      "display": "Widowed"}], "text": "丧偶"},
    "D": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "D",
                      "display": "Divorced"}], "text": "离婚"},
}
_NEXT_OF_KIN = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "N",
                            "display": "Next-of-Kin"}]}


def patient(pid: str, r: Resident, inst: Institution, demo: Demographics, mrn: str,
            inpatient_mrn: str | None) -> dict[str, Any]:
    ext = list(_GB_SEX[r.sex])
    if r.ethnicity is not None:
        code, ethnic = r.ethnicity
        ext.append({"url": ETHNICITY_EXT, "valueCoding": {"system": ETHNICITY_SYSTEM, "code": code, "display": ethnic}})
    mrn_sys = mrn_system(inst.code)
    ids: list[dict[str, Any]] = [{"use": "usual", "type": _TYPE_MR_OUT, "system": mrn_sys, "value": mrn}]
    if inpatient_mrn is not None:
        ids.append({"use": "secondary", "type": _TYPE_MR_IN, "system": mrn_sys, "value": inpatient_mrn})
    if demo.id_number is not None:
        ids.append({"use": "official", "type": _TYPE_NI, "system": ID_CARD, "value": demo.id_number})
    if r.passport is not None:
        ids.append({"use": "official", "type": _TYPE_PPN, "system": PASSPORT, "value": r.passport})
    if r.health_card is not None:
        ids.append({"use": "secondary", "type": _TYPE_HC, "system": HEALTH_CARD, "value": r.health_card})
    if r.foreign:
        name = {"use": "official", "text": f"{demo.surname} {demo.given}", "family": demo.surname,
                "given": [demo.given]}
    else:
        name = {"use": "official", "text": demo.surname + demo.given, "family": demo.surname, "given": [demo.given]}
    addr = demo.address
    res: dict[str, Any] = {
        "resourceType": "Patient",
        "id": pid,
        "extension": ext,
        "identifier": ids,
        "active": True,
        "name": [name],
        "telecom": [{"system": "phone", "value": demo.phone, "use": "mobile"}],
        "gender": r.sex,
        "birthDate": demo.birth_date,
        "address": [{"use": "home", "type": "physical", "text": addr.text, "line": [addr.line],
                     "city": BEIJING_NAME, "district": addr.district.name, "state": BEIJING_NAME,
                     "postalCode": addr.district.postcode, "country": "CN"}],
    }
    if r.marital is not None:
        res["maritalStatus"] = _MARITAL[r.marital]
    if r.guardian is not None:
        relation, guardian_name = r.guardian.split(":", 1)
        res["contact"] = [{"relationship": [{**_NEXT_OF_KIN, "text": relation}], "name": {"text": guardian_name},
                           "telecom": [{"system": "phone", "value": demo.phone, "use": "mobile"}]}]
    res["managingOrganization"] = inst.reference
    return res
