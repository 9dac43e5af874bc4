"""Vaccines of the national immunisation programme (国家免疫规划) and influenza.

Schedule: 《国家免疫规划疫苗儿童免疫程序及说明（2021年版）》: 乙肝 0/1/6 months,
卡介苗 at birth, 脊灰 2/3/4 months and 4 years, 百白破 3/4/5/18 months,
麻腮风 8/18 months, 乙脑 8 months and 2 years, A群流脑 6/9 months, 甲肝 18 months.
Codes are CDC CVX (http://hl7.org/fhir/sid/cvx) for the vaccine kind.
"""

from __future__ import annotations

CVX_SYSTEM = "http://hl7.org/fhir/sid/cvx"

# key -> (CVX, 中文名)
VACCINES: dict[str, tuple[str, str]] = {
    "hepb": ("08", "乙型肝炎疫苗（儿童）"),
    "bcg": ("19", "卡介苗"),
    "polio": ("10", "脊髓灰质炎灭活疫苗"),
    "dtap": ("20", "吸附无细胞百白破联合疫苗"),
    "mmr": ("03", "麻腮风联合减毒活疫苗"),
    "je": ("39", "乙型脑炎疫苗"),
    "mpsv": ("32", "A群脑膜炎球菌多糖疫苗"),
    "hepa": ("83", "甲型肝炎疫苗（儿童）"),
    "flu": ("141", "流感疫苗"),
}

# (vaccine, dose number, age in days at the dose)
CHILD_SCHEDULE: tuple[tuple[str, int, int], ...] = (
    ("hepb", 1, 0), ("bcg", 1, 0), ("hepb", 2, 30), ("polio", 1, 61), ("polio", 2, 91), ("dtap", 1, 91),
    ("polio", 3, 122), ("dtap", 2, 122), ("dtap", 3, 152), ("hepb", 3, 183), ("mpsv", 1, 183),
    ("mmr", 1, 244), ("je", 1, 244), ("mpsv", 2, 274), ("dtap", 4, 548), ("mmr", 2, 548), ("hepa", 1, 548),
    ("je", 2, 730), ("polio", 4, 1461),
)


def concept(key: str) -> dict[str, object]:
    code, name = VACCINES[key]
    return {"coding": [{"system": CVX_SYSTEM, "code": code}], "text": name}


CONCEPTS: dict[str, dict[str, object]] = {k: concept(k) for k in VACCINES}
