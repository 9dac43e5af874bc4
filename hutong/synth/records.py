"""FHIR R4 resources for one resident's planned care.

Turns a ``care.Plan`` into source Patients (one per institution visited, with
that institution's MRN and its registration noise) and the clinical
resources of the patient compartment: Encounter, Condition, DiagnosticReport
+ Observation (lab), ImagingStudy + DiagnosticReport (imaging),
MedicationRequest, Procedure, Immunization, AllergyIntolerance and
DocumentReference typed by WS/T 500.  Every reference is a relative literal
reference to a resource generated here or in the region's directory.

Invariants the generator keeps (so that CDS and QC can be tested against
clean data): antibiotics are ordered by a physician whose tier covers the
drug (卫生部令第84号); operations are performed by a surgeon whose grade
covers the operation (国卫办医政发〔2022〕18号); special-tier antibiotics only
in admissions.

Sensitive records carry ``meta.security`` from HL7 v3 ActCode: PSY, HIV,
SEX - the Condition and every Encounter, Observation, DiagnosticReport,
MedicationRequest, Procedure, ImagingStudy and DocumentReference of that care.

Performance: this is the hot path (tens of thousands of resources a second);
codings are built once in the catalogues and shared between resources, ids
are chunk-local counters, and nothing is deep-copied.
"""

from __future__ import annotations

import base64
import itertools
import random
from collections.abc import Callable
from typing import Any

from hutong.synth import noise, timing
from hutong.synth.care import AMB, EMER, IMP, Plan, Visit
from hutong.synth.catalog.allergens import ALLERGEN_SYSTEM, ATC_SYSTEM
from hutong.synth.catalog.conditions import Diagnosis
from hutong.synth.catalog.documents import DOCUMENT_TYPES, TYPE_CONCEPTS
from hutong.synth.catalog.drugs import Drug
from hutong.synth.catalog.imaging import Exam
from hutong.synth.catalog.labs import ANALYTES, LOINC_SYSTEM
from hutong.synth.catalog.procedures import ICD9CM_SYSTEM, PROCEDURES
from hutong.synth.catalog.vaccines import CONCEPTS as VACCINE_CONCEPTS
from hutong.synth.config import NoiseRates
from hutong.synth.institutions import Institution, inpatient_mrn, outpatient_mrn
from hutong.synth.patients import patient
from hutong.synth.practitioners import Role, grade_coding, tier_coding
from hutong.synth.residents import Resident
from hutong.systems import ANTIBIOTIC_TIER_EXT, CODESYSTEM_BASE, SURGERY_GRADE_EXT

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
SECURITY: dict[str, dict[str, Any]] = {
    "PSY": {"security": [{"system": ACT_CODE, "code": "PSY", "display": "psychiatry information sensitivity"}]},
    "HIV": {"security": [{"system": ACT_CODE, "code": "HIV", "display": "HIV/AIDS information sensitivity"}]},
    "SEX": {"security": [{"system": ACT_CODE, "code": "SEX",
                          "display": "sexuality and reproductive health information sensitivity"}]},
}
ENCOUNTER_TYPE_SYSTEM = CODESYSTEM_BASE + "encounter-type"
_CLASS = {
    AMB: {"system": ACT_CODE, "code": "AMB", "display": "ambulatory"},
    EMER: {"system": ACT_CODE, "code": "EMER", "display": "emergency"},
    IMP: {"system": ACT_CODE, "code": "IMP", "display": "inpatient encounter"},
}
_ENC_TYPE = {
    AMB: [{"coding": [{"system": ENCOUNTER_TYPE_SYSTEM, "code": "outpatient", "display": "门诊"}], "text": "门诊"}],
    EMER: [{"coding": [{"system": ENCOUNTER_TYPE_SYSTEM, "code": "emergency", "display": "急诊"}], "text": "急诊"}],
    IMP: [{"coding": [{"system": ENCOUNTER_TYPE_SYSTEM, "code": "inpatient", "display": "住院"}], "text": "住院"}],
}
_ATTENDER = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "ATND",
                          "display": "attender"}]}]
