"""Issue 12, findings 7, 11 (keys and file modes), 12 and 15: an audit trail
that someone holding the database files cannot rewrite unseen, keys away from
the database, durable commits, and a full disk answered with a clear 503.

The attacks run as the issue describes them: records are written through the
real server (HTTP requests, each audited by the gate), then the database is
changed directly with SQL -- what someone with the files can do -- and
``hutong audit verify`` is run through the CLI, with no hand-kept checkpoint.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from harness import Server

from hutong.cli import main
from hutong.fhir.assembly import open_repository
from hutong.security.audit import EVENT_COLS, GENESIS, AuditLog, row_hash
from hutong.security.events import AuditRecord
from hutong.security.keys import default_key_dir
from hutong.security.principal import Principal, Role
from hutong.store import database
from hutong.store.sql import SqlRepository, SqlWriter

DOCTOR = Principal(account_id="acc-doc-b", role=Role.CLINICIAN, display="李医生", organization="H002")


@pytest.fixture(autouse=True)
def key_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A key directory of this test's own (on PostgreSQL the default one is shared
    by every test of the session, and these tests publish heads into it)."""
    d = tmp_path / "keys"
    monkeypatch.setenv("HUTONG_KEY_DIR", str(d))
    monkeypatch.delenv("HUTONG_AUDIT_HEADS", raising=False)
    monkeypatch.delenv("HUTONG_AUDIT_RETENTION_DAYS", raising=False)
    return d


def cli(capsys: pytest.CaptureFixture[str], db_url: str, *argv: str) -> tuple[int, list[dict[str, Any]]]:
    capsys.readouterr()
    rc = main(["audit", "--database", db_url, *argv])
    out = capsys.readouterr().out
    return rc, [orjson.loads(line) for line in out.splitlines() if line.strip().startswith("{")]


def verify(capsys: pytest.CaptureFixture[str], db_url: str) -> dict[str, Any]:
    rc, out = cli(capsys, db_url, "verify")
    assert rc == (0 if out[0]["ok"] else 1)
    return out[0]


def sql(repo: SqlRepository, statement: str, args: tuple[Any, ...] = ()) -> None:
    """Direct SQL around the platform: what someone holding the database files does."""
    with repo.db.connection() as conn:
        conn.cursor().execute(repo.db.sql(statement), args)


def traffic(server: Server, n: int) -> None:
    """Audited requests through the real server (the gate writes one record each)."""
    for i in range(n):
        r = server.client.post("/Organization", json={"resourceType": "Organization", "name": f"机构{i}"})
        assert r.status_code == 201, r.text


def rows(repo: SqlRepository) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in repo.query(f"SELECT {EVENT_COLS} FROM audit_event ORDER BY seq")]  # noqa: S608


