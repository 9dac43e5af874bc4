"""Encryption at rest, checked on the bytes: residents' names, ID numbers,
phone numbers and addresses, loaded through REST, bulk import (worker
processes) and HL7 v2, appear nowhere in the SQLite file (and its WAL) or in
a pg_dump of the PostgreSQL database -- and the same scan on a database
opened with encryption off finds them (so the scan can fail).

Issue 12, finding 11: clinical text too -- a diagnosis name, an Observation
valueString, a DocumentReference description -- which the search index used
to keep in clear beside the encrypted bodies."""

from __future__ import annotations

import glob
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from harness import Server
from hl7build import adt_from_patient

from hutong.fhir.assembly import open_repository
from hutong.fhir.service import FhirService
from hutong.ingest.bulk import import_ndjson
from hutong.ingest.pipeline import Ingestor
from hutong.security.guard import as_operator
from hutong.store.sql import SqlRepository
from hutong.synth import SynthConfig, generate
from hutong.systems import ID_CARD, MRN_PREFIX

# Posted through the REST API: (family, given, ID number, mobile, address line).
KNOWN = [
    ("欧阳", "娜娜", "11010519491231002X", "13912345678", "建国路88号院3号楼1单元1101"),
    ("司马", "相如", "110101199003078515", "13800138000", "中关村南大街5号2号楼302"),
]


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scan") / "r"
    generate(out, SynthConfig(residents=40, institutions=3, seed=23, clinical=False))
    return out


def _patients(region: Path) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in (region / "Patient.ndjson").read_bytes().splitlines()]


def needles(region: Path) -> set[str]:
    """Direct identifiers we loaded: full names, ID and health-card numbers, phones, address lines."""
    out = {f + g for f, g, *_ in KNOWN} | {k[2] for k in KNOWN} | {k[3] for k in KNOWN} | {k[4] for k in KNOWN}
    for p in _patients(region):
        for n in p.get("name", []):
            if len(n.get("text", "")) >= 2:
                out.add(n["text"])
        out |= {i["value"] for i in p.get("identifier", []) if not i["system"].startswith(MRN_PREFIX)}
        out |= {t["value"] for t in p.get("telecom", [])}
        out |= {line for a in p.get("address", []) for line in a.get("line", []) if len(line) >= 6}
    return out


def rest_patient(family: str, given: str, idno: str, phone: str, line: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family, "given": [given], "text": family + given}],
            "identifier": [{"system": ID_CARD, "value": idno}],
            "telecom": [{"system": "phone", "value": phone, "use": "mobile"}],
            "address": [{"line": [line], "city": "北京市", "postalCode": "100022"}],
            "gender": "female", "birthDate": "1949-12-31"}


def load(repo: SqlRepository, region: Path, post: Any) -> None:
    """The same records through every path: REST (or the service), bulk import, HL7."""
    for k in KNOWN:
        post(rest_patient(*k))
    assert import_ndjson(as_operator(repo), region / "Organization.ndjson", workers=1).errors == []
    assert import_ndjson(as_operator(repo), region / "Patient.ndjson", workers=2).errors == []
    ing = Ingestor(FhirService(as_operator(repo)))
    for n, p in enumerate(_patients(region)[:6]):
        ack = ing.hl7(adt_from_patient(p, n, control="SCAN", mrn_suffix="-v2")).decode()
        assert "MSA|AA|" in ack, ack


def raw_bytes(url: str) -> bytes:
    """Everything the database holds, as an attacker with the files or a dump sees it."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1]
        return b"".join(Path(p).read_bytes() for p in (path, path + "-wal") if Path(p).exists())
    pg_dump = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"))[-1]
    out = subprocess.run([pg_dump, "--data-only", url.replace("postgresql+psycopg", "postgresql")],
                         check=True, capture_output=True).stdout
    assert b"COPY public.resource" in out
    return out


def found(raw: bytes, values: set[str]) -> set[str]:
    # pg_dump prints bytea as hex: look for both forms.
    low = raw.lower()
    return {v for v in values if v.encode() in raw or v.encode().hex().encode() in low}


@pytest.fixture
def key_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HUTONG_KEY_DIR", str(tmp_path / "keys"))
    return tmp_path / "keys"


def test_no_identifier_in_the_database_files(server: Server, db_url: str, region: Path) -> None:
    def post(res: dict[str, Any]) -> None:
        r = server.client.post("/Patient", json=res)
        assert r.status_code == 201, r.text

    load(server.repo, region, post)
    # still searchable by what is no longer stored in clear
    b = server.client.get("/Patient", params={"identifier": KNOWN[0][2], "_tag:not": "golden"}).json()
    assert b["total"] == 1
    b = server.client.get("/Patient", params={"name": "欧阳", "_tag:not": "golden"}).json()
    assert b["total"] == 1
    if db_url.startswith("sqlite"):
        with server.repo.db.connection() as conn:  # the WAL too, and then the main file after a checkpoint
            before = raw_bytes(db_url)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        raw = before + raw_bytes(db_url)
    else:
        raw = raw_bytes(db_url)
    wanted = needles(region)
    assert len(wanted) > 100
    assert found(raw, wanted) == set()


@pytest.fixture
def plain_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database of the same kind as db_url, for the control run."""
    if "sqlite" in request.node.callspec.id:
        yield f"sqlite:///{tmp_path}/plain.db"
        return
    base: str = request.getfixturevalue("pg_server")
    admin = base.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS hutong_scan_plain")
        conn.execute("CREATE DATABASE hutong_scan_plain")
    yield admin.rsplit("/", 1)[0] + "/hutong_scan_plain"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS hutong_scan_plain WITH (FORCE)")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_the_scan_finds_identifiers_when_encryption_is_off(kind: str, plain_url: str, region: Path,
                                                           key_dir: Path) -> None:
    repo = open_repository(plain_url, encrypt=False)
    try:
        svc = FhirService(as_operator(repo))
        load(repo, region, lambda res: svc.create("Patient", orjson.dumps(res), {}))
    finally:
        repo.db.close()
    raw = raw_bytes(plain_url)
    wanted = needles(region)
    hits = found(raw, wanted)
    # every kind of identifier is there in clear
    assert {KNOWN[0][0] + KNOWN[0][1], KNOWN[0][2], KNOWN[0][3]} <= hits
    assert len(hits) > 0.9 * len(wanted)
    assert not key_dir.exists()  # encryption off: no keys were made


