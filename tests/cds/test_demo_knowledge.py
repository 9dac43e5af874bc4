"""Issue 14, item 6: ``hutong demo``'s synthetic region gets the 互认 list with each institution's QC
status and local codes, approved by two committee members, and says what to try, which is true:
the named clinician ordering the named item, in their own institution's local code, for the named
patient, gets a real card over HTTP (CDS Hooks 2.0, order-select) offering the named result.

A small synthetic region (hutong.synth) loaded the way ``hutong demo`` loads it, on SQLite.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx
import orjson
from harness import serve_app

from hutong.cds import demo_knowledge
from hutong.cds.knowledge import LOCAL_CODE_PREFIX
from hutong.cds.versions import KnowledgeVersions
from hutong.cli import demo_recognition
from hutong.fhir.assembly import open_repository
from hutong.ingest.bulk import import_ndjson
from hutong.platform import mpi_of
from hutong.security.audit import AuditLog
from hutong.security.guard import as_operator
from hutong.synth import SynthConfig, generate
from hutong.systems import ID_CARD, ORGANIZATION
from hutong.web import demo_accounts


def test_region_knowledge_covers_every_institution() -> None:
    seed = demo_knowledge.seed_json()
    orgs = [{"identifier": [{"system": ORGANIZATION, "value": f"1211010{n:02d}00000000X"}]} for n in range(1, 9)]
    data = demo_knowledge.region_knowledge(seed, orgs)
    codes = {o["identifier"][0]["value"] for o in orgs}
    assert {q["institution"] for q in data["quality"]} == codes
    assert {c["institution"] for c in data["local_codes"]} == codes
    # Each institution codes every item its own way; one institution's lab QC has lapsed.
    assert all(len(c["codes"]) == len(seed["items"]) for c in data["local_codes"])
    assert len({tuple(sorted(c["codes"])) for c in data["local_codes"]}) == len(codes)
    lapsed = [q for q in data["quality"] if q["valid_to"] < "2025-01-01"]
    assert len(lapsed) == 1 and lapsed[0]["items"] == ["*lab"]


def test_demo_loads_approves_and_says_what_to_try(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/demo.db"
    generate(tmp_path / "region", SynthConfig(residents=150, institutions=5, seed=20261121, years=1))
    repo = open_repository(url)
    try:
        assert not import_ndjson(as_operator(repo), tmp_path / "region", workers=1).errors
        mpi_of(repo).backfill()
        accounts = demo_accounts.ensure(repo, tmp_path / "accounts.json")
        lines = demo_recognition.setup(repo, accounts, tmp_path / "committee.json", "127.0.0.1", 8000)
        again = demo_recognition.setup(repo, accounts, tmp_path / "committee.json", "127.0.0.1", 8000)
        versions = KnowledgeVersions(repo, AuditLog(repo))
        [v] = versions.list()
    finally:
        repo.db.close()
    text = "\n".join(lines)
    assert "approved by" in text and v.status == "active" and v.author != v.approver
    assert len(again) == len(lines) - 1 and "approved by" not in "\n".join(again)  # loaded once
    committee = orjson.loads((tmp_path / "committee.json").read_bytes())
    assert set(committee) >= {"demo-committee-1", "demo-committee-2"}
    m = re.search(r"as clinician (\S+) .*?ID number (\d{17}[\dX]), open 开单 and order (\S+) \(local code (\S+)\): "
                  r"the card offers the result of (\S+) of (\d{4}-\d\d-\d\d)", text)
    assert m is not None, text
    username, id_number, item, code, institution, day = m.groups()
    assert username == accounts["clinician"]["username"]
    for server in serve_app(url):
        acct = server.accounts.by_username(username)
        found = server.client.get("/Patient", params={"identifier": f"{ID_CARD}|{id_number}",
                                                      "_tag": "https://fhir.hutong.dev/CodeSystem/mpi|golden"})
        person = found.json()["entry"][0]["resource"]["id"]
        order = {"resourceType": "ServiceRequest", "id": "sr-demo", "status": "draft", "intent": "order",
                 "subject": {"reference": f"Patient/{person}"},
                 "code": {"coding": [{"system": LOCAL_CODE_PREFIX + acct.organization, "code": code}]}}
        body = {"hook": "order-select", "hookInstance": str(uuid.uuid4()),
                "context": {"userId": f"Practitioner/{acct.practitioner_id}", "patientId": person,
                            "selections": ["ServiceRequest/sr-demo"],
                            "draftOrders": {"resourceType": "Bundle", "type": "collection",
                                            "entry": [{"resource": order}]}}}
        with httpx.Client(base_url=server.root, timeout=30,
                          headers={"authorization": f"Bearer {server.token(acct)}"}) as cl:
            r = cl.post("/cds-services/hutong-order-select", json=body)
        assert r.status_code == 200, r.text
        [card] = [c for c in r.json()["cards"] if c["source"]["label"].startswith("检查检验结果互认")]
        assert item in card["summary"] and institution in card["summary"] and day in card["summary"]
