"""Golden person records: one Patient per person, built from its sources.

Survivorship (which source value the golden record shows) must be stable and
defensible: a golden record is the platform's, and no one institution may
rewrite it by re-registering a resident (issue 12, finding 9).  So every field
is decided by a vote in which each *institution* (the source's
managingOrganization) counts once, however many registrations it sends, and a
tie goes to the value of the earliest registration (sources come in the order
they joined the index, ``mpi_source.seq``): a value the record already shows
is displaced only when more institutions agree on another.

- identifier: the ID number held by most institutions among valid,
  self-consistent numbers; every other identifier of every source (health
  cards, passports, each institution's MRNs) is kept, so the golden record
  answers PIX queries for those with a basis (hutong.fhir.identity).  Invalid
  ID numbers are left out.
- name, gender, birthDate: from the sources that carry the chosen ID number
  when there are any (the ID number was checked against them), else from all
  sources, by the same vote.  gender and birthDate fall back to what the ID
  number encodes.
- telecom: the phones by the same vote (most institutions first), the winner
  first.  address: the winner of the vote.  Nobody is told anything at these:
  notifications go to the phone of the resident's own account
  (hutong.web.access_ops.sms_notifier), which only the resident sets.
- link: ``seealso`` to every source; each source carries ``refer`` back.
- meta.tag ``golden`` (GOLDEN_TAG): clients may not create or change such
  records; only the MPI writes them.

Callers without a basis for the person see the record cut to its index card
(:func:`index_card`; hutong.security.policy.Access.present).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from hutong.mpi.features import Features, is_romanisation
from hutong.mpi.idnumber import parse_id_number
from hutong.mpi.normalize import normalize_address, normalize_name
from hutong.systems import CODESYSTEM_BASE, HEALTH_CARD, ID_CARD, MEDICAL_INSURANCE, PASSPORT

GOLDEN_SYSTEM = CODESYSTEM_BASE + "mpi"
GOLDEN_TAG = {"system": GOLDEN_SYSTEM, "code": "golden", "display": "golden person record"}
PERSON_PREFIX = "mpi-"
# Identifier systems that name a person, not one institution's registration:
# looking a resident up by one of these (exactly, in full) is how a clinic
# finds the index card (hutong.security.policy).
PERSON_IDENTIFIERS = frozenset({ID_CARD, HEALTH_CARD, PASSPORT, MEDICAL_INSURANCE})
# search.html#summary / the v3 ObservationValue code for an abridged resource.
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED",
             "display": "subsetted"}


@dataclass(frozen=True, slots=True)
class SourceView:
    patient_id: str
    body: dict[str, Any]
    features: Features
    updated: int


def is_golden(resource: dict[str, Any]) -> bool:
    return any(isinstance(t, dict) and t.get("system") == GOLDEN_SYSTEM and t.get("code") == "golden"
               for t in (resource.get("meta") or {}).get("tag") or ())


def _institution(s: SourceView) -> str:
    """Who vouches for a source's values: its managing institution (one vote each)."""
    ref = (s.body.get("managingOrganization") or {}).get("reference") \
        if isinstance(s.body.get("managingOrganization"), dict) else None
    return str(ref) if isinstance(ref, str) and ref else "Patient/" + s.patient_id


def _vote(values: Sequence[tuple[str, str, int]]) -> str | None:
    """The value most institutions give; ties to the earliest registration's.

    ``values`` are (value, institution, order), order being the source's place
    in the order sources joined the index."""
    if not values:
        return None
    backers: dict[str, set[str]] = {}
    first: dict[str, int] = {}
    for v, inst, order in values:
        backers.setdefault(v, set()).add(inst)
        first[v] = min(first.get(v, order), order)
    return min(backers, key=lambda v: (-len(backers[v]), first[v], v))


def _ranked(values: Sequence[tuple[str, str, int]]) -> list[str]:
    """Every distinct value, in the order :func:`_vote` prefers them."""
    rest = list(values)
    out: list[str] = []
    while rest:
        best = _vote(rest)
        assert best is not None
        out.append(best)
        rest = [x for x in rest if x[0] != best]
    return out


def _address_key(a: dict[str, Any]) -> str:
    text = a.get("text") or "".join(
        str(x) for x in (a.get("state"), a.get("city"), a.get("district"), *(a.get("line") or ())) if x)
    return normalize_address(str(text)) if text else ""


