"""居民身份证 numbers (公民身份号码), GB 11643-1999.

Layout of the 18-character number (GB 11643-1999 §5.1): 6-digit address
code (§5.2, GB/T 2260) + 8-digit birth date YYYYMMDD (§5.3, GB/T 7408) +
3-digit sequence code (§5.4, odd for men, even for women) + 1 check character
(§5.5, ISO 7064:1983 MOD 11-2, value 10 written ``X``; worked in Appendix B).
The legacy 15-digit number (GB 11643-1989) has a 2-digit year and no check
character; it converts by inserting ``19`` after the address code and
appending the check character.

Parsing never raises for bad data: a registration desk hands us whatever was
typed, and the MPI needs to know *why* a number is wrong (a transposed digit is
still evidence for a match), so :func:`parse_id_number` returns an
:class:`IdNumber` with ``valid`` and ``reason`` instead.  Nothing here logs:
the number is sensitive personal information (GB/T 35273-2020 §3.2 and
Appendix B).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from typing import Literal

__all__ = ["EARLIEST_BIRTH", "IdNumber", "check_char", "contradictions", "parse_id_number"]

# ISO 7064 MOD 11-2 as GB 11643-1999 §5.5 tabulates it: weight of position i
# is 2^(17-i) mod 11, and the check value (12 - sum mod 11) mod 11 is looked up
# directly by sum mod 11.
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_DIGITS = frozenset("0123456789")

# First two digits of the GB/T 2260 address code: the province-level divisions.
# 71 台湾 is reserved in GB/T 2260; 81/82/83 are the 港澳台居民居住证 numbers
# (国办发〔2018〕81号), which follow GB 11643 with address codes 810000 (Hong
# Kong), 820000 (Macao) and 830000 (Taiwan).
_PROVINCES = frozenset(
    [f"{n}" for n in range(11, 16)]
    + [f"{n}" for n in range(21, 24)]
    + [f"{n}" for n in range(31, 38)]
    + [f"{n}" for n in range(41, 47)]
    + [f"{n}" for n in range(50, 55)]
    + [f"{n}" for n in range(61, 66)]
    + ["71", "81", "82", "83"]
)

# GB 11643 sets no lower bound on the birth date, and its own worked example
# 440524188001010014 was born in 1880, so the floor only rejects typing errors
# such as year 0989; callers wanting a stricter plausibility window pass
# ``earliest``.
EARLIEST_BIRTH = date(1800, 1, 1)

# Clerks and scanners add spaces or hyphens in groups (110105 19491231 002X);
# NFKC has already turned full-width forms and U+3000 into ASCII.
_NOISE = re.compile(r"[\s\-\u2010-\u2015\u2212]+")


def check_char(first17: str) -> str:
    """ISO 7064 MOD 11-2 check character of the first 17 digits (GB 11643-1999 §5.5).

    Raises ``ValueError`` if ``first17`` is not 17 ASCII digits: that is a
    programming error, unlike a bad number typed by a person, which
    :func:`parse_id_number` reports without raising.
    """
    if len(first17) != 17 or not set(first17) <= _DIGITS:
        raise ValueError(f"need 17 digits, got {len(first17)} characters")
    total = sum(int(c) * w for c, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK[total % 11]


@dataclass(frozen=True, slots=True)
class IdNumber:
    """A parsed ID number.

    ``value`` is the canonical 18-character form (upper-case ``X``) whenever
    the input has the right length and characters, even if it is invalid for
    another reason, so that two records can still be compared digit by digit.
    ``region``, ``birth_date`` and ``sex`` are filled when ``value`` is and that
    part of the number decodes on its own (a real province, a real date in
    range); a number failing only its check character has all three.
    """

    raw: str
    value: str | None
    valid: bool
    legacy: bool
    reason: str | None
    region: str | None
    birth_date: date | None
    sex: Literal["male", "female"] | None


def _clean(raw: str) -> str:
    return _NOISE.sub("", unicodedata.normalize("NFKC", raw)).upper()


def _invalid(raw: str, reason: str, *, legacy: bool = False) -> IdNumber:
    return IdNumber(raw=raw, value=None, valid=False, legacy=legacy, reason=reason,
                    region=None, birth_date=None, sex=None)


def parse_id_number(raw: str, *, today: date | None = None, earliest: date = EARLIEST_BIRTH) -> IdNumber:
    """Parse and validate an 18- or legacy 15-digit number (GB 11643-1999 §5).

    Tolerates surrounding and internal spaces and hyphens, full-width digits
    and a lower-case or full-width ``x``.  Invalid when the length or
    characters are wrong, the first two digits are not a province-level code,
    the birth date is not a real date or lies outside ``earliest``..``today``
    (default: the current date), or the check character does not match.
    ``reason`` lists every failed rule, separated by ``"; "``.
    """
    s = _clean(raw)
    legacy = len(s) == 15
    if len(s) not in (15, 18):
        return _invalid(raw, f"length {len(s)}")
    if legacy:
        if not set(s) <= _DIGITS:
            return _invalid(raw, "15-digit number contains a non-digit", legacy=True)
        first17 = s[:6] + "19" + s[6:]
        value = first17 + check_char(first17)
    else:
        if not set(s[:17]) <= _DIGITS:
            return _invalid(raw, "non-digit in the first 17 characters")
        if s[17] not in _DIGITS and s[17] != "X":
            return _invalid(raw, "last character is not a digit or X")
        value = s

    reasons: list[str] = []
    region: str | None = value[:6]
    if value[:2] not in _PROVINCES:
        reasons.append(f"region code {value[:2]} is not a province")
        region = None

    birth: date | None
    ymd = value[6:14]
    try:
        birth = date(int(ymd[:4]), int(ymd[4:6]), int(ymd[6:8]))
    except ValueError:
        reasons.append(f"birth date {ymd} is not a date")
        birth = None
    else:
        if birth < earliest:
            reasons.append(f"birth date {ymd} is before {earliest.isoformat()}")
            birth = None
        elif birth > (today or date.today()):
            reasons.append(f"birth date {ymd} is in the future")
            birth = None

    # Only 18-character input can carry a wrong check character: the legacy
    # form has none and we computed it above.
    if not legacy and check_char(value[:17]) != value[17]:
        reasons.append("check character mismatch")

    sex: Literal["male", "female"] = "male" if int(value[16]) % 2 == 1 else "female"
    return IdNumber(raw=raw, value=value, valid=not reasons, legacy=legacy,
                    reason="; ".join(reasons) or None, region=region, birth_date=birth, sex=sex)


_FHIR_DATE = re.compile(r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2}))?)?")


def contradictions(idn: IdNumber, *, birth_date: str | None, gender: str | None) -> list[str]:
    """Reasons the record's demographics flatly contradict a valid ID number.

    ``birth_date`` is a FHIR R4 primitive ``date`` (YYYY, YYYY-MM or
    YYYY-MM-DD): only the parts present are compared, and a value that is not a
    FHIR date cannot contradict anything.  ``gender`` is a FHIR
    AdministrativeGender code: only ``male``/``female`` can contradict the sex
    the sequence code encodes (GB 11643-1999 §5.4); ``other``/``unknown`` are
    not evidence either way.  Empty when consistent or the number is invalid.
    """
    if not idn.valid or idn.birth_date is None or idn.sex is None:
        return []
    out: list[str] = []
    m = _FHIR_DATE.fullmatch(birth_date.strip()) if birth_date else None
    if m is not None:
        encoded = idn.birth_date.isoformat()
        given = "-".join(p for p in m.groups() if p is not None)
        if encoded[: len(given)] != given:
            out.append(f"birthDate {given} differs from {encoded[: len(given)]} encoded in the ID number")
    if gender in ("male", "female") and gender != idn.sex:
        out.append(f"gender {gender} differs from {idn.sex} encoded in the ID number")
    return out