_ADMIT_ER = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/admit-source", "code": "emd",
                         "display": "From accident/emergency department"}], "text": "急诊入院"}
_ADMIT_OP = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/admit-source", "code": "outp",
                         "display": "From outpatient department"}], "text": "门诊入院"}
_DISCHARGE_HOME = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/discharge-disposition",
                               "code": "home", "display": "Home"}], "text": "医嘱离院"}
_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
_ACTIVE = {"coding": [{"system": _CLINICAL, "code": "active"}]}
_RESOLVED = {"coding": [{"system": _CLINICAL, "code": "resolved"}]}
_CONFIRMED = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]}
_CAT_PROBLEM = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                             "code": "problem-list-item", "display": "Problem List Item"}]}]
_CAT_ENCOUNTER = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                               "code": "encounter-diagnosis", "display": "Encounter Diagnosis"}]}]
_V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
_DR_LAB = [{"coding": [{"system": _V2_0074, "code": "LAB", "display": "Laboratory"}], "text": "检验"}]
_DR_RAD = [{"coding": [{"system": _V2_0074, "code": "RAD", "display": "Radiology"}], "text": "检查"}]
_OBS_LAB = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                         "code": "laboratory", "display": "Laboratory"}]}]
_INTERP_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
_INTERP = {
    "N": [{"coding": [{"system": _INTERP_SYSTEM, "code": "N", "display": "Normal"}], "text": "正常"}],
    "H": [{"coding": [{"system": _INTERP_SYSTEM, "code": "H", "display": "High"}], "text": "偏高"}],
    "L": [{"coding": [{"system": _INTERP_SYSTEM, "code": "L", "display": "Low"}], "text": "偏低"}],
    "POS": [{"coding": [{"system": _INTERP_SYSTEM, "code": "POS", "display": "Positive"}], "text": "阳性"}],
    "NEG": [{"coding": [{"system": _INTERP_SYSTEM, "code": "NEG", "display": "Negative"}], "text": "阴性"}],
}
_SNOMED = "http://snomed.info/sct"
_NEGATIVE = {"coding": [{"system": _SNOMED, "code": "260385009", "display": "Negative"}], "text": "阴性(-)"}
_POSITIVES = tuple(
    {"coding": [{"system": _SNOMED, "code": "10828004", "display": "Positive"}], "text": t}
    for t in ("弱阳性(±)", "阳性(+)", "阳性(++)", "阳性(+++)")
)
_IMAGING_REPORT = {"coding": [{"system": LOINC_SYSTEM, "code": "18748-4", "display": "Diagnostic imaging study"}]}
_MR_CATEGORY = {
    IMP: [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                       "code": "inpatient", "display": "Inpatient"}], "text": "住院医嘱"}],
    AMB: [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                       "code": "outpatient", "display": "Outpatient"}], "text": "门诊处方"}],
}
_MR_CATEGORY[EMER] = _MR_CATEGORY[AMB]
_ALLERGY_ACTIVE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                               "code": "active"}]}
_ALLERGY_CONFIRMED = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                                  "code": "confirmed"}]}
_TIER_EXT = {t: [{"url": ANTIBIOTIC_TIER_EXT, "valueCoding": tier_coding(t)}] for t in (1, 2, 3)}
_SEX_TEXT = {"male": "男", "female": "女"}
_FINDINGS_NORMAL = ("未见明显异常。", "未见明显异常征象。", "检查所见未见异常。")
_FINDINGS = {
    "pneumonia": "右下肺斑片状模糊影，考虑炎症。",
    "wrist-fracture": "桡骨远端骨质断裂，断端轻度移位。",
    "hip-fracture": "股骨颈骨质连续性中断，考虑骨折。",
    "stroke": "左侧基底节区片状低密度影，考虑急性脑梗死。",
    "gallstones": "胆囊内见强回声团伴声影，考虑胆囊结石。",
    "appendicitis": "阑尾增粗，周围渗出，考虑急性阑尾炎。",
    "back-pain": "腰椎退行性变，L4/5椎间盘膨出。",
    "pregnancy": "宫内妊娠，单活胎，胎儿大小与孕周相符。",
    "chd": "冠状动脉粥样硬化，前降支中段管腔轻度狭窄。",
    "copd": "双肺透亮度增高，肺气肿改变。",
}

