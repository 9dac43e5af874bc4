"""The CapabilityStatement (capabilitystatement.html), generated from what is
actually implemented: the registry of types and search parameters."""

from __future__ import annotations

from functools import cache
from typing import Any

from hutong import __version__
from hutong.fhir import r4_differences
from hutong.fhir.registry import RESOURCE_TYPES, params_for
from hutong.fhir.search import ALLOWED_MODIFIERS
from hutong.mpi.golden import GOLDEN_SYSTEM, PERSON_PREFIX
from hutong.security.blindindex import is_protected
from hutong.systems import CODESYSTEM_BASE

INTERACTIONS = ["read", "vread", "update", "delete", "history-instance", "history-type", "create", "search-type"]
SKIP_TYPES = {"Bundle", "OperationOutcome", "Parameters", "CapabilityStatement"}


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


def capability_statement(base_url: str) -> dict[str, Any]:
    resources = []
    for t in sorted(RESOURCE_TYPES - SKIP_TYPES):
        params = params_for(t)
        refs = sorted(p.name for p in params.values() if p.type == "reference")
        entry: dict[str, Any] = {
            "type": t,
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "not-supported",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "interaction": [{"code": c} for c in INTERACTIONS],
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
        if t == "Patient":
            # issue 15, item 1 (hutong.fhir.service.asks_for_golden): say how golden records are found.
            entry["documentation"] = (
                f"Golden person records (meta.tag {GOLDEN_SYSTEM}|golden, ids {PERSON_PREFIX}...) are the MPI's "
                "and do not appear in Patient searches by default, so a search finds each registration once. "
                f"They are found by read, by _id, by _tag={GOLDEN_SYSTEM}|golden (or _tag=golden), and by "
                "$match, $ihe-pix and $everything.")
            entry["operation"] = [
                {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                 "documentation": "on a golden person (meta.tag mpi|golden): the records of every linked source"},
                {"name": "match", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-match",
                 "documentation": "IHE PDQm ITI-119: scored golden persons with match-grade"},
                {"name": "ihe-pix", "definition": "https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix",
                 "documentation": "IHE PIXm ITI-83: every identifier of the person across domains"},
                *[{"name": op, "definition": f"{OPERATION_BASE}{op}", "documentation": doc}
                  for op, doc in MPI_OPERATIONS],
                {"name": "break-glass", "definition": f"{OPERATION_BASE}break-glass",
                 "documentation": "clinicians: emergency access to the person's whole record; a written reason "
                                  "(Parameters.reason) is required, the access is flagged, the resident told, "
                                  "auditors review"},
                {"name": "access-basis", "definition": f"{OPERATION_BASE}access-basis",
                 "documentation": "the caller's basis for the person's record (own-institution, treatment, "
                                  "consent, break-glass or none), without opening it"},
            ]
        # issue 15: where the R4B models differ from R4 (item 5), and the terminology operations (item 8)
        if (differs := r4_differences.documentation(t)) is not None:
            entry["documentation"] = (entry.get("documentation", "") + " " + differs).strip()
        if t in r4_differences.TERMINOLOGY_OPERATIONS:
            entry["operation"] = r4_differences.TERMINOLOGY_OPERATIONS[t]
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
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "documentation": (
                "JSON only. Search: token/string/date/reference/quantity/number/uri parameters with prefixes "
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
            "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
            "operation": [{"name": "everything",
                           "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}],
        }],
    }
