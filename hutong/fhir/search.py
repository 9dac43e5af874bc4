"""Parse a FHIR search query string into the store's query AST (search.html).

Parameter values are comma-separated ORs; repeated parameters are ANDed
(search.html#combining).  Unknown or unsupported parameters raise in strict
mode and are reported back (as ignored) in lenient mode
(search.html#errors, ``Prefer: handling=strict|lenient``).
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import cast

import orjson

from hutong.errors import InvalidRequest, NotSupported
from hutong.fhir.registry import RESOURCE_TYPES, SPECIAL, params_for
from hutong.fhir.searchparams import date_range, normalize_string, parse_reference
from hutong.store.query import (
    Chain,
    Clause,
    Cursor,
    Has,
    Include,
    Match,
    ParamRef,
    Prefix,
    Query,
    RangeMatch,
    RefMatch,
    SortKey,
    StringMatch,
    TokenMatch,
    UriMatch,
)

DEFAULT_COUNT = 20
MAX_COUNT = 1000
# Values one search may carry, comma-separated ORs and repeated parameters
# together (issue 12, finding 17); more is a 400 (HT-0021), never a 500.
MAX_SEARCH_VALUES = 1000
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
# Result parameters handled by the layer above (rendering), not the query.
RENDER_PARAMS = frozenset({"_summary", "_elements", "_format", "_pretty"})
UNSUPPORTED = frozenset({"_text", "_content", "_list", "_query", "_filter", "_contained", "_containedType"})
SUMMARY_VALUES = ("true", "false", "count", "text", "data")


@dataclass
class ParsedSearch:
    query: Query
    summary: str | None = None
    elements: list[str] | None = None
    ignored: list[str] = field(default_factory=list)
    # the parameters that define the result set, for self/next links
    canonical: list[tuple[str, str]] = field(default_factory=list)


def split_values(raw: str) -> list[str]:
    """Split on commas not escaped with a backslash (search.html#escaping)."""
    out, cur, esc = [], [], False
    for ch in raw:
        if esc:
            cur.append(ch)
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def _unescape(s: str) -> str:
    return re.sub(r"\\([\\|,$])", r"\1", s)


def _split_pipe(s: str) -> tuple[str | None, str]:
    """Split token ``system|code`` honouring ``\\|``."""
    idx = -1
    i = 0
    while i < len(s):
        if s[i] == "\\":
            i += 2
            continue
        if s[i] == "|":
            idx = i
            break
        i += 1
    if idx < 0:
        return None, _unescape(s)
    return _unescape(s[:idx]), _unescape(s[idx + 1 :])


def _prefix(v: str) -> tuple[Prefix, str]:
    if len(v) > 2 and v[:2] in PREFIXES and not v[:2].isdigit():
        return cast(Prefix, v[:2]), v[2:]
    return "eq", v


def _bad(name: str, value: str, why: str) -> InvalidRequest:
    return InvalidRequest("HT-0021", f"invalid value {value[:100]!r} for search parameter {name}: {why}")


def _number_range(name: str, v: str) -> tuple[float, float, float]:
    """search.html#number: the implicit range is ±half a unit of the last significant digit."""
    try:
        d = Decimal(v)
    except InvalidOperation:
        raise _bad(name, v, "not a number") from None
    if not d.is_finite():
        raise _bad(name, v, "not a finite number")
    exp = d.as_tuple().exponent
    assert isinstance(exp, int)
    half = Decimal(5).scaleb(exp - 1)
    val, lo, hi = float(d), float(d - half), float(d + half)
    if hi <= val:
        # More digits than a double holds (values are indexed as doubles): the range
        # rounds to nothing, yet the value itself, stored as the same double, matches.
        lo, hi = min(lo, val), math.nextafter(val, math.inf)
    return lo, hi, val


def parse_date_value(name: str, raw: str) -> RangeMatch:
    prefix, v = _prefix(raw)
    r = date_range(v)
    if r is None:
        raise _bad(name, raw, "expected a FHIR date such as 2024, 2024-05, 2024-05-01 or 2024-05-01T08:30:00+08:00")
    return RangeMatch(prefix, r[0], r[1], r[0])


def _match(param: ParamRef, modifier: str | None, raw: str, base_url: str) -> Match:
    name = param.name
    t = param.ptype
    if t == "token":
        if modifier == "text":
            return TokenMatch(None, None, normalize_string(_unescape(raw)))
        system, code = _split_pipe(raw)
        if system is None:
            return TokenMatch(None, code)
        if code == "":
            if not system:
                raise _bad(name, raw, "empty system and code")
            return TokenMatch(system, None)
        return TokenMatch(system, code)
    if t == "string":
        v = _unescape(raw)
        if modifier == "exact":
            return StringMatch(v, "exact")
        return StringMatch(normalize_string(v), "contains" if modifier == "contains" else "prefix")
    if t == "date":
        return parse_date_value(name, raw)
    if t == "number":
        prefix, v = _prefix(raw)
        lo, hi, val = _number_range(name, v)
        return RangeMatch(prefix, lo, hi, val)
    if t == "quantity":
        prefix, rest = _prefix(raw)
        parts = rest.split("|")
        if len(parts) not in (1, 3):
            raise _bad(name, raw, "expected [prefix]number[|system|code]")
        lo, hi, val = _number_range(name, parts[0])
        q_system = (parts[1] or None) if len(parts) == 3 else None
        q_code = (parts[2] or None) if len(parts) == 3 else None
        return RangeMatch(prefix, lo, hi, val, q_system, q_code)
    if t == "reference":
        v = _unescape(raw)
        if modifier and modifier[:1].isupper():
            if "/" in v:
                ty, i = parse_reference(v)
                if ty != modifier:
                    raise _bad(name, raw, f"reference type does not match :{modifier}")
                return RefMatch(ty, i)
            return RefMatch(modifier, v)
        if v.startswith(base_url + "/"):
            v = v[len(base_url) + 1 :]
        if "://" in v or v.startswith("urn:"):
            return RefMatch(None, None, v)
        if "/" in v:
            ty, i = parse_reference(v)
            if ty is None:
                raise _bad(name, raw, "expected Type/id, id or an absolute URL")
            return RefMatch(ty, i)
        return RefMatch(None, v)
    if t == "uri":
        mode = "below" if modifier == "below" else "above" if modifier == "above" else "exact"
        return UriMatch(_unescape(raw), mode)  # type: ignore[arg-type]
    raise NotSupported("HT-0022", f"parameter type {t} is not supported")


ALLOWED_MODIFIERS = {
    "token": {"not", "text", "missing"},
    "string": {"exact", "contains", "missing"},
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "reference": {"missing"},  # plus :Type
    "uri": {"below", "above", "missing"},
}


def _clause(type: str, key: str, raw: str, base_url: str, depth: int = 0) -> Clause:
    """One parameter occurrence ``name[:modifier][.chain...]=value`` on ``type``."""
    chain_rest = None
    head = key
    if "." in key:
        head, chain_rest = key.split(".", 1)
    name, _, mod_text = head.partition(":")
    modifier = mod_text or None
    params = params_for(type)
    sp = params.get(name)
    if sp is None:
        raise InvalidRequest("HT-0020", f"unknown search parameter {name!r} for {type}",
                             issue_code="not-supported")
    pref = ParamRef(type, name, sp.type)
    if chain_rest is not None and chain_rest == "_id" and sp.type == "reference":
        # subject:Patient._id=X is subject:Patient=X (search.html#chaining; _id is
        # not an index parameter, so it cannot be a chain's last link).
        return _clause(type, head, raw, base_url, depth)
    if chain_rest is not None:
        if sp.type != "reference":
            raise InvalidRequest("HT-0021", f"{name} is not a reference parameter and cannot be chained")
        if chain_rest.split(".", 1)[0].split(":", 1)[0] in ("_id", "_lastUpdated"):
            raise NotSupported("HT-0022", f"{chain_rest.split('.', 1)[0]} inside a chain is not supported")
        if depth > 3:
            raise InvalidRequest("HT-0021", "chains deeper than 4 are not supported")
        if modifier:
            if modifier not in RESOURCE_TYPES:
                raise InvalidRequest("HT-0022", f"unknown resource type :{modifier} in chain")
            targets: tuple[str, ...] = (modifier,)
        else:
            sub_name = chain_rest.split(".", 1)[0].split(":", 1)[0]
            candidates = sp.targets or tuple(sorted(RESOURCE_TYPES))
            targets = tuple(t for t in candidates if sub_name in params_for(t))
            if not targets:
                raise InvalidRequest("HT-0020", f"no target type of {type}.{name} has a parameter {sub_name!r}")
        first = targets[0]
        sub = _clause(first, chain_rest, raw, base_url, depth + 1)
        return Clause(pref, chain=Chain(targets, sub))
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise _bad(name, raw, ":missing takes true or false")
        return Clause(pref, missing=(raw == "true"))
    if modifier is not None:
        ok = ALLOWED_MODIFIERS.get(sp.type, set())
        type_mod = sp.type == "reference" and modifier in RESOURCE_TYPES
        if modifier not in ok and not type_mod:
            raise NotSupported("HT-0022", f"modifier :{modifier} is not supported on {sp.type} parameter {name}")
    values = split_values(raw)
    if any(v == "" for v in values):
        raise _bad(name, raw, "empty value")
    matches = tuple(_match(pref, modifier, v, base_url) for v in values)
    return Clause(pref, matches, negate=(modifier == "not"))


def is_tag(raw: str, system: str, code: str) -> bool:
    """Whether one token value of a ``_tag`` search is ``system|code`` or the bare ``code``."""
    s, c = _split_pipe(raw)
    return c == code and s in (None, system)


def without_tag(type: str, system: str, code: str) -> Clause:
    """The clause ``_tag:not=system|code`` (search.html#token, :not)."""
    return _clause(type, "_tag:not", f"{system}|{code}", "")


def encode_cursor(c: Cursor) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([list(c.keys), c.pk, c.backward])).decode().rstrip("=")


