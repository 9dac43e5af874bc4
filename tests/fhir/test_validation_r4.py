"""Issue 15, item 5: validation follows R4 where the R4B models are narrower, and says
exactly where it cannot (through HTTP on both databases)."""

from __future__ import annotations

from typing import Any

from fhirapi import issue_code, observation, patient
from harness import Server

TRANSLATION = "http://hl7.org/fhir/StructureDefinition/translation"


def test_extension_primitive_values_carry_extensions(server: Server) -> None:
    """json.html#primitive: an extension's valueString may have its own "_valueString"
    (here a translation), or only that (the value given in other languages)."""
    c = server.client
    p = patient()
    p["extension"] = [
        {"url": "https://example.org/fhir/StructureDefinition/birth-place-note", "valueString": "协和医院",
         "_valueString": {"extension": [{"url": TRANSLATION, "extension": [
             {"url": "lang", "valueCode": "en"}, {"url": "content", "valueString": "PUMC Hospital"}]}]}},
        {"url": "https://example.org/fhir/StructureDefinition/occupation-note",
         "_valueString": {"extension": [{"url": TRANSLATION, "extension": [
             {"url": "lang", "valueCode": "en"}, {"url": "content", "valueString": "teacher"}]}]}},
    ]
    r = c.post("/Patient", json=p)
    assert r.status_code == 201, r.text
    back = c.get(f"/Patient/{r.json()['id']}").json()
    assert back["extension"] == p["extension"]
    # the sibling is checked like any other primitive's: it needs id or extension
    p["extension"][0]["_valueString"] = {}
    r = c.post("/Patient", json=p)
    assert r.status_code == 422 and issue_code(r) == "HT-0008", r.text
    assert "Patient.extension[0]._valueString" in r.text


def test_absolute_references_to_non_fhir_urls(server: Server) -> None:
    """references.html#literal: a reference may be any absolute URL where the resource
    is found, on a FHIR server or not; relative ones must still be Type/id."""
    c = server.client
    pid = c.post("/Patient", json=patient()).json()["id"]
    obs: dict[str, Any] = observation(pid)
    obs["derivedFrom"] = [{"reference": "https://lis.example-hospital.cn/reports/2026/77?format=pdf"},
                          {"reference": "urn:isbn:9787117266000"}]
    r = c.post("/Observation", json=obs)
    assert r.status_code == 201, r.text
    assert c.get(f"/Observation/{r.json()['id']}").json()["derivedFrom"] == obs["derivedFrom"]
    for bad in ("not a reference", "urn:uuid:not-a-uuid", "Observation", "patient/1"):
        obs["derivedFrom"] = [{"reference": bad}]
        r = c.post("/Observation", json=obs)
        assert r.status_code == 422 and "malformed reference" in r.text, (bad, r.text)


def test_capability_statement_lists_where_r4b_differs(server: Server) -> None:
    cap = server.client.get("/metadata").json()
    rest = cap["rest"][0]
    by_type = {e["type"]: e for e in rest["resource"]}
    assert "Evidence.name (R4) is not in R4B: refused" in by_type["Evidence"]["documentation"]
    assert "documentation" not in by_type["PlanDefinition"]  # R4B's additions are refused instead (below)
    assert "differs" not in by_type["Observation"].get("documentation", "")
    assert "MedicinalProduct" in rest["documentation"] and "EffectEvidenceSynthesis" in rest["documentation"]
    assert "Extension.valueMeta (R4) is not in R4B: refused" in rest["documentation"]
    assert "EffectEvidenceSynthesis" not in by_type
    assert [o["name"] for o in by_type["ValueSet"]["operation"]] == ["expand", "validate-code"]


def test_r4b_additions_are_refused(server: Server) -> None:
    """Elements R4B added are not R4 4.0.1: refused, naming the element."""
    c = server.client
    r = c.post("/PlanDefinition", json={"resourceType": "PlanDefinition", "status": "draft",
                                        "action": [{"title": "随访", "subjectCanonical": "https://example.org/g"}]})
    assert r.status_code == 422 and issue_code(r) == "HT-0008", r.text
    assert "PlanDefinition.action[0].subjectCanonical: an R4B element" in r.text
    p = patient()
    p["extension"] = [{"url": "https://example.org/x", "valueRatioRange": {"lowNumerator": {"value": 1}}}]
    r = c.post("/Patient", json=p)
    assert r.status_code == 422 and "Patient.extension[0].valueRatioRange: an R4B element" in r.text, r.text
    ok = {"resourceType": "PlanDefinition", "status": "draft", "subjectCodeableConcept": {"text": "患者"}}
    assert c.post("/PlanDefinition", json=ok).status_code == 201
