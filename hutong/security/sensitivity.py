"""Sensitive categories: which records stay masked across institutions.

A record is sensitive when it carries an HL7 v3 ActCode confidentiality label
in ``meta.security`` (PSY psychiatry, HIV, SEX reproductive/sexual health,
ETH substance abuse, SUD, STD).  Senders do not always label, so every write
passes the :class:`SensitivityLabeler` hook, which adds the label from code
lists (ICD-10 chapters and the LOINC codes of HIV tests) before the row and
its index are written, so masking is a plain index filter at search time
(hutong.store.sqlsearch.Compiler.scope_sql).  Labels are only ever added,
never removed: a sender's own label stands.
"""

from __future__ import annotations

from typing import Any

from hutong.store.repository import Stored, Writer

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
DISPLAY = {"PSY": "psychiatry information sensitivity", "HIV": "HIV/AIDS information sensitivity",
           "SEX": "sexuality and reproductive health information sensitivity",
           "ETH": "substance abuse information sensitivity", "SUD": "substance use disorder information sensitivity",
           "STD": "sexually transmitted disease information sensitivity"}

# ICD-10 (GB/T 14396) code prefixes per category.
ICD10_PREFIXES: dict[str, tuple[str, ...]] = {
    # F00-F99 mental and behavioural disorders, except F10-F19 (substance use: ETH)
    "PSY": tuple(f"F{n:02d}" for n in range(100) if not 10 <= n <= 19),
    "ETH": tuple(f"F{n:02d}" for n in range(10, 20)),
    # B20-B24 HIV disease, Z21 asymptomatic HIV infection, R75 inconclusive HIV test
    "HIV": ("B20", "B21", "B22", "B23", "B24", "Z21", "R75"),
    # A50-A64 infections with a predominantly sexual mode of transmission
    "STD": tuple(f"A{n}" for n in range(50, 65)),
    # O00-O08 pregnancy with abortive outcome; N96-N98 infertility/ART; Z30-Z31 contraception, procreation
    "SEX": ("O00", "O01", "O02", "O03", "O04", "O05", "O06", "O07", "O08", "N97", "N98", "Z30", "Z31"),
}
# LOINC codes of HIV tests (antibody, antigen, viral load, genotype).
HIV_LOINC = frozenset({"7917-8", "7918-6", "5221-7", "68961-2", "56888-1", "75622-1", "25836-8", "20447-9",
                       "48345-3", "29893-5", "31201-7", "43009-0", "49580-4", "80387-4", "10351-5"})
ICD10_SYSTEMS = ("http://hl7.org/fhir/sid/icd-10", "urn:oid:2.16.156.10011.2.3.3.11", "http://hl7.org/fhir/sid/icd-10-cn")
LOINC = "http://loinc.org"

# Where each type keeps the codes that decide sensitivity.
CODE_PATHS: dict[str, tuple[str, ...]] = {
    "Condition": ("code",), "Observation": ("code", "valueCodeableConcept"), "DiagnosticReport": ("code", "conclusionCode"),
    "Encounter": ("reasonCode",), "Procedure": ("code", "reasonCode"), "MedicationRequest": ("reasonCode",),
    "ServiceRequest": ("code", "reasonCode"), "DocumentReference": ("type",), "AllergyIntolerance": (),
    "ImagingStudy": ("reasonCode",), "Immunization": (), "CarePlan": ("category",),
}


def _codings(node: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if isinstance(node, list):
        for n in node:
            out += _codings(n)
    elif isinstance(node, dict):
        if isinstance(node.get("coding"), list):
            out += [c for c in node["coding"] if isinstance(c, dict)]
    return out


def categories(type: str, resource: dict[str, Any]) -> set[str]:
    """The sensitive categories this resource's codes put it in."""
    found: set[str] = set()
    for path in CODE_PATHS.get(type, ()):
        for c in _codings(resource.get(path)):
            code, system = c.get("code"), c.get("system")
            if not isinstance(code, str):
                continue
            if system in ICD10_SYSTEMS:
                head = code.upper()[:3]
                for cat, prefixes in ICD10_PREFIXES.items():
                    if head in prefixes:
                        found.add(cat)
            elif system == LOINC and code in HIV_LOINC:
                found.add("HIV")
    return found


def labels_of(resource: dict[str, Any] | None) -> set[str]:
    """The confidentiality labels a resource carries (upper-case ActCodes)."""
    meta = (resource or {}).get("meta") or {}
    return {c["code"].upper() for c in meta.get("security") or []
            if isinstance(c, dict) and isinstance(c.get("code"), str)}


class SensitivityLabeler:
    """Write hook: label sensitive records from their codes (see module doc)."""

    types = frozenset(CODE_PATHS)
    batchable = True  # labels each item alone; fine inside insert_many

    def on_write(self, w: Writer, type: str, id: str, resource: dict[str, Any] | None,
                 current: Stored | None) -> bool:
        if resource is None:
            return False
        missing = categories(type, resource) - labels_of(resource)
        if not missing:
            return False
        meta = dict(resource.get("meta") or {})
        meta["security"] = [*(meta.get("security") or []),
                            *({"system": ACT_CODE, "code": c, "display": DISPLAY[c]} for c in sorted(missing))]
        resource["meta"] = meta
        return True