def rehash_from(repo: SqlRepository, seq: int, key: bytes | None) -> None:
    """Recompute every hash from ``seq`` on, as a forger does: with the old unkeyed
    SHA-256 (key None) or with a key of their own."""
    all_rows = rows(repo)
    prev = next((str(r[14]) for r in all_rows if int(r[0]) == seq - 1), GENESIS)
    for r in all_rows:
        if int(r[0]) < seq:
            continue
        h = row_hash(prev, int(r[0]), int(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], int(r[11]),
                     bytes(r[12]), key=key)
        sql(repo, "UPDATE audit_event SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, h, int(r[0])))
        prev = h


def delete_seqs(repo: SqlRepository, where: str, args: tuple[Any, ...]) -> None:
    for t in ("audit_person", "break_glass_review", "audit_event"):
        sql(repo, f"DELETE FROM {t} WHERE {where}", args)  # noqa: S608


# --------------------------------------------------------------------------- finding 7


def test_f7_untouched_chain_with_purges_verifies(server: Server, db_url: str, capsys: pytest.CaptureFixture[str],
                                                  key_dir: Path) -> None:
    audit: AuditLog = server.app.platform.audit
    now = time.time_ns() // 1_000_000
    for age in (400, 300, 200):  # old records, then today's traffic
        audit.record(AuditRecord(action="read", principal=DOCTOR, persons=("mpi-x",), time_ms=now - age * 86_400_000))
    rc, heads = cli(capsys, db_url, "heads", "--publish")
    assert rc == 0 and heads[-1]["seq"] == 3 and heads[-1]["sig"]
    traffic(server, 3)
    assert cli(capsys, db_url, "heads", "--publish")[0] == 0
    rc, out = cli(capsys, db_url, "purge")
    assert rc == 0 and out[0]["rows"] == 3 and out[0]["through_seq"] == 3
    traffic(server, 2)
    cli(capsys, db_url, "heads", "--publish")
    v = verify(capsys, db_url)
    assert v["ok"] is True and v["anchor_seq"] == 3 and v["heads"] == 4, v  # the genesis head + 3
    # the heads are in the key directory (0700), not beside the database, and verify with its public key
    assert (key_dir / "audit-heads.ndjson").exists()
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    for name in ("audit-chain.key", "audit-signing.key"):
        assert stat.S_IMODE((key_dir / name).stat().st_mode) == 0o600
    rc, _ = cli(capsys, db_url, "heads", "--public-key")
    assert rc == 0


def test_f7_edited_break_glass_row_rehashed_without_the_key_is_detected(
        server: Server, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    traffic(server, 2)
    audit: AuditLog = server.app.platform.audit
    bg = audit.record(AuditRecord(action="read", principal=DOCTOR, persons=("mpi-r",), purpose="break-glass",
                                  reason="抢救"))
    traffic(server, 3)
    assert verify(capsys, db_url)["ok"] is True
    repo = server.repo
    # Hide the break-glass access (no longer break-glass, no longer in the review queue) and
    # recompute every later hash the way the chain used to be computed (unkeyed SHA-256) ...
    sql(repo, "UPDATE audit_event SET purpose = 'treatment', flags = 0 WHERE seq = ?", (bg,))
    rehash_from(repo, bg, None)
    v = verify(capsys, db_url)
    assert v["ok"] is False and v["bad_seq"] == bg and v["reason"] == f"hash mismatch at seq {bg}"
    # ... or under a key of the forger's own: the same.
    rehash_from(repo, bg, os.urandom(32))
    v = verify(capsys, db_url)
    assert v["ok"] is False and v["bad_seq"] == bg and v["reason"] == f"hash mismatch at seq {bg}"


def test_f7_newest_rows_cut_off_are_detected_by_the_published_heads(
        server: Server, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    traffic(server, 6)
    rc, heads = cli(capsys, db_url, "heads", "--publish")
    top = heads[-1]["seq"]
    assert rc == 0 and top >= 6
    delete_seqs(server.repo, "seq > ?", (top - 3,))
    v = verify(capsys, db_url)
    assert v["ok"] is False and v["bad_seq"] == top - 2, v
    assert f"names seq {top}, but the chain ends at seq {top - 3}" in v["reason"]
    # the heads are signed: taking the attacker's own head line in does not help
    with (Path(os.environ["HUTONG_KEY_DIR"]) / "audit-heads.ndjson").open("ab") as f:
        forged = dict(heads[-1], seq=top - 3, hash=rows(server.repo)[-1][14])
        f.write(orjson.dumps(forged) + b"\n")
    v = verify(capsys, db_url)
    assert v["ok"] is False and "has no valid signature" in v["reason"]


@pytest.fixture
def heads_every_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUTONG_AUDIT_HEAD_SECONDS", "0")


def test_f7_the_server_publishes_signed_heads_by_itself(heads_every_commit: None, server: Server, db_url: str,
                                                        capsys: pytest.CaptureFixture[str], key_dir: Path) -> None:
    """No operator action: the running server signs heads as it commits records,
    so cutting the newest rows is detected even if nobody ran `audit heads`."""
    traffic(server, 4)
    rc, heads = cli(capsys, db_url, "heads")
    assert rc == 0 and heads and max(h["seq"] for h in heads) >= 4
    top = max(h["seq"] for h in heads)
    delete_seqs(server.repo, "seq > ?", (top - 2,))
    v = verify(capsys, db_url)
    assert v["ok"] is False and "rows were cut off the end" in v["reason"], v


def test_f7_oldest_rows_deleted_and_anchor_planted_is_detected(
        server: Server, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    traffic(server, 8)
    repo = server.repo
    k = 4
    h = str(repo.query("SELECT hash FROM audit_event WHERE seq = ?", (k,))[0][0])
    delete_seqs(repo, "seq <= ?", (k,))
    sql(repo, "INSERT INTO audit_anchor (id, seq, hash, time_ms) VALUES (1, ?, ?, ?)", (k, h, 1))
    v = verify(capsys, db_url)
    assert v["ok"] is False and v["bad_seq"] == k
    assert "is not the one the newest audit-purge record made" in v["reason"]


def test_f7_planted_anchor_after_a_real_purge_is_detected(
        server: Server, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    audit: AuditLog = server.app.platform.audit
    now = time.time_ns() // 1_000_000
    for age in (400, 300):
        audit.record(AuditRecord(action="read", principal=DOCTOR, persons=("mpi-x",), time_ms=now - age * 86_400_000))
    assert cli(capsys, db_url, "purge")[0] == 0          # anchor at 2, purge record 3
    traffic(server, 6)
    repo = server.repo
    h = str(repo.query("SELECT hash FROM audit_event WHERE seq = 6")[0][0])
    delete_seqs(repo, "seq <= ?", (6,))
    sql(repo, "UPDATE audit_anchor SET seq = 6, hash = ? WHERE id = 1", (h,))
    v = verify(capsys, db_url)
    assert v["ok"] is False and "anchor at seq 6 is not the one" in v["reason"]


def test_f7_rebuilt_database_is_detected(server: Server, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    traffic(server, 5)
    assert cli(capsys, db_url, "heads", "--publish")[0] == 0
    repo = server.repo
    # Everything audit-related wiped; the platform goes on writing a fresh chain (with its own key) ...
    for t in ("audit_person", "break_glass_review", "audit_anchor", "audit_chain", "audit_event"):
        sql(repo, f"DELETE FROM {t}")  # noqa: S608
    fresh = AuditLog(repo)
    for _ in range(12):
        fresh.record(AuditRecord(action="read", principal=DOCTOR, persons=("mpi-z",)))
    v = verify(capsys, db_url)
    assert v["ok"] is False and "published head mismatch" in v["reason"], v
    # ... or the attacker rebuilds it from scratch by hand (no chain key): caught at the first row.
    for t in ("audit_person", "audit_event"):
        sql(repo, f"DELETE FROM {t}")  # noqa: S608
    prev = GENESIS
    for seq in (1, 2, 3):
        body = b"J{}"
        h = row_hash(prev, seq, 1, "read", "0", "acc-x", None, None, None, None, None, None, 0, body)
        sql(repo, f"INSERT INTO audit_event ({EVENT_COLS}) VALUES (?, 1, 'read', '0', 'acc-x', NULL, NULL, NULL, "  # noqa: S608
                  "NULL, NULL, NULL, 0, ?, ?, ?)", (seq, body, prev, h))
        prev = h
    v = verify(capsys, db_url)
    assert v["ok"] is False and v["bad_seq"] == 1 and v["reason"] == "hash mismatch at seq 1"


def test_f7_legacy_chain_is_read_then_keyed_from_a_recorded_switch_point(
        repo: SqlRepository, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    old = AuditLog(repo)
    for i in range(4):
        old.record(AuditRecord(action="read", principal=DOCTOR, persons=(f"mpi-{i}",)))
    # What a database of the earlier release holds: unkeyed hashes, no audit_chain row, no heads.
    rehash_from(repo, 1, None)
    sql(repo, "DELETE FROM audit_chain")
    old.keys.heads.unlink()
    log = AuditLog(repo)                      # the first process of this release
    switch = log.repo.query("SELECT keyed_from FROM audit_chain")[0][0]
    assert switch == 5
    assert rows(repo)[-1][2] == "audit-chain-keyed"
    log.record(AuditRecord(action="read", principal=DOCTOR, persons=("mpi-9",)))
    v = verify(capsys, db_url)
    assert v["ok"] is True and v["rows"] == 6 and v["keyed_from"] == 5, v
    # Rewriting a legacy row now breaks the keyed switch record's link ...
    sql(repo, "UPDATE audit_event SET account_id = 'acc-nobody' WHERE seq = 2")
    rehash_from(repo, 2, None)
    v = verify(capsys, db_url)
    assert v["ok"] is False and v["bad_seq"] == 5, v
    rehash_from(repo, 2, None)
    sql(repo, "UPDATE audit_event SET account_id = ? WHERE seq = 2", (DOCTOR.account_id,))
    rehash_from(repo, 2, None)  # (the legacy rows restored: ok again)
    rehash_from(repo, 5, log.keys.chain_key)
    assert verify(capsys, db_url)["ok"] is True
    # ... and moving the switch point (to pass keyed rows off as legacy) is seen,
    sql(repo, "UPDATE audit_chain SET keyed_from = 6")
    v = verify(capsys, db_url)
    assert v["ok"] is False and v["bad_seq"] == 5, v
    # also with the rows before the new point re-hashed as legacy: the keyed row after them no longer links.
    rehash_from(repo, 1, None)
    v = verify(capsys, db_url)
    assert v["ok"] is False and "keyed from seq 5" in v["reason"], v   # the published heads say where
    # Deleting the chain metadata as well: no new "migration" launders the rewritten chain.
    sql(repo, "DELETE FROM audit_chain")
    v = verify(capsys, db_url)
    assert v["ok"] is False, v
    assert not repo.query("SELECT 1 FROM audit_chain")
    # Someone who also deletes the heads file in the key directory gets a chain that looks legacy and
    # is keyed anew; the copy of the heads the operator shipped elsewhere still says otherwise.
    shipped = old.keys.heads.with_name("shipped-heads.ndjson")
    shipped.write_bytes(old.keys.heads.read_bytes())
    old.keys.heads.unlink()
    assert verify(capsys, db_url)["ok"] is True
    rc, out = cli(capsys, db_url, "verify", "--heads", str(shipped))
    assert rc == 1 and out[0]["ok"] is False and "keyed from seq 5" in out[0]["reason"], out


# --------------------------------------------------------------------------- finding 11: keys and file modes


def test_f11_default_key_dir_is_outside_the_database_directory(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUTONG_KEY_DIR")
    url = f"sqlite:///{tmp_path}/data/hutong.db"
    repo = open_repository(url)
    try:
        log = AuditLog(repo)
        log.record(AuditRecord(action="read", principal=DOCTOR))
        kd = default_key_dir(url)
        data = tmp_path / "data"
        assert data.resolve() not in kd.resolve().parents and kd.resolve() != data.resolve()
        assert log.keys.dir == kd and any(kd.glob("master-*.key"))
        assert stat.S_IMODE(kd.stat().st_mode) == 0o700
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in kd.iterdir())
        # the database directory holds no key material at all
        names = {p.name for p in data.iterdir()}
        assert not any(n.endswith((".key", ".pem")) or "keys" in n for n in names), names
        # database files are private: the database, its WAL and shared-memory file
        for suffix in ("", "-wal", "-shm"):
            p = data / f"hutong.db{suffix}"
            assert p.exists() and stat.S_IMODE(p.stat().st_mode) == 0o600, (p, oct(p.stat().st_mode))
    finally:
        repo.db.close()


def test_f11_existing_wide_files_are_narrowed_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    os.chmod(path, 0o644)
    repo = open_repository(f"sqlite:///{path}")
    repo.db.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --------------------------------------------------------------------------- finding 12: durable commits


def test_f12_sqlite_commits_are_synchronous_full(server: Server, db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL: durability is the server's synchronous_commit (default on; the test "
                    "cluster turns it off for speed); Hutong does not override it per session")
    traffic(server, 1)  # the server's own pooled connections
    with server.repo.db.connection() as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# --------------------------------------------------------------------------- finding 15: full disk


def _disk_full(db_url: str) -> Exception:
    if db_url.startswith("sqlite"):
        return sqlite3.OperationalError("database or disk is full")
    return psycopg.errors.DiskFull("could not extend file: No space left on device")


def test_f15_token_endpoint_answers_503_without_traceback_on_a_full_disk(
        server: Server, db_url: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    client, secret = server.accounts.add_client("协和 HIS", organization="400000001", organization_id="org-1",
                                                scopes_text="system/*.rs")
    form = {"grant_type": "client_credentials", "client_id": client.client_id, "client_secret": secret or ""}
    with httpx.Client(base_url=server.root, timeout=30) as http:
        assert http.post("/auth/token", data=form).status_code == 200
        real = SqlWriter.execute

        def full(self: SqlWriter, statement: str, args: Any = ()) -> Any:
            if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
                raise _disk_full(db_url)
            return real(self, statement, args)

        monkeypatch.setattr(SqlWriter, "execute", full)
        capfd.readouterr()
        r = http.post("/auth/token", data=form)
        assert r.status_code == 503, r.text
        assert r.headers["content-type"].startswith("application/json") and r.headers.get("retry-after")
        body = r.json()
        assert body["error"] == "temporarily_unavailable" and "HT-0159" in body["error_description"]
        assert "access_token" not in body
        monkeypatch.setattr(SqlWriter, "execute", real)
        assert http.post("/auth/token", data=form).status_code == 200  # back once there is room
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Traceback" not in caplog.text
    assert not [rec for rec in caplog.records if rec.exc_info]


def test_f15_reads_that_cannot_be_audited_are_refused_with_a_clear_503(
        server: Server, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decision (README, "Audit"): fail closed -- an answer that leaves no audit
    record is not given; the caller gets 503 and may retry."""
    r = server.client.post("/Organization", json={"resourceType": "Organization", "name": "医院"})
    oid = r.json()["id"]
    real = SqlWriter.execute

    def full(self: SqlWriter, statement: str, args: Any = ()) -> Any:
        if statement.lstrip().upper().startswith("INSERT"):
            raise _disk_full(db_url)
        return real(self, statement, args)

    monkeypatch.setattr(SqlWriter, "execute", full)
    r = server.client.get(f"/Organization/{oid}")
    assert r.status_code == 503 and r.json()["resourceType"] == "OperationOutcome"
    assert "HT-0159" in r.text and "storage is full" in r.text and "audited" in r.text and "医院" not in r.text


def test_f15_wal_shrinks_after_bulk_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(database, "WAL_LIMIT_BYTES", 2 * 1024 * 1024)
    monkeypatch.setattr(database, "CHECKPOINT_BYTES", 512 * 1024)
    url = f"sqlite:///{tmp_path}/bulk.db"
    repo = open_repository(url)
    wal = Path(f"{tmp_path}/bulk.db-wal")
    try:
        with repo.db.connection() as reader:
            # A reader holding a snapshot keeps the WAL from being reset while the bulk write runs.
            cur = reader.cursor()
            cur.execute("BEGIN")
            cur.execute("SELECT COUNT(*) FROM resource").fetchall()
            blob = os.urandom(2000).hex()
            for i in range(8):
                with repo.write() as w:
                    w.execute("CREATE TABLE IF NOT EXISTS bulk_t (x TEXT)")
                    for _ in range(500):
                        w.execute("INSERT INTO bulk_t (x) VALUES (?)", (blob + str(i),))
            grown = wal.stat().st_size
            assert grown > 8 * 1024 * 1024
            cur.execute("ROLLBACK")
        deadline = time.monotonic() + 10
        while wal.exists() and wal.stat().st_size > database.WAL_LIMIT_BYTES and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not wal.exists() or wal.stat().st_size <= database.WAL_LIMIT_BYTES, wal.stat().st_size
        repo.db.shrink_wal()
        assert not wal.exists() or wal.stat().st_size == 0
    finally:
        repo.db.close()


def test_f15_storage_failures_are_classified() -> None:
    assert database.storage_failure(sqlite3.OperationalError("database or disk is full")) is not None
    assert database.storage_failure(sqlite3.OperationalError("no such table: x")) is None
    assert database.storage_failure(psycopg.errors.DiskFull("x")) is not None
    assert database.storage_failure(ValueError("full")) is None
