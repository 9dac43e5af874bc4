"""Controlled registration noise: how one resident's record differs between institutions.

Each institution a resident visits registers them itself, so the same person
appears as several source Patients whose demographics disagree in the ways
Chinese registration desks make them disagree.  Each kind below is applied
independently per source Patient with the configured probability
(``NoiseRates``), *only where it applies* (a homophone needs a character
that has one); the ground truth lists the kinds applied to every source
Patient, and the manifest reports, per kind, how many source Patients it
could apply to and how many it was applied to.

Kinds, in the order they are drawn:

==================  =============================================================  =====================================
kind                what changes                                                   applies when
==================  =============================================================  =====================================
name_homophone      one character replaced by a homophone (同音字), a pinyin-IME     a name character has a homophone
                    mis-pick: 李明 -> 李铭
name_typo           one character replaced by a look-alike (形近字: 颖/颍), or the    a character has a look-alike, or the
                    two given-name characters swapped (张明华 -> 张华明)             given name has two different characters
name_traditional    written in traditional characters (繁体): 张伟 -> 張偉            a name character has a traditional form
birthdate_swap      day and month swapped (1985-03-07 -> 1985-07-03)               day <= 12 and day != month
id_missing          no ID number recorded; rate by institution level (诊所 /        the resident has an ID number
                    社区+一级 / 二级+ hospitals)
id_legacy15         the legacy 15-digit number (GB 11643-1989) instead of 18        ID recorded, born 1900-1999
id_transposed       two adjacent, different digits swapped; check char kept, so    ID recorded and not id_legacy15
                    the number fails GB 11643 validation
phone_changed       the resident's previous mobile number                          always
address_moved       the resident's previous address (often another district)       always
==================  =============================================================  =====================================

Chinese names are not noised for passport holders (their Latin names are
copied from the passport); passport numbers are not noised.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hutong.synth import idcard
from hutong.synth.charvariants import HOMOPHONES, LOOKALIKES, TRADITIONAL
from hutong.synth.config import NoiseRates
from hutong.synth.residents import Address, Resident

KINDS: tuple[str, ...] = (
    "name_homophone", "name_typo", "name_traditional", "birthdate_swap", "id_missing", "id_legacy15",
    "id_transposed", "phone_changed", "address_moved",
)

DESCRIPTIONS: dict[str, str] = {
    "name_homophone": "one name character replaced by a homophone (同音字)",
    "name_typo": "one name character replaced by a look-alike (形近字) or the two given-name characters swapped",
    "name_traditional": "name written in traditional characters (繁体)",
    "birthdate_swap": "day and month of the birth date swapped (applies when day <= 12 and day != month)",
    "id_missing": "no ID number recorded (rate by institution level: clinic / primary / hospital)",
    "id_legacy15": "legacy 15-digit ID number recorded (born 1900-1999)",
    "id_transposed": "two adjacent different ID digits swapped, check character unchanged (fails validation)",
    "phone_changed": "previous mobile number recorded",
    "address_moved": "previous address recorded",
}


@dataclass(slots=True)
class Demographics:
    """What one institution recorded about a resident."""

    surname: str
    given: str
    birth_date: str  # ISO date text
    id_number: str | None  # as recorded (18 or 15 characters, maybe corrupted)
    phone: str
    address: Address


def id_missing_rate(rates: NoiseRates, level: str) -> float:
    if level == "clinic":
        return rates.id_missing_clinic
    if level in ("chc", "1"):
        return rates.id_missing_primary
    return rates.id_missing_hospital


def applicable(kind: str, r: Resident) -> bool:
    """Whether ``kind`` can apply to the clean resident (id_legacy15/id_transposed also need an ID recorded)."""
    if kind == "name_homophone":
        return not r.foreign and any(c in HOMOPHONES for c in r.surname + r.given)
    if kind == "name_typo":
        return not r.foreign and (any(c in LOOKALIKES for c in r.surname + r.given) or _swappable(r.given))
    if kind == "name_traditional":
        return not r.foreign and any(c in TRADITIONAL for c in r.surname + r.given)
    if kind == "birthdate_swap":
        return r.birth.day <= 12 and r.birth.day != r.birth.month
    if kind == "id_missing":
        return r.id_number is not None
    if kind == "id_legacy15":
        return r.id_number is not None and 1900 <= r.birth.year <= 1999
    if kind == "id_transposed":
        return r.id_number is not None
    if kind in ("phone_changed", "address_moved"):
        return True
    raise ValueError(f"unknown noise kind {kind!r}")


def _swappable(given: str) -> bool:
    return len(given) == 2 and given[0] != given[1]


def apply(r: Resident, level: str, rates: NoiseRates,
          rng: random.Random) -> tuple[Demographics, list[str], list[str]]:
    """What an institution of ``level`` records for ``r``: demographics, kinds applied, kinds that applied.

    The third list (kinds eligible for this source Patient) lets the
    manifest report observed rates over the cases each kind could hit.
    """
    applied: list[str] = []
    eligible: list[str] = []
    surname, given = r.surname, r.given
    if not r.foreign:
        # Name kinds work on the clean name's characters and prefer positions
        # not already changed, so that each applied kind is visible.
        clean = surname + given
        cur = list(clean)
        changed: set[int] = set()
        if applicable("name_homophone", r):
            eligible.append("name_homophone")
            if rng.random() < rates.name_homophone:
                _substitute(rng, clean, cur, changed, HOMOPHONES)
                applied.append("name_homophone")
        if applicable("name_typo", r):
            eligible.append("name_typo")
            if rng.random() < rates.name_typo:
                s0 = len(surname)
                can_swap = len(given) == 2 and cur[s0] != cur[s0 + 1]
                has_lookalike = any(c in LOOKALIKES for c in clean)
                # (With no look-alike, the given name was two different characters: swap them,
                # even in the rare case a homophone just made them equal.)
                if not has_lookalike or (can_swap and rng.random() < 0.4):
                    cur[s0], cur[s0 + 1] = cur[s0 + 1], cur[s0]
                    changed.update((s0, s0 + 1))
                else:
                    _substitute(rng, clean, cur, changed, LOOKALIKES)
                applied.append("name_typo")
        if applicable("name_traditional", r):
            eligible.append("name_traditional")
            if rng.random() < rates.name_traditional:
                cur = [TRADITIONAL.get(c, c) for c in cur]
                applied.append("name_traditional")
        full = "".join(cur)
        surname, given = full[: len(surname)], full[len(surname):]
    b = r.birth
    birth = b.isoformat()
    if applicable("birthdate_swap", r):
        eligible.append("birthdate_swap")
        if rng.random() < rates.birthdate_swap:
            birth = f"{b.year:04d}-{b.day:02d}-{b.month:02d}"
            applied.append("birthdate_swap")
    id_number = r.id_number
    if id_number is not None:
        eligible.append("id_missing")
        if rng.random() < id_missing_rate(rates, level):
            id_number = None
            applied.append("id_missing")
        else:
            legacy = False
            if 1900 <= b.year <= 1999:
                eligible.append("id_legacy15")
                if rng.random() < rates.id_legacy15:
                    id_number = idcard.to_legacy15(id_number)
                    applied.append("id_legacy15")
                    legacy = True
            if not legacy:
                eligible.append("id_transposed")
                if rng.random() < rates.id_transposed:
                    id_number = _transpose(rng, id_number)
                    applied.append("id_transposed")
    phone = r.phone
    eligible.append("phone_changed")
    if rng.random() < rates.phone_changed:
        phone = r.old_phone
        applied.append("phone_changed")
    address = r.address
    eligible.append("address_moved")
    if rng.random() < rates.address_moved:
        address = r.old_address
        applied.append("address_moved")
    return Demographics(surname, given, birth, id_number, phone, address), applied, eligible


def _substitute(rng: random.Random, clean: str, cur: list[str], changed: set[int], table: dict[str, str]) -> None:
    """Replace one character that ``table`` has a variant for, preferring untouched positions."""
    positions = [i for i, c in enumerate(clean) if c in table]
    fresh = [i for i in positions if i not in changed]
    pool = fresh or positions
    i = pool[int(rng.random() * len(pool))]
    options = table[clean[i]]
    cur[i] = options[int(rng.random() * len(options))]
    changed.add(i)


def _transpose(rng: random.Random, number: str) -> str:
    # Only the 17 information digits; positions where the neighbours differ.
    positions = [i for i in range(16) if number[i] != number[i + 1]]
    i = positions[int(rng.random() * len(positions))]
    return number[:i] + number[i + 1] + number[i] + number[i + 2:]
