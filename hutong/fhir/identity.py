"""Identity operations over FHIR (the MPI's HTTP face).

- ``POST Patient/$match`` -- IHE PDQm ITI-119 (FHIR patient-operation-match):
  a Parameters with ``resource`` (a Patient), optional ``count`` and
  ``onlyCertainMatches``; returns a searchset Bundle of golden Patients with
  ``search.score`` (probability) and the ``match-grade`` extension.
- ``GET Patient/$ihe-pix?sourceIdentifier=system|value[&targetSystem=...]``
  -- IHE PIXm ITI-83: every identifier of that person across domains
  (``targetIdentifier``) and every Patient resource of it (``targetId``).

Both are lookups in the platform's identity index, so they answer only what
the caller has a basis to see (DESIGN.md trust model; issue 12, finding 3):

- ``$match`` needs strong identifying input (an identity document number, or
  a name with a full birth date); for institutions and clinicians it scores
  only on those fields (person identifiers, name, birth date, sex), never on a
  phone or an address, so it is no reverse directory; it returns only the
  persons the input describes (the same identity document number, or the
  same name and birth date: never a namesake the score merely found close),
  each golden record cut to its index card unless the caller has a basis
  (hutong.security.policy.Access.present).
- ``$ihe-pix`` answers other domains' identifiers only with a basis for the
  person; without one, the caller's own domain (its registrations) and the
  golden id, and only when it asked by its own MRN or by a person identifier;
  another institution's MRN is answered as unknown.
- The commission looks up no individual (HT-0180): its work is aggregates.
- Every lookup names the persons it touched on its audit row (purpose
  ``identity``, 核对身份 in the resident's access log), refused ones too.
- ``POST Patient/$mpi-link`` (source-patient, target-person), ``$mpi-unlink``
  (source-patient), ``$mpi-merge`` (source-person, target-person),
  ``$mpi-unmerge`` (event): human decisions, each recorded as an MPI event
  whose id is returned; ``$mpi-unmerge`` undoes any link/unlink/merge event.
"""

from __future__ import annotations

from typing import Any

import orjson

from hutong.errors import Forbidden, InvalidRequest, NotFound
from hutong.fhir import search as fsearch
from hutong.fhir.response import FhirResponse
from hutong.fhir.service import FhirService, parse_json
from hutong.fhir.validation import validate
from hutong.mpi.features import extract
from hutong.mpi.golden import PERSON_IDENTIFIERS, PERSON_PREFIX
from hutong.mpi.service import Mpi
from hutong.security.policy import Access
from hutong.security.principal import Role

MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
# Who may decide that two records are (not) one person: the region's integration
# engine and the MPI stewards.  An institution merges only its own registrations,
# over its authenticated HL7 channel (ADT^A40), where a merge that would retire a
# person others depend on waits in the review queue (issue 12, finding 4).
STEWARDS = frozenset({Role.PLATFORM, Role.COMMISSION})
# Until sign-in exists (security issue) decisions are attributed to this actor.
LOCAL = "local"  # trusted internal callers (no acting principal)


def _params(body: bytes) -> dict[str, list[dict[str, Any]]]:
    data = parse_json(body)
    if not isinstance(data, dict) or data.get("resourceType") != "Parameters":
        raise InvalidRequest("HT-0041", "the operation expects a Parameters resource")
    out: dict[str, list[dict[str, Any]]] = {}
    for p in data.get("parameter") or ():
        if isinstance(p, dict) and isinstance(p.get("name"), str):
            out.setdefault(p["name"], []).append(p)
    return out


def _one(params: dict[str, list[dict[str, Any]]], name: str, key: str, *, required: bool = True) -> Any:
    values = [p[key] for p in params.get(name, ()) if key in p]
    if not values:
        if required:
            raise InvalidRequest("HT-0041", f"parameter {name!r} ({key}) is required")
        return None
    if len(values) > 1:
        raise InvalidRequest("HT-0041", f"parameter {name!r} given more than once")
    return values[0]


