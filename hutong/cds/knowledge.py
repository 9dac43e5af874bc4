"""Mutual-recognition knowledge (检查检验结果互认), as data: what a knowledge set says and how it is read.

《医疗机构检查检验结果互认管理办法》(国卫医发〔2022〕6号) and 《关于进一步推进医疗机构检查检验结果
互认的指导意见》(国卫医政发〔2024〕37号) ask each region for a 互认项目清单 (the items that are
recognised, each with the time a result stays valid, 可互认时间), a scope mark printed on reports
(京HR inside Beijing, 京津冀HR across Beijing-Tianjin-Hebei), a 负面清单 (items or clinical
situations never recognised) and quality control: only institutions that passed 室间质评 (labs) or
imaging QC for an item, while that QC is valid, produce recognisable results.  One knowledge set
holds all of it:

- ``items``: standard items.  A lab item is a LOINC code; an imaging item is DICOM modality +
  SNOMED CT body site + procedure (Hutong's exam code system).  Each names its window in days and
  its scope mark; the mark's regions (GB/T 2260 province prefixes) are where its results are
  recognised, and ``regions`` may give one region another window ("per item and region").
- ``local_codes``: each institution's own codes mapped to items (exported and imported as FHIR R4
  ConceptMap, conceptmap.html: group.source = the institution's code system, group.target =
  :data:`ITEM_SYSTEM`, equivalence ``equivalent``/``equal`` only), so results match across
  institutions that code differently.
- ``negative_list``: situation -> items (``*``: every item) never recognised in it; ``always``
  lists items never recognised at all.  ``situations`` says how a situation is recognised in a
  hook call: the draft order's priority (``stat``: 急诊/抢救), the encounter's class (``EMER``), or a
  code (with ``prefix``: ICD-10 chapter O, 妊娠) in the order's reasonCode or the patient's active
  Conditions.
- ``quality``: per institution and item (``*``, ``*lab``, ``*imaging`` or an item key) a QC
  programme passed, valid from..to (dates, both inclusive, Beijing days).

This module is pure: parsing and checking (HT-0501 names the field), the rows the store keeps
(hutong.cds.knowledge_store), the :class:`Knowledge` snapshot the rule reads
(hutong.cds.recognition) and the ConceptMap form.  Versions, approval and effective dates are
hutong.cds.versions.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson

from hutong.errors import InvalidRequest
from hutong.systems import CODESYSTEM_BASE, EXT_BASE, ORGANIZATION

KIND = "recognition"
ITEM_SYSTEM = CODESYSTEM_BASE + "hr-item"              # the standard items' own code system (code = item key)
SITUATION_SYSTEM = CODESYSTEM_BASE + "hr-situation"    # situations a draft order may name in reasonCode
LOINC = "http://loinc.org"
DICOM = "http://dicom.nema.org/resources/ontology/DCM"
SNOMED = "http://snomed.info/sct"
# The local code system of an institution, as HL7 v2 intake names it (hutong.ingest.hl7v2.mapping
# CODE_PREFIX): the default when a code map does not say.
LOCAL_CODE_PREFIX = "urn:hutong:code:"
INSTITUTION_EXT = EXT_BASE + "hr-institution"           # ConceptMap: whose local codes these are
ITEM_KINDS = ("lab", "imaging")
ALL_ITEMS = "*"
ALWAYS = "always"                                        # negative-list situation: never recognised
TRIGGER_KINDS = ("priority", "encounter_class", "code", "code_prefix")
# ConceptMap equivalences that make a local code the same test (conceptmap-equivalence valueset).
SAME = ("equivalent", "equal")
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_REGION = re.compile(r"^\d{2}$")


def _bad(where: str, why: str) -> InvalidRequest:
    return InvalidRequest("HT-0501", f"{where}: {why}")


def _text(d: Mapping[str, Any], key: str, where: str, *, required: bool = True, limit: int = 200) -> str:
    v = d.get(key)
    if v is None or v == "":
        if required:
            raise _bad(f"{where}.{key}", "required")
        return ""
    if not isinstance(v, str) or len(v) > limit:
        raise _bad(f"{where}.{key}", f"must be text of at most {limit} characters")
    return v.strip()


def _key(v: Any, where: str) -> str:
    if not isinstance(v, str) or not _KEY.match(v):
        raise _bad(where, "must be a key (letters, digits, . _ -; at most 64)")
    return v


def _day(v: Any, where: str, *, required: bool = True) -> str | None:
    if v in (None, ""):
        if required:
            raise _bad(where, "required (YYYY-MM-DD)")
        return None
    try:
        return date.fromisoformat(str(v)).isoformat()
    except ValueError:
        raise _bad(where, "must be a date YYYY-MM-DD") from None


def _days(v: Any, where: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 3650:
        raise _bad(where, "must be a whole number of days, 0 to 3650")
    return v


# ------------------------------------------------------------------ rows (what the store keeps)
@dataclass(frozen=True, slots=True)
class Item:
    key: str
    kind: str                  # lab | imaging
    name: str
    loinc: str | None = None
    modality: str | None = None
    body_site: str | None = None      # SNOMED CT body structure
    proc_system: str | None = None
    proc_code: str | None = None


@dataclass(frozen=True, slots=True)
class ItemRegion:
    """Results of ``item`` from an institution in ``region`` are recognised for ``window_days``."""

    item: str
    region: str                # GB/T 2260 province prefix: 11 Beijing, 12 Tianjin, 13 Hebei
    window_days: int
    scope_mark: str


@dataclass(frozen=True, slots=True)
class Negative:
    situation: str             # a situation key, or ``always``
    item: str                  # an item key or ``*``


@dataclass(frozen=True, slots=True)
class Trigger:
    """How ``situation`` shows in a hook call (kind: priority, encounter_class, code, code_prefix)."""

    situation: str
    name: str
    kind: str
    system: str
    value: str


@dataclass(frozen=True, slots=True)
class Quality:
    institution: str           # 机构代码 (Organization.identifier under 2.16.156.10011.1.5)
    item: str                  # item key, ``*``, ``*lab`` or ``*imaging``
    program: str               # 室间质评 / 影像质控 ...
    passed: bool
    valid_from: str
    valid_to: str


@dataclass(frozen=True, slots=True)
class LocalCode:
    institution: str
    system: str
    code: str
    item: str
    display: str = ""


@dataclass(frozen=True, slots=True)
class KnowledgeSet:
    """One knowledge set, checked; ``body`` is its canonical JSON (sorted keys) and ``digest`` its SHA-256."""

    title: str
    items: tuple[Item, ...]
    regions: tuple[ItemRegion, ...]
    negatives: tuple[Negative, ...]
    triggers: tuple[Trigger, ...]
    quality: tuple[Quality, ...]
    local_codes: tuple[LocalCode, ...]
    body: bytes = b""

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


def parse(data: Any) -> KnowledgeSet:
    """A knowledge set from its JSON form (the module docstring; the seed file is an example).
    Refuses with HT-0501 naming the first wrong field: nothing half-checked is stored."""
    if not isinstance(data, dict):
        raise _bad("knowledge", "must be an object")
    if data.get("kind", KIND) != KIND:
        raise _bad("kind", f"must be {KIND!r}")
    title = _text(data, "title", "knowledge")
    marks_raw = data.get("scope_marks")
    if not isinstance(marks_raw, dict) or not marks_raw:
        raise _bad("scope_marks", "name at least one scope mark and its regions, e.g. {\"京HR\": [\"11\"]}")
    marks: dict[str, tuple[str, ...]] = {}
    for mark, regs in marks_raw.items():
        if not isinstance(mark, str) or not 1 <= len(mark) <= 32:
            raise _bad("scope_marks", "a mark is text of 1 to 32 characters")
        if not isinstance(regs, list) or not regs or not all(isinstance(r, str) and _REGION.match(r) for r in regs):
            raise _bad(f"scope_marks.{mark}", "must list region prefixes (two digits of GB/T 2260)")
        marks[mark] = tuple(dict.fromkeys(regs))
    items: list[Item] = []
    regions: list[ItemRegion] = []
    raw_items = data.get("items")
    if not isinstance(raw_items, list) or not raw_items:
        raise _bad("items", "must list at least one item")
    for n, d in enumerate(raw_items):
        where = f"items[{n}]"
        if not isinstance(d, dict):
            raise _bad(where, "must be an object")
        key = _key(d.get("key"), f"{where}.key")
        kind = d.get("kind")
        if kind not in ITEM_KINDS:
            raise _bad(f"{where}.kind", "must be lab or imaging")
        name = _text(d, "name", where)
        if kind == "lab":
            item = Item(key, kind, name, loinc=_text(d, "loinc", where, limit=32))
        else:
            proc = d.get("procedure") or {}
            if not isinstance(proc, dict):
                raise _bad(f"{where}.procedure", "must be {system, code}")
            item = Item(key, kind, name, modality=_text(d, "modality", where, limit=16),
                        body_site=_text(d, "body_site", where, limit=32),
                        proc_system=_text(proc, "system", f"{where}.procedure", required=False) or None,
                        proc_code=_text(proc, "code", f"{where}.procedure", required=False, limit=64) or None)
        items.append(item)
        mark = d.get("scope")
        if mark not in marks:
            raise _bad(f"{where}.scope", f"must be one of the scope marks ({', '.join(marks)})")
        window = _days(d.get("window_days"), f"{where}.window_days")
        per_region = d.get("regions") or {}
        if not isinstance(per_region, dict):
            raise _bad(f"{where}.regions", "must map a region prefix to {window_days}")
        for reg in per_region:
            if reg not in marks[str(mark)]:
                raise _bad(f"{where}.regions.{reg}", f"is not a region of {mark}")
        for reg in marks[str(mark)]:
            over = per_region.get(reg) or {}
            w = _days(over.get("window_days"), f"{where}.regions.{reg}.window_days") \
                if isinstance(over, dict) and "window_days" in over else window
            regions.append(ItemRegion(key, reg, w, str(mark)))
    keys = [i.key for i in items]
    if len(set(keys)) != len(keys):
        raise _bad("items", "an item key is used twice")
    known = set(keys)

    triggers: list[Trigger] = []
    raw_sit = data.get("situations") or {}
    if not isinstance(raw_sit, dict):
        raise _bad("situations", "must map a situation key to its name and triggers")
    for sit, d in raw_sit.items():
        where = f"situations.{sit}"
        _key(sit, where)
        if not isinstance(d, dict):
            raise _bad(where, "must be an object")
        name = _text(d, "name", where)
        for v in _strs(d.get("priority"), f"{where}.priority"):
            triggers.append(Trigger(sit, name, "priority", "", v))
        for v in _strs(d.get("encounter_class"), f"{where}.encounter_class"):
            triggers.append(Trigger(sit, name, "encounter_class", "", v))
        for m, c in enumerate(d.get("codes") or ()):
            if not isinstance(c, dict):
                raise _bad(f"{where}.codes[{m}]", "must be {system, code} or {system, prefix}")
            system = _text(c, "system", f"{where}.codes[{m}]")
            if c.get("prefix"):
                triggers.append(Trigger(sit, name, "code_prefix", system,
                                        _text(c, "prefix", f"{where}.codes[{m}]", limit=64)))
            else:
                triggers.append(Trigger(sit, name, "code", system, _text(c, "code", f"{where}.codes[{m}]", limit=64)))
        # A situation can always be named outright in the draft order's reasonCode.
        triggers.append(Trigger(sit, name, "code", SITUATION_SYSTEM, sit))
    situations = set(raw_sit) | {ALWAYS}

    negatives: list[Negative] = []
    for n, d in enumerate(data.get("negative_list") or ()):
        where = f"negative_list[{n}]"
        if not isinstance(d, dict):
            raise _bad(where, "must be an object")
        sit = d.get("situation")
        if sit not in situations:
            raise _bad(f"{where}.situation", f"must be {ALWAYS} or a key of situations")
        for it in _strs(d.get("items"), f"{where}.items") or ():
            if it != ALL_ITEMS and it not in known:
                raise _bad(f"{where}.items", f"unknown item {it[:64]!r}")
            negatives.append(Negative(str(sit), it))

    quality: list[Quality] = []
    for n, d in enumerate(data.get("quality") or ()):
        where = f"quality[{n}]"
        if not isinstance(d, dict):
            raise _bad(where, "must be an object")
        inst = _text(d, "institution", where, limit=64)
        program = _text(d, "program", where, limit=64)
        passed = d.get("passed", True)
        if not isinstance(passed, bool):
            raise _bad(f"{where}.passed", "must be true or false")
        lo = _day(d.get("valid_from"), f"{where}.valid_from")
        hi = _day(d.get("valid_to"), f"{where}.valid_to")
        assert lo is not None and hi is not None
        if hi < lo:
            raise _bad(f"{where}.valid_to", "is before valid_from")
        for it in _strs(d.get("items"), f"{where}.items"):
            if it not in (ALL_ITEMS, "*lab", "*imaging") and it not in known:
                raise _bad(f"{where}.items", f"unknown item {it[:64]!r}")
            quality.append(Quality(inst, it, program, passed, lo, hi))

    local: list[LocalCode] = []
    seen: dict[tuple[str, str], str] = {}
    for n, d in enumerate(data.get("local_codes") or ()):
        where = f"local_codes[{n}]"
        if not isinstance(d, dict):
            raise _bad(where, "must be an object")
        inst = _text(d, "institution", where, limit=64)
        system = _text(d, "system", where, required=False) or LOCAL_CODE_PREFIX + inst
        codes = d.get("codes")
        if not isinstance(codes, dict) or not codes:
            raise _bad(f"{where}.codes", "must map each local code to an item key")
        for code, target in codes.items():
            display = ""
            if isinstance(target, dict):
                display = _text(target, "display", f"{where}.codes.{code}", required=False)
                target = target.get("item")
            if not isinstance(code, str) or not code or len(code) > 64:
                raise _bad(f"{where}.codes", "a local code is text of 1 to 64 characters")
            if target not in known:
                raise _bad(f"{where}.codes.{code}", f"unknown item {str(target)[:64]!r}")
            if seen.get((system, code), target) != target:
                raise _bad(f"{where}.codes.{code}", "this local code is mapped to two items")
            seen[(system, code)] = str(target)
            local.append(LocalCode(inst, system, code, str(target), display))
    local = list({(c.system, c.code): c for c in local}.values())

    body = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    return KnowledgeSet(title, tuple(items), tuple(regions), tuple(dict.fromkeys(negatives)),
                        tuple(dict.fromkeys(triggers)), tuple(dict.fromkeys(quality)), tuple(local), body)


def _strs(v: Any, where: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise _bad(where, "must be a list of text")
    return tuple(dict.fromkeys(v))


# ------------------------------------------------------------------ the snapshot the rule reads
@dataclass(frozen=True, slots=True)
class Match:
    """A result or an order resolved to a standard item."""

    item: Item
    via: str                   # loinc | item | procedure | local | modality+site


@dataclass
class Knowledge:
    """One approved version's knowledge, indexed for the rule (built once per version)."""

    version_id: str
    title: str
    items: dict[str, Item]
    regions: dict[tuple[str, str], ItemRegion]
    negatives: dict[str, set[str]]                    # situation -> item keys (or *)
    triggers: list[Trigger]
    quality: dict[str, list[Quality]]                 # institution -> rows
    local: dict[tuple[str, str], LocalCode]            # (system, code) -> mapping
    by_loinc: dict[str, Item] = field(default_factory=dict)
    by_proc: dict[tuple[str, str], Item] = field(default_factory=dict)
    by_site: dict[tuple[str, str], Item] = field(default_factory=dict)
    situation_names: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, version_id: str, ks: KnowledgeSet) -> Knowledge:
        k = cls(version_id, ks.title, {i.key: i for i in ks.items},
                {(r.item, r.region): r for r in ks.regions}, {}, list(ks.triggers), {},
                {(c.system, c.code): c for c in ks.local_codes})
        for n in ks.negatives:
            k.negatives.setdefault(n.situation, set()).add(n.item)
        for q in ks.quality:
            k.quality.setdefault(q.institution, []).append(q)
        for i in ks.items:
            if i.loinc:
                k.by_loinc.setdefault(i.loinc, i)
            if i.proc_system and i.proc_code:
                k.by_proc[(i.proc_system, i.proc_code)] = i
            if i.modality and i.body_site:
                k.by_site.setdefault((i.modality, i.body_site), i)
        k.situation_names = {t.situation: t.name for t in ks.triggers}
        return k

    def item_of_coding(self, system: str, code: str) -> Match | None:
        """The item a coding names: LOINC, the item system, a procedure code, or a mapped local code."""
        if system == LOINC and code in self.by_loinc:
            return Match(self.by_loinc[code], "loinc")
        if system == ITEM_SYSTEM and code in self.items:
            return Match(self.items[code], "item")
        proc = self.by_proc.get((system, code))
        if proc is not None:
            return Match(proc, "procedure")
        local = self.local.get((system, code))
        if local is not None:
            return Match(self.items[local.item], "local")
        return None

    def item_of_concept(self, cc: Any) -> Match | None:
        for c in (cc or {}).get("coding") or () if isinstance(cc, dict) else ():
            if isinstance(c, dict) and isinstance(c.get("code"), str):
                m = self.item_of_coding(str(c.get("system") or ""), c["code"])
                if m is not None:
                    return m
        return None

    def item_of_site(self, modality: str, body_site: str) -> Match | None:
        it = self.by_site.get((modality, body_site))
        return Match(it, "modality+site") if it is not None else None

    def codes_of(self, item: Item) -> list[tuple[str, str]]:
        """Every (system, code) that names ``item``: LOINC, the item code, the procedure, local codes."""
        out = [(ITEM_SYSTEM, item.key)]
        if item.loinc:
            out.append((LOINC, item.loinc))
        if item.proc_system and item.proc_code:
            out.append((item.proc_system, item.proc_code))
        out += sorted((c.system, c.code) for c in self.local.values() if c.item == item.key)
        return out

    def longest_window(self, item: str) -> int:
        return max((r.window_days for (i, _reg), r in self.regions.items() if i == item), default=0)

    def rule_for(self, item: str, region: str) -> ItemRegion | None:
        return self.regions.get((item, region))

    def excluded(self, item: str, situations: Iterable[str]) -> list[str]:
        """The negative-list situations (``always`` included) that exclude ``item``."""
        out = []
        for s in (ALWAYS, *situations):
            keys = self.negatives.get(s, set())
            if item in keys or ALL_ITEMS in keys:
                out.append(s)
        return list(dict.fromkeys(out))

    def qc_passed(self, institution: str, item: Item, day: str) -> Quality | None:
        """The QC row that makes ``institution`` eligible for ``item`` on ``day`` (None: not eligible)."""
        for q in self.quality.get(institution, ()):
            if q.item in (item.key, ALL_ITEMS, "*" + item.kind) and q.passed and q.valid_from <= day <= q.valid_to:
                return q
        return None


