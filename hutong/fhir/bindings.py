"""Required bindings checked on write (FHIR R4 terminologies.html#required).

"To be conformant, the concept in this element SHALL be from the specified
value set."  The value sets are the R4 core's (hutong.terminology: the
generated extract of every required binding), and where each binding sits is
the extract's ``elements`` table (type or backbone path -> JSON key ->
[child type, value set]), pruned to the branches that can reach a binding, so
the walk skips most primitives.  Checked:

* ``code`` elements (352 bindings: Patient.gender, Observation.status,
  HumanName.use, Narrative.status, ...): the code must be in the value set;
* ``CodeableConcept`` elements (14: Condition.clinicalStatus, ...): one of its
  codings must be in the value set (system and code); text alone is refused,
  a concept given only by extensions (data-absent-reason) is let through;
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


# How a key is checked: a bound code, an object walked with its own table, a resource
# (walked with the table of its resourceType), a bound CodeableConcept or Coding.
K_CODE, K_OBJECT, K_RESOURCE, K_CONCEPT, K_CODING, K_EXTENSION = range(6)
Entry = tuple[int, Any, frozenset[Any], str | None]  # (kind, child table, allowed, value set)
Path = tuple[Any, ...] | str  # (parent path, key[, index]): formatted only for a problem


class _Tables:
    """The ``elements`` table compiled: per type, key -> Entry, child tables linked."""

    def __init__(self) -> None:
        t = core()
        elements: dict[str, dict[str, list[Any]]] = t.base.meta["elements"]
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
        self.types: dict[str, dict[str, Entry]] = {name: {} for name in elements}
        empty: frozenset[Any] = frozenset()
        for name, table in elements.items():
            out = self.types[name]
            for key, e in table.items():
                target: str = e[0]
                bound: str | None = e[1] if len(e) > 1 else None
                child = self.types.get(target)
                if target == "code":
                    out[key] = (K_CODE, None, self.codes[bound] if bound else empty, bound)
                elif target == "@resource":
                    out[key] = (K_RESOURCE, None, empty, None)
                elif bound is not None:
                    out[key] = (K_CONCEPT if target == "CodeableConcept" else K_CODING, child, self.codings[bound],
                                bound)
                elif target == "Extension":
                    out[key] = (K_EXTENSION, child, empty, None)
                elif child is not None:
                    out[key] = (K_OBJECT, child, empty, None)


@cache
def tables() -> _Tables:
    return _Tables()


def check(resource: dict[str, Any]) -> list[Problem]:
    """Problems with the required bindings (and ext-1) of a structurally valid resource."""
    t = tables()
    out: list[Problem] = []
    rt = resource.get("resourceType")
    table = t.types.get(rt) if isinstance(rt, str) else None
    if table is not None:
        _walk(t, table, resource, str(rt), out)
    return out


def _fmt(path: Path) -> str:
    parts: list[str] = []
    while isinstance(path, tuple):
        if len(path) == 3:
            parts.append(f".{path[1]}[{path[2]}]")
        else:
            parts.append(f".{path[1]}")
        path = path[0]
    return path + "".join(reversed(parts))


def _walk(t: _Tables, table: dict[str, Entry], node: dict[str, Any], path: Path, out: list[Problem]) -> None:
    # Visit the keys both have, from the smaller side (a Coding's table has one key,
    # extension; its JSON three), without building anything: the body is written twice.
    if len(table) < len(node):
        for k, e in table.items():
            v = node.get(k)
            if v is None:
                continue
            if type(v) is list:
                for i, item in enumerate(v):
                    if item is not None:
                        _one(t, e, item, (path, k, i), out)
            elif e[0] == K_OBJECT and type(v) is dict:
                _walk(t, e[1], v, (path, k), out)
            else:
                _one(t, e, v, (path, k), out)
        return
    for k, v in node.items():
        f = table.get(k)
        if f is None or v is None:
            continue
        if type(v) is list:
            for i, item in enumerate(v):
                if item is not None:
                    _one(t, f, item, (path, k, i), out)
        elif f[0] == K_OBJECT and type(v) is dict:
            _walk(t, f[1], v, (path, k), out)
        else:
            _one(t, f, v, (path, k), out)


def _one(t: _Tables, e: Entry, v: Any, path: Path, out: list[Problem]) -> None:
    kind, child, allowed, vs = e
    if kind == K_CODE:
        if vs is not None and type(v) is str and v not in allowed:
            out.append((_fmt(path), f"{v[:60]!r} is not in the required value set {vs} (allowed: "
                                    f"{t.listed.get(vs, '')})", "HT-0240"))
        return
    if type(v) is not dict:
        return
    if kind == K_OBJECT:
        _walk(t, child, v, path, out)
    elif kind == K_EXTENSION:
        # ext-1 (extension.html): extension.exists() != value.exists().  value.exists(): a
        # primitive value given only by its "_valueString" (extensions, no value:
        # json.html#primitive) is an element that exists, as FHIRPath sees it.
        has_value = any(k.startswith(("value", "_value")) for k in v)
        if bool(v.get("extension")) == has_value:
            out.append((_fmt(path), "ext-1: an extension has either a value or nested extensions, not both or "
                                    "neither", "HT-0241"))
        _walk(t, child, v, path, out)
    elif kind == K_RESOURCE:
        rt = v.get("resourceType")
        inner = t.types.get(rt) if isinstance(rt, str) else None
        if inner is not None:
            _walk(t, inner, v, path, out)
    else:  # a CodeableConcept (or Coding) bound to a value set
        codings = v.get("coding") if kind == K_CONCEPT else [v]
        pairs = [(c.get("system"), c.get("code")) for c in codings or [] if isinstance(c, dict)]
        if not any(p in allowed for p in pairs) and (pairs or not v.get("extension")):
            # A concept given as text alone is not "from the value set" either; one given only
            # by extensions (data-absent-reason) says why it has no code, and is let through.
            shown = ", ".join(f"{s}#{c}" for s, c in pairs[:3]) or "text only"
            out.append((_fmt(path), f"no coding ({shown}) is in the required value set {vs} "
                                    f"(allowed: {t.listed.get(vs or '', '')})", "HT-0240"))
        if child is not None:
            _walk(t, child, v, path, out)
