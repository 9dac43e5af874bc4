"""Two app nodes against one PostgreSQL, against one node (issue 18, "Speed").

The issue's figure: "With two app nodes on this machine's two cores against one
PostgreSQL, throughput of authenticated reads and of creates is >= 1.6x one node's
on the same database in the same run (if the load generator itself limits it,
measure with the load generator on a separate core budget and say so)."

One run:

1. a throw-away durable PostgreSQL cluster (bench.databases.postgres_cluster), the
   bulk import of the cached synthetic region of ``--size`` resources and a CHECKPOINT
   (the import's dirty buffers written out before anything is measured);
2. ``hutong serve`` twice, each a node of its own (one uvicorn worker, its own port,
   its own HUTONG_NODE_ID when this release has that setting), on the same database
   and key directory; the platform client's token (client credentials);
3. measured, interleaved in slices of ``--slice`` seconds in rotating order so that
   the machine's other load falls on every configuration alike:
   ``one_node``: all clients on node A (node B idle), ``two_nodes``: half the clients on
   A, half on B.  The clients are two load-generator processes (bench.loadgen, asyncio)
   in both configurations, so the load generator's own CPU is the same on both sides.
   Kinds: ``read`` (GET /fhir/{type}/{id} of random stored resources) and ``create``
   (POST /fhir/Observation).  Each at every client count of ``--clients`` (16 and 32 by
   default): one node and two nodes reach their most at different concurrencies, so a
   configuration's throughput is the best of its counts (all are reported).
4. the CPU used during the measurement (bench.cpuload): by this benchmark's processes
   together (the nodes, PostgreSQL and the load generator: on a 2-core machine they all
   share the cores, and the ratio is bounded by it) and by other work on the machine.

    python -m bench.bench_nodes                    # 1M resources
    python -m bench.bench_nodes --size 50000 --seconds 20 --out var/bench/nodes-50k.json

A benchmark, not a test: not run in CI.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from bench import bench_store
from bench.bench_http import bearer, fetch_token, observation, register_client, server
from bench.cpuload import CpuMeter, GroupMeter, wait_for_quiet
from bench.data import CACHE, prepare, stderr_log
from bench.databases import kept_postgres_cluster, postgres_cluster
from bench.loadgen import Headers, LoadResult, run_load
from bench.report import emit

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
TARGET = 1.6
KINDS = ("read", "create")


def log(msg: str) -> None:
    stderr_log(msg)


def _node_env(name: str) -> dict[str, str]:
    """HUTONG_NODE_ID for this node when the release knows the setting (one audit chain per node)."""
    from hutong.config import REGISTERED

    return {"HUTONG_NODE_ID": name} if "HUTONG_NODE_ID" in REGISTERED else {}


def _checkpoint(url: str) -> None:
    """CHECKPOINT now (PostgreSQL docs, sql-checkpoint): write out what the import left dirty."""
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def _requests(kind: str, paths: list[str], bodies: list[bytes], offset: int) -> Any:
    if kind == "read":
        return lambda n: ("GET", paths[(offset + n) % len(paths)], None)
    return lambda n: ("POST", "/fhir/Observation", bodies[(offset + n) % len(bodies)])


def _load(args: tuple[int, str, list[str], list[bytes], int, int, float, Headers]) -> dict[str, Any]:
    """One load-generator process's share of a slice (run in a worker process)."""
    port, kind, paths, bodies, offset, clients, seconds, headers = args
    r = run_load(HOST, port, _requests(kind, paths, bodies, offset), concurrency=clients, seconds=seconds,
                 expect=(201,) if kind == "create" else (200,), headers=headers)
    return {"requests": r.requests, "latencies": r.latencies, "errors": r.errors[:3], "seconds": r.seconds,
            "statuses": dict(r.statuses)}


def _merge(parts: list[dict[str, Any]], into: LoadResult) -> None:
    # Both processes ran for the same wall-clock slice: their requests add up over it.
    one = LoadResult(concurrency=into.concurrency)
    one.seconds = max(p["seconds"] for p in parts)
    for p in parts:
        one.requests += p["requests"]
        one.latencies += p["latencies"]
        one.errors += p["errors"][: max(0, 3 - len(one.errors))]
        for k, v in p["statuses"].items():
            one.statuses[int(k)] += v
    into.add(one)


