"""GB 11643-1999 ID numbers: hutong.mpi.idnumber."""

from __future__ import annotations

import dataclasses
import random
from datetime import date, timedelta

import pytest

from hutong.mpi import idnumber
from hutong.mpi.idnumber import IdNumber, check_char, contradictions, parse_id_number
from hutong.synth import idcard
from hutong.synth.regions import DISTRICTS, ORIGIN_REGIONS

# The worked examples of GB 11643-1999 (Appendix A) and a common third one.
KNOWN_VALID = {
    "11010519491231002X": ("110105", date(1949, 12, 31), "female"),
    "440524188001010014": ("440524", date(1880, 1, 1), "male"),
    "34052419800101001X": ("340524", date(1980, 1, 1), "male"),
}
TODAY = date(2024, 6, 1)


def with_check(first17: str) -> str:
    return first17 + check_char(first17)


@pytest.mark.parametrize("number", sorted(KNOWN_VALID))
def test_known_valid_numbers(number: str) -> None:
    region, birth, sex = KNOWN_VALID[number]
    assert check_char(number[:17]) == number[17]
    assert parse_id_number(number, today=TODAY) == IdNumber(
        raw=number, value=number, valid=True, legacy=False, reason=None, region=region, birth_date=birth, sex=sex)


def test_check_char_weights_and_rejects_non_digits() -> None:
    assert check_char("00000000000000000") == "1"  # sum 0
    assert check_char("00000000000000001") == "X"  # last weight 2: sum 2, check value 10
    assert check_char("10000000000000000") == "5"  # first weight 7: (12 - 7) % 11 = 5
    for bad in ("1101051949123100", "110105194912310023", "1101051949123100A", "１１０１０５１９４９１２３１００２"):
        with pytest.raises(ValueError, match="need 17 digits"):
            check_char(bad)


def test_synth_generator_uses_the_mpi_check_char() -> None:
    assert idcard.check_char is idnumber.check_char


def test_legacy_15_digit_number_converts() -> None:
    idn = parse_id_number("370986890623212", today=TODAY)
    assert idn == IdNumber(raw="370986890623212", value="370986198906232123", valid=True, legacy=True,
                           reason=None, region="370986", birth_date=date(1989, 6, 23), sex="female")


def test_legacy_number_with_impossible_date_keeps_its_value() -> None:
    idn = parse_id_number("370986891323212", today=TODAY)
    assert not idn.valid and idn.legacy
    assert idn.reason == "birth date 19891323 is not a date"
    assert idn.value == with_check("37098619891323212")
    assert idn.birth_date is None and idn.region == "370986"


@pytest.mark.parametrize("raw", [
    " 11010519491231002X ",
    "11010519491231002x",
    "110105 19491231 002X",
    "110105-1949-1231-002x",
    "110105\u300019491231\u3000002X",
    "１１０１０５１９４９１２３１００２Ｘ",
    "１１０１０５１９４９１２３１００２ｘ",
    "110105–19491231–002X",  # en dash from a word processor
])
def test_spaces_hyphens_and_full_width_are_tolerated(raw: str) -> None:
    idn = parse_id_number(raw, today=TODAY)
    assert idn.valid, idn.reason
    assert idn.value == "11010519491231002X"
    assert idn.raw == raw


def test_wrong_check_character_keeps_the_decoded_parts() -> None:
    good = "11010519491231002X"
    wrong = [c for c in "0123456789X" if c != good[17]]
    assert len(wrong) == 10
    for c in wrong:
        idn = parse_id_number(good[:17] + c, today=TODAY)
        assert idn == IdNumber(raw=good[:17] + c, value=good[:17] + c, valid=False, legacy=False,
                               reason="check character mismatch", region="110105",
                               birth_date=date(1949, 12, 31), sex="female")


def transpositions(number: str) -> list[str]:
    """Every swap of two adjacent, different characters."""
    return [number[:i] + number[i + 1] + number[i] + number[i + 2:]
            for i in range(len(number) - 1) if number[i] != number[i + 1]]


