"""Reading the body of a WS/T 500 document: vocabularies, entries, values, the extraction context.

What the WS/T 500 body looks like (the standard's text was not available to
us; structure and codes below are read from public implementations of it,
bzrrr/cda ``src/main/resources/templates/template{02,06,07,32,53}.ftl`` and
XSLT/Java generators found by searching for the data element codes):

* sections are LOINC-coded: 29548-5 诊断记录, 30954-2 实验室检验/检查
  (STUDIES SUMMARY), 11450-4 主要健康问题 (PROBLEM LIST), 46241-6 入院诊断,
  11535-2 出院诊断, 8716-3 生命体征, 47519-4 手术操作, 10160-0 用药,
  29545-1 体格检查, 10154-3 主诉, 8648-8 住院过程, 42349-1 转科;
  the 检验报告/检查报告 report sections carry no code (displayName only);
* entries are observations coded with WS 363 data elements (code system
  2.16.156.10011.2.2.1, 卫生信息数据元目录), one value each, grouped in
  ``organizer classCode="CLUSTER"``: a lab or exam item is DE04.30.019.00
  检验/检查项目代码 (+ DE04.50.134.00 标本类别 inside) with DE04.30.017.00
  结果代码 (code system 2.16.156.10011.2.3.2.38) and DE04.30.015.00 定量结果
  (REAL) whose unit is DE04.30.016.00; a diagnosis is DE05.01.024.00 诊断代码
  (ICD-10 under 2.16.156.10011.2.3.3.11 or one of its sub-arcs .11.x, both
  seen) with DE05.01.025.00 诊断名称; a procedure is ``procedure`` with an
  ICD-9-CM-3 code (2.16.156.10011.2.3.3.12) and DE06.00.094.00 手术名称;
  vital signs are DE04.10.186.00 体温, .118 脉率, .081 呼吸频率, .174/.176
  收缩压/舒张压, .188 体重, .167 身高 as PQ;
* a plain CDA result observation (LOINC code, PQ value, interpretationCode,
  referenceRange), as in HL7 CCD / C-CDA's Results section, is read too, and
  so are CDA R2's interpretationCode and referenceRange on the WS/T 500
  quantitative result, which the data-element form has no place for.
"""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from hutong.ingest.cda.doctypes import DocType
from hutong.ingest.cda.parse import CdaDocument, CdaError, Coded, Node, Timestamp, coded, sections, timestamp
from hutong.systems import EXT_BASE

# ------------------------------------------------------------- vocabularies

DATA_ELEMENTS = "2.16.156.10011.2.2.1"  # WS 363 卫生信息数据元目录
LOINC_OID = "2.16.840.1.113883.6.1"
LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD9CM = "http://hl7.org/fhir/sid/icd-9-cm"
UCUM = "http://unitsofmeasure.org"
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
COND_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
DIAGNOSIS_ROLE = "http://terminology.hl7.org/CodeSystem/diagnosis-role"
SOURCE_DOCUMENT_EXT = EXT_BASE + "source-document"
DIAGNOSIS_ROLE_EXT = EXT_BASE + "diagnosis-role"

# WS 364 ICD-10 tables: 2.16.156.10011.2.3.3.11 and its sub-arcs (.11.1/.11.3/.11.5 all appear in
# public WS/T 500 documents for 诊断代码); ICD-9-CM-3 手术(操作)代码 likewise under .12.
_ICD10_OIDS = ("2.16.156.10011.2.3.3.11", "2.16.840.1.113883.6.3", "2.16.840.1.113883.6.90")
_ICD9_OIDS = ("2.16.156.10011.2.3.3.12", "2.16.840.1.113883.6.104", "2.16.840.1.113883.6.103")
_SYSTEMS = {
    LOINC_OID: LOINC,
    "2.16.840.1.113883.6.96": "http://snomed.info/sct",
    "2.16.840.1.113883.5.83": V3_INTERPRETATION,
    "2.16.840.1.113883.6.8": UCUM,
}


def fhir_system(oid: str | None) -> str | None:
    """The FHIR code system URI of a CDA codeSystem OID."""
    if oid is None:
        return None
    for base in _ICD10_OIDS:
        if oid == base or oid.startswith(base + "."):
            return ICD10
    for base in _ICD9_OIDS:
        if oid == base or oid.startswith(base + "."):
            return ICD9CM
    return _SYSTEMS.get(oid, "urn:oid:" + oid)


