"""Cost of encryption at rest on the foundation benchmark's hot paths.

The same work on two fresh databases in one run, one opened with
``open_repository(url, encrypt=False)`` (the baseline) and one with
encryption on (AES-256-GCM bodies, blind indexes, keyed MPI blocking):

- create: Observations (the foundation benchmark's create: bodies only) and
  Patients (the worst case: a protected type, each string value indexed
  as up to 17 prefix digests, MPI features encrypted, and its golden
  record likewise), through ``FhirService.create`` in one thread, i.e. the
  REST path without HTTP;
- transaction Bundles of 1 Patient + 9 Encounters + 90 Observations (the
  foundation benchmark's, bench.bench_http.transaction_bundle);
- read by id (``FhirService.read``) and ``Patient/$everything`` (99 resources);
- search Patient by identifier (``identifier=value``) and by name prefix
  (``family=X``), through ``FhirService.search``.

Both databases are open at once and every phase alternates between them
at every operation, so load from anything else on the machine (the 2 cores
are shared) falls on both sides alike.  HTTP is left out on purpose:
it costs the same with and without encryption and would only dilute the
ratio.  The issue's target is a cost of at most 15%.

    python -m bench.bench_encryption                     # SQLite and PostgreSQL
    python -m bench.bench_encryption --backends sqlite --patients 500 --out var/bench/enc.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from bench.bench_http import transaction_bundle
from bench.databases import postgres_cluster, sqlite_database
from bench.report import emit
from hutong.fhir.assembly import open_repository
from hutong.fhir.bundle import BundleProcessor
from hutong.fhir.service import FhirService
from hutong.security.guard import as_operator
from hutong.synth import SynthConfig, generate

TARGET = 1.15


def log(msg: str) -> None:
    print(f"[bench_encryption] {msg}", file=sys.stderr, flush=True)


def region(residents: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    out = Path(tempfile.mkdtemp(prefix="bench-enc-")) / "r"
    generate(out, SynthConfig(residents=residents, institutions=4, seed=seed, clinical=False))
    orgs = [orjson.loads(x) for x in (out / "Organization.ndjson").read_bytes().splitlines()]
    pats = [orjson.loads(x) for x in (out / "Patient.ndjson").read_bytes().splitlines()]
    return orgs, pats


def observation(patient_id: str, n: int) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"}]},
            "subject": {"reference": f"Patient/{patient_id}"}, "effectiveDateTime": "2026-01-05T08:00:00+08:00",
            "valueQuantity": {"value": 4.0 + (n % 40) / 10, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                              "code": "mmol/L"}}


def _stats(lat: list[float]) -> dict[str, float]:
    lat = sorted(lat)
    return {"n": len(lat), "per_s": round(len(lat) / sum(lat), 1), "mean_ms": round(1000 * statistics.fmean(lat), 3),
            "p50_ms": round(1000 * lat[len(lat) // 2], 3), "p99_ms": round(1000 * lat[int(len(lat) * 0.99)], 3)}


def paired(fns: dict[str, Callable[[], Any]], n: int, batch: int = 1) -> dict[str, dict[str, float]]:
    """Run each side's operation ``n`` times, alternating sides every ``batch``
    operations (and which side goes first), so load from anything else on the
    machine falls on both sides alike."""
    lat: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns)
    done = 0
    while done < n:
        k = min(batch, n - done)
        for side in order:
            fn = fns[side]
            for _ in range(k):
                t = time.perf_counter()
                fn()
                lat[side].append(time.perf_counter() - t)
        order.reverse()
        done += k
    return {side: _stats(v) for side, v in lat.items()}


class Side:
    """One database and its service: encryption off or on."""

    def __init__(self, url: str, encrypt: bool, orgs: list[dict[str, Any]], pats: list[dict[str, Any]]) -> None:
        self.repo = open_repository(url, encrypt=encrypt)
        self.svc = FhirService(as_operator(self.repo))  # the loader acts as the operator
        self.bp = BundleProcessor(self.svc)
        for o in orgs:
            self.svc.update("Organization", o["id"], orjson.dumps(o), {})
        self.pats = iter(pats)
        self.ids: list[str] = []
        self.obs = 0

    def create_patient(self) -> None:
        p = dict(next(self.pats))
        p.pop("id", None)
        self.ids.append(orjson.loads(self.svc.create("Patient", orjson.dumps(p), {}).body)["id"])

    def create_observation(self) -> None:
        self.obs += 1
        self.svc.create("Observation", orjson.dumps(observation(self.ids[self.obs % len(self.ids)], self.obs)), {})


def compare(url_off: str, url_on: str, orgs: list[dict[str, Any]], pats: list[dict[str, Any]],
            args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    sides = {"off": Side(url_off, False, orgs, pats), "on": Side(url_on, True, orgs, pats)}
    try:
        out: dict[str, dict[str, Any]] = {}

        def phase(name: str, make: Callable[[Side], Callable[[], Any]], n: int) -> None:
            log(f"  {name} x{n}")
            out[name] = paired({k: make(sd) for k, sd in sides.items()}, n)

        phase("create_patient", lambda sd: sd.create_patient, len(pats))
        phase("create_observation", lambda sd: sd.create_observation, args.observations)
        bodies = [transaction_bundle(random.Random(11), n) for n in range(args.transactions)]
        for sd in sides.values():
            sd.tx = iter(bodies)  # type: ignore[attr-defined]
        phase("transaction_100", lambda sd: lambda: sd.bp.process(next(sd.tx), {}),  # type: ignore[attr-defined]
              args.transactions)
        heavy = {k: sd.repo.query("SELECT fhir_id FROM resource WHERE type = 'Patient' AND fhir_id NOT LIKE "
                                  "'mpi-%' ORDER BY pk DESC LIMIT 1", ())[0][0] for k, sd in sides.items()}
        phase("everything", lambda sd: lambda: sd.svc.everything(heavy["off" if sd is sides["off"] else "on"], []),
              max(50, args.reads // 20))
        idnos = [i["value"] for p in pats for i in p.get("identifier", []) if i["system"].endswith("10011.1.3")]
        families = sorted({n["family"] for p in pats for n in p.get("name", []) if n.get("family")})
        rngs = {k: random.Random(7) for k in sides}  # both sides ask the same sequence

        def reader(sd: Side) -> Callable[[], Any]:
            rng = rngs["off" if sd is sides["off"] else "on"]
            return lambda: sd.svc.read("Patient", rng.choice(sd.ids))

        phase("read", reader, args.reads)
        for k in rngs:
            rngs[k] = random.Random(8)

        def by_identifier(sd: Side) -> Callable[[], Any]:
            rng = rngs["off" if sd is sides["off"] else "on"]
            return lambda: sd.svc.search("Patient", [("identifier", rng.choice(idnos))], {})

        phase("search_identifier", by_identifier, args.searches)
        for k in rngs:
            rngs[k] = random.Random(9)

        def by_family(sd: Side) -> Callable[[], Any]:
            rng = rngs["off" if sd is sides["off"] else "on"]
            return lambda: sd.svc.search("Patient", [("family", rng.choice(families)), ("_count", "10")], {})

        phase("search_family", by_family, args.searches)
        return out
    finally:
        for sd in sides.values():
            sd.repo.db.close()


@contextlib.contextmanager
def databases(backend: str, tag: str) -> Iterator[Callable[[str], Any]]:
    """A factory of fresh databases of one backend."""
    if backend == "sqlite":
        stack = contextlib.ExitStack()
        with stack:
            yield lambda name: stack.enter_context(sqlite_database(f"bench-enc-{tag}-{name}.db"))
        return
    import psycopg

    with postgres_cluster() as base:
        admin = base.replace("postgresql+psycopg", "postgresql")

        def fresh(name: str) -> str:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS enc_{name}")
                conn.execute(f"CREATE DATABASE enc_{name}")
            return admin.rsplit("/", 1)[0] + f"/enc_{name}"

        yield fresh


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--patients", type=int, default=1500, help="synthetic residents (about as many Patients)")
    ap.add_argument("--observations", type=int, default=3000)
    ap.add_argument("--transactions", type=int, default=40, help="transaction Bundles of 100 resources")
    ap.add_argument("--reads", type=int, default=5000)
    ap.add_argument("--searches", type=int, default=2000)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    os.environ["HUTONG_KEY_DIR"] = tempfile.mkdtemp(prefix="bench-enc-keys-")
    orgs, pats = region(args.patients, 3)
    log(f"{len(pats)} Patients, {len(orgs)} Organizations")
    result: dict[str, Any] = {"benchmark": "encryption at rest", "target_max_ratio": TARGET,
                              "sizes": {"patients": len(pats), "observations": args.observations,
                                        "transactions": args.transactions,
                                        "reads": args.reads, "searches": args.searches}}
    for backend in args.backends.split(","):
        log(f"{backend}: encryption off and on, side by side")
        with databases(backend, str(os.getpid())) as fresh:
            phases = compare(fresh("off"), fresh("on"), orgs, pats, args)
        off = {p: v["off"] for p, v in phases.items()}
        on = {p: v["on"] for p, v in phases.items()}
        ratio = {p: round(on[p]["mean_ms"] / off[p]["mean_ms"], 3) for p in phases}
        result[backend] = {"off": off, "on": on, "cost_ratio": ratio,
                           "within_target": {p: r <= TARGET for p, r in ratio.items()}}
        log(f"{backend}: cost ratio (on/off mean latency) {ratio}")
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
