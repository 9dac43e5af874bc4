"""The terminology operations as FHIR defines them (terminology-service.html):
``CodeSystem/$lookup``, ``CodeSystem/$validate-code``, ``ValueSet/$expand``,
``ValueSet/$validate-code`` and ``ConceptMap/$translate``.

Inputs come as URL parameters (GET) or a Parameters resource (POST,
operations.html#request); answers are Parameters resources (a ValueSet for
$expand), each named as the operation's OperationDefinition names them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from hutong.errors import InvalidRequest, NotFound
from hutong.terminology.codes import Member, ValueSet
from hutong.terminology.service import Terminology, Validation

Json = dict[str, Any]
DEFAULT_COUNT = 1000  # expansions are paged (valueset-operation-expand: count, offset)
MAX_COUNT = 10000


class Inputs:
    """An operation's input parameters, by name (repeats kept)."""

    def __init__(self) -> None:
        self.values: dict[str, list[Any]] = {}

    @classmethod
    def of_query(cls, items: Iterable[tuple[str, str]]) -> Inputs:
        out = cls()
        for k, v in items:
            if k.startswith("_"):
                continue  # _format and the like: not operation parameters
            out.values.setdefault(k, []).append(v)
        return out

    @classmethod
    def of_parameters(cls, body: Any) -> Inputs:
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise InvalidRequest("HT-0244", "POST a Parameters resource (operations.html#request)")
        out = cls()
        for p in body.get("parameter") or []:
            if not isinstance(p, dict) or not isinstance(p.get("name"), str):
                raise InvalidRequest("HT-0244", "each parameter needs a name")
            value = p.get("resource")
            if value is None:
                value = next((v for k, v in p.items() if k.startswith("value")), None)
            out.values.setdefault(p["name"], []).append(value)
        return out

    def one(self, name: str, kind: type = str) -> Any:
        vs = self.values.get(name) or []
        if len(vs) > 1:
            raise InvalidRequest("HT-0244", f"parameter {name!r} given more than once", expression=[name])
        if not vs:
            return None
        v = vs[0]
        if kind is bool and isinstance(v, str):
            if v not in ("true", "false"):
                raise InvalidRequest("HT-0244", f"parameter {name!r} must be true or false", expression=[name])
            return v == "true"
        if kind is int and isinstance(v, str):
            if not v.isdigit():
                raise InvalidRequest("HT-0244", f"parameter {name!r} must be a whole number", expression=[name])
            return int(v)
        if not isinstance(v, kind) or isinstance(v, bool) and kind is int:
            raise InvalidRequest("HT-0244", f"parameter {name!r} has the wrong type", expression=[name])
        return v


def _param(name: str, value: Any, kind: str) -> Json:
    return {"name": name, f"value{kind}": value}


def _parameters(*params: Json | None) -> Json:
    return {"resourceType": "Parameters", "parameter": [p for p in params if p is not None]}


def _coding_of(inp: Inputs) -> tuple[str | None, str | None, str | None]:
    """(system, code, display) from code/system/display, a coding, or a codeableConcept's first coding
    that the caller's question can decide; the operation definitions allow any one of them."""
    code, system, display = inp.one("code"), inp.one("system"), inp.one("display")
    coding = inp.one("coding", dict)
    if coding is not None:
        code, system, display = coding.get("code"), coding.get("system"), coding.get("display")
    return system, code, display


def _codings(inp: Inputs) -> list[tuple[str | None, str | None, str | None]]:
    cc = inp.one("codeableConcept", dict)
    if cc is None:
        return [_coding_of(inp)]
    codings = [c for c in cc.get("coding") or [] if isinstance(c, dict)]
    if not codings:
        raise InvalidRequest("HT-0244", "codeableConcept has no coding", expression=["codeableConcept"])
    return [(c.get("system"), c.get("code"), c.get("display")) for c in codings]


def _need(value: Any, name: str) -> Any:
    if value is None or value == "":
        raise InvalidRequest("HT-0244", f"parameter {name!r} is required", expression=[name])
    return value


def _validation(v: Validation) -> Json:
    return _parameters(_param("result", v.result, "Boolean"),
                       _param("message", v.message, "String") if v.message else None,
                       _param("display", v.display, "String") if v.display else None)


