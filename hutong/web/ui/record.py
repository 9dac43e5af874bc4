"""A person's longitudinal record, assembled for display from ``$everything``.

The clinician workspace (issue 7) and the resident portal show the same
record: every source Patient linked to one golden person, across
institutions.  :func:`load_record` reads it through the caller's policy with
one ``Patient/[id]/$everything`` (operation-patient-everything.html, paged by
``_count`` and the ``next`` link, never truncated) and sorts it in one pass
into plain dataclasses: encounters by institution and department, problems
(Condition, ICD-10), medications (MedicationRequest), allergies
(AllergyIntolerance), lab results (Observation with reference ranges and
interpretation; their DiagnosticReport panels), imaging studies (ImagingStudy
with the report's conclusion), documents (DocumentReference).  Each item
carries its source institution: the Organization managing the source Patient
whose compartment holds it (Patient.managingOrganization, the same rule the
policy uses), else the institution the resource itself names
(serviceProvider, performer, custodian).

"Recent equivalent results elsewhere" (the hook for mutual recognition of
results, 检查检验结果互认): for each lab code and each imaging modality, the
newest result from an institution other than the viewer's own within
:data:`LAB_WINDOW_DAYS` / :data:`IMAGING_WINDOW_DAYS`.

Nothing here reads the store: rows the policy withholds (another
institution's sensitive categories without consent) are simply absent.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from hutong.fhir.search import MAX_COUNT
from hutong.fhir.service import FhirService
from hutong.mpi.golden import PERSON_PREFIX
from hutong.systems import HEALTH_CARD, ID_CARD

LAB_WINDOW_DAYS = 30       # a lab value older than this is not "recent" for mutual recognition
IMAGING_WINDOW_DAYS = 180  # imaging stays relevant longer
MAX_PAGES = 200            # 200 pages of 1,000: far beyond any one person's record
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
_INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
_UNKNOWN = ""


# ------------------------------------------------------------------ items
@dataclass(frozen=True, slots=True)
class Source:
    """The institution an item came from."""

    org_id: str
    name: str


@dataclass(slots=True)
class Encounter:
    id: str
    start: str
    end: str
    kind: str            # 门诊 / 住院 / 急诊 (Encounter.type or class)
    department: str
    diagnoses: list[str]
    source: Source


@dataclass(slots=True)
class Problem:
    id: str
    code: str            # ICD-10 code when coded so
    system: str
    display: str
    status: str          # clinicalStatus code (active, resolved, ...)
    category: str        # problem-list-item | encounter-diagnosis
    onset: str
    recorded: str
    source: Source

    @property
    def active(self) -> bool:
        return self.status in ("active", "recurrence", "relapse", "")


@dataclass(slots=True)
class ProblemGroup:
    """One active problem as the region knows it: the same code recorded by
    several institutions is one line, with each institution as a source."""

    code: str
    display: str
    onset: str           # the earliest onset any institution recorded
    sources: list[Source]


@dataclass(slots=True)
class Medication:
    id: str
    name: str
    status: str
    authored: str
    dosage: str
    source: Source

    @property
    def current(self) -> bool:
        return self.status in ("active", "on-hold", "draft")


@dataclass(slots=True)
class Allergy:
    id: str
    substance: str
    criticality: str
    reaction: str
    recorded: str
    status: str
    source: Source


@dataclass(slots=True)
class LabResult:
    id: str
    code: str
    name: str
    value: str           # as shown (number or coded text)
    number: float | None
    unit: str
    low: float | None
    high: float | None
    range_text: str
    flag: str            # H, L, A (abnormal), or "" (normal / unknown)
    date: str
    panel: str
    source: Source


@dataclass(slots=True)
class Series:
    """One lab code's numeric values over time (trend chart)."""

    code: str
    name: str
    unit: str
    low: float | None
    high: float | None
    points: list[LabResult] = field(default_factory=list)


