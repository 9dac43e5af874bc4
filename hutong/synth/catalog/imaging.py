"""Imaging examinations (检查): modality, body site, and name.

Modality codes are DICOM PS3.16 CID 29 (http://dicom.nema.org/resources/ontology/DCM);
body sites are SNOMED CT body structures; exam codes are Hutong's own, with
the Chinese names used on 检查报告.  Exams of these modalities are what
国卫医发〔2022〕6号 lists for mutual recognition (超声, X线, CT, MR ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hutong.systems import CODESYSTEM_BASE

DICOM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
SNOMED_SYSTEM = "http://snomed.info/sct"
EXAM_SYSTEM = CODESYSTEM_BASE + "imaging-exam"

MODALITIES: dict[str, str] = {
    "DX": "Digital Radiography", "CT": "Computed Tomography", "MR": "Magnetic Resonance", "US": "Ultrasound",
}


@dataclass(frozen=True, slots=True)
class Exam:
    key: str
    name: str
    modality: str
    site_code: str  # SNOMED CT
    site_name: str  # 中文
    series: int
    images: int  # per series
    security: str | None = None
    concept: dict[str, Any] = field(init=False, compare=False, repr=False)
    modality_coding: dict[str, Any] = field(init=False, compare=False, repr=False)
    site_coding: dict[str, Any] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "concept", {
            "coding": [{"system": EXAM_SYSTEM, "code": self.key, "display": self.name}], "text": self.name,
        })
        object.__setattr__(self, "modality_coding", {
            "system": DICOM_SYSTEM, "code": self.modality, "display": MODALITIES[self.modality],
        })
        object.__setattr__(self, "site_coding", {
            "system": SNOMED_SYSTEM, "code": self.site_code, "display": self.site_name,
        })


EXAMS: dict[str, Exam] = {e.key: e for e in (
    Exam("dx-chest", "胸部正位片", "DX", "51185008", "胸部", 1, 1),
    Exam("dx-wrist", "腕关节正侧位片", "DX", "8205005", "腕部", 1, 2),
    Exam("dx-hip", "髋关节正位片", "DX", "24136001", "髋关节", 1, 1),
    Exam("dx-lumbar", "腰椎正侧位片", "DX", "122496007", "腰椎", 1, 2),
    Exam("ct-chest", "胸部CT平扫", "CT", "51185008", "胸部", 2, 180),
    Exam("ct-head", "头颅CT平扫", "CT", "69536005", "头部", 2, 60),
    Exam("ct-abdomen", "上腹部CT平扫", "CT", "818983003", "腹部", 2, 150),
    Exam("cta-coronary", "冠状动脉CT血管成像", "CT", "80891009", "心脏", 3, 300),
    Exam("mr-head", "头颅MR平扫", "MR", "69536005", "头部", 5, 24),
    Exam("mr-lumbar", "腰椎MR平扫", "MR", "122496007", "腰椎", 4, 18),
    Exam("mr-knee", "膝关节MR平扫", "MR", "72696002", "膝关节", 4, 20),
    Exam("us-abdomen", "腹部彩色多普勒超声", "US", "818983003", "腹部", 1, 8),
    Exam("us-heart", "超声心动图", "US", "80891009", "心脏", 1, 12),
    Exam("us-thyroid", "甲状腺彩色多普勒超声", "US", "69748006", "甲状腺", 1, 6),
    Exam("us-breast", "乳腺彩色多普勒超声", "US", "76752008", "乳腺", 1, 6),
    Exam("dx-knee", "膝关节正侧位片", "DX", "72696002", "膝关节", 1, 2),
    Exam("us-obstetric", "产科超声", "US", "35039007", "子宫", 1, 10, security="SEX"),
    Exam("us-gyn", "妇科超声", "US", "12921003", "盆腔", 1, 6, security="SEX"),
)}
