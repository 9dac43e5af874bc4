"""A small two-hospital region for the policy tests, built through the API.

Resident R (王小红) has a record at hospital A (recent encounter, a psychiatric
diagnosis) and at hospital B (an old encounter, a blood test, an HIV test);
resident S has a record at hospital B only.  Callers: an institution system
and a clinician per hospital, R as a resident, a commission officer and an
auditor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from harness import Server

from hutong.security.principal import Role
from hutong.systems import ID_CARD, ORGANIZATION, mrn_system

R_ID = "11010519491231002X"
S_ID = "440524188001010014"
ICD10 = "http://hl7.org/fhir/sid/icd-10"


def _created(r: httpx.Response) -> str:
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _days_ago(n: int) -> str:
    return (datetime.now(UTC) - timedelta(days=n)).strftime("%Y-%m-%dT%H:%M:%S+00:00")


@dataclass
class Region:
    server: Server
    ids: dict[str, str] = field(default_factory=dict)
    accounts: dict[str, Any] = field(default_factory=dict)

    def client(self, who: str, scopes: str | None = None) -> httpx.Client:
        return self.server.as_(self.accounts[who], scopes)

    def client_for(self, account: Any, scopes: str | None = None) -> httpx.Client:
        return self.server.as_(account, scopes)


def build(server: Server) -> Region:
    c = server.client
    reg = Region(server)
    ids = reg.ids
    for key, code, name in (("orgA", "12110000400000001A", "甲医院"), ("orgB", "12110000400000002B", "乙医院")):
        ids[key] = _created(c.post("/Organization", json={
            "resourceType": "Organization", "name": name, "identifier": [{"system": ORGANIZATION, "value": code}]}))
        ids[key + "_code"] = code
    for key in ("docA", "docB"):
        ids[key] = _created(c.post("/Practitioner", json={"resourceType": "Practitioner",
                                                          "name": [{"family": "医", "given": [key]}]}))

    def patient(org: str, mrn: str, idno: str, family: str, given: str, birth: str, gender: str) -> str:
        code = ids[org + "_code"]
        return _created(c.post("/Patient", json={
            "resourceType": "Patient", "managingOrganization": {"reference": f"Organization/{ids[org]}"},
            "identifier": [{"system": ID_CARD, "value": idno}, {"system": mrn_system(code), "value": mrn}],
            "name": [{"family": family, "given": [given]}], "birthDate": birth, "gender": gender,
            "telecom": [{"system": "phone", "value": "13912345678"}]}))

    ids["pA"] = patient("orgA", "A-1", R_ID, "王", "小红", "1949-12-31", "female")
    ids["pB"] = patient("orgB", "B-1", R_ID, "王", "小红", "1949-12-31", "female")
    ids["pS"] = patient("orgB", "B-2", S_ID, "李", "四", "1880-01-01", "male")

    def encounter(org: str, pid: str, days: int) -> str:
        return _created(c.post("/Encounter", json={
            "resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
            "subject": {"reference": f"Patient/{pid}"}, "serviceProvider": {"reference": f"Organization/{ids[org]}"},
            "period": {"start": _days_ago(days), "end": _days_ago(days)}}))

    def obs(pid: str, code: str, value: float, extra: dict[str, Any] | None = None) -> str:
        body = {"resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": _days_ago(3),
                "valueQuantity": {"value": value, "unit": "mmol/L"}, **(extra or {})}
        return _created(c.post("/Observation", json=body))

    def condition(pid: str, icd: str) -> str:
        return _created(c.post("/Condition", json={
            "resourceType": "Condition", "subject": {"reference": f"Patient/{pid}"},
            "code": {"coding": [{"system": ICD10, "code": icd}]}}))

    ids["encA"] = encounter("orgA", ids["pA"], 5)
    ids["encB"] = encounter("orgB", ids["pB"], 700)
    ids["encS"] = encounter("orgB", ids["pS"], 2)
    ids["obsA"] = obs(ids["pA"], "2345-7", 5.6)
    ids["obsB"] = obs(ids["pB"], "2345-7", 6.1)
    ids["obsS"] = obs(ids["pS"], "2345-7", 7.0)
    ids["hivB"] = obs(ids["pB"], "7917-8", 0.0)                 # HIV test: labelled HIV by code list
    ids["psyA"] = condition(ids["pA"], "F32.1")                  # depression at A: PSY
    ids["psyB"] = condition(ids["pB"], "F41.0")                  # panic disorder at B: PSY
    ids["dxB"] = condition(ids["pB"], "I10")                     # hypertension at B
    # R's observation at B naming S as performer: in both compartments (an _include trap).
    ids["trap"] = obs(ids["pB"], "8867-4", 72, {"performer": [{"reference": f"Patient/{ids['pS']}"}]})
    person = c.get("/Patient", params={"identifier": f"{ID_CARD}|{R_ID}", "_tag": "https://fhir.hutong.dev/CodeSystem/mpi|golden"})
    ids["R"] = person.json()["entry"][0]["resource"]["id"]
    person = c.get("/Patient", params={"identifier": f"{ID_CARD}|{S_ID}", "_tag": "https://fhir.hutong.dev/CodeSystem/mpi|golden"})
    ids["S"] = person.json()["entry"][0]["resource"]["id"]

    acc = server.accounts
    for key in ("A", "B"):
        org, code = ids["org" + key], ids["org" + key + "_code"]
        reg.accounts["sys" + key], _ = acc.add_client(f"HIS {key}", organization=code, organization_id=org)
        reg.accounts["doc" + key], _, _ = acc.add_user(f"doctor{key.lower()}", role=Role.CLINICIAN,
                                                       name=f"{key}院医生", organization=code, organization_id=org,
                                                       practitioner_id=ids["doc" + key])
    reg.accounts["R"] = acc.add_resident(ids["R"], phone="13912345678")
    reg.accounts["S"] = acc.add_resident(ids["S"], phone="13800000000")
    reg.accounts["commission"], _, _ = acc.add_user("officer1", role=Role.COMMISSION, name="卫健委")
    reg.accounts["auditor"], _, _ = acc.add_user("auditor1", role=Role.AUDITOR, name="审计员")
    return reg
