"""The CapabilityStatement (capabilitystatement.html), generated from what is
actually implemented: the routes the server registered (:class:`RestRoute`,
read off the web layer's route table by hutong.web.fhir_http.rest_routes: their
methods, paths and declared headers), the types check_type accepts, the
registry of search parameters and the formats the web layer serves.  Nothing
is listed by hand that a route does not serve; tests/fhir/test_capability_*
calls every interaction, operation and format it lists on every type."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

from hutong import __version__
from hutong.fhir import r4_differences
from hutong.fhir.registry import RESOURCE_TYPES, params_for
from hutong.fhir.search import ALLOWED_MODIFIERS
from hutong.mpi.golden import GOLDEN_SYSTEM, PERSON_PREFIX
from hutong.security.blindindex import is_protected
from hutong.systems import CODESYSTEM_BASE


@dataclass(frozen=True)
class RestRoute:
    """One registered FHIR route: ``path`` relative to the FHIR base
    (``{type}/{id}``, ``Patient/$match``, ``""`` for the base itself),
    ``headers`` the request headers it declares (lower case), ``operations``
    the ``$`` names a parameterised operation path serves (``Patient/{op}``)."""

    method: str
    path: str
    headers: frozenset[str] = frozenset()
    summary: str = ""
    operations: tuple[str, ...] = ()


# restful-interaction codes by (method, path template), in the order listed.
TYPE_INTERACTIONS: tuple[tuple[str, str, str], ...] = (
    ("read", "GET", "{type}/{id}"), ("vread", "GET", "{type}/{id}/_history/{vid}"),
    ("update", "PUT", "{type}/{id}"), ("patch", "PATCH", "{type}/{id}"), ("delete", "DELETE", "{type}/{id}"),
    ("history-instance", "GET", "{type}/{id}/_history"), ("history-type", "GET", "{type}/_history"),
    ("create", "POST", "{type}"), ("search-type", "GET", "{type}"),
)
SYSTEM_INTERACTIONS: tuple[tuple[str, str, str], ...] = (
    ("transaction", "POST", ""), ("batch", "POST", ""), ("search-system", "GET", ""),
    ("history-system", "GET", "_history"),
)


OPERATION_BASE = CODESYSTEM_BASE.replace("/CodeSystem/", "/OperationDefinition/")
MPI_OPERATIONS = (
    ("mpi-link", "source-patient, target-person: a human links a source to a person (kept across relinks)"),
    ("mpi-unlink", "source-patient: a human detaches a source from its person"),
    ("mpi-merge", "source-person, target-person: two persons are one"),
    ("mpi-unmerge", "event: undo a link, unlink or merge exactly"),
)


@cache
def _auth_url(base_url: str, endpoint: str) -> str:
    root = base_url[:-len("/fhir")] if base_url.endswith("/fhir") else base_url
    return f"{root}/auth/{endpoint}"


def _modifiers(type: str, name: str, ptype: str) -> str:
    """The modifiers a parameter takes: a blind-indexed one (names, addresses, phones,
    identifiers; hutong.security.blindindex) cannot answer :contains (HT-0150)."""
    mods = set(ALLOWED_MODIFIERS.get(ptype, set()))
    if ptype == "string" and is_protected(type, name):
        return ", ".join(sorted(mods - {"contains"})) + " (blind-indexed: no :contains)"
    return ", ".join(sorted(mods))


HL7_OPERATIONS = frozenset({("Patient", "everything"), ("Patient", "match"), ("CodeSystem", "lookup"),
                            ("CodeSystem", "validate-code"), ("CodeSystem", "subsumes"), ("ValueSet", "expand"),
                            ("ValueSet", "validate-code"), ("ConceptMap", "translate")})
OTHER_DEFINITIONS = {"ihe-pix": "https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix"}
OPERATION_DOCS: dict[str, str] = {
    "everything": "on a golden person (meta.tag mpi|golden): the records of every linked source",
    "match": "IHE PDQm ITI-119: scored golden persons with match-grade",
    "ihe-pix": "IHE PIXm ITI-83: every identifier of the person across domains",
    **dict(MPI_OPERATIONS),
    "break-glass": "clinicians: emergency access to the person's whole record; a written reason "
                   "(Parameters.reason) is required, the access is flagged, the resident told, auditors review",
    "access-basis": "the caller's basis for the person's record (own-institution, treatment, consent, "
                    "break-glass or none), without opening it",
}


def _operations(routes: Sequence[RestRoute]) -> dict[str, dict[str, str]]:
    """Operation name -> the route's summary, per owner: a type, ``{type}``
    (every type) or ``""`` (the system), from the ``$`` segments of the routes."""
    out: dict[str, dict[str, str]] = {}
    for r in routes:
        segments = r.path.split("/")
        names = [x[1:] for x in segments if x.startswith("$")] or [x.lstrip("$") for x in r.operations]
        owner = "" if segments[0].startswith("$") else segments[0]
        for n in names:
            out.setdefault(owner, {}).setdefault(n, r.summary)
    return out


def _operation(type: str, name: str, summary: str) -> dict[str, str]:
    if (type, name) in HL7_OPERATIONS:
        definition = f"http://hl7.org/fhir/OperationDefinition/{type}-{name}"
    else:
        definition = OTHER_DEFINITIONS.get(name, f"{OPERATION_BASE}{name}")
    return {"name": name, "definition": definition, "documentation": OPERATION_DOCS.get(name, summary)}


def _conditional_read(headers: frozenset[str]) -> str:
    """http.html#cread: If-Modified-Since and If-None-Match on read."""
    since, match = "if-modified-since" in headers, "if-none-match" in headers
    return "full-support" if since and match else "modified-since" if since else "not-match" if match \
        else "not-supported"


