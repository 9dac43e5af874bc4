"""WS/T 500-2016 电子病历共享文档规范: the 53 shared document types.

Codes C0001-C0053 under OID 2.16.156.10011.2.4 (WST500_DOCTYPE); the CDA
templateId of document n is 2.16.156.10011.2.1.1.(20+n).  Only the types the
generator emits are listed; see ../shared/domain/cn-standards.md for all 53.
"""

from __future__ import annotations

from hutong.systems import WST500_DOCTYPE

DOCUMENT_TYPES: dict[str, tuple[str, str]] = {
    "summary": ("C0001", "病历概要"),
    "outpatient": ("C0002", "门(急)诊病历"),
    "observation": ("C0003", "急诊留观病历"),
    "prescription": ("C0004", "西药处方"),
    "tcm-prescription": ("C0005", "中药处方"),
    "imaging-report": ("C0006", "检查报告"),
    "lab-report": ("C0007", "检验报告"),
    "surgery": ("C0009", "一般手术记录"),
    "anaesthesia": ("C0011", "麻醉记录"),
    "vaginal-delivery": ("C0015", "阴道分娩记录"),
    "caesarean": ("C0016", "剖宫产记录"),
    "surgery-consent": ("C0026", "手术知情同意书"),
    "front-sheet": ("C0032", "住院病案首页"),
    "admission": ("C0034", "入院记录"),
    "discharge": ("C0049", "出院记录"),
    "discharge-summary": ("C0053", "出院小结"),
}


def type_concept(key: str) -> dict[str, object]:
    code, name = DOCUMENT_TYPES[key]
    return {"coding": [{"system": WST500_DOCTYPE, "code": code, "display": name}], "text": name}


TYPE_CONCEPTS: dict[str, dict[str, object]] = {k: type_concept(k) for k in DOCUMENT_TYPES}
