"""The privilege and drug-allergy rules' configuration, approved by the committee (seed 004).

国卫办医发〔2018〕20号 asks that decision-support rules be approved by the institution's
committee.  The configuration of hutong.cds.privileges_rule and hutong.cds.allergy_rule is
decision-support knowledge of kind :data:`SAFETY_KIND` in the same versioned, effective-dated,
four-eyes life cycle as the mutual-recognition knowledge (hutong.cds.versions: drafted by a
committee or commission account or the operator's command line, approved by a committee member
who is not the author, retired; every step audited with the version's SHA-256 digest).  Only an
approved version in force on the day (Beijing) applies.  Until one is approved the rules apply
the built-in defaults (:func:`builtin`, version ``builtin-2026-12``) and every card says so:
a safety check is never switched off for want of a version.

The JSON form (strict: an unknown or wrong field is refused with HT-0537 naming it)::

    {"title": "...",
     "allergy": {"conflicts": [{"allergen": "J01C", "drugs": ["J01C"], "action": "hard-stop",
                                "note": "青霉素类过敏者禁用青霉素类药物"}, ...],
                 "fallback": "warning"},
     "privileges": {"prescribing": "hard-stop", "antibiotic": "hard-stop", "surgery": "hard-stop",
                    "tiers": {"J01CA04": 1, "J01MA12": 2, "J01DH02": 3, ...}}}

``allergen`` and ``drugs`` are WHO ATC codes or classes (http://www.whocc.no/atc); an action is
``hard-stop`` (critical card, no override) or ``warning`` (override with a reason); ``tiers``
maps a drug's ATC code to its antibiotic tier (1 非限制使用级, 2 限制使用级, 3 特殊使用级).
"""

from __future__ import annotations

import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from types import MappingProxyType
from typing import Any, Literal

import orjson

from hutong.cds import knowledge_store as store
from hutong.cds.knowledge import KnowledgeSet
from hutong.cds.versions import AUTHOR_ROLES, AuditSink, KnowledgeVersions, Version, region_day
from hutong.errors import Forbidden, InvalidRequest
from hutong.security.events import SUCCESS
from hutong.security.principal import Principal
from hutong.store.repository import Repository, Writer

SAFETY_KIND = "safety"
BUILTIN_VERSION = "builtin-2026-12"
Action = Literal["hard-stop", "warning"]
ACTIONS: tuple[Action, ...] = ("hard-stop", "warning")
_ATC = re.compile(r"^[A-Z][0-9]{2}([A-Z]([A-Z]([0-9]{2})?)?)?$")


# ------------------------------------------------------------------ the drug-allergy rule's
@dataclass(frozen=True, slots=True)
class Conflict:
    allergen: str               # ATC class (or code) of the allergy
    drugs: tuple[str, ...]      # ATC classes (or codes) of the drugs it concerns
    action: Action
    note: str                   # the rule in words (zh-CN), shown on the card


# ATC J01D is "other beta-lactams": cephalosporins are J01DB-J01DE (carbapenems J01DH,
# monobactams J01DF); the synthetic region codes a cephalosporin allergy J01D.
CEPHALOSPORINS = ("J01DB", "J01DC", "J01DD", "J01DE")
DEFAULT_CONFLICTS: tuple[Conflict, ...] = (
    Conflict("J01C", ("J01C",), "hard-stop", "青霉素类过敏者禁用青霉素类药物"),
    Conflict("J01D", CEPHALOSPORINS, "hard-stop", "头孢菌素类过敏者禁用头孢菌素类药物"),
    Conflict("J01C", CEPHALOSPORINS, "warning", "青霉素类过敏者慎用头孢菌素类（可能交叉过敏）"),
    Conflict("J01E", ("J01E",), "hard-stop", "磺胺类过敏者禁用磺胺类药物"),
    Conflict("N02BA", ("N02BA",), "hard-stop", "水杨酸类（阿司匹林）过敏者禁用水杨酸类药物"),
    Conflict("V08A", ("V08A",), "warning", "碘造影剂过敏者慎用碘造影剂，须预防用药并监护"),
)


@dataclass(frozen=True, slots=True)
class AllergyConfig:
    version: str = BUILTIN_VERSION
    conflicts: tuple[Conflict, ...] = DEFAULT_CONFLICTS
    fallback: Action = "warning"   # an allergy's ATC code a prefix of the drug's, no conflict naming it


