"""Chinese personal names: surnames with frequencies, given names by generation.

Surname weights are national shares in percent from 袁义达、邱家儒《中国四百大姓》
(2013, the basis of the commonly cited top-100 list), with the northern
surnames 王/张/刘/赵/马/高 weighted up ~20% for Beijing; rare compound
surnames (复姓) are added at small weights.  Shares are approximate.

Given names follow the shift described in 公安部户政管理研究中心《二〇二〇年全国
姓名报告》 and its predecessors: generation-marked names in the 1950s (建国,
秀英), single-character names peaking in the 1970s-1990s (伟, 静), and
two-character names again after 2000 (子涵, 一诺; the report's top newborn
names).  A share of names is drawn whole from each era's popular list, so
common names (张伟, 王静) recur as often as they do in real registers, which
is what makes name-only matching unsafe.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hutong.synth.sampling import Weighted

SURNAMES: tuple[tuple[str, float], ...] = (
    ("王", 8.9), ("李", 7.9), ("张", 8.5), ("刘", 6.5), ("陈", 4.5), ("杨", 3.1), ("赵", 2.75),
    ("黄", 2.2), ("周", 2.1), ("吴", 2.0), ("徐", 1.7), ("孙", 1.5), ("胡", 1.3), ("朱", 1.3),
    ("高", 1.45), ("林", 1.2), ("何", 1.2), ("郭", 1.15), ("马", 1.26), ("罗", 0.86), ("梁", 0.84),
    ("宋", 0.81), ("郑", 0.78), ("谢", 0.72), ("韩", 0.68), ("唐", 0.65), ("冯", 0.64), ("于", 0.62),
    ("董", 0.61), ("肖", 0.59), ("程", 0.57), ("曹", 0.57), ("袁", 0.54), ("邓", 0.54), ("许", 0.54),
    ("傅", 0.51), ("沈", 0.50), ("曾", 0.50), ("彭", 0.49), ("吕", 0.47), ("苏", 0.46), ("卢", 0.46),
    ("蒋", 0.46), ("蔡", 0.44), ("贾", 0.41), ("丁", 0.41), ("魏", 0.40), ("薛", 0.40), ("叶", 0.39),
    ("闫", 0.38), ("余", 0.38), ("潘", 0.38), ("杜", 0.37), ("戴", 0.36), ("夏", 0.35), ("钟", 0.35),
    ("汪", 0.34), ("田", 0.33), ("任", 0.32), ("姜", 0.31), ("范", 0.31), ("方", 0.30), ("石", 0.30),
    ("姚", 0.29), ("谭", 0.28), ("廖", 0.27), ("邹", 0.27), ("熊", 0.26), ("金", 0.26), ("陆", 0.26),
    ("郝", 0.25), ("孔", 0.25), ("白", 0.25), ("崔", 0.24), ("康", 0.24), ("毛", 0.24), ("邱", 0.23),
    ("秦", 0.23), ("江", 0.22), ("史", 0.22), ("顾", 0.22), ("侯", 0.21), ("邵", 0.21), ("孟", 0.21),
    ("龙", 0.20), ("万", 0.20), ("段", 0.20), ("雷", 0.20), ("钱", 0.19), ("汤", 0.19), ("尹", 0.18),
    ("黎", 0.18), ("易", 0.18), ("常", 0.18), ("武", 0.18), ("乔", 0.18), ("贺", 0.17), ("赖", 0.17),
    ("龚", 0.17), ("文", 0.16),
    ("欧阳", 0.05), ("司马", 0.01), ("上官", 0.01), ("诸葛", 0.01), ("皇甫", 0.005),
)


@dataclass(frozen=True, slots=True)
class Era:
    """Naming habits of people born up to ``until_year``."""

    until_year: int
    single_rate: float  # share of one-character given names
    whole_rate: float  # share drawn whole from the popular list
    male_chars: str
    female_chars: str
    male_popular: tuple[str, ...]
    female_popular: tuple[str, ...]


ERAS: tuple[Era, ...] = (
    Era(
        1959, 0.15, 0.45,
        "建国华明德志国强军文学忠福荣贵金宝海山林庆祥春永平安",
        "秀英兰珍桂玉凤淑芳华琴梅云霞素翠荣春香玲",
        ("建国", "建华", "国庆", "国强", "志强", "建军", "建平", "卫国", "国华", "德明", "振华", "永平"),
        ("秀英", "桂英", "秀兰", "玉兰", "桂兰", "淑珍", "凤英", "玉珍", "秀珍", "淑英", "玉梅", "秀芳"),
    ),
    Era(
        1979, 0.32, 0.40,
        "伟勇军强斌刚平建明永海波辉东红卫涛峰兵志杰新宏",
        "丽红艳燕霞敏玲芳英梅萍静娟华琳莉颖慧洁雪凤",
        ("建军", "红军", "卫东", "建伟", "志强", "海涛", "立新", "红兵", "永刚", "建新", "海波", "卫红"),
        ("红梅", "丽华", "海燕", "春梅", "晓红", "艳红", "桂芳", "秀梅", "丽娟", "红霞", "晓燕", "建英"),
    ),
    Era(
        1999, 0.35, 0.35,
        "伟磊涛鹏超杰浩军勇斌帅宇晨博鑫俊凯龙飞亮阳明辉强",
        "静丽婷娜敏芳洁晶雪颖丹佳欣琳倩慧莹璐悦玲艳燕蕾",
        ("俊杰", "文博", "家豪", "志强", "浩然", "天宇", "宇航", "晓东", "建华", "子豪", "明轩", "鹏飞"),
        ("婷婷", "晓燕", "雪梅", "晶晶", "佳琪", "丽娜", "思雨", "欣然", "梦瑶", "雨欣", "晓雪", "佳怡"),
    ),
    Era(
        2100, 0.08, 0.55,
        "浩宇轩子涵辰睿泽俊熙博文一铭航晨皓宸逸昊然墨",
        "欣怡涵梓诗雨桐诺可馨思瑶语汐妍萱琪悦彤依婉",
        ("浩宇", "子轩", "宇轩", "浩然", "梓豪", "俊熙", "宇航", "一鸣", "博文", "奕辰", "宇辰", "子墨", "亦辰", "沐宸"),
        ("欣怡", "梓涵", "诗涵", "雨桐", "一诺", "紫涵", "可馨", "思涵", "梦瑶", "语桐", "欣妍", "依诺", "语汐", "子涵"),
    ),
)


def era_for(year: int) -> Era:
    for era in ERAS:
        if year <= era.until_year:
            return era
    return ERAS[-1]


# Foreign residents (passport holders): common names by country, ISO 3166-1 alpha-3.
FOREIGN_NAMES: tuple[tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    ("KOR", ("KIM", "LEE", "PARK", "CHOI", "JUNG"), ("MINJUN", "SEOJUN", "JIHO"), ("SEOYEON", "JIWOO", "HAYOON")),
    ("USA", ("SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES"), ("JAMES", "JOHN", "ROBERT"), ("MARY", "LINDA", "EMMA")),
    ("JPN", ("SATO", "SUZUKI", "TAKAHASHI", "TANAKA"), ("HIROSHI", "TAKESHI", "REN"), ("YUKI", "SAKURA", "AOI")),
    ("RUS", ("IVANOV", "SMIRNOV", "KUZNETSOV", "POPOV"), ("ALEXANDER", "DMITRY", "SERGEY"), ("ANNA", "OLGA", "ELENA")),
    ("DEU", ("MUELLER", "SCHMIDT", "SCHNEIDER", "FISCHER"), ("LUKAS", "JONAS", "FELIX"), ("SOPHIE", "MARIE", "LEA")),
    ("FRA", ("MARTIN", "BERNARD", "DUBOIS", "THOMAS"), ("LOUIS", "GABRIEL", "HUGO"), ("CHLOE", "LINA", "CAMILLE")),
    ("GBR", ("TAYLOR", "DAVIES", "EVANS", "WILSON"), ("OLIVER", "GEORGE", "HARRY"), ("OLIVIA", "AMELIA", "ISLA")),
)

_SURNAME_TABLE: Weighted[str] = Weighted(SURNAMES)


def draw_chinese(rng: random.Random, sex: str, birth_year: int) -> tuple[str, str]:
    """(surname, given name) for a person of ``sex`` born in ``birth_year``."""
    era = era_for(birth_year)
    surname = _SURNAME_TABLE.pick(rng)
    male = sex == "male"
    if rng.random() < era.whole_rate:
        popular = era.male_popular if male else era.female_popular
        return surname, popular[int(rng.random() * len(popular))]
    chars = era.male_chars if male else era.female_chars
    n = len(chars)
    first = chars[int(rng.random() * n)]
    if rng.random() < era.single_rate:
        return surname, first
    second = chars[int(rng.random() * n)]
    if second == first and male:
        # Reduplicated names (婷婷, 晶晶) are mostly girls' names.
        second = chars[(chars.index(first) + 1) % n]
    return surname, first + second


def draw_foreign(rng: random.Random, sex: str) -> tuple[str, str, str]:
    """(ISO 3166 alpha-3 country, family name, given name) for a passport holder."""
    country, families, male_given, female_given = FOREIGN_NAMES[int(rng.random() * len(FOREIGN_NAMES))]
    given = male_given if sex == "male" else female_given
    return country, families[int(rng.random() * len(families))], given[int(rng.random() * len(given))]
