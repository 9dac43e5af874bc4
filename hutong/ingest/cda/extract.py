"""Structured FHIR resources from the body of five WS/T 500 document types.

* C0007 检验报告 (WS/T 500.7): DiagnosticReport (laboratory) + one Observation per
  result (code, value with UCUM unit, reference range, interpretation, effective);
* C0006 检查报告 (WS/T 500.6): DiagnosticReport (exam item, 客观所见/主观提示,
  effective) + Observations for coded or quantitative findings;
* C0002 门(急)诊病历 (WS/T 500.2): Encounter details (主诉, 科室) + Conditions
  (ICD-10) + vital-sign Observations;
* C0053 出院小结 (WS/T 500.53): Encounter (admission-discharge) + admission (AD)
  and discharge (DD) Conditions + discharge MedicationStatements;
* C0032 住院病案首页 (WS/T 500.32): Encounter (admission/discharge times,
  departments, 离院方式, 实际住院天数) + principal and other discharge Conditions
  + Procedures (ICD-9-CM-3, dates).

Each resource is linked to its DocumentReference (Observation and
MedicationStatement ``derivedFrom``, Procedure ``report``, Condition
``evidence.detail``, DiagnosticReport the ``source-document`` extension), and
:meth:`hutong.ingest.cda.body.Context.derived` gives it ``meta.source`` and a
document-scoped identifier so that a resent document adds nothing.  Section and
data element codes: see :mod:`hutong.ingest.cda.body`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hutong.ingest.cda.body import (
    COND_CATEGORY,
    DATA_ELEMENTS,
    DE_CATEGORY,
    DE_CHIEF_COMPLAINT,
    DE_DISCHARGE_MODE,
    DE_DX_CODE,
    DE_DX_NAME,
    DE_EXAM_CONCLUSION,
    DE_ITEM_CODE,
    DE_ITEM_NAME,
    DE_LAB_CONCLUSION,
    DE_LENGTH_OF_STAY,
    DE_METHOD,
    DE_PROCEDURE_NAME,
    DE_QUANT,
    DE_RESULT_CODE,
    DE_SPECIMEN,
    DE_UNIT,
    DIAGNOSIS_ROLE,
    DIAGNOSIS_ROLE_EXT,
    ITEM_ELEMENTS,
    LOINC,
    OBS_CATEGORY,
    SEC_ADMISSION_DX,
    SEC_CHIEF_COMPLAINT,
    SEC_DIAGNOSIS,
    SEC_DISCHARGE_DX,
    SEC_DISCHARGE_MEDS,
    SEC_HOSPITAL_COURSE,
    SEC_LAB,
    SEC_MEDICATIONS,
    SEC_PHYSICAL,
    SEC_PROCEDURES,
    SEC_TRANSFER,
    SEC_VITALS,
    SOURCE_DOCUMENT_EXT,
    UCUM,
    V2_0074,
    VITAL_UNITS,
    VITALS,
    Context,
    Obs,
    concept,
    find_sections,
    interpretation,
    narrative,
    obs_value,
    quantity,
    reference_range,
    value_text,
)
from hutong.ingest.cda.parse import Coded, Node, Timestamp, coded
from hutong.systems import order_system

_TCM_OID = "2.16.156.10011.2.3.3.14"  # GB/T 15657 中医病证: not ICD-10, not extracted as Conditions
_ROLE_DISPLAY = {"AD": "Admission diagnosis", "DD": "Discharge diagnosis"}


def extract(ctx: Context) -> None:
    """Add the structured resources of ``ctx.doc_type`` (one of the five) to the Bundle."""
    EXTRACTORS[ctx.doc_type.code](ctx)


def _effective(ctx: Context) -> str:
    """The clinical time when an entry names none: the visit's start, else the document's time."""
    period = (ctx.encounter or {}).get("period") or {}
    start = period.get("start")
    return start if isinstance(start, str) else ctx.doc.header.effective.value


def _set_effective(res: dict[str, Any], ts: Timestamp | str | None) -> None:
    if ts is not None:
        res["effectiveDateTime"] = ts if isinstance(ts, str) else ts.value


def _first_value(ctx: Context, de: str, *section_codes: str) -> Obs | None:
    """The first observation with a value coded with data element ``de`` (in those sections)."""
    return next((o for o in ctx.values(de, *section_codes) if o.node.first("value") is not None), None)


# ------------------------------------------------------------- results

@dataclass
class Result:
    code: dict[str, Any]
    effective: Timestamp | None
    value: dict[str, Any] | None
    interpretation: list[dict[str, Any]]
    reference_range: list[dict[str, Any]]
    specimen: str | None


def _cluster_result(ctx: Context, members: list[Obs]) -> Result | None:
    """One WS/T 500 item cluster: 项目代码 (+标本), 项目名称, 结果代码, 定量结果 (+单位)."""
    by = {o.de: o for o in members if o.de is not None}
    item, name_obs = by.get(DE_ITEM_CODE), by.get(DE_ITEM_NAME)
    quant, result_code = by.get(DE_QUANT), by.get(DE_RESULT_CODE)
    item_value = None if item is None else item.node.first("value")
    item_code = None if item_value is None else coded(item_value) if item_value.xsi_type in ("CD", "CE") else None
    name = None if name_obs is None else value_text(name_obs.node.first("value"))
    if item_code is not None:
        name = name or item_code.display or item_code.text
        code = concept(item_code, name)
    else:
        local = value_text(item_value)
        name = name or local
        code = ({"coding": [{"code": local}], "text": name} if local and name and local != name
                else {"text": name} if name else {})
    if not code:
        return None
    value = None
    if quant is not None:
        unit_obs = quant.related(DE_UNIT)
        value = obs_value(quant, value_text(unit_obs.node.first("value")) if unit_obs else None)
    if value is None and result_code is not None:
        value = obs_value(result_code)
    specimen = None
    effective = None
    if item is not None:
        effective = ctx.ts(item.node.first("effectiveTime"))
        sp = item.related(DE_SPECIMEN)
        specimen = None if sp is None else value_text(sp.node.first("value"))
    return Result(code, effective, value, interpretation(quant, result_code if quant is not None else None),
                  reference_range(quant), specimen)


def _plain_result(ctx: Context, o: Obs) -> Result | None:
    """A CDA result observation coded with a terminology (LOINC ...), not with a WS 363 data element."""
    if o.code is None or o.code.code is None or o.code.system == DATA_ELEMENTS:
        return None
    value = obs_value(o)
    if value is None:
        return None
    return Result(concept(o.code), ctx.ts(o.node.first("effectiveTime")), value, interpretation(o, None),
                  reference_range(o), None)


def _results(ctx: Context, group_list: list[list[Obs]]) -> list[Result]:
    out: list[Result] = []
    for group in group_list:
        if any(o.de in ITEM_ELEMENTS for o in group):
            r = _cluster_result(ctx, group)
            if r is not None:
                out.append(r)
        else:
            out.extend(r for o in group if (r := _plain_result(ctx, o)) is not None)
    return out


def _observation(ctx: Context, r: Result, category: str, method: str | None) -> str:
    res: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": category}]}],
        "code": r.code,
    }
    ctx.context_refs(res)
    _set_effective(res, r.effective or _effective(ctx))
    if r.value is not None:
        res.update(r.value)
    else:
        res["dataAbsentReason"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                                               "code": "unknown"}]}
    if r.interpretation:
        res["interpretation"] = r.interpretation
    if r.reference_range:
        res["referenceRange"] = r.reference_range
    if method:
        res["method"] = {"text": method}
    if r.specimen:
        res["note"] = [{"text": f"标本：{r.specimen}"}]
    res["performer"] = [{"reference": ctx.organization_ref}]
    res["derivedFrom"] = [{"reference": ctx.docref_ref}]
    return ctx.derived(res)


def _report_ids(ctx: Context, report_root: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Report number (检验/检查报告单号, in patientRole/id as WS/T 500 places it) and the
    order it answers (电子申请单编号 2.16.156.10011.1.24, under the institution's order system)."""
    idents: list[dict[str, Any]] = []
    based_on: list[dict[str, Any]] = []
    for i in ctx.doc.header.patient.role_ids:
        if i.root == report_root and i.extension:
            idents.append({"type": {"text": "报告单号"}, "system": "urn:oid:" + i.root, "value": i.extension,
                           "assigner": {"reference": ctx.organization_ref}})
        elif i.root == "2.16.156.10011.1.24" and i.extension:
            based_on.append({"identifier": {"system": order_system(ctx.sender_code), "value": i.extension},
                             "display": "电子申请单"})
    return idents, based_on


