"""Field comparisons of the Chinese resident model: Features x Features -> gamma.

Each comparison returns the index of the most similar level reached by any
pair of values (features are multi-valued: a person has every phone and
address its sources ever gave), or NULL when either side has no value
(Fellegi-Sunter: missing values are no evidence either way).  The levels are
chosen for the noise Chinese registrations carry:

- name: exact (after NFKC, 繁->简, spaces) / same pinyin (同音字: 李明 vs 李铭) /
  similar (one look-alike character 颖/颍, swapped given-name characters, one
  edit in a long name; in a Han name of three or more characters also two
  slips of which one is a homophone: 王浩鹏 -> 王皓鹏 -> 王鹏皓) / else;
- birth date: exact / day and month swapped / one component differs / else;
- ID number: exact / close (one or two digits wrong, or two adjacent digits
  swapped: typed-in numbers that fail the GB 11643 check) / else;
- address: exact / similar (the same house numbers, written differently:
  character-bigram overlap >= 0.5) / else.
"""

from __future__ import annotations

import re
from functools import lru_cache

from pypinyin import Style, lazy_pinyin
from rapidfuzz.distance import Levenshtein

from hutong.mpi.features import Features
from hutong.mpi.fellegi_sunter import NULL, ComparisonSpec

ID, NAME, BIRTH, SEX, PHONE, ADDRESS, CARD, PASSPORT = range(8)

COMPARISONS: tuple[ComparisonSpec, ...] = (
    ComparisonSpec("id_number", ("exact", "close", "else")),
    ComparisonSpec("name", ("exact", "pinyin", "similar", "else"), tf=True),
    ComparisonSpec("birth_date", ("exact", "swapped", "close", "else")),
    ComparisonSpec("sex", ("exact", "else")),
    ComparisonSpec("phone", ("exact", "else")),
    ComparisonSpec("address", ("exact", "similar", "else")),
    ComparisonSpec("health_card", ("exact", "else")),
    ComparisonSpec("passport", ("exact", "else")),
)

Gamma = tuple[int, int, int, int, int, int, int, int]


def _exact(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    if not a or not b:
        return NULL
    return 0 if not set(a).isdisjoint(b) else 1


def _id_close(x: str, y: str) -> bool:
    """At most two positions differ: one mistyped digit, two adjacent digits
    swapped, or two slips; GB 11643's check rejects most such numbers, so one
    of the two is usually invalid."""
    if len(x) != len(y):
        return False
    return sum(1 for p, q in zip(x, y, strict=True) if p != q) <= 2


def compare_id(a: Features, b: Features) -> int:
    av = a.ids + a.bad_ids
    bv = b.ids + b.bad_ids
    if not av or not bv:
        return NULL
    if not set(av).isdisjoint(bv):
        return 0
    # Two valid, self-consistent numbers that differ are different people's
    # numbers, not a typo: no "close" credit.
    if a.ids and b.ids and not a.bad_ids and not b.bad_ids:
        return 2
    for x in av:
        for y in bv:
            if _id_close(x, y):
                return 1
    return 2


@lru_cache(maxsize=65536)
def _syllables(name: str) -> tuple[str, ...] | None:
    """Toneless pinyin per character of a Han name (the readings of
    normalize.name_pinyin); None when some character is not Han."""
    s = tuple(lazy_pinyin(name, style=Style.NORMAL))
    return s if len(s) == len(name) else None


@lru_cache(maxsize=65536)
def _name_similar(x: str, y: str) -> bool:
    if len(x) == len(y):
        if sorted(x) == sorted(y):
            return True  # given-name characters swapped
        diff = sum(1 for p, q in zip(x, y, strict=True) if p != q)
        if diff == 1 and len(x) >= 2:
            return True  # one look-alike or mistyped character
        if len(x) >= 3:
            # Two slips, one of them a homophone: a homophone plus a look-alike
            # (王华忠 / 玉骅忠) or plus swapped given-name characters (孟丽娜 /
            # 孟娜立).  Compared by reading, that is one slip.  Not in two-character
            # names, where it would pair 张伟 with 王炜 (another family, same reading).
            sx, sy = _syllables(x), _syllables(y)
            if sx is not None and sy is not None and (
                    sorted(sx) == sorted(sy) or sum(1 for p, q in zip(sx, sy, strict=True) if p != q) == 1):
                return True
    # Latin names (foreigners, pinyin entry): one edit in a longer name.
    return max(len(x), len(y)) >= 5 and Levenshtein.distance(x, y) <= 1


def compare_name(a: Features, b: Features) -> int:
    if not a.names or not b.names:
        return NULL
    if not set(a.names).isdisjoint(b.names):
        return 0
    if not set(a.pinyins).isdisjoint(b.pinyins):
        return 1
    for x in a.names:
        for y in b.names:
            if _name_similar(x, y):
                return 2
    return 3


def _date_level(x: str, y: str) -> int:
    if x == y:
        return 0
    if len(x) == 10 and len(y) == 10:
        if x[:4] == y[:4] and x[5:7] == y[8:10] and x[8:10] == y[5:7]:
            return 1
        same = (x[:4] == y[:4]) + (x[5:7] == y[5:7]) + (x[8:10] == y[8:10])
        if same == 2:
            return 2
    return 3


def compare_birth(a: Features, b: Features) -> int:
    if not a.birth_dates or not b.birth_dates:
        return NULL
    return min(_date_level(x, y) for x in a.birth_dates for y in b.birth_dates)


@lru_cache(maxsize=65536)
def _bigrams(s: str) -> frozenset[str]:
    return frozenset(s[i:i + 2] for i in range(len(s) - 1)) if len(s) > 1 else frozenset((s,))


_NUMBER = re.compile(r"[0-9]+")


@lru_cache(maxsize=65536)
def _numbers(s: str) -> tuple[str, ...]:
    return tuple(_NUMBER.findall(s))


def _address_level(x: str, y: str) -> int:
    if x == y:
        return 0
    # Another 号院, 楼, 单元 or 室 on the same street is a neighbour, not the same
    # address: a Beijing address is mostly district and street, so bigram overlap
    # alone rated different houses of one street 'similar' (seed 2 region: 1.1e-3
    # of random pairs of residents, 11x the default u; namesakes in the same
    # district were auto-merged on it).
    if _numbers(x) != _numbers(y):
        return 2
    bx, by = _bigrams(x), _bigrams(y)
    union = len(bx | by)
    return 1 if union and len(bx & by) / union >= 0.5 else 2


def compare_address(a: Features, b: Features) -> int:
    if not a.addresses or not b.addresses:
        return NULL
    return min(_address_level(x, y) for x in a.addresses for y in b.addresses)


def gamma(a: Features, b: Features) -> Gamma:
    return (
        compare_id(a, b),
        compare_name(a, b),
        compare_birth(a, b),
        _exact(a.sexes, b.sexes),
        _exact(a.phones, b.phones),
        compare_address(a, b),
        _exact(a.health_cards, b.health_cards),
        _exact(a.passports, b.passports),
    )
