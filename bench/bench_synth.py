"""Benchmark of the synthetic-region generator (``hutong.synth``): resources/s and bytes on disk.

Generates a region of ~200,000+ resources (2,000 residents) into a temporary
directory with ``generate`` - the same path as ``hutong synth`` - and reports
the speed and the size on disk per million resources.  The issue's target is
>= 50,000 resources/s on the 2-core reference machine.

    python -m bench.bench_synth                  # JSON on stdout (best of 1 process and 2 workers)
    python -m bench.bench_synth --workers 1      # single process only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from hutong.synth import SynthConfig, generate

TARGET_RESOURCES_PER_S = 50_000


def measure(residents: int, institutions: int, seed: int, workers: int) -> dict[str, Any]:
    """Generate one region into a temporary directory with ``workers`` processes and measure it."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-synth-"))
    try:
        cpu0 = time.process_time()
        kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        report = generate(tmp / "region", SynthConfig(residents=residents, institutions=institutions, seed=seed,
                                                      workers=workers))
        cpu = time.process_time() - cpu0
        kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        workers_cpu = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
        on_disk = sum(p.stat().st_size for p in (tmp / "region").iterdir())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "workers": workers,
        "resources": report.total,
        "seconds": round(report.seconds, 3),
        "resources_per_s": round(report.total / report.seconds),
        # Per CPU-second: what the code does per free core, whatever else the machine is doing.
        "resources_per_cpu_s": round(report.total / (cpu + workers_cpu)),
        "bytes": on_disk,
        "counts": report.counts,
    }


def run(residents: int = 2000, institutions: int = 20, seed: int = 1, workers: int | None = None) -> dict[str, Any]:
    """The generator's speed (best of one process and two workers, unless ``workers``) and size on disk."""
    choices = [workers] if workers else sorted({1, min(2, os.cpu_count() or 1)})
    runs = [measure(residents, institutions, seed, w) for w in choices]
    best = max(runs, key=lambda r: r["resources_per_s"])
    return {
        "resources": best["resources"],
        "seconds": best["seconds"],
        "resources_per_s": best["resources_per_s"],
        "bytes_per_million_resources": round(best["bytes"] / best["resources"] * 1_000_000),
        "workers": best["workers"],
        "residents": residents,
        "institutions": institutions,
        "resources_per_resident": round(best["resources"] / residents, 1),
        "target_resources_per_s": TARGET_RESOURCES_PER_S,
        "runs": [{k: v for k, v in r.items() if k != "counts"} for r in runs],
        "counts": best["counts"],
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--residents", type=int, default=2000)
    ap.add_argument("--institutions", type=int, default=20)
    ap.add_argument("--workers", type=int, default=None)
    a = ap.parse_args()
    print(json.dumps(run(a.residents, a.institutions, workers=a.workers)))
