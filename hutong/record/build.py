"""Sort one person's ``$everything`` rows into the record model, once.

:func:`build_record` takes the resources the caller's policy admitted (rows
withheld — another institution's sensitive categories without consent — are
simply absent) and makes the typed :class:`~hutong.record.model.Record` both
portals render.  It reads no store and makes no HTML.

Three rules live here and nowhere else:

- **Institution of an item**: the Organization managing the source Patient
  whose compartment holds it (Patient.managingOrganization, the rule the
  policy uses), else the Organization the item itself names
  (serviceProvider, performer, custodian, recorder).
- **Encounter–Condition resolution** (:func:`resolve_diagnoses`;
  encounter.html#Encounter.diagnosis, condition.html#Condition.encounter): an
  Encounter's diagnoses are the Conditions its ``diagnosis.condition`` names
  (by ``rank``, then as listed) — including a Condition first recorded at an
  earlier visit — and then the Conditions whose ``encounter`` points to it;
  each Condition once.  A reference to a Condition the caller was not given
  is left out (never shown from the reference's own display text).
- **Lab grouping**: an Observation is a lab result when its category is
  ``laboratory`` (or it has none) or a DiagnosticReport lists it.  Results
  are grouped by the DiagnosticReport that lists them; results no report lists
  are grouped by institution and day.  Each result's flag is
  :func:`hutong.record.flags.flag_of`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from hutong.mpi.golden import PERSON_PREFIX
from hutong.record import readers as rd
from hutong.record.flags import flag_of, reference_range
from hutong.record.model import (
    Allergy,
    Demographics,
    Diagnosis,
    Document,
    Encounter,
    Entry,
    Imaging,
    LabReport,
    LabResult,
    Medication,
    Problem,
    Record,
    Series,
    Source,
)
from hutong.systems import HEALTH_CARD, ID_CARD

ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
# Resource types that are items on the record's timeline (Record.entries).
ENTRY_TYPES = ("Encounter", "Condition", "MedicationRequest", "MedicationStatement", "AllergyIntolerance",
               "DiagnosticReport",
               "Observation", "ImagingStudy", "DocumentReference", "Immunization", "Procedure")
_UNKNOWN = Source("", "")
_FALLBACK_ORG = ("serviceProvider", "performer", "custodian", "recorder")


def mask_id(value: str) -> str:
    """110105199001010010 -> 110105********0010 (identity shown, not disclosed)."""
    v = value.strip()
    if len(v) <= 10:
        return v[:2] + "*" * max(len(v) - 2, 0)
    return v[:6] + "*" * (len(v) - 10) + v[-4:]


def demographics_of(p: dict[str, Any]) -> Demographics:
    """Display demographics of a (golden) Patient resource, identifiers masked."""
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


class _Sources:
    """The institution of each item (the first rule of the module docstring)."""

    def __init__(self, by_type: dict[str, list[dict[str, Any]]]) -> None:
        self.names = {str(o.get("id")): str(o.get("name") or o.get("id")) for o in by_type["Organization"]}
        self.patient_org: dict[str, str] = {}
        self.used: dict[str, Source] = {}
        for p in by_type["Patient"]:
            pid = str(p.get("id"))
            org = rd.ref_id(p.get("managingOrganization"), "Organization")
            if org and not pid.startswith(PERSON_PREFIX):
                self.patient_org[pid] = org
                disp = (p.get("managingOrganization") or {}).get("display")
                if org not in self.names and isinstance(disp, str) and disp:
                    self.names[org] = disp

    def of(self, res: dict[str, Any]) -> Source:
        pid = rd.patient_of(res)
        org = self.patient_org.get(pid) if pid else None
        display = ""
        if org is None:
            # The item's own Patient row was not given: the institution the item names.
            for key in _FALLBACK_ORG:
                v = res.get(key)
                for one in v if isinstance(v, list) else [v]:
                    target = one.get("actor") if isinstance(one, dict) and "actor" in one else one
                    rid = rd.ref_id(target, "Organization")
                    if rid:
                        org, display = rid, str((target or {}).get("display") or "")
                        break
                if org:
                    break
        if org is None:
            return _UNKNOWN
        s = self.used.get(org)
        if s is None:
            if org not in self.names and display:
                self.names[org] = display
            s = Source(org, self.names.get(org) or org)
            self.used[org] = s
        return s


def resolve_diagnoses(encounters: list[dict[str, Any]],
                      conditions: list[dict[str, Any]]) -> dict[str, list[Diagnosis]]:
    """Encounter id -> its diagnoses (the second rule of the module docstring)."""
    by_id = {str(c.get("id")): c for c in conditions}
    out: dict[str, list[Diagnosis]] = {}
    for e in encounters:
        named: list[tuple[int, int, str, int | None]] = []
        for i, d in enumerate(e.get("diagnosis") or ()):
            cid = rd.ref_id((d or {}).get("condition"), "Condition") if isinstance(d, dict) else None
            if cid and cid in by_id:
                rank = d.get("rank") if isinstance(d.get("rank"), int) and not isinstance(d.get("rank"), bool) \
                    else None
                named.append((rank if rank is not None else 1 << 30, i, cid, rank))
        named.sort()
        out[str(e.get("id"))] = [_diagnosis(by_id[cid], rank) for _r, _i, cid, rank in named]
    pointing = sorted(conditions, key=lambda c: str(c.get("recordedDate") or c.get("onsetDateTime") or ""))
    for c in pointing:
        eid = rd.ref_id(c.get("encounter"), "Encounter")
        dx = out.get(eid) if eid else None
        if dx is not None and all(d.condition_id != str(c.get("id")) for d in dx):
            dx.append(_diagnosis(c, None))
    return out


def _diagnosis(c: dict[str, Any], rank: int | None) -> Diagnosis:
    return Diagnosis(str(c.get("id")), rd.preferred_code(c.get("code"), ICD10)[1], rd.text(c.get("code")), rank)


def build_record(person: str, rows: list[dict[str, Any]], *, pages: int = 1) -> Record:
    """The record of ``person`` (a golden ``mpi-...`` id or one source Patient) from its rows."""
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_type[str(r.get("resourceType"))].append(r)
    sources = _Sources(by_type)
    golden = next((p for p in by_type["Patient"] if str(p.get("id")) == person), None) or next(
        (p for p in by_type["Patient"] if str(p.get("id")).startswith(PERSON_PREFIX)), None)

    diagnoses = resolve_diagnoses(by_type["Encounter"], by_type["Condition"])
    encounters = {str(e.get("id")): _encounter(e, sources.of(e), diagnoses[str(e.get("id"))])
                  for e in by_type["Encounter"]}

    problems = [_problem(c, sources.of(c)) for c in by_type["Condition"]]
    problems.sort(key=lambda p: p.recorded, reverse=True)
    problems.sort(key=lambda p: not p.active)  # stable: active first, each newest first

    medication_names = {str(m.get("id")): rd.text(m.get("code")) for m in by_type["Medication"]}
    # Prescriptions, and what the patient takes as stated (a discharge summary's 出院带药, WS/T 500 C0053)
    meds = [_medication(m, sources.of(m), medication_names)
            for t in ("MedicationRequest", "MedicationStatement") for m in by_type[t]]
    meds.sort(key=lambda m: m.authored, reverse=True)
    for m in sorted(meds, key=lambda m: m.authored):
        enc = encounters.get(m.encounter_id)
        if enc is not None and m.name and m.name not in enc.medications:
            enc.medications.append(m.name)

    allergies = [_allergy(a, sources.of(a)) for a in by_type["AllergyIntolerance"]]
    allergies.sort(key=lambda a: a.recorded, reverse=True)

    labs, reports = _labs(by_type, sources)
    for rep in reports:
        enc = encounters.get(rep.encounter_id)
        if enc is not None:
            enc.reports.append(rep)

    conclusion_of: dict[str, str] = {}
    for dr in by_type["DiagnosticReport"]:
        for st in dr.get("imagingStudy") or ():
            sid = rd.ref_id(st, "ImagingStudy")
            if sid and dr.get("conclusion"):
                conclusion_of[sid] = str(dr["conclusion"])
    imaging = [_imaging(s, conclusion_of.get(str(s.get("id")), ""), sources.of(s)) for s in by_type["ImagingStudy"]]
    imaging.sort(key=lambda x: x.started, reverse=True)

    documents = [_document(d, sources.of(d)) for d in by_type["DocumentReference"]]
    documents.sort(key=lambda x: x.date, reverse=True)

    lab_ids = {x.id for x in labs}
    entries = [_entry(r, t, sources.of(r)) for t in ENTRY_TYPES for r in by_type[t]
               if isinstance(r.get("id"), str) and (t != "Observation" or r["id"] in lab_ids)]
    entries.sort(key=lambda e: e.date, reverse=True)

    return Record(person=person, demographics=demographics_of(golden) if golden is not None else None,
                  institutions=sources.used, organizations=sources.names,
                  encounters=sorted(encounters.values(), key=lambda e: e.start, reverse=True),
                  problems=problems, medications=meds, allergies=allergies, labs=labs, reports=reports,
                  series=_series(labs), imaging=imaging, documents=documents, entries=entries,
                  resources=len(rows), pages=pages)


# ------------------------------------------------------------------ one kind each
def _encounter(e: dict[str, Any], src: Source, diagnoses: list[Diagnosis]) -> Encounter:
    period = e.get("period") or {}
    types = e.get("type") or []
    kind = rd.text(types[0]) if types else ""
    if not kind:
        cls = e.get("class") or {}
        kind = str(cls.get("display") or cls.get("code") or "") if isinstance(cls, dict) else ""
    dept = rd.text(e.get("serviceType"))
    if not dept:
        for ln in e.get("location") or ():
            dept = str(((ln or {}).get("location") or {}).get("display") or "")
            if dept:
                break
    return Encounter(str(e.get("id")), rd.minute(str(period.get("start") or "")),
                     rd.minute(str(period.get("end") or "")), kind, dept, src, diagnoses)


def _problem(c: dict[str, Any], src: Source) -> Problem:
    system, code = rd.preferred_code(c.get("code"), ICD10)
    cats = c.get("category") or []
    return Problem(str(c.get("id")), code, system, rd.text(c.get("code")), rd.code(c.get("clinicalStatus")),
                   rd.code(cats[0]) if cats else "", rd.day(str(c.get("onsetDateTime") or "")),
                   rd.day(str(c.get("recordedDate") or "")), rd.ref_id(c.get("encounter"), "Encounter") or "", src)


def _medication(m: dict[str, Any], src: Source, names: dict[str, str]) -> Medication:
    """A MedicationRequest, or a MedicationStatement (its date is when it was taken or
    stated, its dosage ``dosage`` and its visit ``context``: medicationstatement.html)."""
    ref = m.get("medicationReference")
    name = rd.text(m.get("medicationCodeableConcept")) or names.get(rd.ref_id(ref, "Medication") or "", "")
    if not name and isinstance(ref, dict):
        name = str(ref.get("display") or "")
    statement = m.get("resourceType") == "MedicationStatement"
    dosage = "; ".join(str(d.get("text")) for d in m.get("dosage" if statement else "dosageInstruction") or ()
                       if isinstance(d, dict) and d.get("text"))
    when = (rd.clinical_date(m) or str(m.get("dateAsserted") or "")) if statement else str(m.get("authoredOn") or "")
    visit = m.get("context") if statement else m.get("encounter")
    return Medication(str(m.get("id")), name, str(m.get("status") or ""), rd.day(when), dosage,
                      rd.ref_id(visit, "Encounter") or "", src)


def _allergy(a: dict[str, Any], src: Source) -> Allergy:
    reactions = [rd.text(mf) for r in a.get("reaction") or () if isinstance(r, dict)
                 for mf in r.get("manifestation") or ()]
    return Allergy(str(a.get("id")), rd.text(a.get("code")), str(a.get("criticality") or ""),
                   "、".join(x for x in reactions if x), rd.day(str(a.get("recordedDate") or "")),
                   rd.code(a.get("clinicalStatus")), src)


def _is_lab(o: dict[str, Any]) -> bool:
    for cat in o.get("category") or ():
        for c in (cat or {}).get("coding") or () if isinstance(cat, dict) else ():
            if isinstance(c, dict) and c.get("code") == "laboratory":
                return True
    return not o.get("category")


def _labs(by_type: dict[str, list[dict[str, Any]]], sources: _Sources) -> tuple[list[LabResult], list[LabReport]]:
    """Lab results (newest first) and their groups (the third rule of the module docstring)."""
    listed: dict[str, list[dict[str, Any]]] = defaultdict(list)  # Observation id -> reports listing it
    for dr in by_type["DiagnosticReport"]:
        for r in dr.get("result") or ():
            oid = rd.ref_id(r, "Observation")
            if oid:
                listed[oid].append(dr)
    labs: dict[str, LabResult] = {}
    for o in by_type["Observation"]:
        oid = str(o.get("id"))
        if _is_lab(o) or oid in listed:
            first = listed[oid][0] if listed.get(oid) else None
            labs[oid] = _lab(o, rd.text(first.get("code")) if first else "", str(first.get("id")) if first else "",
                             sources.of(o))
    reports: list[LabReport] = []
    for dr in by_type["DiagnosticReport"]:
        results = [labs[oid] for r in dr.get("result") or () if (oid := rd.ref_id(r, "Observation")) in labs]
        if results:
            reports.append(LabReport(str(dr.get("id")), rd.text(dr.get("code")), rd.minute(rd.clinical_date(dr)),
                                     sources.of(dr), results, rd.ref_id(dr.get("encounter"), "Encounter") or ""))
    loose: dict[tuple[str, str], list[LabResult]] = defaultdict(list)
    for x in labs.values():
        if x.id not in listed:
            loose[(x.source.org_id, x.date[:10])].append(x)
    for (_org, _day), results in loose.items():
        results.sort(key=lambda x: x.date)
        encs = {x.encounter_id for x in results}
        reports.append(LabReport(f"obs-{results[0].id}", "", results[0].date, results[0].source, results,
                                 encs.pop() if len(encs) == 1 else ""))
    reports.sort(key=lambda r: r.date, reverse=True)
    out = sorted(labs.values(), key=lambda x: x.date, reverse=True)
    return out, reports


def _lab(o: dict[str, Any], panel: str, report_id: str, src: Source) -> LabResult:
    code = rd.preferred_code(o.get("code"), LOINC)[1]
    q = o.get("valueQuantity")
    number = rd.quantity_value(q)
    unit = ""
    if isinstance(q, dict):
        unit = str(q.get("unit") or q.get("code") or "")
    if number is not None:
        value = str((q or {}).get("comparator") or "") + rd.fmt_number(number)
    elif isinstance(o.get("valueCodeableConcept"), dict):
        value = rd.text(o["valueCodeableConcept"])
    elif isinstance(o.get("valueString"), str):
        value = str(o["valueString"])
    elif o.get("component"):
        parts = []
        for c in o["component"]:
            cq = c.get("valueQuantity") if isinstance(c, dict) else None
            cv = rd.quantity_value(cq)
            if cv is not None and isinstance(cq, dict):
                parts.append(rd.fmt_number(cv))
                unit = str(cq.get("unit") or cq.get("code") or unit)
        value = "/".join(parts)
    else:
        value = ""
    rng = reference_range(o)
    return LabResult(str(o.get("id")), code, rd.text(o.get("code")), value, number, unit,
                     rng.low if rng else None, rng.high if rng else None, rng.text if rng else "",
                     flag_of(o, rng), rd.minute(str(o.get("effectiveDateTime") or o.get("issued") or "")), panel,
                     report_id, rd.ref_id(o.get("encounter"), "Encounter") or "", src)


def _imaging(s: dict[str, Any], conclusion: str, src: Source) -> Imaging:
    mods = [str(m.get("code")) for m in s.get("modality") or () if isinstance(m, dict) and m.get("code")]
    desc = str(s.get("description") or "") or "、".join(rd.text(p) for p in s.get("procedureCode") or ())
    return Imaging(str(s.get("id")), rd.minute(str(s.get("started") or "")), mods, desc,
                   int(s.get("numberOfSeries") or 0), int(s.get("numberOfInstances") or 0), conclusion, src)


def _document(d: dict[str, Any], src: Source) -> Document:
    att: dict[str, Any] = {}
    for c in d.get("content") or ():
        if isinstance(c, dict) and isinstance(c.get("attachment"), dict):
            att = c["attachment"]
            break
    title = str(att.get("title") or d.get("description") or rd.text(d.get("type")) or "")
    return Document(str(d.get("id")), title, rd.code(d.get("type")),
                    rd.minute(str(d.get("date") or att.get("creation") or "")), str(att.get("contentType") or ""),
                    src)


def entry_label(r: dict[str, Any]) -> str:
    """What an item is, in words: its code, medicine, vaccine, service or type."""
    kind = r.get("type")  # a list (Encounter), one CodeableConcept (DocumentReference) or a code (AllergyIntolerance)
    label = rd.text(r.get("code") or r.get("medicationCodeableConcept") or r.get("vaccineCode")
                    or r.get("serviceType") or (kind[0] if isinstance(kind, list) and kind else kind))
    return label or (str(r.get("description") or "") if r.get("resourceType") == "DocumentReference" else "")


def _entry(r: dict[str, Any], type: str, src: Source) -> Entry:
    return Entry(f"{type}/{r['id']}", type, entry_label(r), rd.day(rd.clinical_date(r)), src)


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
    out.sort(key=lambda s: s.points[-1].date, reverse=True)  # most recently measured first
    return out
