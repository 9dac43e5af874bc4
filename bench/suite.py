"""``make bench``: every benchmark, one after the other, each writing its JSON.

    python -m bench.suite                 # full sizes (hours: the 1M-person MPI index is built once and cached)
    python -m bench.suite --quick         # small sizes, minutes
    python -m bench.suite --only mpi,hl7  # a subset

Each benchmark runs in its own process (so one's memory and caches do not
colour the next) and writes ``<out>/<name>.json``; a summary of exit codes
goes to stdout.  Benchmarks are not tests and are not run in CI.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (module, extra args for --quick); each module accepts --out FILE unless noted.
BENCHMARKS: dict[str, tuple[str, list[str], bool]] = {
    "store": ("bench.run", ["--quick"], True),             # foundation: import, CRUD, search, $everything
    "synth": ("bench.bench_synth", ["--residents", "500"], False),
    "febrl": ("bench.bench_mpi_febrl", ["--repeat", "1"], True),  # ours vs Splink on FEBRL4
    "mpi": ("bench.bench_mpi", ["--quick"], True),          # accuracy, 1M latency, relink
    "hl7": ("bench.bench_hl7", ["--seconds", "1"], False),  # parse / parse+map limits
    "cda": ("bench.bench_cda", ["--seconds", "1"], False),
    "ingest": ("bench.bench_ingest", ["--quick"], True),    # MLLP end to end
    "encryption": ("bench.bench_encryption", ["--patients", "300", "--observations", "500", "--transactions", "10",
                                              "--reads", "1000", "--searches", "300"], True),  # at-rest cost
    "gate_ab": ("bench.bench_gate_ab", ["--seconds", "3"], True),  # security's cost per request vs 7f8fcb6
    "backup": ("bench.bench_backup", ["--size", "50000", "--baseline", "10"], True),  # write p99 during a backup
    "cds": ("bench.bench_cds", ["--quick"], True),          # issue 14: hook call p99 vs. the same search, no rules
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", help="comma-separated subset of: " + ", ".join(BENCHMARKS))
    ap.add_argument("--out", type=Path, default=None, help="directory for the JSON files (default var/bench/suite-<time>)")
    args = ap.parse_args()
    names = [n.strip() for n in args.only.split(",")] if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(unknown)}")
    out = args.out or ROOT / "var" / "bench" / time.strftime("suite-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in names:
        module, quick_args, takes_out = BENCHMARKS[name]
        cmd = [sys.executable, "-m", module, *(quick_args if args.quick else [])]
        target = out / f"{name}.json"
        if takes_out:
            cmd += ["--out", str(target)]
        print(f"[suite] {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        if takes_out:
            rc = subprocess.call(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
        else:
            with target.open("wb") as fh:
                rc = subprocess.call(cmd, cwd=ROOT, stdout=fh)
        results[name] = {"exit": rc, "seconds": round(time.monotonic() - t0, 1), "json": str(target)}
        print(f"[suite] {name}: exit {rc} in {results[name]['seconds']} s", file=sys.stderr, flush=True)
    for name, r in results.items():
        print(f"{name:8} exit {r['exit']:>3}  {r['seconds']:>8} s  {r['json']}")
    return 0 if all(r["exit"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
