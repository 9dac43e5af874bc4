"""Benchmark of the synthetic-region generator (``hutong.synth``): resources/s and bytes on disk.

Generates a region of ~200,000+ resources (2,000 residents) into a temporary
directory with ``generate`` - the same path as ``hutong synth`` - and reports
the speed and the size on disk per million resources.  The issue's target is
>= 50,000 resources/s on the 2-core reference machine.

    python -m bench.bench_synth                  # JSON on stdout
    python -m bench.bench_synth --workers 1      # single process
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


def run(residents: int = 2000, institutions: int = 20, seed: int = 1, workers: int | None = None) -> dict[str, Any]:
    """Generate a region into a temporary directory and measure it."""
    workers = workers or min(2, os.cpu_count() or 1)
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
        "resources": report.total,
        "seconds": round(report.seconds, 3),
        "resources_per_s": round(report.total / report.seconds),
        "bytes_per_million_resources": round(on_disk / report.total * 1_000_000),
        "bytes": on_disk,
        "residents": residents,
        "institutions": institutions,
        "resources_per_resident": round(report.total / residents, 1),
        "workers": workers,
        "parent_cpu_seconds": round(cpu, 3),
        "workers_cpu_seconds": round(workers_cpu, 3),
        # Throughput per CPU-second: what one free core gives, whatever else the machine is doing.
        "resources_per_cpu_s": round(report.total / (cpu + workers_cpu)),
        "target_resources_per_s": TARGET_RESOURCES_PER_S,
        "counts": report.counts,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--residents", type=int, default=2000)
    ap.add_argument("--institutions", type=int, default=20)
    ap.add_argument("--workers", type=int, default=None)
    a = ap.parse_args()
    print(json.dumps(run(a.residents, a.institutions, workers=a.workers)))
