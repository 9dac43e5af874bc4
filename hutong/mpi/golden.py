"""Golden person records: one Patient per person, built from its sources.

Survivorship rules (which source value the golden record shows), in order:

- identifier: the ID number held by most sources among valid, self-consistent
  numbers (ties: the most recently updated source's); every other identifier
  of every source (health cards, passports, each institution's MRNs) is kept,
  so the golden record answers PIX queries.  Invalid ID numbers are left out.
- name, gender, birthDate: from the sources that carry the chosen ID number
  when there are any (the ID number was checked against them), else from all
  sources; the most frequent normalised value wins, ties go to the most
  recently updated source.  gender and birthDate fall back to what the ID
  number encodes.
- telecom, address: the most recently updated source's first (people move
  and change numbers; the latest registration is the best guess), then the
  other distinct phones.
- link: ``seealso`` to every source; each source carries ``refer`` back.
- meta.tag ``golden`` (GOLDEN_TAG): clients may not create or change such
  records; only the MPI writes them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hutong.mpi.features import Features
from hutong.mpi.idnumber import parse_id_number
from hutong.mpi.normalize import normalize_name
from hutong.systems import CODESYSTEM_BASE, ID_CARD

GOLDEN_SYSTEM = CODESYSTEM_BASE + "mpi"
GOLDEN_TAG = {"system": GOLDEN_SYSTEM, "code": "golden", "display": "golden person record"}
PERSON_PREFIX = "mpi-"


@dataclass(frozen=True, slots=True)
class SourceView:
    patient_id: str
    body: dict[str, Any]
    features: Features
    updated: int


def is_golden(resource: dict[str, Any]) -> bool:
    return any(isinstance(t, dict) and t.get("system") == GOLDEN_SYSTEM and t.get("code") == "golden"
               for t in (resource.get("meta") or {}).get("tag") or ())


def _vote(values: Sequence[tuple[str, int]]) -> str | None:
    """Most frequent value; ties to the most recent (value, updated) pair."""
    if not values:
        return None
    counts = Counter(v for v, _ in values)
    latest: dict[str, int] = {}
    for v, t in values:
        latest[v] = max(latest.get(v, 0), t)
    return max(counts, key=lambda v: (counts[v], latest[v], v))


def build(person_id: str, sources: Sequence[SourceView]) -> dict[str, Any]:
    recent = sorted(sources, key=lambda s: (s.updated, s.patient_id), reverse=True)
    id_number = _vote([(i, s.updated) for s in sources for i in s.features.ids])
    basis = [s for s in recent if id_number in s.features.ids] if id_number else list(recent)
    basis = basis or list(recent)

    names: list[tuple[str, int]] = []
    name_of: dict[str, dict[str, Any]] = {}
    for s in basis:
        for n in s.body.get("name") or ():
            if isinstance(n, dict) and n.get("use") != "old":
                text = n.get("text") or ((n.get("family") or "") + "".join(n.get("given") or ()))
                key = normalize_name(text) if text else ""
                if key:
                    names.append((key, s.updated))
                    name_of.setdefault(key, n)
    g: dict[str, Any] = {"resourceType": "Patient", "id": person_id, "meta": {"tag": [dict(GOLDEN_TAG)]}}
    identifiers: list[dict[str, Any]] = []
    if id_number:
        identifiers.append({"use": "official", "type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NI"}], "text": "居民身份证"},
            "system": ID_CARD, "value": id_number})
    seen: set[tuple[str, str]] = {(ID_CARD, id_number)} if id_number else set()
    for s in recent:
        for ident in s.body.get("identifier") or ():
            if not isinstance(ident, dict) or not ident.get("system") or not ident.get("value"):
                continue
            if ident["system"] == ID_CARD:
                continue  # only the chosen, valid number (others may be typos)
            ik = (str(ident["system"]), str(ident["value"]))
            if ik not in seen:
                seen.add(ik)
                identifiers.append({k: v for k, v in ident.items() if k in ("use", "type", "system", "value")})
    if identifiers:
        g["identifier"] = identifiers
    g["active"] = True
    best_name = _vote(names)
    if best_name:
        src = name_of[best_name]
        name: dict[str, Any] = {"use": "official", "text": best_name}
        if src.get("family"):
            name["family"] = normalize_name(str(src["family"]))
            given = normalize_name("".join(src.get("given") or ()))
            if given:
                name["given"] = [given]
        g["name"] = [name]
    phones: list[str] = []
    telecom: list[dict[str, Any]] = []
    for s in recent:
        for t in s.body.get("telecom") or ():
            if isinstance(t, dict) and t.get("value") and t["value"] not in phones:
                phones.append(t["value"])
                telecom.append({k: v for k, v in t.items() if k in ("system", "value", "use")})
    if telecom:
        g["telecom"] = telecom
    idn = parse_id_number(id_number) if id_number else None
    gender = _vote([(str(s.body["gender"]), s.updated) for s in basis if s.body.get("gender")])
    if idn and idn.sex:
        gender = idn.sex
    if gender:
        g["gender"] = gender
    birth = _vote([(str(s.body["birthDate"]), s.updated) for s in basis if s.body.get("birthDate")])
    if idn and idn.birth_date:
        birth = idn.birth_date.isoformat()
    if birth:
        g["birthDate"] = birth
    for s in recent:
        addr = [a for a in s.body.get("address") or () if isinstance(a, dict) and a.get("use") != "old"]
        if addr:
            g["address"] = addr[:1]
            break
    g["link"] = [{"other": {"reference": f"Patient/{s.patient_id}"}, "type": "seealso"}
                 for s in sorted(sources, key=lambda s: s.patient_id)]
    return g


def retired(person_id: str, into: str | None) -> dict[str, Any]:
    """A person with no sources left: kept (inactive) so references to it still
    resolve; ``into`` is the person it was merged into (link replaced-by)."""
    g: dict[str, Any] = {"resourceType": "Patient", "id": person_id, "meta": {"tag": [dict(GOLDEN_TAG)]},
                         "active": False}
    if into:
        g["link"] = [{"other": {"reference": f"Patient/{into}"}, "type": "replaced-by"}]
    return g


def with_person_link(source: dict[str, Any], person_id: str | None) -> dict[str, Any]:
    """The source's own links, minus any earlier golden link, plus ``refer`` to its person."""
    links = [ln for ln in source.get("link") or ()
             if not (isinstance(ln, dict) and ln.get("type") == "refer"
                     and str((ln.get("other") or {}).get("reference", "")).startswith("Patient/" + PERSON_PREFIX))]
    if person_id:
        links.append({"other": {"reference": f"Patient/{person_id}"}, "type": "refer"})
    if links:
        source["link"] = links
    else:
        source.pop("link", None)
    return source