@pytest.mark.parametrize("number", sorted(KNOWN_VALID))
def test_every_adjacent_transposition_is_rejected(number: str) -> None:
    swapped = transpositions(number)
    assert len(swapped) >= 9  # the examples have runs of equal digits, but most pairs differ
    for s in swapped:
        idn = parse_id_number(s, today=TODAY)
        assert not idn.valid, s
        assert idn.reason is not None


def test_transposition_inside_the_body_still_decodes() -> None:
    # 002 → 020 in the sequence code: still a plausible number, caught only by
    # the check character, so it must stay comparable digit by digit.
    idn = parse_id_number("11010519491231020X", today=TODAY)
    assert idn.reason == "check character mismatch"
    assert idn.value == "11010519491231020X"
    assert idn.region == "110105" and idn.birth_date == date(1949, 12, 31) and idn.sex == "female"


@pytest.mark.parametrize(("raw", "reason"), [
    ("11010519491231002", "length 17"),
    ("11010519491231002X1", "length 19"),
    ("1101051949123100", "length 16"),
    ("", "length 0"),
    ("  -  ", "length 0"),
    ("1101051949123100AX", "non-digit in the first 17 characters"),
    ("A1010519491231002X", "non-digit in the first 17 characters"),
    ("11010519491231002Y", "last character is not a digit or X"),
    ("37098689062321X", "15-digit number contains a non-digit"),
])
def test_wrong_length_or_characters(raw: str, reason: str) -> None:
    idn = parse_id_number(raw, today=TODAY)
    assert idn == IdNumber(raw=raw, value=None, valid=False, legacy=reason.startswith("15"),
                           reason=reason, region=None, birth_date=None, sex=None)


def test_february_30_is_not_a_date() -> None:
    number = with_check("11010519490230002")
    idn = parse_id_number(number, today=TODAY)
    assert not idn.valid
    assert idn.reason == "birth date 19490230 is not a date"
    assert idn.value == number and idn.birth_date is None and idn.region == "110105"


def test_february_29_only_in_leap_years() -> None:
    assert parse_id_number(with_check("11010520000229002"), today=TODAY).valid
    assert parse_id_number(with_check("11010519000229002"), today=TODAY).reason == "birth date 19000229 is not a date"


def test_future_birth_date() -> None:
    tomorrow = with_check("11010520240602002")
    assert parse_id_number(tomorrow, today=TODAY).reason == "birth date 20240602 is in the future"
    assert parse_id_number(tomorrow, today=date(2024, 6, 2)).valid
    born_next_year = with_check(f"110105{date.today().year + 1}0101002")
    assert parse_id_number(born_next_year).reason == f"birth date {date.today().year + 1}0101 is in the future"


def test_birth_date_floor() -> None:
    old = with_check("11010517991231002")
    assert parse_id_number(old, today=TODAY).reason == "birth date 17991231 is before 1800-01-01"
    assert parse_id_number(with_check("11010518000101002"), today=TODAY).valid
    # A stricter window is the caller's choice; the standard's own example is from 1880.
    strict = parse_id_number("440524188001010014", today=TODAY, earliest=date(1900, 1, 1))
    assert strict.reason == "birth date 18800101 is before 1900-01-01"


def test_region_99_is_not_a_province() -> None:
    number = with_check("99010519491231002")
    idn = parse_id_number(number, today=TODAY)
    assert not idn.valid
    assert idn.reason == "region code 99 is not a province"
    assert idn.region is None and idn.value == number and idn.birth_date == date(1949, 12, 31)


PROVINCES = ["11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37",
             "41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65",
             "71", "81", "82", "83"]


def test_province_codes() -> None:
    for p in (f"{n:02d}" for n in range(100)):
        idn = parse_id_number(with_check(p + "010519491231002"), today=TODAY)
        assert idn.valid is (p in PROVINCES), p
        if p not in PROVINCES:
            assert idn.reason == f"region code {p} is not a province"


def test_several_failures_are_all_reported() -> None:
    idn = parse_id_number("990105194902300021", today=TODAY)
    assert idn.reason == "region code 99 is not a province; birth date 19490230 is not a date; check character mismatch"


