"""Store-level benchmarks: bulk import through Hutong, and the raw-insert limit.

``bulk_import`` is the product path (hutong.ingest.bulk.import_ndjson: parse,
validate in worker processes, index, write in batches of 1000).  ``raw_inserts``
is what the same database does with the same bytes and no FHIR logic: the
resource bodies, as stored (b"J" + JSON), inserted with executemany in
batches of 1000, one transaction per batch, into a plain table
``raw_bench(pk, type, id, body)`` with no index but its primary key.  The
ratio of the two is how much of the database's write capacity Hutong uses.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson

from bench.cpuload import CpuMeter
from bench.data import Dataset, Log, stderr_log
from hutong.fhir.assembly import open_repository
from hutong.ingest.bulk import import_ndjson, ndjson_files
from hutong.security.guard import as_operator
from hutong.store.codec import PLAIN
from hutong.store.database import Database, open_database

RAW_BATCH = 1000


def bulk_import(url: str, ds: Dataset, *, workers: int = 2, pg_port: int | None = None,
                log: Log = stderr_log) -> dict[str, Any]:
    repo = open_repository(url)
    done = [0, time.perf_counter()]
    step = max(50_000, ds.resources // 20)
    timeline: list[tuple[int, float]] = []  # (resources written, seconds since start)
    peak = [_rss_mb()]

    def progress(n: int) -> None:
        before = done[0]
        done[0] += n
        peak[0] = max(peak[0], _rss_mb())
        if before // step != done[0] // step:
            el = time.perf_counter() - done[1]
            timeline.append((int(done[0]), round(el, 1)))
            log(f"  imported {done[0]:,}/{ds.resources:,} ({done[0] / el:,.0f}/s, rss {peak[0]:,.0f} MB)")

    try:
        with CpuMeter(pg_port) as cpu:
            r = import_ndjson(as_operator(repo), ds.dir, workers=workers, progress=progress)
    finally:
        repo.db.close()
    out = {
        "resources": r.loaded,
        "seconds": round(r.seconds, 1),
        "resources_per_s": round(r.loaded / r.seconds, 1),
        "mb_per_s": round(ds.bytes / 1e6 / r.seconds, 2),
        "workers": workers,
        "errors": len(r.errors),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "cpu": cpu.result,
        "peak_rss_mb_importing_process": round(peak[0]),
        "timeline": timeline,
    }
    if r.errors:
        out["first_errors"] = r.errors[:5]
    return out


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        return 0.0


def raw_lines(ds: Dataset, limit: int) -> list[tuple[str, str, bytes]]:
    """``limit`` lines taken from every file in proportion, so the type mix is the import's."""
    files = ndjson_files(ds.dir)
    counts = {}
    for f in files:
        with f.open("rb") as fh:
            counts[f] = sum(1 for line in fh if line.strip())
    total = sum(counts.values())
    out: list[tuple[str, str, bytes]] = []
    for f in files:
        want = -(-counts[f] * limit // total) if total > limit else counts[f]
        with f.open("rb") as fh:
            for line in fh:
                if want <= 0:
                    break
                line = line.rstrip(b"\n")
                if not line.strip():
                    continue
                r = orjson.loads(line)
                out.append((r["resourceType"], r.get("id") or "", line))
                want -= 1
    return out[:limit] if total > limit else out


def raw_inserts(url: str, rows: list[tuple[str, str, bytes]], pg_port: int | None = None) -> dict[str, Any]:
    db = open_database(url)
    try:
        with CpuMeter(pg_port) as cpu:
            out = _raw(db, rows)
        out["cpu"] = cpu.result
        return out
    finally:
        db.close()


def _raw(db: Database, rows: list[tuple[str, str, bytes]]) -> dict[str, Any]:
    blob = "BLOB" if db.dialect == "sqlite" else "BYTEA"
    pk = "INTEGER" if db.dialect == "sqlite" else "BIGINT"
    with db.connection() as conn:
        cur = conn.cursor()
        cur.execute("DROP TABLE IF EXISTS raw_bench")
        cur.execute(f"CREATE TABLE raw_bench (pk {pk} PRIMARY KEY, type VARCHAR(64), id VARCHAR(64), body {blob})")
        sql = db.sql("INSERT INTO raw_bench (pk, type, id, body) VALUES (?, ?, ?, ?)")
        data = [(n, t, i, PLAIN + b) for n, (t, i, b) in enumerate(rows, 1)]
        nbytes = sum(len(d[3]) for d in data)
        t0 = time.perf_counter()
        for k in range(0, len(data), RAW_BATCH):
            cur.execute(db.begin_sql())
            cur.executemany(sql, data[k : k + RAW_BATCH])
            cur.execute("COMMIT")
        secs = time.perf_counter() - t0
        cur.execute("DROP TABLE raw_bench")
    return {
        "resources": len(data),
        "seconds": round(secs, 2),
        "resources_per_s": round(len(data) / secs, 1),
        "mb_per_s": round(nbytes / 1e6 / secs, 2),
        "batch": RAW_BATCH,
        "what": "executemany of (pk, type, id, b'J'+json) into raw_bench (primary key only), "
                "one transaction per batch, same connection settings as Hutong",
    }


def scalar(url: str, sql: str) -> object:
    """One value from one query on the database at ``url`` (opened and closed here)."""
    db = open_database(url, create=False)
    try:
        with db.connection() as conn:
            cur = conn.cursor()
            cur.execute(sql)
            return cur.fetchone()[0]
    finally:
        db.close()


def database_size(url: str) -> int | None:
    if url.startswith("sqlite:///"):
        p = Path(url[len("sqlite:///"):])
        return sum(q.stat().st_size for q in (p, Path(f"{p}-wal")) if q.exists())
    return int(str(scalar(url, "SELECT pg_database_size(current_database())")))


def table_rows(url: str) -> dict[str, int]:
    db = open_database(url, create=False)
    try:
        with db.connection() as conn:
            cur = conn.cursor()
            out = {}
            for t in ("resource", "compartment", "idx_token", "idx_reference", "idx_string", "idx_date"):
                cur.execute(f"SELECT COUNT(*) FROM {t}")  # noqa: S608 - fixed table names
                out[t] = int(cur.fetchone()[0])
            # The audit log (issue 6) exists once a server or a CLI command has written to it.
            cur.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'audit_event'"
                        if db.dialect == "sqlite" else "SELECT to_regclass('audit_event')::text")
            row = cur.fetchone()
            if row is not None and row[0]:
                cur.execute("SELECT COUNT(*) FROM audit_event")
                out["audit_event"] = int(cur.fetchone()[0])
            return out
    finally:
        db.close()
