"""Residents: every ID number valid, unique, and consistent with birth date, sex and region."""

from __future__ import annotations

from collections import Counter
from datetime import date

from pypinyin import Style, pinyin

from hutong.synth import SynthConfig, idcard, iter_residents
from hutong.synth.charvariants import HOMOPHONES, TRADITIONAL
from hutong.synth.regions import DISTRICT_BY_CODE, ORIGIN_BY_CODE

CFG = SynthConfig(residents=6000, institutions=10, seed=11, hard_negative_rate=0.02)


def _all() -> list:  # type: ignore[type-arg]
    return [r for chunk in iter_residents(CFG) for r in chunk]


def test_id_numbers_valid_unique_and_consistent() -> None:
    residents = _all()
    assert len(residents) == CFG.residents
    numbers = [r.id_number for r in residents if r.id_number is not None]
    assert len(numbers) == len(set(numbers)), "ID numbers must be unique"
    for r in residents:
        if r.id_number is None:
            continue
        n = r.id_number
        assert idcard.is_valid(n), n
        assert idcard.birth_date(n) == r.birth
        assert idcard.sex(n) == r.sex
        assert idcard.region(n) == r.id_region
        assert r.id_region in DISTRICT_BY_CODE or r.id_region in ORIGIN_BY_CODE


def test_population_shape() -> None:
    residents = _all()
    today = CFG.today
    ages = [r.age(today) for r in residents]
    assert 0.08 < sum(a < 15 for a in ages) / len(ages) < 0.17  # census: 11.9% under 15
    assert 0.14 < sum(a >= 60 for a in ages) / len(ages) < 0.25  # census: 19.6% 60+
    assert 0.47 < sum(r.sex == "male" for r in residents) / len(residents) < 0.55
    # Most residents live where their number was issued; migrants hold numbers from elsewhere.
    migrants = sum(r.id_region in ORIGIN_BY_CODE for r in residents)
    assert 0.1 < migrants / len(residents) < 0.3
    # Surnames follow the national distribution: 王李张刘陈 are about 30-40% of people.
    chinese = [r for r in residents if not r.foreign]
    top5 = sum(r.surname in "王李张刘陈" for r in chinese) / len(chinese)
    assert 0.28 < top5 < 0.42
    assert Counter(r.surname for r in chinese).most_common(1)[0][0] in "王李张"


def test_variants_present() -> None:
    residents = _all()
    assert any(r.passport is not None and r.id_number is None for r in residents)
    infants = [r for r in residents if r.age(CFG.today) < 1]
    assert infants and any(r.id_number is None for r in infants)
    assert all(r.id_number is not None for r in residents if r.age(CFG.today) >= 4 and not r.foreign)
    assert any(r.health_card for r in residents)
    assert all(r.phone.isdigit() and len(r.phone) == 11 and r.phone[0] == "1" for r in residents)
    assert all(r.birth <= CFG.today for r in residents)


def test_hard_negatives_share_name_and_birth_date() -> None:
    residents = _all()
    by_number = {r.number: r for r in residents}
    pairs = [(by_number[r.namesake_of], r) for r in residents if r.namesake_of is not None]
    assert len(pairs) > 50
    for a, b in pairs:
        assert a.key != b.key
        assert (a.surname, a.given, a.birth) == (b.surname, b.given, b.birth)
        assert a.id_number != b.id_number or a.id_number is None
        assert a.phone != b.phone


def test_same_seed_same_residents_other_seed_others() -> None:
    a = [(r.name, r.id_number) for r in next(iter(iter_residents(CFG)))]
    b = [(r.name, r.id_number) for r in next(iter(iter_residents(CFG)))]
    c = [(r.name, r.id_number) for r in next(iter(iter_residents(SynthConfig(residents=200, seed=12))))]
    assert a[:200] == b[:200]
    assert a[:200] != c


def test_homophone_groups_really_sound_alike() -> None:
    # Heteronyms count by any reading: 肖 is xiao4 in 肖像 but xiao1 as a surname.
    def sounds(c: str) -> set[str]:
        return set(pinyin(c, style=Style.TONE3, heteronym=True)[0])

    for char, others in HOMOPHONES.items():
        for o in others:
            assert sounds(char) & sounds(o), (char, o)


def test_traditional_forms_differ() -> None:
    assert all(len(s) == 1 and len(t) == 1 and s != t for s, t in TRADITIONAL.items())


def test_id_sequence_counter_never_repeats() -> None:
    from hutong.synth.residents import IdSequencer

    seq = IdSequencer(date(2026, 11, 1))
    got = [seq.take("110105", date(1980, 1, 1), True) for _ in range(250)]
    assert None not in got and len(set(got)) == 250 and all(s is not None and s % 2 == 1 for s in got)
    assert seq.take("110105", date(1980, 1, 1), True) is None  # the day is full: caller moves the date