@dataclass(slots=True)
class Imaging:
    id: str
    started: str
    modalities: list[str]  # DICOM modality codes (CT, MR, DX ...)
    description: str
    series: int
    instances: int
    conclusion: str
    source: Source


@dataclass(slots=True)
class Document:
    id: str
    title: str
    type_code: str
    date: str
    content_type: str
    source: Source


@dataclass(slots=True)
class Equivalent:
    """The newest comparable result from another institution (mutual recognition)."""

    kind: str            # lab | imaging
    code: str
    name: str
    date: str
    value: str
    age_days: int
    source: Source


@dataclass(slots=True)
class Demographics:
    id: str
    name: str
    gender: str
    birth_date: str
    id_number_masked: str
    health_card_masked: str
    linked_records: int


@dataclass(slots=True)
class Record:
    person: str
    demographics: Demographics | None
    institutions: dict[str, Source]
    encounters: list[Encounter]
    problems: list[Problem]
    medications: list[Medication]
    allergies: list[Allergy]
    labs: list[LabResult]
    series: list[Series]
    imaging: list[Imaging]
    documents: list[Document]
    equivalents: list[Equivalent]
    resources: int
    pages: int

    @property
    def active_problems(self) -> list[Problem]:
        return [p for p in self.problems if p.active and p.category != "encounter-diagnosis"] or \
            [p for p in self.problems if p.active]

    @property
    def problem_list(self) -> list[ProblemGroup]:
        """Active problems merged by code across institutions (newest first)."""
        groups: dict[str, ProblemGroup] = {}
        for p in self.active_problems:
            key = p.code or p.display
            g = groups.get(key)
            onset = p.onset or p.recorded
            if g is None:
                groups[key] = ProblemGroup(p.code, p.display, onset, [p.source])
                continue
            if onset and (not g.onset or onset < g.onset):
                g.onset = onset
            if p.source not in g.sources:
                g.sources.append(p.source)
        return list(groups.values())

    @property
    def current_medications(self) -> list[Medication]:
        return [m for m in self.medications if m.current]

    @property
    def sources(self) -> list[Source]:
        """Every institution with at least one item, by name."""
        return sorted(self.institutions.values(), key=lambda s: s.name)


# ------------------------------------------------------------------ helpers
def mask_id(value: str) -> str:
    """110105199001010010 -> 110105********0010 (identity shown, not disclosed)."""
    v = value.strip()
    if len(v) <= 10:
        return v[:2] + "*" * max(len(v) - 2, 0)
    return v[:6] + "*" * (len(v) - 10) + v[-4:]


def _text(cc: Any) -> str:
    if not isinstance(cc, dict):
        return ""
    if isinstance(cc.get("text"), str) and cc["text"]:
        return str(cc["text"])
    for c in cc.get("coding") or ():
        if isinstance(c, dict) and c.get("display"):
            return str(c["display"])
    for c in cc.get("coding") or ():
        if isinstance(c, dict) and c.get("code"):
            return str(c["code"])
    return ""


def _coding(cc: Any, system: str | None = None) -> tuple[str, str]:
    """(system, code) of the first coding (of ``system`` when given)."""
    if not isinstance(cc, dict):
        return "", ""
    codings = [c for c in cc.get("coding") or () if isinstance(c, dict) and c.get("code")]
    for c in codings:
        if system is None or c.get("system") == system:
            return str(c.get("system") or ""), str(c["code"])
    return (str(codings[0].get("system") or ""), str(codings[0]["code"])) if codings else ("", "")


def _code(cc: Any) -> str:
    return _coding(cc)[1]


def _ref_id(ref: Any, type: str | None = None) -> str | None:
    if not isinstance(ref, dict) or not isinstance(ref.get("reference"), str):
        return None
    kind, _, rid = ref["reference"].rpartition("/")
    if type is not None and kind.rsplit("/", 1)[-1] != type:
        return None
    return rid or None


