"""Drugs prescribed in the synthetic region, with ATC codes and antibiotic tiers.

ATC codes: WHO Collaborating Centre for Drug Statistics Methodology, ATC/DDD
Index.  Antibiotic tiers (抗菌药物分级): 《抗菌药物临床应用管理办法》 (卫生部令
第84号, 2012) defines 非限制使用级 / 限制使用级 / 特殊使用级; which drug sits in
which tier is set by each province's catalogue (here modelled on the Beijing
and national examples, e.g. 国卫办医发〔2015〕43号 附件); treat the tiers as
configurable defaults, not rules.  Special-tier drugs are inpatient-only and
need a 副主任医师 or above (§24-§28).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hutong.systems import ANTIBIOTIC_TIER_SYSTEM, CODESYSTEM_BASE

ATC_SYSTEM = "http://www.whocc.no/atc"
DRUG_SYSTEM = CODESYSTEM_BASE + "drug"
TIER_SYSTEM = ANTIBIOTIC_TIER_SYSTEM

# Tier number -> (code, 中文); 0 means "not an antibiotic".
TIERS: dict[int, tuple[str, str]] = {
    1: ("non-restricted", "非限制使用级"),
    2: ("restricted", "限制使用级"),
    3: ("special", "特殊使用级"),
}


@dataclass(frozen=True, slots=True)
class Drug:
    key: str
    name: str  # 通用名 with strength
    atc: str
    route: str  # 中文 route: 口服 / 静脉滴注 / 吸入 / 皮下注射 / 肌内注射
    dose: float
    unit: str  # UCUM
    unit_display: str
    per_day: int
    days: int  # supply per prescription
    tier: int = 0  # antibiotic tier, 0 = not an antibiotic
    concept: dict[str, Any] = field(init=False, compare=False, repr=False)
    dosage: list[dict[str, Any]] = field(init=False, compare=False, repr=False)
    dispense: dict[str, Any] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        coding: list[dict[str, str]] = [{"system": DRUG_SYSTEM, "code": self.key, "display": self.name}]
        if self.atc:  # herbal decoctions have no ATC code
            coding.append({"system": ATC_SYSTEM, "code": self.atc})
        object.__setattr__(self, "concept", {"coding": coding, "text": self.name})
        freq = {1: "每日一次", 2: "每日两次", 3: "每日三次", 4: "每日四次"}[self.per_day]
        dose_text = f"{self.dose:g}{self.unit_display}"
        object.__setattr__(self, "dispense", {"expectedSupplyDuration": {
            "value": self.days, "unit": "天", "system": "http://unitsofmeasure.org", "code": "d"}})
        object.__setattr__(self, "dosage", [{
            "text": f"{self.route} {dose_text} {freq}",
            "timing": {"repeat": {"frequency": self.per_day, "period": 1, "periodUnit": "d"}},
            "route": {"text": self.route},
            "doseAndRate": [{"doseQuantity": {"value": self.dose, "unit": self.unit_display,
                                              "system": "http://unitsofmeasure.org", "code": self.unit}}],
        }])


def _d(key: str, name: str, atc: str, route: str, dose: float, unit: str, per_day: int, days: int,
       tier: int = 0, unit_display: str | None = None) -> Drug:
    return Drug(key, name, atc, route, dose, unit, unit_display or unit, per_day, days, tier)


DRUGS: dict[str, Drug] = {d.key: d for d in (
    # cardiovascular / metabolic (chronic refills at community centres)
    _d("amlodipine", "苯磺酸氨氯地平片 5mg", "C08CA01", "口服", 5, "mg", 1, 30),
    _d("nifedipine", "硝苯地平控释片 30mg", "C08CA05", "口服", 30, "mg", 1, 30),
    _d("irbesartan", "厄贝沙坦片 150mg", "C09CA04", "口服", 150, "mg", 1, 30),
    _d("valsartan", "缬沙坦胶囊 80mg", "C09CA03", "口服", 80, "mg", 1, 30),
    _d("metoprolol", "酒石酸美托洛尔片 25mg", "C07AB02", "口服", 25, "mg", 2, 30),
    _d("metformin", "盐酸二甲双胍片 0.5g", "A10BA02", "口服", 0.5, "g", 3, 30),
    _d("acarbose", "阿卡波糖片 50mg", "A10BF01", "口服", 50, "mg", 3, 30),
    _d("glimepiride", "格列美脲片 2mg", "A10BB12", "口服", 2, "mg", 1, 30),
    _d("glargine", "甘精胰岛素注射液", "A10AE04", "皮下注射", 12, "[iU]", 1, 30, unit_display="U"),
    _d("atorvastatin", "阿托伐他汀钙片 20mg", "C10AA05", "口服", 20, "mg", 1, 30),
    _d("rosuvastatin", "瑞舒伐他汀钙片 10mg", "C10AA07", "口服", 10, "mg", 1, 30),
    _d("aspirin", "阿司匹林肠溶片 100mg", "B01AC06", "口服", 100, "mg", 1, 30),
    _d("clopidogrel", "硫酸氢氯吡格雷片 75mg", "B01AC04", "口服", 75, "mg", 1, 30),
    _d("nitroglycerin", "硝酸甘油片 0.5mg", "C01DA02", "舌下含服", 0.5, "mg", 1, 7),
    # respiratory
    _d("salmeterol-fluticasone", "沙美特罗替卡松粉吸入剂 50/250μg", "R03AK06", "吸入", 1, "{puff}", 2, 30, unit_display="吸"),
    _d("tiotropium", "噻托溴铵粉吸入剂 18μg", "R03BB04", "吸入", 18, "ug", 1, 30, unit_display="μg"),
    _d("salbutamol", "硫酸沙丁胺醇吸入气雾剂 100μg", "R03AC02", "吸入", 200, "ug", 2, 14, unit_display="μg"),
    _d("ambroxol", "盐酸氨溴索片 30mg", "R05CB06", "口服", 30, "mg", 3, 5),
    # symptomatic / GI
    _d("paracetamol", "对乙酰氨基酚片 0.5g", "N02BE01", "口服", 0.5, "g", 3, 3),
    _d("ibuprofen", "布洛芬缓释胶囊 0.3g", "M01AE01", "口服", 0.3, "g", 2, 5),
    _d("omeprazole", "奥美拉唑肠溶胶囊 20mg", "A02BC01", "口服", 20, "mg", 2, 14),
    _d("entecavir", "恩替卡韦片 0.5mg", "J05AF10", "口服", 0.5, "mg", 1, 90),
    _d("calcium-vitd", "碳酸钙D3片 600mg", "A12AX", "口服", 600, "mg", 1, 30),
    _d("folic-acid", "叶酸片 0.4mg", "B03BB01", "口服", 0.4, "mg", 1, 30),
    _d("ferrous", "琥珀酸亚铁片 0.1g", "B03AA06", "口服", 0.1, "g", 2, 30),
    _d("oxytocin", "缩宫素注射液 10U", "H01BB02", "肌内注射", 10, "[iU]", 1, 1, unit_display="U"),
    _d("levonorgestrel", "左炔诺孕酮片 1.5mg", "G03AD01", "口服", 1.5, "mg", 1, 1),
    _d("tcm-decoction", "中药饮片（汤剂）", "", "口服", 1, "{dose}", 1, 7, unit_display="剂"),
    _d("furosemide", "呋塞米片 20mg", "C03CA01", "口服", 20, "mg", 1, 14),
    _d("spironolactone", "螺内酯片 20mg", "C03DA01", "口服", 20, "mg", 1, 30),
    # oncology (化疗 regimens are given per cycle in admissions)
    _d("oxaliplatin", "注射用奥沙利铂 100mg", "L01XA03", "静脉滴注", 130, "mg", 1, 1),
    _d("capecitabine", "卡培他滨片 0.5g", "L01BC06", "口服", 1.5, "g", 2, 14),
    _d("paclitaxel", "紫杉醇注射液 30mg", "L01CD01", "静脉滴注", 175, "mg", 1, 1),
    _d("cisplatin", "注射用顺铂 20mg", "L01XA01", "静脉滴注", 75, "mg", 1, 1),
    _d("pemetrexed", "注射用培美曲塞二钠 0.5g", "L01BA04", "静脉滴注", 0.5, "g", 1, 1),
    _d("docetaxel", "多西他赛注射液 20mg", "L01CD02", "静脉滴注", 75, "mg", 1, 1),
    _d("ondansetron", "盐酸昂丹司琼注射液 8mg", "A04AA01", "静脉滴注", 8, "mg", 2, 3),
    # psychiatry (PSY)
    _d("sertraline", "盐酸舍曲林片 50mg", "N06AB06", "口服", 50, "mg", 1, 30),
    _d("escitalopram", "草酸艾司西酞普兰片 10mg", "N06AB10", "口服", 10, "mg", 1, 30),
    _d("olanzapine", "奥氮平片 10mg", "N05AH03", "口服", 10, "mg", 1, 30),
    _d("risperidone", "利培酮片 2mg", "N05AX08", "口服", 2, "mg", 2, 30),
    _d("lithium", "碳酸锂缓释片 0.3g", "N05AN01", "口服", 0.3, "g", 2, 30),
    _d("zolpidem", "酒石酸唑吡坦片 10mg", "N05CF02", "口服", 10, "mg", 1, 14),
    # HIV antiretrovirals (HIV) - national free ART regimen TDF+3TC+EFV
    _d("tenofovir", "富马酸替诺福韦二吡呋酯片 300mg", "J05AF07", "口服", 300, "mg", 1, 90),
    _d("lamivudine", "拉米夫定片 300mg", "J05AF05", "口服", 300, "mg", 1, 90),
    _d("efavirenz", "依非韦伦片 400mg", "J05AG03", "口服", 400, "mg", 1, 90),
    _d("dolutegravir", "多替拉韦钠片 50mg", "J05AJ03", "口服", 50, "mg", 1, 90),
    # antibiotics, tier 1 非限制使用级
    _d("amoxicillin", "阿莫西林胶囊 0.5g", "J01CA04", "口服", 0.5, "g", 3, 5, tier=1),
    _d("cefuroxime-po", "头孢呋辛酯片 0.25g", "J01DC02", "口服", 0.25, "g", 2, 5, tier=1),
    _d("azithromycin", "阿奇霉素片 0.25g", "J01FA10", "口服", 0.5, "g", 1, 3, tier=1),
    _d("cefazolin", "注射用头孢唑林钠 1g", "J01DB04", "静脉滴注", 1, "g", 3, 3, tier=1),
    _d("metronidazole", "甲硝唑片 0.2g", "J01XD01", "口服", 0.4, "g", 3, 7, tier=1),
    # tier 2 限制使用级
    _d("levofloxacin", "左氧氟沙星片 0.5g", "J01MA12", "口服", 0.5, "g", 1, 7, tier=2),
    _d("moxifloxacin", "盐酸莫西沙星注射液 0.4g", "J01MA14", "静脉滴注", 0.4, "g", 1, 7, tier=2),
    _d("ceftriaxone", "注射用头孢曲松钠 2g", "J01DD04", "静脉滴注", 2, "g", 1, 7, tier=2),
    _d("pip-tazo", "注射用哌拉西林钠他唑巴坦钠 4.5g", "J01CR05", "静脉滴注", 4.5, "g", 3, 7, tier=2),
    _d("cefoperazone-sulbactam", "注射用头孢哌酮钠舒巴坦钠 3g", "J01DD62", "静脉滴注", 3, "g", 2, 7, tier=2),
    # tier 3 特殊使用级
    _d("meropenem", "注射用美罗培南 1g", "J01DH02", "静脉滴注", 1, "g", 3, 7, tier=3),
    _d("imipenem", "注射用亚胺培南西司他丁钠 1g", "J01DH51", "静脉滴注", 1, "g", 3, 7, tier=3),
    _d("vancomycin", "注射用盐酸万古霉素 0.5g", "J01XA01", "静脉滴注", 1, "g", 2, 7, tier=3),
    _d("linezolid", "利奈唑胺注射液 0.6g", "J01XX08", "静脉滴注", 0.6, "g", 2, 7, tier=3),
    _d("tigecycline", "注射用替加环素 50mg", "J01AA12", "静脉滴注", 50, "mg", 2, 7, tier=3),
)}
