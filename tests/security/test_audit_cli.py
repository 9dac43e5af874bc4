"""``hutong audit verify | list | purge | break-glass`` on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from test_audit import DOCTOR, DOCTOR2, clear_audit, read, sql

from hutong.cli import main
from hutong.fhir.assembly import open_repository
from hutong.security.audit import DAY_MS, AuditLog
from hutong.security.events import AuditRecord
from hutong.store.sql import SqlRepository


@pytest.fixture
def log(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[AuditLog]:
    monkeypatch.delenv("HUTONG_AUDIT_RETENTION_DAYS", raising=False)
    repo = open_repository(db_url)
    audit = AuditLog(repo)
    clear_audit(repo)
    yield audit
    repo.db.close()


def run(capsys: pytest.CaptureFixture[str], db_url: str, *argv: str) -> tuple[int, list[dict[str, Any]], str]:
    rc = main(["audit", "--database", db_url, *argv])
    out, err = capsys.readouterr()
    return rc, [orjson.loads(line) for line in out.splitlines() if line.strip()], err


def test_verify_ok_then_tampered(log: AuditLog, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(5):
        log.record(read((f"mpi-{i}",)))
    rc, out, _ = run(capsys, db_url, "verify")
    assert rc == 0 and out[0]["ok"] is True and out[0]["rows"] == 5 and out[0]["head_seq"] == 5
    head = f"5:{out[0]['head_hash']}"
    assert run(capsys, db_url, "verify", "--checkpoint", head)[0] == 0
    log.record(read(("mpi-9",)))
    rc, out, _ = run(capsys, db_url, "verify", "--checkpoint", head, "--from-checkpoint")
    assert rc == 0 and out[0]["rows"] == 1 and out[0]["head_seq"] == 6
    assert run(capsys, db_url, "verify", "--from-checkpoint")[0] == 2
    repo: SqlRepository = log.repo
    sql(repo, "UPDATE audit_event SET account_id = 'acc-nobody' WHERE seq = 3")
    rc, out, _ = run(capsys, db_url, "verify")
    assert rc == 1 and out[0]["ok"] is False and out[0]["bad_seq"] == 3
    assert out[0]["reason"] == "hash mismatch at seq 3"
    rc, _out, err = run(capsys, db_url, "verify", "--checkpoint", "5:xyz")
    assert rc == 2 and "HT-0145" in err


def test_list_filters_and_hides_queries(log: AuditLog, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    log.record(AuditRecord(action="search", principal=DOCTOR, persons=("mpi-a",), query="identifier=secret-q"))
    log.record(read(("mpi-b",), who=DOCTOR2))
    log.record(read(("mpi-a",), who=DOCTOR2))
    rc, out, _ = run(capsys, db_url, "list", "--person", "mpi-a")
    assert rc == 0 and [r["seq"] for r in out] == [3, 1]
    assert all("query" not in r for r in out)
    rc, out, _ = run(capsys, db_url, "list", "--account", "acc-doc-2", "--limit", "1")
    assert [r["seq"] for r in out] == [3]
    rc, out, _ = run(capsys, db_url, "list", "--action", "search", "--with-query")
    assert out[0]["query"] == "identifier=secret-q"


def test_purge_uses_the_retention_setting(log: AuditLog, db_url: str, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time_ns() // 1_000_000
    for age in (400, 300, 200, 100, 1):
        log.record(read(("mpi-a",), time_ms=now - age * DAY_MS))
    rc, out, _ = run(capsys, db_url, "purge", "--dry-run")
    assert rc == 0 and out[0]["rows"] == 3 and out[0]["through_seq"] == 3 and out[0]["dry_run"] is True
    monkeypatch.setenv("HUTONG_AUDIT_RETENTION_DAYS", "365")
    rc, out, _ = run(capsys, db_url, "purge")
    assert rc == 0 and out[0]["rows"] == 1 and out[0]["through_seq"] == 1
    monkeypatch.setenv("HUTONG_AUDIT_RETENTION_DAYS", "30")
    rc, out, err = run(capsys, db_url, "purge")
    assert rc == 2 and "HT-0147" in err and out == []
    monkeypatch.delenv("HUTONG_AUDIT_RETENTION_DAYS")
    rc, out, _ = run(capsys, db_url, "purge")
    assert rc == 0 and out[0]["rows"] == 2 and out[0]["through_seq"] == 3
    rc, out, _ = run(capsys, db_url, "verify")
    assert rc == 0 and out[0]["anchor_seq"] == 3 and out[0]["rows"] == 4  # 2 kept + 2 purge records
    assert log.access_log(["mpi-a"], limit=10)[-1].seq == 4


def test_break_glass_listing(log: AuditLog, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from test_audit import AUDITOR

    log.record(read(("mpi-a",)))
    a = log.record(read(("mpi-a",), who=DOCTOR2, purpose="break-glass", reason="抢救"))
    b = log.record(read(("mpi-b",), who=DOCTOR2, purpose="break-glass", reason="抢救"))
    log.review_break_glass(a, AUDITOR, "justified", "ok")
    rc, out, _ = run(capsys, db_url, "break-glass")
    assert rc == 0 and [r["seq"] for r in out] == [b, a]
    assert out[1]["review"]["verdict"] == "justified" and out[0]["review"] is None
    assert out[0]["reason"] == "抢救" and out[0]["break_glass"] is True
    rc, out, _ = run(capsys, db_url, "break-glass", "--unreviewed")
    assert [r["seq"] for r in out] == [b]


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["audit", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for word in ("verify", "list", "purge", "break-glass", "--checkpoint"):
        assert word in text