def _num(q: Any) -> float | None:
    if isinstance(q, dict) and isinstance(q.get("value"), int | float) and not isinstance(q.get("value"), bool):
        return float(q["value"])
    return None


def _fmt_num(x: float) -> str:
    return str(int(x)) if x == int(x) and abs(x) < 1e15 else f"{x:g}"


def _day(s: str) -> str:
    return s[:10]


def _when(s: str) -> str:
    """'2025-10-07T08:44:00+08:00' -> '2025-10-07 08:44' (the institution's own local time)."""
    return s[:10] + (" " + s[11:16] if len(s) >= 16 and s[10] == "T" else "")


def _patient_of(res: dict[str, Any]) -> str | None:
    for key in ("subject", "patient"):
        rid = _ref_id(res.get(key), "Patient")
        if rid:
            return rid
    return None


def _flag(res: dict[str, Any], number: float | None, low: float | None, high: float | None) -> str:
    for cc in res.get("interpretation") or ():
        for c in (cc or {}).get("coding") or ():
            code = str((c or {}).get("code") or "").upper()
            if code in ("H", "HH", "HU", ">"):
                return "H"
            if code in ("L", "LL", "LU", "<"):
                return "L"
            if code in ("A", "AA", "POS", "DET", "R"):
                return "A"
            if code in ("N", "NEG", "ND", "S"):
                return ""
    if number is not None:
        if high is not None and number > high:
            return "H"
        if low is not None and number < low:
            return "L"
    return ""


# ------------------------------------------------------------------ reading
def everything_rows(svc: FhirService, person_or_patient_id: str) -> tuple[list[dict[str, Any]], int]:
    """Every resource of the record through the caller's policy (all pages of one
    $everything); returns the resources and the number of pages read."""
    out: list[dict[str, Any]] = []
    items: list[tuple[str, str]] = [("_count", str(MAX_COUNT))]
    pages = 0
    while pages < MAX_PAGES:
        pages += 1
        bundle = orjson.loads(svc.everything(person_or_patient_id, items).body or b"{}")
        for e in bundle.get("entry") or ():
            res = e.get("resource")
            if isinstance(res, dict):
                out.append(res)
        nxt = next((ln.get("url") for ln in bundle.get("link") or () if ln.get("relation") == "next"), None)
        if not nxt:
            break
        cursor = dict(parse_qsl(urlsplit(str(nxt)).query)).get("_cursor")
        if not cursor:
            break
        items = [("_count", str(MAX_COUNT)), ("_cursor", cursor)]
    return out, pages


def load_record(svc: FhirService, person_or_patient_id: str, *, own_org: str | None = None,
                now: datetime | None = None) -> Record:
    """The record of a golden person (``mpi-...``, every linked source) or of one
    source Patient, as the caller of ``svc`` may see it.  ``own_org`` (default:
    the caller's institution) decides what counts as "elsewhere"."""
    if own_org is None and svc.access is not None:
        own_org = svc.access.principal.organization_id
    now = now or datetime.now(UTC)
    rows, pages = everything_rows(svc, person_or_patient_id)
    return build_record(person_or_patient_id, rows, pages=pages, own_org=own_org, now=now)