@lru_cache(maxsize=8)
def capability_statement(base_url: str, routes: tuple[RestRoute, ...] = (),
                         formats: tuple[str, ...] = ("application/fhir+json", "json"),
                         patch_formats: tuple[str, ...] = ()) -> dict[str, Any]:
    """The statement of a server serving ``routes`` (hashable, so one
    statement is built per base; callers must not change the dict)."""
    served = {(r.method, r.path) for r in routes}

    def headers(method: str, path: str) -> frozenset[str]:
        return frozenset().union(*(r.headers for r in routes if (r.method, r.path) == (method, path)))

    interactions = [code for code, method, path in TYPE_INTERACTIONS if (method, path) in served]
    operations = _operations(routes)
    resources = []
    for t in sorted(RESOURCE_TYPES) if interactions or operations.get("{type}") else ():
        params = params_for(t)
        refs = sorted(p.name for p in params.values() if p.type == "reference")
        entry: dict[str, Any] = {
            "type": t,
            "interaction": [{"code": c} for c in interactions],
            "versioning": "versioned-update" if "if-match" in headers("PUT", "{type}/{id}") else "versioned",
            "readHistory": "vread" in interactions,
            "updateCreate": "update" in interactions,
            "conditionalCreate": "if-none-exist" in headers("POST", "{type}"),
            "conditionalRead": _conditional_read(headers("GET", "{type}/{id}")),
            "conditionalUpdate": ("PUT", "{type}") in served,
            # More than one match is refused (412), so deletes are "single" (http.html#cdelete).
            "conditionalDelete": "single" if ("DELETE", "{type}") in served else "not-supported",
            "searchInclude": ["*", f"{t}:*", *[f"{t}:{r}" for r in refs]] if refs else [],
            "searchRevInclude": [],
            "searchParam": [
                {"name": "_id", "type": "token"},
                {"name": "_lastUpdated", "type": "date"},
                *[
                    {"name": p.name, "type": p.type,
                     "documentation": f"paths: {' | '.join(p.paths)}; modifiers: " + _modifiers(t, p.name, p.type)}
                    for p in sorted(params.values(), key=lambda p: p.name)
                ],
            ],
        }
        ops = {**operations.get("{type}", {}), **operations.get(t, {})}
        if ops:
            order = list(OPERATION_DOCS)
            entry["operation"] = [_operation(t, n, ops[n]) for n in sorted(
                ops, key=lambda n: (order.index(n) if n in order else len(order), n))]
        if t == "Patient":
            # issue 15, item 1 (hutong.fhir.service.asks_for_golden): say how golden records are found.
            entry["documentation"] = (
                f"Golden person records (meta.tag {GOLDEN_SYSTEM}|golden, ids {PERSON_PREFIX}...) are the MPI's "
                "and do not appear in Patient searches by default, so a search finds each registration once. "
                f"They are found by read, by _id, by _tag={GOLDEN_SYSTEM}|golden (or _tag=golden), and by "
                "$match, $ihe-pix and $everything.")
        # issue 15: where the R4B models differ from R4 (item 5), and the terminology operations' own
        # words (item 8) for the ones the routes serve
        if (differs := r4_differences.documentation(t)) is not None:
            entry["documentation"] = (entry.get("documentation", "") + " " + differs).strip()
        for op in entry.get("operation", []):
            said = [o for o in r4_differences.TERMINOLOGY_OPERATIONS.get(t, []) if o["name"] == op["name"]]
            op.update(said[0] if said else {})
        resources.append(entry)
    rev: dict[str, list[str]] = {}
    for t in RESOURCE_TYPES:
        for p in params_for(t).values():
            if p.type == "reference":
                for target in p.targets or ():
                    rev.setdefault(target, []).append(f"{t}:{p.name}")
    for r in resources:
        r["searchRevInclude"] = sorted(rev.get(r["type"], []))
        for k in ("searchInclude", "searchRevInclude"):
            if not r[k]:
                del r[k]  # json.html: an array is never empty
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-21",
        "publisher": "Hutong",
        "kind": "instance",
        "software": {"name": "Hutong", "version": __version__},
        "implementation": {"description": "Hutong regional health information platform", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": list(formats),
        **({"patchFormat": list(patch_formats)} if "patch" in interactions else {}),
        "rest": [{
            "mode": "server",
            "documentation": (
                "JSON only (XML asked for by Accept or _format is answered 406). PATCH takes JSON Patch "
                "(RFC 6902). HEAD is answered wherever GET is. Search: token/string/date/reference/quantity/number/"
                "uri parameters with prefixes "
                "eq ne gt lt ge le sa eb ap; modifiers :exact :contains (not on blind-indexed names, addresses and "
                "other direct identifiers) :missing :not :text :below :above "
                "and :[type]; chaining; _has; _include/_revinclude (:iterate); _sort; _count with keyset "
                "paging (_cursor); _summary (true,text,data,count); _elements; _total. Composite search "
                "parameters, _text, _content, _filter, _list, :in/:below/:above on tokens are not supported. "
                + r4_differences.rest_documentation()
            ),
            # SMART App Launch v2 (conformance.html): tokens from /auth/token; every
            # request needs one except metadata and the smart-configuration.
            "security": {
                "cors": False,
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                         "code": "SMART-on-FHIR"}]}],
                "extension": [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                               "extension": [{"url": "authorize", "valueUri": _auth_url(base_url, "authorize")},
                                             {"url": "token", "valueUri": _auth_url(base_url, "token")},
                                             {"url": "revoke", "valueUri": _auth_url(base_url, "revoke")}]}],
                "description": "OAuth2 bearer tokens (SMART v2 scopes); access to residents' records also needs a "
                               "treatment relationship, the resident's consent or break-glass; every request "
                               "is audited (AuditEvent, hash-chained).",
            },
            "resource": resources,
            # Search in a compartment (compartmentdefinition.html): the Patient compartment only.
            **({"compartment": ["http://hl7.org/fhir/CompartmentDefinition/patient"]}
               if ("GET", "{ctype}/{cid}/{type}") in served else {}),
            "interaction": [{"code": code} for code, method, path in SYSTEM_INTERACTIONS if (method, path) in served],
            **({"operation": [_operation("", n, d) for n, d in sorted(operations[""].items())]}
               if operations.get("") else {}),
        }],
    }
