"""Medical institutions (医疗机构) of the synthetic region, and their 医联体.

Beijing had 10,270 institutions in 2015 (seed 002): a few dozen 三级 hospitals
that draw patients city-wide, district 二级 hospitals, ~350 社区卫生服务中心
and thousands of 诊所/门诊部.  Levels follow 《医院分级管理办法》 (三级甲等 ...
一级) plus the primary-care kinds; types follow the 综合/专科/中医/妇幼 split
the commission uses.  The first institutions of every region are a fixed
mix that covers every level and type (so a 20-institution demo still has a
psychiatric hospital, an infectious-disease hospital and a 妇幼保健院); the
rest are drawn from Beijing-like proportions.

A 医联体 (medical alliance, 国办发〔2017〕32号) groups a 三级 hospital with
二级/一级 hospitals and community centres of its district, which share
patients by referral (双向转诊); members carry an extension naming the
alliance and its lead.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hutong.synth import departments as dp
from hutong.synth import uscc
from hutong.synth.departments import Department
from hutong.synth.regions import BEIJING_NAME, District
from hutong.synth.sampling import Weighted
from hutong.systems import CODESYSTEM_BASE, EXT_BASE, GB_REGION, ORGANIZATION

if TYPE_CHECKING:
    from hutong.synth.practitioners import Role

LEVEL_SYSTEM = CODESYSTEM_BASE + "institution-level"
TYPE_SYSTEM = CODESYSTEM_BASE + "institution-type"
ALLIANCE_EXT = EXT_BASE + "medical-alliance"
REGION_EXT = EXT_BASE + "region-code"

# Institution level codes (《医院分级管理办法》 plus primary-care kinds).
LEVELS: dict[str, str] = {
    "3A": "三级甲等", "3": "三级", "2": "二级", "1": "一级", "chc": "社区卫生服务中心", "clinic": "诊所",
}
TYPES: dict[str, str] = {"general": "综合", "specialty": "专科", "tcm": "中医", "maternal-child": "妇幼"}


@dataclass(frozen=True, slots=True)
class Archetype:
    key: str
    level: str  # key of LEVELS
    type: str  # key of TYPES
    specialty: str | None  # "psychiatric" / "infectious" for 专科
    departments: tuple[Department, ...]
    capacity: float  # relative outpatient volume (draw weight)
    per_department: int  # physicians generated per department
    registration: str  # 统一社会信用代码 registration kind
    inpatient: bool  # has beds

    @property
    def tertiary(self) -> bool:
        return self.level in ("3A", "3")

    @property
    def hospital(self) -> bool:
        return self.level in ("3A", "3", "2", "1")


A_3A_GENERAL = Archetype("3a-general", "3A", "general", None, dp.GENERAL_HOSPITAL, 40.0, 3, uscc.PUBLIC_INSTITUTION, True)
A_3_GENERAL = Archetype("3-general", "3", "general", None, dp.GENERAL_HOSPITAL, 20.0, 2, uscc.PUBLIC_INSTITUTION, True)
A_2_GENERAL = Archetype("2-general", "2", "general", None, dp.SMALL_HOSPITAL, 8.0, 2, uscc.PUBLIC_INSTITUTION, True)
A_1_GENERAL = Archetype("1-general", "1", "general", None, dp.SMALL_HOSPITAL[:5] + (dp.EMERGENCY,), 2.0, 1, uscc.PUBLIC_INSTITUTION, True)
A_CHC = Archetype("chc", "chc", "general", None, dp.COMMUNITY, 6.0, 2, uscc.PUBLIC_INSTITUTION, False)
A_CLINIC = Archetype("clinic", "clinic", "general", None, dp.CLINIC, 1.0, 1, uscc.PRIVATE_NON_ENTERPRISE, False)
A_TCM_CLINIC = Archetype("tcm-clinic", "clinic", "tcm", None, (dp.TCM,), 0.6, 1, uscc.COMPANY, False)
A_3A_TCM = Archetype("3a-tcm", "3A", "tcm", None, dp.TCM_HOSPITAL, 15.0, 2, uscc.PUBLIC_INSTITUTION, True)
A_2_TCM = Archetype("2-tcm", "2", "tcm", None, dp.TCM_HOSPITAL, 5.0, 1, uscc.PUBLIC_INSTITUTION, True)
A_3A_MATERNAL = Archetype("3a-maternal", "3A", "maternal-child", None, dp.MATERNAL_CHILD, 12.0, 2, uscc.PUBLIC_INSTITUTION, True)
A_2_MATERNAL = Archetype("2-maternal", "2", "maternal-child", None, dp.MATERNAL_CHILD, 5.0, 1, uscc.PUBLIC_INSTITUTION, True)
A_3A_PSYCH = Archetype("3a-psych", "3A", "specialty", "psychiatric", dp.PSYCHIATRIC_HOSPITAL, 6.0, 3, uscc.PUBLIC_INSTITUTION, True)
A_3A_INFECT = Archetype("3a-infect", "3A", "specialty", "infectious", dp.INFECTIOUS_HOSPITAL, 6.0, 2, uscc.PUBLIC_INSTITUTION, True)

# Order of the first institutions of any region: every level and type early.
FIXED_PREFIX: tuple[Archetype, ...] = (
    A_3A_GENERAL, A_CHC, A_2_GENERAL, A_CLINIC, A_3A_MATERNAL, A_3A_PSYCH, A_3A_TCM, A_3A_INFECT,
    A_1_GENERAL, A_CHC, A_3_GENERAL, A_CHC,
)
# Beyond the prefix, archetypes in rough Beijing proportions (seed 002; 北京市卫生健康
# 统计年鉴 level counts, rounded): many clinics and community centres, few 三级.
REST: Weighted[Archetype] = Weighted([
    (A_3A_GENERAL, 2.5), (A_3_GENERAL, 2.0), (A_2_GENERAL, 6.0), (A_1_GENERAL, 8.0), (A_CHC, 20.0),
    (A_CLINIC, 40.0), (A_TCM_CLINIC, 8.0), (A_3A_TCM, 0.8), (A_2_TCM, 2.0), (A_3A_MATERNAL, 0.4),
    (A_2_MATERNAL, 1.5), (A_3A_PSYCH, 0.3), (A_3A_INFECT, 0.2),
])

_CLINIC_WORDS = "康泰 仁爱 济民 安康 惠民 益寿 同心 德仁 和睦 长青 百草 杏林 春晖 福顺 仁心 博爱".split()
_CN_ORDINAL = "一二三四五六七八九十"


@dataclass(slots=True)
class Institution:
    index: int
    id: str  # FHIR Organization.id
    code: str  # 统一社会信用代码, identifier under the 机构 OID
    name: str
    archetype: Archetype
    district: District
    address: str
    phone: str
    alliance_lead: int | None = None  # index of the lead of its 医联体
    alliance_name: str | None = None
    mrn_mult: int = 1  # MRN permutation (see MRN_MODULUS)
    mrn_add: int = 0
    departments: tuple[Department, ...] = ()
    # Filled by practitioners.staff(): roles per department code.
    roles_by_department: dict[str, list[Role]] = field(default_factory=dict)
    reference: dict[str, str] = field(default_factory=dict)

    @property
    def level(self) -> str:
        return self.archetype.level


# MRNs are an affine permutation of the resident number modulo a prime, so
# every institution numbers patients uniquely and unpredictably without a
# shared counter (2**31 - 1 is prime; 10 digits, like many HIS 门诊号).
MRN_MODULUS = 2_147_483_647
# 住院号: 7 digits (9_999_991 is the largest 7-digit prime).
INPATIENT_MODULUS = 9_999_991


def outpatient_mrn(inst: Institution, number: int) -> str:
    return f"{(inst.mrn_mult * (number + 1) + inst.mrn_add) % MRN_MODULUS:010d}"


def inpatient_mrn(inst: Institution, number: int) -> str:
    mult = 1 + inst.mrn_mult % (INPATIENT_MODULUS - 1)
    return f"ZY{(mult * (number + 1) + inst.mrn_add) % INPATIENT_MODULUS:07d}"


def _name(arch: Archetype, district: District, rng: random.Random, taken: set[str]) -> str:
    short = district.name.removesuffix("区")
    road = district.roads[int(rng.random() * len(district.roads))]
    road_short = road.removesuffix("大街").removesuffix("中街").removesuffix("路").removesuffix("街")
    word = _CLINIC_WORDS[int(rng.random() * len(_CLINIC_WORDS))]
    base = {
        "3a-general": f"北京市{short}中心医院",
        "3-general": f"北京市{short}区医院",
        "2-general": f"北京市{short}区第二医院",
        "1-general": f"北京市{short}区{road_short}医院",
        "chc": f"北京市{short}区{road_short}社区卫生服务中心",
        "clinic": f"北京{word}诊所",
        "tcm-clinic": f"北京{word}中医诊所",
        "3a-tcm": f"北京市{short}中医医院",
        "2-tcm": f"北京市{short}区中医医院",
        "3a-maternal": f"北京市{short}妇产医院",
        "2-maternal": f"北京市{short}区妇幼保健院",
        "3a-psych": f"北京市{short}精神卫生中心",
        "3a-infect": f"北京市{short}传染病医院",
    }[arch.key]
    name = base
    n = 2
    while name in taken:
        name = f"{base}{_CN_ORDINAL[(n - 1) % 10]}部" if n <= 10 else f"{base}{n}部"
        n += 1
    taken.add(name)
    return name


def build(count: int, districts: tuple[District, ...], rng: random.Random) -> list[Institution]:
    """``count`` institutions spread over ``districts`` (deterministic given ``rng``)."""
    by_pop = sorted(districts, key=lambda d: -d.population)
    tertiary_table = Weighted([(d, d.population * (3.0 if d.central else 1.0)) for d in districts])
    pop_table = Weighted([(d, d.population) for d in districts])
    taken: set[str] = set()
    out: list[Institution] = []
    chc_seen = 0
    for i in range(count):
        arch = FIXED_PREFIX[i] if i < len(FIXED_PREFIX) else REST.pick(rng)
        if arch.level == "chc":
            # Community centres go round the districts, most populous first,
            # so that as many residents as possible have one nearby.
            district = by_pop[chc_seen % len(by_pop)]
            chc_seen += 1
        elif arch.tertiary:
            district = tertiary_table.pick(rng)
        else:
            district = pop_table.pick(rng)
        serial = 40_000_000 + i * 7919 + int(rng.random() * 7000)
        code = uscc.make(arch.registration, district.code, serial)
        road = district.roads[int(rng.random() * len(district.roads))]
        inst = Institution(
            index=i,
            id=f"org-{i + 1:04d}",
            code=code,
            name=_name(arch, district, rng, taken),
            archetype=arch,
            district=district,
            address=f"{BEIJING_NAME}{district.name}{road}{1 + int(rng.random() * 200)}号",
            phone=f"010-{'568'[int(rng.random() * 3)]}{int(rng.random() * 10_000_000):07d}",  # 8-digit 010 numbers
            mrn_mult=1 + int(rng.random() * (MRN_MODULUS - 2)),
            mrn_add=int(rng.random() * MRN_MODULUS),
            departments=arch.departments,
        )
        inst.reference = {"reference": f"Organization/{inst.id}", "display": inst.name}
        out.append(inst)
    _form_alliances(out, rng)
    return out


def _form_alliances(insts: list[Institution], rng: random.Random) -> None:
    """Each 三级综合 hospital leads a 医联体 of lower-level institutions near it."""
    leads = [x for x in insts if x.archetype.tertiary and x.archetype.type == "general"]
    if not leads:
        return
    for lead in leads:
        lead.alliance_lead = lead.index
        lead.alliance_name = f"{lead.name.removeprefix('北京市')}医联体"
    for inst in insts:
        if inst.alliance_lead is not None or inst.level not in ("2", "1", "chc"):
            continue
        local = [x for x in leads if x.district.code == inst.district.code]
        if local:
            lead = local[int(rng.random() * len(local))]
        elif rng.random() < 0.5:
            lead = leads[int(rng.random() * len(leads))]
        else:
            continue
        inst.alliance_lead = lead.index
        inst.alliance_name = lead.alliance_name


def organization(inst: Institution, insts: list[Institution]) -> dict[str, Any]:
    """The FHIR Organization of an institution (resource.html; organization.html)."""
    arch = inst.archetype
    res: dict[str, Any] = {"resourceType": "Organization", "id": inst.id}
    ext: list[dict[str, Any]] = [
        {"url": REGION_EXT, "valueCoding": {"system": GB_REGION, "code": inst.district.code,
                                            "display": BEIJING_NAME + inst.district.name}},
    ]
    if inst.alliance_lead is not None:
        lead = insts[inst.alliance_lead]
        ext.append({"url": ALLIANCE_EXT, "extension": [
            {"url": "name", "valueString": inst.alliance_name},
            {"url": "lead", "valueReference": {"reference": f"Organization/{lead.id}", "display": lead.name}},
            {"url": "role", "valueCode": "lead" if lead is inst else "member"},
        ]})
    res["extension"] = ext
    res["identifier"] = [{"use": "official", "system": ORGANIZATION, "value": inst.code}]
    res["active"] = True
    res["type"] = [
        {"coding": [{"system": LEVEL_SYSTEM, "code": arch.level, "display": LEVELS[arch.level]}],
         "text": LEVELS[arch.level]},
        {"coding": [{"system": TYPE_SYSTEM, "code": arch.type, "display": TYPES[arch.type]}],
         "text": TYPES[arch.type] + ({"psychiatric": "(精神)", "infectious": "(传染病)"}.get(arch.specialty or "", ""))},
        {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "prov",
                     "display": "Healthcare Provider"}]},
    ]
    res["name"] = inst.name
    res["telecom"] = [{"system": "phone", "value": inst.phone, "use": "work"}]
    res["address"] = [{"use": "work", "type": "physical", "text": inst.address, "city": BEIJING_NAME,
                       "district": inst.district.name, "state": BEIJING_NAME,
                       "postalCode": inst.district.postcode, "country": "CN"}]
    return res
