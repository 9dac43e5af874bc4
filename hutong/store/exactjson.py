"""JSON whose numbers come back exactly as they were written.

FHIR decimals keep their precision: ``0.40``, ``100.000`` and ``1.0e-7`` are
not ``0.4``, ``100.0`` and ``1e-7`` (datatypes.html#decimal; json.html#primitive:
"the number SHALL be represented exactly as it is in the source").  A Python
float forgets how it was written, so :func:`loads` gives every number whose
text a float would not reproduce as a :class:`Decimal` - a ``float``
(everything that computes with the value, indexes or validates it sees the
number it always saw) that also carries its text - and :func:`dumps` writes
that text back.

Bodies without such a number (most writes: no fraction, or fractions a float
writes back the same, as ``5.6``) are parsed by orjson alone; the others are
checked by orjson first (so exactly the same documents are accepted and
refused) and parsed again by the standard library with hooks on numbers.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# Every number token of a JSON text follows a key's colon, a "[" or a ",";
# three patterns with a literal first character scan fast (one alternation
# scans 5x slower).  They also find look-alikes inside strings (an OID's
# "2.16.156", "x\\":5.60"), which only cost the second parse: a real number is
# never missed.
_TOKEN = rb"(-?[0-9][0-9.eE+-]*)"
_NUMBERS = (re.compile(rb'"\s*:\s*' + _TOKEN), re.compile(rb"\[\s*" + _TOKEN), re.compile(rb",\s*" + _TOKEN))
_INT_RANGE = (-(2**63), 2**64 - 1)  # what orjson parses as int


class Decimal(float):
    """A JSON number that keeps its text (its float value for everything else)."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> Decimal:
        self = super().__new__(cls, text)
        self.text = text
        return self

    def __repr__(self) -> str:
        return self.text

    def __reduce__(self) -> tuple[type[Decimal], tuple[str]]:
        return (Decimal, (self.text,))  # bulk import hands resources between processes


def _float(text: str) -> float:
    f = float(text)
    if orjson.dumps(f) == text.encode():
        return f
    return Decimal(text)


def _int(text: str) -> int | float:
    i = int(text)
    if _INT_RANGE[0] <= i <= _INT_RANGE[1]:
        return i
    return Decimal(text)


def _same_text(token: bytes) -> bool:
    """Whether the value orjson gives this number token writes back as the same text."""
    try:
        if b"." in token or b"e" in token or b"E" in token:
            return orjson.dumps(float(token)) == token
        return len(token) < 19 or _INT_RANGE[0] <= int(token) <= _INT_RANGE[1]
    except ValueError:  # not a number after all ("2.16.156" in a string): look closer
        return False


def loads(body: bytes) -> Any:
    """Parse JSON as orjson does, with numbers a float would rewrite kept as :class:`Decimal`.

    Raises orjson.JSONDecodeError on what orjson refuses."""
    data = orjson.loads(body)
    if all(_same_text(t) for p in _NUMBERS for t in p.findall(body)):
        return data
    # orjson accepted it: UTF-8, no NaN/Infinity, no lone surrogates, finite numbers.
    return json.loads(body.decode("utf-8"), parse_float=_float, parse_int=_int)


def _default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return orjson.Fragment(o.text.encode())
    raise TypeError(f"Type is not JSON serializable: {type(o).__name__}")


def dumps(obj: Any) -> bytes:
    """orjson.dumps that writes each :class:`Decimal` as its original text."""
    return orjson.dumps(obj, default=_default)
