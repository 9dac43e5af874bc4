"""Diagnoses, coded in ICD-10 with Chinese names.

Codes are WHO ICD-10 (2019) at the level Chinese hospitals report them (the
national clinical edition 国家临床版 2.0 adds 3-digit extensions such as
I10.x00, which we leave off); Chinese names follow GB/T 14396-2016 《疾病分类
与代码》.  ``security`` is the HL7 v3 ActCode sensitivity the record carries:
PSY (psychiatry), HIV, SEX (sexuality and reproductive health), so that
consent masking (PIPL Art. 28-29 sensitive personal information) can be shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ICD10_SYSTEM = "http://hl7.org/fhir/sid/icd-10"


@dataclass(frozen=True, slots=True)
class Diagnosis:
    key: str
    icd10: str
    name: str
    chronic: bool = False
    security: str | None = None
    concept: dict[str, Any] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "concept", {
            "coding": [{"system": ICD10_SYSTEM, "code": self.icd10, "display": self.name}], "text": self.name,
        })


DIAGNOSES: dict[str, Diagnosis] = {d.key: d for d in (
    # chronic disease management (慢病管理)
    Diagnosis("hypertension", "I10", "原发性高血压", chronic=True),
    Diagnosis("t2dm", "E11.9", "2型糖尿病", chronic=True),
    Diagnosis("hyperlipidaemia", "E78.5", "高脂血症", chronic=True),
    Diagnosis("copd", "J44.9", "慢性阻塞性肺疾病", chronic=True),
    Diagnosis("chd", "I25.1", "动脉粥样硬化性心脏病", chronic=True),
    Diagnosis("asthma", "J45.9", "支气管哮喘", chronic=True),
    Diagnosis("ckd", "N18.9", "慢性肾脏病", chronic=True),
    # acute
    Diagnosis("urti", "J06.9", "急性上呼吸道感染"),
    Diagnosis("bronchitis", "J20.9", "急性支气管炎"),
    Diagnosis("pneumonia", "J18.9", "肺炎"),
    Diagnosis("gastritis", "K29.7", "胃炎"),
    Diagnosis("gastroenteritis", "K52.9", "非感染性胃肠炎"),
    Diagnosis("appendicitis", "K35.8", "急性阑尾炎"),
    Diagnosis("gallstones", "K80.2", "胆囊结石"),
    Diagnosis("wrist-fracture", "S52.5", "桡骨下端骨折"),
    Diagnosis("hip-fracture", "S72.0", "股骨颈骨折"),
    Diagnosis("back-pain", "M54.5", "腰痛"),
    Diagnosis("cataract", "H25.9", "老年性白内障"),
    Diagnosis("stroke", "I63.9", "脑梗死"),
    Diagnosis("angina", "I20.0", "不稳定型心绞痛"),
    Diagnosis("dermatitis", "L30.9", "皮炎"),
    Diagnosis("insomnia", "G47.0", "失眠"),
    Diagnosis("copd-exacerbation", "J44.1", "慢性阻塞性肺疾病伴有急性加重"),
    Diagnosis("heart-failure", "I50.9", "心力衰竭"),
    Diagnosis("ami", "I21.9", "急性心肌梗死"),
    Diagnosis("sepsis", "A41.9", "脓毒症"),
    Diagnosis("hepatitis-b", "B18.1", "慢性乙型病毒性肝炎", chronic=True),
    # emergency presentations (symptoms, ICD-10 chapter XVIII) and injuries
    Diagnosis("fever", "R50.9", "发热"),
    Diagnosis("abdominal-pain", "R10.4", "腹痛"),
    Diagnosis("chest-pain", "R07.4", "胸痛"),
    Diagnosis("dizziness", "R42", "头晕"),
    Diagnosis("head-injury", "S09.9", "头部损伤"),
    Diagnosis("hand-wound", "S61.9", "腕和手开放性伤口"),
    Diagnosis("urticaria", "L50.9", "荨麻疹"),
    # elective surgery
    Diagnosis("hernia", "K40.9", "腹股沟疝"),
    Diagnosis("thyroid-nodule", "E04.1", "甲状腺单个结节"),
    Diagnosis("fibroid", "D25.9", "子宫平滑肌瘤"),
    Diagnosis("bph", "N40", "前列腺增生"),
    Diagnosis("knee-oa", "M17.9", "膝关节病"),
    Diagnosis("disc-herniation", "M51.2", "腰椎间盘突出"),
    # cancer (ICD-10 chapter II) and its treatment
    Diagnosis("lung-cancer", "C34.9", "支气管或肺恶性肿瘤", chronic=True),
    Diagnosis("colorectal-cancer", "C18.9", "结肠恶性肿瘤", chronic=True),
    Diagnosis("stomach-cancer", "C16.9", "胃恶性肿瘤", chronic=True),
    Diagnosis("liver-cancer", "C22.0", "肝细胞癌", chronic=True),
    Diagnosis("breast-cancer", "C50.9", "乳房恶性肿瘤", chronic=True),
    Diagnosis("chemotherapy", "Z51.1", "为肿瘤化学治疗疗程"),
    # prevention
    Diagnosis("checkup", "Z00.0", "一般医学检查"),
    Diagnosis("well-child", "Z00.1", "常规儿童健康检查"),
    # reproductive health (SEX)
    Diagnosis("pregnancy", "Z34.9", "正常妊娠监督", security="SEX"),
    Diagnosis("delivery", "O80.0", "头位顺产", security="SEX"),
    Diagnosis("caesarean", "O82.0", "选择性剖宫产", security="SEX"),
    Diagnosis("contraception", "Z30.0", "避孕的一般咨询和指导", security="SEX"),
    Diagnosis("infertility", "N97.9", "女性不孕症", security="SEX"),
    Diagnosis("syphilis", "A53.9", "梅毒", security="SEX"),
    # psychiatry (PSY)
    Diagnosis("depression", "F32.9", "抑郁发作", chronic=True, security="PSY"),
    Diagnosis("anxiety", "F41.1", "广泛性焦虑障碍", chronic=True, security="PSY"),
    Diagnosis("schizophrenia", "F20.9", "精神分裂症", chronic=True, security="PSY"),
    Diagnosis("bipolar", "F31.9", "双相情感障碍", chronic=True, security="PSY"),
    # HIV
    Diagnosis("hiv", "B24", "人类免疫缺陷病毒病", chronic=True, security="HIV"),
    Diagnosis("hiv-asymptomatic", "Z21", "无症状的人类免疫缺陷病毒感染状态", chronic=True, security="HIV"),
)}
