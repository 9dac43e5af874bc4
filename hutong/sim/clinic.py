"""What the simulated hospitals write: coherent visits, lab panels and prescriptions.

Each :class:`Visit` is one clinical event of one patient at one institution,
drawn so that its parts agree: the department fits the diagnosis (a gastric
cancer in 普通外科/肿瘤科, never 骨科), an emergency is typed emergency
(HL7 v2 table 0004 ``E``, v3 ActCode ``EMER``), a stay is admitted before it
is discharged, and a complete blood count's derived indices are computed from
its measured ones (WS/T 405-2012 reference intervals): Hct = RBC x MCV,
Hb = RBC x MCH, MCHC = Hb / Hct, so no panel "does not add up".
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

# Encounter classes: HL7 v2 table 0004 (PV1-2) and v3 ActCode (CDA / FHIR Encounter.class).
OUTPATIENT, EMERGENCY, INPATIENT = "O", "E", "I"


@dataclass(frozen=True, slots=True)
class Diagnosis:
    icd10: str
    name: str
    departments: tuple[str, ...]  # departments that treat it (names as on the HIS)
    settings: str  # which of O/E/I it is seen in
    complaint: str  # 主诉
    panels: tuple[str, ...]  # lab panels ordered for it
    exam: str | None  # imaging exam ordered for it (key of EXAMS)
    drugs: tuple[str, ...]  # keys of DRUGS prescribed for it
    procedure: tuple[str, str] | None = None  # ICD-9-CM-3 code, name (inpatient)


DIAGNOSES: tuple[Diagnosis, ...] = (
    Diagnosis("I10.x00", "原发性高血压", ("心血管内科", "全科医疗科", "内科"), "OI", "头晕2周",
              ("bmp", "lipid"), None, ("amlodipine",)),
    Diagnosis("E11.900", "2型糖尿病", ("内分泌科", "全科医疗科", "内科"), "OI", "口干多饮3月",
              ("glucose", "bmp"), None, ("metformin",)),
    Diagnosis("J06.900", "急性上呼吸道感染", ("呼吸内科", "全科医疗科", "儿科", "急诊医学科"), "OE", "咽痛发热2天",
              ("cbc",), None, ("amoxicillin",)),
    Diagnosis("J18.900", "肺炎", ("呼吸内科", "急诊医学科"), "EI", "咳嗽咳痰伴发热4天",
              ("cbc", "crp"), "chest-ct", ("cefuroxime",), ("87.4100", "胸部CT检查")),
    Diagnosis("K29.700", "慢性胃炎", ("消化内科", "内科"), "O", "上腹部隐痛1月",
              ("cbc",), "gastroscopy", ("omeprazole",)),
    Diagnosis("C16.900", "胃恶性肿瘤", ("普通外科", "肿瘤科", "消化内科"), "I", "上腹痛伴消瘦3月",
              ("cbc", "liver"), "abdomen-ct", ("omeprazole",), ("43.7x00", "胃部分切除术伴胃空肠吻合术")),
    Diagnosis("I21.900", "急性心肌梗死", ("心血管内科", "急诊医学科"), "EI", "胸痛3小时",
              ("cbc", "bmp", "lipid"), "ecg", ("aspirin", "atorvastatin"),
              ("36.0600x004", "经皮冠状动脉药物洗脱支架置入术")),
    Diagnosis("S82.200", "胫骨骨干骨折", ("骨科", "急诊医学科"), "EI", "外伤后右小腿疼痛2小时",
              ("cbc",), "leg-xray", ("ibuprofen",), ("79.3600", "胫骨骨折切开复位内固定术")),
    Diagnosis("K35.800", "急性阑尾炎", ("普通外科", "急诊医学科"), "EI", "转移性右下腹痛1天",
              ("cbc", "crp"), "abdomen-ct", ("cefuroxime",), ("47.0900", "腹腔镜下阑尾切除术")),
    Diagnosis("N39.000", "泌尿道感染", ("泌尿外科", "肾内科", "全科医疗科"), "O", "尿频尿急3天",
              ("cbc",), None, ("levofloxacin",)),
    Diagnosis("B20.000", "人类免疫缺陷病毒病", ("感染科",), "OI", "乏力、反复发热1月",
              ("cbc", "liver"), "chest-ct", (), None),
    Diagnosis("B18.100", "慢性乙型病毒性肝炎", ("感染科", "消化内科"), "OI", "乏力纳差2月",
              ("liver", "cbc"), "abdomen-us", ("entecavir",)),
    Diagnosis("F32.900", "抑郁发作", ("精神科",), "OI", "情绪低落、失眠2月", ("bmp",), None, ("sertraline",)),
    Diagnosis("O80.000", "单胎顺产", ("产科",), "I", "停经39周，阵发性腹痛6小时", ("cbc",), "obstetric-us", ()),
    Diagnosis("J45.900", "支气管哮喘", ("呼吸内科", "儿科"), "OE", "反复喘息1周", ("cbc",), None, ("salbutamol",)),
)

# Which diagnoses an institution sees, by its Organization type text (hutong.synth.institutions).
SPECIALTY: dict[str, tuple[str, ...]] = {
    "精神": ("F32.900",),
    "传染病": ("B20.000", "B18.100", "J18.900"),
    "妇幼": ("O80.000", "J06.900", "J45.900"),
}


@dataclass(frozen=True, slots=True)
class Analyte:
    loinc: str
    name: str
    unit: str
    low: float
    high: float
    decimals: int


ANALYTES: dict[str, Analyte] = {a.loinc: a for a in (
    Analyte("6690-2", "白细胞计数", "10*9/L", 3.5, 9.5, 2),
    Analyte("789-8", "红细胞计数", "10*12/L", 3.8, 5.8, 2),
    Analyte("718-7", "血红蛋白", "g/L", 115, 175, 0),
    Analyte("4544-3", "红细胞压积", "%", 35, 50, 1),
    Analyte("787-2", "平均红细胞体积", "fL", 82, 100, 1),
    Analyte("785-6", "平均红细胞血红蛋白量", "pg", 27, 34, 1),
    Analyte("786-4", "平均红细胞血红蛋白浓度", "g/L", 316, 354, 0),
    Analyte("777-3", "血小板计数", "10*9/L", 125, 350, 0),
    Analyte("1988-5", "C反应蛋白", "mg/L", 0, 10, 1),
    Analyte("14749-6", "葡萄糖", "mmol/L", 3.9, 6.1, 2),
    Analyte("4548-4", "糖化血红蛋白", "%", 4.0, 6.0, 1),
    Analyte("14682-9", "肌酐", "umol/L", 57, 111, 0),
    Analyte("22664-7", "尿素", "mmol/L", 3.1, 8.0, 2),
    Analyte("2823-3", "钾", "mmol/L", 3.5, 5.3, 2),
    Analyte("2951-2", "钠", "mmol/L", 137, 147, 0),
    Analyte("14647-2", "总胆固醇", "mmol/L", 2.8, 5.2, 2),
    Analyte("14927-8", "甘油三酯", "mmol/L", 0.45, 1.7, 2),
    Analyte("14646-4", "高密度脂蛋白胆固醇", "mmol/L", 1.04, 2.0, 2),
    Analyte("22748-8", "低密度脂蛋白胆固醇", "mmol/L", 1.5, 3.4, 2),
    Analyte("1742-6", "丙氨酸氨基转移酶", "U/L", 9, 50, 0),
    Analyte("1920-8", "天门冬氨酸氨基转移酶", "U/L", 15, 40, 0),
    Analyte("14631-6", "总胆红素", "umol/L", 0, 23, 1),
    Analyte("1751-7", "白蛋白", "g/L", 40, 55, 1),
)}

# Panel key -> (LOINC of the order, name).
PANELS: dict[str, tuple[str, str]] = {
    "cbc": ("58410-2", "血常规"), "crp": ("1988-5", "C反应蛋白测定"), "glucose": ("14749-6", "血糖测定"),
    "bmp": ("24321-2", "肾功能+电解质"), "lipid": ("57698-3", "血脂四项"), "liver": ("24325-3", "肝功能"),
}

EXAMS: dict[str, tuple[str, str, str, str]] = {  # key -> (code, name, 检查所见, 诊断意见)
    "chest-ct": ("CT-CHEST", "胸部CT平扫", "右肺下叶见斑片状高密度影，边界模糊，纵隔未见肿大淋巴结。", "右肺下叶炎症"),
    "abdomen-ct": ("CT-ABD", "腹部CT增强", "胃窦部胃壁不规则增厚，增强后明显强化，周围脂肪间隙模糊。",
                   "胃窦占位，考虑恶性肿瘤可能"),
    "gastroscopy": ("GI-EGD", "电子胃镜检查", "胃窦黏膜红白相间，以红为主，散在点状糜烂。", "慢性非萎缩性胃炎伴糜烂"),
    "ecg": ("ECG-12", "十二导联心电图", "窦性心律，V1-V4导联ST段抬高0.2-0.4mV。", "急性前壁心肌梗死"),
    "leg-xray": ("DR-LEG", "右胫腓骨正侧位X线", "右胫骨中段见横行骨折线，断端轻度错位。", "右胫骨骨干骨折"),
    "abdomen-us": ("US-ABD", "肝胆脾超声", "肝实质回声增粗，分布欠均匀，门静脉内径正常。", "肝实质弥漫性病变"),
    "obstetric-us": ("US-OB", "产科超声", "单活胎，头位，双顶径9.3cm，胎心率142次/分。", "宫内单活胎，孕39周"),
}


@dataclass(frozen=True, slots=True)
class Drug:
    name: str
    spec: str
    dose: str
    unit: str
    route: str
    frequency: str
    days: int


DRUGS: dict[str, Drug] = {
    "amlodipine": Drug("苯磺酸氨氯地平片", "5mg*28片", "5", "mg", "口服", "每日一次", 28),
    "metformin": Drug("盐酸二甲双胍片", "0.5g*48片", "0.5", "g", "口服", "每日三次", 14),
    "amoxicillin": Drug("阿莫西林胶囊", "0.25g*24粒", "0.5", "g", "口服", "每日三次", 5),
    "cefuroxime": Drug("头孢呋辛酯片", "0.25g*12片", "0.25", "g", "口服", "每日两次", 7),
    "omeprazole": Drug("奥美拉唑肠溶胶囊", "20mg*14粒", "20", "mg", "口服", "每日一次", 14),
    "aspirin": Drug("阿司匹林肠溶片", "100mg*30片", "100", "mg", "口服", "每日一次", 30),
    "atorvastatin": Drug("阿托伐他汀钙片", "20mg*7片", "20", "mg", "口服", "每晚一次", 28),
    "ibuprofen": Drug("布洛芬缓释胶囊", "0.3g*20粒", "0.3", "g", "口服", "每日两次", 5),
    "levofloxacin": Drug("左氧氟沙星片", "0.5g*4片", "0.5", "g", "口服", "每日一次", 4),
    "entecavir": Drug("恩替卡韦片", "0.5mg*7片", "0.5", "mg", "口服", "每日一次", 28),
    "sertraline": Drug("盐酸舍曲林片", "50mg*14片", "50", "mg", "口服", "每日一次", 14),
    "salbutamol": Drug("硫酸沙丁胺醇吸入气雾剂", "100ug*200揿", "200", "ug", "吸入", "必要时", 14),
}


@dataclass(frozen=True, slots=True)
class Result:
    analyte: Analyte
    value: float

    @property
    def text(self) -> str:
        return f"{self.value:.{self.analyte.decimals}f}"

    @property
    def flag(self) -> str:
        """HL7 table 0078 abnormal flag."""
        a = self.analyte
        v = round(self.value, a.decimals)
        return "H" if v > a.high else "L" if v < a.low else "N"


def _r(rng: random.Random, loinc: str, value: float) -> Result:
    a = ANALYTES[loinc]
    return Result(a, max(round(value, a.decimals), 0.0))


def cbc(rng: random.Random, male: bool, infection: bool) -> list[Result]:
    """A complete blood count whose indices agree (WS/T 405-2012): RBC, MCV and MCH
    are drawn; Hct = RBC x MCV / 10 (%), Hb = RBC x MCH (g/L), MCHC = Hb / Hct x 100 (g/L)."""
    rbc = round(rng.gauss(4.9 if male else 4.3, 0.35), 2)
    mcv = round(rng.gauss(90, 4), 1)
    mch = round(rng.gauss(30, 1.3), 1)
    hct = round(rbc * mcv / 10, 1)
    hb = round(rbc * mch)
    mchc = round(hb / hct * 100)
    wbc = rng.gauss(12.5, 2.5) if infection else rng.gauss(6.2, 1.3)
    return [_r(rng, "6690-2", wbc), _r(rng, "789-8", rbc), _r(rng, "718-7", hb), _r(rng, "4544-3", hct),
            _r(rng, "787-2", mcv), _r(rng, "785-6", mch), _r(rng, "786-4", mchc),
            _r(rng, "777-3", rng.gauss(230, 45))]


def panel(rng: random.Random, key: str, male: bool, dx: Diagnosis) -> list[Result]:
    infection = dx.icd10[0] in "JKN" and dx.icd10 not in ("K29.700",)
    if key == "cbc":
        return cbc(rng, male, infection)
    if key == "crp":
        return [_r(rng, "1988-5", rng.gauss(45, 15) if infection else rng.gauss(3, 1.5))]
    if key == "glucose":
        diabetic = dx.icd10.startswith("E11")
        return [_r(rng, "14749-6", rng.gauss(8.4, 1.5) if diabetic else rng.gauss(5.0, 0.5)),
                _r(rng, "4548-4", rng.gauss(7.6, 0.8) if diabetic else rng.gauss(5.3, 0.3))]
    if key == "bmp":
        return [_r(rng, "14682-9", rng.gauss(85 if male else 65, 12)), _r(rng, "22664-7", rng.gauss(5.2, 1.0)),
                _r(rng, "2823-3", rng.gauss(4.2, 0.3)), _r(rng, "2951-2", rng.gauss(141, 2))]
    if key == "lipid":
        ldl = rng.gauss(3.6, 0.6)
        hdl = rng.gauss(1.1 if male else 1.35, 0.2)
        tg = rng.gauss(1.7, 0.5)
        # Friedewald (mmol/L): TC = LDL + HDL + TG / 2.2, so the four agree.
        return [_r(rng, "14647-2", ldl + hdl + tg / 2.2), _r(rng, "14927-8", tg), _r(rng, "14646-4", hdl),
                _r(rng, "22748-8", ldl)]
    hepatic = dx.icd10.startswith("B18")
    return [_r(rng, "1742-6", rng.gauss(88, 20) if hepatic else rng.gauss(24, 8)),
            _r(rng, "1920-8", rng.gauss(70, 15) if hepatic else rng.gauss(22, 6)),
            _r(rng, "14631-6", rng.gauss(16, 5)), _r(rng, "1751-7", rng.gauss(43, 3))]


@dataclass(slots=True)
class Visit:
    """One event at one institution: the HIS's messages and documents are built from it."""

    setting: str  # OUTPATIENT / EMERGENCY / INPATIENT
    diagnosis: Diagnosis
    department: str
    start: datetime  # registration / admission (Beijing time)
    end: datetime  # visit end / discharge (== start for a visit in progress)
    number: str  # 门诊号 / 住院号 of this encounter
    doctor: str
    results: dict[str, list[Result]] = field(default_factory=dict)

    @property
    def days(self) -> int:
        return max((self.end.date() - self.start.date()).days, 1)


