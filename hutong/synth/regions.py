"""Administrative regions: Beijing's 16 districts and the places migrants come from.

Codes are GB/T 2260 administrative division codes (the first six digits of a
GB 11643 ID number name the county where the number was issued).
Populations are the 2020 census resident counts in 10,000s from 北京市第七次全国
人口普查公报 (2021), rounded; they weight where residents and institutions are.
Postcodes are each district's main postcode; road names are real roads, used
only to make synthetic addresses look like Beijing addresses.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class District:
    code: str  # GB/T 2260
    name: str
    population: float  # 10,000 residents, 2020 census
    postcode: str
    roads: tuple[str, ...]
    central: bool  # inside the old city / inner suburbs: where most 三级 hospitals are


BEIJING_CITY_CODE = "110000"
BEIJING_NAME = "北京市"

DISTRICTS: tuple[District, ...] = (
    District("110101", "东城区", 70.9, "100010", ("东四北大街", "交道口南大街", "东直门内大街", "崇文门外大街", "和平里中街", "安定门外大街"), True),
    District("110102", "西城区", 110.6, "100032", ("西直门内大街", "德胜门外大街", "阜成门内大街", "广安门内大街", "西单北大街", "月坛北街"), True),
    District("110105", "朝阳区", 345.2, "100020", ("朝阳路", "建国路", "望京街", "安立路", "劲松路", "朝阳北路", "酒仙桥路", "双井街"), True),
    District("110106", "丰台区", 201.9, "100071", ("丰台北路", "南三环西路", "马家堡东路", "科学城海鹰路", "方庄路", "卢沟桥路"), True),
    District("110107", "石景山区", 56.8, "100043", ("石景山路", "鲁谷路", "八角东街", "苹果园路", "古城大街"), True),
    District("110108", "海淀区", 313.3, "100080", ("中关村大街", "学院路", "北四环西路", "万寿路", "西三环北路", "上地十街", "清河中街"), True),
    District("110109", "门头沟区", 39.3, "102300", ("新桥大街", "滨河路", "黑山大街", "石龙南路"), False),
    District("110111", "房山区", 131.3, "102488", ("拱辰大街", "长虹东路", "燕房路", "良乡西路"), False),
    District("110112", "通州区", 184.0, "101100", ("新华大街", "玉带河东街", "九棵树东路", "梨园中街", "运河西大街"), False),
    District("110113", "顺义区", 132.4, "101300", ("府前中街", "光明南街", "站前街", "仁和路"), False),
    District("110114", "昌平区", 226.9, "102200", ("政府街", "回龙观东大街", "天通苑北街", "鼓楼南街", "北七家路"), False),
    District("110115", "大兴区", 199.4, "102600", ("兴丰大街", "黄村西大街", "荣华中路", "林校路", "清源路"), False),
    District("110116", "怀柔区", 44.1, "101400", ("青春路", "府前街", "迎宾中路", "开放路"), False),
    District("110117", "平谷区", 45.7, "101200", ("新平北路", "府前街", "林荫北街", "平翔路"), False),
    District("110118", "密云区", 52.8, "101500", ("鼓楼大街", "新中街", "西大桥路", "宾阳北街"), False),
    District("110119", "延庆区", 34.6, "102100", ("妫水北街", "东外大街", "高塔街", "庆园街"), False),
)

DISTRICT_BY_CODE: dict[str, District] = {d.code: d for d in DISTRICTS}


@dataclass(frozen=True, slots=True)
class OriginRegion:
    """A county outside Beijing that issues the ID numbers of migrants (常住外来人口)."""

    code: str  # GB/T 2260
    name: str
    weight: float  # relative share among migrants (rough, north-China heavy)


# 2020 census: 841.8 of 2189.3 万 Beijing residents (38.5%) were registered
# elsewhere; most come from Hebei, Henan, Shandong, Heilongjiang, Anhui.
# Weights are rough relative shares, not census figures.
ORIGIN_REGIONS: tuple[OriginRegion, ...] = (
    OriginRegion("130102", "河北省石家庄市长安区", 6.0),
    OriginRegion("130104", "河北省石家庄市桥西区", 5.0),
    OriginRegion("130203", "河北省唐山市路北区", 4.0),
    OriginRegion("130302", "河北省秦皇岛市海港区", 2.0),
    OriginRegion("130602", "河北省保定市竞秀区", 6.0),
    OriginRegion("131002", "河北省廊坊市安次区", 5.0),
    OriginRegion("120101", "天津市和平区", 2.0),
    OriginRegion("140105", "山西省太原市小店区", 3.0),
    OriginRegion("150102", "内蒙古自治区呼和浩特市新城区", 2.0),
    OriginRegion("210102", "辽宁省沈阳市和平区", 2.5),
    OriginRegion("220102", "吉林省长春市南关区", 2.0),
    OriginRegion("230102", "黑龙江省哈尔滨市道里区", 3.0),
    OriginRegion("230103", "黑龙江省哈尔滨市南岗区", 3.0),
    OriginRegion("310101", "上海市黄浦区", 0.8),
    OriginRegion("320102", "江苏省南京市玄武区", 1.5),
    OriginRegion("330106", "浙江省杭州市西湖区", 1.0),
    OriginRegion("340104", "安徽省合肥市蜀山区", 3.0),
    OriginRegion("370102", "山东省济南市历下区", 3.5),
    OriginRegion("370202", "山东省青岛市市南区", 2.0),
    OriginRegion("370702", "山东省潍坊市潍城区", 2.5),
    OriginRegion("410102", "河南省郑州市中原区", 4.0),
    OriginRegion("410105", "河南省郑州市金水区", 4.0),
    OriginRegion("420106", "湖北省武汉市武昌区", 2.0),
    OriginRegion("430104", "湖南省长沙市岳麓区", 1.5),
    OriginRegion("440104", "广东省广州市越秀区", 0.8),
    OriginRegion("510104", "四川省成都市锦江区", 2.0),
    OriginRegion("610113", "陕西省西安市雁塔区", 2.0),
)

ORIGIN_BY_CODE: dict[str, OriginRegion] = {o.code: o for o in ORIGIN_REGIONS}


def region_name(code: str) -> str | None:
    """Name of a GB/T 2260 code this generator uses, or None."""
    d = DISTRICT_BY_CODE.get(code)
    if d is not None:
        return BEIJING_NAME + d.name
    o = ORIGIN_BY_CODE.get(code)
    return o.name if o is not None else None