def build_record(person: str, rows: list[dict[str, Any]], *, pages: int = 1, own_org: str | None = None,
                 now: datetime | None = None) -> Record:
    """Sort one record's resources (one pass, then one pass per kind)."""
    now = now or datetime.now(UTC)
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_type[str(r.get("resourceType"))].append(r)
    orgs = {str(o.get("id")): str(o.get("name") or o.get("id")) for o in by_type["Organization"]}
    # source Patient -> its institution (managingOrganization), the policy's own rule
    patient_org: dict[str, str] = {}
    golden: dict[str, Any] | None = None
    for p in by_type["Patient"]:
        pid = str(p.get("id"))
        if pid.startswith(PERSON_PREFIX):
            if pid == person or golden is None:
                golden = p
            continue
        org = _ref_id(p.get("managingOrganization"), "Organization")
        if org:
            patient_org[pid] = org
            if org not in orgs:
                orgs[org] = str((p.get("managingOrganization") or {}).get("display") or org)
    institutions: dict[str, Source] = {}

    def source(res: dict[str, Any], *fallback: Any) -> Source:
        org = None
        pid = _patient_of(res)
        if pid:
            org = patient_org.get(pid)
        display = ""
        if org is None:
            # The patient's own Patient row was not visible: the institution the item names.
            for ref in fallback:
                for one in ref if isinstance(ref, list) else [ref]:
                    target = one.get("actor") if isinstance(one, dict) and "actor" in one else one
                    rid = _ref_id(target, "Organization")
                    if rid:
                        org, display = rid, str((target or {}).get("display") or "")
                        break
                if org:
                    break
        if org is None:
            return Source(_UNKNOWN, "")
        s = institutions.get(org)
        if s is None:
            s = Source(org, orgs.get(org) or display or org)
            institutions[org] = s
        return s

    encounters = [_encounter(e, source(e, e.get("serviceProvider"))) for e in by_type["Encounter"]]
    conditions = {str(c.get("id")): c for c in by_type["Condition"]}
    for enc, raw in zip(encounters, by_type["Encounter"], strict=True):
        for d in raw.get("diagnosis") or ():
            cid = _ref_id((d or {}).get("condition"), "Condition")
            if cid and cid in conditions:
                enc.diagnoses.append(_text(conditions[cid].get("code")))
    encounters.sort(key=lambda e: e.start, reverse=True)

    problems = [_problem(c, source(c, c.get("recorder"))) for c in by_type["Condition"]]
    problems.sort(key=lambda p: p.recorded, reverse=True)
    problems.sort(key=lambda p: not p.active)  # stable: active first, each newest first

    meds = [_medication(m, source(m, m.get("performer"))) for m in by_type["MedicationRequest"]]
    meds.sort(key=lambda m: m.authored, reverse=True)

    allergies = [_allergy(a, source(a)) for a in by_type["AllergyIntolerance"]]
    allergies.sort(key=lambda a: a.recorded, reverse=True)

    panel_of: dict[str, str] = {}
    conclusion_of: dict[str, str] = {}
    for dr in by_type["DiagnosticReport"]:
        name = _text(dr.get("code"))
        for r in dr.get("result") or ():
            oid = _ref_id(r, "Observation")
            if oid:
                panel_of[oid] = name
        for st in dr.get("imagingStudy") or ():
            sid = _ref_id(st, "ImagingStudy")
            if sid and dr.get("conclusion"):
                conclusion_of[sid] = str(dr["conclusion"])
    labs = [_lab(o, panel_of.get(str(o.get("id")), ""), source(o, o.get("performer")))
            for o in by_type["Observation"] if _is_lab(o)]
    labs.sort(key=lambda x: x.date, reverse=True)

    imaging = [_imaging(s, conclusion_of.get(str(s.get("id")), ""), source(s)) for s in by_type["ImagingStudy"]]
    imaging.sort(key=lambda x: x.started, reverse=True)

    documents = [_document(d, source(d, d.get("custodian"))) for d in by_type["DocumentReference"]]
    documents.sort(key=lambda x: x.date, reverse=True)

    series = _series(labs)
    equivalents = _equivalents(labs, imaging, own_org, now)
    demo = _demographics(golden) if golden is not None else None
    return Record(person=person, demographics=demo, institutions=institutions, encounters=encounters,
                  problems=problems, medications=meds, allergies=allergies, labs=labs, series=series,
                  imaging=imaging, documents=documents, equivalents=equivalents, resources=len(rows), pages=pages)


