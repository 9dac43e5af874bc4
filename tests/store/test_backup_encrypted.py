"""Encrypted backups (issue 18, item 1; hutong.store.backup_crypto): ``hutong backup --encrypt``.

The passphrase comes from a file or the environment (never argv); the backup
holds no plain database; restore with it gives the database back; a wrong
passphrase, an altered or cut-short file, or no passphrase at all are refused
with nothing written.  Chunk-level attacks (dropped, swapped, cut at the last
chunk) on the format itself with a small chunk size.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fhirapi import patient
from harness import Server, serve_app

from hutong.fhir.assembly import open_repository
from hutong.store import backup_crypto

PASS = "长城 long enough passphrase 42"
ROOT = Path(__file__).resolve().parents[2]


def hutong(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hutong.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=300)


@contextmanager
def served(url: str) -> Iterator[Server]:
    yield from serve_app(url)


def _encrypted_backup(sqlite_url: str, tmp_path: Path) -> tuple[Path, Path, str]:
    with served(sqlite_url) as server:
        r = server.client.post("/Patient", json=patient(given="密文"))
        assert r.status_code == 201, r.text
        pid = str(r.json()["id"])
    pf = tmp_path / "pass.txt"
    pf.write_text(PASS + "\n", encoding="utf-8")
    out, keys = tmp_path / "b", tmp_path / "k"
    b = hutong("backup", str(out), "--database", sqlite_url, "--keys-to", str(keys), "--encrypt",
               "--passphrase-file", str(pf))
    assert b.returncode == 0, b.stderr
    assert PASS not in b.stdout + b.stderr
    return out, keys, pid


def _rewrite_checksum(out: Path) -> None:
    """What someone altering the file on purpose would do: fix the manifest's checksum to match."""
    m = json.loads((out / "manifest.json").read_text())
    f = out / "hutong.db.enc"
    m["files"]["hutong.db.enc"] = {"sha256": hashlib.sha256(f.read_bytes()).hexdigest(), "bytes": f.stat().st_size}
    (out / "manifest.json").write_text(json.dumps(m))