def _diagnostic_report(ctx: Context, *, category: dict[str, Any], code: dict[str, Any], results: list[str],
                       effective: Timestamp | None, conclusion: str | None, report_root: str,
                       text: dict[str, Any] | None = None) -> str:
    idents, based_on = _report_ids(ctx, report_root)
    res: dict[str, Any] = {"resourceType": "DiagnosticReport",
                           "extension": [{"url": SOURCE_DOCUMENT_EXT, "valueReference": {"reference": ctx.docref_ref}}]}
    if text is not None:
        res["text"] = text
    if idents:
        res["identifier"] = idents
    if based_on:
        res["basedOn"] = based_on
    res.update({"status": "final", "category": [category], "code": code})
    ctx.context_refs(res)
    _set_effective(res, effective or _effective(ctx))
    author = ctx.doc.header.author
    issued = (author.time.instant if author.time is not None else None) or ctx.doc.header.effective.instant
    if issued is not None:
        res["issued"] = issued
    res["performer"] = [{"reference": ctx.organization_ref}]
    if ctx.practitioner is not None:
        res["resultsInterpreter"] = [ctx.practitioner]
    if results:
        res["result"] = [{"reference": r} for r in results]
    if conclusion:
        res["conclusion"] = conclusion
    return ctx.derived(res)