def _patient_ref(params: dict[str, list[dict[str, Any]]], name: str) -> str:
    ref = _one(params, name, "valueReference")
    target = ref.get("reference") if isinstance(ref, dict) else None
    if not isinstance(target, str) or not target.startswith("Patient/") or "/" in target[8:] or len(target) <= 8:
        raise InvalidRequest("HT-0041", f"parameter {name!r} must reference Patient/<id>")
    return target[8:]


def _reason(params: dict[str, list[dict[str, Any]]]) -> str | None:
    r = _one(params, "reason", "valueString", required=False)
    return str(r)[:500] if r else None


def _identifying(patient: dict[str, Any]) -> dict[str, Any]:
    """The fields of a $match query that identify a person (identity documents,
    name, birth date, sex): a phone number or an address is not a lookup key."""
    out: dict[str, Any] = {"resourceType": "Patient"}
    idents = [i for i in patient.get("identifier") or () if isinstance(i, dict)
              and i.get("system") in PERSON_IDENTIFIERS and i.get("value")]
    if idents:
        out["identifier"] = idents
    for key in ("name", "birthDate", "gender"):
        if key in patient:
            out[key] = patient[key]
    return out


def _strong(patient: dict[str, Any]) -> bool:
    """An identity document number the index holds (a valid, self-consistent ID
    number, a health card, a passport), or a name with a full birth date."""
    f = extract(patient)
    if f.ids or f.health_cards or f.passports:
        return True
    birth = patient.get("birthDate")
    return bool(f.names) and isinstance(birth, str) and len(birth) == 10


def _described(golden: bytes | None, query: dict[str, Any]) -> bool:
    """Is this golden person the one the query describes: the same identity
    document number, or the same name and the same full birth date?"""
    if golden is None:
        return False
    g, q = extract(orjson.loads(golden)), extract(query)
    if set(g.ids) & set(q.ids) or set(g.health_cards) & set(q.health_cards) or set(g.passports) & set(q.passports):
        return True
    return bool(set(g.names) & set(q.names)) and bool(set(g.birth_dates) & set(q.birth_dates) - {None})


def _lookup_role(access: Access | None, what: str) -> None:
    """Lookups of individuals are for those who care for residents, and the platform."""
    if access is not None and access.role not in (Role.INSTITUTION, Role.CLINICIAN, Role.PLATFORM):
        raise Forbidden("HT-0180", f"a {access.role.value} account does not look up individual residents ({what}); "
                                   "the commission's work is aggregate reports")


def _visible_cross_reference(access: Access, hits: list[Any], system: str) -> set[str]:
    """The Patients a PIX answer may name for a caller bound by the policy: with a
    basis for the person, all of them; else its own registrations and the golden
    id, when it asked by its own MRN or by a person identifier."""
    org = access.principal.organization_id
    out: set[str] = set()
    for s in hits:
        golden = s.id.startswith(PERSON_PREFIX)
        own = not golden and bool(org) and access.managing_org(s.id) == org
        person = access.person_of(s.id)
        if person is None:
            if own:
                out.add(s.id)
            continue
        access.attempted(person)  # on the audit row whether or not it is answered
        full = access.basis(person).purpose is not None
        if not (full or own or (golden and system in PERSON_IDENTIFIERS)):
            continue
        patients = access.patients_of(person)
        out.update(patients if full else [person, *(p for p in patients
                                                    if p != person and access.managing_org(p) == org)])
    return out


def _event(event_id: int, text: str) -> FhirResponse:
    return FhirResponse.json(200, {"resourceType": "Parameters", "parameter": [
        {"name": "event", "valueInteger": event_id}, {"name": "outcome", "valueString": text}]})