RESOURCE_TYPES: tuple[str, ...] = (
    "Organization", "Practitioner", "PractitionerRole", "Patient", "Encounter", "Condition", "Observation",
    "DiagnosticReport", "ImagingStudy", "MedicationRequest", "Procedure", "Immunization", "AllergyIntolerance",
    "DocumentReference",
)


class ChunkOutput:
    """Resources of one chunk of residents, by type, plus ground truth and counters."""

    __slots__ = ("resources", "truth", "hard_negatives", "noise_applicable", "noise_applied", "repeat_visits")

    def __init__(self) -> None:
        self.resources: dict[str, list[dict[str, Any]]] = {t: [] for t in RESOURCE_TYPES}
        self.truth: list[dict[str, Any]] = []
        self.hard_negatives: list[dict[str, Any]] = []
        self.noise_applicable: dict[str, int] = dict.fromkeys(noise.KINDS, 0)
        self.noise_applied: dict[str, int] = dict.fromkeys(noise.KINDS, 0)
        self.repeat_visits = 0


class _Source:
    """One source Patient: the resident as registered at one institution."""

    __slots__ = ("inst", "ref", "name", "conditions")

    def __init__(self, inst: Institution, ref: dict[str, str], name: str) -> None:
        self.inst = inst
        self.ref = ref
        self.name = name
        self.conditions: dict[tuple[str, int], dict[str, str]] = {}


