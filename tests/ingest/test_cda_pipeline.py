"""WS/T 500 CDA documents through HTTP (POST /ingest/cda) and the CLI folder
import into the store, on SQLite and PostgreSQL: stored as DocumentReference +
Binary, patient linked by the MPI, resent documents change nothing, bad
documents rejected with the reason and kept as dead letters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cda_helpers import INVALID, MINIMAL, REALISTIC, make_fixtures
from fhirapi import NOT_GOLDEN, issue_code
from harness import Server

from hutong.cli import main
from hutong.systems import ORGANIZATION

CDA = {"content-type": "application/hl7-cda+xml"}


def register(server: Server) -> None:
    org = {"resourceType": "Organization", "name": "北京市朝阳区测试医院",
           "identifier": [{"system": ORGANIZATION, "value": make_fixtures.SENDER_CODE}]}
    assert server.client.post("/Organization", content=json.dumps(org)).status_code == 201


def post(server: Server, xml: bytes) -> Any:
    return server.client.post(server.root + "/ingest/cda", content=xml, headers=CDA)


def count(server: Server, type: str) -> int:
    params = [("_summary", "count")] + ([NOT_GOLDEN] if type == "Patient" else [])
    return int(server.client.get(f"/{type}", params=params).json()["total"])


def test_lab_report_is_stored_extracted_and_idempotent(server: Server) -> None:
    register(server)
    xml = next(REALISTIC.glob("C0007*.xml")).read_bytes()
    r = post(server, xml)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["type"] == "C0007" and out["documentReference"].startswith("DocumentReference/")
    doc = server.client.get("/" + out["documentReference"]).json()
    assert doc["type"]["coding"][0]["code"] == "C0007"
    binary = server.client.get("/" + doc["content"][0]["attachment"]["url"]).json()
    assert binary["contentType"] == "application/hl7-cda+xml"
    n_obs = count(server, "Observation")
    assert n_obs > 0 and count(server, "DiagnosticReport") == 1
    patient = server.client.get("/" + doc["subject"]["reference"]).json()
    assert any(ln["type"] == "refer" for ln in patient["link"])  # linked to its person inline
    # the same document again: nothing new
    assert post(server, xml).status_code == 201
    assert count(server, "Observation") == n_obs and count(server, "DocumentReference") == 1
    assert count(server, "Patient") == 1


@pytest.mark.parametrize("name", ["C0002", "C0006", "C0032", "C0053"])
def test_each_extracted_type_stores_structured_resources(server: Server, name: str) -> None:
    register(server)
    xml = next(REALISTIC.glob(f"{name}*.xml")).read_bytes()
    r = post(server, xml)
    assert r.status_code == 201, r.text
    types = {ref.split("/")[0] for ref in r.json()["resources"]}
    assert {"DocumentReference", "Binary", "Patient"} <= types
    assert types & {"Condition", "Observation", "DiagnosticReport", "Procedure", "Encounter"}


def test_bad_documents_are_rejected_with_the_reason_and_kept(server: Server) -> None:
    register(server)
    bad = sorted(INVALID.glob("*.xml"))
    assert bad
    for f in bad:
        r = post(server, f.read_bytes())
        assert r.status_code == 422, (f.name, r.text)
        assert issue_code(r) == "HT-0062"
    dead = server.client.get(server.root + "/ingest/dead-letters").json()["items"]
    assert len(dead) == len(bad) and all(d["channel"] == "cda" and d["reason"] for d in dead)
    assert count(server, "DocumentReference") == 0
    # an unregistered custodian is refused too
    r = server.client.post(server.root + "/ingest/cda", content=(MINIMAL / "C0001.xml").read_bytes().replace(
        make_fixtures.SENDER_CODE.encode(), b"99999999999999999Z"), headers=CDA)
    assert r.status_code == 422 and "custodian" in r.json()["issue"][0]["diagnostics"]
    assert server.client.post(server.root + "/ingest/cda", content=b"<x/>",
                              headers={"content-type": "application/json"}).status_code == 415


def test_cli_imports_a_folder_of_all_53_types(server: Server, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    register(server)
    db = server.repo.db.url
    assert main(["ingest", "--database", str(db), "cda", str(MINIMAL)]) == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 53 and {r["type"] for r in results} == {f"C{n:04d}" for n in range(1, 54)}
    assert count(server, "DocumentReference") == 53
    assert main(["ingest", "--database", str(db), "timeliness"]) == 0
    t = json.loads(capsys.readouterr().out)
    assert sum(d["messages"] for d in t["days"] if d["channel"] == "cda") == 53
