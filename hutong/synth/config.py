"""What region to generate: sizes, seed, reference date, noise rates.

Everything that changes the output is here, and nothing else does: the
reference date ``today`` is a fixed default (never the wall clock) so that
the same configuration always gives byte-identical files.  ``workers`` only
changes speed, never output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from hutong.errors import InvalidRequest
from hutong.synth.regions import DISTRICT_BY_CODE

MAX_RESIDENTS = 5_000_000  # 住院号 permutation modulus is 9,999,991
MAX_INSTITUTIONS = 20_000


class SynthConfigError(InvalidRequest):
    """An impossible generator parameter; ``parameter`` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__("HT-0070", f"{parameter}: {message}", expression=[parameter])
        self.parameter = parameter
        self.reason = message


@dataclass(frozen=True, slots=True)
class NoiseRates:
    """Probability of each noise kind per source Patient, where the kind applies.

    See ``hutong.synth.noise`` for what each kind does and when it applies;
    ``id_missing_*`` depend on the institution's level (small clinics often
    register patients without an ID number).
    """

    name_homophone: float = 0.03
    name_traditional: float = 0.01
    name_typo: float = 0.01
    birthdate_swap: float = 0.01
    id_missing_clinic: float = 0.35
    id_missing_primary: float = 0.08
    id_missing_hospital: float = 0.01
    id_legacy15: float = 0.03
    id_transposed: float = 0.01
    phone_changed: float = 0.08
    address_moved: float = 0.06

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class SynthConfig:
    residents: int = 2000
    institutions: int = 20
    seed: int = 1
    today: date = date(2026, 11, 1)
    years: int = 2  # history window before ``today``
    districts: Sequence[str] = ()  # GB/T 2260 codes; empty = all 16 Beijing districts
    noise: NoiseRates = field(default_factory=NoiseRates)
    hard_negative_rate: float = 0.01  # residents given a namesake (same name + birth date)
    migrant_rate: float = 0.30  # adults whose ID number was issued outside Beijing
    foreigner_rate: float = 0.005  # passport holders
    infant_no_id_rate: float = 0.5  # under-1s without an ID number yet
    health_card_rate: float = 0.6  # residents holding a 居民健康卡
    repeat_test_rate: float = 0.06  # test visits repeated at another institution within days
    clinical: bool = True  # False: institutions, practitioners and Patients only
    workers: int = 1  # processes; output does not depend on it

    def __post_init__(self) -> None:
        object.__setattr__(self, "districts", tuple(self.districts))

    def validate(self) -> None:
        """Raise SynthConfigError naming the first impossible parameter."""
        _int_range("residents", self.residents, 1, MAX_RESIDENTS)
        _int_range("institutions", self.institutions, 1, MAX_INSTITUTIONS)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise SynthConfigError("seed", f"must be an integer, got {self.seed!r}")
        _int_range("years", self.years, 1, 30)
        _int_range("workers", self.workers, 1, 64)
        if not isinstance(self.today, date) or not date(2000, 1, 1) <= self.today <= date(2100, 12, 31):
            raise SynthConfigError("today", f"must be a date in 2000-2100, got {self.today!r}")
        seen: set[str] = set()
        for code in self.districts:
            if code not in DISTRICT_BY_CODE:
                known = ", ".join(sorted(DISTRICT_BY_CODE))
                raise SynthConfigError("districts", f"unknown Beijing district code {code!r} (GB/T 2260; known: {known})")
            if code in seen:
                raise SynthConfigError("districts", f"district {code} given twice")
            seen.add(code)
        for name in ("hard_negative_rate", "migrant_rate", "foreigner_rate", "infant_no_id_rate",
                     "health_card_rate", "repeat_test_rate"):
            _rate(name, getattr(self, name))
        for name, value in self.noise.as_dict().items():
            _rate(f"noise.{name}", value)

    def manifest(self) -> dict[str, Any]:
        """The configuration as recorded in manifest.json (no speed-only settings)."""
        return {
            "residents": self.residents,
            "institutions": self.institutions,
            "seed": self.seed,
            "today": self.today.isoformat(),
            "years": self.years,
            "districts": list(self.districts) or sorted(DISTRICT_BY_CODE),
            "hard_negative_rate": self.hard_negative_rate,
            "migrant_rate": self.migrant_rate,
            "foreigner_rate": self.foreigner_rate,
            "infant_no_id_rate": self.infant_no_id_rate,
            "health_card_rate": self.health_card_rate,
            "repeat_test_rate": self.repeat_test_rate,
            "clinical": self.clinical,
        }


def _int_range(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise SynthConfigError(name, f"must be an integer, got {value!r}")
    if not low <= value <= high:
        raise SynthConfigError(name, f"must be between {low:,} and {high:,}, got {value:,}")


def _rate(name: str, value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
        raise SynthConfigError(name, f"must be a probability between 0 and 1, got {value!r}")
