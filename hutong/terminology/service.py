"""The terminology service's knowledge: every code system, value set and concept map
Hutong holds, and the questions FHIR asks of them (terminology-service.html).

Three sources, in this order of precedence for a repeated URL: the operator's
files (``hutong terminology load``: LOINC, the ICD-10 national clinical
edition ..., whose licences forbid shipping them; re-read when the directory
changes), the Chinese code systems Hutong uses (data/cn.json) and the R4 core
extract (data/r4-core.json: the value sets of every required binding).
:func:`core` is the shipped part alone, which the write-time binding check
(hutong.fhir.bindings) uses: required bindings name only core value sets.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from hutong.errors import HutongError, NotFound
from hutong.terminology.codes import CodeSystem, Concept, ConceptMap, MapTarget, Member, ValueSet

DATA = Path(__file__).resolve().parent / "data"
Json = dict[str, Any]


class NotExpandable(HutongError):
    """The value set draws on a code system Hutong does not hold (or a filter it does not know)."""

    status = 422
    issue_code = "not-supported"


@dataclass(frozen=True, slots=True)
class Validation:
    result: bool
    message: str | None
    display: str | None
    system: str | None = None


class Catalog:
    """One set of code systems, value sets and concept maps, by canonical URL."""

    def __init__(self) -> None:
        self.code_systems: dict[str, CodeSystem] = {}
        self.value_sets: dict[str, ValueSet] = {}
        self.concept_maps: dict[str, ConceptMap] = {}
        self.meta: Json = {}

    def add(self, doc: Json, origin: str) -> None:
        for d in doc.get("codeSystems", []):
            self.code_systems[d["url"]] = CodeSystem.of(d, origin)
        for d in doc.get("valueSets", []):
            self.value_sets[d["url"]] = ValueSet.of(d, origin)
        for d in doc.get("conceptMaps", []):
            self.concept_maps[d["url"]] = ConceptMap.of(d, origin)


class Terminology:
    """The code systems, value sets and concept maps (``base``), plus an operator
    directory read again whenever it changes."""

    def __init__(self, base: Catalog, directory: Path | None = None) -> None:
        self.base = base
        self.directory = directory
        self._local = Catalog()
        self._stamp: tuple[tuple[str, int, int], ...] | None = None
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- lookup of definitions

    def _refresh(self) -> Catalog:
        d = self.directory
        if d is None or not d.is_dir():
            return self._local
        files = sorted(d.glob("*.json"))
        stamp = tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in files)
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    fresh = Catalog()
                    for f in files:
                        fresh.add(json.loads(f.read_text(encoding="utf-8")), f.name)
                    self._local, self._stamp = fresh, stamp
        return self._local

    def code_system(self, url: str) -> CodeSystem | None:
        return self._refresh().code_systems.get(url) or self.base.code_systems.get(url)

    def value_set(self, url: str) -> ValueSet | None:
        return self._refresh().value_sets.get(url) or self.base.value_sets.get(url)

    def concept_map(self, url: str) -> ConceptMap | None:
        return self._refresh().concept_maps.get(url) or self.base.concept_maps.get(url)

    def concept_maps(self) -> list[ConceptMap]:
        local = self._refresh().concept_maps
        return list(local.values()) + [m for u, m in self.base.concept_maps.items() if u not in local]

    def counts(self) -> dict[str, int]:
        local = self._refresh()
        return {"codeSystems": len(set(local.code_systems) | set(self.base.code_systems)),
                "valueSets": len(set(local.value_sets) | set(self.base.value_sets)),
                "conceptMaps": len(set(local.concept_maps) | set(self.base.concept_maps))}

    # ---------------------------------------------------------------- expansion

    def expansion(self, vs: ValueSet) -> list[Member]:
        """valueset.html#expansion: the compose evaluated (include minus exclude)."""
        if vs._expansion is None:
            members = self._evaluate(vs.compose.get("include", []), vs.url, set())
            excluded = {(m.system, m.code) for m in self._evaluate(vs.compose.get("exclude", []), vs.url, set())}
            out = [m for m in members if (m.system, m.code) not in excluded]
            vs._index = {(m.system, m.code): m for m in out}
            vs._expansion = out
        return vs._expansion

    def _evaluate(self, parts: list[Json], url: str, seen: set[str]) -> list[Member]:
        out: dict[tuple[str, str], Member] = {}
        for part in parts:
            got: list[Member] | None = None
            system = part.get("system")
            if system:
                cs = self.code_system(system)
                if "concept" in part:
                    got = []
                    for c in part["concept"]:
                        known = cs.find(c["code"]) if cs is not None else None
                        got.append(Member(system, c["code"], c.get("display") or (known.display if known else "")))
                elif cs is None or cs.content not in ("complete", "fragment"):
                    raise NotExpandable("HT-0243", f"value set {url} draws on code system {system}, which this "
                                                   "server does not hold (load it: hutong terminology load)")
                else:
                    codes = list(cs.concepts.values())
                    for f in part.get("filter", []):
                        codes = _filter(cs, codes, f, url)
                    got = [Member(system, c.code, c.display) for c in codes]
            for ref in part.get("valueSet", []):
                ref = ref.split("|")[0]
                inner = self.value_set(ref)
                if inner is None or ref in seen:
                    raise NotExpandable("HT-0243", f"value set {url} includes {ref}, which is unknown here")
                members = self._evaluate(inner.compose.get("include", []), ref, seen | {url})
                if got is None:
                    got = members
                else:  # system and valueSet together: the intersection (valueset.html#compose)
                    keep = {(m.system, m.code) for m in members}
                    got = [m for m in got if (m.system, m.code) in keep]
            for m in got or []:
                out.setdefault((m.system, m.code), m)
        return list(out.values())

    def contains(self, vs: ValueSet, system: str | None, code: str) -> Member | None:
        self.expansion(vs)
        index = vs._index
        assert index is not None
        if system is not None:
            return index.get((system, code))
        return next((m for (s, c), m in index.items() if c == code), None)

    # ---------------------------------------------------------------- the operations' questions

    def lookup(self, system: str, code: str) -> tuple[CodeSystem, Concept]:
        cs = self.code_system(system)
        if cs is None:
            raise NotFound("HT-0242", f"code system {system[:200]} is not known to this server")
        c = cs.find(code)
        if c is None:
            raise NotFound("HT-0242", f"code {code[:80]!r} is not in code system {system[:200]}",
                           expression=["code"])
        return cs, c

    def validate_in_code_system(self, system: str, code: str, display: str | None) -> Validation:
        cs = self.code_system(system)
        if cs is None:
            raise NotFound("HT-0242", f"code system {system[:200]} is not known to this server")
        c = cs.find(code)
        if c is None:
            note = " (this server holds only part of it)" if cs.content != "complete" else ""
            return Validation(False, f"code {code!r} is not in code system {system}{note}", None, system)
        return _display_check(c.display, display, system)

    def validate_in_value_set(self, url: str, system: str | None, code: str, display: str | None) -> Validation:
        vs = self.value_set(url)
        if vs is None:
            raise NotFound("HT-0242", f"value set {url[:200]} is not known to this server")
        m = self.contains(vs, system, code)
        if m is None:
            where = f"{system}#{code}" if system else repr(code)
            return Validation(False, f"{where} is not in value set {url}", None, system)
        return _display_check(m.display, display, m.system)

    def translate(self, code: str, system: str | None, *, url: str | None = None, source: str | None = None,
                  target: str | None = None, target_system: str | None = None, reverse: bool = False,
                  ) -> list[tuple[ConceptMap, str | None, MapTarget]]:
        maps = [self.concept_map(url)] if url else self.concept_maps()
        if url and maps[0] is None:
            raise NotFound("HT-0242", f"concept map {url[:200]} is not known to this server")
        out = []
        for cm in maps:
            assert cm is not None
            if source and (cm.target if reverse else cm.source) != source:
                continue
            if target and (cm.source if reverse else cm.target) != target:
                continue
            for src, t in cm.translate(system, code, reverse):
                if target_system and t.system != target_system:
                    continue
                out.append((cm, src, t))
        return out