# ------------------------------------------------------------------ what changed between two versions
_DIFF_KEYS: dict[str, Any] = {
    "items": lambda r: r.key,
    "regions": lambda r: (r.item, r.region),
    "negatives": lambda r: (r.situation, r.item),
    "triggers": lambda r: (r.situation, r.kind, r.system, r.value),
    "quality": lambda r: (r.institution, r.item, r.program, r.valid_from),
    "local_codes": lambda r: (r.system, r.code),
}


def diff(old: KnowledgeSet, new: KnowledgeSet) -> dict[str, dict[str, list[Any]]]:
    """Rows added, removed and changed (same key, other values) from ``old`` to ``new``, per kind
    of row: what a reviewer reads before approving a new version."""
    out: dict[str, dict[str, list[Any]]] = {}
    for kind, key in _DIFF_KEYS.items():
        a = {key(r): r for r in getattr(old, kind)}
        b = {key(r): r for r in getattr(new, kind)}
        part = {"added": [_row(b[k]) for k in sorted(b.keys() - a.keys(), key=repr)],
                "removed": [_row(a[k]) for k in sorted(a.keys() - b.keys(), key=repr)],
                "changed": [{"from": _row(a[k]), "to": _row(b[k])}
                            for k in sorted(a.keys() & b.keys(), key=repr) if a[k] != b[k]]}
        if any(part.values()):
            out[kind] = part
    return out


