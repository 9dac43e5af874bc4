"""Required bindings checked on write (FHIR R4 terminologies.html#required).

"To be conformant, the concept in this element SHALL be from the specified
value set."  The value sets are the R4 core's (hutong.terminology: the
generated extract of every required binding), and where each binding sits is
the extract's ``elements`` table (type or backbone path -> JSON key ->
[child type, value set]), pruned to the branches that can reach a binding, so
the walk skips most primitives.  Checked:

* ``code`` elements (352 bindings: Patient.gender, Observation.status,
  HumanName.use, Narrative.status, ...): the code must be in the value set;
* ``CodeableConcept`` elements (14: Condition.clinicalStatus, ...): when it has
  codings, one of them must be in the value set (system and code); a concept
  given as text alone is let through (there is nothing to check);
* ext-1 on every Extension met on the way (extension.html#ext-1: an extension
  has a value or nested extensions, not both, not neither), as the walk visits them.

Bindings to terminologies not in the package (MIME types, UCUM, ISO 4217
currencies) are not checked (the extract's ``unenumerable`` list).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from hutong.terminology import core
from hutong.terminology.service import NotExpandable

Problem = tuple[str, str, str]  # (element path, message, HT code)
MAX_LISTED = 12  # allowed codes named in a message; more: "... N codes, see $expand"


class _Tables:
    def __init__(self) -> None:
        t = core()
        self.elements: dict[str, dict[str, list[Any]]] = t.base.meta["elements"]
        self.codes: dict[str, frozenset[str]] = {}
        self.codings: dict[str, frozenset[tuple[str, str]]] = {}
        self.listed: dict[str, str] = {}
        for url, vs in t.base.value_sets.items():
            try:
                members = t.expansion(vs)
            except NotExpandable:
                continue
            self.codes[url] = frozenset(m.code for m in members)
            self.codings[url] = frozenset((m.system, m.code) for m in members)
            names = [m.code for m in members]
            more = f" ... ({len(names)} codes: ValueSet/$expand?url={url})" if len(names) > MAX_LISTED else ""
            self.listed[url] = ", ".join(names[:MAX_LISTED]) + more


@cache
def tables() -> _Tables:
    return _Tables()


def check(resource: dict[str, Any]) -> list[Problem]:
    """Problems with the required bindings (and ext-1) of a structurally valid resource."""
    t = tables()
    out: list[Problem] = []
    rt = resource.get("resourceType")
    if isinstance(rt, str):
        _walk(t, resource, rt, rt, out)
    return out


def _walk(t: _Tables, node: dict[str, Any], tname: str, path: str, out: list[Problem]) -> None:
    table = t.elements.get(tname)
    if table is None:
        return
    for k, v in node.items():
        e = table.get(k)
        if e is None or v is None:
            continue
        target = e[0]
        vs = e[1] if len(e) > 1 else None
        if type(v) is list:
            for i, item in enumerate(v):
                if item is not None:
                    _one(t, item, target, vs, f"{path}.{k}[{i}]", out)
        else:
            _one(t, v, target, vs, f"{path}.{k}", out)


def _one(t: _Tables, v: Any, target: str, vs: str | None, path: str, out: list[Problem]) -> None:
    if target == "code":
        if vs is not None and type(v) is str and v not in t.codes[vs]:
            out.append((path, f"{v[:60]!r} is not in the required value set {vs} (allowed: {t.listed[vs]})",
                        "HT-0240"))
        return
    if type(v) is not dict:
        return
    if target == "@resource":
        rt = v.get("resourceType")
        if isinstance(rt, str):
            _walk(t, v, rt, path, out)
        return
    if vs is not None:  # a CodeableConcept (or Coding) bound to a value set
        codings = v.get("coding") if target == "CodeableConcept" else [v]
        pairs = [(c.get("system"), c.get("code")) for c in codings or [] if isinstance(c, dict)]
        if pairs and not any(p in t.codings[vs] for p in pairs):
            shown = ", ".join(f"{s}#{c}" for s, c in pairs[:3])
            out.append((path, f"no coding ({shown}) is in the required value set {vs} (allowed: {t.listed[vs]})",
                        "HT-0240"))
    if target == "Extension":
        # value.exists(): a primitive value given only by its "_valueString" (extensions, no
        # value: json.html#primitive) is an element that exists, as FHIRPath sees it.
        has_value = any(k.startswith(("value", "_value")) for k in v)
        if bool(v.get("extension")) == has_value:
            out.append((path, "ext-1: an extension has either a value or nested extensions, not both or neither",
                        "HT-0241"))
    _walk(t, v, target, path, out)
