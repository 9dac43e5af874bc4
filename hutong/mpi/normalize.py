"""Normalisation of patient demographics for matching.

Two desks write the same person differently: full-width letters from a
Chinese IME, traditional characters from Hong Kong/Taiwan documents or old
systems, a middle dot in a minority name (阿卜杜·热合曼), a phone number with
+86, an address with or without its province.  Every function here maps such
variants to one comparable form.  They are pure and run on every Patient
write, so the expensive ones are memoised.

Unicode normalisation is NFKC (Unicode Standard Annex #15), which folds the
full-width forms Chinese input methods produce (ＡＢＣ１２３, U+3000) to ASCII.
Traditional → simplified conversion is OpenCC's ``t2s`` configuration
(character and phrase tables).  It is many-to-one where the simplified
standard merged characters (通用规范汉字表 2013, 附件1): 蕭 becomes 萧 even
when the record meant the surname 肖, which is why matching also compares
pinyin.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from datetime import date
from typing import TYPE_CHECKING

from pypinyin import Style, lazy_pinyin

if TYPE_CHECKING:
    import opencc

__all__ = [
    "address_tokens",
    "name_initials",
    "name_pinyin",
    "normalize_address",
    "normalize_date",
    "normalize_name",
    "normalize_phone",
]

_CACHE = 65_536


@functools.cache
def _t2s() -> opencc.OpenCC:
    # Imported and built on first use: loading the dictionaries costs a few
    # milliseconds that processes which never normalise should not pay.
    import opencc

    return opencc.OpenCC("t2s")


def _to_simplified(text: str) -> str:
    return str(_t2s().convert(text))


# --- names ------------------------------------------------------------------

# Separators inside a name, after NFKC (which has already mapped U+3000 to a
# space, ． to "." and ・ U+FF65 to U+30FB): the 间隔号 of transliterated
# minority and foreign names (GB/T 15834-2011 §4.14; IMEs and fonts produce
# all of these dots), hyphens and underscores, apostrophes, and
# zero-width characters pasted from web forms.
_NAME_DROP = re.compile(r"[\s·•・‧∙.\-‐‑‒–—―_'’\u200b-\u200d\u2060\ufeff]+")


@functools.lru_cache(maxsize=_CACHE)
def normalize_name(text: str) -> str:
    """A person's name as one comparable string.

    NFKC, separators removed, traditional characters simplified, Latin
    letters upper-cased: ``"張　偉"`` → ``"张伟"``, ``"ＺＨＡＮＧ wei"`` →
    ``"ZHANGWEI"``, ``"阿卜杜·热合曼"`` → ``"阿卜杜热合曼"``.
    """
    s = _NAME_DROP.sub("", unicodedata.normalize("NFKC", text))
    return _to_simplified(s).upper() if s else ""


# Toneless syllables of Putonghua (the readings in pypinyin's dictionary in
# Style.NORMAL, ü written v, interjections hm/hng/m/n/ng/ê left out), so that a
# name typed in Latin letters without spaces can be split back into syllables.
_SYLLABLES = frozenset("""
a ai an ang ao ba bai ban bang bao bei ben beng bi bian biang biao bie bin bing bo bong bu ca cai
can cang cao ce cei cen ceng cha chai chan chang chao che chen cheng chi chong chou chu chua chuai
chuan chuang chui chun chuo ci cong cou cu cuan cui cun cuo da dai dan dang dao de dei den deng di
dia dian diao die din ding diu dong dou du duan dui dun duo e ei en eng er fa fan fang fei fen feng
fiao fo fou fu ga gai gan gang gao ge gei gen geng gong gou gu gua guai guan guang gui gun guo ha
hai han hang hao he hei hen heng hong hou hu hua huai huan huang hui hun huo ji jia jian jiang jiao
jie jin jing jiong jiu ju juan jue jun ka kai kan kang kao ke kei ken keng kong kou ku kua kuai kuan
kuang kui kun kuo la lai lan lang lao le lei len leng li lia lian liang liao lie lin ling liu lo
long lou lu luan lun luo lv lve ma mai man mang mao me mei men meng mi mian miao mie min ming miu mo
mou mu na nai nan nang nao ne nei nen neng ni nia nian niang niao nie nin ning niu nong nou nu nuan
nun nuo nv nve o ou pa pai pan pang pao pei pen peng pi pian piao pie pin ping po pou pu qi qia qian
qiang qiao qie qin qing qiong qiu qu quan que qun ran rang rao re ren reng ri rong rou ru rua ruan
rui run ruo sa sai san sang sao se sen seng sha shai shan shang shao she shei shen sheng shi shou
shu shua shuai shuan shuang shui shun shuo si song sou su suan sui sun suo ta tai tan tang tao te
tei teng ti tian tiao tie ting tong tou tu tuan tui tun tuo wa wai wan wang wei wen weng wo wong wu
xi xia xian xiang xiao xie xin xing xiong xiu xu xuan xue xun ya yan yang yao ye yi yin ying yo yong
you yu yuan yue yun za zai zan zang zao ze zei zen zeng zha zhai zhan zhang zhao zhe zhei zhen zheng
zhi zhong zhou zhu zhua zhuai zhuan zhuang zhui zhun zhuo zi zong zou zu zuan zui zun zuo
""".split())
_LONGEST_SYLLABLE = max(map(len, _SYLLABLES))


def _split_pinyin(latin: str) -> list[str] | None:
    """Fewest toneless syllables that spell ``latin`` (lower case), or None."""
    n = len(latin)
    best: list[list[str] | None] = [None] * (n + 1)
    best[0] = []
    for i in range(n):
        head = best[i]
        if head is None:
            continue
        for j in range(i + 1, min(n, i + _LONGEST_SYLLABLE) + 1):
            if latin[i:j] in _SYLLABLES:
                cand = best[j]
                if cand is None or len(head) + 1 < len(cand):
                    best[j] = [*head, latin[i:j]]
    return best[n]


@functools.lru_cache(maxsize=_CACHE)
def _chunks(text: str) -> tuple[str, ...]:
    # pypinyin gives one toneless syllable per Hanzi, its default (most
    # frequent, phrase-aware) reading for heteronyms, and passes runs of other
    # characters through as one chunk; lower case makes ZHANG and 张 agree.
    name = normalize_name(text)
    return tuple(c.lower() for c in lazy_pinyin(name, style=Style.NORMAL)) if name else ()


def name_pinyin(text: str) -> str:
    """Toneless pinyin of the normalised name, lower case, no separators.

    Homophones agree (李明 and 李铭 → ``"liming"``), and so do a Chinese name
    and its romanisation (张伟 and ``"Zhang Wei"`` → ``"zhangwei"``).
    """
    return "".join(_chunks(text))


@functools.lru_cache(maxsize=_CACHE)
def name_initials(text: str) -> str:
    """First letter of each pinyin syllable: 李明 → ``"lm"``.

    A romanised name has lost its spaces in normalisation, so it is split
    back into pinyin syllables where it can be (``"ZHANG Wei"`` → ``"zw"``,
    like 张伟); a foreign name that is not pinyin gives its first letter.
    """
    out: list[str] = []
    for chunk in _chunks(text):
        if chunk.isascii() and chunk.isalpha():
            syllables = _split_pinyin(chunk)
            if syllables:
                out.extend(s[0] for s in syllables)
            else:
                out.append(chunk[0])
        elif chunk.isalpha():  # a Hanzi pypinyin has no reading for
            out.append(chunk[0])
    return "".join(out)


# --- phone numbers ------------------------------------------------------------

# Mainland mobile numbers are 11 digits starting 13-19 (工业和信息化部
# 电信网编号计划, 2017 edition); the country code 86 may precede them.
_MOBILE = re.compile(r"(?:0086|86)?(1[3-9][0-9]{9})")


@functools.lru_cache(maxsize=_CACHE)
def normalize_phone(text: str) -> str | None:
    """Digits of a phone number, mobile numbers without the country code.

    ``"+86 138-0013-8000"`` → ``"13800138000"``; landlines keep their area
    code (``"010-6512 3456"`` → ``"01065123456"``), and an international
    landline gets its trunk 0 back (``"+86 10 6512 3456"`` → the same).
    None when fewer than 7 digits remain (no Chinese subscriber number is
    shorter, so it is an extension or a typing error).
    """
    s = unicodedata.normalize("NFKC", text).strip()
    digits = "".join(c for c in s if "0" <= c <= "9")
    m = _MOBILE.fullmatch(digits)
    if m:
        return m.group(1)
    # Only an explicit international prefix marks a landline as dialled from
    # abroad: a bare leading 86 can be the start of a local number.
    if s.startswith("+86") or digits.startswith("0086"):
        national = digits[2:] if s.startswith("+86") else digits[4:]
        digits = national if national.startswith("0") else "0" + national
    return digits if len(digits) >= 7 else None


# --- addresses ------------------------------------------------------------------

_PROVINCES: tuple[tuple[str, str], ...] = (
    # (full name, short form) of the province-level divisions, GB/T 2260.
    ("北京市", "北京"), ("天津市", "天津"), ("上海市", "上海"), ("重庆市", "重庆"),
    ("河北省", "河北"), ("山西省", "山西"), ("内蒙古自治区", "内蒙古"), ("辽宁省", "辽宁"),
    ("吉林省", "吉林"), ("黑龙江省", "黑龙江"), ("江苏省", "江苏"), ("浙江省", "浙江"),
    ("安徽省", "安徽"), ("福建省", "福建"), ("江西省", "江西"), ("山东省", "山东"),
    ("河南省", "河南"), ("湖北省", "湖北"), ("湖南省", "湖南"), ("广东省", "广东"),
    ("广西壮族自治区", "广西"), ("海南省", "海南"), ("四川省", "四川"), ("贵州省", "贵州"),
    ("云南省", "云南"), ("西藏自治区", "西藏"), ("陕西省", "陕西"), ("甘肃省", "甘肃"),
    ("青海省", "青海"), ("宁夏回族自治区", "宁夏"), ("新疆维吾尔自治区", "新疆"), ("台湾省", "台湾"),
    ("香港特别行政区", "香港"), ("澳门特别行政区", "澳门"),
)
# A short form is a province only if a lower division follows: not 吉林市 or
# 河北区 (a prefecture or district of the same name) and not a street named
# after a province (北京东路, 湖南路), which every large city has.
_PREFIX = re.compile(
    "(?:中华人民共和国|中国)?(?:"
    + "|".join(full for full, _ in _PROVINCES)
    + "|(?:"
    + "|".join(sorted((short for _, short in _PROVINCES), key=len, reverse=True))
    + ")(?![市区县州]|[东西南北中]?[路街道巷弄里桥]|$))"
)


def _is_dropped_in_address(c: str) -> bool:
    # Punctuation (，。、-#（） …), separators and format characters carry no
    # address information and are typed inconsistently.
    cat = unicodedata.category(c)
    return cat[0] in "PZ" or cat in ("Cc", "Cf")


@functools.lru_cache(maxsize=_CACHE)
def normalize_address(text: str) -> str:
    """An address as one comparable string, starting below the province.

    NFKC (full-width digits → ASCII), simplified characters, no whitespace or
    punctuation, Latin upper case, and any leading 省/自治区/直辖市 prefix
    removed so ``"北京市朝阳区…"`` and ``"朝阳区…"`` agree.  Prefixes are
    removed repeatedly (``"中国北京市北京市朝阳区"`` → ``"朝阳区"``) so that
    the result does not depend on how many of them a desk typed.
    """
    s = _to_simplified(unicodedata.normalize("NFKC", text))
    s = "".join(c for c in s if not c.isspace() and not _is_dropped_in_address(c)).upper()
    while m := _PREFIX.match(s):
        s = s[m.end():]
    return s


@functools.lru_cache(maxsize=_CACHE)
def address_tokens(text: str) -> frozenset[str]:
    """Character bigrams of the normalised address, for a Jaccard/Dice score.

    Bigrams suit Chinese addresses, which have no spaces and whose meaningful
    units (朝阳, 建国路, 3号楼) are mostly two or three characters long.
    """
    s = normalize_address(text)
    if len(s) < 2:
        return frozenset([s]) if s else frozenset()
    return frozenset(s[i:i + 2] for i in range(len(s) - 1))


# --- dates -------------------------------------------------------------------

_TIME = re.compile(r"(?:T|\s+)[0-9]{1,2}:[0-9]{2}.*$", re.DOTALL)
_YMD = re.compile(r"([0-9]{4})(?:[-/.年]([0-9]{1,2})(?:[-/.月]([0-9]{1,2})日?|月)?|年)?")
_COMPACT = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})")


@functools.lru_cache(maxsize=_CACHE)
def normalize_date(text: str) -> str | None:
    """A (birth) date as FHIR ``date`` text: YYYY-MM-DD, YYYY-MM or YYYY.

    Accepts ISO 8601 dates and date-times (the date as written is kept; a
    birth date is a local calendar date, so the offset is not applied),
    ``19890313``, ``1989/3/13``, ``1989.3.13`` and ``1989年3月13日``.  Partial
    dates stay partial.  None for anything else, including impossible dates.
    """
    s = _TIME.sub("", unicodedata.normalize("NFKC", text).strip())
    s = "".join(s.split())
    m = _COMPACT.fullmatch(s) or _YMD.fullmatch(s)
    if m is None:
        return None
    year, month, day = m.groups()
    try:
        date(int(year), int(month or 1), int(day or 1))  # rejects 02-30, month 13, year 0000
    except ValueError:
        return None
    if day is not None:
        return f"{year}-{int(month):02d}-{int(day):02d}"
    if month is not None:
        return f"{year}-{int(month):02d}"
    return year