def decode_cursor(s: str) -> Cursor:
    try:
        keys, pk, back = orjson.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
        if not isinstance(pk, int) or not isinstance(keys, list):
            raise ValueError
        return Cursor(tuple(keys), pk, bool(back))
    except Exception:
        raise InvalidRequest("HT-0024", "invalid paging cursor; restart the search from its first page") from None


def parse(type: str, params: list[tuple[str, str]], *, base_url: str = "", strict: bool = False) -> ParsedSearch:
    """Turn ``[(name, value), ...]`` into a :class:`ParsedSearch` for ``type``."""
    q = Query(type=type, count=DEFAULT_COUNT)
    out = ParsedSearch(q)
    ids: set[str] | None = None
    if sum(raw.count(",") + 1 for _key, raw in params) > MAX_SEARCH_VALUES:
        # Commas counted, escaped ones too: an upper bound, cheap before any parsing.
        raise InvalidRequest("HT-0021", f"a search may carry at most {MAX_SEARCH_VALUES} values (comma-separated "
                                        "alternatives and repeated parameters together); split it into "
                                        "several searches")
    for key, raw in params:
        if "\x00" in key or "\x00" in raw:
            # FHIR strings exclude control characters (datatypes.html#string); PostgreSQL
            # text cannot hold NUL at all.
            raise InvalidRequest("HT-0021", "search parameters must not contain NUL characters")
        try:
            if key in RENDER_PARAMS:
                if key == "_summary":
                    if raw not in SUMMARY_VALUES:
                        raise _bad(key, raw, "expected one of " + ", ".join(SUMMARY_VALUES))
                    out.summary = raw
                    if raw == "count":
                        q.count = 0
                elif key == "_elements":
                    out.elements = [e.strip() for e in raw.split(",") if e.strip()]
                out.canonical.append((key, raw))
                continue
            if key == "_cursor":
                q.cursor = decode_cursor(raw)
                continue
            if key == "_count":
                if not raw.isdigit():
                    raise InvalidRequest("HT-0023", f"_count must be a non-negative integer, not {raw[:20]!r}")
                # Larger pages are served in several pages via next links, never cut silently.
                q.count = min(int(raw), MAX_COUNT) if out.summary != "count" else 0
                out.canonical.append((key, str(q.count)))
                continue
            if key == "_total":
                if raw not in ("none", "estimate", "accurate"):
                    raise _bad(key, raw, "expected none, estimate or accurate")
                q.total = raw != "none"
                out.canonical.append((key, raw))
                continue
            if key == "_sort":
                for part in raw.split(","):
                    desc = part.startswith("-")
                    n = part[1:] if desc else part
                    if n in SPECIAL:
                        q.sort.append(SortKey(ParamRef(type, n, "special"), desc))
                        continue
                    sp = params_for(type).get(n)
                    if sp is None:
                        raise InvalidRequest("HT-0025", f"cannot sort {type} by unknown parameter {n!r}")
                    q.sort.append(SortKey(ParamRef(type, n, sp.type), desc))
                out.canonical.append((key, raw))
                continue
            if key.startswith("_include") or key.startswith("_revinclude"):
                base, _, mod = key.partition(":")
                if mod not in ("", "iterate", "recurse"):
                    raise InvalidRequest("HT-0025", f"unknown modifier on {base}: {mod}")
                q.includes += _includes(type, raw, reverse=(base == "_revinclude"), iterate=bool(mod))
                out.canonical.append((key, raw))
                continue
            if key.startswith("_has:"):
                q.clauses.append(_has(type, key, raw, base_url))
                out.canonical.append((key, raw))
                continue
            if key == "_id" or key.startswith("_id:"):
                vals = {_unescape(v) for v in split_values(raw)}
                ids = vals if ids is None else ids & vals
                out.canonical.append((key, raw))
                continue
            if key == "_lastUpdated":
                q.last_updated += tuple(parse_date_value(key, v) for v in split_values(raw))
                out.canonical.append((key, raw))
                continue
            if key in UNSUPPORTED:
                raise NotSupported("HT-0020", f"search parameter {key} is not supported")
            q.clauses.append(_clause(type, key, raw, base_url))
            out.canonical.append((key, raw))
        except InvalidRequest as e:
            if strict or e.code != "HT-0020":
                raise
            out.ignored.append(key)
        except NotSupported as e:
            if strict or e.code != "HT-0020":
                raise
            out.ignored.append(key)
    if ids is not None:
        q.ids = tuple(sorted(ids))
    return out


