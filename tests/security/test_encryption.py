"""The AES-256-GCM codec through the real store: what is stored, what is
refused, and databases written before encryption at rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from hutong.errors import ConfigError
from hutong.fhir.assembly import open_repository
from hutong.fhir.service import FhirService
from hutong.ingest.pipeline import Ingestor
from hutong.security.crypto import AesCodec, key_id_of, ring_of
from hutong.security.guard import as_operator
from hutong.security.keys_cmd import reencrypt, rows_per_key
from hutong.store.query import Clause, ParamRef, Query, StringMatch, TokenMatch
from hutong.store.sql import SqlRepository

ID_CARD = "urn:oid:2.16.156.10011.1.3"


@pytest.fixture(autouse=True)
def key_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("HUTONG_MASTER_KEYS", raising=False)
    monkeypatch.setenv("HUTONG_KEY_DIR", str(tmp_path / "keys"))
    return tmp_path / "keys"


def patient(family: str, given: str, idno: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family, "given": [given]}],
            "identifier": [{"system": ID_CARD, "value": idno}], "birthDate": "1949-12-31", "gender": "female"}


def create(repo: SqlRepository, res: dict[str, Any]) -> str:
    out: str = orjson.loads(FhirService(as_operator(repo)).create(res["resourceType"], orjson.dumps(res), {}).body)["id"]
    return out


def count(repo: SqlRepository, name: str, ptype: str, match: Any) -> int:
    return repo.count(Query("Patient", clauses=[Clause(ParamRef("Patient", name, ptype), (match,))]))


def test_bodies_and_mpi_columns_are_encrypted(db_url: str) -> None:
    repo = open_repository(db_url)
    try:
        pid = create(repo, patient("欧阳", "娜娜", "11010519491231002X"))
        kid, _ = ring_of(repo).current()
        body = bytes(repo.query("SELECT body FROM resource WHERE fhir_id = ?", (pid,))[0][0])
        assert body[:1] == b"E" and key_id_of(body) == kid
        assert "欧阳".encode() not in body
        stored = repo.read("Patient", pid)
        assert stored is not None and orjson.loads(stored.body or b"")["name"][0]["family"] == "欧阳"
        feats = bytes(repo.query("SELECT features FROM mpi_source WHERE patient_id = ?", (pid,))[0][0])
        assert key_id_of(feats) == kid
        # the same body twice: different ciphertexts (random nonce per value)
        codec = repo.codec
        assert codec.encode(b"{}") != codec.encode(b"{}")
    finally:
        repo.db.close()


def test_inbound_message_is_encrypted(sqlite_url: str) -> None:
    repo = open_repository(sqlite_url)
    try:
        msg = ("MSH|^~\\&|HIS|UNKNOWN|HUTONG|REGION|20261101090000||ADT^A04^ADT_A01|ENC1|P|2.4|||||CHN|"
               "UNICODE UTF-8\rEVN|A04|20261101090000\rPID|1||1^^^UNKNOWN^MR~11010519491231002X^^^"
               "2.16.156.10011.1.3^NNCHN||司马^相如||19491231|F\rPV1|1|O").encode()
        Ingestor(FhirService(as_operator(repo))).hl7(msg)  # unknown sender: a dead letter, kept raw
        raw = bytes(repo.query("SELECT raw FROM ingest_message", ())[0][0])
        assert raw[:1] == b"E" and b"11010519491231002X" not in raw
    finally:
        repo.db.close()


def test_tampered_moved_or_unknown_key_values_are_refused(sqlite_url: str) -> None:
    repo = open_repository(sqlite_url)
    try:
        ring = ring_of(repo)
        enc = AesCodec(ring, "resource").encode(b'{"a":1}')
        assert AesCodec(ring, "resource").decode(enc) == b'{"a":1}'
        with pytest.raises(ConfigError) as e:  # a resource body moved into another column
            AesCodec(ring, "mpi-features").decode(enc)
        assert e.value.code == "HT-0153"
        tampered = enc[:-1] + bytes([enc[-1] ^ 1])
        with pytest.raises(ConfigError) as e:
            AesCodec(ring, "resource").decode(tampered)
        assert e.value.code == "HT-0153"
        unknown = enc[:1] + (999).to_bytes(4, "big") + enc[5:]
        with pytest.raises(ConfigError) as e:
            AesCodec(ring, "resource").decode(unknown)
        assert e.value.code == "HT-0153"
        # in the database: an MPI features value copied over a resource body
        pid = create(repo, patient("王", "芳", "110101199003078515"))
        with repo.write() as w:
            w.execute("UPDATE resource SET body = (SELECT features FROM mpi_source WHERE patient_id = ?) "
                      "WHERE fhir_id = ?", (pid, pid))
        with pytest.raises(ConfigError) as e:
            repo.read("Patient", pid)
        assert e.value.code == "HT-0153"
    finally:
        repo.db.close()


def test_a_database_from_before_encryption_keeps_working(db_url: str, key_dir: Path) -> None:
    old = open_repository(db_url, encrypt=False)
    try:
        pid = create(old, patient("欧阳", "娜娜", "11010519491231002X"))
        create(old, patient("张", "伟", "110101199003078515"))
        person = old.query("SELECT person_id FROM mpi_source WHERE patient_id = ?", (pid,))[0][0]
    finally:
        old.db.close()
    assert not key_dir.exists()
    repo = open_repository(db_url)  # first keys: clear index values replaced by digests
    try:
        assert bytes(repo.query("SELECT body FROM resource WHERE fhir_id = ?", (pid,))[0][0])[:1] == b"J"
        stored = repo.read("Patient", pid)
        assert stored is not None and b"\xe6\xac\xa7\xe9\x98\xb3" in (stored.body or b"")  # 欧阳
        assert count(repo, "family", "string", StringMatch("欧阳")) >= 1
        assert count(repo, "identifier", "token", TokenMatch(None, "11010519491231002X")) >= 1
        plain = repo.query("SELECT COUNT(*) FROM idx_string WHERE norm = ?", ("欧阳",))[0][0]
        assert plain == 0
        # MPI blocking keys were re-keyed: another registration of the same ID number joins the person
        other = patient("欧阳", "娜娜", "11010519491231002X")
        other["identifier"].append({"system": "urn:hutong:mrn:H9", "value": "77"})
        pid2 = create(repo, other)
        assert repo.query("SELECT person_id FROM mpi_source WHERE patient_id = ?", (pid2,))[0][0] == person
        # and ``hutong keys reencrypt`` encrypts what was written in clear
        reencrypt(repo, ring_of(repo))
        assert "plain" not in rows_per_key(repo)["resource.body"]
        assert bytes(repo.query("SELECT body FROM resource WHERE fhir_id = ?", (pid,))[0][0])[:1] == b"E"
        stored = repo.read("Patient", pid)
        assert stored is not None and orjson.loads(stored.body or b"")["name"][0]["family"] == "欧阳"
    finally:
        repo.db.close()