def lookup(t: Terminology, inp: Inputs) -> Json:
    """codesystem-operation-lookup: name, version, display and the hierarchy properties."""
    system, code, _display = _coding_of(inp)
    cs, c = t.lookup(_need(system, "system"), _need(code, "code"))
    params: list[Json | None] = [
        _param("name", cs.title or cs.name or cs.url, "String"),
        _param("version", cs.version, "String") if cs.version else None,
        _param("display", c.display, "String") if c.display else None,
    ]
    if c.parent is not None:
        params.append({"name": "property", "part": [_param("code", "parent", "Code"),
                                                    _param("value", c.parent, "Code")]})
    for child in cs.children(c.code):
        params.append({"name": "property", "part": [_param("code", "child", "Code"),
                                                    _param("value", child, "Code")]})
    return _parameters(*params)


def validate_code_system(t: Terminology, inp: Inputs) -> Json:
    """codesystem-operation-validate-code (the code system named by url, or the coding's system)."""
    answers = []
    for system, code, display in _codings(inp):
        url = inp.one("url") or system
        answers.append(t.validate_in_code_system(_need(url, "url"), _need(code, "code"), display))
    return _validation(_best(answers))


def _best(answers: list[Validation]) -> Validation:
    """A concept is valid when one coding is; else say the most telling reason (a known code
    with a wrong display before an unknown code)."""
    return next((a for a in answers if a.result), next((a for a in answers if a.display), answers[0]))


def validate_value_set(t: Terminology, inp: Inputs) -> Json:
    """valueset-operation-validate-code: is the code (or one coding of the concept) in the value set?"""
    url = _need(inp.one("url"), "url")
    answers = [t.validate_in_value_set(url, system, _need(code, "code"), display)
               for system, code, display in _codings(inp)]
    return _validation(_best(answers))


def expand(t: Terminology, inp: Inputs) -> Json:
    """valueset-operation-expand: the value set with its expansion (filter by text, paged)."""
    given = inp.one("valueSet", dict)
    if given is not None:
        vs = ValueSet.of({"url": given.get("url") or "urn:hutong:inline-value-set", **given}, "request")
    else:
        url = _need(inp.one("url"), "url")
        found = t.value_set(url)
        if found is None:
            raise NotFound("HT-0242", f"value set {url[:200]} is not known to this server")
        vs = found
    members: list[Member] = t.expansion(vs)
    text = inp.one("filter")
    if text:
        needle = text.lower()
        members = [m for m in members if needle in m.code.lower() or needle in m.display.lower()]
    offset = inp.one("offset", int) or 0
    count = inp.one("count", int)
    count = DEFAULT_COUNT if count is None else min(count, MAX_COUNT)
    page = members[offset:offset + count]
    expansion: Json = {"identifier": f"urn:hutong:expansion:{vs.url}", "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
                       "total": len(members), "offset": offset,
                       "parameter": [{"name": "count", "valueInteger": count}, {"name": "offset",
                                                                                 "valueInteger": offset}]}
    if text:
        expansion["parameter"].append({"name": "filter", "valueString": text})
    if page:
        expansion["contains"] = [{"system": m.system, "code": m.code, **({"display": m.display} if m.display else {})}
                                 for m in page]
    out: Json = {"resourceType": "ValueSet", "url": vs.url, "status": vs.status or "active"}
    for k in ("version", "name", "title"):
        if getattr(vs, k):
            out[k] = getattr(vs, k)
    out["expansion"] = expansion
    return out


def translate(t: Terminology, inp: Inputs) -> Json:
    """conceptmap-operation-translate: the mapped concepts, each with its equivalence."""
    system, code, _display = _codings(inp)[0]
    code = _need(code, "code")
    found = t.translate(code, system, url=inp.one("url"), source=inp.one("source"), target=inp.one("target"),
                        target_system=inp.one("targetsystem"), reverse=bool(inp.one("reverse", bool)))
    usable = [f for f in found if f[2].equivalence not in ("unmatched", "disjoint")]
    matches = []
    for cm, _src, tgt in found:
        concept = {k: v for k, v in (("system", tgt.system), ("code", tgt.code)) if v is not None}
        matches.append({"name": "match", "part": [
            _param("equivalence", tgt.equivalence, "Code"),
            *([_param("concept", concept, "Coding")] if concept else []),
            _param("source", cm.url, "Uri")]})
    message = None if usable else f"no mapping found for {system + '#' if system else ''}{code}"
    return _parameters(_param("result", bool(usable), "Boolean"),
                       _param("message", message, "String") if message else None, *matches)