def _includes(type: str, raw: str, *, reverse: bool, iterate: bool) -> list[Include]:
    """One _include/_revinclude value; ``*`` or ``Type:*`` means every reference
    parameter (search.html#include: "the wild card * for the search parameter name")."""
    if raw == "*" and not reverse:
        raw = f"{type}:*"
    src, _, rest = raw.partition(":")
    pname, _, target = rest.partition(":")
    if pname != "*":
        return [_include(raw, reverse=reverse, iterate=iterate)]
    if src not in RESOURCE_TYPES or (target and target not in RESOURCE_TYPES):
        raise InvalidRequest("HT-0025", f"_include value must be Type:param[:TargetType], not {raw[:100]!r}")
    out = []
    for sp in sorted(params_for(src).values(), key=lambda p: p.name):
        if sp.type != "reference":
            continue
        if reverse and sp.targets and type not in sp.targets:
            continue  # cannot point at what is searched
        if not reverse and target and sp.targets and target not in sp.targets:
            continue
        out.append(Include(src, ParamRef(src, sp.name, "reference"), target or None, iterate, reverse))
    return out


def render_params(params: list[tuple[str, str]]) -> tuple[str | None, list[str] | None]:
    """``_summary`` and ``_elements`` of a read or vread (search.html#summary,
    #elements: "also ... on read"); other parameters are not the read's concern."""
    summary: str | None = None
    elements: list[str] | None = None
    for key, raw in params:
        if key == "_summary":
            if raw not in SUMMARY_VALUES or raw == "count":
                raise InvalidRequest("HT-0200", f"_summary={raw[:20]!r} on a read: expected one of true, false, "
                                                "text, data (count is for searches)")
            summary = raw
        elif key == "_elements":
            elements = [e.strip() for e in raw.split(",") if e.strip()]
    return summary, elements