def lab_report(ctx: Context) -> None:
    """C0007 检验报告."""
    codes = (SEC_LAB,) if ctx.groups(SEC_LAB) else ()
    method = _first_value(ctx, DE_METHOD, *codes)
    kind = _first_value(ctx, DE_CATEGORY, *codes)
    method_text = None if method is None else value_text(method.node.first("value"))
    kind_text = None if kind is None else value_text(kind.node.first("value"))
    results = _results(ctx, ctx.groups(*codes))
    refs = [_observation(ctx, r, "laboratory", method_text) for r in results]
    conclusion = _first_value(ctx, DE_LAB_CONCLUSION)
    category: dict[str, Any] = {"coding": [{"system": V2_0074, "code": "LAB", "display": "Laboratory"}]}
    if kind_text:
        category["text"] = kind_text
    _diagnostic_report(
        ctx, category=category,
        code={"coding": [{"system": LOINC, "code": "11502-2", "display": "Laboratory report"}],
              "text": kind_text or ctx.doc_type.title},
        results=refs, effective=min((r.effective for r in results if r.effective is not None),
                                    key=lambda t: t.value, default=None),
        conclusion=None if conclusion is None else value_text(conclusion.node.first("value")),
        report_root="2.16.156.10011.1.33")


# 检查类别 words -> HL7 v2 table 0074 diagnostic service section.
_EXAM_SECTIONS = (("心电", "EC", "Electrocardiac"), ("CT", "CT", "CAT Scan"), ("磁共振", "NMR", "Nuclear Magnetic Resonance"),
                  ("MR", "NMR", "Nuclear Magnetic Resonance"), ("超声", "RUS", "Radiology Ultrasound"),
                  ("B超", "RUS", "Radiology Ultrasound"), ("核医学", "NMS", "Nuclear Medicine Scan"),
                  ("X线", "RAD", "Radiology"), ("DR", "RAD", "Radiology"), ("放射", "RAD", "Radiology"))


