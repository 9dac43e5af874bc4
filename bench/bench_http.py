"""HTTP benchmarks against ``hutong serve`` running as a separate process.

Since issue 6 every route but a few public ones (/healthz, /fhir/metadata,
/auth/*, ...) needs ``Authorization: Bearer``, and every request leaves one
hash-chained audit row.  The benchmark gets its token the production way:
``hutong accounts add-client bench --platform`` (the region's integration
engine, system/*.cruds) registers a client in the database, and the client
signs in at ``POST /auth/token`` with client credentials (RFC 6749 section
4.4, HTTP Basic).  The server runs with HUTONG_ACCESS_TOKEN_MINUTES raised
(:data:`TOKEN_MINUTES`) so a token outlives a full run.

Phases (each preceded by a short unrecorded warm-up of the same requests):

- ``http_floor``: GET /healthz (public: no gate, no audit, no database), the
  ceiling of this server and this load generator on this machine;
- ``gate``: three kinds of request interleaved in slices of 0.5 s, in
  rotating order, for about --phase-seconds each (the machine is shared: one
  kind measured after another would meet different load): ``http_floor``
  again (GET /healthz); ``gate_refused``: GET /fhir/Organization/<id> without
  a token, which the gate refuses (401) with a REFUSED audit row (no token
  check, no read); ``gate_floor``: the same with the token: token
  verification, the request's Access, one primary-key read (decrypted), one
  audit row -- the cheapest authenticated request.  ``gate_floor`` against
  ``gate.http_floor`` is what the gate + audit cost per request;
- ``read``: GET /fhir/{type}/{id} of random existing resources;
- ``search_identifier``: GET /fhir/Patient?identifier=system|value of random
  existing Patients, one client at a time (latency), each answer checked to
  hold at least one match;
- ``everything``: GET /fhir/Patient/<heavy>/$everything (default _count),
  one client, each answer checked to hold the whole compartment;
- ``create``: POST /fhir/Observation, one resource per request;
- ``transaction``: POST /fhir transaction Bundles of 100 resources (1 Patient,
  9 Encounters, 90 Observations, linked by urn:uuid fullUrls).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from bench.cpuload import CpuMeter, wait_for_quiet
from bench.data import Dataset, Log, stderr_log
from bench.loadgen import Check, Headers, LoadResult, Request, get, run_load
from bench.profiling import profiled, summarize, write_summary

HOST = "127.0.0.1"
BUNDLE_SIZE = 100
# Access tokens last 15 minutes by default (issue 6); a full run of one
# server configuration takes longer when it waits for a quiet machine.
TOKEN_MINUTES = 240


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextmanager
def server(url: str, workers: int, log_file: Path, *, log: Log = stderr_log,
           env: dict[str, str] | None = None) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``python -m hutong.cli serve`` in its own process group; yields (port, process).
    ``env``: more environment for the server (e.g. a node's HUTONG_NODE_ID)."""
    port = free_port()
    cmd = [sys.executable, "-m", "hutong.cli", "serve", "--host", HOST, "--port", str(port), "--database", url,
           "--workers", str(workers)]
    env = {**os.environ, "HUTONG_ACCESS_TOKEN_MINUTES": str(TOKEN_MINUTES), **(env or {})}
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as lf:
        proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"hutong serve exited with {proc.returncode}; see {log_file}")
            try:
                if get(HOST, port, "/healthz", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"hutong serve did not answer within 120 s; see {log_file}")
            time.sleep(0.2)
        if workers > 1:
            time.sleep(2.0)  # every worker up, not just the first
        log(f"  server up on :{port} (workers={workers}, pid {proc.pid})")
        yield port, proc
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # our own child's process group: uvicorn and its workers
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# ---------------------------------------------------------------- credentials
def register_client(url: str, name: str = "bench", tree: Path | None = None) -> tuple[str, str]:
    """``hutong accounts add-client NAME --platform`` on ``url``; returns (client_id, client_secret).

    The operator's way of registering the region's integration engine; the
    secret is printed once, as JSON.  ``tree``: run another checkout's code
    (an earlier commit's export, for A/B runs).
    """
    env = {**os.environ, "PYTHONPATH": str(tree)} if tree is not None else None
    r = subprocess.run([sys.executable, "-m", "hutong.cli", "accounts", "--database", url, "add-client", name,
                        "--platform"], capture_output=True, text=True, cwd=tree, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"hutong accounts add-client failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    client = json.loads(r.stdout)
    return str(client["client_id"]), str(client["client_secret"])


def fetch_token(port: int, client: tuple[str, str]) -> dict[str, Any]:
    """Client credentials grant at the server's token endpoint (RFC 6749 section 4.4, Basic auth)."""
    r = httpx.post(f"http://{HOST}:{port}/auth/token", data={"grant_type": "client_credentials"}, auth=client,
                   timeout=60)
    if r.status_code != 200:
        raise RuntimeError(f"POST /auth/token: HTTP {r.status_code}: {r.text[:300]}")
    tok: dict[str, Any] = r.json()
    return tok


def bearer(token: dict[str, Any]) -> Headers:
    return {"Authorization": f"Bearer {token['access_token']}"}


def directory_resource(ds: Dataset) -> tuple[str, str]:
    """One Organization of the data set (the first line of Organization.ndjson), else any directory resource."""
    f = ds.dir / "Organization.ndjson"
    if f.exists():
        with f.open("rb") as fh:
            for line in fh:
                if line.strip():
                    return "Organization", str(orjson.loads(line)["id"])
    from bench.data import DIRECTORY_TYPES

    for t, i in ds.read_sample:
        if t in DIRECTORY_TYPES:
            return t, i
    raise RuntimeError("the data set has no directory resource (Organization, Practitioner, ...)")


# ---------------------------------------------------------------- request bodies
def observation(pid: str, n: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": pid},
        "effectiveDateTime": f"2026-10-{1 + n % 28:02d}T08:{n % 60:02d}:00+08:00",
        "valueQuantity": {"value": 60 + n % 40, "unit": "/min", "system": "http://unitsofmeasure.org",
                          "code": "/min"},
    }


def transaction_bundle(rng: random.Random, n: int) -> bytes:
    """1 Patient + 9 Encounters + 90 Observations, references by urn:uuid (bundle.html#references)."""
    def urn() -> str:
        return f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}"

    pat = urn()
    entries: list[dict[str, Any]] = [{
        "fullUrl": pat,
        "resource": {"resourceType": "Patient",
                     "identifier": [{"system": "urn:hutong:mrn:BENCH", "value": f"TX{n:08d}"}],
                     "name": [{"text": f"测试{n}", "family": "测", "given": ["试"]}],
                     "gender": "female" if n % 2 else "male", "birthDate": f"19{50 + n % 50}-0{1 + n % 9}-15"},
        "request": {"method": "POST", "url": "Patient"},
    }]
    for e in range(9):
        enc = urn()
        day = f"2026-0{1 + e}-{10 + n % 18}"
        entries.append({
            "fullUrl": enc,
            "resource": {"resourceType": "Encounter", "status": "finished",
                         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                         "subject": {"reference": pat},
                         "period": {"start": f"{day}T09:00:00+08:00", "end": f"{day}T09:20:00+08:00"}},
            "request": {"method": "POST", "url": "Encounter"},
        })
        for o in range(10):
            obs = observation(pat, n * 100 + e * 10 + o)
            obs["encounter"] = {"reference": enc}
            entries.append({"fullUrl": urn(), "resource": obs, "request": {"method": "POST", "url": "Observation"}})
    assert len(entries) == BUNDLE_SIZE
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})