class RecordBuilder:
    def __init__(self, chunk: int, today: int, rates: NoiseRates, clinical: bool,
                 rng: random.Random, noise_rng: random.Random) -> None:
        self.prefix = f"{chunk}-"
        self._counter = itertools.count(1)
        self.today = today
        self.rates = rates
        self.clinical = clinical
        self.rng = rng
        self.noise_rng = noise_rng

    def _id(self) -> str:
        return self.prefix + str(next(self._counter))

    # -- patients -----------------------------------------------------------------------------------
    def resident(self, r: Resident, plan: Plan, out: ChunkOutput) -> None:
        sources: dict[int, _Source] = {}
        admitted: set[int] = {v.inst.index for v in plan.visits if v.cls == IMP}
        order: dict[int, Institution] = {}
        for v in plan.visits:
            order.setdefault(v.inst.index, v.inst)
        for im in plan.immunizations:
            order.setdefault(im.inst.index, im.inst)
        for inst in order.values():
            demo, applied, eligible = noise.apply(r, inst.level, self.rates, self.noise_rng)
            pid = f"pat-{inst.index + 1:04d}-{outpatient_mrn(inst, r.number)}"
            res = patient(pid, r, inst, demo, outpatient_mrn(inst, r.number),
                          inpatient_mrn(inst, r.number) if inst.index in admitted else None)
            out.resources["Patient"].append(res)
            out.truth.append({"patient": pid, "resident": r.key, "noise": applied})
            for k in eligible:
                out.noise_applicable[k] += 1
            for k in applied:
                out.noise_applied[k] += 1
            sources[inst.index] = _Source(inst, {"reference": f"Patient/{pid}"}, res["name"][0]["text"])
        if not self.clinical:
            return
        age = r.age_at
        for v in plan.visits:
            if v.repeat:
                out.repeat_visits += 1
            self._visit(r, v, sources[v.inst.index], out, age(v.day))
        for im in plan.immunizations:
            self._immunization(im.inst, sources[im.inst.index], im.day, im.vaccine, im.dose, out)
        for inst in plan.allergy_sites:
            src = sources[inst.index]
            first = next(v.day for v in plan.visits if v.inst is inst)
            for allergen in plan.allergies:
                self._allergy(src, first, allergen, out)

    # -- one visit ----------------------------------------------------------------------------------
    def _visit(self, r: Resident, v: Visit, src: _Source, out: ChunkOutput, age: int) -> None:
        rng = self.rng
        res = out.resources
        inst = v.inst
        roles = inst.roles_by_department.get(v.dept.code) or next(iter(inst.roles_by_department.values()))
        doctor: Role = roles[int(rng.random() * len(roles))]
        pref = src.ref
        eid = self._id()
        eref = {"reference": f"Encounter/{eid}"}
        start = timing.stamp(v.day, v.minute)
        end = timing.stamp(v.end_day, v.end_minute)
        security = v.security
        if security is None:
            for dx in v.diagnoses:
                if dx.security:
                    security = dx.security
                    break
        meta = SECURITY[security] if security else None

        # Conditions: one per (diagnosis, episode) per source Patient, chronic ones shared by visits.
        diag_refs: list[dict[str, Any]] = []
        cond_refs: list[dict[str, str]] = []
        for rank, dx in enumerate(v.diagnoses, 1):
            key = (dx.key, 0 if dx.chronic else v.episode)
            cref = src.conditions.get(key)
            if cref is None:
                cref = {"reference": f"Condition/{self._id()}"}
                src.conditions[key] = cref
                res["Condition"].append(self._condition(cref, dx, v, pref, eref, doctor, meta))
            cond_refs.append(cref)
            diag_refs.append({"condition": cref, "rank": rank})

        enc: dict[str, Any] = {"resourceType": "Encounter", "id": eid}
        if meta:
            enc["meta"] = meta
        enc["status"] = "finished"
        enc["class"] = _CLASS[v.cls]
        enc["type"] = _ENC_TYPE[v.cls]
        enc["serviceType"] = v.dept.concept
        enc["subject"] = pref
        enc["participant"] = [{"type": _ATTENDER, "individual": doctor.reference}]
        enc["period"] = {"start": start, "end": end}
        if diag_refs:
            enc["diagnosis"] = diag_refs
        if v.cls == IMP:
            enc["hospitalization"] = {"admitSource": _ADMIT_ER if rng.random() < 0.5 else _ADMIT_OP,
                                      "dischargeDisposition": _DISCHARGE_HOME}
        enc["serviceProvider"] = inst.reference
        res["Encounter"].append(enc)

        if v.panels:
            self._labs(r, v, pref, eref, inst, meta, out, age)
        if v.exams:
            for exam in v.exams:
                self._imaging(v, exam, pref, eref, inst, doctor, meta, out)
        if v.drugs:
            self._medications(v, pref, eref, inst, doctor, cond_refs, start, meta, out)
        for proc in v.procedures:
            self._procedure(v, proc, pref, eref, inst, cond_refs, meta, out)
        self._documents(r, v, src, eref, doctor, start, end, meta, out, age)

    def _condition(self, cref: dict[str, str], dx: Diagnosis, v: Visit, pref: dict[str, str],
                   eref: dict[str, str], doctor: Role, meta: dict[str, Any] | None) -> dict[str, Any]:
        cid = cref["reference"][10:]
        c: dict[str, Any] = {"resourceType": "Condition", "id": cid}
        if meta or dx.security:
            c["meta"] = meta or SECURITY[dx.security or ""]
        if dx.chronic:
            onset = timing.day_text(v.day - 30 - int(self.rng.random() * 3000))
            resolved = False
            c["clinicalStatus"] = _ACTIVE
            c["verificationStatus"] = _CONFIRMED
            c["category"] = _CAT_PROBLEM
        else:
            onset = timing.day_text(v.day - int(self.rng.random() * 3))
            abate = v.end_day + 7 + int(self.rng.random() * 14)
            resolved = abate < self.today
            c["clinicalStatus"] = _RESOLVED if resolved else _ACTIVE
            c["verificationStatus"] = _CONFIRMED
            c["category"] = _CAT_ENCOUNTER
        c["code"] = dx.concept
        c["subject"] = pref
        c["encounter"] = eref
        c["onsetDateTime"] = onset
        if resolved:
            c["abatementDateTime"] = timing.day_text(abate)
        c["recordedDate"] = timing.stamp(v.day, v.minute)
        c["recorder"] = doctor.reference
        return c

    def _labs(self, r: Resident, v: Visit, pref: dict[str, str], eref: dict[str, str], inst: Institution,
              meta: dict[str, Any] | None, out: ChunkOutput, age: int) -> None:
        rng = self.rng
        gauss = rng.gauss
        rand = rng.random
        female = r.sex == "female"
        six = 1 if female else 0
        states = v.states
        obs_list = out.resources["Observation"]
        drs = out.resources["DiagnosticReport"]
        performer = [inst.reference]
        draw_min = min(v.minute + 10 + int(rand() * 30), 1439) if v.cls != IMP else 6 * 60 + 30 + int(rand() * 60)
        draw_day = v.day if v.cls != IMP or v.minute < 6 * 60 else min(v.day + 1, v.end_day)
        drawn = timing.stamp(draw_day, draw_min)
        issued = timing.stamp(draw_day, min(draw_min + 60 + int(rand() * 180), 1439))
        interp_h, interp_l, interp_n = _INTERP["H"], _INTERP["L"], _INTERP["N"]
        new_id = self._id
        for panel in v.panels:
            pmeta = meta or (SECURITY[panel.security] if panel.security else None)
            results: list[dict[str, str]] = []
            crea = 0.0
            derived = _red_cells(gauss, states, six) if panel.key == "cbc" else {}
            for an in panel.analytes:
                oid = new_id()
                results.append({"reference": "Observation/" + oid})
                mean = an.mean[six]
                sd = an.sd
                for st, m, sdev in an.states:
                    if st in states:
                        mean, sd = m, sdev
                        break
                value_key = "valueQuantity"
                value: Any
                if an.qualitative:
                    value_key = "valueCodeableConcept"
                    if rand() < mean:
                        value, interp = _POSITIVES[int(rand() * 4)], _INTERP["POS"]
                    else:
                        value, interp = _NEGATIVE, _INTERP["NEG"]
                else:
                    if an.key == "egfr":
                        x = _ckd_epi(crea, age, female) if crea else gauss(mean, sd)
                    elif an.key in derived:
                        x = derived[an.key]
                    elif an.key == "hiv-vl":
                        # On treatment most viral loads are undetectable (<20 copies/mL).
                        x = 0.0 if rand() < 0.85 else 10 ** (1.5 + rand() * 3.5)
                    else:
                        x = gauss(mean, sd)
                    low, high = an.female if female else an.male
                    if low is not None and x < low * 0.3:  # keep values physiologically possible
                        x = low * (0.3 + rand() * 0.1)
                    if x < 0:
                        x = 0.0
                    num: float | int = round(x, an.decimals) if an.decimals else int(round(x))
                    if an.key == "crea":
                        crea = float(num)
                    value = an.quantity(num)
                    if high is not None and num > high:
                        interp = interp_h
                    elif low is not None and num < low:
                        interp = interp_l
                    else:
                        interp = interp_n
                if pmeta:
                    obs_list.append({
                        "resourceType": "Observation", "id": oid, "meta": pmeta, "status": "final",
                        "category": _OBS_LAB, "code": an.concept, "subject": pref, "encounter": eref,
                        "effectiveDateTime": drawn, "issued": issued, "performer": performer, value_key: value,
                        "interpretation": interp, "referenceRange": an.ranges[six],
                    })
                else:
                    obs_list.append({
                        "resourceType": "Observation", "id": oid, "status": "final",
                        "category": _OBS_LAB, "code": an.concept, "subject": pref, "encounter": eref,
                        "effectiveDateTime": drawn, "issued": issued, "performer": performer, value_key: value,
                        "interpretation": interp, "referenceRange": an.ranges[six],
                    })
            dr: dict[str, Any] = {"resourceType": "DiagnosticReport", "id": new_id()}
            if pmeta:
                dr["meta"] = pmeta
            dr["status"] = "final"
            dr["category"] = _DR_LAB
            dr["code"] = panel.concept
            dr["subject"] = pref
            dr["encounter"] = eref
            dr["effectiveDateTime"] = drawn
            dr["issued"] = issued
            dr["performer"] = performer
            dr["result"] = results
            drs.append(dr)

    def _imaging(self, v: Visit, exam: Exam, pref: dict[str, str], eref: dict[str, str], inst: Institution,
                 doctor: Role, meta: dict[str, Any] | None, out: ChunkOutput) -> None:
        rng = self.rng
        meta = meta or (SECURITY[exam.security] if exam.security else None)
        sid = self._id()
        uid = f"2.25.{rng.getrandbits(100) | (1 << 99)}"
        day, minute = _inside_stay(v, rng, 20, 9 * 60, 420)
        started = timing.stamp(day, minute)
        series = [
            {"uid": f"{uid}.{i}", "number": i, "modality": exam.modality_coding, "description": f"{exam.name} 序列{i}",
             "numberOfInstances": exam.images, "bodySite": exam.site_coding}
            for i in range(1, exam.series + 1)
        ]
        study: dict[str, Any] = {"resourceType": "ImagingStudy", "id": sid}
        if meta:
            study["meta"] = meta
        study["identifier"] = [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}]
        study["status"] = "available"
        study["modality"] = [exam.modality_coding]
        study["subject"] = pref
        study["encounter"] = eref
        study["started"] = started
        study["referrer"] = doctor.reference
        study["numberOfSeries"] = exam.series
        study["numberOfInstances"] = exam.series * exam.images
        study["procedureCode"] = [exam.concept]
        study["description"] = exam.name
        study["series"] = series
        out.resources["ImagingStudy"].append(study)
        finding = _FINDINGS_NORMAL[int(rng.random() * 3)]
        for dx in v.diagnoses:
            f = _FINDINGS.get(dx.key)
            if f is not None and rng.random() < 0.8:
                finding = f
                break
        dr: dict[str, Any] = {"resourceType": "DiagnosticReport", "id": self._id()}
        if meta:
            dr["meta"] = meta
        dr["status"] = "final"
        dr["category"] = _DR_RAD
        dr["code"] = {"coding": [_IMAGING_REPORT["coding"][0], exam.concept["coding"][0]], "text": exam.name}
        dr["subject"] = pref
        dr["encounter"] = eref
        dr["effectiveDateTime"] = started
        dr["issued"] = timing.stamp(day, min(minute + 60 + int(rng.random() * 240), 1439))
        dr["performer"] = [inst.reference]
        dr["imagingStudy"] = [{"reference": f"ImagingStudy/{sid}"}]
        dr["conclusion"] = finding
        out.resources["DiagnosticReport"].append(dr)

    def _medications(self, v: Visit, pref: dict[str, str], eref: dict[str, str], inst: Institution, doctor: Role,
                     cond_refs: list[dict[str, str]], start: str, meta: dict[str, Any] | None,
                     out: ChunkOutput) -> None:
        mrs = out.resources["MedicationRequest"]
        category = _MR_CATEGORY[v.cls]
        reason = cond_refs[:1]
        for drug in v.drugs:
            requester = _prescriber(inst, v, doctor, drug)
            if requester is None:
                continue  # nobody here may prescribe it: the order is not written
            mr: dict[str, Any] = {"resourceType": "MedicationRequest", "id": self._id()}
            if meta:
                mr["meta"] = meta
            if drug.tier:
                mr["extension"] = _TIER_EXT[drug.tier]
            mr |= {
                "status": "completed" if v.day + drug.days < self.today else "active", "intent": "order",
                "category": category, "medicationCodeableConcept": drug.concept, "subject": pref,
                "encounter": eref, "authoredOn": start, "requester": requester.reference,
            }
            if reason:
                mr["reasonReference"] = reason
            mr["dosageInstruction"] = drug.dosage
            mr["dispenseRequest"] = drug.dispense
            mrs.append(mr)

    def _procedure(self, v: Visit, key: str, pref: dict[str, str], eref: dict[str, str], inst: Institution,
                   cond_refs: list[dict[str, str]], meta: dict[str, Any] | None, out: ChunkOutput) -> None:
        code, name, grade, _doc = PROCEDURES[key]
        surgeon = _surgeon(inst, v, grade)
        if surgeon is None:
            return  # no privileged surgeon: the operation is not recorded here
        rng = self.rng
        day, minute = _inside_stay(v, rng, 30, 8 * 60, 360)
        length = 20 + grade * 30 + int(rng.random() * 60)
        p: dict[str, Any] = {"resourceType": "Procedure", "id": self._id()}
        if meta:
            p["meta"] = meta
        p["extension"] = [{"url": SURGERY_GRADE_EXT, "valueCoding": grade_coding(grade)}]
        p["status"] = "completed"
        p["code"] = {"coding": [{"system": ICD9CM_SYSTEM, "code": code, "display": name}], "text": name}
        p["subject"] = pref
        p["encounter"] = eref
        p["performedPeriod"] = {"start": timing.stamp(day, minute), "end": timing.stamp(day, min(minute + length, 1439))}
        p["performer"] = [{"actor": surgeon.reference, "onBehalfOf": inst.reference}]
        if cond_refs:
            p["reasonReference"] = cond_refs[:1]
        out.resources["Procedure"].append(p)

    def _documents(self, r: Resident, v: Visit, src: _Source, eref: dict[str, str], doctor: Role, start: str,
                   end: str, meta: dict[str, Any] | None, out: ChunkOutput, age: int) -> None:
        keys: list[str]
        if v.cls == IMP:
            keys = ["admission", "discharge"]
            for proc in v.procedures:
                keys.append(PROCEDURES[proc][3])
        else:
            keys = ["outpatient"]
            if v.drugs:
                keys.append("tcm-prescription" if v.drugs[0].key == "tcm-decoction" else "prescription")
        if v.exams:
            keys.append("imaging-report")
        dx_text = "、".join(dx.name for dx in v.diagnoses)
        docs = out.resources["DocumentReference"]
        for key in keys:
            title = DOCUMENT_TYPES[key][1]
            text = (f"{title}\n机构：{v.inst.name}\n科室：{v.dept.name}\n患者：{src.name}，"
                    f"{_SEX_TEXT[r.sex]}，{age}岁\n诊断：{dx_text}\n医师：{doctor.name}\n日期：{end[:10]}\n")
            d: dict[str, Any] = {"resourceType": "DocumentReference", "id": self._id()}
            if meta:
                d["meta"] = meta
            d["status"] = "current"
            d["docStatus"] = "final"
            d["type"] = TYPE_CONCEPTS[key]
            d["subject"] = src.ref
            d["date"] = end
            d["author"] = [doctor.reference]
            d["custodian"] = v.inst.reference
            d["content"] = [{"attachment": {
                "contentType": "text/plain; charset=utf-8", "language": "zh-CN",
                "data": base64.b64encode(text.encode()).decode("ascii"), "title": title, "creation": end}}]
            d["context"] = {"encounter": [eref], "period": {"start": start, "end": end}}
            docs.append(d)

    def _immunization(self, inst: Institution, src: _Source, day: int, vaccine: str, dose: int,
                      out: ChunkOutput) -> None:
        rng = self.rng
        roles = next(iter(inst.roles_by_department.values()))
        nurse_doc = roles[int(rng.random() * len(roles))]
        im: dict[str, Any] = {"resourceType": "Immunization", "id": self._id()}
        im["status"] = "completed"
        im["vaccineCode"] = VACCINE_CONCEPTS[vaccine]
        im["patient"] = src.ref
        im["occurrenceDateTime"] = timing.stamp(day, timing.pick_minute(rng, timing.OUTPATIENT_HOURS))
        im["primarySource"] = True
        im["lotNumber"] = f"{2020 + int(rng.random() * 7)}{int(rng.random() * 10_000):04d}"
        im["performer"] = [{"actor": nurse_doc.reference}]
        im["protocolApplied"] = [{"doseNumberPositiveInt": dose}]
        out.resources["Immunization"].append(im)

    def _allergy(self, src: _Source, day: int, allergen: tuple[str, str, str, str, float, str],
                 out: ChunkOutput) -> None:
        key, name, category, atc, _share, reaction = allergen
        codings: list[dict[str, str]] = [{"system": ALLERGEN_SYSTEM, "code": key, "display": name}]
        if atc:
            codings.append({"system": ATC_SYSTEM, "code": atc})
        a: dict[str, Any] = {"resourceType": "AllergyIntolerance", "id": self._id()}
        a["clinicalStatus"] = _ALLERGY_ACTIVE
        a["verificationStatus"] = _ALLERGY_CONFIRMED
        a["type"] = "allergy"
        a["category"] = [category]
        a["criticality"] = "high" if reaction in ("哮喘发作", "血管性水肿") else "low"
        a["code"] = {"coding": codings, "text": name}
        a["patient"] = src.ref
        a["recordedDate"] = timing.day_text(day)
        a["reaction"] = [{"manifestation": [{"text": reaction}]}]
        out.resources["AllergyIntolerance"].append(a)


