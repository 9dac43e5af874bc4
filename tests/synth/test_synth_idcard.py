"""GB 11643 ID numbers and GB 32100 institution codes."""

from __future__ import annotations

from datetime import date

import pytest

from hutong.synth import idcard, uscc


@pytest.mark.parametrize("number", ["11010519491231002X", "440524188001010014", "34052419800101001X"])
def test_known_valid_numbers(number: str) -> None:
    assert idcard.is_valid(number)
    assert idcard.check_char(number[:17]) == number[17]


def test_wrong_check_character_or_date_is_invalid() -> None:
    assert not idcard.is_valid("110105194912310021")
    assert not idcard.is_valid("11010519491331002X")  # month 13
    assert not idcard.is_valid("11010519491231002")
    assert not idcard.is_valid("1101051949123100AX")


def test_legacy_15_converts_to_18() -> None:
    assert idcard.from_legacy15("370986890623212") == "370986198906232123"
    assert idcard.to_legacy15("370986198906232123") == "370986890623212"
    assert idcard.birth_date("370986890623212") == date(1989, 6, 23)
    assert idcard.sex("370986890623212") == "female"


def test_make_and_parse_round_trip() -> None:
    n = idcard.make("110105", date(1985, 3, 7), 123)
    assert idcard.is_valid(n)
    assert idcard.region(n) == "110105"
    assert idcard.birth_date(n) == date(1985, 3, 7)
    assert idcard.sex(n) == "male"
    assert idcard.sex(idcard.make("110105", date(1985, 3, 7), 124)) == "female"


def test_unified_social_credit_code() -> None:
    assert uscc.is_valid("91350100M000100Y43")  # a commonly published valid example
    code = uscc.make(uscc.PUBLIC_INSTITUTION, "110105", 40012345)
    assert uscc.is_valid(code) and code.startswith("12110105")
    assert not uscc.is_valid(code[:-1] + ("0" if code[-1] != "0" else "1"))
