"""Write latency while ``hutong backup`` runs on a SQLite database (issue 18, "Speed").

The issue's figure: backing up a 1M-resource SQLite database while it serves
writes, the write p99 during the backup stays within 2x of the p99 without it.

One run, one database:

1. load ``--size`` resources: the cached synthetic region bulk-imported
   (``--load region``, the default: bench.data + bench.bench_store, the path of
   ``hutong import``), or transaction Bundles of 1 Patient + 9 Encounters + 90
   Observations (bench.bench_http.transaction_bundle) through the operator's
   FhirService (``--load bundles``);
2. baseline before: create Observations one after the other
   (``FhirService.create``: the REST create without HTTP, which costs the same
   with and without a backup running) for ``--baseline`` seconds;
3. during: ``hutong backup OUT`` runs as its own process (the operator's
   command: SQLite's online backup API, then the SHA-256 of the copy) while
   the same writes go on; every write that starts while it runs counts;
4. baseline after: as long again as the backup took, so that anything else
   the machine did during the run falls on both sides;
5. steps 3 and 4 ``--rounds`` times (3): the machine's other load, which
   comes and goes, then falls on both sides alike.

Reports p50/p99/max of each phase, each backup's duration and size, the
writes during each backup by windows of a few seconds (where the slow ones
fall), and the ratio p99(during) / p99(before and after).  The target is <= 2.

    python -m bench.bench_backup                      # 1M resources, bulk-imported (about 8 minutes)
    python -m bench.bench_backup --size 50000 --out var/bench/backup.json
    python -m bench.bench_backup --load bundles        # loaded through FhirService (tens of minutes at 1M)
    python -m bench.bench_backup --keep var/bench/backup-keep --control fsync   # one part of a backup alone

``--control snapshot|read|cpu|fsync`` runs, instead of the backup, one thing a backup does
(hold a read snapshot, read the file, keep a core busy, flush 64 MiB at a time) for
``--control-seconds``: which of them slows the writes (issue 18: the flushes did).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from bench import bench_store
from bench.bench_http import BUNDLE_SIZE, transaction_bundle
from bench.data import prepare
from bench.databases import key_dir, sqlite_database
from bench.report import emit
from hutong.fhir.assembly import open_repository
from hutong.fhir.bundle import BundleProcessor
from hutong.fhir.service import FhirService
from hutong.security.guard import as_operator
from hutong.store.sql import sql_repository

ROOT = Path(__file__).resolve().parents[1]
TARGET = 2.0
WINDOW_S = 3  # seconds of the backup per entry of writes.during_by_window

# Parts of a backup run alone (--control), each a process given (database, out dir, seconds).
_HOLD = ("import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('BEGIN'); "
         "c.execute('SELECT count(*) FROM sqlite_master').fetchall(); ")
CONTROLS: dict[str, tuple[str, str]] = {
    "snapshot": ("a read transaction held open, nothing read or copied (the WAL grows as in a backup)",
                 _HOLD + "time.sleep(float(sys.argv[3])); c.execute('COMMIT')"),
    "read": ("the database file read through to /dev/null, no transaction (the copy's reads)",
             "import sys, time\nt = time.monotonic() + float(sys.argv[3])\n"
             "while time.monotonic() < t:\n    with open(sys.argv[1], 'rb', buffering=0) as f:\n"
             "        while time.monotonic() < t and f.read(1 << 20): pass"),
    "cpu": ("one core kept busy, nothing read",
            "import sys, time\nt = time.monotonic() + float(sys.argv[3])\nwhile time.monotonic() < t: pass"),
    "fsync": ("64 MiB written and fdatasync'ed in a loop on the database's disk (the copy's writes)",
              "import os, sys, time\nt = time.monotonic() + float(sys.argv[3]); b = os.urandom(1 << 20)\n"
              "fd = os.open(os.path.join(sys.argv[2], 'f'), os.O_WRONLY | os.O_CREAT, 0o600)\n"
              "while time.monotonic() < t:\n    os.lseek(fd, 0, 0)\n    [os.write(fd, b) for _ in range(64)]\n"
              "    os.fdatasync(fd)"),
}


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _device_of(path: Path) -> str:
    """The filesystem a path is on (its mount source and type, from /proc/self/mounts): where the copy goes."""
    best = ("", "?", "?")
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            for line in f:
                src, mnt, fstype = line.split()[:3]
                if str(path.resolve()).startswith(mnt.rstrip("/") + "/") or str(path.resolve()) == mnt:
                    if len(mnt) >= len(best[0]):
                        best = (mnt, src, fstype)
    except OSError:
        pass
    return f"{best[1]} ({best[2]}) at {best[0] or '?'}"


def log(msg: str) -> None:
    print(f"[bench_backup] {msg}", file=sys.stderr, flush=True)


def observation(patient_id: str, n: int) -> bytes:
    return orjson.dumps({
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"}]},
        "subject": {"reference": f"Patient/{patient_id}"}, "effectiveDateTime": "2026-01-05T08:00:00+08:00",
        "valueQuantity": {"value": 4.0 + (n % 40) / 10, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                          "code": "mmol/L"}})


def _stats(lat: list[float]) -> dict[str, float]:
    s = sorted(lat)
    if not s:
        return {"n": 0}
    return {"n": len(s), "per_s": round(len(s) / sum(s), 1), "p50_ms": round(1000 * statistics.median(s), 3),
            "p99_ms": round(1000 * s[min(len(s) - 1, int(len(s) * 0.99))], 3), "max_ms": round(1000 * s[-1], 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1_000_000, help="resources to load first (default 1M)")
    ap.add_argument("--baseline", type=float, default=15.0, help="seconds of writes before the first backup")
    ap.add_argument("--rounds", type=int, default=3,
                    help="backups, each followed by as long without one (the machine's other load then falls on "
                         "both sides alike)")
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--load", choices=("region", "bundles"), default="region",
                    help="region: bulk-import the cached synthetic region of --size resources (bench.data, "
                         "`hutong import`'s path: minutes at 1M); bundles: 100-resource transaction Bundles "
                         "through FhirService (tens of minutes at 1M)")
    ap.add_argument("--keep", metavar="DIR",
                    help="keep the loaded database and its keys in DIR and, when DIR already holds one loaded "
                         "by an earlier run, measure on it without loading again (the load takes minutes at 1M; "
                         "the writes of earlier runs stay in it)")
    ap.add_argument("--backup-args", default="", metavar="ARGS",
                    help="more arguments for `hutong backup` (e.g. \"--max-rate 100 --step-mb 4\")")
    ap.add_argument("--backup-dir", metavar="DIR",
                    help="write the backups under DIR (default: the system's temporary directory); a DIR on "
                         "another device than the database measures a backup that does not share the "
                         "database's disk")
    ap.add_argument("--control", choices=tuple(CONTROLS), metavar="KIND",
                    help="instead of hutong backup, run one part of what it does, for --control-seconds, to "
                         "find which part slows the writes: " + "; ".join(f"{k}: {v[0]}" for k, v in CONTROLS.items()))
    ap.add_argument("--control-seconds", type=float, default=40.0)
    ap.add_argument("--out", help="also write the JSON result here")
    args = ap.parse_args(argv)
    os.chdir(ROOT)  # bench.data's cache and the databases live under var/bench of the checkout

    with contextlib.ExitStack() as stack:
        if args.keep:
            keep = Path(args.keep).resolve()
            (keep / "keys").mkdir(parents=True, exist_ok=True)
            stack.enter_context(_env("HUTONG_KEY_DIR", str(keep / "keys")))
            url = f"sqlite:///{keep / 'hutong.db'}"
            marker = keep / "loaded.json"
        else:
            stack.enter_context(key_dir("bench-backup-keys-"))
            url = stack.enter_context(sqlite_database("bench-backup.db"))
            marker = None
        t0 = time.monotonic()
        reused = marker is not None and marker.exists()
        if reused:
            assert marker is not None
            loaded = int(orjson.loads(marker.read_bytes())["resources"])
            log(f"measuring on the database kept in {args.keep} ({loaded} resources loaded by an earlier run)")
        elif args.load == "region":
            ds = prepare(args.size, 1)
            loaded = int(bench_store.bulk_import(url, ds)["resources"])
        repo = open_repository(url)
        svc = FhirService(as_operator(repo))  # the loader and the writer act as the operator
        if args.load == "bundles" and not reused:
            bp = BundleProcessor(svc)
            rng = random.Random(args.seed)
            bundles = max(1, args.size // BUNDLE_SIZE)
            for n in range(bundles):
                bp.process(transaction_bundle(rng, n), {})
                if n % 100 == 99:
                    log(f"loaded {(n + 1) * BUNDLE_SIZE} resources ({time.monotonic() - t0:.0f} s)")
            loaded = bundles * BUNDLE_SIZE
        load_s = time.monotonic() - t0
        if marker is not None and not reused:
            marker.write_bytes(orjson.dumps({"resources": loaded, "load_seconds": round(load_s, 1)}))
        pid = orjson.loads(svc.create("Patient", orjson.dumps(
            {"resourceType": "Patient", "name": [{"text": "写入"}]}), {}).body or b"")["id"]
        # what the database holds now (with --keep, the writes of earlier runs too)
        stored = int(sql_repository(repo).query("SELECT count(*) FROM resource")[0][0])
        db_file = Path(url.removeprefix("sqlite:///"))
        db_mb = db_file.stat().st_size / 1e6
        log(f"loaded {loaded} resources in {load_s:.0f} s; database "
            f"{db_file.stat().st_size / 1e6:.0f} MB")

        count = 0

        started: list[float] = []  # when each write of the last phase began (time.perf_counter)

        def write_for(stop: threading.Event | float) -> list[float]:
            nonlocal count
            lat: list[float] = []
            started.clear()
            while (not stop.is_set()) if isinstance(stop, threading.Event) else time.monotonic() < stop:
                count += 1
                t = time.perf_counter()
                svc.create("Observation", observation(pid, count), {})
                lat.append(time.perf_counter() - t)
                started.append(t)
            return lat

        before = write_for(time.monotonic() + args.baseline)
        log(f"baseline before: {_stats(before)}")
        during: list[float] = []
        after: list[float] = []
        backups: list[dict[str, Any]] = []
        timeline: list[dict[str, Any]] = []
        for rnd in range(args.rounds):
            out_dir = Path(tempfile.mkdtemp(prefix="bench-backup-out-", dir=args.backup_dir)) / "b"
            done = threading.Event()
            result: dict[str, Any] = {}

            def run_backup(out_dir: Path = out_dir, done: threading.Event = done,
                           result: dict[str, Any] = result) -> None:
                t = time.monotonic()
                if args.control:
                    out_dir.mkdir(parents=True)
                    cmd = [sys.executable, "-c", CONTROLS[args.control][1], str(db_file), str(out_dir),
                           str(args.control_seconds)]
                else:
                    cmd = [sys.executable, "-m", "hutong.cli", "backup", str(out_dir), "--database", url,
                           *args.backup_args.split()]
                r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                result.update(rc=r.returncode, seconds=round(time.monotonic() - t, 2), stderr=r.stderr[-300:],
                              stdout=r.stdout)
                done.set()

            th = threading.Thread(target=run_backup)
            t_backup = time.perf_counter()
            th.start()
            lat = write_for(done)
            th.join()
            during += lat
            # p99 and max of the writes begun in each window of the backup: where the slow ones fall
            windows: dict[int, list[float]] = {}
            for t, v in zip(started, lat, strict=True):
                windows.setdefault(int((t - t_backup) // WINDOW_S), []).append(v)
            timeline += [{"round": rnd + 1, "from_s": k * WINDOW_S, **_stats(v)} for k, v in sorted(windows.items())]
            if result["rc"] != 0:
                log(f"backup failed: {result['stderr']}")
                return 1
            try:  # hutong backup prints how long its copy and its checksum took
                phases = orjson.loads(result["stdout"]).get("seconds")
            except (orjson.JSONDecodeError, AttributeError):
                phases = None
            backups.append({"seconds": result["seconds"], **({"phases_s": phases} if phases else {}),
                            "bytes": sum(p.stat().st_size for p in out_dir.iterdir()),
                            "writes_during": _stats(lat)})
            log(f"backup {rnd + 1}: {backups[-1]}")
            shutil.rmtree(out_dir.parent, ignore_errors=True)
            # as long again without a backup, so that the machine's other load falls on both sides
            after += write_for(time.monotonic() + max(5.0, float(result["seconds"])))
        repo.db.close()

    base = _stats(before + after)
    dur = _stats(during)
    ratio = round(dur["p99_ms"] / base["p99_ms"], 2) if during and base.get("p99_ms") else None
    doc = {"benchmark": "backup", "backend": "sqlite", "resources": loaded, "resources_stored": stored,
           "loaded_by": args.load,
           "database_mb": round(db_mb, 1), "load_seconds": round(load_s, 1),
           "backup": {"rounds": backups,
                      "process": (f"control {args.control}: {CONTROLS[args.control][0]}, not a backup"
                                  if args.control else "hutong backup (subprocess)"),
                      "target": _device_of(Path(args.backup_dir or tempfile.gettempdir())), "database_device": _device_of(db_file.parent),
                      "arguments": args.backup_args or "(defaults)"},
           "writes": {"before": _stats(before), "during": dur, "after": _stats(after), "baseline": base,
                      "during_by_window": timeline},
           "p99_ratio": ratio, "target": f"p99 during <= {TARGET}x p99 without",
           "met": ratio is not None and ratio <= TARGET,
           "note": "writes: FhirService.create of an Observation, one thread, in process; the backup is the "
                   "operator's command in its own process"}
    emit(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
