"""A discharge summary's 出院带药 (WS/T 500 C0053, section 10183-2) is stored as
MedicationStatements when the hospital's own system sends it, and found again
by the Patient compartment's search (patient=, code=, effective=).  Before,
MedicationStatement had neither search parameters nor a place in the Patient
compartment (compartmentdefinition-patient lists it by ``subject``), so the
policy found no patient for it and refused an institution's document."""

from __future__ import annotations

import json
from typing import Any

import httpx
from cda_helpers import REALISTIC, make_fixtures
from harness import Server

from hutong.systems import ORGANIZATION


def _institution(server: Server, code: str, name: str) -> Any:
    r = server.client.post("/Organization", content=json.dumps({
        "resourceType": "Organization", "name": name, "identifier": [{"system": ORGANIZATION, "value": code}]}))
    assert r.status_code == 201, r.text
    his, _ = server.accounts.add_client(f"HIS {name}", organization=code, organization_id=r.json()["id"])
    return his


def _as(server: Server, account: Any) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30,
                        headers={"authorization": f"Bearer {server.token(account)}"})


def test_discharge_medications_from_the_hospitals_system_are_stored_and_searchable(server: Server) -> None:
    his = _institution(server, make_fixtures.SENDER_CODE, "互通示范医院")
    other = _institution(server, make_fixtures.OTHER_SENDER_CODE, "另一家医院")
    xml = (REALISTIC / "C0053_discharge_summary.xml").read_bytes()
    with _as(server, his) as c:
        r = c.post(server.root + "/ingest/cda", content=xml, headers={"content-type": "application/hl7-cda+xml"})
        assert r.status_code == 201, r.text
        meds = c.get("/MedicationStatement").json()
        names = sorted(e["resource"]["medicationCodeableConcept"]["text"] for e in meds.get("entry", []))
        # every substanceAdministration of the document's medication sections, the 出院带药 among them
        assert len(names) == xml.count(b"<substanceAdministration") and len(names) >= 2, meds
        assert {"硫酸氢氯吡格雷片", "阿司匹林肠溶片"} <= set(names)
        patient = meds["entry"][0]["resource"]["subject"]["reference"]
        by_patient = c.get("/MedicationStatement", params={"patient": patient}).json()
        assert len(by_patient["entry"]) == len(names)
        assert c.get("/MedicationStatement", params={"patient": "Patient/nobody"}).json().get("entry") is None
        everything = c.get(f"/{patient}/$everything").json()
        assert sum(e["resource"]["resourceType"] == "MedicationStatement" for e in everything["entry"]) == len(names)
    with _as(server, other) as c:  # another institution without a basis sees none of them
        r = c.get("/MedicationStatement", params={"patient": patient})
        assert r.status_code == 403, r.text
        assert c.get("/MedicationStatement").json().get("entry") is None