# --------------------------------------------------------------------------- clinical text (issue 12, finding 11)

DIAGNOSIS = "复发性抑郁障碍重度发作"        # Condition.code display and text
VALUE_STRING = "梅毒螺旋体抗体阳性待复查"      # Observation.valueString
DESCRIPTION = "精神专科住院病历摘要第三次入院"  # DocumentReference.description
CLINICAL = {DIAGNOSIS, VALUE_STRING, DESCRIPTION}


def clinical(post: Any) -> str:
    pid = post({"resourceType": "Patient", "name": [{"family": "测", "given": ["试"]}], "gender": "male"})
    subject = {"reference": f"Patient/{pid}"}
    post({"resourceType": "Condition", "subject": subject,
          "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "F33.2", "display": DIAGNOSIS}],
                   "text": DIAGNOSIS}})
    post({"resourceType": "Observation", "status": "final", "subject": subject,
          "code": {"coding": [{"system": "http://loinc.org", "code": "22461-3"}]}, "valueString": VALUE_STRING})
    post({"resourceType": "DocumentReference", "status": "current", "subject": subject, "description": DESCRIPTION,
          "content": [{"attachment": {"contentType": "text/plain", "data": "5pGY6KaB"}}]})
    return pid


def test_f11_no_clinical_text_in_the_database_files(server: Server, db_url: str) -> None:
    def post(res: dict[str, Any]) -> str:
        r = server.client.post(f"/{res['resourceType']}", json=res)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    clinical(post)

    def total(type: str, **params: str) -> int:
        r = server.client.get(f"/{type}", params=params)
        assert r.status_code == 200, r.text
        return int(r.json()["total"])

    # still searchable: the start of the text (or of a word in it), the whole text
    assert total("Condition", **{"code:text": "复发性抑郁"}) == 1
    assert total("Condition", **{"code:text": DIAGNOSIS}) == 1
    assert total("Condition", **{"code:text": "复发性焦虑"}) == 0
    assert total("Observation", **{"value-string": "梅毒螺旋体"}) == 1
    assert total("Observation", **{"value-string:exact": VALUE_STRING}) == 1
    assert total("DocumentReference", description="精神专科") == 1
    assert total("DocumentReference", description="住院病历") == 0  # not the start: no contains on digests
    r = server.client.get("/DocumentReference", params={"description:contains": "病历"})
    assert r.status_code == 400 and "HT-0150" in r.text
    if db_url.startswith("sqlite"):
        with server.repo.db.connection() as conn:  # the WAL too, and then the main file after a checkpoint
            before = raw_bytes(db_url)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        raw = before + raw_bytes(db_url)
    else:
        raw = raw_bytes(db_url)
    assert found(raw, CLINICAL) == set()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_the_scan_finds_clinical_text_when_encryption_is_off(kind: str, plain_url: str, key_dir: Path) -> None:
    repo = open_repository(plain_url, encrypt=False)
    try:
        svc = FhirService(as_operator(repo))
        clinical(lambda res: orjson.loads(svc.create(res["resourceType"], orjson.dumps(res), {}).body or b"{}")["id"])
    finally:
        repo.db.close()
    assert found(raw_bytes(plain_url), CLINICAL) == CLINICAL


def test_f11_keys_reindex_seals_clear_text_an_earlier_release_left(sqlite_url: str, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from hutong.cli import main

    repo = open_repository(sqlite_url)
    try:
        svc = FhirService(as_operator(repo))
        clinical(lambda res: orjson.loads(svc.create(res["resourceType"], orjson.dumps(res), {}).body or b"{}")["id"])
        # What the index of an earlier release holds: the display text in clear.
        with repo.db.connection() as conn:
            conn.execute("UPDATE idx_token SET text = ? WHERE text IS NOT NULL", (DIAGNOSIS,))
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert found(raw_bytes(sqlite_url), {DIAGNOSIS}) == {DIAGNOSIS}
    finally:
        repo.db.close()
    capsys.readouterr()
    assert main(["keys", "--database", sqlite_url, "reindex"]) == 0
    assert orjson.loads(capsys.readouterr().out)["reindexed"] >= 4
    repo = open_repository(sqlite_url)
    try:
        with repo.db.connection() as conn:
            conn.execute("VACUUM")  # freed pages may still hold the old bytes until reused
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert found(raw_bytes(sqlite_url), {DIAGNOSIS}) == set()
        # and the re-indexed rows are found again
        res = FhirService(as_operator(repo)).search("Condition", [("code:text", "复发性抑郁")], {})
        assert orjson.loads(res.body or b"{}")["total"] == 1
    finally:
        repo.db.close()