def test_id_number_is_immutable() -> None:
    idn = parse_id_number("11010519491231002X", today=TODAY)
    with pytest.raises(dataclasses.FrozenInstanceError):
        idn.valid = False  # type: ignore[misc]


def synthetic_numbers(n: int, seed: int = 11643) -> list[tuple[str, str, date, int]]:
    rng = random.Random(seed)
    regions = [d.code for d in DISTRICTS] + [o.code for o in ORIGIN_REGIONS] + ["810000", "820000", "830000"]
    first, span = date(1900, 1, 1), (TODAY - date(1900, 1, 1)).days
    out = []
    for _ in range(n):
        region, birth, seq = rng.choice(regions), first + timedelta(days=rng.randint(0, span)), rng.randint(0, 999)
        out.append((idcard.make(region, birth, seq), region, birth, seq))
    return out


def test_generated_numbers_parse_as_valid() -> None:
    numbers = synthetic_numbers(2000)
    assert len({n for n, *_ in numbers}) > 1990
    assert any(n.endswith("X") for n, *_ in numbers)
    for number, region, birth, seq in numbers:
        idn = parse_id_number(number.lower(), today=TODAY)
        assert idn.valid, (number, idn.reason)
        assert idn.value == number
        assert idn.region == region
        assert idn.birth_date == birth
        assert idn.sex == ("male" if seq % 2 else "female")
        assert idn.sex == idcard.sex(number)
        if birth.year < 2000:
            legacy = parse_id_number(idcard.to_legacy15(number), today=TODAY)
            assert legacy.valid and legacy.legacy and legacy.value == number


def test_generated_numbers_reject_every_adjacent_transposition() -> None:
    for number, *_ in synthetic_numbers(500, seed=7):
        for s in transpositions(number):
            assert not parse_id_number(s, today=TODAY).valid, (number, s)


# --- contradictions -----------------------------------------------------------

WOMAN_1949 = parse_id_number("11010519491231002X", today=TODAY)  # 1949-12-31, female


@pytest.mark.parametrize(("birth_date", "gender"), [
    ("1949-12-31", "female"),
    ("1949-12", "female"),
    ("1949", None),
    (None, None),
    (None, "unknown"),
    ("1949-12-31", "other"),
    ("31/12/1950", None),  # not a FHIR date: cannot contradict
    (" 1949-12-31 ", "female"),
])
def test_consistent_demographics(birth_date: str | None, gender: str | None) -> None:
    assert contradictions(WOMAN_1949, birth_date=birth_date, gender=gender) == []


@pytest.mark.parametrize(("birth_date", "gender", "expected"), [
    ("1950-12-31", None, ["birthDate 1950-12-31 differs from 1949-12-31 encoded in the ID number"]),
    ("1949-12-13", "female", ["birthDate 1949-12-13 differs from 1949-12-31 encoded in the ID number"]),
    ("1949-11", None, ["birthDate 1949-11 differs from 1949-12 encoded in the ID number"]),
    ("1948", "unknown", ["birthDate 1948 differs from 1949 encoded in the ID number"]),
    (None, "male", ["gender male differs from female encoded in the ID number"]),
    ("1950", "male", ["birthDate 1950 differs from 1949 encoded in the ID number",
                      "gender male differs from female encoded in the ID number"]),
])
def test_contradicting_demographics(birth_date: str | None, gender: str | None, expected: list[str]) -> None:
    assert contradictions(WOMAN_1949, birth_date=birth_date, gender=gender) == expected


def test_legacy_number_contradictions_use_the_converted_date() -> None:
    idn = parse_id_number("370986890623212", today=TODAY)
    assert contradictions(idn, birth_date="1989-06-23", gender="female") == []
    assert contradictions(idn, birth_date="2089-06-23", gender="male") == [
        "birthDate 2089-06-23 differs from 1989-06-23 encoded in the ID number",
        "gender male differs from female encoded in the ID number"]


def test_invalid_number_contradicts_nothing() -> None:
    bad = parse_id_number("110105194912310021", today=TODAY)  # check character mismatch
    assert bad.birth_date is not None and bad.sex == "female"
    assert contradictions(bad, birth_date="1990-01-01", gender="male") == []