def exam_report(ctx: Context) -> None:
    """C0006 检查报告."""
    kind = _first_value(ctx, DE_CATEGORY)
    method = _first_value(ctx, DE_METHOD)
    kind_text = None if kind is None else value_text(kind.node.first("value"))
    method_text = None if method is None else value_text(method.node.first("value"))
    item_code: dict[str, Any] | None = None
    effective: Timestamp | None = None
    finding_refs: list[str] = []
    words = " ".join(w for w in (kind_text, method_text) if w)
    section_code = next(((c, d) for k, c, d in _EXAM_SECTIONS if k in words), None)
    obs_category = "imaging" if section_code is not None and section_code[0] != "EC" else "exam"
    for group in ctx.groups(SEC_PHYSICAL, SEC_LAB) or ctx.groups():
        if not any(o.de in ITEM_ELEMENTS for o in group):
            continue
        r = _cluster_result(ctx, group)
        if r is None:
            continue
        if item_code is None:
            item_code, effective = r.code, r.effective
        if r.value is not None:  # a coded/quantitative finding, not only the item examined
            finding_refs.append(_observation(ctx, r, obs_category, method_text))
    findings = impression = None
    for o in ctx.values(DE_EXAM_CONCLUSION):
        text = value_text(o.node.first("value"))
        if not text:
            continue
        if "主观" in o.label or "提示" in o.label or "诊断" in o.label:
            impression = impression or text
        else:
            findings = findings or text
    category: dict[str, Any] = {}
    if section_code is not None:
        category["coding"] = [{"system": V2_0074, "code": section_code[0], "display": section_code[1]}]
    category["text"] = kind_text or "检查"
    code = item_code or {"text": kind_text or ctx.doc_type.title}
    paragraphs = [(k, v) for k, v in (("检查所见", findings), ("诊断意见", impression)) if v]
    _diagnostic_report(ctx, category=category, code=code, results=finding_refs, effective=effective,
                       conclusion=impression or findings, report_root="2.16.156.10011.1.32",
                       text=narrative(*paragraphs) if paragraphs else None)


# ------------------------------------------------------------- diagnoses

@dataclass
class Diagnosis:
    code: Coded
    name: str | None
    label: str          # displayName and qualifier names of the group (主要诊断, 其他诊断 ...)
    time: Timestamp | None


def diagnoses(ctx: Context, section_code: str) -> list[Diagnosis]:
    """DE05.01.024.00 诊断代码 values, each with the 诊断名称 of its cluster; TCM codes skipped."""
    out: list[Diagnosis] = []
    for group in ctx.groups(section_code):
        name_obs = next((o for o in group if o.de == DE_DX_NAME), None)
        name = None if name_obs is None else value_text(name_obs.node.first("value"))
        for o in group:
            if o.de != DE_DX_CODE:
                continue
            c = coded(o.node.first("value"))
            if c is None or c.code is None or (c.system or "").startswith(_TCM_OID):
                continue
            out.append(Diagnosis(c, name or c.display or c.text, " ".join(x.label for x in group),
                                 ctx.ts(o.node.first("effectiveTime"))))
    return out