def test_an_encrypted_backup_restores_only_with_its_passphrase(sqlite_url: str, tmp_path: Path) -> None:
    out, keys, pid = _encrypted_backup(sqlite_url, tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["hutong.db.enc", "manifest.json"]  # no plain copy left
    sealed = (out / "hutong.db.enc").read_bytes()
    assert b"SQLite format 3" not in sealed and b"resource" not in sealed
    assert json.loads((out / "manifest.json").read_text())["encrypted"] == "hutong.db"

    target = tmp_path / "t" / "hutong.db"
    url = f"sqlite:///{target}"
    # No passphrase anywhere (and no terminal to ask on): refused before anything is written.
    env_clear = {"HUTONG_BACKUP_PASSPHRASE": ""}
    r = hutong("restore", str(out), "--database", url, "--keys-from", str(keys), env=env_clear)
    assert r.returncode == 2 and "HT-0620" in r.stderr, r.stderr
    assert not target.exists() and not (tmp_path / "t-keys").exists()
    # A wrong one: refused, nothing written (no database, no half-decrypted file, no keys placed).
    r = hutong("restore", str(out), "--database", url, "--keys-from", str(keys),
               env={"HUTONG_BACKUP_PASSPHRASE": "not the passphrase at all"})
    assert r.returncode == 2 and "HT-0621" in r.stderr, r.stderr
    assert not target.exists() and list(target.parent.glob("*")) == [] and not (tmp_path / "t-keys").exists()
    # The passphrase on the command line is not even an option.
    r = hutong("restore", str(out), "--database", url, "--passphrase", PASS)
    assert r.returncode == 2 and not target.exists()
    # The right one, from the environment.
    r = hutong("restore", str(out), "--database", url, "--keys-from", str(keys),
               env={"HUTONG_BACKUP_PASSPHRASE": PASS})
    assert r.returncode == 0, r.stderr
    assert PASS not in r.stdout + r.stderr
    repo = open_repository(url)
    try:
        assert ("Patient", pid) in {(s.type, s.id) for s in repo.history(None, None, since=None, count=1000)}
    finally:
        repo.db.close()


def test_an_altered_or_cut_short_encrypted_backup_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    out, keys, _pid = _encrypted_backup(sqlite_url, tmp_path)
    f = out / "hutong.db.enc"
    good = f.read_bytes()
    target = tmp_path / "t" / "hutong.db"
    env = {"HUTONG_BACKUP_PASSPHRASE": PASS}
    # Damaged by accident (the manifest's checksum no longer holds): HT-0331 before any passphrase is used.
    f.write_bytes(good[:-100])
    r = hutong("restore", str(out), "--database", f"sqlite:///{target}", "--keys-from", str(keys), env=env)
    assert r.returncode == 2 and "HT-0331" in r.stderr, r.stderr
    # Altered on purpose, checksum rewritten: one bit in the ciphertext, or the end cut off: the tag fails.
    for bad in (good[:5000] + bytes([good[5000] ^ 1]) + good[5001:], good[:-100]):
        f.write_bytes(bad)
        _rewrite_checksum(out)
        r = hutong("restore", str(out), "--database", f"sqlite:///{target}", "--keys-from", str(keys), env=env)
        assert r.returncode == 2 and "HT-0621" in r.stderr, r.stderr
        assert not target.exists() and list(target.parent.glob("*")) == []


def test_a_short_passphrase_is_refused_and_nothing_is_written(sqlite_url: str, tmp_path: Path) -> None:
    open_repository(sqlite_url).db.close()
    r = hutong("backup", str(tmp_path / "b"), "--database", sqlite_url, "--encrypt",
               env={"HUTONG_BACKUP_PASSPHRASE": "short"})
    assert r.returncode == 2 and "HT-0622" in r.stderr, r.stderr
    assert not (tmp_path / "b").exists()


def test_the_stream_format_refuses_dropped_swapped_and_truncated_chunks(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup_crypto, "CHUNK", 16)
    plain = tmp_path / "p"
    plain.write_bytes(os.urandom(100))  # 7 chunks of 16 (the last of 4)
    sealed = tmp_path / "s"
    backup_crypto.encrypt_file(plain, sealed, PASS)
    backup_crypto.decrypt_file(sealed, tmp_path / "ok", PASS)
    assert (tmp_path / "ok").read_bytes() == plain.read_bytes()
    data = sealed.read_bytes()
    head_len = data.index(b"\n", len(backup_crypto.MAGIC)) + 1
    head, body = data[:head_len], data[head_len:]
    chunks = [body[i:i + 32] for i in range(0, len(body), 32)]
    assert len(chunks) == 7
    variants = {
        "dropped": head + b"".join(chunks[:2] + chunks[3:]),
        "swapped": head + b"".join([chunks[1], chunks[0], *chunks[2:]]),
        "cut at a chunk boundary": head + b"".join(chunks[:-1]),
        "header changed": head.replace(b'"p": 1', b'"p": 2') + body,
    }
    for name, bad in variants.items():
        f = tmp_path / name.replace(" ", "-")
        f.write_bytes(bad)
        dest = tmp_path / (f.name + ".out")
        with pytest.raises(Exception) as e:
            backup_crypto.decrypt_file(f, dest, PASS)
        assert getattr(e.value, "code", None) == "HT-0621", name
        assert not dest.exists(), name


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_an_encrypted_pg_dump_restores_with_its_passphrase_only(db_url: str, tmp_path: Path) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    with served(db_url) as server:
        r = server.client.post("/Patient", json=patient(given="密文"))
        assert r.status_code == 201, r.text
        pid = str(r.json()["id"])
    out, keys = tmp_path / "b", tmp_path / "k"
    env = {"HUTONG_BACKUP_PASSPHRASE": PASS}
    b = hutong("backup", str(out), "--database", db_url, "--keys-to", str(keys), "--encrypt", env=env)
    assert b.returncode == 0, b.stderr
    assert sorted(p.name for p in out.iterdir()) == ["hutong.pgdump.enc", "manifest.json"]
    u = make_url(db_url)
    dbname = f"enc_{os.getpid()}_{abs(hash(str(tmp_path))) % 10**8}"
    admin = u.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    target = u.set(database=dbname).render_as_string(hide_password=False)
    r = hutong("restore", str(out), "--database", target, "--keys-from", str(keys),
               env={"HUTONG_BACKUP_PASSPHRASE": "the wrong passphrase"})
    assert r.returncode == 2 and "HT-0621" in r.stderr, r.stderr
    with psycopg.connect(u.set(drivername="postgresql", database=dbname).render_as_string(hide_password=False)) as c:
        n = c.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        assert n is not None and n[0] == 0  # nothing restored
    r = hutong("restore", str(out), "--database", target, "--keys-from", str(keys), env=env)
    assert r.returncode == 0, r.stderr
    repo = open_repository(target)
    try:
        assert ("Patient", pid) in {(s.type, s.id) for s in repo.history(None, None, since=None, count=1000)}
    finally:
        repo.db.close()