# Units as Chinese laboratories write them -> UCUM (units of measure, case-sensitive codes).
_UCUM: dict[str, str] = {
    "mmol/l": "mmol/L", "umol/l": "umol/L", "μmol/l": "umol/L", "µmol/l": "umol/L", "nmol/l": "nmol/L",
    "pmol/l": "pmol/L", "mol/l": "mol/L", "g/l": "g/L", "mg/l": "mg/L", "ug/l": "ug/L", "μg/l": "ug/L",
    "ng/l": "ng/L", "g/dl": "g/dL", "mg/dl": "mg/dL", "ng/ml": "ng/mL", "pg/ml": "pg/mL", "ug/ml": "ug/mL",
    "μg/ml": "ug/mL", "u/l": "U/L", "iu/l": "[IU]/L", "u/ml": "U/mL", "iu/ml": "[IU]/mL", "miu/l": "m[IU]/L",
    "miu/ml": "m[IU]/mL", "uiu/ml": "u[IU]/mL", "μiu/ml": "u[IU]/mL", "10^9/l": "10*9/L", "10*9/l": "10*9/L",
    "×10^9/l": "10*9/L", "x10^9/l": "10*9/L", "×10⁹/l": "10*9/L", "10^12/l": "10*12/L", "×10^12/l": "10*12/L",
    "x10^12/l": "10*12/L", "×10¹²/l": "10*12/L", "10*12/l": "10*12/L", "%": "%", "fl": "fL", "pg": "pg",
    "s": "s", "秒": "s", "sec": "s", "mmhg": "mm[Hg]", "kpa": "kPa", "℃": "Cel", "°c": "Cel", "摄氏度": "Cel",
    "次/min": "/min", "次/分": "/min", "次/分钟": "/min", "bpm": "/min", "/min": "/min", "kg": "kg", "g": "g",
    "cm": "cm", "mm": "mm", "m": "m", "ml": "mL", "l": "L", "ml/min": "mL/min", "mg": "mg", "μg": "ug", "ug": "ug",
    "ml/min/1.73m2": "mL/min/{1.73_m2}", "ml/min/1.73m^2": "mL/min/{1.73_m2}", "d": "d", "天": "d", "h": "h",
    "min": "min", "片": "{tbl}", "粒": "{cap}", "支": "{ampule}", "mm/h": "mm/h",
}


def ucum(unit: str | None) -> str | None:
    if unit is None:
        return None
    return _UCUM.get(unit.strip().replace(" ", "").lower())


# WS 363 vital-sign data elements -> LOINC (FHIR vital signs profile codes) and the display.
VITALS: dict[str, tuple[str, str]] = {
    "DE04.10.186.00": ("8310-5", "体温"),
    "DE04.10.118.00": ("8867-4", "脉率"),
    "DE04.10.206.00": ("8867-4", "心率"),
    "DE04.10.081.00": ("9279-1", "呼吸频率"),
    "DE04.10.174.00": ("8480-6", "收缩压"),
    "DE04.10.176.00": ("8462-4", "舒张压"),
    "DE04.10.188.00": ("29463-7", "体重"),
    "DE04.10.167.00": ("8302-2", "身高"),
    "DE04.50.149.00": ("59408-5", "血氧饱和度"),
}
VITAL_UNITS = {"8310-5": "Cel", "8867-4": "/min", "9279-1": "/min", "8480-6": "mm[Hg]", "8462-4": "mm[Hg]",
                "29463-7": "kg", "8302-2": "cm", "59408-5": "%"}