def _condition(ctx: Context, dx: Diagnosis, role: str | None, rank: int | None) -> str:
    res: dict[str, Any] = {"resourceType": "Condition"}
    if role is not None:
        res["extension"] = [{"url": DIAGNOSIS_ROLE_EXT, "valueCoding": {
            "system": DIAGNOSIS_ROLE, "code": role, "display": _ROLE_DISPLAY[role]}}]
    res["category"] = [{"coding": [{"system": COND_CATEGORY, "code": "encounter-diagnosis",
                                    "display": "Encounter Diagnosis"}]}]
    res["code"] = concept(dx.code, dx.name)
    ctx.context_refs(res)
    res["recordedDate"] = (dx.time or ctx.doc.header.effective).value
    res["evidence"] = [{"detail": [{"reference": ctx.docref_ref}]}]
    url = ctx.derived(res)
    if ctx.encounter is not None:
        entry: dict[str, Any] = {"condition": {"reference": url}}
        if role is not None:
            entry["use"] = {"coding": [{"system": DIAGNOSIS_ROLE, "code": role, "display": _ROLE_DISPLAY[role]}]}
        if rank is not None:
            entry["rank"] = rank
        ctx.encounter.setdefault("diagnosis", []).append(entry)
    return url


def _ranked(dxs: list[Diagnosis]) -> list[tuple[Diagnosis, int]]:
    """Principal first (rank 1): the one labelled 主要诊断, else the first listed."""
    principal = next((d for d in dxs if "主要" in d.label), dxs[0] if dxs else None)
    rest = [d for d in dxs if d is not principal]
    return ([(principal, 1)] if principal is not None else []) + [(d, i) for i, d in enumerate(rest, start=2)]


# ------------------------------------------------------------- vital signs