def _display_check(known: str, given: str | None, system: str | None) -> Validation:
    if given is not None and known and given != known:
        # terminology-service.html: a wrong display is an error of the coding (result false).
        return Validation(False, f"display {given!r} is not the display of this code ({known!r})", known, system)
    return Validation(True, None, known or None, system)


def _filter(cs: CodeSystem, codes: list[Concept], f: Json, url: str) -> list[Concept]:
    op, prop, value = f.get("op"), f.get("property"), f.get("value", "")
    if prop == "concept" and op in ("is-a", "descendent-of"):
        wanted = {value} if op == "is-a" else set()
        frontier = [value]
        while frontier:
            kids = cs.children(frontier.pop())
            wanted.update(kids)
            frontier += kids
        return [c for c in codes if c.code in wanted]
    if prop == "concept" and op == "=":
        return [c for c in codes if c.code == value]
    raise NotExpandable("HT-0243", f"value set {url}: filter {prop} {op} is not supported here")


def _read(name: str) -> Json:
    doc: Json = json.loads((DATA / name).read_text(encoding="utf-8"))
    return doc


@cache
def shipped() -> Catalog:
    """The R4 core extract and the Chinese code systems (what ships with Hutong)."""
    cat = Catalog()
    core = _read("r4-core.json")
    cat.add(core, "r4-core")
    cat.meta = {"source": core["source"], "unenumerable": core["unenumerable"], "elements": core["elements"]}
    cat.add(_read("cn.json"), "cn")
    return cat


@cache
def core() -> Terminology:
    """The shipped terminology alone (the write path's binding check)."""
    return Terminology(shipped())
