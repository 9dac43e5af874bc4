"""Residents: the real people behind the source Patients (the ground truth).

Each resident gets a name (``names``), sex, birth date from Beijing's 2020
census age structure, a GB 11643 ID number consistent with birth date, sex
and issuing county, a mobile number, a home address in a district (and a
previous one), sometimes a 居民健康卡.  Variants, by configured rates:
migrants hold ID numbers issued outside Beijing (38.5% of Beijing residents
in 2020 were registered elsewhere), foreigners hold passports instead, and
infants may have no ID number yet (the 户口 is registered within a month of
birth but many infants are seen before).

ID numbers are unique: the sequence code is drawn from a per
(county, birth date, sex) counter through a permutation, so two residents
never share a number however many are generated.  The counters are a flat
array over (county, day, sex), a few MB whatever the region size.

Hard negatives: with ``hard_negative_rate`` a resident is followed by a
namesake, a distinct person with the same name and birth date (and other
ID number, phone, address) - the pair an identity matcher must keep apart.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

from hutong.synth import idcard, names
from hutong.synth.config import SynthConfig
from hutong.synth.regions import (
    BEIJING_NAME,
    DISTRICT_BY_CODE,
    DISTRICTS,
    ORIGIN_REGIONS,
    District,
)
from hutong.synth.sampling import Weighted, stream

CHUNK = 200  # residents per chunk: the unit of seeding and of parallel work

# Beijing 2020 census age structure (北京市第七次全国人口普查公报: 0-14 11.9%,
# 15-59 68.5%, 60+ 19.6%), spread over 5-year bands; weights in percent.
AGE_BANDS: Weighted[int] = Weighted([
    (0, 5.0), (5, 4.3), (10, 3.4), (15, 3.0), (20, 5.2), (25, 8.6), (30, 10.6), (35, 9.2), (40, 7.6),
    (45, 7.1), (50, 7.2), (55, 6.6), (60, 6.4), (65, 5.4), (70, 3.6), (75, 2.5), (80, 1.8), (85, 1.1), (90, 0.5),
])

# GB/T 3304 民族 codes; Beijing 2020: 汉 ~95.9%, then 满, 回, 蒙古, 朝鲜, 土家, 壮.
ETHNICITIES: Weighted[tuple[str, str]] = Weighted([
    (("01", "汉族"), 95.9), (("11", "满族"), 1.6), (("03", "回族"), 1.2), (("02", "蒙古族"), 0.4),
    (("10", "朝鲜族"), 0.1), (("15", "土家族"), 0.1), (("08", "壮族"), 0.1), (("04", "藏族"), 0.05),
])

# Mobile number segments of the three operators (工信部 numbering plan).
PHONE_PREFIXES: tuple[str, ...] = (
    "134", "135", "136", "137", "138", "139", "147", "150", "151", "152", "157", "158", "159", "178", "182",
    "183", "184", "187", "188", "198", "130", "131", "132", "155", "156", "166", "175", "176", "185", "186",
    "133", "153", "173", "177", "180", "181", "189", "199",
)

_REGION_CODES: tuple[str, ...] = tuple(d.code for d in DISTRICTS) + tuple(o.code for o in ORIGIN_REGIONS)
_REGION_INDEX: dict[str, int] = {c: i for i, c in enumerate(_REGION_CODES)}
_ORIGINS: Weighted[str] = Weighted([(o.code, o.weight) for o in ORIGIN_REGIONS])
_DAYS = 120 * 366  # birth dates covered by the sequence counters


@dataclass(slots=True)
class Address:
    district: District
    line: str  # street, 号院, 楼, 单元, 室

    @property
    def text(self) -> str:
        return f"{BEIJING_NAME}{self.district.name}{self.line}"


@dataclass(slots=True)
class Resident:
    number: int  # 0-based position in the region
    key: str  # ground-truth key
    surname: str  # family name (Latin for foreigners)
    given: str
    sex: str  # FHIR administrative gender: male / female
    birth: date
    id_number: str | None  # 18-character GB 11643 number
    id_region: str | None  # its GB/T 2260 issuing county
    passport: str | None  # "<ISO 3166 alpha-3>:<number>"
    address: Address
    old_address: Address  # where they lived before moving (noise: address_moved)
    phone: str
    old_phone: str  # number they had before (noise: phone_changed)
    health_card: str | None
    ethnicity: tuple[str, str] | None  # GB/T 3304 (code, name); None for foreigners
    marital: str | None  # v3 MaritalStatus code (adults)
    guardian: str | None  # parent's name (children under 14)
    namesake_of: int | None = None  # hard negative: the resident whose name and birth date this one shares

    @property
    def name(self) -> str:
        return f"{self.surname} {self.given}" if self.passport else self.surname + self.given

    @property
    def foreign(self) -> bool:
        return self.passport is not None

    def age_at(self, ordinal: int) -> int:
        return self.age(date.fromordinal(ordinal))

    def age(self, today: date) -> int:
        years = today.year - self.birth.year
        return years - ((today.month, today.day) < (self.birth.month, self.birth.day))


class IdSequencer:
    """Hands out GB 11643 sequence codes, unique per (county, birth date, sex)."""

    def __init__(self, today: date) -> None:
        self.base = today.toordinal() - _DAYS + 1
        self.counts = bytearray(len(_REGION_CODES) * _DAYS * 2)

    def take(self, region: str, birth: date, male: bool) -> int | None:
        """A sequence code 1-998 (odd for men, even for women), or None if the day is full."""
        r = _REGION_INDEX[region]
        day = birth.toordinal() - self.base
        slot = (r * _DAYS + day) * 2 + male
        c = self.counts[slot]
        if c >= 250:
            return None
        self.counts[slot] = c + 1
        # Permute the counter so consecutive residents do not get 001, 003, ...
        # (193 is coprime with the prime 499, so the map is one-to-one).
        k = 1 + (day * 31 + r * 17 + c * 193) % 499
        return 2 * k - 1 if male else 2 * k


def phone_number(rng: random.Random) -> str:
    return PHONE_PREFIXES[int(rng.random() * len(PHONE_PREFIXES))] + f"{int(rng.random() * 100_000_000):08d}"


def _address(rng: random.Random, district: District) -> Address:
    road = district.roads[int(rng.random() * len(district.roads))]
    return Address(district, f"{road}{1 + int(rng.random() * 180)}号院{1 + int(rng.random() * 24)}号楼"
                             f"{1 + int(rng.random() * 6)}单元{1 + int(rng.random() * 28)}{1 + int(rng.random() * 4):02d}")


class ResidentFactory:
    """Generates residents in order; chunk ``c`` is residents [c*CHUNK, (c+1)*CHUNK)."""

    def __init__(self, config: SynthConfig) -> None:
        self.config = config
        self.today = config.today
        codes = config.districts or tuple(d.code for d in DISTRICTS)
        self.districts = tuple(DISTRICT_BY_CODE[c] for c in codes)
        self.district_table: Weighted[District] = Weighted([(d, d.population) for d in self.districts])
        self.all_districts: Weighted[District] = Weighted([(d, d.population) for d in DISTRICTS])
        self.ids = IdSequencer(config.today)
        self.pending_namesake: Resident | None = None
        self.hard_negatives: list[tuple[Resident, Resident]] = []  # drained by the caller

    def chunk(self, c: int) -> list[Resident]:
        rng = stream(self.config.seed, "residents", c)
        first = c * CHUNK
        last = min(self.config.residents, first + CHUNK)
        out: list[Resident] = []
        for n in range(first, last):
            template = self.pending_namesake
            r = self._one(rng, n)
            out.append(r)
            if template is not None:
                self.hard_negatives.append((template, r))
            if self.pending_namesake is None and not r.foreign and rng.random() < self.config.hard_negative_rate:
                self.pending_namesake = r
        return out

    def _one(self, rng: random.Random, n: int) -> Resident:
        cfg = self.config
        template = self.pending_namesake
        self.pending_namesake = None
        today_ord = self.today.toordinal()
        if template is not None:
            sex = template.sex if rng.random() < 0.85 else ("female" if template.sex == "male" else "male")
            birth = template.birth
        else:
            sex = "male" if rng.random() < 0.512 else "female"  # 2020 census sex ratio 104.7
            band = AGE_BANDS.pick(rng)
            age_days = int((band + rng.random() * 5) * 365.2425)
            birth = date.fromordinal(today_ord - age_days)
        age = (today_ord - birth.toordinal()) / 365.2425
        district = self.district_table.pick(rng)
        if template is not None and rng.random() < 0.4:
            # Namesakes in the same district (and so often the same issuing county) are the
            # hardest case: their ID numbers then differ only in the sequence code.
            district = template.address.district
        foreign = template is None and 18 <= age < 75 and rng.random() < cfg.foreigner_rate
        passport: str | None = None
        id_number: str | None = None
        id_region: str | None = None
        if foreign:
            country, surname, given = names.draw_foreign(rng, sex)
            passport = f"{country}:{'EMGK'[int(rng.random() * 4)]}{int(rng.random() * 100_000_000):08d}"
        else:
            if template is not None:
                surname, given = template.surname, template.given
            else:
                surname, given = names.draw_chinese(rng, sex, birth.year)
            no_id = (age < 1 and rng.random() < cfg.infant_no_id_rate) or (age < 4 and rng.random() < 0.03)
            if not no_id:
                if 18 <= age < 65 and rng.random() < cfg.migrant_rate:
                    id_region = _ORIGINS.pick(rng)
                elif rng.random() < 0.8:
                    id_region = district.code
                else:  # born elsewhere in Beijing and moved
                    id_region = self.all_districts.pick(rng).code
                seq = self.ids.take(id_region, birth, sex == "male")
                while seq is None:  # that day is full in that county: move the birthday by one
                    birth = date.fromordinal(birth.toordinal() - 1)
                    seq = self.ids.take(id_region, birth, sex == "male")
                id_number = idcard.make(id_region, birth, seq)
        guardian = None
        if age < 14 and not foreign:
            parent_sex = "female" if rng.random() < 0.6 else "male"
            p_surname = surname if parent_sex == "male" else names.draw_chinese(rng, "female", birth.year - 29)[0]
            p_given = names.draw_chinese(rng, parent_sex, birth.year - 29)[1]
            guardian = ("母亲:" if parent_sex == "female" else "父亲:") + p_surname + p_given
        marital = None
        if age >= 20:
            x = rng.random()
            marital = "S" if x < (0.85 if age < 25 else 0.35 if age < 30 else 0.08) else "M"
            if marital == "M" and age >= 65 and rng.random() < 0.2:
                marital = "W"
            elif marital == "M" and rng.random() < 0.05:
                marital = "D"
        old_district = self.all_districts.pick(rng) if rng.random() < 0.5 else district
        health_card = None
        if rng.random() < cfg.health_card_rate and not foreign:
            health_card = f"1100{int(rng.random() * 10**14):014d}"
        return Resident(
            number=n,
            key=f"R{n + 1:07d}",
            surname=surname,
            given=given,
            sex=sex,
            birth=birth,
            id_number=id_number,
            id_region=id_region,
            passport=passport,
            address=_address(rng, district),
            old_address=_address(rng, old_district),
            phone=phone_number(rng),
            old_phone=phone_number(rng),
            health_card=health_card,
            ethnicity=None if foreign else ETHNICITIES.pick(rng),
            marital=marital,
            guardian=guardian,
            namesake_of=template.number if template is not None else None,
        )


def iter_residents(config: SynthConfig) -> Iterator[list[Resident]]:
    """The residents of a region, chunk by chunk (the ground truth behind the Patients)."""
    factory = ResidentFactory(config)
    for c in range((config.residents + CHUNK - 1) // CHUNK):
        yield factory.chunk(c)