# Data elements read from the body.
DE_ITEM_CODE, DE_ITEM_NAME = "DE04.30.019.00", "DE04.30.020.00"
DE_QUANT, DE_UNIT, DE_RESULT_CODE = "DE04.30.015.00", "DE04.30.016.00", "DE04.30.017.00"
DE_METHOD, DE_CATEGORY, DE_SPECIMEN = "DE02.10.027.00", "DE04.30.018.00", "DE04.50.134.00"
DE_LAB_CONCLUSION, DE_EXAM_CONCLUSION = "DE04.50.130.00", "DE04.50.131.00"
DE_DX_CODE, DE_DX_NAME = "DE05.01.024.00", "DE05.01.025.00"
DE_CHIEF_COMPLAINT = "DE04.01.119.00"
DE_PROCEDURE_NAME = "DE06.00.094.00"
DE_DISCHARGE_MODE, DE_LENGTH_OF_STAY = "DE06.00.223.00", "DE06.00.310.00"
ITEM_ELEMENTS = frozenset({DE_ITEM_CODE, DE_ITEM_NAME, DE_QUANT, DE_RESULT_CODE})

SEC_DIAGNOSIS, SEC_LAB, SEC_PROBLEMS = "29548-5", "30954-2", "11450-4"
SEC_ADMISSION_DX, SEC_DISCHARGE_DX, SEC_VITALS = "46241-6", "11535-2", "8716-3"
SEC_PROCEDURES, SEC_MEDICATIONS, SEC_DISCHARGE_MEDS = "47519-4", "10160-0", "10183-2"
SEC_PHYSICAL, SEC_CHIEF_COMPLAINT, SEC_HOSPITAL_COURSE, SEC_TRANSFER = "29545-1", "10154-3", "8648-8", "42349-1"

# Types whose extracted resources are matched on a meta.tag instead of identifier (see Context.derived).
NO_IDENTIFIER_SEARCH = frozenset({"MedicationStatement"})

_NUMBER = re.compile(r"^\s*(<=|>=|<|>)?\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*$")


# ------------------------------------------------------------- the context

@dataclass
class Context:
    """What every extractor needs: the document, the references of the header
    resources, and the sink for new entries (owned by the mapping)."""

    doc: CdaDocument
    doc_type: DocType
    sender_code: str
    document_id: str
    source: str                        # meta.source
    document_system: str               # identifier system of the institution's documents
    organization_ref: str              # Organization/<id> of the sender
    patient_ref: str
    docref_ref: str
    practitioner: dict[str, str] | None  # Reference to the author
    encounter: dict[str, Any] | None     # the Encounter resource being built (mutable until assembly)
    encounter_ref: str | None
    add: Callable[[dict[str, Any], str], str]  # (resource, ifNoneExist) -> fullUrl
    counters: dict[str, int] = field(default_factory=dict)
    _entries: list[tuple[str | None, list[Obs]]] | None = field(default=None, init=False, repr=False)

    def groups(self, *section_codes: str) -> list[list[Obs]]:
        """The observation groups (see :func:`groups`) of the sections with these LOINC
        codes, in document order; every section's when no code is given.  The body is read once."""
        if self._entries is None:
            self._entries = [(s.at("code", "code"), g) for s in sections(self.doc.body) for g in groups(s)]
        return [g for code, g in self._entries if not section_codes or code in section_codes]

    def values(self, de: str, *section_codes: str) -> list[Obs]:
        """Every observation coded with data element ``de`` (in those sections)."""
        return [o for g in self.groups(*section_codes) for o in g if o.de == de]

    def ts(self, n: Node | None) -> Timestamp | None:
        """The TS at ``n`` (@value, else low/@value); malformed -> CdaError("cda-body")."""
        if n is None or n.null:
            return None
        v = n.attr("value")
        target = n
        if v is None:
            low = n.first("low")
            v, target = (None, n) if low is None else (low.attr("value"), low)
        if v is None:
            return None
        try:
            return timestamp(v)
        except ValueError as e:
            raise CdaError("cda-body", f"{target.xpath()}/@value: {e}") from None

    def derived(self, resource: dict[str, Any]) -> str:
        """Add one extracted resource: its idempotency identifier, meta.source,
        the conditional create; returns its fullUrl."""
        rtype = resource["resourceType"]
        n = self.counters.get(rtype, 0) + 1
        self.counters[rtype] = n
        value = f"{self.document_id}#{rtype}-{n}"
        ident = {"system": self.document_system, "value": value}
        resource["identifier"] = [ident, *resource.get("identifier", [])]
        resource["meta"] = {"source": self.source}
        if rtype in NO_IDENTIFIER_SEARCH:
            # The store defines no search parameters for these types yet (R4 has
            # MedicationStatement.identifier): the same key as a tag, which every type can search.
            resource["meta"]["tag"] = [{"system": self.document_system, "code": value}]
            return self.add(resource, "_tag=" + token_query_value(self.document_system, value))
        return self.add(resource, identifier_query(self.document_system, value))

    def context_refs(self, resource: dict[str, Any]) -> dict[str, Any]:
        resource["subject"] = {"reference": self.patient_ref}
        if self.encounter_ref is not None:
            resource["encounter"] = {"reference": self.encounter_ref}
        return resource