def vital_signs(ctx: Context) -> None:
    found: dict[str, Obs] = {}
    for group in ctx.groups(SEC_VITALS, SEC_PHYSICAL):
        for o in group:
            if o.de in VITALS and o.de not in found and obs_value(o) is not None:
                found[o.de] = o
    category = [{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs", "display": "Vital Signs"}]}]

    def code(de: str) -> dict[str, Any]:
        loinc, label = VITALS[de]
        return {"coding": [{"system": LOINC, "code": loinc}, {"system": "urn:oid:" + DATA_ELEMENTS, "code": de,
                                                                "display": label}], "text": label}

    def value(o: Obs) -> dict[str, Any]:
        v = obs_value(o) or {}
        q = v.get("valueQuantity")
        expected = VITAL_UNITS[VITALS[o.de or ""][0]]
        if q is not None and "code" not in q and not q.get("unit"):
            q.update({"unit": expected, "system": UCUM, "code": expected})
        return v

    def base() -> dict[str, Any]:
        return {"resourceType": "Observation", "status": "final", "category": category}

    bp = [found.pop(de) for de in ("DE04.10.174.00", "DE04.10.176.00") if de in found]
    for de, o in found.items():
        res = base()
        res["code"] = code(de)
        ctx.context_refs(res)
        _set_effective(res, ctx.ts(o.node.first("effectiveTime")) or _effective(ctx))
        res.update(value(o))
        res["derivedFrom"] = [{"reference": ctx.docref_ref}]
        ctx.derived(res)
    if bp:
        res = base()
        res["code"] = {"coding": [{"system": LOINC, "code": "85354-9",
                                   "display": "Blood pressure panel with all children optional"}], "text": "血压"}
        ctx.context_refs(res)
        _set_effective(res, ctx.ts(bp[0].node.first("effectiveTime")) or _effective(ctx))
        components = []
        for o in bp:
            v = value(o)
            if "valueQuantity" in v:
                components.append({"code": code(o.de or ""), **v})
        res["component"] = components
        res["derivedFrom"] = [{"reference": ctx.docref_ref}]
        ctx.derived(res)


# ------------------------------------------------------------- per type

def outpatient_record(ctx: Context) -> None:
    """C0002 门(急)诊病历: Encounter details, diagnoses, vital signs."""
    enc = ctx.encounter
    if enc is not None:
        cc = _first_value(ctx, DE_CHIEF_COMPLAINT, SEC_CHIEF_COMPLAINT) or _first_value(ctx, DE_CHIEF_COMPLAINT)
        text = None if cc is None else value_text(cc.node.first("value"))
        if text:
            enc["reasonCode"] = [{"text": text}]
    for dx, rank in _ranked(diagnoses(ctx, SEC_DIAGNOSIS)):
        _condition(ctx, dx, None, rank)
    vital_signs(ctx)


def _medications(ctx: Context) -> None:
    secs = find_sections(ctx.doc, SEC_DISCHARGE_MEDS, SEC_MEDICATIONS)
    end = ctx.doc.header.encounter.end if ctx.doc.header.encounter is not None else None
    for sec in secs:
        for entry in sec.all("entry"):
            sa = entry.first("substanceAdministration")
            if sa is None:
                continue
            product = sa.first("consumable/manufacturedProduct")
            drug = None if product is None else (product.first("manufacturedLabeledDrug")
                                                 or product.first("manufacturedMaterial"))
            if drug is None:
                continue
            name = drug.text_at("name") or None
            c = coded(drug.first("code"))
            if name is None and (c is None or c.code is None):
                continue
            dosage: dict[str, Any] = {}
            route = coded(sa.first("routeCode"))
            dose = sa.first("doseQuantity")
            raw_dose = None if dose is None else dose.attr("value")
            q = None if raw_dose is None or dose is None else quantity(raw_dose, dose.attr("unit"))
            freq = sa.first("rateQuantity")
            parts = [name or "", "" if raw_dose is None or dose is None else f"每次{raw_dose}{dose.attr('unit') or ''}"]
            if freq is not None and freq.attr("value"):
                parts.append(f"{freq.attr('value')}{freq.attr('unit') or ''}".strip())
            if route is not None:
                parts.append(route.display or route.text or route.code or "")
            sa_text = sa.text_at("text")
            dosage["text"] = sa_text or " ".join(p for p in parts if p)
            if route is not None:
                dosage["route"] = concept(route)
            if q is not None:
                q.pop("comparator", None)
                dosage["doseAndRate"] = [{"doseQuantity": q}]
            res: dict[str, Any] = {
                "resourceType": "MedicationStatement", "status": "active",
                "category": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/medication-statement-category",
                                         "code": "community", "display": "Community"}], "text": "出院带药"},
                "medicationCodeableConcept": concept(c, name) if c is not None and c.code else {"text": name},
                "subject": {"reference": ctx.patient_ref},
            }
            if ctx.encounter_ref is not None:
                res["context"] = {"reference": ctx.encounter_ref}
            if end is not None:
                res["effectivePeriod"] = {"start": end.value}
            res["dateAsserted"] = ctx.doc.header.effective.value
            res["derivedFrom"] = [{"reference": ctx.docref_ref}]
            res["dosage"] = [dosage]
            ctx.derived(res)


def discharge_summary(ctx: Context) -> None:
    """C0053 出院小结: admission and discharge diagnoses with their role, discharge medication."""
    for dx, rank in _ranked(diagnoses(ctx, SEC_ADMISSION_DX)):
        _condition(ctx, dx, "AD", rank)
    for dx, rank in _ranked(diagnoses(ctx, SEC_DISCHARGE_DX)):
        _condition(ctx, dx, "DD", rank)
    _medications(ctx)


def _department_names(ctx: Context, secs: list[Node]) -> list[str]:
    """Department names under author/assignedAuthor/representedOrganization in ``secs``
    (住院过程 and 转科 entries name the 科室 there, the ward id root 2.16.156.10011.1.21 nested)."""
    out: list[str] = []
    for sec in secs:
        for entry in sec.all("entry"):
            for child in entry.elements():
                org = child.first("author/assignedAuthor/representedOrganization")
                if org is None:
                    continue
                dept = org.first("asOrganizationPartOf/wholeOrganization")
                name = (dept.text_at("name") if dept is not None and dept.at("id", "root") == "2.16.156.10011.1.26"
                        else "") or org.text_at("name")
                if name and name not in out:
                    out.append(name)
    return out


