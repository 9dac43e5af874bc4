"""A SQLite backup copies one snapshot step by step while the server writes (hutong.store.backup._sqlite_copy).

The backup used to copy every page in one step of SQLite's backup API, because a step
that begins a new read transaction after another connection wrote starts the copy
again (https://sqlite.org/backup.html).  At 4.3 GB that one step left gigabytes of
dirty pages behind it and the server's commits waited on their fsyncs (issue 18,
"Speed": write p99 169 ms during the backup against 6 ms).  Now one read transaction
is held over all the steps and the copy is flushed after each.  Here the steps are a
few pages each while another connection keeps committing: the backup must go through in
many steps without beginning again (without the held transaction, a probe of the same
shape restarted 19,819 times in 82,227 steps), and be one consistent snapshot.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
from fhirapi import observation, patient

from hutong.cli import priority
from hutong.fhir.assembly import open_repository
from hutong.fhir.service import FhirService
from hutong.security.guard import as_operator
from hutong.store import backup


def test_a_stepwise_backup_is_one_snapshot_while_writes_go_on(sqlite_url: str, tmp_path: Path) -> None:
    repo = open_repository(sqlite_url)
    writer_repo = open_repository(sqlite_url)
    try:
        svc = FhirService(as_operator(repo), "http://h/fhir")
        pid = orjson.loads(svc.create("Patient", orjson.dumps(patient()), {}).body or b"")["id"]
        for k in range(150):
            svc.create("Observation", orjson.dumps(observation(pid, value=4.0 + k / 100)), {})
        writes = FhirService(as_operator(writer_repo), "http://h/fhir")
        stop = threading.Event()
        written: list[int] = []

        def write() -> None:  # another connection commits all along
            k = 0
            while not stop.is_set():
                writes.create("Observation", orjson.dumps(observation(pid, value=9.0 + k / 1000)), {})
                k += 1
                written.append(k)

        t = threading.Thread(target=write)
        t.start()
        while len(written) < 5:
            stop.wait(0.01)
        db = Path(sqlite_url.removeprefix("sqlite:///"))
        with sqlite3.connect(db) as c:
            before = c.execute("SELECT count(*) FROM resource").fetchone()[0]
        steps, restarts = backup._sqlite_copy(db, tmp_path / "copy.db", step_bytes=4 * 4096)
        stop.set()
        t.join(30)
        with sqlite3.connect(db) as c:
            after = c.execute("SELECT count(*) FROM resource").fetchone()[0]
            source = {(r[0], r[1]): r[2] for r in c.execute("SELECT type, fhir_id, version FROM resource")}
        with sqlite3.connect(tmp_path / "copy.db") as c:
            assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            copied = {(r[0], r[1]): r[2] for r in c.execute("SELECT type, fhir_id, version FROM resource")}
            # Every index row of the copy belongs to a resource row of the copy: one snapshot, not pages of two.
            assert c.execute("SELECT count(*) FROM idx_token WHERE res_pk NOT IN (SELECT pk FROM resource)"
                             ).fetchone()[0] == 0
        assert steps > 5 and restarts == 0  # many steps, and none began the copy again
        assert len(written) > 5 and after > before  # the writes went on meanwhile
        assert before <= len(copied) <= after
        assert all(source.get(k) == v for k, v in copied.items())
    finally:
        repo.db.close()
        writer_repo.db.close()


def test_a_paced_backup_keeps_to_its_rate(tmp_path: Path) -> None:
    """``max_bytes_per_s`` (hutong backup --max-rate): the copy never runs ahead of the rate, and
    is the same database."""
    db = tmp_path / "src.db"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
        c.executemany("INSERT INTO t (v) VALUES (?)", [(bytes([k % 256]) * 3000,) for k in range(400)])
    size = db.stat().st_size  # about 1.3 MB
    t0 = time.monotonic()
    steps, _ = backup._sqlite_copy(db, tmp_path / "copy.db", step_bytes=64 * 1024, max_bytes_per_s=size / 1.0)
    took = time.monotonic() - t0
    assert steps > 10
    assert took >= 0.9  # about a second at that rate, unpaced a few milliseconds
    with sqlite3.connect(tmp_path / "copy.db") as c:
        assert c.execute("SELECT count(*), sum(length(v)) FROM t").fetchone() == (400, 1_200_000)


def test_a_backup_lowers_its_own_priority() -> None:
    """``hutong backup`` runs behind the server (hutong.cli.priority): the idle I/O class, nice +10.
    In a process of its own, since neither can be raised again by an unprivileged process."""
    code = ("import json, os; from hutong.cli import priority; "
            "before = (priority.io_class(), os.nice(0)); missed = priority.lower_priority(); "
            "print(json.dumps([before, missed, priority.io_class(), os.nice(0)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    (io_before, nice_before), missed, io_after, nice_after = json.loads(out)
    assert missed == []
    assert io_before != priority.IOPRIO_CLASS_IDLE and io_after == priority.IOPRIO_CLASS_IDLE
    assert nice_after == nice_before + priority.NICE