DOCTORS = "王建国 李秀英 张伟 刘洋 陈静 杨帆 赵敏 黄磊 周婷 吴刚 徐丽 孙强".split()


def diagnoses_for(org_type: str, inpatient: bool) -> list[Diagnosis]:
    """The diagnoses an institution of this type sees (a psychiatric hospital sees
    depression; a community centre no inpatients)."""
    for word, codes in SPECIALTY.items():
        if word in org_type:
            return [d for d in DIAGNOSES if d.icd10 in codes]
    if "中医" in org_type or not inpatient:
        return [d for d in DIAGNOSES if "O" in d.settings and d.icd10 not in ("B20.000", "F32.900")]
    return [d for d in DIAGNOSES if d.icd10 not in ("B20.000", "F32.900", "O80.000")]


def visit(rng: random.Random, dx: Diagnosis, setting: str, now: datetime, male: bool, serial: str) -> Visit:
    """A visit of ``dx`` ending about ``now``; an inpatient stay is admitted days before it is discharged."""
    if setting == EMERGENCY:
        dept = "急诊医学科"
    else:
        depts = [d for d in dx.departments if d != "急诊医学科"] or list(dx.departments)
        dept = rng.choice(depts)
    if setting == INPATIENT:
        start = now - timedelta(days=rng.randint(3, 12), hours=rng.randint(0, 10))
        number = f"ZY{serial}"
    else:
        start = now - timedelta(minutes=rng.randint(20, 150))
        number = f"{'JZ' if setting == EMERGENCY else 'MZ'}{serial}"
    v = Visit(setting, dx, dept, start, now, number, rng.choice(DOCTORS))
    for key in dx.panels:
        v.results[key] = panel(rng, key, male, dx)
    return v
