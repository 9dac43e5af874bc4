"""SMART on FHIR scopes: grammar, comparison and what a scope allows.

SMART App Launch v2, "Scopes and Launch Context" (scopes-and-launch-context.html):

    ( 'patient' | 'user' | 'system' ) '/' ( fhir-resource | '*' ) '.' [c][r][u][d][s]

with the permission letters present in that order (section "Scopes for
requesting FHIR Resources": ``.cruds``, ``.rs``; ``.sr`` is invalid).  The
v1 forms ``.read``, ``.write`` and ``.*`` are accepted and mapped as section
"Scope Equivalence" says: read = rs, write = cud, * = cruds.  v2 query
parameters (``patient/Observation.rs?category=...``) are refused as not
supported rather than silently widened.  ``offline_access`` and
``online_access`` are understood (they ask for a refresh token); other
non-resource scopes (``openid``, ``fhirUser``, ``launch``) are not offered.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from hutong.errors import InvalidRequest

CONTEXTS = ("patient", "user", "system")
PERMISSIONS = "cruds"
SPECIAL = frozenset({"offline_access", "online_access"})
MAX_SCOPES = 100

_SCOPE = re.compile(r"^(patient|user|system)/([A-Z][A-Za-z]{0,63}|\*)\.([a-z*]+)$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}

# FHIR interactions (http.html) -> the permission letter SMART v2 ties to them.
INTERACTIONS = {
    "create": "c",
    "read": "r", "vread": "r",
    "update": "u", "patch": "u",
    "delete": "d",
    "search": "s", "search-type": "s", "search-system": "s", "search-compartment": "s",
    "history": "s", "history-instance": "s", "history-type": "s", "history-system": "s",
}


@dataclass(frozen=True, slots=True, order=True)
class Scope:
    context: str          # patient | user | system
    type: str             # a resource type or "*"
    permissions: str      # a non-empty subsequence of "cruds", in order

    def __str__(self) -> str:
        return f"{self.context}/{self.type}.{self.permissions}"

    def covers(self, other: Scope) -> bool:
        """True when everything ``other`` allows, this scope allows too
        (same context, same or wildcard type, a superset of the letters)."""
        return (self.context == other.context
                and (self.type == "*" or self.type == other.type)
                and set(other.permissions) <= set(self.permissions))

    def allows(self, type: str, letter: str) -> bool:
        return (self.type == "*" or self.type == type) and letter in self.permissions


def _bad(scope: str, why: str) -> InvalidRequest:
    # Echo at most a bounded prefix: a scope string is client input.
    shown = scope[:80] + ("..." if len(scope) > 80 else "")
    return InvalidRequest("HT-0132", f"scope {shown!r} not understood: {why}")


def parse_scope(text: str) -> Scope:
    """One resource scope; raises InvalidRequest HT-0132 when it is not one."""
    if "?" in text:
        raise _bad(text, "scope parameters (?...) are not supported")
    m = _SCOPE.match(text)
    if m is None:
        raise _bad(text, "expected patient|user|system / Type|* . cruds")
    context, type_, perms = m.groups()
    if perms in _V1:
        perms = _V1[perms]
    elif not perms or "*" in perms or not _in_order(perms):
        raise _bad(text, "permissions are letters of c r u d s, each once, in that order")
    return Scope(context, type_, perms)


def _in_order(perms: str) -> bool:
    pos = -1
    for ch in perms:
        i = PERMISSIONS.find(ch)
        if i <= pos:
            return False
        pos = i
    return True


def parse(text: str | Iterable[str]) -> tuple[tuple[Scope, ...], frozenset[str]]:
    """Resource scopes and special scopes of a space-separated scope string (or list)."""
    words = text.split() if isinstance(text, str) else [w for t in text for w in t.split()]
    if len(words) > MAX_SCOPES:
        raise InvalidRequest("HT-0132", f"too many scopes (at most {MAX_SCOPES})")
    resources: list[Scope] = []
    special: set[str] = set()
    for w in words:
        if w in SPECIAL:
            special.add(w)
        else:
            s = parse_scope(w)
            if s not in resources:
                resources.append(s)
    return tuple(resources), frozenset(special)


def normalize(text: str | Iterable[str]) -> str:
    """Canonical v2 form of a scope string (v1 mapped, duplicates dropped)."""
    resources, special = parse(text)
    return " ".join([str(s) for s in resources] + sorted(special))


def covered(requested: Iterable[Scope], granted: Iterable[Scope]) -> list[Scope]:
    """The requested scopes that no granted scope covers (empty: no escalation)."""
    g = list(granted)
    return [r for r in requested if not any(x.covers(r) for x in g)]


def narrow(requested: str | None, granted: str) -> str:
    """The scopes a token may carry: ``requested`` when every one of them is
    covered by ``granted`` (absent = all granted), else InvalidRequest HT-0131
    naming the scopes that exceed the grant (RFC 6749 section 3.3, invalid_scope)."""
    g, _ = parse(granted)
    if requested is None or not requested.strip():
        return " ".join(str(s) for s in g)
    r, special = parse(requested)
    over = covered(r, g)
    if over:
        raise InvalidRequest("HT-0131", "requested scope exceeds the grant: " + " ".join(str(s) for s in over))
    return " ".join([str(s) for s in r] + sorted(special))


def letter_of(interaction: str) -> str:
    """The permission letter of a FHIR interaction name (or a letter itself)."""
    if len(interaction) == 1 and interaction in PERMISSIONS:
        return interaction
    try:
        return INTERACTIONS[interaction]
    except KeyError:
        raise ValueError(f"unknown interaction {interaction!r}") from None


def allows(scopes: Iterable[str | Scope], type: str, interaction: str, *,
           contexts: Iterable[str] | None = None) -> bool:
    """True when some scope allows ``interaction`` (name or c/r/u/d/s) on ``type``.

    ``contexts`` limits which of patient/user/system scopes count (the policy
    passes the ones the caller's role may use); unparseable scope strings
    count as nothing, so a corrupt grant fails closed."""
    letter = letter_of(interaction)
    ctx = set(contexts) if contexts is not None else None
    for s in scopes:
        if isinstance(s, str):
            if s in SPECIAL:
                continue
            try:
                s = parse_scope(s)
            except InvalidRequest:
                continue
        if (ctx is None or s.context in ctx) and s.allows(type, letter):
            return True
    return False
