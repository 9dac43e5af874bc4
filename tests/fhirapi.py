"""Small helpers shared by the API tests (resource builders, assertions)."""

from __future__ import annotations

from typing import Any

import httpx

ID_CARD = "urn:oid:2.16.156.10011.1.3"
# Every source Patient gets a golden person record from the MPI (hutong.mpi);
# tests of the search engine itself look at the source records only.
NOT_GOLDEN = ("_tag:not", "https://fhir.hutong.dev/CodeSystem/mpi|golden")


def patient(family: str = "王", given: str = "小明", idno: str = "11010519491231002X", *,
            birth: str = "1949-12-31", gender: str = "female", mrn: str | None = None) -> dict[str, Any]:
    ident = [{"system": ID_CARD, "value": idno}]
    if mrn:
        ident.append({"system": "urn:hutong:mrn:H001", "value": mrn})
    return {"resourceType": "Patient", "identifier": ident, "name": [{"family": family, "given": [given]}],
            "birthDate": birth, "gender": gender, "telecom": [{"system": "phone", "value": "13800138000"}]}


def observation(patient_id: str, code: str = "2345-7", value: float = 5.6, date: str = "2026-01-05T08:00:00+08:00",
                unit: str = "mmol/L") -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": "血糖"}]},
            "subject": {"reference": f"Patient/{patient_id}"}, "effectiveDateTime": date,
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}


def issue_code(r: httpx.Response) -> str:
    """The Hutong error code of an OperationOutcome response."""
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    return str(body["issue"][0]["details"]["coding"][0]["code"])


def ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == mode]


def resource_ids(data: Any) -> set[str]:
    """Ids of every resource anywhere in a JSON document (entries, contained, parameters, nested bundles)."""
    out: set[str] = set()
    stack = [data]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            if isinstance(x.get("resourceType"), str) and isinstance(x.get("id"), str):
                out.add(x["id"])
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return out
