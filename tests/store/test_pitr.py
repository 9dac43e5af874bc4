"""Point-in-time recovery of PostgreSQL (issue 18, item 1; hutong.store.pitr), through the operator's commands.

A cluster of its own with WAL archiving on (the session's cluster has it off,
and archive_mode needs a restart): write A, ``hutong backup --physical``,
write B, note the time, write C, ``hutong restore --physical --to-time`` into
a new data directory, start it: A and B are there, C is not, and ``hutong
audit verify`` passes on the restored database.  Then the refusals.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fhirapi import patient
from harness import Server, serve_app
from pgcluster import free_port, pg_bindir

from hutong.cli.backup import key_dir_of
from hutong.fhir.assembly import open_repository
from hutong.mpi.idnumber import check_char
from hutong.store import pitr

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.postgres, pytest.mark.slow]  # ~40 s on a busy machine: two clusters, a recovery
AS_PG: list[str] = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def hutong(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hutong.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=300)


def _pg_ctl(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AS_PG, str(pg_bindir() / "pg_ctl"), "-D", str(data), *args],
                          capture_output=True, text=True, timeout=120)


def _start(data: Path, port: int, sock: Path, log: Path) -> None:
    r = _pg_ctl(data, "-o", f"-p {port} -k {sock} -c listen_addresses=127.0.0.1", "-l", str(log), "-w", "-t", "90",
                "start")
    assert r.returncode == 0, r.stdout + r.stderr + (log.read_text() if log.exists() else "")


@contextmanager
def served(url: str) -> Iterator[Server]:
    yield from serve_app(url)


@contextmanager
def _root() -> Iterator[Path]:
    """A directory the postgres user can write (the clusters, the archive)."""
    d = Path(tempfile.mkdtemp(prefix="hutong-pitr-"))
    if AS_PG:
        shutil.chown(d, "postgres", "postgres")
    try:
        yield d
    finally:
        for data in (d / "primary", d / "restored"):
            if (data / "postmaster.pid").exists():
                _pg_ctl(data, "-m", "immediate", "stop")
        shutil.rmtree(d, ignore_errors=True)


def _archiving_cluster(root: Path) -> tuple[str, Path]:
    data, archive = root / "primary", root / "archive"
    subprocess.run([*AS_PG, "mkdir", str(archive)], check=True)
    subprocess.run([*AS_PG, str(pg_bindir() / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "-E", "UTF8", "--no-locale"], check=True, capture_output=True)
    conf = data / "postgresql.conf"
    conf.write_text(conf.read_text() + pitr.archive_settings(archive) + "fsync = off\n")
    port = free_port()
    _start(data, port, root, root / "primary.log")
    return f"postgresql://postgres@127.0.0.1:{port}/postgres", archive


def _psql(url: str, sql: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
        return str(row[0]) if row else ""


def _new_patient(server: Server, n: int) -> str:
    first17 = f"11010519800101{n:03d}"
    r = server.client.post("/Patient", json=patient(given=f"时{n}", idno=first17 + check_char(first17)))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_point_in_time_recovery_keeps_what_came_before_the_time(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with _root() as root:
        url, archive = _archiving_cluster(root)
        keys = key_dir_of(url)
        try:
            with served(url) as server:
                a = _new_patient(server, 1)
                out = tmp_path / "base"
                b_ = hutong("backup", "--physical", str(out), "--database", url)
                assert b_.returncode == 0, b_.stderr
                assert "archive_mode is off" not in b_.stderr
                b = _new_patient(server, 2)
                time.sleep(1.2)
                at = datetime.now(UTC).astimezone()  # local offset: the operator writes their own zone's time
                time.sleep(1.2)
                c = _new_patient(server, 3)
            # Everything up to C must be in the archive before recovering past it (pg_switch_wal; README).
            seg = _psql(url, "SELECT pg_walfile_name(pg_switch_wal())")
            deadline = time.monotonic() + 60
            while not (archive / seg).exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert (archive / seg).exists(), "the WAL segment holding C was not archived"

            target = root / "restored"
            owner = ["--owner", "postgres"] if AS_PG else []
            r = hutong("restore", "--physical", str(out), "--to-time", at.isoformat(), str(target), *owner)
            assert r.returncode == 0, r.stderr
            assert (target / "recovery.signal").exists()
            port = free_port()
            _start(target, port, root, root / "restored.log")
            restored = f"postgresql://postgres@127.0.0.1:{port}/postgres"
            deadline = time.monotonic() + 60  # recovery_target_action=promote: it opens for writes when done
            while _psql(restored, "SELECT pg_is_in_recovery()") == "True" and time.monotonic() < deadline:
                time.sleep(0.2)
            assert _psql(restored, "SELECT pg_is_in_recovery()") == "False"
            monkeypatch.setenv("HUTONG_KEY_DIR", str(keys))  # the primary's keys open the copy
            repo = open_repository(restored)
            try:
                have = {i for t, i, _v in ((s.type, s.id, s.version)
                                           for s in repo.history(None, None, since=None, count=100_000))
                        if t == "Patient"}
            finally:
                repo.db.close()
            assert a in have and b in have
            assert c not in have
            v = hutong("audit", "--database", restored, "verify", env={"HUTONG_KEY_DIR": str(keys)})
            assert v.returncode == 0, v.stdout + v.stderr

            # Refusals, nothing written: the same target again; a time before the base backup; no offset.
            again = hutong("restore", "--physical", str(out), "--to-time", at.isoformat(), str(target))
            assert again.returncode == 2 and "HT-0330" in again.stderr, again.stderr
            fresh = root / "fresh"
            early = hutong("restore", "--physical", str(out), "--to-time", "2020-01-01T00:00:00+08:00", str(fresh))
            assert early.returncode == 2 and "HT-0335" in early.stderr and not fresh.exists(), early.stderr
            naive = hutong("restore", "--physical", str(out), "--to-time", "2026-12-07 18:30", str(fresh))
            assert naive.returncode == 2 and "HT-0335" in naive.stderr and not fresh.exists(), naive.stderr
            nobody = hutong("restore", "--physical", str(out), "--owner", "no-such-user-hutong", str(fresh))
            assert nobody.returncode == 2 and "HT-0337" in nobody.stderr and not fresh.exists(), nobody.stderr
            assert [p.name for p in root.iterdir() if p.name.startswith(".fresh")] == []  # no half-made copy
            # A corrupt base backup fails pg_verifybackup.
            f = next(p for p in sorted((out / "base" / "base").rglob("*")) if p.is_file() and p.stat().st_size > 0)
            f.write_bytes(f.read_bytes()[:-1])
            bad = hutong("restore", "--physical", str(out), str(fresh))
            assert bad.returncode == 2 and "HT-0331" in bad.stderr and not fresh.exists(), bad.stderr
        finally:
            shutil.rmtree(keys, ignore_errors=True)


def test_archive_settings_never_overwrite_an_archived_segment(tmp_path: Path) -> None:
    r = hutong("backup", "--archive-settings", str(tmp_path / "wal"))
    assert r.returncode == 0, r.stderr
    assert "archive_mode = on" in r.stdout
    assert f"test ! -f {tmp_path}/wal/%f && cp %p {tmp_path}/wal/%f" in r.stdout
    no_dir = hutong("backup", "--physical")
    assert no_dir.returncode == 2 and "HT-0337" in no_dir.stderr