def _inside_stay(v: Visit, rng: random.Random, delay: int, first: int, spread: int) -> tuple[int, int]:
    """(day, minute) for an examination or operation during a visit.

    Outpatient and emergency: ``delay`` minutes or more after arrival.  Admissions:
    a working-hours slot on the day after admission when the stay lasts two
    nights or more, else later on the admission day, so it falls inside the stay.
    """
    if v.cls != IMP:
        # Before 23:20 where the visit allows; a visit starting later has it at once (never before arrival).
        return v.day, min(v.minute + delay + int(rng.random() * 60), max(1400, v.minute))
    if v.end_day - v.day >= 2:
        return v.day + 1, first + int(rng.random() * spread)
    return v.day, min(max(v.minute + delay, first) + int(rng.random() * 120), 1300)


def _prescriber(inst: Institution, v: Visit, doctor: Role, drug: Drug) -> Role | None:
    """The visit's doctor if allowed to order ``drug``, else a colleague who is (卫生部令第84号 §24)."""
    def allowed(x: Role) -> bool:
        return x.prescribing and x.antibiotic_tier >= drug.tier
    if allowed(doctor):
        return doctor
    for x in inst.roles_by_department.get(v.dept.code, ()):
        if allowed(x):
            return x
    for roles in inst.roles_by_department.values():
        for x in roles:
            if allowed(x):
                return x
    return None


