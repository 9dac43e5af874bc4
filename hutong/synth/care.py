"""Care pathways: which institutions each resident visits, when, and for what.

A resident's history over the window (``years`` before ``today``) is planned
before any resource is written, as a list of visits, immunisations and
allergies; ``records`` turns the plan into FHIR resources.

The model (rates are rough, documented defaults, meant to look and behave
like Beijing rather than to reproduce any statistic exactly):

- Chronic disease (hypertension, type 2 diabetes, dyslipidaemia, COPD,
  coronary disease, asthma, CKD) by age; managed at the resident's community
  centre (社区卫生服务中心) with refills every 1-2 months (长处方), yearly
  specialist review at a 二级/三级 hospital; prevalences are the *managed*
  share (China Hypertension Survey 2012-2015; 中国2型糖尿病防治指南 2020;
  China Kadoorie/CPH COPD studies), lower than total prevalence.
- Psychiatric care (PSY) at a psychiatric specialty hospital, HIV care (HIV)
  at an infectious-disease hospital (national prevalence ~0.09%), pregnancy,
  delivery, contraception, infertility and syphilis care (SEX) at 妇幼/妇产.
- Acute episodes (URTI, pneumonia, fractures, appendicitis ...) by yearly
  incidence and age, at clinics, community centres or hospitals, with
  emergency visits and admissions where they belong; operations are done by
  a surgeon whose privilege covers the grade, in a hospital of sufficient
  level.
- Yearly health checks (体检) for a share of adults, well-child visits and the
  national immunisation schedule for children, flu shots for the elderly.
- Mutual recognition (检查检验结果互认, 国卫医发〔2022〕6号): with probability
  ``repeat_test_rate`` a visit with tests is followed 1-10 days later by the
  same tests at another institution (referral, second opinion) - the case
  the CDS service must catch.

A resident keeps a personal network (home community centre, local
hospital, preferred 三级 hospital), so most residents are registered at 2-5
institutions, as in a real city.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import date

from hutong.synth import departments as dp
from hutong.synth import timing
from hutong.synth.catalog.allergens import ALLERGENS
from hutong.synth.catalog.conditions import DIAGNOSES, Diagnosis
from hutong.synth.catalog.drugs import DRUGS, Drug
from hutong.synth.catalog.imaging import EXAMS, Exam
from hutong.synth.catalog.labs import PANELS, Panel
from hutong.synth.catalog.procedures import PROCEDURES
from hutong.synth.catalog.vaccines import CHILD_SCHEDULE
from hutong.synth.departments import Department
from hutong.synth.institutions import Institution
from hutong.synth.residents import Resident
from hutong.synth.sampling import Weighted

AMB, EMER, IMP = "AMB", "EMER", "IMP"


@dataclass(frozen=True, slots=True)
class Presentation:
    """An emergency presentation (急诊): yearly rate by age group and what it leads to."""

    dx: str
    rates: tuple[float, float, float]  # per year: child (<14), adult, elderly (65+)
    admit_depts: tuple[str, ...]
    panels: tuple[str, ...]
    exams: tuple[tuple[str, float], ...]  # (exam, probability)
    drugs: tuple[str, ...]
    admit: float
    los: tuple[int, int]
    procedure: str | None = None


EMERGENCIES: tuple[Presentation, ...] = (
    Presentation("fever", (0.30, 0.04, 0.06), (dp.PAEDIATRICS.code, dp.INTERNAL.code), ("cbc", "crp"),
                 (("dx-chest", 0.3),), ("paracetamol",), 0.05, (3, 6)),
    Presentation("abdominal-pain", (0.03, 0.04, 0.05), (dp.GASTRO.code, dp.GENERAL_SURGERY.code, dp.INTERNAL.code),
                 ("cbc", "ua"), (("us-abdomen", 0.5), ("ct-abdomen", 0.2)), ("omeprazole",), 0.08, (3, 7)),
    Presentation("chest-pain", (0.0, 0.015, 0.05), (dp.CARDIOLOGY.code, dp.INTERNAL.code), ("cbc", "rft"),
                 (("dx-chest", 0.6), ("cta-coronary", 0.1)), ("aspirin",), 0.15, (3, 7)),
    Presentation("dizziness", (0.0, 0.012, 0.04), (dp.NEUROLOGY.code, dp.INTERNAL.code), ("cbc", "glu"),
                 (("ct-head", 0.4),), (), 0.05, (3, 7)),
    Presentation("head-injury", (0.02, 0.008, 0.02), (dp.NEUROLOGY.code, dp.SURGERY.code, dp.GENERAL_SURGERY.code),
                 (), (("ct-head", 0.9),), (), 0.06, (3, 8)),
    Presentation("hand-wound", (0.01, 0.012, 0.005), (dp.GENERAL_SURGERY.code, dp.SURGERY.code), (), (),
                 ("cefuroxime-po",), 0.0, (1, 1), procedure="wound-suture"),
    Presentation("urticaria", (0.02, 0.01, 0.005), (dp.DERMATOLOGY.code, dp.INTERNAL.code), (), (), (), 0.0, (1, 1)),
)


@dataclass(frozen=True, slots=True)
class Elective:
    """An elective operation: who gets it, how often, where and how long they stay."""

    dx: str
    sex: str | None
    ages: tuple[int, int]
    rate: float  # per year
    depts: tuple[str, ...]
    procedure: str
    los: tuple[int, int]
    exam: str


ELECTIVES: tuple[Elective, ...] = (
    Elective("hernia", "male", (40, 95), 0.004, (dp.GENERAL_SURGERY.code, dp.SURGERY.code), "hernia-repair", (2, 4), "us-abdomen"),
    Elective("thyroid-nodule", "female", (30, 70), 0.003, (dp.GENERAL_SURGERY.code, dp.SURGERY.code),
             "thyroid-lobectomy", (3, 5), "us-thyroid"),
    Elective("fibroid", "female", (35, 55), 0.005, (dp.GYNAECOLOGY.code,), "myomectomy", (4, 7), "us-gyn"),
    Elective("bph", "male", (60, 95), 0.006, (dp.UROLOGY.code, dp.SURGERY.code), "turp", (4, 7), "us-abdomen"),
    Elective("knee-oa", None, (60, 90), 0.003, (dp.ORTHOPAEDICS.code,), "knee-replacement", (7, 12), "dx-knee"),
    Elective("disc-herniation", None, (30, 75), 0.002, (dp.ORTHOPAEDICS.code,), "discectomy", (5, 8), "mr-lumbar"),
)

# Cancers under active treatment: (diagnosis, sex, relative weight, first-line operation, chemo drugs, exam)
CANCERS: tuple[tuple[str, str | None, float, str, tuple[str, ...], str], ...] = (
    ("lung-cancer", None, 3.0, "lobectomy", ("pemetrexed", "cisplatin"), "ct-chest"),
    ("colorectal-cancer", None, 2.0, "hemicolectomy", ("oxaliplatin", "capecitabine"), "ct-abdomen"),
    ("stomach-cancer", None, 1.5, "gastrectomy", ("oxaliplatin", "capecitabine"), "ct-abdomen"),
    ("liver-cancer", "male", 1.0, "hepatectomy", ("oxaliplatin",), "ct-abdomen"),
    ("breast-cancer", "female", 3.0, "mastectomy", ("docetaxel", "paclitaxel"), "us-breast"),
)
SPECIAL_TIER = ("meropenem", "imipenem", "vancomycin", "linezolid", "tigecycline")


@dataclass(slots=True)
class Visit:
    inst: Institution
    cls: str  # v3 ActCode: AMB 门诊, EMER 急诊, IMP 住院
    dept: Department
    day: int  # proleptic ordinal of the start
    minute: int
    end_day: int
    end_minute: int
    episode: int  # acute episodes get their own Condition; chronic care shares episode 0
    diagnoses: list[Diagnosis]
    panels: list[Panel] = field(default_factory=list)
    exams: list[Exam] = field(default_factory=list)
    drugs: list[Drug] = field(default_factory=list)
    procedures: list[str] = field(default_factory=list)
    states: tuple[str, ...] = ()  # lab-value states (diabetic, infection ...)
    security: str | None = None
    repeat: bool = False  # repeats tests done elsewhere within days (mutual recognition)


@dataclass(slots=True)
class Immunization:
    inst: Institution
    day: int
    vaccine: str
    dose: int


@dataclass(slots=True)
class Plan:
    visits: list[Visit]
    immunizations: list[Immunization]
    allergies: list[tuple[str, str, str, str, float, str]]
    allergy_sites: list[Institution]


class Directory:
    """Finds institutions by need, preferring the resident's district."""

    def __init__(self, insts: list[Institution]) -> None:
        self.all = insts
        self.chc = [i for i in insts if i.level == "chc"]
        self.clinics = [i for i in insts if i.level == "clinic" and i.archetype.type == "general"]
        self.secondary = [i for i in insts if i.level in ("2", "1") and i.archetype.type == "general"]
        self.tertiary = [i for i in insts if i.archetype.tertiary and i.archetype.type == "general"]
        self.hospitals = [i for i in insts if i.archetype.hospital]
        self.hospitals_by_level = [i for i in self.hospitals if i.archetype.tertiary] + [
            i for i in self.hospitals if not i.archetype.tertiary]
        self.psych = [i for i in insts if i.archetype.specialty == "psychiatric"]
        self.infect = [i for i in insts if i.archetype.specialty == "infectious"]
        self.maternal = [i for i in insts if i.archetype.type == "maternal-child"]
        self.tcm = [i for i in insts if i.archetype.type == "tcm"]
        self.big: Weighted[Institution] | None = (
            Weighted([(i, i.archetype.capacity) for i in self.tertiary]) if self.tertiary else None)

    @staticmethod
    def _local(rng: random.Random, pool: list[Institution], district: str) -> Institution | None:
        if not pool:
            return None
        local = [i for i in pool if i.district.code == district]
        src = local if local and rng.random() < 0.9 else pool
        return src[int(rng.random() * len(src))]

    def pick(self, rng: random.Random, district: str, *pools: str) -> Institution:
        """First available of the named pools (local institutions preferred); any institution at worst."""
        for name in pools:
            if name == "tertiary":
                if self.big is not None:
                    return self.big.pick(rng)
                continue
            found = self._local(rng, getattr(self, name), district)
            if found is not None:
                return found
        return self.all[int(rng.random() * len(self.all))]


