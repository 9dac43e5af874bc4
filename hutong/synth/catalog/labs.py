"""Laboratory panels (检验) and their analytes: LOINC codes, UCUM units, reference ranges.

LOINC codes are the SI (moles/volume) variants Chinese laboratories report in
(e.g. 14647-2 total cholesterol in mmol/L, not 2093-3 in mg/dL); Chinese
names are the ones printed on 检验报告单.  Reference intervals are the adult
national ones: WS/T 405-2012 《血细胞分析参考区间》 (CBC), WS/T 404.1-.5 《临床常用
生化检验项目参考区间》 (liver and renal function), 《中国成人血脂异常防治指南
(2016年修订版)》 (lipids), WHO/中国2型糖尿病防治指南 (glucose, HbA1c).

``states`` shift an analyte's distribution for residents in a clinical state
(a diabetic's fasting glucose, a pneumonia's white count) so that abnormal
flags come out at realistic rates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LOINC_SYSTEM = "http://loinc.org"
UCUM_SYSTEM = "http://unitsofmeasure.org"


@dataclass(frozen=True, slots=True)
class Analyte:
    key: str
    loinc: str
    name: str
    unit: str  # UCUM code
    unit_display: str
    male: tuple[float | None, float | None]  # reference low, high (None = open)
    female: tuple[float | None, float | None]
    mean: tuple[float, float]  # (male, female) population mean
    sd: float
    decimals: int
    states: tuple[tuple[str, float, float], ...] = ()  # (state, mean, sd)
    qualitative: bool = False  # dipstick: 阴性/阳性 grades; ``mean`` is then the chance of a positive
    concept: dict[str, Any] = field(init=False, compare=False, repr=False)
    ranges: tuple[list[dict[str, Any]], list[dict[str, Any]]] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "concept", {
            "coding": [{"system": LOINC_SYSTEM, "code": self.loinc, "display": self.name}], "text": self.name,
        })
        object.__setattr__(self, "ranges", (self._range(self.male), self._range(self.female)))

    def _range(self, lh: tuple[float | None, float | None]) -> list[dict[str, Any]]:
        if self.qualitative:
            return [{"text": "阴性"}]
        rr: dict[str, Any] = {}
        low, high = lh
        if low is not None:
            rr["low"] = self.quantity(low)
        if high is not None:
            rr["high"] = self.quantity(high)
        rr["text"] = _range_text(low, high, self.unit_display)
        return [rr]

    def quantity(self, value: float) -> dict[str, Any]:
        q: dict[str, Any] = {"value": value}
        if self.unit_display:  # dimensionless results (specific gravity) print no unit
            q["unit"] = self.unit_display
        q["system"] = UCUM_SYSTEM
        q["code"] = self.unit
        return q


def _fmt(x: float) -> str:
    return f"{x:g}"


def _range_text(low: float | None, high: float | None, unit: str) -> str:
    if low is not None and high is not None:
        text = f"{_fmt(low)}-{_fmt(high)}"
    elif high is not None:
        text = f"<{_fmt(high)}"
    else:
        text = f">={_fmt(low or 0)}"
    return f"{text} {unit}" if unit else text


def _a(key: str, loinc: str, name: str, unit: str, disp: str, male: tuple[float | None, float | None],
       female: tuple[float | None, float | None] | None, mean: tuple[float, float], sd: float, decimals: int,
       *states: tuple[str, float, float], qualitative: bool = False) -> Analyte:
    return Analyte(key, loinc, name, unit, disp, male, female or male, mean, sd, decimals, tuple(states), qualitative)


ANALYTES: dict[str, Analyte] = {a.key: a for a in (
    # 血常规 (WS/T 405-2012)
    _a("wbc", "6690-2", "白细胞计数", "10*9/L", "×10^9/L", (3.5, 9.5), None, (6.2, 6.0), 1.5, 2,
       ("infection", 13.0, 3.5)),
    _a("rbc", "789-8", "红细胞计数", "10*12/L", "×10^12/L", (4.3, 5.8), (3.8, 5.1), (5.0, 4.4), 0.35, 2,
       ("pregnant", 3.9, 0.35)),
    _a("hgb", "718-7", "血红蛋白", "g/L", "g/L", (130, 175), (115, 150), (150, 131), 11, 0,
       ("pregnant", 112, 11), ("ckd", 108, 14)),
    _a("hct", "4544-3", "红细胞压积", "%", "%", (40, 50), (35, 45), (45, 40), 3, 1, ("pregnant", 34.5, 3)),
    _a("mcv", "787-2", "平均红细胞体积", "fL", "fL", (82, 100), None, (90, 89), 5, 1),
    _a("mch", "785-6", "平均红细胞血红蛋白含量", "pg", "pg", (27, 34), None, (30.5, 30), 1.8, 1),
    _a("mchc", "786-4", "平均红细胞血红蛋白浓度", "g/L", "g/L", (316, 354), None, (336, 334), 10, 0),
    _a("plt", "777-3", "血小板计数", "10*9/L", "×10^9/L", (125, 350), None, (230, 240), 55, 0),
    _a("neut", "770-8", "中性粒细胞百分比", "%", "%", (40, 75), None, (58, 58), 8, 1, ("infection", 82, 6)),
    _a("lymph", "736-9", "淋巴细胞百分比", "%", "%", (20, 50), None, (32, 32), 7, 1, ("infection", 12, 5)),
    # 肝功能 (WS/T 404.1-.4)
    _a("alt", "1742-6", "丙氨酸氨基转移酶", "U/L", "U/L", (9, 50), (7, 40), (26, 19), 11, 0, ("fatty-liver", 62, 22)),
    _a("ast", "1920-8", "天门冬氨酸氨基转移酶", "U/L", "U/L", (15, 40), (13, 35), (24, 21), 7, 0, ("fatty-liver", 42, 14)),
    _a("alp", "6768-6", "碱性磷酸酶", "U/L", "U/L", (45, 125), (35, 100), (78, 66), 20, 0),
    _a("ggt", "2324-2", "γ-谷氨酰转移酶", "U/L", "U/L", (10, 60), (7, 45), (30, 20), 14, 0, ("fatty-liver", 75, 30)),
    _a("tbil", "14631-6", "总胆红素", "umol/L", "μmol/L", (0, 26), (0, 21), (12, 10), 4, 1),
    _a("dbil", "14629-0", "直接胆红素", "umol/L", "μmol/L", (0, 8), None, (3.5, 3.0), 1.4, 1),
    _a("tp", "2885-2", "总蛋白", "g/L", "g/L", (65, 85), None, (72, 71), 4, 1),
    _a("alb", "1751-7", "白蛋白", "g/L", "g/L", (40, 55), None, (46, 44), 3, 1, ("ckd", 37, 4)),
    # 肾功能 (WS/T 404.5)
    _a("urea", "14937-7", "尿素", "mmol/L", "mmol/L", (3.1, 8.0), (2.6, 7.5), (5.4, 4.8), 1.2, 2, ("ckd", 13, 4)),
    _a("crea", "14682-9", "肌酐", "umol/L", "μmol/L", (57, 111), (41, 81), (80, 60), 12, 0, ("ckd", 190, 60)),
    _a("ua", "14933-6", "尿酸", "umol/L", "μmol/L", (208, 428), (155, 357), (340, 260), 70, 0),
    _a("egfr", "62238-1", "估算肾小球滤过率(CKD-EPI)", "mL/min/{1.73_m2}", "mL/min/1.73m²", (90, None), None,
       (100, 100), 15, 0),
    # 血脂 (2016 guideline: desirable levels)
    _a("tc", "14647-2", "总胆固醇", "mmol/L", "mmol/L", (None, 5.2), None, (4.7, 4.8), 0.8, 2,
       ("dyslipidaemia", 6.2, 0.8)),
    _a("tg", "14927-8", "甘油三酯", "mmol/L", "mmol/L", (None, 1.7), None, (1.5, 1.2), 0.7, 2,
       ("dyslipidaemia", 2.6, 1.0), ("diabetic", 2.1, 0.9)),
    _a("hdl", "14646-4", "高密度脂蛋白胆固醇", "mmol/L", "mmol/L", (1.0, None), None, (1.2, 1.4), 0.28, 2,
       ("dyslipidaemia", 0.95, 0.2)),
    _a("ldl", "22748-8", "低密度脂蛋白胆固醇", "mmol/L", "mmol/L", (None, 3.4), None, (2.9, 2.9), 0.7, 2,
       ("dyslipidaemia", 4.1, 0.7)),
    # 血糖 / HbA1c
    _a("glu", "14771-0", "空腹血糖", "mmol/L", "mmol/L", (3.9, 6.1), None, (5.2, 5.1), 0.55, 2,
       ("diabetic", 8.4, 2.2), ("pregnant", 4.7, 0.5)),
    _a("hba1c", "4548-4", "糖化血红蛋白", "%", "%", (4.0, 6.0), None, (5.4, 5.4), 0.35, 1, ("diabetic", 7.6, 1.2)),
    # 炎症
    _a("crp", "1988-5", "C反应蛋白", "mg/L", "mg/L", (0, 10), None, (3, 3), 2.5, 1, ("infection", 48, 30)),
    # HIV monitoring
    _a("cd4", "24467-3", "CD4+T淋巴细胞计数", "/uL", "个/μL", (500, 1600), None, (850, 900), 220, 0,
       ("hiv", 430, 190)),
    _a("hiv-vl", "25836-8", "HIV-1 RNA病毒载量", "{copies}/mL", "copies/mL", (None, 20), None, (0, 0), 0, 0,
       ("hiv", 2000, 9000)),
    # 尿常规 (dipstick)
    _a("u-ph", "5803-2", "尿酸碱度", "[pH]", "pH", (4.5, 8.0), None, (6.0, 6.0), 0.6, 1),
    _a("u-sg", "5811-5", "尿比重", "1", "", (1.003, 1.030), None, (1.018, 1.018), 0.006, 3),
    _a("u-pro", "20454-5", "尿蛋白", "", "", (None, None), None, (0.03, 0.03), 0, 0, ("ckd", 0.7, 0),
       qualitative=True),
    _a("u-glu", "25428-4", "尿葡萄糖", "", "", (None, None), None, (0.01, 0.01), 0, 0, ("diabetic", 0.3, 0),
       qualitative=True),
    _a("u-ket", "2514-8", "尿酮体", "", "", (None, None), None, (0.02, 0.02), 0, 0, qualitative=True),
    _a("u-bld", "5794-3", "尿隐血", "", "", (None, None), None, (0.04, 0.08), 0, 0, qualitative=True),
    _a("u-leu", "5799-2", "尿白细胞酯酶", "", "", (None, None), None, (0.04, 0.10), 0, 0, qualitative=True),
    _a("u-nit", "5802-4", "尿亚硝酸盐", "", "", (None, None), None, (0.02, 0.04), 0, 0, qualitative=True),
)}


@dataclass(frozen=True, slots=True)
class Panel:
    key: str
    loinc: str
    name: str
    analytes: tuple[Analyte, ...]
    specimen: str  # 中文
    security: str | None = None
    concept: dict[str, Any] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "concept", {
            "coding": [{"system": LOINC_SYSTEM, "code": self.loinc, "display": self.name}], "text": self.name,
        })


def _p(key: str, loinc: str, name: str, keys: str, specimen: str = "静脉血", security: str | None = None) -> Panel:
    return Panel(key, loinc, name, tuple(ANALYTES[k] for k in keys.split()), specimen, security)


PANELS: dict[str, Panel] = {p.key: p for p in (
    _p("cbc", "58410-2", "血常规", "wbc rbc hgb hct mcv mch mchc plt neut lymph"),
    _p("lft", "24325-3", "肝功能", "alt ast alp ggt tbil dbil tp alb"),
    _p("rft", "24362-6", "肾功能", "urea crea ua egfr"),
    _p("lipid", "57698-3", "血脂四项", "tc tg hdl ldl"),
    _p("glu", "14771-0", "空腹血糖", "glu"),
    _p("hba1c", "4548-4", "糖化血红蛋白", "hba1c"),
    _p("ua", "24356-8", "尿常规", "u-ph u-sg u-pro u-glu u-ket u-bld u-leu u-nit", specimen="尿液"),
    _p("crp", "1988-5", "C反应蛋白", "crp"),
    _p("cd4", "24467-3", "CD4+T淋巴细胞计数", "cd4", security="HIV"),
    _p("hiv-vl", "25836-8", "HIV-1病毒载量", "hiv-vl", security="HIV"),
)}