def _include(raw: str, *, reverse: bool, iterate: bool) -> Include:
    parts = raw.split(":")
    if len(parts) not in (2, 3) or parts[0] not in RESOURCE_TYPES:
        raise InvalidRequest("HT-0025", f"_include value must be Type:param[:TargetType], not {raw[:100]!r}")
    src, pname = parts[0], parts[1]
    sp = params_for(src).get(pname)
    if sp is None or sp.type != "reference":
        raise InvalidRequest("HT-0025", f"{src}:{pname} is not a reference search parameter")
    target = parts[2] if len(parts) == 3 else None
    if target is not None and target not in RESOURCE_TYPES:
        raise InvalidRequest("HT-0025", f"unknown target type {target!r} in {raw[:100]!r}")
    return Include(src, ParamRef(src, pname, "reference"), target, iterate, reverse)


def _has(type: str, key: str, raw: str, base_url: str) -> Has:
    """``_has:Observation:patient:code=1234-5`` (search.html#has); nested _has is not supported."""
    parts = key.split(":", 3)
    if len(parts) != 4 or parts[1] not in RESOURCE_TYPES:
        raise InvalidRequest("HT-0021", f"_has must be _has:Type:reference-param:param, not {key[:100]!r}")
    src, ref_name, rest = parts[1], parts[2], parts[3]
    sp = params_for(src).get(ref_name)
    if sp is None or sp.type != "reference":
        raise InvalidRequest("HT-0020", f"{src}.{ref_name} is not a reference search parameter")
    if rest.startswith("_has"):
        raise NotSupported("HT-0022", "nested _has is not supported")
    if rest.split(":", 1)[0] in ("_id", "_lastUpdated"):
        # Refused rather than ignored: dropping it would widen the search to every row.
        raise NotSupported("HT-0022", f"{rest.split(':', 1)[0]} in _has is not supported")
    return Has(src, ParamRef(src, ref_name, "reference"), _clause(src, rest, raw, base_url), type)