def front_page(ctx: Context) -> None:
    """C0032 住院病案首页: Encounter details, principal/other discharge diagnoses, operations."""
    enc, header = ctx.encounter, ctx.doc.header.encounter
    if enc is not None:
        hosp: dict[str, Any] = {}
        if header is not None and header.code is not None and header.code.code is not None:
            hosp["admitSource"] = concept(header.code)
        mode = _first_value(ctx, DE_DISCHARGE_MODE)
        c = None if mode is None else coded(mode.node.first("value"))
        if c is not None:
            hosp["dischargeDisposition"] = concept(c)
        if hosp:
            enc["hospitalization"] = hosp
        los = _first_value(ctx, DE_LENGTH_OF_STAY)
        raw = None if los is None else los.node.at("value", "value")
        q = None if raw is None else quantity(raw, "d")
        if q is not None and "comparator" not in q:
            enc["length"] = {"value": q["value"], "unit": "d", "system": UCUM, "code": "d"}
        admit = next((d.name for d in (header.locations if header is not None else ())
                      if d.root == "2.16.156.10011.1.26" and d.name), None)
        moves = _department_names(ctx, find_sections(ctx.doc, SEC_TRANSFER))
        discharge = _department_names(ctx, find_sections(ctx.doc, SEC_HOSPITAL_COURSE))
        names = [n for n in [admit, *moves, *(discharge[-1:])] if n]
        locations: list[dict[str, Any]] = []
        for i, n in enumerate(names):
            loc: dict[str, Any] = {"location": {"display": n}, "status": "completed"}
            if i == 0 and header is not None and header.start is not None:
                loc["period"] = {"start": header.start.value}
            if i == len(names) - 1 and header is not None and header.end is not None:
                loc.setdefault("period", {})["end"] = header.end.value
            if not locations or locations[-1]["location"]["display"] != n:
                locations.append(loc)
            elif "period" in loc:
                locations[-1].setdefault("period", {}).update(loc["period"])
        if locations:
            enc["location"] = locations
    for dx, rank in _ranked(diagnoses(ctx, SEC_DISCHARGE_DX)):
        _condition(ctx, dx, "DD", rank)
    for sec in find_sections(ctx.doc, SEC_PROCEDURES):
        for entry in sec.all("entry"):
            proc = entry.first("procedure")
            if proc is not None:
                _procedure(ctx, proc)


def _procedure(ctx: Context, proc: Node) -> None:
    code = coded(proc.first("code"))
    name = None
    for n in proc.all("entryRelationship/observation"):
        if n.at("code", "code") == DE_PROCEDURE_NAME:
            name = value_text(n.first("value"))
    if (code is None or code.code is None) and not name:
        return
    res: dict[str, Any] = {"resourceType": "Procedure", "status": "completed",
                           "code": concept(code, name) if code is not None and code.code else {"text": name}}
    ctx.context_refs(res)
    et = proc.first("effectiveTime")
    if et is not None and et.attr("value") is None and (et.first("low") is not None or et.first("high") is not None):
        period: dict[str, str] = {}
        for bound, key in (("low", "start"), ("high", "end")):
            ts = ctx.ts(et.first(bound))
            if ts is not None:
                period[key] = ts.value
        if period:
            res["performedPeriod"] = period
    else:
        ts = ctx.ts(et)
        if ts is not None:
            res["performedDateTime"] = ts.value
    surgeon = proc.text_at("performer/assignedEntity/assignedPerson/name")
    if surgeon:
        res["performer"] = [{"function": {"text": "术者"}, "actor": {"display": surgeon}}]
    res["report"] = [{"reference": ctx.docref_ref}]
    ctx.derived(res)


EXTRACTORS: dict[str, Callable[[Context], None]] = {
    "C0002": outpatient_record,
    "C0006": exam_report,
    "C0007": lab_report,
    "C0032": front_page,
    "C0053": discharge_summary,
}