def measure(ports: tuple[int, int], headers: Headers, ds: Any, args: argparse.Namespace,
            pg_port: int | None, pids: dict[str, int] | None = None) -> dict[str, Any]:
    rng = random.Random(args.seed)
    sample = list(ds.read_sample)
    rng.shuffle(sample)
    paths = [f"/fhir/{t}/{i}" for t, i in sample]
    pats = ds.patient_sample or [ds.heavy_patient]
    bodies = [orjson.dumps(observation(f"Patient/{pats[k % len(pats)]}", k)) for k in range(4000)]
    levels = [max(1, n // 2) for n in args.clients]  # clients per load-generator process, at each level
    configs = {"one_node": (ports[0], ports[0]), "two_nodes": (ports[0], ports[1])}
    keys = [(c, k, h) for h in levels for k in KINDS for c in configs]
    acc = {key: LoadResult(concurrency=2 * key[2]) for key in keys}
    # CPU seconds of each process group in each configuration, kind and level (bench.cpuload.GroupMeter)
    spent: dict[tuple[str, str, int], dict[str, float]] = {key: {} for key in keys}
    order = list(keys)
    with ProcessPoolExecutor(2) as pool:
        log("  warm-up")
        for c, k, h in order:
            a, b = configs[c]
            list(pool.map(_load, [(a, k, paths, bodies, 0, h, 2.0, headers),
                                  (b, k, paths, bodies, 1000, h, 2.0, headers)]))
        quiet = wait_for_quiet(args.quiet_wait, pg_port=pg_port) if args.quiet_wait > 0 else None
        rounds = max(1, int(args.seconds // args.slice))
        with CpuMeter(pg_port) as cpu:
            for r in range(rounds):
                for c, k, h in order:
                    a, b = configs[c]
                    with GroupMeter(pids or {}, pg_port) as g:
                        parts = list(pool.map(_load, [(a, k, paths, bodies, r * 7919, h, args.slice, headers),
                                                      (b, k, paths, bodies, r * 7919 + 3001, h, args.slice,
                                                       headers)]))
                    for name, sec in g.seconds.items():
                        spent[(c, k, h)][name] = spent[(c, k, h)].get(name, 0.0) + sec
                    _merge(parts, acc[(c, k, h)])
                order = order[1:] + order[:1]
    out: dict[str, Any] = {"rounds": rounds, "slice_seconds": args.slice, "clients": [2 * h for h in levels],
                           "load_generator_processes": 2, "cpu": {**cpu.result, **({"before": quiet} if quiet else {})}}
    for (c, k, h), res in acc.items():
        sm = res.summary()
        if res.requests:
            # CPU per request of each group, and the cores each used while this configuration ran
            sm["cpu_ms_per_request"] = {n: round(1000 * v / res.requests, 3) for n, v in spent[(c, k, h)].items()}
            sm["cores"] = {n: round(v / res.seconds, 2) for n, v in spent[(c, k, h)].items()}
        out.setdefault(k, {}).setdefault(c, {}).setdefault("by_clients", {})[str(2 * h)] = sm
        log(f"  {k} {c} {2 * h} clients: {sm['req_per_s']:,.0f} req/s, p50 {sm.get('p50_ms')} ms, "
            f"p99 {sm.get('p99_ms')} ms, cpu ms/request {sm.get('cpu_ms_per_request')}"
            + (f", {len(res.errors)} errors: {res.errors[0][:200]}" if res.errors else ""))
    for k in KINDS:
        for c in configs:
            # A configuration's throughput is the most it served at any of the client counts measured
            # (its capacity): one node and two nodes saturate at different concurrencies.
            by = out[k][c]["by_clients"]
            best = max(by, key=lambda n: by[n].get("req_per_s") or 0.0)
            out[k][c] = {**by[best], "clients": int(best), "by_clients": by}
        one, two = out[k]["one_node"].get("req_per_s"), out[k]["two_nodes"].get("req_per_s")
        out[k]["two_over_one"] = round(two / one, 3) if one else None
        out[k]["two_over_one_by_clients"] = {
            n: round(out[k]["two_nodes"]["by_clients"][n]["req_per_s"] / v["req_per_s"], 3)
            for n, v in out[k]["one_node"]["by_clients"].items() if v.get("req_per_s")}
    log(f"  cpu {out['cpu']}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_nodes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1_000_000, help="resources in the imported region (default 1M)")
    p.add_argument("--seconds", type=float, default=60.0, help="measured seconds of each configuration and kind")
    p.add_argument("--slice", type=float, default=5.0, help="seconds of one configuration before the next")
    p.add_argument("--clients", type=lambda v: [int(x) for x in v.split(",")], default=[16, 32],
                   help="clients in all (half per load-generator process); a comma-separated list measures each "
                        "count, interleaved, and a configuration's throughput is its best (default 16,32)")
    p.add_argument("--quiet-wait", type=float, default=60.0, metavar="S",
                   help="before measuring wait up to S seconds for other processes to leave the CPUs")
    p.add_argument("--import-workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", metavar="DIR",
                   help="keep the PostgreSQL cluster (loaded, with its keys) in DIR, and when DIR holds one loaded "
                        "by an earlier run, measure on it without importing again (the import takes ~10 minutes "
                        "at 1M; the creates of earlier runs stay in it)")
    p.add_argument("--out", help="also write the JSON to this file")
    args = p.parse_args(argv)
    os.chdir(ROOT)
    from bench.run import _pg_version, machine

    t_all = time.perf_counter()
    ds = prepare(args.size, args.seed)
    doc: dict[str, Any] = {
        "benchmark": "hutong: two app nodes against one PostgreSQL (issue 18, Speed)",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m bench.bench_nodes " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "size": {"asked": args.size, "region_resources_imported": ds.resources, "data_source": ds.source},
        "target": f"two nodes >= {TARGET}x one node's req/s, reads and creates, same database, same run",
    }
    with ExitStack() as stack:
        marker = Path(args.keep) / "loaded.json" if args.keep else None
        if args.keep:
            url, _existed = stack.enter_context(kept_postgres_cluster(Path(args.keep)))
        else:
            url = stack.enter_context(postgres_cluster())
        doc["machine"]["postgresql"] = _pg_version(url)
        pg_port = urlsplit(url).port
        if marker is not None and marker.exists():
            doc["bulk_import"] = {**orjson.loads(marker.read_bytes()), "note": f"loaded by an earlier run, kept in "
                                                                               f"{args.keep}"}
            log(f"measuring on the cluster kept in {args.keep}")
        else:
            log(f"bulk import of {ds.resources:,} resources")
            doc["bulk_import"] = bench_store.bulk_import(url, ds, workers=args.import_workers, pg_port=pg_port)
            if marker is not None:
                marker.write_bytes(orjson.dumps(doc["bulk_import"]))
        doc["resources_stored"] = bench_store.table_rows(url).get("resource", 0)
        # The import leaves gigabytes of dirty buffers and WAL for the next checkpoint; measured
        # during it, every commit waits behind that I/O whatever the number of nodes.
        t0 = time.perf_counter()
        _checkpoint(url)
        doc["checkpoint_after_import_s"] = round(time.perf_counter() - t0, 1)
        client = register_client(url)
        ports = []
        pids: dict[str, int] = {}
        for name in ("a", "b"):
            port, proc = stack.enter_context(server(url, 1, CACHE / "logs" / f"serve-node-{name}.log",
                                                    env=_node_env(name)))
            ports.append(port)
            pids[f"node_{name}"] = proc.pid
        headers = bearer(fetch_token(ports[0], client))
        doc["nodes"] = {"count": 2, "workers_each": 1, "node_ids": "HUTONG_NODE_ID a, b" if _node_env("a")
                        else "this release has no HUTONG_NODE_ID: one audit chain shared by both nodes"}
        doc["measured"] = measure((ports[0], ports[1]), headers, ds, args, pg_port, pids)
    m = doc["measured"]
    doc["targets"] = {k: {"target": f">= {TARGET}", "value": m[k]["two_over_one"],
                          "met": bool(m[k]["two_over_one"] and m[k]["two_over_one"] >= TARGET)} for k in KINDS}
    doc["notes"] = [
        f"The machine has {os.cpu_count()} cores shared by both nodes, PostgreSQL and the load generator (two "
        "processes in both configurations); cpu.ours_cores is what all of them used together, cpu.others_cores other "
        "work on the machine. One node is one uvicorn worker: it "
        "can use at most one core, and what is left of the other is what a second node can add.",
        "Configurations, kinds and client counts are interleaved in slices in rotating order after an unrecorded "
        "warm-up. A configuration's req/s is the best of its client counts (its capacity; each count's figures are "
        "under by_clients, and two_over_one_by_clients compares them count by count).",
    ]
    doc["seconds"] = round(time.perf_counter() - t_all, 1)
    emit(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