def _escape(v: str) -> str:
    # search.html#escaping: \ , $ | inside a token value
    return v.replace("\\", "\\\\").replace(",", "\\,").replace("$", "\\$").replace("|", "\\|")


def token_query_value(system: str, value: str) -> str:
    """``<system>|<value>`` as a token search value (escaped, URL-quoted where needed)."""
    return quote(f"{_escape(system)}|{_escape(value)}", safe=":/|\\")


def identifier_query(system: str, value: str) -> str:
    """``identifier=<system>|<value>`` as an ifNoneExist query."""
    return "identifier=" + token_query_value(system, value)


# ------------------------------------------------------------- body reading

@dataclass
class Obs:
    """One observation of the body, with the data-element code it carries."""

    node: Node
    code: Coded | None

    @property
    def de(self) -> str | None:
        c = self.code
        return c.code if c is not None and c.system == DATA_ELEMENTS else None

    @property
    def label(self) -> str:
        """displayName plus the qualifier names (首页 writes 主要/其他诊断 there)."""
        parts = [self.node.at("code", "displayName") or ""]
        parts += [q.attr("displayName") or "" for q in self.node.all("code/qualifier/name")]
        return " ".join(p for p in parts if p)

    def related(self, de: str) -> Obs | None:
        """The entryRelationship observation carrying data element ``de``."""
        for n in self.node.all("entryRelationship/observation"):
            if n.at("code", "code") == de:
                return Obs(n, coded(n.first("code")))
        return None


def _obs(n: Node) -> Obs:
    return Obs(n, coded(n.first("code")))


def groups(section: Node) -> Iterator[list[Obs]]:
    """The observations of each entry: an organizer's components form one
    group (one lab item, one diagnosis); a bare observation is its own."""
    for entry in section.all("entry"):
        for child in entry.elements():
            if child.name == "observation":
                yield [_obs(child)]
            elif child.name == "organizer":
                yield from _organizer(child)


def _organizer(org: Node) -> Iterator[list[Obs]]:
    members: list[Obs] = []
    for comp in org.all("component"):
        for child in comp.elements():
            if child.name == "observation":
                members.append(_obs(child))
            elif child.name == "organizer":
                yield from _organizer(child)
    if members:
        yield members


def find_sections(doc: CdaDocument, *codes: str) -> list[Node]:
    return [s for s in sections(doc.body) if s.at("code", "code") in codes]


def value_text(n: Node | None) -> str | None:
    """The text of a value (ST, or a CD's displayName/text/code)."""
    if n is None or n.null:
        return None
    if n.xsi_type in ("CD", "CE", "CV", "CO", "CS"):
        c = coded(n)
        return None if c is None else (c.display or c.text or c.code)
    return n.text or n.attr("value")


def quantity(value: str, unit: str | None) -> dict[str, Any] | None:
    """A FHIR Quantity from a numeric literal (with an optional comparator, as in '<0.10')."""
    m = _NUMBER.match(value)
    if m is None:
        return None
    comparator, literal = m.groups()
    number: int | float = float(literal) if any(c in literal for c in ".eE") else int(literal)
    q: dict[str, Any] = {"value": number}
    if comparator:
        q["comparator"] = comparator
    if unit:
        q["unit"] = unit
        code = ucum(unit)
        if code is not None:
            q["system"], q["code"] = UCUM, code
    return q


