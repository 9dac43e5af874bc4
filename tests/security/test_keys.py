"""Key sources, the key ring, and ``hutong keys`` rotation without downtime."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from hutong.cli import main
from hutong.errors import ConfigError
from hutong.fhir.assembly import open_repository
from hutong.fhir.service import FhirService
from hutong.security.crypto import ring_of
from hutong.security.guard import as_operator
from hutong.security.keys import EnvKeySource, FileKeySource, default_key_dir
from hutong.security.keys_cmd import reencrypt, rows_per_key, status
from hutong.store.query import Clause, ParamRef, Query, TokenMatch
from hutong.store.sql import SqlRepository


@pytest.fixture(autouse=True)
def key_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("HUTONG_MASTER_KEYS", raising=False)
    monkeypatch.setenv("HUTONG_KEY_DIR", str(tmp_path / "keys"))
    return tmp_path / "keys"


def _patient(n: int) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": "张", "given": [f"三{n}"]}],
            "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": f"1101051949123{n:04d}"}]}


def _load(repo: SqlRepository, n: int, first: int = 0) -> list[str]:
    svc = FhirService(as_operator(repo))
    return [orjson.loads(svc.create("Patient", orjson.dumps(_patient(i)), {}).body)["id"]
            for i in range(first, first + n)]


def test_file_source_makes_private_keys_oldest_first(tmp_path: Path) -> None:
    src = FileKeySource(tmp_path / "k")
    assert src.master_keys() == {}
    a = src.new_master_key()
    b = src.new_master_key()
    keys = src.master_keys()
    assert list(keys) == sorted([a, b]) and list(keys)[-1] == b
    assert all(len(k) == 32 for k in keys.values()) and keys[a] != keys[b]
    for p in (tmp_path / "k").iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o700


def test_env_source() -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    src = EnvKeySource(f"old:{base64.b64encode(k1).decode()}, new:{base64.b64encode(k2).decode()}")
    assert src.master_keys() == {"old": k1, "new": k2}
    secret = base64.b64encode(os.urandom(16)).decode()  # 16 bytes: too short
    with pytest.raises(ConfigError) as e:
        EnvKeySource(f"a:{secret}").master_keys()
    assert e.value.code == "HT-0155" and secret not in str(e.value)
    with pytest.raises(ConfigError) as e:
        src.new_master_key()
    assert e.value.code == "HT-0154"


def test_default_key_dir(tmp_path: Path) -> None:
    # Issue 12, finding 11: never inside the database's directory (a copy of it must not carry the keys) ...
    assert default_key_dir("sqlite:////data/region/hutong.db") == Path("/data/region-keys/hutong.db")
    # ... except an earlier release's <db>.keys, kept while it exists (the operator moves it).
    (tmp_path / "hutong.db.keys").mkdir()
    assert default_key_dir(f"sqlite:///{tmp_path}/hutong.db") == tmp_path / "hutong.db.keys"
    assert default_key_dir("postgresql://u@db.example:6543/hutong") == (
        Path.home() / ".hutong" / "keys" / "db.example-6543-hutong")


def test_env_keys_open_a_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key_dir: Path) -> None:
    monkeypatch.setenv("HUTONG_MASTER_KEYS", "m1:" + base64.b64encode(os.urandom(32)).decode())
    repo = open_repository(f"sqlite:///{tmp_path}/env.db")
    try:
        ids = _load(repo, 2)
        assert repo.read("Patient", ids[0]) is not None
        assert status(repo, ring_of(repo))["master_keys"] == ["m1"]
    finally:
        repo.db.close()
    assert not key_dir.exists()  # nothing written to disk
    monkeypatch.setenv("HUTONG_MASTER_KEYS", "m2:" + base64.b64encode(os.urandom(32)).decode())
    with pytest.raises(ConfigError) as e:
        open_repository(f"sqlite:///{tmp_path}/env.db")
    assert e.value.code == "HT-0152"


def test_missing_master_key_is_a_clear_error_not_a_new_key(tmp_path: Path, key_dir: Path) -> None:
    url = f"sqlite:///{tmp_path}/m.db"
    repo = open_repository(url)
    _load(repo, 1)
    repo.db.close()
    key_dir.rename(tmp_path / "elsewhere")
    with pytest.raises(ConfigError) as e:
        open_repository(url)
    assert e.value.code == "HT-0152" and "does not have" in e.value.message
    assert not key_dir.exists()


def test_rotate_rewraps_and_reencrypts(db_url: str, key_dir: Path) -> None:
    repo = open_repository(db_url)
    try:
        ids = _load(repo, 30)
        ring = ring_of(repo)
        first_master = list(ring.source.master_keys())[0]
        old_dek, _ = ring.current()
        assert rows_per_key(repo)["resource.body"] == {f"key {old_dek}": 60}  # 30 sources + 30 golden persons
        value = _patient(3)["identifier"][0]["value"]
        by_id = Query("Patient", clauses=[Clause(ParamRef("Patient", "identifier", "token"), (TokenMatch(None, value),))])
        found_before = repo.count(by_id)
        master, dek = ring.rotate()
        assert master != first_master and dek != old_dek and ring.current()[0] == dek
        st = status(repo, ring)
        assert {k["wrapped_by"] for k in st["data_keys"]} == {master}  # every key re-wrapped
        assert st["master_keys"] == [first_master, master]             # the old file is kept
        # nothing rewritten yet, everything still reads
        assert rows_per_key(repo)["resource.body"] == {f"key {old_dek}": 60}
        assert all(repo.read("Patient", i) is not None for i in ids)
        new = _load(repo, 1, first=1000)  # a new person: under the new data key
        assert repo.read("Patient", new[0]) is not None
        done = reencrypt(repo, ring, batch=7)
        assert done["resource.body"] == 60 and done["mpi_source.features"] == 30
        counts = rows_per_key(repo)
        assert counts["resource.body"] == {f"key {dek}": 62}
        assert set(counts["mpi_source.features"]) == {f"key {dek}"}
        retired = {k["id"]: k["retired_ms"] for k in status(repo, ring)["data_keys"]}
        assert retired[old_dek] is not None and retired[dek] is None
        assert [orjson.loads(s.body or b"")["name"][0]["family"] for s in repo.fetch(("Patient", i) for i in ids)
                ] == ["张"] * 30
        # the blind-index key did not change: exact search still finds them
        assert repo.count(by_id) == found_before == 1
    finally:
        repo.db.close()


def test_rotation_without_downtime(sqlite_url: str) -> None:
    """A second process's view (own repository, own key ring) reads continuously
    while keys are rotated and every row re-encrypted; it never fails, and it
    then writes under the new data key once it has reloaded."""
    repo = open_repository(sqlite_url)
    reader = open_repository(sqlite_url)
    ids = _load(repo, 40)
    errors: list[BaseException] = []
    reads = [0]
    stop = threading.Event()

    def read_loop() -> None:
        try:
            while not stop.is_set():
                for i in ids:
                    s = reader.read("Patient", i)
                    assert s is not None and s.body is not None and b'"family":"\xe5\xbc\xa0"' in s.body
                    reads[0] += 1
        except BaseException as e:  # noqa: BLE001 (reported by the main thread)
            errors.append(e)

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 30
        while reads[0] < n and not errors and time.monotonic() < deadline:
            time.sleep(0.005)

    t = threading.Thread(target=read_loop)
    t.start()
    try:
        wait_for(len(ids))  # reading before the rotation ...
        ring = ring_of(repo)
        for _ in range(2):
            ring.rotate()
            reencrypt(repo, ring, batch=5)
        wait_for(reads[0] + 2 * len(ids))  # ... and two whole passes after it
    finally:
        stop.set()
        t.join(30)
    assert errors == [] and reads[0] >= 3 * len(ids)
    # the reader learns the new data key when it next reloads (REFRESH_S, or now)
    ring_of(reader).reload()
    assert ring_of(reader).current()[0] == ring.current()[0]
    reader.db.close()
    repo.db.close()


def test_cli_rotate_and_status_print_no_key_material(sqlite_url: str, key_dir: Path) -> None:
    repo = open_repository(sqlite_url)
    _load(repo, 3)
    repo.db.close()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["keys", "--database", sqlite_url, "rotate", "--reencrypt"]) == 0
    res = orjson.loads(out.getvalue())
    assert res["reencrypted"]["resource.body"] == 6
    assert res["status"]["rows"]["resource.body"] == {f"key {res['data_key']}": 6}
    files = sorted(key_dir.glob("master-*.key"))
    assert len(files) == 2
    # the audit trail's chain key lives here too (hutong.security.auditheads, issue 12)
    for f in [*files, key_dir / "audit-chain.key"]:  # neither the base64 nor the hex of any key
        key = base64.b64decode(f.read_bytes().strip())
        assert f.read_bytes().strip().decode() not in out.getvalue() and key.hex() not in out.getvalue()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["keys", "--database", sqlite_url, "status"]) == 0
    assert orjson.loads(out.getvalue())["current_master_key"] == res["master_key"]