# ------------------------------------------------------------------ one kind each
def _encounter(e: dict[str, Any], src: Source) -> Encounter:
    period = e.get("period") or {}
    types = e.get("type") or []
    kind = _text(types[0]) if types else ""
    if not kind:
        kind = str((e.get("class") or {}).get("display") or (e.get("class") or {}).get("code") or "")
    dept = _text(e.get("serviceType"))
    if not dept:
        for ln in e.get("location") or ():
            dept = str(((ln or {}).get("location") or {}).get("display") or "")
            if dept:
                break
    return Encounter(str(e.get("id")), _when(str(period.get("start") or "")), _when(str(period.get("end") or "")),
                     kind, dept, [], src)


def _problem(c: dict[str, Any], src: Source) -> Problem:
    system, code = _coding(c.get("code"), ICD10)
    if not code:
        system, code = _coding(c.get("code"))
    cats = c.get("category") or []
    return Problem(str(c.get("id")), code, system, _text(c.get("code")), _code(c.get("clinicalStatus")),
                   _code(cats[0]) if cats else "", _day(str(c.get("onsetDateTime") or "")),
                   _day(str(c.get("recordedDate") or "")), src)


def _medication(m: dict[str, Any], src: Source) -> Medication:
    name = _text(m.get("medicationCodeableConcept")) or str((m.get("medicationReference") or {}).get("display") or "")
    dosage = "; ".join(str(d.get("text")) for d in m.get("dosageInstruction") or () if isinstance(d, dict)
                       and d.get("text"))
    return Medication(str(m.get("id")), name, str(m.get("status") or ""), _day(str(m.get("authoredOn") or "")),
                      dosage, src)


def _allergy(a: dict[str, Any], src: Source) -> Allergy:
    reactions = [_text(mf) for r in a.get("reaction") or () if isinstance(r, dict)
                 for mf in r.get("manifestation") or ()]
    return Allergy(str(a.get("id")), _text(a.get("code")), str(a.get("criticality") or ""),
                   "、".join(x for x in reactions if x), _day(str(a.get("recordedDate") or "")),
                   _code(a.get("clinicalStatus")), src)


def _is_lab(o: dict[str, Any]) -> bool:
    for cat in o.get("category") or ():
        for c in (cat or {}).get("coding") or ():
            if (c or {}).get("code") == "laboratory":
                return True
    return not o.get("category")


def _lab(o: dict[str, Any], panel: str, src: Source) -> LabResult:
    system, code = _coding(o.get("code"), LOINC)
    if not code:
        system, code = _coding(o.get("code"))
    q = o.get("valueQuantity")
    number = _num(q)
    unit = str((q or {}).get("unit") or (q or {}).get("code") or "") if isinstance(q, dict) else ""
    if number is not None:
        comparator = str((q or {}).get("comparator") or "")
        value = comparator + _fmt_num(number)
    elif "valueCodeableConcept" in o:
        value = _text(o["valueCodeableConcept"])
    elif "valueString" in o:
        value = str(o["valueString"])
    else:
        value = ""
    low = high = None
    range_text = ""
    for rr in o.get("referenceRange") or ():
        if not isinstance(rr, dict):
            continue
        low, high = _num(rr.get("low")), _num(rr.get("high"))
        range_text = str(rr.get("text") or "")
        if not range_text and (low is not None or high is not None):
            range_text = f"{_fmt_num(low) if low is not None else ''}-{_fmt_num(high) if high is not None else ''}"
        break
    date = _when(str(o.get("effectiveDateTime") or o.get("issued") or ""))
    return LabResult(str(o.get("id")), code, _text(o.get("code")), value, number, unit, low, high, range_text,
                     _flag(o, number, low, high), date, panel, src)


