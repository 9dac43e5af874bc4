"""``make bench`` / ``python -m bench.run``: Hutong's benchmark, one JSON document on stdout.

For each backend (SQLite, PostgreSQL): bulk-import a synthetic region of
>= --size resources (plus one patient with ~500 resources) into a fresh
database, measure the raw-insert limit of that same database with the same
bodies, then start ``hutong serve`` and measure create, transaction ingest,
read, search-by-identifier and $everything over HTTP.  Progress goes to
stderr; the JSON goes to stdout (and to --out).

    python -m bench.run                       # 1,000,000 resources, both backends
    python -m bench.run --quick               # ~50k resources, short phases: for iterating
    python -m bench.run --quick --backends sqlite --profile var/bench/prof   # py-spy per phase

This is a benchmark, not a test: it is not run in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from bench import bench_store
from bench.bench_http import TOKEN_MINUTES, Phases, bearer, fetch_token, register_client, server
from bench.cpuload import wait_for_quiet
from bench.data import CACHE, Dataset, prepare, stderr_log
from bench.databases import postgres_cluster, sqlite_database
from bench.profiling import own_pid, profiled, summarize, write_summary
from bench.report import emit

ROOT = Path(__file__).resolve().parents[1]

# The targets, on this 2-core machine, with >= 1,000,000 resources stored.
TARGETS: dict[str, tuple[str, str, float]] = {
    # key: (metric path, comparison, value)
    "bulk_import_resources_per_s": ("bulk_import.resources_per_s", ">=", 5000),
    "transaction_resources_per_s": ("http.transaction.resources_per_s", ">=", 1500),
    "create_req_per_s": ("http.create.req_per_s", ">=", 800),
    "read_req_per_s": ("http.read.req_per_s", ">=", 3000),
    "search_identifier_p99_ms": ("http.search_identifier.p99_ms", "<=", 20),
    "everything_p50_ms": ("http.everything.p50_ms", "<=", 50),
}


def _pg_version(url: str) -> str:
    from bench.bench_store import scalar

    return str(scalar(url, "SHOW server_version"))


def machine() -> dict[str, Any]:
    cpu = ""
    mem = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) // 1024
    # A run from an exported tree (git archive) names its commit in BENCH_COMMIT.
    commit = os.environ.get("BENCH_COMMIT", "")
    dirty = None
    with contextlib.suppress(Exception):
        commit = commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                          text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "hutong"], cwd=ROOT,
                                    capture_output=True, text=True, check=True).stdout.strip())
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_mb": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": None,  # filled in when the PostgreSQL backend runs
        "hutong_commit": commit,
        "hutong_uncommitted_changes": dirty,
    }


def _get(d: dict[str, Any], path: str) -> Any:
    for k in path.split("."):
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def evaluate(result: dict[str, Any]) -> dict[str, Any]:
    """Each target against the best server configuration measured."""
    out: dict[str, Any] = {}
    http_by = result.get("http", {})
    for key, (path, op, target) in TARGETS.items():
        candidates: list[tuple[Any, str | None]] = []
        if path.startswith("http."):
            for cfg, h in http_by.items():
                candidates.append((_get({"http": h}, path), cfg))
        else:
            candidates.append((_get(result, path), None))
        candidates = [(v, c) for v, c in candidates if isinstance(v, int | float)]
        if not candidates:
            out[key] = {"target": f"{op} {target:g}", "value": None, "met": False}
            continue
        value, cfg = (max if op == ">=" else min)(candidates, key=lambda vc: vc[0])
        met = value >= target if op == ">=" else value <= target
        entry: dict[str, Any] = {"target": f"{op} {target:g}", "value": value, "met": met}
        if cfg is not None:
            entry["server"] = cfg
        out[key] = entry
    return out


def _rate(h: dict[str, Any], phase: str) -> float | None:
    v = h.get(phase, {}).get("req_per_s") if isinstance(h.get(phase), dict) else None
    return float(v) if v else None


def http_ratios(h: dict[str, Any]) -> dict[str, Any]:
    """Same-run ratios of one server configuration (the machine is noisy: compare within a run).

    ``gate_cost_ms_per_request`` is 1000/gate_floor - 1000/http_floor req/s: at
    16 clients the CPUs are saturated, so the difference of the inverse
    throughputs is the CPU time (server + load generator) one authenticated,
    audited request costs beyond a public one.  ``gate_cost_p50_ms`` is the
    same difference in median latency.
    """
    out: dict[str, Any] = {}
    floor, read = _rate(h, "http_floor"), _rate(h, "read")
    if floor and read:
        out["read_vs_http_floor"] = round(read / floor, 3)
    g: dict[str, Any] = h["gate"] if isinstance(h.get("gate"), dict) else {}
    gfloor, refused, gate = (_rate(g, p) for p in ("http_floor", "gate_refused", "gate_floor"))
    if gfloor and gate:
        # from the interleaved phase: the three kinds met the same load
        out["gate_floor_vs_http_floor"] = round(gate / gfloor, 3)
        out["gate_cost_ms_per_request"] = round(1000 / gate - 1000 / gfloor, 3)
        p50 = (g["gate_floor"].get("p50_ms"), g["http_floor"].get("p50_ms"))
        if None not in p50:
            out["gate_cost_p50_ms"] = round(p50[0] - p50[1], 2)
    if gfloor and refused:
        out["gate_refused_vs_http_floor"] = round(refused / gfloor, 3)
        out["refusal_cost_ms_per_request"] = round(1000 / refused - 1000 / gfloor, 3)
    if gate and read:
        out["read_vs_gate_floor"] = round(read / gate, 3)
    sent = h.get("requests_sent", {})
    if "audit_rows_written" in h and sent:
        out["audit_rows_per_gated_request"] = round(h["audit_rows_written"] / max(1, sent.get("gated", 0)), 4)
    return out


def cross_run(doc: dict[str, Any], baseline_path: Path) -> dict[str, Any]:
    """Each HTTP phase and the bulk import against an earlier result file: context only.

    Different runs see different machine load (cpu.others_cores) and, unless
    the sizes match, different databases; same-run ratios (http_ratios) are
    the measurement, these are not.
    """
    base = orjson.loads(baseline_path.read_bytes())
    out: dict[str, Any] = {
        "baseline": str(baseline_path),
        "baseline_commit": base.get("machine", {}).get("hutong_commit"),
        "baseline_resources": base.get("size", {}).get("resources_imported"),
        "this_resources": doc.get("size", {}).get("resources_imported"),
        "note": "cross-run comparison (now / before): context only, the machine's other load differs between runs",
        "backends": {},
    }
    for b, r in doc.get("backends", {}).items():
        rb = base.get("backends", {}).get(b)
        if not rb:
            continue
        e: dict[str, Any] = {}
        bi, bb = r.get("bulk_import", {}).get("resources_per_s"), rb.get("bulk_import", {}).get("resources_per_s")
        if bi and bb:
            e["bulk_import_resources_per_s"] = {"before": bb, "now": bi, "now_vs_before": round(bi / bb, 3)}
        for cfg, h in r.get("http", {}).items():
            hb = rb.get("http", {}).get(cfg, {})
            for phase, m in h.items():
                mb = hb.get(phase)
                if not isinstance(m, dict) or not isinstance(mb, dict) or not m.get("req_per_s"):
                    continue
                row: dict[str, Any] = {"req_per_s": [mb.get("req_per_s"), m["req_per_s"]],
                                       "p50_ms": [mb.get("p50_ms"), m.get("p50_ms")],
                                       "p99_ms": [mb.get("p99_ms"), m.get("p99_ms")]}
                if mb.get("req_per_s"):
                    row["throughput_now_vs_before"] = round(m["req_per_s"] / mb["req_per_s"], 3)
                e.setdefault(cfg, {})[phase] = row
        out["backends"][b] = e
    return out


def run_backend(name: str, url: str, ds: Dataset, args: argparse.Namespace, raw_rows: list[Any]) -> dict[str, Any]:
    log = stderr_log
    res: dict[str, Any] = {}
    phases: dict[str, float] = {}
    prof = Path(args.profile) if args.profile else None
    pg_port = urlsplit(url).port if name == "postgres" else None

    if args.quiet_wait > 0:
        q = wait_for_quiet(args.quiet_wait, pg_port=pg_port)
        log(f"[{name}] machine quiet: {q}")
    log(f"[{name}] bulk import of {ds.resources:,} resources")
    t0 = time.perf_counter()
    out = prof / f"{name}-bulk_import.txt" if prof else None
    with profiled(own_pid(), out, rate=47):
        res["bulk_import"] = bench_store.bulk_import(url, ds, workers=args.import_workers, pg_port=pg_port)
    if out is not None:
        s = summarize(out)
        write_summary(out.with_suffix(".summary.txt"), s)
        res["bulk_import"]["profile"] = s
    phases["bulk_import"] = round(time.perf_counter() - t0, 1)
    log(f"[{name}] bulk import: {res['bulk_import']['resources_per_s']:,.0f} resources/s "
        f"in {res['bulk_import']['seconds']:.0f}s")

    t0 = time.perf_counter()
    res["database_bytes_after_import"] = bench_store.database_size(url)
    res["rows_after_import"] = bench_store.table_rows(url)
    phases["count_rows"] = round(time.perf_counter() - t0, 1)

    log(f"[{name}] raw-insert limit with {len(raw_rows):,} of the same bodies")
    t0 = time.perf_counter()
    res["raw_insert_limit"] = bench_store.raw_inserts(url, raw_rows, pg_port=pg_port)
    phases["raw_insert_limit"] = round(time.perf_counter() - t0, 1)
    res["import_vs_raw"] = round(res["bulk_import"]["resources_per_s"] / res["raw_insert_limit"]["resources_per_s"], 3)
    log(f"[{name}] raw: {res['raw_insert_limit']['resources_per_s']:,.0f} resources/s; "
        f"import/raw = {res['import_vs_raw']}")

    # Issue 6: the HTTP phases need a bearer token, got the production way.
    t0 = time.perf_counter()
    client = register_client(url)
    phases["register_client"] = round(time.perf_counter() - t0, 1)
    res["auth"] = {"client": "hutong accounts add-client bench --platform (system/*.cruds)",
                   "grant": "client_credentials at POST /auth/token, HTTP Basic",
                   "server_env": {"HUTONG_ACCESS_TOKEN_MINUTES": TOKEN_MINUTES}}
    res["http"] = {}
    logs = CACHE / "logs"
    for w in args.server_workers:
        cfg = f"workers_{w}"
        log(f"[{name}] HTTP phases, hutong serve --workers {w}")
        t0 = time.perf_counter()
        for attempt in range(2):  # a server that died mid-run (it should not) is retried once, and reported
            audit_before = bench_store.table_rows(url).get("audit_event", 0)
            with server(url, w, logs / f"serve-{name}-{cfg}.log") as (port, proc):
                token = fetch_token(port, client)
                ph = Phases(ds, port, proc, seconds=args.phase_seconds, warmup=args.warmup, profile_dir=prof,
                            tag=f"{name}-{cfg}", headers=bearer(token), pg_port=pg_port,
                            quiet_wait=args.quiet_wait)
                h = ph.all()
            # One audit row per request but the public /healthz (and the token request itself).
            h["audit_rows_written"] = bench_store.table_rows(url).get("audit_event", 0) - audit_before
            if "server_died" not in h:
                break
            res.setdefault("server_deaths", []).append({"server": cfg, "attempt": attempt, **h["server_died"]})
        res["http"][cfg] = h
        phases[f"http_{cfg}"] = round(time.perf_counter() - t0, 1)
    res["http_ratios"] = {cfg: http_ratios(h) for cfg, h in res["http"].items()}
    res["rows_after_run"] = bench_store.table_rows(url)
    res["targets"] = evaluate(res)
    res["phase_seconds"] = phases
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=None, help="resources stored before the HTTP phases "
                   "(default 1,000,000; 50,000 with --quick)")
    p.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite,postgres")
    p.add_argument("--out", help="also write the JSON to this file")
    p.add_argument("--quick", action="store_true", help="small smoke run (~50k resources, 3 s phases)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--server-workers", default=None,
                   help="comma-separated hutong serve --workers values to measure (default 1,2)")
    p.add_argument("--phase-seconds", type=float, default=None, help="seconds per HTTP phase (default 10; 3 quick)")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds before each phase (default 2; 1 quick)")
    p.add_argument("--raw-rows", type=int, default=200_000, help="bodies in the raw-insert baseline")
    p.add_argument("--import-workers", type=int, default=2, help="import_ndjson worker processes")
    p.add_argument("--profile", metavar="DIR", help="py-spy profiles of the import and each HTTP phase into DIR")
    p.add_argument("--quiet-wait", type=float, default=None, metavar="S",
                   help="before each phase wait up to S seconds for other processes to leave the CPUs "
                        "(default 60; 0 quick)")
    p.add_argument("--keep", action="store_true", help="keep the SQLite database file afterwards")
    p.add_argument("--baseline", type=Path, metavar="FILE",
                   help="an earlier result (bench/results/*.json): add a cross_run section, now vs. then "
                        "(context only; same-run ratios are in backends.<db>.http_ratios)")
    args = p.parse_args(argv)
    if args.size is None:
        args.size = 50_000 if args.quick else 1_000_000
    if args.phase_seconds is None:
        args.phase_seconds = 3.0 if args.quick else 10.0
    if args.warmup is None:
        args.warmup = 1.0 if args.quick else 2.0
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.quick else 60.0
    args.server_workers = [int(x) for x in (args.server_workers or "1,2").split(",") if x.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in ("sqlite", "postgres"):
            p.error(f"unknown backend {b!r}")
    os.chdir(ROOT)  # var/bench is relative to the repository

    started = time.time()
    t_all = time.perf_counter()
    doc: dict[str, Any] = {
        "benchmark": "hutong",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "command": "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
    }
    t0 = time.perf_counter()
    ds = prepare(args.size, args.seed)
    data_secs = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    raw_rows = bench_store.raw_lines(ds, min(args.raw_rows, ds.resources))
    raw_prep = round(time.perf_counter() - t0, 1)
    doc["size"] = {
        "asked": args.size,
        "resources_imported": ds.resources,
        "data_source": ds.source,
        "generator": ds.generator,
        "ndjson_bytes": ds.bytes,
        "by_type": dict(sorted(ds.by_type.items(), key=lambda kv: -kv[1])),
        "heavy_patient": {"id": ds.heavy_patient, "compartment_resources": ds.heavy_resources},
    }
    doc["backends"] = {}
    doc["phase_seconds"] = {"data": data_secs, "raw_rows_prep": raw_prep}
    for b in backends:
        t0 = time.perf_counter()
        if b == "sqlite":
            with sqlite_database(f"sqlite-{args.size}.db", keep=args.keep) as url:
                r = run_backend(b, url, ds, args, raw_rows)
            r["database"] = "SQLite file, WAL, synchronous=NORMAL (Hutong's settings)"
        else:
            with postgres_cluster() as url:
                doc["machine"]["postgresql"] = _pg_version(url)
                r = run_backend(b, url, ds, args, raw_rows)
            r["database"] = ("throw-away PostgreSQL cluster (tests/pgcluster.py, durable: fsync on, "
                             "synchronous_commit on, shared_buffers=1GB)")
        doc["backends"][b] = r
        doc["phase_seconds"][b] = round(time.perf_counter() - t0, 1)
    doc["targets"] = {k: f"{op} {v:g}" for k, (_p, op, v) in TARGETS.items()}
    doc["targets_met"] = {b: {k: v["met"] for k, v in r["targets"].items()} for b, r in doc["backends"].items()}
    doc["notes"] = [
        f"The machine has {os.cpu_count()} cores shared by the server, the database and the load generator "
        "(one asyncio process, closed loop, keep-alive connections over loopback): HTTP figures are lower "
        "bounds of what the server does with the CPUs to itself. http_floor (GET /healthz, no database) "
        "is the ceiling of server + load generator here.",
        "Each target is judged on the best server configuration measured (http.<config>); both "
        "configurations are reported. 'workers_N' is hutong serve --workers N.",
        "bulk_import is hutong.ingest.bulk.import_ndjson (validation in worker processes, index rows, "
        "batches of 1000) into a fresh database, timed over the whole import including the final ANALYZE.",
        "raw_insert_limit is the same database with the same body bytes and no FHIR logic; "
        "import_vs_raw = bulk_import / raw_insert_limit resources per second.",
        "HTTP phases run after the import, so they see >= the imported resource count; create and "
        "transaction phases add resources as they run (rows_after_run). Each phase is preceded by an "
        "unrecorded warm-up; latencies are per request, client side.",
        "search_identifier and everything use one client (sequential latency); read, create, http_floor and "
        "gate use 16 clients, transaction 4 clients.",
        "Security (issue 6): every request but GET /healthz carries the bearer token of a platform client "
        "registered with hutong accounts add-client --platform and signed in with client credentials; each "
        "such request is authorised and audited (one hash-chained audit_event row). http_ratios compares, in "
        "the same run and interleaved in 0.5 s slices (http.<config>.gate), http_floor (public, no gate, no "
        "audit) with gate_refused (401 + audit row) and gate_floor (token, Access, one primary-key read of an "
        "Organization, audit row); gate_cost_ms_per_request = 1000/gate_floor - 1000/http_floor req/s. "
        "Resource bodies are "
        "AES-256-GCM encrypted and identifiers blind-indexed (hutong.fhir.assembly.open_repository).",
        "cpu.ours_cores / cpu.others_cores: average cores used during a phase by the benchmark's processes "
        "(load generator, server, import workers, its PostgreSQL cluster) and by everything else on the "
        "machine; a phase measured while others_cores was high understates Hutong. Before each phase the "
        "run waits up to --quiet-wait seconds for others to use < 0.3 cores (cpu.before).",
    ]
    if ds.source != "hutong.synth":
        doc["notes"].append("hutong.synth was not available: the data set is the Synthea sample export "
                            "replicated with fresh ids (see size.generator).")
    if ds.resources < args.size:
        doc["notes"].append(f"Only {ds.resources:,} resources were generated for --size {args.size:,}.")
    if args.baseline is not None:
        doc["cross_run"] = cross_run(doc, args.baseline)
    doc["phase_seconds"]["total"] = round(time.perf_counter() - t_all, 1)
    emit(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