def _surgeon(inst: Institution, v: Visit, grade: int) -> Role | None:
    """A surgeon of ``inst`` privileged for ``grade``, from the visit's department if possible."""
    for x in inst.roles_by_department.get(v.dept.code, ()):
        if x.surgery_grade >= grade:
            return x
    for roles in inst.roles_by_department.values():
        for x in roles:
            if x.surgery_grade >= grade:
                return x
    return None


def _ckd_epi(crea_umol: float, age: int, female: bool) -> float:
    """eGFR by CKD-EPI 2009 (Levey et al., Ann Intern Med 2009;150:604), mL/min/1.73m²."""
    scr = crea_umol / 88.4
    k, a = (0.7, -0.329) if female else (0.9, -0.411)
    egfr: float = 141 * min(scr / k, 1) ** a * max(scr / k, 1) ** -1.209 * 0.993 ** max(age, 18)
    return egfr * 1.018 if female else egfr


def _red_cells(gauss: Callable[[float, float], float], states: tuple[str, ...], six: int) -> dict[str, float]:
    """Red-cell values of one blood count that agree with each other (WS/T 405-2012 indices):
    Hb (with its clinical states: pregnancy, CKD), MCV and MCHC are drawn; MCH = MCV x MCHC,
    RBC = Hb / MCH, Hct = RBC x MCV, so Hct ~ Hb / MCHC as on a real analyser's report."""
    def draw(key: str) -> float:
        an = ANALYTES[key]
        mean, sd = an.mean[six], an.sd
        for st, m, sdev in an.states:
            if st in states:
                mean, sd = m, sdev
                break
        return gauss(mean, sd)

    hgb = max(draw("hgb"), 40.0)
    mcv = max(draw("mcv"), 60.0)
    mchc = min(max(gauss(ANALYTES["mchc"].mean[six], 7.0), 300.0), 370.0)
    mch = mcv * mchc / 1000
    rbc = hgb / mch
    return {"hgb": hgb, "mcv": mcv, "mchc": mchc, "mch": mch, "rbc": rbc, "hct": rbc * mcv / 10}
