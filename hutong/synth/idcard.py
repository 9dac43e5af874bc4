"""GB 11643-1999 citizen identity numbers (公民身份号码), as the generator needs them.

Layout of the 18-character number (GB 11643-1999 §4-§5):
6 digits address code (GB/T 2260) + 8 digits birth date YYYYMMDD +
3 digits sequence code (odd for men, even for women) + 1 check character
(ISO 7064 MOD 11-2; value 10 is written ``X``).

The legacy 15-digit number (GB 11643-1989) has a 2-digit year and no check
character; it converts by inserting ``19`` and appending the check character.

The MPI owns the canonical check character (``hutong.mpi.idnumber``); this
small module exists so that the generator can make valid numbers and the
tests can check them.
"""

from __future__ import annotations

from datetime import date

# Re-exported: the generator and its tests call ``idcard.check_char``.
from hutong.mpi.idnumber import check_char as check_char

_DIGITS = frozenset("0123456789")


def make(region: str, birth: date, sequence: int) -> str:
    """The 18-character number for region code, birth date and sequence 0..999."""
    if not 0 <= sequence <= 999:
        raise ValueError(f"sequence out of range: {sequence}")
    first17 = f"{region}{birth.year:04d}{birth.month:02d}{birth.day:02d}{sequence:03d}"
    return first17 + check_char(first17)


def is_valid(number: str) -> bool:
    """True if ``number`` is a well-formed 18-character number with a real birth date."""
    if len(number) != 18 or not set(number[:17]) <= _DIGITS:
        return False
    if check_char(number[:17]) != number[17]:
        return False
    try:
        birth_date(number)
    except ValueError:
        return False
    return True


def birth_date(number: str) -> date:
    """Birth date encoded in an 18- or 15-character number."""
    if len(number) == 18:
        return date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    if len(number) == 15:
        return date(1900 + int(number[6:8]), int(number[8:10]), int(number[10:12]))
    raise ValueError(f"not an ID number: {number!r}")


def sex(number: str) -> str:
    """FHIR administrative gender from the sequence code: odd male, even female."""
    digit = number[16] if len(number) == 18 else number[14]
    return "male" if int(digit) % 2 == 1 else "female"


def region(number: str) -> str:
    """GB/T 2260 code of the issuing county."""
    return number[:6]


def to_legacy15(number: str) -> str:
    """The 15-character form of an 18-character number born in 1900-1999."""
    if number[6:8] != "19":
        raise ValueError(f"only numbers born 1900-1999 have a 15-digit form: {number!r}")
    return number[:6] + number[8:17]


def from_legacy15(number: str) -> str:
    """Convert a 15-character number to 18 characters (GB 11643-1999 Appendix)."""
    if len(number) != 15 or not set(number) <= _DIGITS:
        raise ValueError(f"need 15 digits, got {number!r}")
    first17 = number[:6] + "19" + number[6:]
    return first17 + check_char(first17)