def obs_value(o: Obs, unit: str | None = None) -> dict[str, Any] | None:
    """``{"valueQuantity": ...}`` / valueString / valueCodeableConcept / valueBoolean of an observation."""
    v = o.node.first("value")
    if v is None or v.null:
        return None
    t = v.xsi_type
    if t in ("PQ", "REAL", "INT", "MO"):
        raw = v.attr("value")
        if raw is None:
            return None
        q = quantity(raw, v.attr("unit") or v.attr("currency") or unit)
        # a number field holding words ('阴性') is kept as the words, not dropped
        return {"valueQuantity": q} if q is not None else {"valueString": raw}
    if t in ("CD", "CE", "CV", "CO", "CS"):
        c = coded(v)
        return None if c is None else {"valueCodeableConcept": concept(c)}
    if t == "BL":
        b = v.attr("value")
        return {"valueBoolean": b == "true"} if b in ("true", "false") else None
    text = v.text or v.attr("value")
    return {"valueString": text} if text else None


def concept(c: Coded, text: str | None = None) -> dict[str, Any]:
    cc: dict[str, Any] = {}
    if c.code is not None:
        coding: dict[str, Any] = {"code": c.code}
        system = fhir_system(c.system)
        if system is not None:
            coding = {"system": system, **coding}
        if c.display:
            coding["display"] = c.display
        cc["coding"] = [coding]
    label = text or c.text or c.display
    if label:
        cc["text"] = label
    return cc


# ------------------------------------------------------------- interpretation

_INTERPRETATION_WORDS = (("偏高", "H"), ("升高", "H"), ("↑", "H"), ("偏低", "L"), ("降低", "L"), ("↓", "L"),
                         ("异常", "A"), ("阳性", "POS"), ("阴性", "NEG"), ("正常", "N"))
_V3_DISPLAY = {"H": "High", "L": "Low", "A": "Abnormal", "N": "Normal", "HH": "Critical high",
               "LL": "Critical low", "POS": "Positive", "NEG": "Negative"}


def interpretation(o: Obs | None, result_code: Obs | None) -> list[dict[str, Any]]:
    """Observation.interpretation from CDA interpretationCode (v3 ObservationInterpretation)
    and/or the WS/T 500 检验结果代码 (kept as sent, with the v3 code it names when its words do)."""
    out: list[dict[str, Any]] = []
    if o is not None:
        for ic in o.node.all("interpretationCode"):
            c = coded(ic)
            if c is not None and c.code:
                system = fhir_system(c.system) if c.system else V3_INTERPRETATION
                coding = {"system": system, "code": c.code}
                if system == V3_INTERPRETATION and c.code in _V3_DISPLAY:
                    coding["display"] = _V3_DISPLAY[c.code]
                out.append({"coding": [coding]})
    if result_code is not None:
        v = result_code.node.first("value")
        c = coded(v) if v is not None and v.xsi_type in ("CD", "CE", "CV") else None
        words = value_text(v) or ""
        cc: dict[str, Any] = concept(c) if c is not None else ({"text": words} if words else {})
        if cc:
            if not out:
                for word, code in _INTERPRETATION_WORDS:
                    if word in words:
                        cc.setdefault("coding", []).append(
                            {"system": V3_INTERPRETATION, "code": code, "display": _V3_DISPLAY[code]})
                        break
            out.append(cc)
    return out


def reference_range(o: Obs | None) -> list[dict[str, Any]]:
    """CDA referenceRange/observationRange (IVL_PQ low/high, or text) -> Observation.referenceRange."""
    if o is None:
        return []
    out: list[dict[str, Any]] = []
    for rr in o.node.all("referenceRange/observationRange"):
        r: dict[str, Any] = {}
        v = rr.first("value")
        if v is not None:
            for bound in ("low", "high"):
                b = v.first(bound)
                raw = None if b is None else b.attr("value")
                if b is not None and raw is not None:
                    q = quantity(raw, b.attr("unit"))
                    if q is not None:
                        q.pop("comparator", None)  # SimpleQuantity has no comparator
                        r[bound] = q
        text = rr.text_at("text") or (None if v is None else (v.text or None))
        if text:
            r["text"] = text
        if r:
            out.append(r)
    return out


def narrative(*paragraphs: tuple[str, str]) -> dict[str, Any]:
    body = "".join(f"<p><b>{html.escape(k)}</b>：{html.escape(v)}</p>" for k, v in paragraphs)
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{body}</div>'}


def new_uuid(namespace: str, key: str) -> str:
    """A fullUrl stable for one document (same document in, same Bundle out)."""
    return "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}#{key}"))