@dataclass(slots=True)
class Network:
    """The institutions one resident habitually uses."""

    home: Institution  # 社区卫生服务中心 or nearest primary care
    clinic: Institution
    local: Institution  # 二级/一级 hospital
    big: Institution  # preferred 三级 hospital
    big2: Institution  # a second 三级 hospital (referrals, second opinions)


def _dept(inst: Institution, *codes: str) -> Department:
    have = inst.roles_by_department
    for c in codes:
        if c in have:
            return next(d for d in inst.departments if d.code == c)
    # The institution lacks that department: its general department takes the patient.
    return inst.departments[0]


def _er(inst: Institution) -> bool:
    return dp.EMERGENCY.code in inst.roles_by_department


class Planner:
    def __init__(self, insts: list[Institution], today: date, years: int, repeat_rate: float) -> None:
        self.dir = Directory(insts)
        self.today = today.toordinal()
        self.start = self.today - int(years * 365.25)
        self.years = years
        self.repeat_rate = repeat_rate

    # -- helpers ------------------------------------------------------------------------------------
    def _network(self, rng: random.Random, r: Resident) -> Network:
        d = r.address.district.code
        pick = self.dir.pick
        return Network(
            home=pick(rng, d, "chc", "secondary", "clinics"),
            clinic=pick(rng, d, "clinics", "chc", "secondary"),
            local=pick(rng, d, "secondary", "tertiary"),
            big=pick(rng, d, "tertiary", "secondary"),
            big2=pick(rng, d, "tertiary", "secondary"),
        )

    def _amb(self, rng: random.Random, inst: Institution, dept: Department, day: int, episode: int,
             dx: list[Diagnosis], primary: bool = False) -> Visit:
        if dept.code == dp.EMERGENCY.code:
            # Seen in 急诊医学科 is an emergency encounter (v3 ActCode EMER), whatever sent the patient there.
            minute = timing.pick_minute(rng, timing.EMERGENCY_HOURS)
            end = min(minute + 60 + int(rng.random() * 120), 24 * 60 - 1)
            return Visit(inst, EMER, dept, day, minute, day, end, episode, dx)
        minute = timing.pick_minute(rng, timing.OUTPATIENT_HOURS)
        end = min(minute + 10 + int(rng.random() * 30), 24 * 60 - 1)
        return Visit(inst, AMB, dept, day, minute, day, end, episode, dx)

    def _day(self, rng: random.Random, first: int | None = None, last: int | None = None,
             pattern: tuple[float, ...] = timing.WEEKDAY_OUTPATIENT) -> int:
        lo = self.start if first is None else max(self.start, first)
        hi = self.today - 1 if last is None else min(self.today - 1, last)
        return timing.pick_day(rng, lo, hi, pattern)

    @staticmethod
    def _poisson(rng: random.Random, lam: float) -> int:
        # Knuth; lam is small (episodes per window).
        limit = math.exp(-lam)
        k, p = 0, rng.random()
        while p > limit:
            k += 1
            p *= rng.random()
        return k

    # -- the plan -----------------------------------------------------------------------------------
    def plan(self, rng: random.Random, r: Resident) -> Plan:
        net = self._network(rng, r)
        age = r.age(date.fromordinal(self.today))
        male = r.sex == "male"
        visits: list[Visit] = []
        chronic = self._chronic_conditions(rng, age, male)
        fatty = age >= 30 and rng.random() < 0.15
        states = tuple(s for s, on in (
            ("diabetic", "t2dm" in chronic), ("dyslipidaemia", "hyperlipidaemia" in chronic),
            ("ckd", "ckd" in chronic), ("fatty-liver", fatty)) if on)
        if chronic:
            self._chronic_care(rng, r, net, chronic, states, visits)
        if age >= 15:
            self._psychiatry(rng, r, net, visits)
        if 18 <= age < 70:
            self._hiv(rng, r, male, net, visits)
        if age >= 18:
            self._hepatitis_b(rng, r, visits)
        if not male and 18 <= age < 50:
            self._reproductive(rng, r, age, visits)
        self._acute(rng, r, age, net, states, visits)
        self._emergencies(rng, r, age, net, states, visits)
        if age >= 18:
            self._electives(rng, r, age, net, states, visits)
            self._cancer(rng, r, age, net, states, visits)
        if age >= 65 and rng.random() < 0.004 * self.years:
            self._sepsis(rng, net, states, visits)
        if age >= 18:
            self._checkups(rng, r, net, states, visits)
        immunizations: list[Immunization] = []
        if age < 7:
            self._child(rng, r, net, visits, immunizations)
        elif age >= 60:
            for y in range(self.years):
                if rng.random() < 0.25:  # elderly flu vaccination uptake (rough)
                    year = date.fromordinal(self.today).year - 1 - y
                    day = date(year, 10, 15).toordinal() + int(rng.random() * 45)
                    if self.start <= day < self.today:
                        immunizations.append(Immunization(net.home, day, "flu", 1))
        if age >= 18 and rng.random() < 0.25 * self.years:
            self._tcm(rng, r, net, states, visits)
        if not visits:
            # Everyone in the region has been seen somewhere at least once.
            inst = net.clinic if age >= 14 else net.local
            dept = _dept(inst, dp.PAEDIATRICS.code if age < 14 else dp.GENERAL_PRACTICE.code, dp.INTERNAL.code)
            v = self._amb(rng, inst, dept, self._day(rng), 9_999, [DIAGNOSES["urti" if rng.random() < 0.6 else "dermatitis"]])
            v.drugs = [DRUGS["paracetamol"]] if v.diagnoses[0].key == "urti" else []
            visits.append(v)
        self._follow_ups(rng, visits)
        self._repeats(rng, r, net, visits)
        visits.sort(key=lambda v: (v.day, v.minute))
        allergies = [a for a in ALLERGENS if rng.random() < a[4]]
        sites: list[Institution] = []
        if allergies and visits:
            seen: dict[int, Institution] = {}
            for v in visits:
                seen.setdefault(v.inst.index, v.inst)
            sites = [i for i in seen.values() if rng.random() < 0.7] or [visits[0].inst]
        return Plan(visits, immunizations, allergies, sites)

    @staticmethod
    def _chronic_conditions(rng: random.Random, age: int, male: bool) -> list[str]:
        """Managed chronic conditions by age band (share of residents under regular care)."""
        out: list[str] = []
        band = 0 if age < 35 else 1 if age < 45 else 2 if age < 55 else 3 if age < 65 else 4 if age < 75 else 5
        table: tuple[tuple[str, tuple[float, ...]], ...] = (
            ("hypertension", (0.01, 0.06, 0.15, 0.28, 0.40, 0.48)),
            ("t2dm", (0.003, 0.03, 0.07, 0.12, 0.17, 0.18)),
            ("hyperlipidaemia", (0.005, 0.04, 0.08, 0.12, 0.14, 0.12)),
            ("copd", (0.0, 0.003, 0.01, 0.03, 0.05, 0.08)),
            ("chd", (0.0, 0.005, 0.02, 0.05, 0.08, 0.11)),
            ("ckd", (0.001, 0.003, 0.006, 0.012, 0.02, 0.03)),
        )
        for key, rates in table:
            p = rates[band] * (1.15 if male and key in ("chd", "copd") else 1.0)
            if age >= 18 and rng.random() < p:
                out.append(key)
        if rng.random() < 0.015:
            out.append("asthma")
        return out

    def _chronic_care(self, rng: random.Random, r: Resident, net: Network, chronic: list[str],
                      states: tuple[str, ...], visits: list[Visit]) -> None:
        dx = [DIAGNOSES[k] for k in chronic]
        meds: list[Drug] = []
        if "hypertension" in chronic:
            meds.append(DRUGS[("amlodipine", "nifedipine", "irbesartan", "valsartan")[int(rng.random() * 4)]])
            if rng.random() < 0.35:
                meds.append(DRUGS["metoprolol"])
        if "t2dm" in chronic:
            meds.append(DRUGS["metformin"])
            x = rng.random()
            if x < 0.3:
                meds.append(DRUGS["acarbose"])
            elif x < 0.45:
                meds.append(DRUGS["glimepiride"])
            elif x < 0.6:
                meds.append(DRUGS["glargine"])
        if "hyperlipidaemia" in chronic or "chd" in chronic:
            meds.append(DRUGS["atorvastatin" if rng.random() < 0.6 else "rosuvastatin"])
        if "chd" in chronic:
            meds.append(DRUGS["aspirin"])
            if rng.random() < 0.3:
                meds.append(DRUGS["clopidogrel"])
        if "copd" in chronic:
            meds.append(DRUGS["tiotropium" if rng.random() < 0.5 else "salmeterol-fluticasone"])
        if "asthma" in chronic:
            meds.append(DRUGS["salmeterol-fluticasone"])
        if "ckd" in chronic and "hypertension" not in chronic:
            meds.append(DRUGS["valsartan"])
        # Refills: every 1-2 months at the home centre (some patients skip care).
        interval = 30 + int(rng.random() * 40)
        day = self.start + int(rng.random() * interval)
        home = net.home
        home_dept = _dept(home, dp.GENERAL_PRACTICE.code, dp.INTERNAL.code)
        while day < self.today:
            d = timing.pick_day(rng, day, min(day + 6, self.today - 1), timing.WEEKDAY_PRIMARY)
            if rng.random() < 0.85:
                v = self._amb(rng, home, home_dept, d, 0, dx)
                v.drugs = list(meds)
                v.states = states
                if "t2dm" in chronic:
                    if rng.random() < 0.35:
                        v.panels.append(PANELS["glu"])
                    if rng.random() < 0.2:
                        v.panels.append(PANELS["hba1c"])
                if rng.random() < 0.06:
                    v.panels += [PANELS["lipid"], PANELS["rft"]]
                visits.append(v)
            day += interval + int(rng.random() * 10) - 5
        # 住院调整治疗: admissions to adjust chronic treatment are common in China (rough rate).
        for _ in range(self._poisson(rng, 0.07 * len(chronic) * self.years)):
            inst = net.local if rng.random() < 0.6 else net.big
            key = chronic[int(rng.random() * len(chronic))]
            dept_code = {"t2dm": dp.ENDOCRINOLOGY.code, "copd": dp.RESPIRATORY.code, "asthma": dp.RESPIRATORY.code,
                         "ckd": dp.NEPHROLOGY.code}.get(key, dp.CARDIOLOGY.code)
            panels = [PANELS["cbc"], PANELS["lft"], PANELS["rft"], PANELS["lipid"], PANELS["glu"]]
            if key == "t2dm":
                panels += [PANELS["hba1c"], PANELS["ua"]]
            self._admission(rng, inst, _dept(inst, dept_code, dp.INTERNAL.code), DIAGNOSES[key], panels,
                            [EXAMS["us-heart" if key in ("hypertension", "chd") else "dx-chest"]], list(meds), None,
                            7, 12, states, 0, visits)
        # Yearly specialist review.
        for _ in range(self.years):
            if rng.random() < 0.7:
                inst = net.big if rng.random() < 0.55 else net.local
                if "chd" in chronic:
                    dept = _dept(inst, dp.CARDIOLOGY.code, dp.INTERNAL.code)
                elif "t2dm" in chronic:
                    dept = _dept(inst, dp.ENDOCRINOLOGY.code, dp.INTERNAL.code)
                elif "copd" in chronic or "asthma" in chronic:
                    dept = _dept(inst, dp.RESPIRATORY.code, dp.INTERNAL.code)
                elif "ckd" in chronic:
                    dept = _dept(inst, dp.NEPHROLOGY.code, dp.INTERNAL.code)
                else:
                    dept = _dept(inst, dp.CARDIOLOGY.code, dp.INTERNAL.code)
                v = self._amb(rng, inst, dept, self._day(rng), 0, dx)
                v.states = states
                v.panels = [PANELS["cbc"], PANELS["lft"], PANELS["rft"], PANELS["lipid"]]
                if "t2dm" in chronic:
                    v.panels += [PANELS["glu"], PANELS["hba1c"], PANELS["ua"]]
                if ("chd" in chronic or "hypertension" in chronic) and rng.random() < 0.3:
                    v.exams.append(EXAMS["us-heart"])
                if "chd" in chronic and rng.random() < 0.1:
                    v.exams.append(EXAMS["cta-coronary"])
                if ("copd" in chronic) and rng.random() < 0.4:
                    v.exams.append(EXAMS["ct-chest"])
                v.drugs = list(meds[:2])
                visits.append(v)
        if "copd" in chronic:
            for _ in range(self._poisson(rng, 0.4 * self.years)):
                inst = net.local if rng.random() < 0.5 else net.big
                drugs = [DRUGS["moxifloxacin" if rng.random() < 0.5 else "ceftriaxone"], DRUGS["salbutamol"]]
                dept = _dept(inst, dp.RESPIRATORY.code, dp.INTERNAL.code)
                if rng.random() < 0.5:
                    self._admission(rng, inst, dept, DIAGNOSES["copd-exacerbation"], [PANELS["cbc"], PANELS["crp"]],
                                    [EXAMS["dx-chest"], EXAMS["ct-chest"]], drugs, None, 7, 12, states + ("infection",),
                                    0, visits, er=True)
                else:
                    v = self._er_visit(rng, inst, DIAGNOSES["copd-exacerbation"], 0, states + ("infection",))
                    v.panels = [PANELS["cbc"], PANELS["crp"]]
                    v.exams = [EXAMS["dx-chest"]]
                    v.drugs = drugs
                    visits.append(v)
        if ("chd" in chronic or "hypertension" in chronic) and r.age(date.fromordinal(self.today)) >= 70:
            if rng.random() < 0.03 * self.years:
                inst = net.big if rng.random() < 0.6 else net.local
                self._admission(rng, inst, _dept(inst, dp.CARDIOLOGY.code, dp.INTERNAL.code), DIAGNOSES["heart-failure"],
                                [PANELS["cbc"], PANELS["rft"], PANELS["lft"]], [EXAMS["dx-chest"], EXAMS["us-heart"]],
                                [DRUGS["furosemide"], DRUGS["spironolactone"]], None, 7, 12, states, 0, visits, er=True)
        if "chd" in chronic and rng.random() < 0.015 * self.years:
            self._admission(rng, net.big, _dept(net.big, dp.CARDIOLOGY.code, dp.INTERNAL.code), DIAGNOSES["ami"],
                            [PANELS["cbc"], PANELS["rft"], PANELS["lipid"], PANELS["glu"]], [EXAMS["dx-chest"]],
                            [DRUGS["aspirin"], DRUGS["clopidogrel"], DRUGS["atorvastatin"]], "pci", 6, 10, states, 0,
                            visits, er=True)
        if "chd" in chronic and rng.random() < 0.05 * self.years:
            self._admission(rng, net.big, _dept(net.big, dp.CARDIOLOGY.code, dp.INTERNAL.code), DIAGNOSES["angina"],
                            [PANELS["cbc"], PANELS["rft"], PANELS["lipid"]], [EXAMS["us-heart"]],
                            [DRUGS["aspirin"], DRUGS["clopidogrel"], DRUGS["atorvastatin"]], "pci", 5, 8,
                            states, -1, visits, er=True)

    def _admission(self, rng: random.Random, inst: Institution, dept: Department, dx: Diagnosis,
                   panels: list[Panel], exams: list[Exam], drugs: list[Drug], procedure: str | None,
                   los_min: int, los_max: int, states: tuple[str, ...], ep: int, visits: list[Visit],
                   er: bool = False, day: int | None = None) -> None:
        """An emergency visit (optional) followed by an admission, ending before ``today``.

        Operations go to a hospital with a surgeon privileged for the grade
        (手术分级); if the region has none, the patient is admitted without one.
        """
        los = los_min + int(rng.random() * (los_max - los_min + 1))
        if day is None:
            day = self._day(rng, last=self.today - 1 - los, pattern=timing.WEEKDAY_EMERGENCY if er else
                            timing.WEEKDAY_ADMISSION)
        if day >= self.today - 1:
            return
        if procedure is not None:
            theatre = self._theatre(inst, dept, PROCEDURES[procedure][2])
            if theatre is None:
                procedure = None
            else:
                inst, dept = theatre
        had_er = er and _er(inst)
        if had_er:
            m = timing.pick_minute(rng, timing.EMERGENCY_HOURS)
            ev = Visit(inst, EMER, _dept(inst, dp.EMERGENCY.code), day, m, day, min(m + 60 + int(rng.random() * 180), 1439),
                       ep, [dx], panels=list(panels), exams=list(exams[:1]), states=states, security=dx.security)
            visits.append(ev)
            start_min = min(ev.end_minute + 30, 1439)
        else:
            start_min = timing.pick_minute(rng, timing.ADMISSION_HOURS)
        end_day = min(day + los, self.today - 1)
        v = Visit(inst, IMP, dept, day, start_min, end_day, timing.pick_minute(rng, timing.DISCHARGE_HOURS), ep,
                  [dx], panels=list(panels), exams=list(exams[1:] if had_er else exams), drugs=list(drugs),
                  procedures=[procedure] if procedure else [], states=states, security=dx.security)
        if v.end_day == v.day and v.end_minute <= v.minute:
            v.end_minute = min(v.minute + 60, 1439)
        visits.append(v)

    def _theatre(self, inst: Institution, dept: Department, grade: int) -> tuple[Institution, Department] | None:
        """``inst`` if one of its surgeons may operate at ``grade``, else the first hospital that can.

        The operation stays in its specialty: a surgical specialty's own department, else the
        planned department or general surgery (never, say, a gastrectomy under 骨科)."""
        general = (dp.GENERAL_SURGERY.code, dp.SURGERY.code)
        specialty = dept.surgical and dept.code not in general  # 骨科, 泌尿外科, 妇科 ... operate themselves
        codes = [dept.code] if specialty else [dept.code, *(c for c in general if c != dept.code)]
        for candidate in [inst, *self.dir.hospitals_by_level]:
            for code in codes:
                roles = candidate.roles_by_department.get(code)
                if roles and any(x.surgery_grade >= grade for x in roles):
                    return candidate, next(d for d in candidate.departments if d.code == code)
        return None

    def _psychiatry(self, rng: random.Random, r: Resident, net: Network, visits: list[Visit]) -> None:
        x = rng.random()
        # Treated prevalence (rough): depression 1.2%, anxiety 0.8%, schizophrenia 0.4%, bipolar 0.2%.
        if x < 0.012:
            key, drug = "depression", ("sertraline", "escitalopram")[int(rng.random() * 2)]
        elif x < 0.020:
            key, drug = "anxiety", "escitalopram"
        elif x < 0.024:
            key, drug = "schizophrenia", ("olanzapine", "risperidone")[int(rng.random() * 2)]
        elif x < 0.026:
            key, drug = "bipolar", "lithium"
        else:
            return
        dx = DIAGNOSES[key]
        d = r.address.district.code
        inst = self.dir.pick(rng, d, "psych", "tertiary", "secondary")
        dept = _dept(inst, dp.PSYCHIATRY.code, dp.INTERNAL.code)
        interval = 30 + int(rng.random() * 60)
        day = self.start + int(rng.random() * interval)
        while day < self.today:
            v = self._amb(rng, inst, dept, self._day(rng, day, day + 6), 0, [dx])
            v.security = "PSY"
            v.drugs = [DRUGS[drug]] + ([DRUGS["zolpidem"]] if rng.random() < 0.2 else [])
            if key in ("schizophrenia", "bipolar") and rng.random() < 0.15:
                v.panels = [PANELS["cbc"], PANELS["lft"]]
            visits.append(v)
            day += interval
        if key == "schizophrenia" and rng.random() < 0.1 * self.years:
            self._admission(rng, inst, dept, dx, [PANELS["cbc"], PANELS["lft"]], [], [DRUGS[drug]], None, 14, 35,
                            (), 0, visits)

    def _hepatitis_b(self, rng: random.Random, r: Resident, visits: list[Visit]) -> None:
        """Chronic hepatitis B on antiviral treatment (HBsAg carriers are ~6% of Chinese adults,
        those treated roughly 1%; rough): seen every three months with liver function, mostly at
        the infectious-disease hospital, which is where most of its patients come from."""
        if rng.random() >= 0.01:
            return
        dx = DIAGNOSES["hepatitis-b"]
        inst = self.dir.pick(rng, r.address.district.code, "infect", "tertiary")
        dept = _dept(inst, dp.INFECTIOUS.code, dp.GASTRO.code, dp.INTERNAL.code)
        day = self.start + int(rng.random() * 90)
        while day < self.today:
            v = self._amb(rng, inst, dept, self._day(rng, day, day + 6), 0, [dx])
            v.drugs = [DRUGS["entecavir"]]
            v.panels = [PANELS["lft"]] + ([PANELS["cbc"]] if rng.random() < 0.3 else [])
            if rng.random() < 0.5:
                v.exams = [EXAMS["us-abdomen"]]
            visits.append(v)
            day += 80 + int(rng.random() * 20)

    def _hiv(self, rng: random.Random, r: Resident, male: bool, net: Network, visits: list[Visit]) -> None:
        if rng.random() >= (0.0014 if male else 0.0004):
            return
        dx = DIAGNOSES["hiv" if rng.random() < 0.4 else "hiv-asymptomatic"]
        inst = self.dir.pick(rng, r.address.district.code, "infect", "tertiary")
        dept = _dept(inst, dp.INFECTIOUS.code, dp.INTERNAL.code)
        art = [DRUGS["tenofovir"], DRUGS["lamivudine"], DRUGS["efavirenz" if rng.random() < 0.6 else "dolutegravir"]]
        day = self.start + int(rng.random() * 90)
        k = 0
        while day < self.today:
            v = self._amb(rng, inst, dept, self._day(rng, day, day + 6), 0, [dx])
            v.security = "HIV"
            v.states = ("hiv",)
            v.drugs = list(art)
            if k % 2 == 0:
                v.panels = [PANELS["cd4"], PANELS["hiv-vl"], PANELS["cbc"], PANELS["lft"], PANELS["rft"]]
            visits.append(v)
            day += 80 + int(rng.random() * 20)
            k += 1

    def _reproductive(self, rng: random.Random, r: Resident, age: int, visits: list[Visit]) -> None:
        d = r.address.district.code
        # Pregnancy: yearly chance by age (Beijing TFR ~0.9), delivery inside or after the window.
        p_preg = 0.07 if 25 <= age < 35 else 0.025 if 20 <= age < 40 else 0.004
        for y in range(self.years):
            if rng.random() >= p_preg:
                continue
            if y > 0 and any(v.security == "SEX" for v in visits):
                break  # one pregnancy per window
            delivery = self.start + 280 + int(rng.random() * (self.today - self.start))
            lmp = delivery - 280
            inst = self.dir.pick(rng, d, "maternal", "tertiary", "secondary")
            obs = _dept(inst, dp.OBSTETRICS.code)
            dx = DIAGNOSES["pregnancy"]
            ep = 1000 + y
            for week in (8, 12, 16, 20, 24, 28, 32, 36, 38, 40):
                day = lmp + week * 7 + int(rng.random() * 5)
                if not self.start <= day < self.today or day >= delivery:
                    continue
                v = self._amb(rng, inst, obs, timing.pick_day(rng, day, min(day + 4, self.today - 1),
                                                               timing.WEEKDAY_OUTPATIENT), ep, [dx])
                v.security = "SEX"
                v.states = ("pregnant",)
                if week in (8, 28, 36):
                    v.panels = [PANELS["cbc"], PANELS["ua"]]
                if week == 24:
                    v.panels = [PANELS["glu"]]
                if week in (12, 20, 28, 36):
                    v.exams = [EXAMS["us-obstetric"]]
                v.drugs = [DRUGS["folic-acid"]] if week <= 12 else [DRUGS["ferrous"]] if rng.random() < 0.3 else []
                visits.append(v)
            if delivery < self.today - 5:
                caesarean = rng.random() < 0.38  # China caesarean rate ~36-40%
                self._admission(rng, inst, obs, DIAGNOSES["caesarean" if caesarean else "delivery"],
                                [PANELS["cbc"]], [], [DRUGS["cefazolin"] if caesarean else DRUGS["oxytocin"]],
                                "caesarean" if caesarean else "vaginal-delivery", 3 if caesarean else 2,
                                6 if caesarean else 4, ("pregnant",), ep, visits, day=delivery - 1)
        if rng.random() < 0.02 * self.years:
            inst = self.dir.pick(rng, d, "maternal", "secondary", "chc")
            v = self._amb(rng, inst, _dept(inst, dp.FAMILY_PLANNING.code, dp.GYNAECOLOGY.code), self._day(rng),
                          -2, [DIAGNOSES["contraception"]])
            v.security = "SEX"
            v.drugs = [DRUGS["levonorgestrel"]]
            visits.append(v)
        if 25 <= age < 42 and rng.random() < 0.01 * self.years:
            inst = self.dir.pick(rng, d, "maternal", "tertiary")
            dept = _dept(inst, dp.REPRODUCTIVE.code, dp.GYNAECOLOGY.code)
            first = self._day(rng, last=self.today - 90)
            for k in range(3):
                v = self._amb(rng, inst, dept, min(first + 30 * k, self.today - 1), -3, [DIAGNOSES["infertility"]])
                v.security = "SEX"
                if k == 0:
                    v.exams = [EXAMS["us-gyn"]]
                    v.panels = [PANELS["cbc"]]
                visits.append(v)

    def _acute(self, rng: random.Random, r: Resident, age: int, net: Network, states: tuple[str, ...],
               visits: list[Visit]) -> None:
        yrs = self.years
        child = age < 14
        elderly = age >= 65
        d = r.address.district.code
        poisson = self._poisson
        ep = 10_000  # acute episodes: one Condition each
        # Upper respiratory infection: children ~1.5/yr, adults ~0.4/yr (episodes seen by a doctor).
        for _ in range(poisson(rng, yrs * (1.2 if child else 0.35 if not elderly else 0.45))):
            ep += 1
            if child:
                inst = net.local if rng.random() < 0.5 else net.big
                dept = _dept(inst, dp.PAEDIATRICS.code, dp.INTERNAL.code)
            else:
                inst = (net.clinic, net.home, net.local)[int(rng.random() * 3)]
                dept = _dept(inst, dp.GENERAL_PRACTICE.code, dp.INTERNAL.code, dp.RESPIRATORY.code)
            bronchitis = rng.random() < 0.2
            v = self._amb(rng, inst, dept, self._day(rng), ep, [DIAGNOSES["bronchitis" if bronchitis else "urti"]])
            v.drugs = [DRUGS["paracetamol" if rng.random() < 0.6 else "ibuprofen"]]
            if rng.random() < 0.4:
                v.panels = [PANELS["cbc"]] + ([PANELS["crp"]] if rng.random() < 0.5 else [])
                v.states = ("infection",) if rng.random() < 0.4 else ()
            if rng.random() < 0.25:  # antibiotics for viral URTI: still common in primary care
                tier1 = ("amoxicillin", "cefuroxime-po", "azithromycin")[int(rng.random() * 3)]
                v.drugs.append(DRUGS["levofloxacin" if not child and inst.archetype.hospital and rng.random() < 0.2
                                     else tier1])
            if bronchitis and rng.random() < 0.5:
                v.exams = [EXAMS["dx-chest"]]
            visits.append(v)
        # Pneumonia: children and the elderly.
        for _ in range(poisson(rng, yrs * (0.03 if child else 0.04 if elderly else 0.008))):
            ep += 1
            inst = net.local if rng.random() < 0.5 else net.big
            dx = DIAGNOSES["pneumonia"]
            admit = rng.random() < (0.3 if child else 0.45 if elderly else 0.15)
            panels = [PANELS["cbc"], PANELS["crp"]]
            if admit:
                dept = _dept(inst, dp.PAEDIATRICS.code if child else dp.RESPIRATORY.code, dp.INTERNAL.code)
                severe = elderly and rng.random() < 0.15
                drugs = [DRUGS["meropenem" if rng.random() < 0.6 else "vancomycin"]] if severe else [
                    DRUGS["ceftriaxone" if rng.random() < 0.6 else "pip-tazo"]]
                if severe and not inst.archetype.tertiary:
                    inst = net.big
                    dept = _dept(inst, dp.RESPIRATORY.code, dp.INTERNAL.code)
                self._admission(rng, inst, dept, dx, panels + [PANELS["lft"], PANELS["rft"]],
                                [EXAMS["dx-chest"], EXAMS["ct-chest"]], drugs, None, 7, 14,
                                states + ("infection",), ep, visits, er=True)
            else:
                cls_er = _er(inst) and rng.random() < 0.6
                dept = _dept(inst, dp.EMERGENCY.code) if cls_er else _dept(inst, dp.RESPIRATORY.code,
                                                                            dp.PAEDIATRICS.code, dp.INTERNAL.code)
                v = self._amb(rng, inst, dept, self._day(rng, pattern=timing.WEEKDAY_EMERGENCY), ep, [dx])
                if cls_er:
                    v.cls = EMER
                    v.minute = timing.pick_minute(rng, timing.EMERGENCY_HOURS)
                    v.end_minute = min(v.minute + 90 + int(rng.random() * 120), 1439)
                v.panels = panels
                v.exams = [EXAMS["dx-chest"]] + ([EXAMS["ct-chest"]] if rng.random() < 0.4 else [])
                v.states = states + ("infection",)
                v.drugs = [DRUGS[("levofloxacin", "moxifloxacin", "cefuroxime-po", "azithromycin")[int(rng.random() * 4)]],
                           DRUGS["ambroxol"]]
                visits.append(v)
        if not child:
            # Gastritis / gastroenteritis / back pain / dermatitis / knee: outpatient only.
            for key, rate, depts, exam_keys, drug_keys in (
                ("gastritis", 0.06, (dp.GASTRO.code, dp.INTERNAL.code), ("us-abdomen",), ("omeprazole",)),
                ("gastroenteritis", 0.05, (dp.EMERGENCY.code, dp.INTERNAL.code), (), ("omeprazole",)),
                ("back-pain", 0.05, (dp.ORTHOPAEDICS.code, dp.SURGERY.code), ("dx-lumbar", "mr-lumbar"), ("ibuprofen",)),
                ("dermatitis", 0.03, (dp.DERMATOLOGY.code, dp.GENERAL_PRACTICE.code), (), ()),
            ):
                for _ in range(poisson(rng, yrs * rate)):
                    ep += 1
                    inst = (net.local, net.big, net.home)[int(rng.random() * 3)]
                    v = self._amb(rng, inst, _dept(inst, *depts), self._day(rng), ep, [DIAGNOSES[key]])
                    if exam_keys and rng.random() < 0.45:
                        v.exams = [EXAMS[exam_keys[int(rng.random() * len(exam_keys))]]]
                    if key == "gastroenteritis":
                        v.panels = [PANELS["cbc"]]
                    v.drugs = [DRUGS[k] for k in drug_keys]
                    v.states = states
                    visits.append(v)
        # Surgical emergencies and elective operations.
        if 8 <= age < 50:
            for _ in range(poisson(rng, yrs * 0.0012)):
                ep += 1
                inst = net.local if rng.random() < 0.5 else net.big
                self._admission(rng, inst, _dept(inst, dp.GENERAL_SURGERY.code, dp.SURGERY.code),
                                DIAGNOSES["appendicitis"], [PANELS["cbc"], PANELS["crp"]],
                                [EXAMS["us-abdomen" if rng.random() < 0.6 else "ct-abdomen"]],
                                [DRUGS["cefazolin"], DRUGS["metronidazole"]], "lap-appendectomy", 3, 6,
                                ("infection",), ep, visits, er=True)
        if age >= 35:
            for _ in range(poisson(rng, yrs * 0.004)):
                ep += 1
                inst = net.big if rng.random() < 0.6 else net.local
                dept = _dept(inst, dp.GENERAL_SURGERY.code, dp.SURGERY.code)
                v = self._amb(rng, inst, dept, self._day(rng, last=self.today - 40), ep, [DIAGNOSES["gallstones"]])
                v.exams = [EXAMS["us-abdomen"]]
                v.panels = [PANELS["lft"]]
                visits.append(v)
                if rng.random() < 0.35:
                    self._admission(rng, inst, dept, DIAGNOSES["gallstones"], [PANELS["cbc"], PANELS["lft"]], [],
                                    [DRUGS["cefazolin"]], "lap-cholecystectomy", 3, 6, states, ep, visits,
                                    day=v.day + 7 + int(rng.random() * 25))
        wrist_rate = 0.008 if (elderly and r.sex == "female") else 0.003
        for _ in range(poisson(rng, yrs * wrist_rate)):
            ep += 1
            inst = net.local if rng.random() < 0.5 else net.big
            dx = DIAGNOSES["wrist-fracture"]
            if rng.random() < 0.25:
                self._admission(rng, inst, _dept(inst, dp.ORTHOPAEDICS.code, dp.SURGERY.code), dx, [PANELS["cbc"]],
                                [EXAMS["dx-wrist"]], [DRUGS["cefazolin"]], "wrist-orif", 4, 7, states, ep, visits,
                                er=True)
            else:
                v = self._amb(rng, inst, _dept(inst, dp.EMERGENCY.code, dp.ORTHOPAEDICS.code),
                              self._day(rng, pattern=timing.WEEKDAY_EMERGENCY), ep, [dx])
                if _er(inst):
                    v.cls = EMER
                    v.minute = timing.pick_minute(rng, timing.EMERGENCY_HOURS)
                    v.end_minute = min(v.minute + 120, 1439)
                v.exams = [EXAMS["dx-wrist"]]
                v.procedures = ["closed-reduction"]
                v.drugs = [DRUGS["ibuprofen"]]
                visits.append(v)
        if age >= 70:
            for _ in range(poisson(rng, yrs * 0.006)):
                ep += 1
                inst = net.big
                self._admission(rng, inst, _dept(inst, dp.ORTHOPAEDICS.code, dp.SURGERY.code),
                                DIAGNOSES["hip-fracture"], [PANELS["cbc"], PANELS["rft"], PANELS["lft"]],
                                [EXAMS["dx-hip"], EXAMS["ct-chest"]], [DRUGS["cefazolin"]],
                                "hip-replacement" if rng.random() < 0.5 else "hemiarthroplasty", 10, 16, states, ep,
                                visits, er=True)
        if age >= 60:
            for _ in range(poisson(rng, yrs * 0.015)):
                ep += 1
                inst = net.big if rng.random() < 0.5 else net.local
                dept = _dept(inst, dp.OPHTHALMOLOGY.code)
                v = self._amb(rng, inst, dept, self._day(rng, last=self.today - 30), ep, [DIAGNOSES["cataract"]])
                visits.append(v)
                if rng.random() < 0.5 and dept.code == dp.OPHTHALMOLOGY.code:
                    self._admission(rng, inst, dept, DIAGNOSES["cataract"], [PANELS["cbc"]], [], [], "phaco", 1, 2,
                                    states, ep, visits, day=v.day + 7 + int(rng.random() * 20))
            # Stroke is China's leading cause of admission among the elderly.
            for _ in range(poisson(rng, yrs * (0.008 if age < 75 else 0.015))):
                ep += 1
                inst = net.big if rng.random() < 0.7 else net.local
                self._admission(rng, inst, _dept(inst, dp.NEUROLOGY.code, dp.INTERNAL.code), DIAGNOSES["stroke"],
                                [PANELS["cbc"], PANELS["glu"], PANELS["lipid"], PANELS["rft"]],
                                [EXAMS["ct-head"], EXAMS["mr-head"]], [DRUGS["aspirin"], DRUGS["atorvastatin"]], None,
                                10, 16, states, ep, visits, er=True)
        if age >= 18 and rng.random() < 0.0008 * yrs:
            ep += 1
            inst = self.dir.pick(rng, d, "maternal", "tertiary", "secondary")
            v = self._amb(rng, inst, _dept(inst, dp.DERMATOLOGY.code, dp.GYNAECOLOGY.code, dp.INFECTIOUS.code),
                          self._day(rng), ep, [DIAGNOSES["syphilis"]])
            v.security = "SEX"
            v.drugs = [DRUGS["ceftriaxone"]]
            visits.append(v)

    def _er_visit(self, rng: random.Random, inst: Institution, dx: Diagnosis, ep: int,
                  states: tuple[str, ...]) -> Visit:
        """An emergency-department visit (or an urgent outpatient one where there is no 急诊科)."""
        day = self._day(rng, pattern=timing.WEEKDAY_EMERGENCY)
        if not _er(inst):
            v = self._amb(rng, inst, _dept(inst, dp.GENERAL_PRACTICE.code, dp.INTERNAL.code), day, ep, [dx])
        else:
            m = timing.pick_minute(rng, timing.EMERGENCY_HOURS)
            v = Visit(inst, EMER, _dept(inst, dp.EMERGENCY.code), day, m, day,
                      min(m + 40 + int(rng.random() * 200), 1439), ep, [dx])
        v.states = states
        return v

    def _emergencies(self, rng: random.Random, r: Resident, age: int, net: Network, states: tuple[str, ...],
                     visits: list[Visit]) -> None:
        group = 0 if age < 14 else 2 if age >= 65 else 1
        ep = 30_000
        for pres in EMERGENCIES:
            for _ in range(self._poisson(rng, pres.rates[group] * self.years)):
                ep += 1
                inst = net.local if rng.random() < 0.55 else net.big
                if not _er(inst):
                    inst = net.big if _er(net.big) else inst
                dx = DIAGNOSES[pres.dx]
                panels = [PANELS[k] for k in pres.panels]
                exams = [EXAMS[k] for k, p in pres.exams if rng.random() < p]
                drugs = [DRUGS[k] for k in pres.drugs]
                if rng.random() < pres.admit:
                    self._admission(rng, inst, _dept(inst, *pres.admit_depts), dx, panels, exams, drugs,
                                    pres.procedure, pres.los[0], pres.los[1], states, ep, visits, er=True)
                    continue
                v = self._er_visit(rng, inst, dx, ep, states)
                v.panels, v.exams, v.drugs = panels, exams, drugs
                if pres.procedure is not None:
                    v.procedures = [pres.procedure]
                if pres.dx == "fever":
                    v.states = states + ("infection",) if rng.random() < 0.5 else states
                visits.append(v)

    def _electives(self, rng: random.Random, r: Resident, age: int, net: Network, states: tuple[str, ...],
                   visits: list[Visit]) -> None:
        ep = 40_000
        for el in ELECTIVES:
            if (el.sex is not None and el.sex != r.sex) or not el.ages[0] <= age < el.ages[1]:
                continue
            if rng.random() >= el.rate * self.years:
                continue
            ep += 1
            inst = net.big if rng.random() < 0.6 else net.local
            dept = _dept(inst, *el.depts)
            v = self._amb(rng, inst, dept, self._day(rng, last=self.today - 45), ep, [DIAGNOSES[el.dx]])
            v.exams = [EXAMS[el.exam]]
            v.panels = [PANELS["cbc"]]
            v.states = states
            visits.append(v)
            self._admission(rng, inst, dept, DIAGNOSES[el.dx], [PANELS["cbc"], PANELS["lft"], PANELS["rft"]], [],
                            [DRUGS["cefazolin"]] if rng.random() < 0.5 else [], el.procedure, el.los[0], el.los[1],
                            states, ep, visits, day=v.day + 7 + int(rng.random() * 30))

    def _cancer(self, rng: random.Random, r: Resident, age: int, net: Network, states: tuple[str, ...],
                visits: list[Visit]) -> None:
        """Active cancer care (5-year prevalence ~1.2% in Beijing; rough): surgery, chemo cycles, imaging."""
        p = 0.001 if age < 40 else 0.006 if age < 60 else 0.015 if age < 75 else 0.02
        if rng.random() >= p:
            return
        options = [c for c in CANCERS if c[1] is None or c[1] == r.sex]
        key, _sex, _w, operation, chemo, exam = Weighted([(c, c[2]) for c in options]).pick(rng)
        dx = DIAGNOSES[key]
        inst = net.big
        onc = _dept(inst, dp.ONCOLOGY.code, dp.INTERNAL.code)
        day = self._day(rng, last=self.today - 60)
        v = self._amb(rng, inst, onc, day, 0, [dx])
        v.exams = [EXAMS[exam]]
        v.panels = [PANELS["cbc"], PANELS["lft"]]
        visits.append(v)
        if rng.random() < 0.4:
            surgical = _dept(inst, dp.GENERAL_SURGERY.code, dp.SURGERY.code)
            self._admission(rng, inst, surgical, dx, [PANELS["cbc"], PANELS["lft"], PANELS["rft"]], [],
                            [DRUGS["cefazolin"]], operation, 8, 14, states, 0, visits, day=day + 10)
            day += 40
        # Chemotherapy cycles every three weeks (4-6 cycles), each a short admission.
        for k in range(4 + int(rng.random() * 3)):
            d = day + 7 + 21 * k
            if d >= self.today - 6:
                break
            drugs = [DRUGS[c] for c in chemo] + [DRUGS["ondansetron"]]
            if rng.random() < 0.08:  # febrile neutropenia: special-tier antibiotics
                drugs.append(DRUGS[SPECIAL_TIER[int(rng.random() * len(SPECIAL_TIER))]])
            self._admission(rng, inst, onc, DIAGNOSES["chemotherapy"], [PANELS["cbc"], PANELS["lft"], PANELS["rft"]],
                            [], drugs, None, 2, 4, states, 0, visits, day=d)
            visits[-1].diagnoses.append(dx)
        follow = day + 200
        while follow < self.today:
            v = self._amb(rng, inst, onc, follow, 0, [dx])
            v.exams = [EXAMS[exam]]
            v.panels = [PANELS["cbc"]]
            visits.append(v)
            follow += 80 + int(rng.random() * 30)

    def _sepsis(self, rng: random.Random, net: Network, states: tuple[str, ...], visits: list[Visit]) -> None:
        inst = net.big
        drugs = [DRUGS[SPECIAL_TIER[int(rng.random() * len(SPECIAL_TIER))]]]
        if rng.random() < 0.5:
            drugs.append(DRUGS["vancomycin"] if drugs[0].key != "vancomycin" else DRUGS["meropenem"])
        self._admission(rng, inst, _dept(inst, dp.INFECTIOUS.code, dp.RESPIRATORY.code, dp.INTERNAL.code),
                        DIAGNOSES["sepsis"], [PANELS["cbc"], PANELS["crp"], PANELS["lft"], PANELS["rft"]],
                        [EXAMS["dx-chest"], EXAMS["ct-chest"]], drugs, None, 10, 20, states + ("infection",),
                        50_000, visits, er=True)

    def _checkups(self, rng: random.Random, r: Resident, net: Network, states: tuple[str, ...],
                  visits: list[Visit]) -> None:
        for y in range(self.years):
            if rng.random() >= 0.3:  # share of adults with a yearly 体检 (employer or elderly free check)
                continue
            inst = net.big if rng.random() < 0.5 else net.local
            if r.age(date.fromordinal(self.today)) >= 65 and rng.random() < 0.6:
                inst = net.home  # free elderly health check (国家基本公共卫生服务)
            v = self._amb(rng, inst, _dept(inst, dp.PREVENTIVE.code, dp.INTERNAL.code, dp.GENERAL_PRACTICE.code),
                          self._day(rng, pattern=timing.WEEKDAY_PRIMARY), 200 + y, [DIAGNOSES["checkup"]])
            v.minute = 7 * 60 + 30 + int(rng.random() * 120)  # fasting blood draws, early morning
            v.end_minute = v.minute + 90
            v.panels = [PANELS[k] for k in ("cbc", "lft", "rft", "lipid", "glu", "ua")]
            v.exams = [EXAMS["dx-chest"], EXAMS["us-abdomen"]] + ([EXAMS["us-thyroid"]] if rng.random() < 0.5 else [])
            v.states = states
            visits.append(v)

    def _child(self, rng: random.Random, r: Resident, net: Network, visits: list[Visit],
               immunizations: list[Immunization]) -> None:
        birth = r.birth.toordinal()
        home = net.home
        dept = _dept(home, dp.CHILD_HEALTH.code, dp.PAEDIATRICS.code, dp.GENERAL_PRACTICE.code)
        for vaccine, dose, age_days in CHILD_SCHEDULE:
            day = birth + age_days + int(rng.random() * 10)
            if day >= self.today:
                break
            if rng.random() < 0.97:  # national programme coverage > 95%
                inst = home if age_days > 0 else net.big  # birth doses at the maternity ward
                immunizations.append(Immunization(inst, day, vaccine, dose))
        for months in (1, 3, 6, 8, 12, 18, 24, 30, 36):
            day = birth + int(months * 30.4) + int(rng.random() * 7)
            if self.start <= day < self.today and rng.random() < 0.85:
                visits.append(self._amb(rng, home, dept, day, 300 + months, [DIAGNOSES["well-child"]]))

    def _tcm(self, rng: random.Random, r: Resident, net: Network, states: tuple[str, ...],
             visits: list[Visit]) -> None:
        """A course of 中医 outpatient care (2-4 visits, decoctions), at a TCM hospital or the home centre."""
        inst = self.dir.pick(rng, r.address.district.code, "tcm", "chc")
        dept = _dept(inst, dp.TCM.code)
        dx = DIAGNOSES[("insomnia", "back-pain", "gastritis")[int(rng.random() * 3)]]
        day = self._day(rng, last=self.today - 30)
        for k in range(2 + int(rng.random() * 3)):
            d = day + 7 * k + int(rng.random() * 3)
            if d >= self.today:
                break
            v = self._amb(rng, inst, dept, d, 20_000, [dx])
            v.drugs = [DRUGS["tcm-decoction"]]
            v.states = states
            visits.append(v)

    def _follow_ups(self, rng: random.Random, visits: list[Visit]) -> None:
        """复诊: a share of acute outpatient episodes come back to the same desk within two weeks."""
        extra: list[Visit] = []
        for v in visits:
            if v.cls == IMP or v.episode < 10_000 or rng.random() >= 0.35:
                continue
            day = v.day + 3 + int(rng.random() * 11)
            if day >= self.today:
                continue
            w = self._amb(rng, v.inst, v.dept if v.cls == AMB else _dept(v.inst, dp.INTERNAL.code), day, v.episode,
                          list(v.diagnoses))
            w.states = v.states
            w.security = v.security
            if v.panels and rng.random() < 0.3:
                w.panels = [PANELS["cbc"]]
            if v.drugs and rng.random() < 0.5:
                w.drugs = list(v.drugs)
            extra.append(w)
        visits.extend(extra)

    def _repeats(self, rng: random.Random, r: Resident, net: Network, visits: list[Visit]) -> None:
        """The same tests at another institution within 1-10 days (互认 candidates)."""
        if self.repeat_rate <= 0:
            return
        extra: list[Visit] = []
        for v in visits:
            if v.cls == IMP or not (v.panels or v.exams) or rng.random() >= self.repeat_rate:
                continue
            other = net.big2 if v.inst is not net.big2 else net.big
            if other is v.inst:
                other = self.dir.pick(rng, r.address.district.code, "tertiary", "secondary")
                if other is v.inst:
                    continue
            day = v.day + 1 + int(rng.random() * 10)
            if day >= self.today:
                continue
            codes = (v.dept.code,) + (dp.INTERNAL.code, dp.GENERAL_PRACTICE.code)
            if v.dept.code == dp.EMERGENCY.code:
                codes = (dp.RESPIRATORY.code, dp.ORTHOPAEDICS.code, dp.INTERNAL.code)
            w = self._amb(rng, other, _dept(other, *codes), day, v.episode, list(v.diagnoses))
            w.panels = list(v.panels)
            w.exams = list(v.exams)
            w.states = v.states
            w.security = v.security
            w.repeat = True
            extra.append(w)
        visits.extend(extra)
