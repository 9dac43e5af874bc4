"""The restore drill (issue 18, item 1): back up while the server writes, restore,
and find everything that was acknowledged before the backup, identical.

Through the operator's commands (``hutong backup`` / ``hutong restore`` run as
subprocesses) against a server taking writes over real HTTP, on SQLite and
PostgreSQL; then the refusals: a target that exists, a corrupt backup, wrong keys.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fhirapi import observation, patient
from harness import Server, serve_app
from sqlalchemy.engine import make_url

from hutong.fhir.assembly import open_repository
from hutong.mpi.idnumber import check_char
from hutong.platform import mpi_of
from hutong.security.audit import AuditLog
from hutong.store.repository import Repository

ROOT = Path(__file__).resolve().parents[2]


def hutong(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hutong.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)


@contextmanager
def served(url: str) -> Iterator[Server]:
    yield from serve_app(url)


def _new_target(db_url: str, tmp_path: Path, name: str) -> str:
    """A new database to restore into: a file that does not exist, or a new PostgreSQL database."""
    if db_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path}/{name}/hutong.db"
    import psycopg

    u = make_url(db_url)
    dbname = f"restore_{name}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(u.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False),
                         autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    return u.set(database=dbname).render_as_string(hide_password=False)


def _versions(repo: Repository) -> dict[tuple[str, str, int], bytes | None]:
    return {(s.type, s.id, s.version): s.body for s in repo.history(None, None, since=None, count=1_000_000)}


def _accounts(repo: Repository) -> set[tuple[str, str]]:
    from hutong.security.accounts import Accounts
    from hutong.security.settings import SecuritySettings

    accts = Accounts(repo, SecuritySettings.from_env())
    return {(a.id, a.username) for a in accts.list_accounts()}


def test_restore_drill_while_the_server_writes(db_url: str, tmp_path: Path) -> None:
    out, keys = tmp_path / "backup", tmp_path / "backup-keys"
    with served(db_url) as server:
        people = []
        for n in range(5):
            first17 = f"11010519491231{n + 11:03d}"
            r = server.client.post("/Patient", json=patient(given=f"小{n}", idno=first17 + check_char(first17)))
            assert r.status_code == 201, r.text
            people.append(r.json()["id"])
        acked: list[str] = []
        stop = threading.Event()

        def write() -> None:  # the hospitals keep sending while the operator backs up
            k = 0
            while not stop.is_set():
                r = server.client.post("/Observation", json=observation(people[k % 5], value=4.0 + k / 100))
                assert r.status_code == 201, r.text
                acked.append(r.json()["id"])
                k += 1

        t = threading.Thread(target=write)
        t.start()
        while len(acked) < 10:
            stop.wait(0.01)
        acked_before = list(acked)
        b = hutong("backup", str(out), "--database", db_url, "--keys-to", str(keys))
        stop.set()
        t.join(30)
        assert b.returncode == 0, b.stderr
        assert len(acked) > len(acked_before)  # writes went on during the backup
        # the operator is told how long the copy (the snapshot held) and the checksum took
        took = json.loads(b.stdout)["seconds"]
        assert set(took) == {"copy", "checksum"} and all(v >= 0 for v in took.values())
        source = server.repo
        src_versions = _versions(source)
        src_links = {p: mpi_of(source).person_of(p) for p in people}
        src_accounts = _accounts(source)

    target = _new_target(db_url, tmp_path, "drill")
    r = hutong("restore", str(out), "--database", target, "--keys-from", str(keys))
    assert r.returncode == 0, r.stderr
    restored = open_repository(target)
    try:
        got = _versions(restored)
        # Every version in the copy is the source's, byte for byte (bodies decrypted with the copied keys) ...
        assert got and all(src_versions.get(k) == body for k, body in got.items())
        # ... and everything acknowledged before the backup began is in it.
        have = {(t_, i) for t_, i, _v in got}
        assert {("Observation", i) for i in acked_before} <= have
        assert {("Patient", p) for p in people} <= have
        assert {p: mpi_of(restored).person_of(p) for p in people} == src_links  # MPI links
        assert _accounts(restored) == src_accounts
        assert AuditLog(restored).verify().ok  # the audit chain, keyed, verifies in the copy
    finally:
        restored.db.close()
    v = hutong("audit", "--database", target, "verify")
    assert v.returncode == 0, v.stdout + v.stderr

    # A second restore into the same place is refused, and nothing of it is touched.
    again = hutong("restore", str(out), "--database", target, "--keys-from", str(keys))
    assert again.returncode == 2 and "HT-0330" in again.stderr, again.stderr


def test_a_corrupt_or_truncated_backup_is_refused_and_nothing_is_written(sqlite_url: str, tmp_path: Path) -> None:
    with served(sqlite_url) as server:
        assert server.client.post("/Patient", json=patient()).status_code == 201
    out, keys = tmp_path / "b", tmp_path / "k"
    assert hutong("backup", str(out), "--database", sqlite_url, "--keys-to", str(keys)).returncode == 0
    db = out / "hutong.db"
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])  # truncated (a copy cut short)
    target = tmp_path / "t" / "hutong.db"
    r = hutong("restore", str(out), "--database", f"sqlite:///{target}", "--keys-from", str(keys))
    assert r.returncode == 2 and "HT-0331" in r.stderr, r.stderr
    assert not target.exists()
    (out / "manifest.json").write_text("{}")
    r = hutong("restore", str(out), "--database", f"sqlite:///{target}")
    assert r.returncode == 2 and "HT-0331" in r.stderr and not target.exists()


def test_wrong_keys_leave_nothing_behind(sqlite_url: str, tmp_path: Path) -> None:
    with served(sqlite_url) as server:
        assert server.client.post("/Patient", json=patient()).status_code == 201
    out, keys = tmp_path / "b", tmp_path / "k"
    assert hutong("backup", str(out), "--database", sqlite_url, "--keys-to", str(keys)).returncode == 0
    # keys of another database (its own master key)
    other = f"sqlite:///{tmp_path}/other/hutong.db"
    open_repository(other).db.close()
    other_keys = tmp_path / "copied-other-keys"
    assert hutong("backup", str(tmp_path / "ob"), "--database", other, "--keys-to", str(other_keys)).returncode == 0
    target = tmp_path / "t" / "hutong.db"
    r = hutong("restore", str(out), "--database", f"sqlite:///{target}", "--keys-from", str(other_keys))
    assert r.returncode == 2 and "HT-0334" in r.stderr, r.stderr
    assert not target.exists()
    assert not (tmp_path / "t-keys" / "hutong.db").exists()  # the copied keys went again too


def test_keys_are_never_put_inside_the_backup(sqlite_url: str, tmp_path: Path) -> None:
    open_repository(sqlite_url).db.close()
    r = hutong("backup", str(tmp_path / "b"), "--database", sqlite_url, "--keys-to", str(tmp_path / "b" / "keys"))
    assert r.returncode == 2 and "HT-0334" in r.stderr
    r = hutong("backup", str(tmp_path / "b2"), "--database", sqlite_url)
    assert r.returncode == 0 and "keys" in r.stderr  # the warning: a backup without its keys
