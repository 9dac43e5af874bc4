"""The 53 WS/T 500-2016 shared document types (电子病历共享文档规范, parts 1-53).

Each part n defines document type code ``C00nn`` (code system
2.16.156.10011.2.4, 卫生信息共享文档规范编码体系) and the document template
``2.16.156.10011.2.1.1.<20+n>`` carried in ``ClinicalDocument/templateId``.
Titles follow ../shared/domain/cn-standards.md (the standard's part titles).

The templateId scheme was checked against public implementations, as the
standard's own text was not available: bzrrr/cda
``src/main/resources/templates/template{02,06,07,32,33,53}.ftl`` pair C0002
with .22, C0006 with .26, C0007 with .27, C0032 with .52, C0033 with .53 and
C0053 with .73; a filled-in 入院评估 seen in another public repository pairs
C0023 with .43.  Every pair fits 20+n.

``part`` is the WS 445-2014 电子病历基本数据集 part (17 parts) a document
type draws its data set from, used as the DocumentReference category.  The
part titles are WS 445's; the assignment of the 53 types to parts is our
reading of the titles (unconfirmed against the standard's text).

``setting`` is the encounter class a document of that type implies, where it
implies one (门急诊病历 is ambulatory, 住院病案首页 inpatient); ``None`` for
types written in any setting (检验报告, 知情同意书).
"""

from __future__ import annotations

from dataclasses import dataclass

from hutong.ingest.cda.errors import CdaError

DOCTYPE_CODE_SYSTEM = "2.16.156.10011.2.4"
TEMPLATE_ARC = "2.16.156.10011.2.1.1."

# WS 445-2014 parts: code -> title.
WS445_PARTS: dict[str, str] = {
    "01": "病历概要", "02": "门(急)诊病历", "03": "门(急)诊处方", "04": "检查检验记录",
    "05": "一般治疗处置记录", "06": "助产记录", "07": "护理操作记录", "08": "护理评估与计划",
    "09": "知情告知信息", "10": "住院病案首页", "11": "中医住院病案首页", "12": "入院记录",
    "13": "住院病程记录", "14": "住院医嘱", "15": "出院小结", "16": "转诊(院)记录", "17": "医疗机构信息",
}


@dataclass(frozen=True, slots=True)
class DocType:
    number: int            # n of WS/T 500.n
    code: str              # "C00nn"
    title: str             # 检验报告
    template_id: str       # 2.16.156.10011.2.1.1.<20+n>
    part: str              # WS 445 part code ("04")
    setting: str | None    # v3 ActCode encounter class implied by the type: AMB, IMP, EMER
    extracted: bool        # structured FHIR resources are extracted, not only the document stored
    patient_gender: bool = True  # the header must carry the patient's administrativeGenderCode

    @property
    def part_title(self) -> str:
        return WS445_PARTS[self.part]


# (title, WS 445 part, setting); index i is part n = i + 1.
_ROWS: tuple[tuple[str, str, str | None], ...] = (
    ("病历概要", "01", None),
    ("门(急)诊病历", "02", "AMB"),
    ("急诊留观病历", "02", "EMER"),
    ("西药处方", "03", "AMB"),
    ("中药处方", "03", "AMB"),
    ("检查报告", "04", None),
    ("检验报告", "04", None),
    ("治疗记录", "05", None),
    ("一般手术记录", "05", None),
    ("麻醉术前访视记录", "05", None),
    ("麻醉记录", "05", None),
    ("麻醉术后访视记录", "05", None),
    ("输血记录", "05", None),
    ("待产记录", "06", "IMP"),
    ("阴道分娩记录", "06", "IMP"),
    ("剖宫产记录", "06", "IMP"),
    ("一般护理记录", "07", "IMP"),
    ("病重(病危)护理记录", "07", "IMP"),
    ("手术护理记录", "07", None),
    ("生命体征测量记录", "07", None),
    ("出入量记录", "07", "IMP"),
    ("高值耗材使用记录", "07", None),
    ("入院评估", "08", "IMP"),
    ("护理计划", "08", "IMP"),
    ("出院评估与指导", "08", "IMP"),
    ("手术知情同意书", "09", None),
    ("麻醉知情同意书", "09", None),
    ("输血治疗同意书", "09", None),
    ("特殊检查及特殊治疗同意书", "09", None),
    ("病危(重)通知书", "09", "IMP"),
    ("其他知情同意书", "09", None),
    ("住院病案首页", "10", "IMP"),
    ("中医住院病案首页", "11", "IMP"),
    ("入院记录", "12", "IMP"),
    ("24h内入出院记录", "12", "IMP"),
    ("24h内入院死亡记录", "12", "IMP"),
    ("首次病程记录", "13", "IMP"),
    ("日常病程记录", "13", "IMP"),
    ("上级医师查房记录", "13", "IMP"),
    ("疑难病例讨论记录", "13", "IMP"),
    ("交接班记录", "13", "IMP"),
    ("转科记录", "13", "IMP"),
    ("阶段小结", "13", "IMP"),
    ("抢救记录", "13", None),
    ("会诊记录", "13", None),
    ("术前小结", "13", "IMP"),
    ("术前讨论", "13", "IMP"),
    ("术后首次病程记录", "13", "IMP"),
    ("出院记录", "13", "IMP"),
    ("死亡记录", "13", "IMP"),
    ("死亡病例讨论记录", "13", "IMP"),
    ("住院医嘱", "14", "IMP"),
    ("出院小结", "15", "IMP"),
)

