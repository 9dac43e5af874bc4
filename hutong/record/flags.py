"""The abnormal flag of a result: one rule for every portal.

Both portals show a result's reading from this module alone, so a clinician
and a resident can never be told different things about the same value.

Inputs (observation.html R4): the value (``valueQuantity``: value,
comparator, unit/code), the reference range (the first ``referenceRange``
whose ``type`` is absent or ``normal``, else the first one: low/high
SimpleQuantity, text) and the sender's interpretation
(``Observation.interpretation``, codes of v3-ObservationInterpretation, the
same codes HL7 v2 OBX-8 carries).

The rule:

1. **The range's reading.**  A numeric value is compared with the range when
   the range gives a numeric low and/or high in the value's unit: above high
   -> ``H``, below low -> ``L``, otherwise ``N`` (the bounds are inclusive:
   observation.html#Observation.referenceRange, low/high "the value lies
   within").  Units agree when a bound names no unit, or when the two share a
   UCUM code or a unit text (case-insensitive); otherwise the range is not
   used (``unit-mismatch``).  A value with a comparator (``<0.5``) is read only
   when the comparator alone decides (``<2.0`` with low 3.9 is ``L``);
   otherwise ``comparator``.  No numeric value: ``not-numeric``; no numeric
   bound: ``no-range``.
2. **The sender's reading.**  H HH HU > -> ``H``; L LL LU < -> ``L``;
   A AA POS DET R -> ``A``; N NEG ND S -> ``N``; other codes (IND, I, E ...)
   say nothing.  HH, LL and AA are critical (危急值).
3. **What is shown** (``Flag.verdict``):

   - a value outside its reference range is never "normal": whatever the
     sender says, the range's ``H``/``L`` is shown;
   - a sender's abnormal reading is never overruled by an in-range value (the
     sender may apply an age- or method-specific range the platform does not
     know): its ``H``/``L``/``A`` is shown;
   - ``N`` only when no side says abnormal and one of them says normal;
   - ``""`` (unknown, shown as "—") when neither side says anything.
4. **Disagreement** (``Flag.disagree``): both sides gave a reading and they
   differ (``A`` agrees with ``H`` and ``L``).  The page then shows both and
   says so, e.g. 判读不一致（院方判读：正常；超出参考范围 3.9–6.1）.

The rule table is tests/record/test_model.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hutong.record.readers import fmt_number, number

INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
V2_ABNORMAL_FLAGS = "http://terminology.hl7.org/CodeSystem/v2-0078"  # HL7 v2 table 0078 (OBX-8): same codes
_SYSTEMS = (None, "", INTERPRETATION, V2_ABNORMAL_FLAGS)

_HIGH = frozenset({"H", "HH", "HU", ">"})
_LOW = frozenset({"L", "LL", "LU", "<"})
_ABNORMAL = frozenset({"A", "AA", "POS", "DET", "R"})
_NORMAL = frozenset({"N", "NEG", "ND", "S"})
_CRITICAL = frozenset({"HH", "LL", "AA"})

# Why the range gave no reading (Flag.not_compared).
NO_RANGE = "no-range"
NOT_NUMERIC = "not-numeric"
UNIT_MISMATCH = "unit-mismatch"
COMPARATOR = "comparator"


@dataclass(frozen=True, slots=True)
class Flag:
    """The reading of one result, with both sides kept for display."""

    verdict: str        # H | L | A | N | "" (unknown)
    by_range: str       # H | L | N | "" (the range was not used: see not_compared)
    by_sender: str      # H | L | A | N | "" (no usable interpretation)
    sender_code: str    # the sender's own code, e.g. "HH"
    not_compared: str   # "" when the range was used, else NO_RANGE | NOT_NUMERIC | UNIT_MISMATCH | COMPARATOR
    critical: bool      # the sender called it critical (HH, LL, AA)

    @property
    def abnormal(self) -> bool:
        return self.verdict in ("H", "L", "A")

    @property
    def disagree(self) -> bool:
        return bool(self.by_range and self.by_sender) and not _agree(self.by_range, self.by_sender)


@dataclass(frozen=True, slots=True)
class Range:
    """The reference range a result is read against."""

    low: float | None
    high: float | None
    text: str           # as shown: the sender's text, else "3.9–6.1", "≥60", "≤5.2"
    low_units: frozenset[str]
    high_units: frozenset[str]


def _agree(by_range: str, by_sender: str) -> bool:
    return by_range == by_sender or (by_sender == "A" and by_range in ("H", "L"))


def _units(q: Any) -> frozenset[str]:
    if not isinstance(q, dict):
        return frozenset()
    return frozenset(str(q[k]).strip().casefold() for k in ("code", "unit") if isinstance(q.get(k), str)
                     and q[k].strip())


def reference_range(obs: dict[str, Any]) -> Range | None:
    """The range a result is read against (a ``normal`` one first), or None."""
    ranges = [r for r in obs.get("referenceRange") or () if isinstance(r, dict)]
    normal = [r for r in ranges if not r.get("type") or any(
        isinstance(c, dict) and c.get("code") == "normal" for c in (r.get("type") or {}).get("coding") or ())]
    for rr in normal or ranges:
        low, high = rr.get("low"), rr.get("high")
        lo = number(low.get("value")) if isinstance(low, dict) else None
        hi = number(high.get("value")) if isinstance(high, dict) else None
        shown = str(rr["text"]) if isinstance(rr.get("text"), str) and rr["text"].strip() else ""
        if not shown:
            if lo is not None and hi is not None:
                shown = f"{fmt_number(lo)}–{fmt_number(hi)}"
            elif lo is not None:
                shown = f"≥{fmt_number(lo)}"
            elif hi is not None:
                shown = f"≤{fmt_number(hi)}"
        return Range(lo, hi, shown, _units(low), _units(high))
    return None


def sender_reading(obs: dict[str, Any]) -> tuple[str, str]:
    """(reading, the sender's code) from Observation.interpretation; ("", "") when it says nothing usable."""
    for cc in obs.get("interpretation") or ():
        for c in (cc or {}).get("coding") or () if isinstance(cc, dict) else ():
            if not isinstance(c, dict) or c.get("system") not in _SYSTEMS:
                continue
            raw = str(c.get("code") or "").upper()
            for reading, codes in (("H", _HIGH), ("L", _LOW), ("A", _ABNORMAL), ("N", _NORMAL)):
                if raw in codes:
                    return reading, raw
    return "", ""


def range_reading(obs: dict[str, Any], rng: Range | None) -> tuple[str, str]:
    """(reading H|L|N or "", why not compared) of the value against the range."""
    q = obs.get("valueQuantity")
    value = number(q.get("value")) if isinstance(q, dict) else None
    if value is None or not isinstance(q, dict):
        return "", NOT_NUMERIC
    if rng is None or (rng.low is None and rng.high is None):
        return "", NO_RANGE
    mine = _units(q)
    for bound, units in ((rng.low, rng.low_units), (rng.high, rng.high_units)):
        if bound is not None and units and mine and not units & mine:
            return "", UNIT_MISMATCH
    lo, hi = rng.low, rng.high
    comparator = str(q.get("comparator") or "")
    if comparator in ("<", "<="):
        # The true value is below (or at) ``value``: decided only when that is below the range,
        # or within it when the range has no lower bound.
        if lo is not None and (value < lo or (comparator == "<" and value == lo)):
            return "L", ""
        if lo is None and hi is not None and value <= hi:
            return "N", ""
        return "", COMPARATOR
    if comparator in (">", ">="):
        if hi is not None and (value > hi or (comparator == ">" and value == hi)):
            return "H", ""
        if hi is None and lo is not None and value >= lo:
            return "N", ""
        return "", COMPARATOR
    if comparator:
        return "", COMPARATOR  # "ad" (sufficient to achieve this total): not a measured value
    if hi is not None and value > hi:
        return "H", ""
    if lo is not None and value < lo:
        return "L", ""
    return "N", ""


def decide(by_range: str, by_sender: str, sender_code: str = "", not_compared: str = "") -> Flag:
    """Combine the two readings (rule 3 of the module docstring)."""
    if by_range in ("H", "L"):
        verdict = by_range
    elif by_sender in ("H", "L", "A"):
        verdict = by_sender
    elif "N" in (by_range, by_sender):
        verdict = "N"
    else:
        verdict = ""
    return Flag(verdict, by_range, by_sender, sender_code, not_compared, sender_code in _CRITICAL)


def flag_of(obs: dict[str, Any], rng: Range | None = None) -> Flag:
    """The flag of one Observation (``rng``: its reference range when already read)."""
    if rng is None:
        rng = reference_range(obs)
    by_range, why = range_reading(obs, rng)
    by_sender, code = sender_reading(obs)
    return decide(by_range, by_sender, code, why)
