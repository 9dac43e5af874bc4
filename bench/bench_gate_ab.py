"""What security (issue 6) costs per HTTP request: an earlier commit's server against this one, in one run.

The machine is shared, so figures from two runs hours apart compare the
other work on the machine as much as the code.  Here both servers run at
once (``hutong serve --workers 1``, each on a fresh SQLite file): the
earlier commit's from an export of it (``git archive``), this tree's with its
own key files, a platform client registered with ``hutong accounts
add-client --platform`` and a token from ``POST /auth/token`` (client
credentials).  One Organization is created in each.  Then, in slices of
0.5 s in rotating order, 16 clients send to one server at a time:

- ``healthz``: GET /healthz (public on both: the floor of server + load generator);
- ``read``: GET /fhir/Organization/<id> (this tree: bearer token, policy,
  decryption and one audit row per request; before: none of them).

``after_vs_before`` is the throughput ratio; ``cost_ms_per_request`` =
1000/after - 1000/before req/s, the extra CPU time per request (server and
load generator; the CPUs are saturated at 16 clients).

    python -m bench.bench_gate_ab --before 7f8fcb6 --seconds 20 --out var/bench/ab.json

A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.bench_http import HOST, _stop, bearer, fetch_token, free_port, register_client
from bench.cpuload import CpuMeter
from bench.data import CACHE, stderr_log
from bench.databases import sqlite_database
from bench.loadgen import Headers, LoadResult, run_load
from bench.report import emit

ROOT = Path(__file__).resolve().parents[1]
SLICE_S = 0.5
ORGANIZATION = {"resourceType": "Organization", "name": "北京市基准测试医院",
                "identifier": [{"system": "urn:oid:2.16.156.10011.1.5", "value": "12110000400000000X"}]}
log = stderr_log


def export(rev: str) -> Path:
    """The tree of ``rev`` under the cache (``git archive``), made once (a run from an export has no git)."""
    cached = (CACHE / f"tree-{rev}").resolve()
    if (cached / "hutong" / "cli.py").exists():
        return cached
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    d = (CACHE / f"tree-{sha}").resolve()
    if not (d / "hutong" / "cli.py").exists():
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", sha], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(d)], input=archive, check=True)
    return d


@contextmanager
def serve(tree: Path, url: str, log_file: Path, env: dict[str, str]) -> Iterator[int]:
    """``hutong serve`` of the code in ``tree`` (it comes first on sys.path: cwd and PYTHONPATH)."""
    port = free_port()
    cmd = [sys.executable, "-m", "hutong.cli", "serve", "--host", HOST, "--port", str(port), "--database", url,
           "--workers", "1"]
    full_env = {**os.environ, **env, "PYTHONPATH": str(tree)}
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as lf:
        proc = subprocess.Popen(cmd, cwd=tree, env=full_env, stdout=lf, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"hutong serve ({tree}) exited with {proc.returncode}; see {log_file}")
            try:
                if httpx.get(f"http://{HOST}:{port}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"hutong serve ({tree}) did not answer within 120 s; see {log_file}")
            time.sleep(0.2)
        yield port
    finally:
        _stop(proc)


def create_organization(port: int, headers: Headers | None) -> str:
    r = httpx.post(f"http://{HOST}:{port}/fhir/Organization", content=orjson.dumps(ORGANIZATION),
                   headers={"content-type": "application/fhir+json", **(headers or {})}, timeout=60)
    if r.status_code != 201:
        raise RuntimeError(f"POST /fhir/Organization: HTTP {r.status_code}: {r.text[:300]}")
    return str(r.json()["id"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_gate_ab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", default="7f8fcb6", help="the commit to compare with (default 7f8fcb6, the last "
                                                       "foundation run before security)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per kind and server (default 20)")
    p.add_argument("--out", help="also write the JSON to this file")
    args = p.parse_args(argv)
    os.chdir(ROOT)
    from bench.run import machine

    before_tree = export(args.before)
    rounds = max(2, round(args.seconds / SLICE_S))
    doc: dict[str, Any] = {"benchmark": "security cost per request, A/B in one run",
                           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "command": "python -m bench.bench_gate_ab " + " ".join(argv or sys.argv[1:]),
                           "machine": machine(), "before": args.before, "rounds": rounds, "slice_s": SLICE_S,
                           "clients": 16}
    logs = CACHE / "logs"
    with ExitStack() as stack:
        url_b = stack.enter_context(sqlite_database("ab-before.db"))
        url_a = stack.enter_context(sqlite_database("ab-after.db"))
        client = register_client(url_a)
        # A commit from after issue 6 has the gate too: it gets a platform client of its own,
        # registered with its own code, and both sides are measured with a token.
        gated_before = (before_tree / "hutong" / "security" / "accounts.py").exists()
        client_b = register_client(url_b, tree=before_tree) if gated_before else None
        token_env = {"HUTONG_ACCESS_TOKEN_MINUTES": "240"}
        port_b = stack.enter_context(serve(before_tree, url_b, logs / "ab-before.log",
                                           token_env if gated_before else {}))
        port_a = stack.enter_context(serve(ROOT, url_a, logs / "ab-after.log", token_env))
        auth = bearer(fetch_token(port_a, client))
        auth_b = bearer(fetch_token(port_b, client_b)) if client_b else None
        anonymous = httpx.get(f"http://{HOST}:{port_a}/fhir/Organization", timeout=30).status_code
        if anonymous != 401:
            raise RuntimeError(f"this tree's server answered {anonymous} without a token: is the gate on?")
        org_b, org_a = create_organization(port_b, auth_b), create_organization(port_a, auth)
        kinds: dict[str, tuple[int, str, Headers | None]] = {
            "before.healthz": (port_b, "/healthz", None),
            "after.healthz": (port_a, "/healthz", None),
            "before.read": (port_b, f"/fhir/Organization/{org_b}", auth_b),
            "after.read": (port_a, f"/fhir/Organization/{org_a}", auth),
        }
        acc = {k: LoadResult(concurrency=16) for k in kinds}

        def slice_of(k: str, secs: float) -> LoadResult:
            port, path, headers = kinds[k]
            return run_load(HOST, port, lambda n: ("GET", path, None), concurrency=16, seconds=secs,
                            expect=(200,), headers=headers)

        for k in kinds:
            slice_of(k, 1.0)  # warm-up
        order = list(kinds)
        log(f"A/B: {args.before} against this tree, {rounds} rounds of {len(kinds)} x {SLICE_S} s")
        with CpuMeter() as cpu:
            for _ in range(rounds):
                for k in order:
                    acc[k].add(slice_of(k, SLICE_S))
                order = order[1:] + order[:1]
    doc["cpu"] = cpu.result
    doc["phases"] = {k: a.summary() for k, a in acc.items()}
    ratios: dict[str, Any] = {}
    for what in ("healthz", "read"):
        b, a = doc["phases"][f"before.{what}"], doc["phases"][f"after.{what}"]
        if b["req_per_s"] and a["req_per_s"]:
            ratios[what] = {"after_vs_before": round(a["req_per_s"] / b["req_per_s"], 3),
                            "cost_ms_per_request": round(1000 / a["req_per_s"] - 1000 / b["req_per_s"], 3),
                            "p50_ms": [b.get("p50_ms"), a.get("p50_ms")], "p99_ms": [b.get("p99_ms"),
                                                                                    a.get("p99_ms")]}
    doc["ratios"] = ratios
    for k, s in doc["phases"].items():
        log(f"  {k}: {s['req_per_s']:,.0f} req/s, p50 {s.get('p50_ms')} ms, p99 {s.get('p99_ms')} ms"
            + (f", {s['errors']} errors: {s['first_errors'][0][:160]}" if s.get("errors") else ""))
    log(f"  ratios: {ratios}; cpu {cpu.result}")
    doc["notes"] = [
        "Both servers run at once, one worker each, on fresh SQLite files holding one Organization; the load "
        "generator alternates between them every 0.5 s, so other work on the machine falls on both alike.",
        "after.read carries a bearer token (platform client, client credentials) and is authorised, decrypted "
        "and audited (one audit_event row); before.read is the same request to the earlier commit (with a "
        "token of its own when that commit has the gate: " + ("yes" if gated_before else "no") + ").",
    ]
    emit(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