# The five types mapped into structured resources (issue 5); the others are stored as documents.
EXTRACTED = frozenset({"C0002", "C0006", "C0007", "C0032", "C0053"})
# 助产记录 (WS 445 part 06: 待产记录, 阴道分娩记录, 剖宫产记录): the record target is the
# mother, and the documents of two independent public WS/T 500 generators leave her
# administrativeGenderCode out; CDA R2 allows that (Patient.administrativeGenderCode is
# 0..1 in the R-MIM, CDA R2 §4.2.2.1).  Every other type's header must still carry it.
# (The standard's own text was not at hand to confirm the three templates' cardinality:
# the generators, as issue 15 reports them, are the evidence.)
GENDER_OPTIONAL = frozenset({"C0014", "C0015", "C0016"})

DOCTYPES: tuple[DocType, ...] = tuple(
    DocType(n, f"C{n:04d}", title, f"{TEMPLATE_ARC}{20 + n}", part, setting, f"C{n:04d}" in EXTRACTED,
            patient_gender=f"C{n:04d}" not in GENDER_OPTIONAL)
    for n, (title, part, setting) in enumerate(_ROWS, start=1)
)
BY_CODE: dict[str, DocType] = {d.code: d for d in DOCTYPES}
BY_TEMPLATE: dict[str, DocType] = {d.template_id: d for d in DOCTYPES}


def requires_gender(code: str | None, template_ids: tuple[str, ...] | list[str]) -> bool:
    """Whether the header of a document with this type code / these templateIds must carry
    the patient's gender: True unless every type it names leaves it optional (an
    unrecognised type is refused by :func:`recognise` anyway)."""
    named = [BY_CODE.get((code or "").strip())] + [BY_TEMPLATE.get(t.strip()) for t in template_ids]
    found = [d for d in named if d is not None]
    return not found or any(d.patient_gender for d in found)


def recognise(code: str | None, template_ids: list[str]) -> DocType:
    """The document type named by ``ClinicalDocument/code`` (a code of
    2.16.156.10011.2.4; the caller checks the code system) and/or the WS/T 500
    ``templateId`` roots.  Both name the type when both are given and must
    agree; templateIds outside the WS/T 500 arc (a regional profile's own) are
    ignored.  Raises ``CdaError("cda-type")`` otherwise."""
    by_code: DocType | None = None
    if code is not None and code.strip():
        by_code = BY_CODE.get(code.strip())
        if by_code is None:
            raise CdaError("cda-type", f"/ClinicalDocument/code/@code: {code.strip()[:40]!r} is not a WS/T 500 "
                                       "document type (C0001-C0053)")
    by_template: DocType | None = None
    for tid in template_ids:
        tid = tid.strip()
        if not tid.startswith(TEMPLATE_ARC):
            continue
        found = BY_TEMPLATE.get(tid)
        if found is None:
            raise CdaError("cda-type", f"/ClinicalDocument/templateId/@root: {tid[:60]!r} is in the WS/T 500 "
                                       f"arc but names none of the 53 document templates")
        if by_template is not None and found is not by_template:
            raise CdaError("cda-type", f"/ClinicalDocument/templateId: templates of {by_template.code} and "
                                       f"{found.code} in one document")
        by_template = found
    if by_code is not None and by_template is not None and by_code is not by_template:
        raise CdaError("cda-type", f"/ClinicalDocument/code/@code {by_code.code} ({by_code.title}) disagrees with "
                                   f"/ClinicalDocument/templateId {by_template.template_id} "
                                   f"({by_template.code} {by_template.title})")
    found_type = by_code or by_template
    if found_type is None:
        raise CdaError("cda-type", "/ClinicalDocument/code: no WS/T 500 document type code and no WS/T 500 "
                                   f"templateId ({TEMPLATE_ARC}21..73)")
    return found_type
