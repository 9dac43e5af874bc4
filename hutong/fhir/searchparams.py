"""Search parameters: their definitions and how index values are extracted.

FHIR R4 search.html defines each parameter by a FHIRPath expression.  The
parameters a client uses on the resources Hutong serves all reduce to a
dotted path through the JSON, with choice types spelled out (``valueQuantity``)
and an occasional ``where(system='phone')`` filter, so we compile that subset
instead of evaluating FHIRPath per write (which would dominate ingest cost).
Definitions live in :mod:`hutong.fhir.searchparam_defs`.

Path syntax: steps separated by ``.``; a step may carry one filter
``telecom[system=phone]`` (FHIRPath ``telecom.where(system='phone')``).
Lists are flattened at every step, as FHIRPath does.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

ParamType = Literal["token", "string", "date", "reference", "quantity", "number", "uri"]

_STEP = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[([A-Za-z]+)=([^\]]*)\])?$")


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    filter_key: str | None = None
    filter_value: str | None = None


@dataclass(frozen=True, slots=True)
class SearchParam:
    """One search parameter of one resource type (search.html#2.21.1)."""

    resource: str
    name: str
    type: ParamType
    paths: tuple[str, ...]
    targets: tuple[str, ...] = ()  # reference parameters: allowed target types; () = any
    compiled: tuple[tuple[Step, ...], ...] = field(default=(), compare=False, repr=False)
    # A parameter whose FHIRPath is logic rather than a path (Patient.deceased):
    # its rows, from the whole resource; ``paths`` then only name what it reads.
    derive: Callable[[dict[str, Any]], list[tuple[Any, ...]]] | None = field(default=None, compare=False,
                                                                             repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compiled", tuple(compile_path(p) for p in self.paths))


def compile_path(path: str) -> tuple[Step, ...]:
    steps = []
    for raw in path.split("."):
        m = _STEP.match(raw)
        if not m:
            raise ValueError(f"bad search path step {raw!r} in {path!r}")
        steps.append(Step(m.group(1), m.group(2), m.group(3)))
    return tuple(steps)


def values_at(resource: dict[str, Any], steps: tuple[Step, ...]) -> Iterator[Any]:
    """Yield every value reached by following ``steps`` (lists flattened)."""
    current: list[Any] = [resource]
    for step in steps:
        nxt: list[Any] = []
        for node in current:
            if not isinstance(node, dict):
                continue
            v = node.get(step.name)
            if v is None:
                continue
            items = v if isinstance(v, list) else [v]
            if step.filter_key is not None:
                items = [i for i in items if isinstance(i, dict) and str(i.get(step.filter_key)) == step.filter_value]
            nxt.extend(items)
        current = nxt
        if not current:
            return
    yield from current


# ---------------------------------------------------------------- normalisation


def normalize_string(s: str) -> str:
    """search.html#string: case- and accent-insensitive.

    NFKC folds full-width Latin letters and digits (common in Chinese input
    methods) to their ASCII forms; accents are stripped after NFKD.
    """
    s = unicodedata.normalize("NFKC", s).casefold()
    if not s.isascii():
        s = "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))
        s = unicodedata.normalize("NFC", s)
    return " ".join(s.split())


_DATE_RE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def date_range(value: str) -> tuple[int, int] | None:
    """Map a FHIR date/dateTime/instant to [lo, hi) in epoch milliseconds (UTC).

    search.html#date: a value is an implicit range covering its precision.
    Times without an offset are taken as UTC (the server's zone).
    """
    m = _DATE_RE.match(value)
    if not m:
        return None
    y, mo, d, hh, mi, ss, frac, tz = m.groups()
    try:
        if mo is None:
            lo = datetime(int(y), 1, 1, tzinfo=UTC)
            hi = datetime(int(y) + 1, 1, 1, tzinfo=UTC)
        elif d is None:
            lo = datetime(int(y), int(mo), 1, tzinfo=UTC)
            hi = datetime(int(y) + (int(mo) == 12), int(mo) % 12 + 1, 1, tzinfo=UTC)
        elif hh is None:
            lo = datetime(int(y), int(mo), int(d), tzinfo=UTC)
            hi = lo + timedelta(days=1)
        else:
            lo = datetime(int(y), int(mo), int(d), int(hh), int(mi), int(ss or 0), tzinfo=UTC)
            if tz and tz != "Z":
                sign = 1 if tz[0] == "+" else -1
                lo -= sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
            if ss is None:
                hi = lo + timedelta(minutes=1)
            elif frac:
                lo += timedelta(microseconds=int((frac + "000000")[:6]))
                hi = lo + timedelta(milliseconds=1)
            else:
                hi = lo + timedelta(seconds=1)
    except ValueError:
        return None
    return int(lo.timestamp() * 1000), int(hi.timestamp() * 1000)


# ---------------------------------------------------------------- extraction

# Index rows per parameter type.  Each row is a tuple whose shape the store
# knows; see hutong.store.schema.
TokenRow = tuple[str | None, str | None, str | None]  # (system, code, text)
DateRow = tuple[int, int]  # [lo, hi) epoch ms
RefRow = tuple[str | None, str | None, str]  # (target type, target id, reference as written)
QuantityRow = tuple[float, str | None, str | None]  # (value, system, code or unit)


def _strings(v: Any) -> Iterator[str]:
    if isinstance(v, str):
        yield v
    elif isinstance(v, dict):
        # HumanName and Address: every part is searchable (search.html#string).
        for k in ("text", "family", "given", "prefix", "suffix", "line", "city", "district",
                  "state", "postalCode", "country"):
            part = v.get(k)
            if isinstance(part, str):
                yield part
            elif isinstance(part, list):
                yield from (p for p in part if isinstance(p, str))


def _tokens(v: Any) -> Iterator[TokenRow]:
    if isinstance(v, bool):
        yield (None, "true" if v else "false", None)
    elif isinstance(v, str):
        yield (None, v, None)
    elif isinstance(v, dict):
        if "coding" in v or ("text" in v and "value" not in v and "code" not in v):  # CodeableConcept
            text = v.get("text")
            for c in v.get("coding") or []:
                if isinstance(c, dict):
                    yield (c.get("system"), c.get("code"), c.get("display") or text)
            if text and not v.get("coding"):
                yield (None, None, text)
        elif "value" in v and isinstance(v.get("value"), str):  # Identifier, ContactPoint
            t = v.get("type")
            text = t.get("text") if isinstance(t, dict) else None
            yield (v.get("system"), v["value"], text)
        elif "code" in v:  # Coding, Quantity
            yield (v.get("system"), v.get("code"), v.get("display"))


def _dates(v: Any) -> Iterator[DateRow]:
    if isinstance(v, str):
        r = date_range(v)
        if r:
            yield r
    elif isinstance(v, dict):
        if "start" in v or "end" in v:  # Period: open ends are unbounded
            s = date_range(v["start"]) if isinstance(v.get("start"), str) else None
            e = date_range(v["end"]) if isinstance(v.get("end"), str) else None
            if s or e:
                yield (s[0] if s else -(2**62), e[1] if e else 2**62)
        elif "event" in v:  # Timing
            for ev in v.get("event") or []:
                yield from _dates(ev)


def parse_reference(ref: str) -> tuple[str | None, str | None]:
    """Split a literal reference into (type, id); absolute or unparseable -> (None, None).

    references.html#literal: ``Type/id``, optionally ``/_history/v``, or a full URL.
    """
    if ref.startswith("#") or ref.startswith("urn:") or "?" in ref or "://" in ref:
        # contained, urn, conditional (Type?criteria) and absolute references are
        # indexed by their text only; the search layer strips this server's base.
        return None, None
    parts = ref.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return parts[-2], parts[-1]
    return None, None


def _refs(v: Any, targets: tuple[str, ...]) -> Iterator[RefRow]:
    if isinstance(v, dict):
        r = v.get("reference")
        if isinstance(r, str):
            t, i = parse_reference(r)
            if targets and t is not None and t not in targets:
                return
            yield (t, i, r)
    elif isinstance(v, str):  # canonical / uri used as a reference
        yield (None, None, v)


def _quantities(v: Any) -> Iterator[QuantityRow]:
    if isinstance(v, dict) and isinstance(v.get("value"), int | float) and not isinstance(v.get("value"), bool):
        yield (float(v["value"]), v.get("system"), v.get("code") or v.get("unit"))


def extract(param: SearchParam, resource: dict[str, Any]) -> list[tuple[Any, ...]]:
    """All index rows of one parameter for one resource, de-duplicated, in order."""
    if param.derive is not None:
        return param.derive(resource)
    out: list[tuple[Any, ...]] = []
    seen: set[tuple[Any, ...]] = set()
    for steps in param.compiled:
        for v in values_at(resource, steps):
            rows: Iterator[tuple[Any, ...]]
            t = param.type
            if t == "string":
                rows = ((normalize_string(s), s) for s in _strings(v) if s)
            elif t == "token":
                rows = _tokens(v)
            elif t == "date":
                rows = _dates(v)
            elif t == "reference":
                rows = _refs(v, param.targets)
            elif t == "quantity":
                rows = _quantities(v)
            elif t == "number":
                rows = iter([(float(v),)] if isinstance(v, int | float) and not isinstance(v, bool) else [])
            else:  # uri
                rows = iter([(v,)] if isinstance(v, str) else [])
            for row in rows:
                if row not in seen:
                    seen.add(row)
                    out.append(row)
    return out