class IdentityOperations:
    def __init__(self, svc: FhirService) -> None:
        self.svc = svc
        self.mpi: Mpi = svc.mpi

    def _steward(self) -> None:
        """The route admits stewards only (hutong.web.app); checked here again so
        that no other entry point can reach a link, unlink or merge without it."""
        access = self.svc.access
        if access is not None and access.principal.role not in STEWARDS:
            raise Forbidden("HT-0196", "linking, unlinking and merging persons is for the platform and MPI "
                                       "stewards; an institution merges its own registrations with ADT^A40")

    def _actor(self) -> str:
        """Who made an identity decision: the signed-in account (kept on the MPI event)."""
        access = self.svc.access
        return access.principal.account_id if access is not None else LOCAL

    def _looked_up(self, found: dict[str, Any]) -> None:
        """Identity lookups are reads of the persons they return: the audit row
        names them (residents see who looked them up; route roles: hutong.web.app)."""
        access = self.svc.access
        if access is not None:
            access.persons.update(i if i.startswith(PERSON_PREFIX) else (self.mpi.person_of(i) or i)
                                  for i in found)
            access.purposes.add("identity")

    def match(self, body: bytes) -> FhirResponse:
        access = self.svc.access
        _lookup_role(access, "$match")
        trusted = access is None or access.unrestricted
        params = _params(body)
        resource = _one(params, "resource", "resource")
        patient = validate(resource, "Patient")
        count = _one(params, "count", "valueInteger", required=False) or 10
        if not isinstance(count, int) or count < 1:
            raise InvalidRequest("HT-0041", "count must be a positive integer")
        only_certain = bool(_one(params, "onlyCertainMatches", "valueBoolean", required=False))
        query = patient if trusted else _identifying(patient)
        if not _strong(query):
            raise InvalidRequest("HT-0181", "$match needs an identity document number (ID number, health card, "
                                            "passport) or a name with a full birth date (YYYY-MM-DD); a phone "
                                            "number or an address does not look anyone up")
        results = self.mpi.match(query, count=min(count, 100))
        if only_certain:
            results = [r for r in results if r.grade == "certain"]
        else:
            results = [r for r in results if r.grade != "certainly-not"]
        found = {s.id: s for s in self.svc.repo.fetch([("Patient", r.person_id) for r in results])}
        if not trusted:
            # Someone the score found close but the input does not describe is a
            # namesake: not a person to show a clinic.
            found = {k: s for k, s in found.items() if _described(s.body, query)}
        if access is not None:
            for ident in query.get("identifier") or ():
                access.supplied(str(ident.get("system")), str(ident.get("value")))
            found = {s.id: s for s in access.present(list(found.values()))}
        self._looked_up(found)
        entries = []
        for r in results:
            s = found.get(r.person_id)
            if s is None or s.body is None:
                continue
            entry = self.svc._entry(s, "match", None)
            entry["search"] = {"extension": [{"url": MATCH_GRADE, "valueCode": r.grade}], "mode": "match",
                               "score": round(r.probability, 6)}
            entries.append(entry)
        return FhirResponse.json(200, {"resourceType": "Bundle", "type": "searchset", "total": len(entries),
                                       **({"entry": entries} if entries else {})})  # json.html: never []

    def pix(self, items: list[tuple[str, str]]) -> FhirResponse:
        access = self.svc.access
        _lookup_role(access, "$ihe-pix")
        source = [v for k, v in items if k == "sourceIdentifier"]
        targets = {v for k, v in items if k == "targetSystem"}
        unknown = [k for k, _ in items if k not in ("sourceIdentifier", "targetSystem", "_format")]
        if unknown:
            raise InvalidRequest("HT-0059", f"unknown $ihe-pix parameter {unknown[0]!r}")
        if len(source) != 1 or "|" not in source[0] or not source[0].split("|", 1)[0] or \
                not source[0].split("|", 1)[1]:
            raise InvalidRequest("HT-0059", "sourceIdentifier must be given once as system|value (ITI-83)")
        parsed = fsearch.parse("Patient", [("identifier", source[0]), ("_count", "50")],
                               base_url=self.svc.base_url, strict=True)
        hits = self.svc.repo.search(parsed.query).matches
        trusted = access is None or access.unrestricted
        patients: set[str] = set()
        if access is not None and not trusted:
            patients = _visible_cross_reference(access, hits, source[0].split("|", 1)[0])
        else:
            for s in hits:
                person = s.id if s.id.startswith(PERSON_PREFIX) else self.mpi.person_of(s.id)
                if person is None:
                    patients.add(s.id)
                else:
                    patients.update([person, *self.mpi.sources(person)])
        if not patients:
            # Unknown and not the caller's to know get the same answer (no oracle).
            raise NotFound("HT-0056", "no patient has this sourceIdentifier (ITI-83: 404)")
        stored = sorted(self.svc.repo.fetch([("Patient", p) for p in patients]), key=lambda s: s.id)
        self._looked_up({s.id: s for s in stored})
        idents: list[dict[str, Any]] = []
        seen: set[tuple[str, str]] = {tuple(source[0].split("|", 1))}  # type: ignore[arg-type]
        params: list[dict[str, Any]] = []
        for s in stored:
            if s.body is None or (not trusted and s.id.startswith(PERSON_PREFIX)):
                continue  # a golden record holds every domain's identifiers: the caller's come from its sources
            body = orjson.loads(s.body)
            for ident in body.get("identifier") or ():
                key = (ident.get("system"), ident.get("value"))
                if not key[0] or not key[1] or key in seen or (targets and key[0] not in targets):
                    continue
                seen.add(key)
                idents.append({k: v for k, v in ident.items() if k in ("use", "type", "system", "value")})
        params += [{"name": "targetIdentifier", "valueIdentifier": i} for i in idents]
        params += [{"name": "targetId", "valueReference": {"reference": f"Patient/{s.id}"}} for s in stored]
        return FhirResponse.json(200, {"resourceType": "Parameters", "parameter": params})

    def link(self, body: bytes) -> FhirResponse:
        self._steward()
        p = _params(body)
        ev = self.mpi.link(_patient_ref(p, "source-patient"), _patient_ref(p, "target-person"), actor=self._actor(),
                           reason=_reason(p))
        return _event(ev, "linked")

    def unlink(self, body: bytes) -> FhirResponse:
        self._steward()
        p = _params(body)
        ev = self.mpi.unlink(_patient_ref(p, "source-patient"), actor=self._actor(), reason=_reason(p))
        return _event(ev, "unlinked")

    def merge(self, body: bytes) -> FhirResponse:
        self._steward()
        p = _params(body)
        ev = self.mpi.merge(_patient_ref(p, "source-person"), _patient_ref(p, "target-person"), actor=self._actor(),
                            reason=_reason(p))
        return _event(ev, "merged")

    def unmerge(self, body: bytes) -> FhirResponse:
        self._steward()
        p = _params(body)
        event = _one(p, "event", "valueInteger")
        if not isinstance(event, int):
            raise InvalidRequest("HT-0041", "event must be an integer")
        ev = self.mpi.undo(event, actor=self._actor(), reason=_reason(p))
        return _event(ev, f"event {event} undone")

    # ------------------------------------------------------------ review queue (admin JSON)
    def review(self, items: list[tuple[str, str]]) -> FhirResponse:
        self._steward()
        q = dict(items)
        status = q.get("status", "open")
        if status not in ("open", "linked", "rejected", "unlinked", "obsolete"):
            raise InvalidRequest("HT-0041", "status must be open, linked, rejected, unlinked or obsolete")
        try:
            limit = min(int(q.get("_count", "50")), 500)
            after = int(q.get("after", "0"))
        except ValueError:
            raise InvalidRequest("HT-0041", "_count and after must be integers") from None
        return FhirResponse.json(200, {"items": self.mpi.review_items(status=status, limit=limit, after=after)})

    def reject(self, review_id: str, body: bytes) -> FhirResponse:
        self._steward()
        if not review_id.isdigit():
            raise InvalidRequest("HT-0041", "review id must be an integer")
        p = _params(body) if body else {}
        self.mpi.reject(int(review_id), actor=self._actor(), reason=_reason(p))
        return FhirResponse.json(200, {"id": int(review_id), "status": "rejected"})