def _imaging(s: dict[str, Any], conclusion: str, src: Source) -> Imaging:
    mods = [str(m.get("code")) for m in s.get("modality") or () if isinstance(m, dict) and m.get("code")]
    desc = str(s.get("description") or "") or "、".join(_text(p) for p in s.get("procedureCode") or ())
    return Imaging(str(s.get("id")), _when(str(s.get("started") or "")), mods, desc,
                   int(s.get("numberOfSeries") or 0), int(s.get("numberOfInstances") or 0), conclusion, src)


def _document(d: dict[str, Any], src: Source) -> Document:
    att: dict[str, Any] = {}
    for c in d.get("content") or ():
        if isinstance(c, dict) and isinstance(c.get("attachment"), dict):
            att = c["attachment"]
            break
    title = str(att.get("title") or d.get("description") or _text(d.get("type")) or "")
    return Document(str(d.get("id")), title, _code(d.get("type")), _when(str(d.get("date") or att.get("creation")
                                                                             or "")),
                    str(att.get("contentType") or ""), src)


def _series(labs: list[LabResult]) -> list[Series]:
    by_code: dict[str, Series] = {}
    for x in labs:  # newest first
        if x.number is None or not x.code:
            continue
        s = by_code.get(x.code)
        if s is None:
            s = Series(x.code, x.name, x.unit, x.low, x.high)
            by_code[x.code] = s
        s.points.append(x)
    out = [s for s in by_code.values() if len(s.points) >= 2]
    for s in out:
        s.points.reverse()  # oldest first, as a chart reads
    # most recently measured first
    out.sort(key=lambda s: s.points[-1].date, reverse=True)
    return out


def _equivalents(labs: list[LabResult], imaging: list[Imaging], own_org: str | None,
                 now: datetime) -> list[Equivalent]:
    today = now.date()
    lab_cut = (today - timedelta(days=LAB_WINDOW_DAYS)).isoformat()
    img_cut = (today - timedelta(days=IMAGING_WINDOW_DAYS)).isoformat()
    out: list[Equivalent] = []
    seen: set[str] = set()
    for x in labs:  # newest first: the first per code is the newest
        if not x.code or x.code in seen or x.source.org_id in ("", own_org) or x.date[:10] < lab_cut:
            continue
        seen.add(x.code)
        out.append(Equivalent("lab", x.code, x.name, x.date, f"{x.value} {x.unit}".strip(),
                              _age(today, x.date), x.source))
    seen.clear()
    for s in imaging:
        if s.source.org_id in ("", own_org) or s.started[:10] < img_cut:
            continue
        for m in s.modalities or [""]:
            if m in seen:
                continue
            seen.add(m)
            out.append(Equivalent("imaging", m, s.description, s.started, s.conclusion, _age(today, s.started),
                                  s.source))
    return out


def _age(today: date, when: str) -> int:
    try:
        return max((today - datetime.fromisoformat(when[:10]).date()).days, 0)
    except ValueError:
        return 0


def _demographics(p: dict[str, Any]) -> Demographics:
    names = p.get("name") or []
    name = ""
    if names and isinstance(names[0], dict):
        n = names[0]
        name = str(n.get("text") or (str(n.get("family") or "") + "".join(n.get("given") or ())))
    idn = next((str(i.get("value")) for i in p.get("identifier") or () if isinstance(i, dict)
                and i.get("system") == ID_CARD and i.get("value")), "")
    card = next((str(i.get("value")) for i in p.get("identifier") or () if isinstance(i, dict)
                 and i.get("system") == HEALTH_CARD and i.get("value")), "")
    links = [ln for ln in p.get("link") or () if isinstance(ln, dict) and ln.get("type") == "seealso"]
    return Demographics(str(p.get("id")), name, str(p.get("gender") or ""), str(p.get("birthDate") or ""),
                        mask_id(idn) if idn else "", mask_id(card) if card else "", len(links))


def demographics_of(patient: dict[str, Any]) -> Demographics:
    """Display demographics of a (golden) Patient resource (search results)."""
    return _demographics(patient)