def _row(r: Any) -> dict[str, Any]:
    return {f: getattr(r, f) for f in r.__slots__}


# ------------------------------------------------------------------ ConceptMap (conceptmap.html)
def concept_maps(ks: KnowledgeSet, version: str = "", status: str = "active") -> list[dict[str, Any]]:
    """Each institution's local code map as one FHIR R4 ConceptMap."""
    names = {i.key: i.name for i in ks.items}
    by_inst: dict[str, dict[str, list[LocalCode]]] = {}
    for c in ks.local_codes:
        by_inst.setdefault(c.institution, {}).setdefault(c.system, []).append(c)
    out = []
    for inst in sorted(by_inst):
        groups = []
        for system in sorted(by_inst[inst]):
            groups.append({"source": system, "target": ITEM_SYSTEM, "element": [
                {"code": c.code, **({"display": c.display} if c.display else {}),
                 "target": [{"code": c.item, "display": names[c.item], "equivalence": "equivalent"}]}
                for c in sorted(by_inst[inst][system], key=lambda c: c.code)]})
        cm: dict[str, Any] = {
            "resourceType": "ConceptMap", "id": f"hr-local-{_slug(inst)}",
            "extension": [{"url": INSTITUTION_EXT, "valueIdentifier": {"system": ORGANIZATION, "value": inst}}],
            "url": f"{CODESYSTEM_BASE.replace('/CodeSystem/', '/ConceptMap/')}hr-local-{_slug(inst)}",
            "name": f"HrLocalCodes{_slug(inst).replace('-', '')}", "title": f"{inst} 本地项目代码 -> 互认项目",
            "status": status, "targetUri": ITEM_SYSTEM, "group": groups}
        if version:
            cm["version"] = version
        out.append(cm)
    return out


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", s)[:60]


