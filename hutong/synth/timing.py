"""When care happens: weekday and hour-of-day patterns, and timestamp text.

Outpatient clinics in Chinese hospitals run mornings (挂号 from 7:30-8:00,
peak 8-11) and afternoons (14-17), busiest on Mondays, thinner at weekends
(community centres mostly closed on Sunday); emergency departments run all
day with an evening peak; admissions happen mostly on weekday mornings and
discharges around 10:00 on weekdays.  Shapes are rough, from the hospital
flow literature, not a specific dataset.

All times are local Beijing time (UTC+08:00, no daylight saving) and are
written as FHIR dateTime/instant text with the offset.
"""

from __future__ import annotations

import random
from datetime import date

from hutong.synth.sampling import Weighted

TZ = "+08:00"

# Monday .. Sunday (date.weekday() order): relative volume.
WEEKDAY_OUTPATIENT = (1.25, 1.05, 1.0, 1.0, 0.95, 0.45, 0.30)
WEEKDAY_PRIMARY = (1.2, 1.05, 1.0, 1.0, 1.0, 0.5, 0.1)
WEEKDAY_EMERGENCY = (1.0, 0.95, 0.95, 0.95, 1.0, 1.1, 1.1)
WEEKDAY_ADMISSION = (1.2, 1.1, 1.05, 1.0, 0.95, 0.4, 0.3)

OUTPATIENT_HOURS = Weighted([
    (7, 3.0), (8, 14.0), (9, 16.0), (10, 14.0), (11, 8.0), (12, 1.5), (13, 5.0), (14, 11.0), (15, 10.0),
    (16, 7.0), (17, 1.5), (18, 1.0), (19, 0.5),
])
EMERGENCY_HOURS = Weighted([
    (0, 2.5), (1, 1.8), (2, 1.3), (3, 1.0), (4, 0.9), (5, 1.0), (6, 1.5), (7, 2.5), (8, 4.0), (9, 5.0),
    (10, 5.2), (11, 5.0), (12, 4.2), (13, 4.2), (14, 4.6), (15, 4.6), (16, 4.6), (17, 4.8), (18, 5.2),
    (19, 5.6), (20, 5.6), (21, 5.0), (22, 4.0), (23, 3.2),
])
ADMISSION_HOURS = Weighted([(8, 6.0), (9, 8.0), (10, 8.0), (11, 5.0), (13, 2.0), (14, 5.0), (15, 4.0), (16, 2.0)])
DISCHARGE_HOURS = Weighted([(9, 5.0), (10, 8.0), (11, 5.0), (14, 2.0), (15, 2.0), (16, 1.0)])

_HHMM = tuple(f"{m // 60:02d}:{m % 60:02d}:00{TZ}" for m in range(24 * 60))
_day_text: dict[int, str] = {}


def day_text(ordinal: int) -> str:
    """ISO date of a proleptic Gregorian ordinal (cached: days repeat constantly)."""
    s = _day_text.get(ordinal)
    if s is None:
        s = date.fromordinal(ordinal).isoformat()
        _day_text[ordinal] = s
    return s


def stamp(ordinal: int, minute: int) -> str:
    """FHIR dateTime for a day and minute of the day, Beijing time."""
    return f"{day_text(ordinal)}T{_HHMM[minute]}"


def pick_day(rng: random.Random, first: int, last: int, weekday: tuple[float, ...]) -> int:
    """A day in [first, last] with the weekday pattern (rejection sampling)."""
    if last <= first:
        return first
    top = max(weekday)
    span = last - first + 1
    while True:
        d = first + int(rng.random() * span)
        if rng.random() * top < weekday[(d + 6) % 7]:  # ordinal 1 (0001-01-01) is a Monday
            return d


def pick_minute(rng: random.Random, hours: Weighted[int]) -> int:
    return hours.pick(rng) * 60 + int(rng.random() * 60)
