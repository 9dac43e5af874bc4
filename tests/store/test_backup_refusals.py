"""Restore's refusals on both databases (issue 18, "Bad input"; hutong.store.backup).

A backup of a newer schema than this release, a corrupt or truncated backup,
and keys of another database: refused with a clear code, and the target is
left as it was (no SQLite file; the PostgreSQL database still empty).  The
drill (test_backup.py) covers a target that is not empty on both.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fhirapi import patient
from harness import Server, serve_app
from sqlalchemy.engine import make_url

from hutong.fhir.assembly import open_repository
from hutong.store import migrations
from hutong.store.database import open_database

ROOT = Path(__file__).resolve().parents[2]
FUTURE = "v9999_from_a_later_release"


def hutong(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hutong.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)


@contextmanager
def served(url: str) -> Iterator[Server]:
    yield from serve_app(url)


def _new_target(db_url: str, tmp_path: Path, name: str) -> str:
    if db_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path}/{name}/hutong.db"
    import psycopg

    u = make_url(db_url)
    dbname = f"refuse_{name}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(u.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False),
                         autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    return u.set(database=dbname).render_as_string(hide_password=False)


def _untouched(target: str) -> bool:
    """Nothing was restored: no SQLite file (nor -wal, nor a leftover beside it); an empty PostgreSQL database."""
    u = make_url(target)
    if u.get_backend_name() == "sqlite":
        db = Path(str(u.database))
        return not db.parent.exists() or list(db.parent.iterdir()) == []
    import psycopg

    with psycopg.connect(u.set(drivername="postgresql").render_as_string(hide_password=False)) as conn:
        n = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    return n is not None and n[0] == 0


def _backup(db_url: str, tmp_path: Path) -> tuple[Path, Path]:
    with served(db_url) as server:
        assert server.client.post("/Patient", json=patient()).status_code == 201
    out, keys = tmp_path / "b", tmp_path / "k"
    b = hutong("backup", str(out), "--database", db_url, "--keys-to", str(keys))
    assert b.returncode == 0, b.stderr
    return out, keys


def _data_file(out: Path) -> Path:
    m = json.loads((out / "manifest.json").read_text())
    return out / next(iter(m["files"]))


def _reseal(out: Path) -> None:
    """The manifest's checksums made to match the files again (a backup written as it is, not damaged)."""
    m = json.loads((out / "manifest.json").read_text())
    for name in m["files"]:
        f = out / name
        m["files"][name] = {"sha256": hashlib.sha256(f.read_bytes()).hexdigest(), "bytes": f.stat().st_size}
    (out / "manifest.json").write_text(json.dumps(m))


def test_a_backup_of_a_newer_schema_is_refused(db_url: str, tmp_path: Path) -> None:
    out, keys = _backup(db_url, tmp_path)
    assert FUTURE not in migrations.REVISIONS
    # What a later release's backup looks like: its manifest and (SQLite) the database inside name its revision.
    m = json.loads((out / "manifest.json").read_text())
    m["schema"] = FUTURE
    (out / "manifest.json").write_text(json.dumps(m))
    if db_url.startswith("sqlite"):
        con = sqlite3.connect(_data_file(out))
        con.execute("UPDATE alembic_version SET version_num = ?", (FUTURE,))
        con.commit()
        con.close()
        _reseal(out)
    target = _new_target(db_url, tmp_path, "newer")
    r = hutong("restore", str(out), "--database", target, "--keys-from", str(keys))
    assert r.returncode == 2 and "HT-0320" in r.stderr, r.stderr
    assert _untouched(target)


def test_a_newer_database_behind_an_older_manifest_is_refused_too(sqlite_url: str, tmp_path: Path) -> None:
    # The manifest is not the only check: a database whose own version is newer does not open after the copy,
    # and is removed again.
    out, keys = _backup(sqlite_url, tmp_path)
    con = sqlite3.connect(_data_file(out))
    con.execute("UPDATE alembic_version SET version_num = ?", (FUTURE,))
    con.commit()
    con.close()
    _reseal(out)
    target = _new_target(sqlite_url, tmp_path, "newer-inside")
    r = hutong("restore", str(out), "--database", target, "--keys-from", str(keys))
    assert r.returncode == 2 and "HT-0320" in r.stderr, r.stderr
    assert _untouched(target)


def test_a_corrupt_or_truncated_backup_is_refused(db_url: str, tmp_path: Path) -> None:
    out, keys = _backup(db_url, tmp_path)
    f = _data_file(out)
    data = f.read_bytes()
    target = _new_target(db_url, tmp_path, "corrupt")
    for bad in (data[: len(data) // 2], data[:1000] + bytes([data[1000] ^ 0xFF]) + data[1001:]):
        f.write_bytes(bad)
        r = hutong("restore", str(out), "--database", target, "--keys-from", str(keys))
        assert r.returncode == 2 and "HT-0331" in r.stderr, r.stderr
        assert _untouched(target)


def test_keys_of_another_database_are_refused(db_url: str, tmp_path: Path) -> None:
    out, _keys = _backup(db_url, tmp_path)
    other = _new_target(db_url, tmp_path, "other")
    open_repository(other).db.close()  # another database, its own master key
    other_keys = tmp_path / "copied-other-keys"
    b = hutong("backup", str(tmp_path / "ob"), "--database", other, "--keys-to", str(other_keys))
    assert b.returncode == 0, b.stderr
    target = _new_target(db_url, tmp_path, "wrongkeys")
    r = hutong("restore", str(out), "--database", target, "--keys-from", str(other_keys))
    assert r.returncode == 2 and "HT-0334" in r.stderr, r.stderr
    assert _untouched(target)
    db = open_database(target, create=False)
    db.close()