def local_codes_from_concept_map(cm: Any) -> list[dict[str, Any]]:
    """The ``local_codes`` entry of a knowledge set from an institution's ConceptMap (HT-0506 when
    it is not one).  Elements whose equivalence is not ``equivalent``/``equal`` are left out: a
    wider or inexact code is not the same test, so not a basis for recognition."""
    def bad(why: str) -> InvalidRequest:
        return InvalidRequest("HT-0506", f"ConceptMap: {why}")

    if not isinstance(cm, dict) or cm.get("resourceType") != "ConceptMap":
        raise bad("not a ConceptMap resource")
    inst = None
    for e in cm.get("extension") or ():
        if isinstance(e, dict) and e.get("url") == INSTITUTION_EXT:
            v = e.get("valueIdentifier") or {}
            inst = v.get("value") if isinstance(v, dict) else None
    if not isinstance(inst, str) or not inst:
        raise bad(f"extension {INSTITUTION_EXT} (the institution's identifier) is missing")
    entries: list[dict[str, Any]] = []
    for g in cm.get("group") or ():
        if not isinstance(g, dict) or not isinstance(g.get("source"), str) or g.get("target") != ITEM_SYSTEM:
            raise bad(f"each group needs a source system and target {ITEM_SYSTEM}")
        codes: dict[str, Any] = {}
        for el in g.get("element") or ():
            if not isinstance(el, dict) or not isinstance(el.get("code"), str):
                raise bad("an element has no code")
            same = [t for t in el.get("target") or () if isinstance(t, dict) and t.get("equivalence") in SAME]
            if len(same) > 1:
                raise bad(f"local code {el['code'][:64]!r} is the same as two items")
            if same:
                codes[el["code"]] = {"item": same[0].get("code"), "display": str(el.get("display") or "")}
        if codes:
            entries.append({"institution": inst, "system": g["source"], "codes": codes})
    return entries
