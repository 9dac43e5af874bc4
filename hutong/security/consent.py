"""A resident's FHIR Consent resources, read as access rules (consent.html, R4).

Residents (or their delegates) grant or deny access by institution,
practitioner, category and period with ordinary Consent resources whose
``patient`` is their golden person (or one of its sources).  Rules are read
from ``provision`` and its nested ``provision`` elements:

- ``type`` permit | deny; ``actor.reference`` Organization / Practitioner /
  PractitionerRole (no actor = anyone); ``period`` (absent = open-ended,
  inherited by nested provisions); ``securityLabel`` codes = the sensitive
  categories the rule is about (PSY, HIV, SEX ... as on meta.security).
- A permit without labels grants access to the ordinary record; a permit with
  labels additionally unmasks those categories ("specifically consented").
- A deny without labels refuses access on every basis but break-glass (it
  overrides a treatment relationship: "grant or deny by institution"); a
  deny with labels keeps those categories masked.

FHIR's nesting means "exceptions to the base rule"; flattening every
provision into one rule list and letting deny win is the conservative
reading a resident expects ("I said no").  Only Consents with status
``active`` count, and only those about privacy (``scope`` patient-privacy, or
no scope given): a treatment or research consent form an institution files
is a record, not an access rule.

Which Consents reach :func:`evaluate` at all is decided by who wrote them
(:mod:`hutong.security.consent_authors`, issue 12): the resident, a delegate
within what delegates may see, or an institution on the resident's documented
instruction about itself.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope"
# Consent.scope codes (R4 valueset-consent-scope) that are not about who may see the record.
NOT_PRIVACY = frozenset({"treatment", "research", "adr"})


@dataclass
class ConsentDecision:
    permit: bool = False                 # some rule grants the ordinary record
    deny: bool = False                   # some rule refuses everything
    unmasked: set[str] = field(default_factory=set)  # labels (upper-case) specifically permitted
    masked: set[str] = field(default_factory=set)    # labels (upper-case) specifically denied
    consent_ids: list[str] = field(default_factory=list)


def _in_period(period: dict[str, Any] | None, now_iso: str) -> bool:
    # Dates and dateTimes compare as strings on their common prefix (ISO 8601).
    if not period:
        return True
    start, end = period.get("start"), period.get("end")
    if isinstance(start, str) and now_iso[:len(start[:10])] < start[:10]:
        return False
    return not (isinstance(end, str) and now_iso[:len(end[:10])] > end[:10])


def ref_key(ref: str) -> str:
    """"Type/id" of a relative or absolute reference (versions dropped)."""
    parts = ref.split("/_history")[0].rstrip("/").split("/")
    return "/".join(parts[-2:])


def _actors(provision: dict[str, Any]) -> set[str] | None:
    refs = set()
    for a in provision.get("actor") or []:
        ref = (a.get("reference") or {}).get("reference") if isinstance(a, dict) else None
        if isinstance(ref, str):
            refs.add(ref_key(ref))
    return refs or None


def _labels(provision: dict[str, Any]) -> set[str]:
    return {c["code"].upper() for c in provision.get("securityLabel") or []
            if isinstance(c, dict) and isinstance(c.get("code"), str)}


def _rules(provision: dict[str, Any], period: dict[str, Any] | None,
           actors: set[str] | None) -> Iterator[tuple[str, dict[str, Any] | None, set[str] | None, set[str]]]:
    own_period = provision.get("period") or period
    own_actors = _actors(provision) or actors
    kind = provision.get("type")
    if kind in ("permit", "deny"):
        yield kind, own_period, own_actors, _labels(provision)
    for nested in provision.get("provision") or []:
        if isinstance(nested, dict):
            yield from _rules(nested, own_period, own_actors)


@dataclass(frozen=True)
class Rule:
    kind: str                            # permit | deny
    period: dict[str, Any] | None
    actors: set[str] | None              # "Type/id" references; None = anyone
    labels: set[str]                     # upper-case security label codes


def rules(consent: dict[str, Any]) -> list[Rule]:
    """Every permit/deny rule of a Consent, nested provisions flattened (period and
    actors inherited), as :func:`evaluate` reads them."""
    prov = consent.get("provision")
    if not isinstance(prov, dict):
        return []
    return [Rule(k, p, a, lab) for k, p, a, lab in _rules(prov, None, None)]


def privacy_scoped(consent: dict[str, Any]) -> bool:
    """Is this Consent about who may see the record (scope patient-privacy, or none given)?"""
    codes = {c.get("code") for c in ((consent.get("scope") or {}).get("coding") or []) if isinstance(c, dict)}
    return "patient-privacy" in codes or not (codes & NOT_PRIVACY)


def without_permitted(consent: dict[str, Any], labels: Iterable[str]) -> dict[str, Any]:
    """A copy of a Consent whose permits no longer name ``labels`` (upper-case): what
    is left when its author may not open those categories (denies are kept: a
    restriction is never more than the author could grant)."""
    drop = {x.upper() for x in labels}
    out = copy.deepcopy(consent)

    def walk(p: Any) -> None:
        if not isinstance(p, dict):
            return
        if p.get("type") == "permit" and isinstance(p.get("securityLabel"), list):
            p["securityLabel"] = [c for c in p["securityLabel"] if not (
                isinstance(c, dict) and isinstance(c.get("code"), str) and c["code"].upper() in drop)]
        for nested in p.get("provision") or []:
            walk(nested)

    walk(out.get("provision"))
    return out


def evaluate(consents: Iterable[dict[str, Any]], actor_refs: set[str], now_iso: str) -> ConsentDecision:
    """What the active consents say about an actor known by ``actor_refs``
    (e.g. {"Organization/o1", "Practitioner/p1", "PractitionerRole/r1"}) now."""
    d = ConsentDecision()
    for c in consents:
        if c.get("status") != "active" or not isinstance(c.get("provision"), dict) or not privacy_scoped(c):
            continue
        applied = False
        for kind, period, actors, labels in _rules(c["provision"], None, None):
            if actors is not None and not (actors & actor_refs):
                continue
            if not _in_period(period, now_iso):
                continue
            applied = True
            if kind == "permit":
                d.permit = True
                d.unmasked |= labels
            elif labels:
                d.masked |= labels
            else:
                d.deny = True
        if applied and isinstance(c.get("id"), str):
            d.consent_ids.append(c["id"])
    d.unmasked -= d.masked
    return d