def build(person_id: str, sources: Sequence[SourceView]) -> dict[str, Any]:
    """The golden record of ``sources`` (in the order they joined the index)."""
    order = {s.patient_id: i for i, s in enumerate(sources)}
    inst = {s.patient_id: _institution(s) for s in sources}

    def votes(pairs: Sequence[tuple[str, SourceView]]) -> list[tuple[str, str, int]]:
        return [(v, inst[s.patient_id], order[s.patient_id]) for v, s in pairs]

    id_number = _vote(votes([(i, s) for s in sources for i in s.features.ids]))
    basis = [s for s in sources if id_number in s.features.ids] if id_number else list(sources)
    basis = basis or list(sources)

    names: list[tuple[str, SourceView]] = []
    name_of: dict[str, dict[str, Any]] = {}
    for s in basis:
        for n in s.body.get("name") or ():
            if isinstance(n, dict) and n.get("use") != "old" and not is_romanisation(n):
                text = n.get("text") or ((n.get("family") or "") + "".join(n.get("given") or ()))
                key = normalize_name(text) if text else ""
                if key:
                    names.append((key, s))
                    name_of.setdefault(key, n)
    g: dict[str, Any] = {"resourceType": "Patient", "id": person_id, "meta": {"tag": [dict(GOLDEN_TAG)]}}
    identifiers: list[dict[str, Any]] = []
    if id_number:
        identifiers.append({"use": "official", "type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NI"}], "text": "居民身份证"},
            "system": ID_CARD, "value": id_number})
    seen: set[tuple[str, str]] = {(ID_CARD, id_number)} if id_number else set()
    for s in sources:
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
    best_name = _vote(votes(names))
    if best_name:
        src = name_of[best_name]
        name: dict[str, Any] = {"use": "official", "text": best_name}
        if src.get("family"):
            name["family"] = normalize_name(str(src["family"]))
            given = normalize_name("".join(src.get("given") or ()))
            if given:
                name["given"] = [given]
        g["name"] = [name]
    phones: list[tuple[str, SourceView]] = []
    telecom_of: dict[str, dict[str, Any]] = {}
    for s in sources:
        for t in s.body.get("telecom") or ():
            if isinstance(t, dict) and isinstance(t.get("value"), str) and t["value"]:
                phones.append((t["value"], s))
                telecom_of.setdefault(t["value"], {k: v for k, v in t.items() if k in ("system", "value", "use")})
    if phones:
        g["telecom"] = [telecom_of[v] for v in _ranked(votes(phones))]
    idn = parse_id_number(id_number) if id_number else None
    gender = _vote(votes([(str(s.body["gender"]), s) for s in basis if s.body.get("gender")]))
    if idn and idn.sex:
        gender = idn.sex
    if gender:
        g["gender"] = gender
    birth = _vote(votes([(str(s.body["birthDate"]), s) for s in basis if s.body.get("birthDate")]))
    if idn and idn.birth_date:
        birth = idn.birth_date.isoformat()
    if birth:
        g["birthDate"] = birth
    addresses: list[tuple[str, SourceView]] = []
    address_of: dict[str, dict[str, Any]] = {}
    for s in sources:
        for a in s.body.get("address") or ():
            if isinstance(a, dict) and a.get("use") != "old" and _address_key(a):
                addresses.append((_address_key(a), s))
                address_of.setdefault(_address_key(a), a)
                break  # a source's first current address is its answer
    best_address = _vote(votes(addresses))
    if best_address:
        g["address"] = [address_of[best_address]]
    g["link"] = [{"other": {"reference": f"Patient/{s.patient_id}"}, "type": "seealso"}
                 for s in sorted(sources, key=lambda s: s.patient_id)]
    return g


def index_card(golden: dict[str, Any], *, known: Collection[tuple[str, str]],
               own_sources: Collection[str]) -> dict[str, Any]:
    """The golden record as a caller without a basis for the person sees it:
    enough to tell the resident is known to the region and to go on (the
    golden id for $access-basis and break-glass; name, sex and birth date to
    check it is the right person), and nothing the caller did not know.

    ``known``: person identifiers (system, value) the caller already holds (the
    one it looked up by, those on its own registrations); ``own_sources``: its
    own registrations of this person.  No other institution's MRN, no phone,
    no address; marked SUBSETTED (search.html#summary)."""
    meta = dict(golden.get("meta") or {})
    meta["tag"] = [*(t for t in meta.get("tag") or () if isinstance(t, dict)), dict(SUBSETTED)]
    card: dict[str, Any] = {"resourceType": "Patient", "id": golden.get("id"), "meta": meta}
    idents = [i for i in golden.get("identifier") or () if isinstance(i, dict)
              and i.get("system") in PERSON_IDENTIFIERS and (i.get("system"), i.get("value")) in known]
    if idents:
        card["identifier"] = idents
    for key in ("active", "name", "gender", "birthDate"):
        if key in golden:
            card[key] = golden[key]
    links = [ln for ln in golden.get("link") or () if isinstance(ln, dict)
             and str((ln.get("other") or {}).get("reference", "")).removeprefix("Patient/") in own_sources]
    if links:
        card["link"] = links
    return card


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