# ---------------------------------------------------------------- checks
def _matches_at_least(k: int) -> Check:
    def check(_status: int, body: bytes) -> str | None:
        b = orjson.loads(body)
        n = sum(1 for e in b.get("entry", []) if e.get("search", {}).get("mode") == "match")
        return None if n >= k else f"expected >= {k} matches, got {n}"

    return check


def _transaction_ok(_status: int, body: bytes) -> str | None:
    b = orjson.loads(body)
    if b.get("type") != "transaction-response" or len(b.get("entry", [])) != BUNDLE_SIZE:
        return f"not a transaction-response of {BUNDLE_SIZE} entries: {body[:200]!r}"
    return None


# ---------------------------------------------------------------- phases
PHASES = ("http_floor", "gate", "read", "search_identifier", "everything", "create", "transaction")
GATE_SLICE_S = 0.5


class Phases:
    def __init__(self, ds: Dataset, port: int, proc: subprocess.Popen[bytes], *, seconds: float, warmup: float,
                 profile_dir: Path | None, tag: str, headers: Headers, pg_port: int | None = None,
                 quiet_wait: float = 0.0, log: Log = stderr_log) -> None:
        self.ds = ds
        self.headers = headers  # the bearer token, sent with every request but the public ones
        self.quiet_wait = quiet_wait
        self.pg_port = pg_port
        self.port = port
        self.proc = proc
        self.pid = proc.pid
        self.seconds = seconds
        self.warmup = warmup
        self.profile_dir = profile_dir
        self.tag = tag
        self.log = log
        self.rng = random.Random(ds.seed)
        self.profiles: dict[str, Any] = {}
        # Every request sent (warm-ups included), by path kind: the audit log should hold one row per
        # non-public request (run.py compares it with the audit_event rows written).
        self.sent = {"public": 0, "gated": 0}

    def _measure(self, name: str, make: Callable[[int], Request], *, concurrency: int, max_requests: int,
                 seconds: float | None = None, check: Check | None = None, warm: bool = True,
                 expect: tuple[int, ...] = (200, 201), authenticated: bool = True) -> LoadResult:
        secs = seconds if seconds is not None else self.seconds
        headers = self.headers if authenticated else None
        quiet = wait_for_quiet(self.quiet_wait, pg_port=self.pg_port) if self.quiet_wait > 0 else None
        kind = "public" if name == "http_floor" else "gated"
        if warm and self.warmup > 0:
            w = run_load(HOST, self.port, make, concurrency=concurrency, seconds=self.warmup,
                         max_requests=max(1, max_requests // 10), expect=expect, headers=headers)
            self.sent[kind] += w.requests
        out = self.profile_dir / f"{self.tag}-{name}.txt" if self.profile_dir else None
        with profiled(self.pid, out), CpuMeter(self.pg_port) as cpu:
            r = run_load(HOST, self.port, make, concurrency=concurrency, seconds=secs, max_requests=max_requests,
                         check=check, expect=expect, headers=headers)
        self.sent[kind] += r.requests
        r.cpu = cpu.result
        if quiet is not None:
            r.cpu["before"] = quiet
        if out is not None:
            s = summarize(out)
            write_summary(out.with_suffix(".summary.txt"), s)
            self.profiles[name] = s
        r.loadavg = round(os.getloadavg()[0], 2)
        s = r.summary()
        self.log(f"  {name}: {s['req_per_s']:,.0f} req/s, p50 {s.get('p50_ms')} ms, p99 {s.get('p99_ms')} ms, "
                 f"cpu {r.cpu}"
                 + (f", {len(r.errors)} errors: {r.errors[0][:200]}" if r.errors else ""))
        return r

    def http_floor(self) -> dict[str, Any]:
        return self._measure("http_floor", lambda n: ("GET", "/healthz", None), concurrency=16,
                             max_requests=10**7, authenticated=False).summary()

    def gate(self) -> dict[str, Any]:
        """http_floor, gate_refused and gate_floor interleaved in short slices (see the module docstring).

        Measured apart, seconds apart, the three met different load from the
        other work on the machine and their ratios meant little; slices of
        GATE_SLICE_S in rotating order spread that load over all three alike.
        """
        t, i = directory_resource(self.ds)
        path = f"/fhir/{t}/{i}"
        kinds: dict[str, tuple[Request, bool, tuple[int, ...]]] = {
            "http_floor": (("GET", "/healthz", None), False, (200,)),
            "gate_refused": (("GET", path, None), False, (401,)),
            "gate_floor": (("GET", path, None), True, (200,)),
        }
        rounds = max(3, round(self.seconds / GATE_SLICE_S))
        quiet = wait_for_quiet(self.quiet_wait, pg_port=self.pg_port) if self.quiet_wait > 0 else None
        acc = {k: LoadResult(concurrency=16) for k in kinds}

        def slice_of(kind: str, secs: float) -> LoadResult:
            req, authenticated, expect = kinds[kind]
            r = run_load(HOST, self.port, lambda n: req, concurrency=16, seconds=secs, expect=expect,
                         headers=self.headers if authenticated else None)
            self.sent["public" if kind == "http_floor" else "gated"] += r.requests
            return r

        for k in kinds:  # warm-up, unrecorded
            slice_of(k, min(self.warmup, GATE_SLICE_S) if self.warmup > 0 else 0.1)
        order = list(kinds)
        out_file = self.profile_dir / f"{self.tag}-gate.txt" if self.profile_dir else None
        with profiled(self.pid, out_file), CpuMeter(self.pg_port) as cpu:
            for _ in range(rounds):
                for k in order:
                    acc[k].add(slice_of(k, GATE_SLICE_S))
                order = order[1:] + order[:1]
        if out_file is not None:
            sm = summarize(out_file)
            write_summary(out_file.with_suffix(".summary.txt"), sm)
            self.profiles["gate"] = sm
        res: dict[str, Any] = {"path": path, "rounds": rounds, "slice_s": GATE_SLICE_S,
                               "cpu": {**cpu.result, **({"before": quiet} if quiet else {})},
                               "loadavg_1m": round(os.getloadavg()[0], 2),
                               "what": {"http_floor": "GET /healthz: public, no gate, no audit, no database",
                                        "gate_refused": "no token: the gate answers 401 and appends a REFUSED "
                                                        "audit row (no token check, no read)",
                                        "gate_floor": "bearer token verified, Access built, one primary-key read "
                                                      "(decrypted), one audit row: the cheapest authenticated "
                                                      "request"}}
        for k, a in acc.items():
            res[k] = a.summary()
            sm = res[k]
            self.log(f"  gate/{k}: {sm['req_per_s']:,.0f} req/s, p50 {sm.get('p50_ms')} ms, p99 {sm.get('p99_ms')} ms"
                     + (f", {len(a.errors)} errors: {a.errors[0][:200]}" if a.errors else ""))
        self.log(f"  gate: cpu {cpu.result}")
        return res

    def read(self) -> dict[str, Any]:
        sample = list(self.ds.read_sample)
        self.rng.shuffle(sample)
        paths = [f"/fhir/{t}/{i}" for t, i in sample]
        return self._measure("read", lambda n: ("GET", paths[n % len(paths)], None), concurrency=16,
                             max_requests=10**7).summary()

    def search_identifier(self) -> dict[str, Any]:
        idents = list(self.ds.identifier_sample)
        self.rng.shuffle(idents)
        paths = [f"/fhir/Patient?identifier={quote(s, safe='')}|{quote(v, safe='')}" for s, v in idents]
        r = self._measure("search_identifier", lambda n: ("GET", paths[n % len(paths)], None), concurrency=1,
                          max_requests=5000, check=_matches_at_least(1))
        out = r.summary()
        out["checked"] = "each answer holds >= 1 match (search.mode=match entries)"
        return out

    def everything(self) -> dict[str, Any]:
        path = f"/fhir/Patient/{self.ds.heavy_patient}/$everything"
        status, body = get(HOST, self.port, path, headers=self.headers)
        self.sent["gated"] += 1
        entries = len(orjson.loads(body).get("entry", [])) if status == 200 else 0
        r = self._measure("everything", lambda n: ("GET", path, None), concurrency=1, max_requests=300,
                          seconds=max(self.seconds, 5.0), check=_matches_at_least(self.ds.heavy_resources))
        out = r.summary()
        out["entries"] = entries
        out["compartment_size"] = self.ds.heavy_resources
        return out

    def create(self) -> dict[str, Any]:
        pats = self.ds.patient_sample or [self.ds.heavy_patient]
        bodies = [orjson.dumps(observation(f"Patient/{pats[k % len(pats)]}", k)) for k in range(2000)]
        r = self._measure("create", lambda n: ("POST", "/fhir/Observation", bodies[n % len(bodies)]),
                          concurrency=16, max_requests=10**7, expect=(201,))
        return r.summary()

    def transaction(self) -> dict[str, Any]:
        max_bundles = max(20, int(self.seconds * 40))  # bounded: 40 bundles/s would be 4,000 resources/s
        bundles = [transaction_bundle(self.rng, k) for k in range(max_bundles + max_bundles // 10 + 1)]
        r = self._measure("transaction", lambda n: ("POST", "/fhir", bundles[n % len(bundles)]), concurrency=4,
                          max_requests=max_bundles, seconds=self.seconds * 1.5, check=_transaction_ok,
                          expect=(200,))
        out = r.summary(per_request=BUNDLE_SIZE)
        out["bundle_resources"] = BUNDLE_SIZE
        return out

    def all(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        t = time.perf_counter()
        for name in PHASES:
            if self.proc.poll() is not None:
                self.log(f"  the server exited (code {self.proc.returncode}) before {name}")
                out["server_died"] = {"before": name, "returncode": self.proc.returncode}
                break
            t0 = time.perf_counter()
            out[name] = getattr(self, name)()
            out[name]["phase_seconds"] = round(time.perf_counter() - t0, 1)
        if "server_died" not in out and self.proc.poll() is not None:
            out["server_died"] = {"before": "end", "returncode": self.proc.returncode}
        out["seconds"] = round(time.perf_counter() - t, 1)
        out["requests_sent"] = dict(self.sent)
        if self.profiles:
            out["profiles"] = self.profiles
        return out
