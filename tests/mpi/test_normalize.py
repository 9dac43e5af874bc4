"""Normalisation for matching: hutong.mpi.normalize."""

from __future__ import annotations

from collections import defaultdict

import pytest

from hutong.mpi.normalize import (
    address_tokens,
    name_initials,
    name_pinyin,
    normalize_address,
    normalize_date,
    normalize_name,
    normalize_phone,
)
from hutong.synth.charvariants import HOMOPHONES, TRADITIONAL

# --- names ------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("張　偉", "张伟"),
    ("ＺＨＡＮＧ wei", "ZHANGWEI"),
    ("阿卜杜·热合曼", "阿卜杜热合曼"),
    ("阿卜杜•热合曼", "阿卜杜热合曼"),
    ("阿卜杜．热合曼", "阿卜杜热合曼"),
    ("阿卜杜・热合曼", "阿卜杜热合曼"),  # katakana middle dot U+30FB
    ("阿卜杜･热合曼", "阿卜杜热合曼"),  # half-width U+FF65
    ("阿卜杜-热合曼", "阿卜杜热合曼"),
    ("阿卜杜_热合曼", "阿卜杜热合曼"),
    ("阿卜杜—热合曼", "阿卜杜热合曼"),
    (" 李 明\t", "李明"),
    ("李\u200b明", "李明"),
    ("陳麗華", "陈丽华"),
    ("歐陽鋒", "欧阳锋"),
    ("O'Brien", "OBRIEN"),
    ("", ""),
    ("　", ""),
])
def test_normalize_name(text: str, expected: str) -> None:
    assert normalize_name(text) == expected
    assert normalize_name(expected) == expected  # idempotent


# TRADITIONAL maps simplified → traditional; a few traditional forms stand for
# more than one simplified character (the simplification merged them).
_SIMPLIFIED_OF: dict[str, set[str]] = defaultdict(set)
for _simp, _trad in TRADITIONAL.items():
    _SIMPLIFIED_OF[_trad].add(_simp)
MERGED = {t: s for t, s in _SIMPLIFIED_OF.items() if len(s) > 1}


@pytest.mark.parametrize(("simplified", "traditional"), sorted(TRADITIONAL.items()))
def test_traditional_characters_normalise_to_simplified(simplified: str, traditional: str) -> None:
    assert traditional != simplified
    if traditional in MERGED:
        assert normalize_name(traditional) in MERGED[traditional]
        assert name_pinyin(traditional) == name_pinyin(simplified)
    else:
        assert normalize_name(traditional) == simplified
    assert normalize_name(simplified) == simplified


def test_merged_traditional_surname() -> None:
    # 肖 and 萧 are both written 蕭 in traditional script; t2s can only give
    # one of them back (萧), so a 肖 registered from a HK/TW document differs
    # by name but agrees by pinyin.
    assert MERGED == {"蕭": {"肖", "萧"}}
    assert normalize_name("蕭") == "萧"
    assert normalize_name("肖") == "肖"
    assert name_pinyin("蕭偉") == name_pinyin("肖伟") == "xiaowei"


HOMOPHONE_GROUPS = sorted({"".join(sorted({c, *others})) for c, others in HOMOPHONES.items()})


@pytest.mark.parametrize("group", HOMOPHONE_GROUPS)
def test_homophones_share_one_pinyin(group: str) -> None:
    assert len(group) >= 2
    assert len({name_pinyin(c) for c in group}) == 1
    # ... also inside a name, where pypinyin reads by phrase.
    assert len({name_pinyin("王" + c + "华") for c in group}) == 1
    assert len({name_initials("王" + c) for c in group}) == 1


def test_homophone_groups_are_all_tested() -> None:
    assert len(HOMOPHONE_GROUPS) == 74


@pytest.mark.parametrize(("text", "pinyin", "initials"), [
    ("李明", "liming", "lm"),
    ("李铭", "liming", "lm"),
    ("張偉", "zhangwei", "zw"),
    ("张 伟", "zhangwei", "zw"),
    ("ＺＨＡＮＧ wei", "zhangwei", "zw"),
    ("Zhang Wei", "zhangwei", "zw"),
    ("ZHANGWEI", "zhangwei", "zw"),
    ("欧阳娜娜", "ouyangnana", "oynn"),
    ("阿卜杜·热合曼", "abodureheman", "abdrhm"),  # 卜 in its default reading bo
    ("单田芳", "dantianfang", "dtf"),  # heteronym: the default reading, not the surname shan
    ("John Smith", "johnsmith", "j"),  # not pinyin: no syllables to split
    ("", "", ""),
])
def test_name_pinyin_and_initials(text: str, pinyin: str, initials: str) -> None:
    assert name_pinyin(text) == pinyin
    assert name_initials(text) == initials
    assert name_initials(normalize_name(text)) == initials  # callers may pass the normalised name