# ------------------------------------------------------------------ the privilege rule's
# ATC -> tier: the region's catalogue defaults (modelled, as hutong.synth.catalog.drugs,
# on the Beijing and national examples, 国卫办医发〔2015〕43号 附件); each province sets its own.
DEFAULT_TIERS: Mapping[str, int] = MappingProxyType({
    "J01CA04": 1, "J01DC02": 1, "J01FA10": 1, "J01DB04": 1, "J01XD01": 1,   # amoxicillin ... metronidazole
    "J01MA12": 2, "J01MA14": 2, "J01DD04": 2, "J01CR05": 2, "J01DD62": 2,   # levofloxacin ... cefoperazone/sulb.
    "J01DH02": 3, "J01DH51": 3, "J01XA01": 3, "J01XX08": 3, "J01AA12": 3,   # meropenem ... tigecycline
})


@dataclass(frozen=True, slots=True)
class PrivilegeConfig:
    """How each privilege check answers: ``hard-stop`` (critical card, no override)
    or ``warning`` (override with a reason)."""

    version: str = BUILTIN_VERSION
    prescribing: Action = "hard-stop"
    antibiotic: Action = "hard-stop"
    surgery: Action = "hard-stop"
    tiers: Mapping[str, int] = field(default_factory=lambda: DEFAULT_TIERS)


@dataclass(frozen=True, slots=True)
class SafetyConfig:
    version: str          # what the cards name: "v3（kv-…，委员会批准）" or the built-in version
    approved: bool
    allergy: AllergyConfig
    privileges: PrivilegeConfig


def builtin() -> SafetyConfig:
    """The built-in defaults, applied while no committee-approved version is in force."""
    return SafetyConfig(BUILTIN_VERSION, False, AllergyConfig(), PrivilegeConfig())


# ------------------------------------------------------------------ the JSON form
def _bad(where: str, why: str) -> InvalidRequest:
    return InvalidRequest("HT-0537", f"safety rule configuration: {where}: {why}")


def _action(v: Any, where: str) -> Action:
    for a in ACTIONS:
        if v == a:
            return a
    raise _bad(where, "must be 'hard-stop' or 'warning'")


def _atc(v: Any, where: str) -> str:
    if not isinstance(v, str) or not _ATC.match(v):
        raise _bad(where, "must be an ATC code or class (e.g. J01C, J01CA04)")
    return v


