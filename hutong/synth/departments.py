"""Clinical departments (科室), coded by the 医疗机构诊疗科目名录.

Codes and names follow the 诊疗科目名录 attached to 《医疗机构管理条例实施细则》
(卫医发〔1994〕第27号, as amended): two digits for a 科目, ``.NN`` for a 专业.
Institutions register the 科目 they may practise; the generator gives each
institution the departments its level and type would have.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hutong.systems import CODESYSTEM_BASE

DEPARTMENT_SYSTEM = CODESYSTEM_BASE + "department"


@dataclass(frozen=True, slots=True)
class Department:
    code: str
    name: str
    surgical: bool = False  # its physicians hold surgery grades (手术分级)
    concept: dict[str, Any] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "concept", {
            "coding": [{"system": DEPARTMENT_SYSTEM, "code": self.code, "display": self.name}], "text": self.name,
        })


GENERAL_PRACTICE = Department("02", "全科医疗科")
PREVENTIVE = Department("01", "预防保健科")
INTERNAL = Department("03", "内科")
RESPIRATORY = Department("03.01", "呼吸内科专业")
GASTRO = Department("03.02", "消化内科专业")
NEUROLOGY = Department("03.03", "神经内科专业")
CARDIOLOGY = Department("03.04", "心血管内科专业")
NEPHROLOGY = Department("03.06", "肾病学专业")
ENDOCRINOLOGY = Department("03.07", "内分泌专业")
GERIATRICS = Department("03.10", "老年病专业")
SURGERY = Department("04", "外科", surgical=True)
GENERAL_SURGERY = Department("04.01", "普通外科专业", surgical=True)
ORTHOPAEDICS = Department("04.03", "骨科专业", surgical=True)
UROLOGY = Department("04.04", "泌尿外科专业", surgical=True)
GYNAECOLOGY = Department("05.01", "妇科专业", surgical=True)
OBSTETRICS = Department("05.02", "产科专业", surgical=True)
FAMILY_PLANNING = Department("05.03", "计划生育专业", surgical=True)
REPRODUCTIVE = Department("05.05", "生殖健康与不孕症专业")
PAEDIATRICS = Department("07", "儿科")
CHILD_HEALTH = Department("09", "儿童保健科")
OPHTHALMOLOGY = Department("10", "眼科", surgical=True)
DERMATOLOGY = Department("13", "皮肤科")
PSYCHIATRY = Department("15", "精神科")
ONCOLOGY = Department("19", "肿瘤科")
INFECTIOUS = Department("16", "传染科")
EMERGENCY = Department("20", "急诊医学科")
LABORATORY = Department("30", "医学检验科")
RADIOLOGY = Department("32", "医学影像科")
TCM = Department("50", "中医科")

# Departments by the institution archetype that staffs them.
GENERAL_HOSPITAL: tuple[Department, ...] = (
    INTERNAL, RESPIRATORY, GASTRO, NEUROLOGY, CARDIOLOGY, NEPHROLOGY, ENDOCRINOLOGY, GERIATRICS,
    GENERAL_SURGERY, ORTHOPAEDICS, UROLOGY, GYNAECOLOGY, OBSTETRICS, PAEDIATRICS, OPHTHALMOLOGY, DERMATOLOGY,
    PSYCHIATRY, INFECTIOUS, ONCOLOGY, EMERGENCY, TCM,
)
SMALL_HOSPITAL: tuple[Department, ...] = (
    INTERNAL, RESPIRATORY, CARDIOLOGY, ENDOCRINOLOGY, SURGERY, ORTHOPAEDICS, UROLOGY, GYNAECOLOGY, OBSTETRICS,
    PAEDIATRICS, EMERGENCY, TCM,
)
COMMUNITY: tuple[Department, ...] = (GENERAL_PRACTICE, PREVENTIVE, INTERNAL, CHILD_HEALTH, TCM)
CLINIC: tuple[Department, ...] = (GENERAL_PRACTICE, INTERNAL)
TCM_HOSPITAL: tuple[Department, ...] = (TCM, INTERNAL, RESPIRATORY, CARDIOLOGY, ENDOCRINOLOGY, ORTHOPAEDICS, EMERGENCY)
MATERNAL_CHILD: tuple[Department, ...] = (
    OBSTETRICS, GYNAECOLOGY, FAMILY_PLANNING, REPRODUCTIVE, PAEDIATRICS, CHILD_HEALTH, EMERGENCY,
)
PSYCHIATRIC_HOSPITAL: tuple[Department, ...] = (PSYCHIATRY, INTERNAL, EMERGENCY)
INFECTIOUS_HOSPITAL: tuple[Department, ...] = (INFECTIOUS, INTERNAL, RESPIRATORY, DERMATOLOGY, EMERGENCY)