# --- phone numbers ----------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("13800138000", "13800138000"),
    ("138-0013-8000", "13800138000"),
    ("+86 138 0013 8000", "13800138000"),
    ("+8613800138000", "13800138000"),
    ("0086-13800138000", "13800138000"),
    ("8613800138000", "13800138000"),
    ("(+86) 199 1234 5678", "19912345678"),
    ("＋８６　１３８００１３８０００", "13800138000"),
    ("010-6512 3456", "01065123456"),
    ("(010)65123456", "01065123456"),
    ("0755-8888 1234", "075588881234"),
    ("+86 10 6512 3456", "01065123456"),
    ("0086 10 65123456", "01065123456"),
    ("6512 3456", "65123456"),
    ("8612345", "8612345"),  # a 7-digit local number starting 86 keeps its 86
    ("+1 415 555 0100", "14155550100"),
    ("120", None),
    ("123456", None),
    ("", None),
    ("无", None),
])
def test_normalize_phone(text: str, expected: str | None) -> None:
    assert normalize_phone(text) == expected


def test_12_digit_number_is_not_taken_for_a_mobile() -> None:
    # 12x is not a mobile prefix: 86 + 12... is left alone.
    assert normalize_phone("8612345678901") == "8612345678901"


# --- addresses ----------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("北京市朝阳区建国路88号", "朝阳区建国路88号"),
    ("北京朝阳区建国路８８号", "朝阳区建国路88号"),
    ("北京市 朝阳区, 建国路 88 号", "朝阳区建国路88号"),
    ("朝阳区建国路88号", "朝阳区建国路88号"),
    ("（北京市）东城区，东四北大街#3号楼-2单元。", "东城区东四北大街3号楼2单元"),
    ("北京市東城區東四北大街", "东城区东四北大街"),
    ("中国北京市北京市朝阳区", "朝阳区"),
    ("中华人民共和国广东省深圳市南山区", "深圳市南山区"),
    ("广西壮族自治区南宁市", "南宁市"),
    ("新疆乌鲁木齐市天山区", "乌鲁木齐市天山区"),
    ("内蒙古呼和浩特市", "呼和浩特市"),
    # a short province name that is a prefecture, a district or a street stays
    ("吉林省吉林市船营区", "吉林市船营区"),
    ("吉林市船营区", "吉林市船营区"),
    ("天津市河北区", "河北区"),
    ("上海市北京东路100号", "北京东路100号"),
    ("北京东路100号", "北京东路100号"),
    ("南京市湖南路1号", "南京市湖南路1号"),
    ("中国人民大学", "中国人民大学"),  # 中国 only goes with a province after it
    ("北京市", ""),
    ("a座 3层", "A座3层"),
    ("", ""),
])
def test_normalize_address(text: str, expected: str) -> None:
    assert normalize_address(text) == expected
    assert normalize_address(expected) == expected  # idempotent


def test_address_tokens_are_bigrams() -> None:
    assert address_tokens("朝阳区建国路") == frozenset({"朝阳", "阳区", "区建", "建国", "国路"})
    assert address_tokens("北京市 朝阳区，建国路") == address_tokens("朝阳区建国路")
    assert address_tokens("北京市朝阳区") != address_tokens("北京市海淀区")
    assert address_tokens("区") == frozenset({"区"})
    assert address_tokens("北京市") == frozenset()
    assert address_tokens("") == frozenset()


# --- dates ------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("1989-03-13", "1989-03-13"),
    ("19890313", "1989-03-13"),
    ("1989/3/13", "1989-03-13"),
    ("1989.3.13", "1989-03-13"),
    ("1989年3月13日", "1989-03-13"),
    ("1989 年 3 月 13 日", "1989-03-13"),
    ("１９８９－０３－１３", "1989-03-13"),
    ("1989-03-13T00:00:00+08:00", "1989-03-13"),
    ("1989-03-13T23:30:00Z", "1989-03-13"),  # the date as written, no zone shift
    ("1989-3-13 10:00", "1989-03-13"),
    ("1989-03", "1989-03"),
    ("1989-3", "1989-03"),
    ("1989年3月", "1989-03"),
    ("1989", "1989"),
    ("1989年", "1989"),
    ("2000-02-29", "2000-02-29"),
    ("1900-02-29", None),
    ("1989-02-30", None),
    ("19890230", None),
    ("1989-13", None),
    ("1989-00-10", None),
    ("0000", None),
    ("13/03/1989", None),
    ("198903", None),
    ("", None),
    ("unknown", None),
])
def test_normalize_date(text: str, expected: str | None) -> None:
    assert normalize_date(text) == expected