def _keys(d: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise _bad(where, "must be an object")
    extra = sorted(set(d) - allowed)
    if extra:
        raise _bad(where, f"unknown field {extra[0]!r}")
    return d


def parse(data: Any, version: str = "draft", approved: bool = False) -> tuple[SafetyConfig, str, bytes]:
    """(the configuration, its title, its canonical JSON) from the JSON form; HT-0537 names the first
    wrong field, so nothing half-checked is stored."""
    d = _keys(data, "the document", {"title", "allergy", "privileges"})
    title = d.get("title")
    if not isinstance(title, str) or not title.strip() or len(title) > 200:
        raise _bad("title", "1 to 200 characters")
    a = _keys(d.get("allergy"), "allergy", {"conflicts", "fallback"})
    raw = a.get("conflicts")
    if not isinstance(raw, list) or not raw:
        raise _bad("allergy.conflicts", "a non-empty array")
    conflicts = []
    for i, c in enumerate(raw):
        w = f"allergy.conflicts[{i}]"
        c = _keys(c, w, {"allergen", "drugs", "action", "note"})
        drugs = c.get("drugs")
        if not isinstance(drugs, list) or not drugs:
            raise _bad(w + ".drugs", "a non-empty array of ATC codes")
        note = c.get("note")
        if not isinstance(note, str) or not note.strip() or len(note) > 200:
            raise _bad(w + ".note", "1 to 200 characters")
        conflicts.append(Conflict(_atc(c.get("allergen"), w + ".allergen"),
                                  tuple(_atc(x, f"{w}.drugs[{j}]") for j, x in enumerate(drugs)),
                                  _action(c.get("action"), w + ".action"), note.strip()))
    p = _keys(d.get("privileges"), "privileges", {"prescribing", "antibiotic", "surgery", "tiers"})
    tiers_raw = p.get("tiers")
    if not isinstance(tiers_raw, dict):
        raise _bad("privileges.tiers", "an object of ATC code -> tier")
    tiers = {}
    for k, v in tiers_raw.items():
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 3:
            raise _bad(f"privileges.tiers.{k}", "a tier 1, 2 or 3")
        tiers[_atc(k, f"privileges.tiers.{k}")] = v
    cfg = SafetyConfig(
        version, approved,
        AllergyConfig(version, tuple(conflicts), _action(a.get("fallback", "warning"), "allergy.fallback")),
        PrivilegeConfig(version, _action(p.get("prescribing"), "privileges.prescribing"),
                        _action(p.get("antibiotic"), "privileges.antibiotic"),
                        _action(p.get("surgery"), "privileges.surgery"), MappingProxyType(tiers)))
    return cfg, title.strip(), orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def to_json(cfg: SafetyConfig, title: str) -> dict[str, Any]:
    """The JSON form of a configuration (the built-in defaults as a committee's first draft)."""
    return {"title": title,
            "allergy": {"conflicts": [{"allergen": c.allergen, "drugs": list(c.drugs), "action": c.action,
                                       "note": c.note} for c in cfg.allergy.conflicts],
                        "fallback": cfg.allergy.fallback},
            "privileges": {"prescribing": cfg.privileges.prescribing, "antibiotic": cfg.privileges.antibiotic,
                           "surgery": cfg.privileges.surgery, "tiers": dict(cfg.privileges.tiers)}}


# ------------------------------------------------------------------ versions
_CACHE: OrderedDict[tuple[str, str], SafetyConfig] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def in_force(repo: Repository, day: str) -> SafetyConfig:
    """The approved configuration in force on ``day`` (Beijing, YYYY-MM-DD), else :func:`builtin`.
    A version never changes once drafted, so its parse is kept per version id."""
    vid = store.in_force(repo, SAFETY_KIND, day)
    if vid is None:
        return builtin()
    key = (repo.db.url, vid)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    row = store.version_row(repo, vid)
    body = store.body_of(repo, vid)
    assert row is not None and body is not None
    cfg, _title, _body = parse(orjson.loads(body), f"v{int(row[2])}（{vid}，委员会批准）", approved=True)
    with _CACHE_LOCK:
        _CACHE[key] = cfg
        while len(_CACHE) > 16:
            _CACHE.popitem(last=False)
    return cfg


class SafetyVersions(KnowledgeVersions):
    """The life cycle of hutong.cds.versions for kind :data:`SAFETY_KIND`: approve, retire,
    get and list as for any knowledge; a draft is checked by :func:`parse`."""

    def __init__(self, repo: Repository, audit: AuditSink, *, clock: Callable[[], int] | None = None) -> None:
        super().__init__(repo, audit, kind=SAFETY_KIND, clock=clock)

    def draft(self, author: Principal, data: Any, *, effective_from: str, effective_to: str | None = None,
              note: str | None = None) -> Version:
        if author.role not in AUTHOR_ROLES:
            e = Forbidden("HT-0504", f"a {author.role} account may not draft decision-support knowledge "
                                     "(committee or commission accounts, or the operator's command line)")
            self._refuse("cds-knowledge-draft", author, e, None)
            raise e
        lo, hi = _day(effective_from, "effective_from"), _day(effective_to, "effective_to") if effective_to else None
        if hi is not None and hi < lo:
            raise InvalidRequest("HT-0507", "effective_to is before effective_from")
        if note is not None and len(note) > 500:
            raise _bad("note", "at most 500 characters")
        _cfg, title, body = parse(data)
        # The version row is kind-generic; the recognition rows stay empty for this kind.
        ks = KnowledgeSet(title, (), (), (), (), (), (), body)
        vid = "kv-" + secrets.token_hex(8)
        now = self.clock()

        def tx(w: Writer) -> Version:
            w.lock_key("cds-knowledge:" + self.kind)
            store.insert_version(w, vid, self.kind, ks, lo, hi, author.account_id, note, now)
            v = self.get_in(w, vid)
            self._record(w, "cds-knowledge-draft", author, SUCCESS, v, effective=f"{lo}..{hi or ''}")
            return v

        return self.repo.transact(tx)

    def get_in(self, w: Writer, version_id: str) -> Version:
        r = store.version_row(self.repo, version_id, w)
        assert r is not None
        return Version(str(r[0]), str(r[1]), int(r[2]), str(r[3]), str(r[4]), str(r[5]), r[6], str(r[7]), r[8],
                       r[9], int(r[10]), None if r[11] is None else int(r[11]),
                       None if r[12] is None else int(r[12]), r[13], str(r[14]))


def _day(v: str, what: str) -> str:
    try:
        return date.fromisoformat(v).isoformat()
    except (TypeError, ValueError):
        raise InvalidRequest("HT-0507", f"{what} must be a date YYYY-MM-DD") from None


__all__ = ["ACTIONS", "BUILTIN_VERSION", "CEPHALOSPORINS", "DEFAULT_CONFLICTS", "DEFAULT_TIERS", "SAFETY_KIND",
           "AllergyConfig", "Conflict", "PrivilegeConfig", "SafetyConfig", "SafetyVersions", "builtin", "in_force",
           "parse", "region_day", "to_json"]
