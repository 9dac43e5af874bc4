"""Code systems, value sets and concept maps held in memory (FHIR R4 terminology-module.html).

Each is read from the compact JSON the generator and the loader write
(hutong.terminology.generate, hutong.terminology.loader): a CodeSystem's
concepts as ``[code, display, parent?]`` rows, a ValueSet as its ``compose``
(expanded here, valueset.html#expansion), a ConceptMap as its groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Concept:
    code: str
    display: str
    parent: str | None = None


@dataclass
class CodeSystem:
    url: str
    version: str | None
    name: str | None
    title: str | None
    status: str | None
    content: str  # complete | fragment | example | not-present (codesystem.html#CodeSystem.content)
    case_sensitive: bool
    concepts: dict[str, Concept]
    origin: str  # "r4-core", "cn" or the operator's file name
    _children: dict[str, list[str]] | None = field(default=None, repr=False)

    @classmethod
    def of(cls, d: Json, origin: str) -> CodeSystem:
        concepts = {}
        for row in d.get("concepts", []):
            concepts[row[0]] = Concept(row[0], row[1] if len(row) > 1 else "", row[2] if len(row) > 2 else None)
        return cls(d["url"], d.get("version"), d.get("name"), d.get("title"), d.get("status"),
                   d.get("content") or "complete", bool(d.get("caseSensitive", True)), concepts, origin)

    def find(self, code: str) -> Concept | None:
        c = self.concepts.get(code)
        if c is None and not self.case_sensitive:
            low = code.lower()
            c = next((x for k, x in self.concepts.items() if k.lower() == low), None)
        return c

    def children(self, code: str) -> list[str]:
        if self._children is None:  # built on first use (LOINC-sized systems: one pass, not one per $lookup)
            index: dict[str, list[str]] = {}
            for c in self.concepts.values():
                if c.parent is not None:
                    index.setdefault(c.parent, []).append(c.code)
            self._children = index
        return self._children.get(code, [])


@dataclass(frozen=True, slots=True)
class Member:
    """One code of a value set's expansion."""

    system: str
    code: str
    display: str


@dataclass
class ValueSet:
    url: str
    version: str | None
    name: str | None
    title: str | None
    status: str | None
    compose: Json
    origin: str
    _expansion: list[Member] | None = field(default=None, repr=False)
    _index: dict[tuple[str, str], Member] | None = field(default=None, repr=False)

    @classmethod
    def of(cls, d: Json, origin: str) -> ValueSet:
        return cls(d["url"], d.get("version"), d.get("name"), d.get("title"), d.get("status"),
                   d.get("compose") or {}, origin)


@dataclass(frozen=True, slots=True)
class MapTarget:
    system: str | None
    code: str | None
    equivalence: str


@dataclass
class ConceptMap:
    url: str
    version: str | None
    name: str | None
    title: str | None
    status: str | None
    source: str | None  # source value set (canonical or uri)
    target: str | None
    groups: list[Json]
    origin: str

    @classmethod
    def of(cls, d: Json, origin: str) -> ConceptMap:
        return cls(d["url"], d.get("version"), d.get("name"), d.get("title"), d.get("status"),
                   d.get("source"), d.get("target"), d.get("group") or [], origin)

    def translate(self, system: str | None, code: str, reverse: bool = False) -> list[tuple[str | None, MapTarget]]:
        """(source system, target) pairs for ``code`` (conceptmap.html#CodeMap): forward from the
        group's source, or (``reverse``) back from its targets."""
        out: list[tuple[str | None, MapTarget]] = []
        for g in self.groups:
            src, tgt = g.get("source"), g.get("target")
            for el in g.get("element", []):
                for t in el.get("target", []):
                    eq = t.get("equivalence") or "equivalent"
                    if not reverse and el.get("code") == code and (system is None or system == src):
                        out.append((src, MapTarget(tgt, t.get("code"), eq)))
                    elif reverse and t.get("code") == code and (system is None or system == tgt):
                        out.append((tgt, MapTarget(src, el.get("code"), eq)))
        return out
