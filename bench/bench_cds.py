"""Issue 14, "Speed": a CDS Hooks call with prefetch against a patient with 2,000 resources
across five institutions, at >= 1M stored resources, against the same query without rules.

Target: p99 <= 100 ms per hook call (order-select and order-sign), with >= 1,000,000
resources stored, and a baseline of the same query without rules in the same run.

Per backend (SQLite file, throw-away PostgreSQL cluster), as bench.run does:

1. a fresh database and the bulk import of the cached synthetic region of >= --size
   resources (:func:`bench.data.prepare`, shared with bench.run's cache);
2. the recognition knowledge of hutong/cds/seed/recognition.json (items, windows, scope marks,
   负面清单, the seed institutions' QC and local codes) loaded by one committee account and
   approved by another, with the CLI (``hutong accounts add-user --role committee``,
   ``hutong cds seed``, ``hutong cds approve``: the four-eyes life cycle of production);
3. ``hutong serve`` as a child process (bench.bench_http.server), the platform client's token
   (``accounts add-client --platform``, client credentials);
4. over HTTP with the platform token: five seed institutions (Organizations with their
   统一社会信用代码: A 121101164000124574 and B 12110108400826012G have local codes in the seed,
   C, D, E only QC rows), one resident registered at each (five source Patients, the same ID
   number, so the MPI links them to one person inline), and :func:`resident_resources`: 2,000
   resources in the person's five compartments (Patients included) in transaction Bundles:
   mostly lab results (Observations with the seed items' LOINC codes, lab DiagnosticReports
   in A's and B's local codes or LOINC), imaging (ImagingStudy by modality + body site with its
   report), encounters, conditions and allergies over three years; the newest 糖化血红蛋白
   (hba1c, window 90 days) is B's, 10 days ago (report L-A1C + Observation 4548-4);
5. a clinician at A (Practitioner, ``hutong accounts add-user --role clinician``, signed in
   at POST /auth/login with password and TOTP) with a treatment basis: an Encounter under way
   at A reported by the platform engine (hutong.security.policy: a visit the institution
   reported on its own channel), which is also the hook's ``context.encounterId``;
6. the prefetch the CDS client would send (the service's templates, fetched by the clinician:
   ``Patient/{{context.patientId}}``, ``AllergyIntolerance?patient=...``,
   ``Encounter/{{context.encounterId}}``) and one draft ServiceRequest in A's local code
   JY0032 (糖化血红蛋白), for which B's result is a recognisable equivalent.

Measured, interleaved in slices of --slice calls in rotating order (the machine is shared:
load from other work falls on every kind alike), one client (latency), --calls each after an
unrecorded warm-up, every answer checked:

- ``order_select``: POST /cds-services/hutong-order-select: must hold the recognition info card
  naming B;
- ``order_sign``: POST /cds-services/hutong-order-sign: must hold the warning card naming B
  with the 不互认理由 override reasons;
- ``baseline_search``: the same query without rules: GET /fhir/Observation?patient=<the five
  registrations>&code=<every code of the item>&date=ge<today - longest window - 1 day>&_count=1000
  &_total=none with the same clinician token.  That is the search the recognition rule itself
  runs for a lab item (hutong.cds.service.AccessRecords.search: the same parameters, the page
  size MAX_COUNT, no total), over the same HTTP stack, gate, token check, Access (basis,
  scope in SQL, presentation) and audit row.  So hook / baseline is what the rules add to
  the data access a client would need anyway to find the equivalent result: the hook's own
  request parsing, MPI look-up of the linked registrations, basis, prefetch check, the knowledge
  in force, the rule's second search (DiagnosticReport), the institution reads, Conditions for the
  负面清单, the privilege and allergy rules, the card and its cds-cards audit row;
- ``baseline_search_reports``: the rule's other search of the same item, on DiagnosticReport
  (same parameters), reported beside it: the two baselines together are every search the rule
  runs for the order.

Then ``throughput``: order-select alone with --clients clients for --seconds: req/s.

Output: one JSON document (bench.report.emit) with sizes, database, the target and its
judgment, each kind's p50/p90/p99/mean/max and req/s, hook / baseline ratios, and the CPU
used by this benchmark and by other processes during the measurement (bench.cpuload).

    python -m bench.bench_cds                          # 1M resources, SQLite and PostgreSQL
    python -m bench.bench_cds --quick --backends sqlite
    python -m bench.bench_cds --help

A benchmark, not a test: not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import orjson

from bench import bench_store
from bench.bench_http import HOST, bearer, fetch_token, register_client, server
from bench.cpuload import CpuMeter, wait_for_quiet
from bench.data import CACHE, Dataset, prepare, stderr_log
from bench.databases import postgres_cluster, sqlite_database
from bench.loadgen import Check, Headers, LoadResult, Request, get, run_load
from bench.report import emit

ROOT = Path(__file__).resolve().parents[1]
log = stderr_log

TARGET_P99_MS = 100.0
TARGET_RESOURCES = 1_000_000
RESIDENT_RESOURCES = 2000
BEIJING = timezone(timedelta(hours=8))
SEED = ROOT / "hutong" / "cds" / "seed" / "recognition.json"
LOCAL = "urn:hutong:code:"  # hutong.cds.knowledge.LOCAL_CODE_PREFIX
LOINC = "http://loinc.org"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
SNOMED = "http://snomed.info/sct"
# Five institutions of the seed knowledge (code, name); A and B have local codes there.
INSTITUTIONS = (("121101164000124574", "北京市怀柔中心医院"), ("12110108400826012G", "北京市海淀区医院"),
                ("12110111400192291J", "北京市房山区第二医院"), ("1211010840037962XN", "北京市海淀区妇幼保健院"),
                ("12110105400141419T", "北京市朝阳区社区卫生服务中心"))
RESIDENT_ID = "110108195503127716"  # a valid 18-digit ID number (GB 11643 check character), no synth resident's
ITEM = "hba1c"                       # the ordered item (window 90 days in the seed)
ORDER_CODE = (LOCAL + INSTITUTIONS[0][0], "JY0032")  # A's local code of it
EQUIVALENT_DAYS_AGO = 10
CARD_LABEL = "检查检验结果互认"


def _cli(url: str, *args: str) -> Any:
    """``python -m hutong.cli <command> --database URL ...``: its JSON output."""
    cmd, rest = args[0], args[1:]
    r = subprocess.run([sys.executable, "-m", "hutong.cli", cmd, "--database", url, *rest], capture_output=True,
                       text=True, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"hutong {cmd} {rest[:1]} failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout)


def approve_seed(url: str) -> dict[str, Any]:
    """The seed knowledge drafted by one committee account and approved by another (the CLI)."""
    for user, name in (("bench-committee-1", "王委员"), ("bench-committee-2", "李委员")):
        _cli(url, "accounts", "add-user", user, "--role", "committee", "--name", name)
    v = _cli(url, "cds", "seed", "--effective-from", "2025-01-01", "--author", "bench-committee-1")
    a = _cli(url, "cds", "approve", str(v["id"]), "--approver", "bench-committee-2")
    return {"version": a.get("id"), "status": a.get("status")}


# ---------------------------------------------------------------- the resident's record
def _when(day: datetime, hour: int = 9) -> str:
    return day.replace(hour=hour, minute=10, second=0, microsecond=0).isoformat()


def resident_resources(patients: list[str], orgs: list[str], seed: dict[str, Any], now: datetime,
                       total: int = RESIDENT_RESOURCES) -> list[list[dict[str, Any]]]:
    """Groups of resources (each group one transaction's worth, linked by urn:uuid) filling the
    five registrations' compartments to ``total`` with the Patients (``len(patients)`` of them)."""
    rng = random.Random(20261207)
    labs = [i for i in seed["items"] if i["kind"] == "lab" and i.get("loinc")]
    imaging = [i for i in seed["items"] if i["kind"] == "imaging"]
    local: dict[str, dict[str, str]] = {}  # institution -> item -> local code
    for lc in seed["local_codes"]:
        for code, t in lc["codes"].items():
            local.setdefault(lc["institution"], {})[t["item"] if isinstance(t, dict) else t] = code
    n_enc, n_allergy, n_cond, n_img = 160, 10, 25, 50
    budget = total - len(patients) - n_enc - n_allergy - n_cond - 2 * n_img
    groups: list[list[dict[str, Any]]] = []
    today = now.astimezone(BEIJING)

    def urn() -> str:
        return f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}"

    def subj(k: int) -> dict[str, str]:
        return {"reference": f"Patient/{patients[k]}"}

    def org_code(k: int) -> str:
        return INSTITUTIONS[k][0]

    def lab(k: int, day: datetime, enc: str, item: dict[str, Any], with_report: bool) -> list[tuple[str, dict[str, Any]]]:
        lo = rng.uniform(3.0, 8.0)
        obs_url = urn()
        out = [(obs_url, {
            "resourceType": "Observation", "status": "final", "subject": subj(k), "encounter": {"reference": enc},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "laboratory"}]}],
            "code": {"coding": [{"system": LOINC, "code": item["loinc"]}], "text": item["name"]},
            "effectiveDateTime": _when(day), "valueQuantity": {"value": round(lo, 1), "unit": "mmol/L"}})]
        if with_report:
            code = local.get(org_code(k), {}).get(item["key"])
            coding = {"system": LOCAL + org_code(k), "code": code} if code else {"system": LOINC, "code": item["loinc"]}
            out.append((urn(), {
                "resourceType": "DiagnosticReport", "status": "final", "subject": subj(k),
                "encounter": {"reference": enc}, "code": {"coding": [coding], "text": item["name"]},
                "effectiveDateTime": _when(day, 10), "issued": _when(day, 11),
                "result": [{"reference": obs_url}]}))
        return out

    # Encounters over three years at the five institutions; labs (some with a report) at each.
    obs_left = budget
    per_enc = budget // n_enc
    for e in range(n_enc):
        k = e % len(INSTITUTIONS)
        day = today - timedelta(days=rng.randint(EQUIVALENT_DAYS_AGO + 2, 3 * 365))
        special = e == n_enc - 1  # B's visit 10 days ago: the ordered item's newest result
        if special:
            k, day = 1, today - timedelta(days=EQUIVALENT_DAYS_AGO)
        enc_url = urn()
        group: list[tuple[str, dict[str, Any]]] = [(enc_url, {
            "resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}, "subject": subj(k),
            "serviceProvider": {"reference": f"Organization/{orgs[k]}"},
            "period": {"start": _when(day, 8), "end": _when(day, 12)}})]
        n = obs_left if e == n_enc - 1 else min(per_enc, obs_left)
        plan: list[tuple[dict[str, Any], bool]] = []  # (item, with a report)
        size = 0
        if special:
            plan.append((next(i for i in labs if i["key"] == ITEM), True))
            size = 2
        pool = [i for i in labs if not (special and i["key"] == ITEM)]
        while size < n:
            report = rng.random() < 0.12 and size + 2 <= n  # a report for about one result in eight
            plan.append((rng.choice(pool), report))
            size += 2 if report else 1
        for it, report in plan:
            group += lab(k, day, enc_url, it, report)
        obs_left -= size
        groups.append(_entries(group))
    # Imaging: a study by modality + body site and its report (the PACS's and the RIS's).
    for m in range(n_img):
        k = m % len(INSTITUTIONS)
        it = rng.choice(imaging)
        day = today - timedelta(days=rng.randint(30, 3 * 365))
        study = urn()
        code = local.get(org_code(k), {}).get(it["key"])
        coding = {"system": LOCAL + org_code(k), "code": code} if code else dict(it["procedure"])
        groups.append(_entries([
            (study, {"resourceType": "ImagingStudy", "status": "available", "subject": subj(k), "started": _when(day),
                     "modality": [{"system": DCM, "code": it["modality"]}],
                     "series": [{"uid": f"1.2.156.{m}.{rng.randint(1, 10**9)}",
                                 "modality": {"system": DCM, "code": it["modality"]},
                                 "bodySite": {"system": SNOMED, "code": it["body_site"]}}]}),
            (urn(), {"resourceType": "DiagnosticReport", "status": "final", "subject": subj(k),
                     "code": {"coding": [coding], "text": it["name"]}, "effectiveDateTime": _when(day),
                     "imagingStudy": [{"reference": study}], "conclusion": "未见明显异常"})]))
    # Conditions and allergies recorded at each institution.
    rest: list[tuple[str, dict[str, Any]]] = []
    for c in range(n_cond):
        k = c % len(INSTITUTIONS)
        day = today - timedelta(days=rng.randint(30, 3 * 365))
        code, text = rng.choice((("E11.9", "2型糖尿病"), ("I10", "原发性高血压"), ("E78.5", "高脂血症")))
        rest.append((urn(), {
            "resourceType": "Condition", "subject": subj(k), "onsetDateTime": day.date().isoformat(),
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": code}], "text": text}}))
    for a in range(n_allergy):
        k = a % len(INSTITUTIONS)
        atc, text = (("J01CA04", "阿莫西林"), ("N02BA01", "阿司匹林"))[a % 2]
        rest.append((urn(), {
            "resourceType": "AllergyIntolerance", "patient": subj(k),
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                                           "code": "active"}]},
            "code": {"coding": [{"system": "http://www.whocc.no/atc", "code": atc}], "text": text},
            "recordedDate": (today - timedelta(days=rng.randint(30, 900))).date().isoformat()}))
    for i in range(0, len(rest), 50):
        groups.append(_entries(rest[i:i + 50]))
    return groups


def _entries(rows: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [{"fullUrl": u, "resource": r, "request": {"method": "POST", "url": r["resourceType"]}} for u, r in rows]


def _bundles(groups: list[list[dict[str, Any]]], limit: int = 100) -> list[bytes]:
    """Groups packed into transaction Bundles of at most ``limit`` entries (bundle.html#transaction)."""
    out: list[bytes] = []
    cur: list[dict[str, Any]] = []
    for g in groups:
        if cur and len(cur) + len(g) > limit:
            out.append(_bundle(cur))
            cur = []
        cur += g
    if cur:
        out.append(_bundle(cur))
    return out


def _bundle(entries: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})


# ---------------------------------------------------------------- setting up the region over HTTP
@dataclass
class Setup:
    organizations: list[str]
    patients: list[str]
    encounter: str
    practitioner: str
    clinician: Headers
    prefetch: dict[str, Any]
    resident_resources: int
    bundles: int
    write_seconds: float
    search_codes: str
    since: str
    extra: dict[str, Any] = field(default_factory=dict)


def _created(r: httpx.Response) -> str:
    if r.status_code != 201:
        raise RuntimeError(f"{r.request.method} {r.request.url.path}: HTTP {r.status_code}: {r.text[:300]}")
    return str(r.json()["id"])


def _totp_secret(uri: str) -> str:
    return parse_qs(urlsplit(uri).query)["secret"][0]


def build_region(url: str, port: int, platform: Headers, seed: dict[str, Any]) -> Setup:
    from hutong.cds.knowledge import Knowledge, parse
    from hutong.security import totp
    from hutong.systems import ID_CARD, ORGANIZATION, mrn_system

    base = f"http://{HOST}:{port}"
    hdr = {**platform, "content-type": "application/fhir+json", "accept": "application/fhir+json"}
    now = datetime.now(UTC)
    with httpx.Client(base_url=base + "/fhir", headers=hdr, timeout=120) as c:
        orgs = [_created(c.post("/Organization", json={
            "resourceType": "Organization", "name": name, "identifier": [{"system": ORGANIZATION, "value": code}]}))
            for code, name in INSTITUTIONS]
        # One registration per institution, the same person (MPI inline: same ID number, name, birth date).
        patients = [_created(c.post("/Patient", json={
            "resourceType": "Patient", "managingOrganization": {"reference": f"Organization/{orgs[k]}"},
            "identifier": [{"system": ID_CARD, "value": RESIDENT_ID},
                           {"system": mrn_system(code), "value": f"BENCH-CDS-{k}"}],
            "name": [{"family": "李", "given": ["建国"], "text": "李建国"}], "birthDate": "1955-03-12",
            "gender": "male", "telecom": [{"system": "phone", "value": "13800138000"}]}))
            for k, (code, _n) in enumerate(INSTITUTIONS)]
        # The visit under way at A, reported by the platform engine: A's clinicians' treatment basis.
        encounter = _created(c.post("/Encounter", json={
            "resourceType": "Encounter", "status": "in-progress", "class": {"code": "AMB"},
            "subject": {"reference": f"Patient/{patients[0]}"},
            "serviceProvider": {"reference": f"Organization/{orgs[0]}"},
            "period": {"start": (now - timedelta(minutes=20)).isoformat()}}))
        groups = resident_resources(patients, orgs, seed, now, RESIDENT_RESOURCES - 1)  # - the encounter above
        bundles = _bundles(groups)
        t0 = time.perf_counter()
        written = len(patients) + 1
        for b in bundles:
            r = c.post("", content=b)
            if r.status_code != 200:
                raise RuntimeError(f"transaction: HTTP {r.status_code}: {r.text[:300]}")
            written += sum(1 for e in r.json().get("entry", []) if str(e.get("response", {}).get("status", ""))
                           .startswith("201"))
        write_s = time.perf_counter() - t0
        practitioner = _created(c.post("/Practitioner", json={
            "resourceType": "Practitioner", "name": [{"family": "张", "given": ["医生"], "text": "张医生"}]}))
    # The clinician at A, signed in the production way (password + TOTP).
    acc = _cli(url, "accounts", "add-user", "bench-doctor-a", "--role", "clinician", "--name", "张医生",
               "--organization", INSTITUTIONS[0][0], "--practitioner", practitioner)
    code = totp.code_at(_totp_secret(acc["otpauth_uri"]), int(time.time() * 1000))
    r = httpx.post(base + "/auth/login", json={"username": "bench-doctor-a", "password": acc["password"],
                                               "totp": code}, timeout=60)
    if r.status_code != 200:
        raise RuntimeError(f"POST /auth/login: HTTP {r.status_code}: {r.text[:300]}")
    clinician = bearer(r.json())
    # The prefetch a CDS client sends (the service's templates), as the clinician reads it.
    with httpx.Client(base_url=base + "/fhir", headers={**clinician, "accept": "application/fhir+json"},
                      timeout=60) as c:
        pre: dict[str, Any] = {}
        for key, path in (("patient", f"/Patient/{patients[0]}"),
                          ("allergies", f"/AllergyIntolerance?patient={patients[0]}"),
                          ("encounter", f"/Encounter/{encounter}")):
            r = c.get(path)
            if r.status_code != 200:
                raise RuntimeError(f"prefetch {key}: HTTP {r.status_code}: {r.text[:300]}")
            pre[key] = r.json()
    # The rule's search of the ordered item (hutong.cds.recognition._Results._of_item).
    k = Knowledge.of("bench", parse(seed))
    item = k.items[ITEM]
    codes = ",".join(f"{s}|{c}" for s, c in k.codes_of(item))
    today = now.astimezone(BEIJING).date()
    since = (today - timedelta(days=k.longest_window(ITEM) + 1)).isoformat()
    return Setup(orgs, patients, encounter, practitioner, clinician, pre, written, len(bundles), round(write_s, 1),
                 codes, since)


# ---------------------------------------------------------------- the measured requests
def hook_body(s: Setup, hook: str) -> bytes:
    order = {"resourceType": "ServiceRequest", "id": "bench-sr-1", "status": "draft", "intent": "order",
             "priority": "routine", "subject": {"reference": f"Patient/{s.patients[0]}"},
             "encounter": {"reference": f"Encounter/{s.encounter}"},
             "code": {"coding": [{"system": ORDER_CODE[0], "code": ORDER_CODE[1]}], "text": "糖化血红蛋白"}}
    ctx: dict[str, Any] = {"userId": f"Practitioner/{s.practitioner}", "patientId": s.patients[0],
                           "encounterId": s.encounter,
                           "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": order}]}}
    if hook == "order-select":
        ctx["selections"] = ["ServiceRequest/bench-sr-1"]
    return orjson.dumps({"hook": hook, "hookInstance": str(uuid.uuid4()), "context": ctx, "prefetch": s.prefetch})


def _card_check(indicator: str, institution: str) -> Check:
    def check(status: int, body: bytes) -> str | None:
        try:
            cards = orjson.loads(body).get("cards", [])
        except orjson.JSONDecodeError:
            return "not JSON"
        mine = [c for c in cards if str(c.get("source", {}).get("label", "")).startswith(CARD_LABEL)]
        if len(mine) != 1 or mine[0].get("indicator") != indicator or institution not in mine[0].get("summary", ""):
            return f"expected one {indicator} recognition card naming {institution}: {body[:300]!r}"
        if indicator == "warning" and len(mine[0].get("overrideReasons") or []) != 5:
            return "order-sign card without the five 不互认理由"
        return None
    return check


def _search_check(at_least: int) -> Check:
    def check(status: int, body: bytes) -> str | None:
        n = len(orjson.loads(body).get("entry") or [])
        return None if n >= at_least else f"search found {n} < {at_least}"
    return check


@dataclass
class Kind:
    name: str
    bodies: list[Request]
    check: Check


def kinds(s: Setup, calls: int) -> list[Kind]:
    pats = ",".join(s.patients)
    q = (f"patient={pats}&code={quote(s.search_codes, safe=',|')}&date=ge{s.since}&_count=1000&_total=none")
    n = calls + calls // 2 + 50  # warm-up and slices included; each hook call its own hookInstance
    return [
        Kind("order_select", [("POST", "/cds-services/hutong-order-select", hook_body(s, "order-select"))
                              for _ in range(n)], _card_check("info", INSTITUTIONS[1][1])),
        Kind("order_sign", [("POST", "/cds-services/hutong-order-sign", hook_body(s, "order-sign"))
                            for _ in range(n)], _card_check("warning", INSTITUTIONS[1][1])),
        Kind("baseline_search", [("GET", f"/fhir/Observation?{q}", None)], _search_check(1)),
        Kind("baseline_search_reports", [("GET", f"/fhir/DiagnosticReport?{q}", None)], _search_check(1)),
    ]


def measure(port: int, s: Setup, args: argparse.Namespace, pg_port: int | None) -> dict[str, Any]:
    ks = kinds(s, args.calls)
    used = {k.name: 0 for k in ks}

    def slice_of(k: Kind, n: int) -> LoadResult:
        start = used[k.name]
        used[k.name] += n
        return run_load(HOST, port, lambda i: k.bodies[(start + i) % len(k.bodies)], concurrency=1,
                        seconds=3600, max_requests=n, check=k.check, expect=(200,), headers=s.clinician)

    warm = {}
    for k in ks:  # unrecorded warm-up (caches, the knowledge's first load, the JIT of SQLite's statements)
        w = slice_of(k, args.warmup)
        warm[k.name] = {"requests": w.requests, "errors": len(w.errors), **({"first_error": w.errors[0][:300]}
                                                                           if w.errors else {})}
        if w.errors:
            log(f"  warm-up {k.name}: {len(w.errors)} errors: {w.errors[0][:300]}")
    quiet = wait_for_quiet(args.quiet_wait, pg_port=pg_port) if args.quiet_wait > 0 else None
    acc = {k.name: LoadResult(concurrency=1) for k in ks}
    order = list(ks)
    rounds = -(-args.calls // args.slice)
    with CpuMeter(pg_port) as cpu:
        for _ in range(rounds):
            for k in order:
                acc[k.name].add(slice_of(k, args.slice))
            order = order[1:] + order[:1]
    out: dict[str, Any] = {"warmup": warm, "rounds": rounds, "slice_calls": args.slice,
                           "cpu": {**cpu.result, **({"before": quiet} if quiet else {})},
                           "loadavg_1m": round(os.getloadavg()[0], 2)}
    for name, a in acc.items():
        out[name] = a.summary()
        sm = out[name]
        log(f"  {name}: {sm['ok']} ok, p50 {sm.get('p50_ms')} ms, p99 {sm.get('p99_ms')} ms, "
            f"mean {sm.get('mean_ms')} ms, {sm['req_per_s']} req/s"
            + (f", {len(a.errors)} errors: {a.errors[0][:200]}" if a.errors else ""))
    log(f"  cpu {out['cpu']}")
    # Throughput: order-select alone with several clients.
    sel = ks[0]
    more = [hook_body(s, "order-select") for _ in range(4000)]
    with CpuMeter(pg_port) as cpu2:
        t = run_load(HOST, port, lambda i: ("POST", "/cds-services/hutong-order-select", more[i % len(more)]),
                     concurrency=args.clients, seconds=args.seconds, check=sel.check, expect=(200,),
                     headers=s.clinician)
    t.cpu = cpu2.result
    out["throughput_order_select"] = t.summary()
    log(f"  throughput, {args.clients} clients: {out['throughput_order_select']['req_per_s']} req/s, "
        f"p99 {out['throughput_order_select'].get('p99_ms')} ms, cpu {cpu2.result}")
    return out


def _ratio(a: Any, b: Any) -> float | None:
    return round(float(a) / float(b), 2) if isinstance(a, int | float) and isinstance(b, int | float) and b else None


def judge(res: dict[str, Any]) -> dict[str, Any]:
    m = res.get("measured", {})
    stored = res.get("resources_stored", 0)
    out: dict[str, Any] = {}
    for k in ("order_select", "order_sign"):
        p99 = m.get(k, {}).get("p99_ms")
        ok = isinstance(p99, int | float) and p99 <= TARGET_P99_MS and not m.get(k, {}).get("errors")
        out[f"{k}_p99_ms"] = {"target": f"<= {TARGET_P99_MS:g}", "value": p99, "met": bool(ok)}
    size_ok = stored >= TARGET_RESOURCES
    out["resources_stored"] = {"target": f">= {TARGET_RESOURCES:,}", "value": stored, "met": size_ok}
    latency = all(v["met"] for k, v in out.items() if k.endswith("_p99_ms"))
    if size_ok:
        out["verdict"] = "met" if latency else "missed"
    else:  # a --quick run: the figures say something, the target is not judged
        out["verdict"] = (f"not judged: {stored:,} resources stored, below the target's {TARGET_RESOURCES:,} "
                          f"(p99 <= {TARGET_P99_MS:g} ms at this size: {'yes' if latency else 'no'})")
    return out


def hold(path: Path, port: int, pid: int, s: Setup) -> None:
    """Write what a profiler needs to call the running server (port, pid, the clinician's headers, one
    request of each kind) to ``path`` and wait until that file is removed: for profiling the server
    (py-spy) at full size without importing the region again."""
    ks = kinds(s, 0)
    path.write_bytes(orjson.dumps({
        "port": port, "server_pid": pid, "headers": s.clinician,
        "requests": {k.name: [k.bodies[0][0], k.bodies[0][1], (k.bodies[0][2] or b"").decode()] for k in ks},
    }, option=orjson.OPT_INDENT_2))
    log(f"holding the server on port {port} (pid {pid}); remove {path} to go on")
    while path.exists():
        time.sleep(1)


def run_backend(name: str, url: str, ds: Dataset, args: argparse.Namespace, seed: dict[str, Any]) -> dict[str, Any]:
    pg_port = urlsplit(url).port if name == "postgresql" else None
    res: dict[str, Any] = {}
    phases: dict[str, float] = {}
    t0 = time.perf_counter()
    log(f"[{name}] bulk import of {ds.resources:,} resources")
    res["bulk_import"] = bench_store.bulk_import(url, ds, workers=args.import_workers, pg_port=pg_port)
    phases["bulk_import"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    client = register_client(url)
    res["knowledge"] = approve_seed(url)
    phases["accounts_and_knowledge"] = round(time.perf_counter() - t0, 1)
    log(f"[{name}] knowledge approved: {res['knowledge']}")
    with server(url, args.workers, CACHE / "logs" / f"serve-cds-{name}.log") as (port, proc):
        t0 = time.perf_counter()
        s = build_region(url, port, bearer(fetch_token(port, client)), seed)
        phases["resident_over_http"] = round(time.perf_counter() - t0, 1)
        log(f"[{name}] resident: {s.resident_resources} resources in {s.bundles} transactions "
            f"({s.write_seconds} s)")
        res["resident"] = {
            "registrations": len(s.patients), "institutions": [c for c, _n in INSTITUTIONS],
            "resources_in_compartments": s.resident_resources, "transactions": s.bundles,
            "write_seconds": s.write_seconds, "ordered": {"item": ITEM, "code": f"{ORDER_CODE[0]}|{ORDER_CODE[1]}"},
            "equivalent": f"{INSTITUTIONS[1][1]}'s report L-A1C + Observation 4548-4, {EQUIVALENT_DAYS_AGO} days ago",
            "prefetch": {k: (len(v.get("entry") or []) if v.get("resourceType") == "Bundle" else v.get("resourceType"))
                         for k, v in s.prefetch.items()},
        }
        st, body = get(HOST, port, f"/fhir/Observation?patient={','.join(s.patients)}&_summary=count",
                       headers=s.clinician)
        res["resident"]["observations_visible_to_clinician"] = orjson.loads(body).get("total") if st == 200 else st
        for k in kinds(s, 0)[2:]:  # what the baseline searches return (the rule's candidates of the item)
            st, body = get(HOST, port, k.bodies[0][1], headers=s.clinician)
            res["resident"][f"{k.name}_entries"] = len(orjson.loads(body).get("entry") or []) if st == 200 else st
        res["resident"]["baseline_query"] = kinds(s, 0)[2].bodies[0][1]
        if args.hold:
            hold(Path(args.hold), port, proc.pid, s)
        rows = bench_store.table_rows(url)
        res["resources_stored"] = rows.get("resource", 0)
        res["rows_before_measuring"] = rows
        t0 = time.perf_counter()
        res["measured"] = measure(port, s, args, pg_port)
        phases["measured"] = round(time.perf_counter() - t0, 1)
        if proc.poll() is not None:
            res["server_died"] = proc.returncode
    m = res["measured"]
    res["ratios"] = {f"{k}_vs_baseline_search": {
        "p50": _ratio(m[k].get("p50_ms"), m["baseline_search"].get("p50_ms")),
        "p99": _ratio(m[k].get("p99_ms"), m["baseline_search"].get("p99_ms")),
        "mean": _ratio(m[k].get("mean_ms"), m["baseline_search"].get("mean_ms"))} for k in ("order_select", "order_sign")}
    both = [m[k].get("mean_ms") for k in ("baseline_search", "baseline_search_reports")]
    if all(isinstance(x, int | float) for x in both):
        res["ratios"]["order_select_mean_vs_both_searches_mean"] = _ratio(m["order_select"].get("mean_ms"), sum(both))
    res["targets"] = judge(res)
    res["phase_seconds"] = phases
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_cds", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=None, help="resources in the imported region (default 1,000,000; "
                   "50,000 with --quick)")
    p.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql")
    p.add_argument("--quick", action="store_true", help="small region, fewer calls")
    p.add_argument("--calls", type=int, default=None, help="measured calls of each kind (default 1000; 200 quick)")
    p.add_argument("--slice", type=int, default=20, help="calls of one kind before the next kind (default 20)")
    p.add_argument("--warmup", type=int, default=None, help="unrecorded calls of each kind first (default 50; 20 quick)")
    p.add_argument("--clients", type=int, default=4, help="clients of the throughput phase (default 4)")
    p.add_argument("--seconds", type=float, default=None, help="throughput phase seconds (default 10; 3 quick)")
    p.add_argument("--workers", type=int, default=1, help="hutong serve --workers (default 1)")
    p.add_argument("--import-workers", type=int, default=2)
    p.add_argument("--quiet-wait", type=float, default=None, metavar="S",
                   help="before measuring wait up to S seconds for other processes to leave the CPUs "
                        "(default 60; 0 quick)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the SQLite database file afterwards")
    p.add_argument("--out", help="also write the JSON to this file")
    p.add_argument("--hold", metavar="FILE", help="after the set-up, write the server's port, pid and one request "
                   "of each kind to FILE and wait until FILE is removed (for profiling the server)")
    args = p.parse_args(argv)
    if args.size is None:
        args.size = 50_000 if args.quick else TARGET_RESOURCES
    if args.calls is None:
        args.calls = 200 if args.quick else 1000
    if args.warmup is None:
        args.warmup = 20 if args.quick else 50
    if args.seconds is None:
        args.seconds = 3.0 if args.quick else 10.0
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.quick else 60.0
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in ("sqlite", "postgresql"):
            p.error(f"unknown backend {b!r}")
    os.chdir(ROOT)
    from bench.run import _pg_version, machine

    t_all = time.perf_counter()
    seed = orjson.loads(SEED.read_bytes())
    ds = prepare(args.size, args.seed)
    doc: dict[str, Any] = {
        "benchmark": "hutong CDS Hooks at ordering time (issue 14, Speed)",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m bench.bench_cds " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "size": {"asked": args.size, "region_resources_imported": ds.resources, "data_source": ds.source,
                 "resident_resources": RESIDENT_RESOURCES, "resident_institutions": len(INSTITUTIONS)},
        "target": f"order-select and order-sign p99 <= {TARGET_P99_MS:g} ms with >= {TARGET_RESOURCES:,} resources "
                  "stored",
        "backends": {},
    }
    for b in backends:
        t0 = time.perf_counter()
        if b == "sqlite":
            with sqlite_database(f"cds-sqlite-{args.size}.db", keep=args.keep) as url:
                r = run_backend(b, url, ds, args, seed)
            r["database"] = "SQLite file, WAL, synchronous=NORMAL (Hutong's settings)"
        else:
            with postgres_cluster() as url:
                doc["machine"]["postgresql"] = _pg_version(url)
                r = run_backend(b, url, ds, args, seed)
            r["database"] = ("throw-away PostgreSQL cluster (tests/pgcluster.py, durable: fsync on, "
                             "synchronous_commit on)")
        r["seconds"] = round(time.perf_counter() - t0, 1)
        doc["backends"][b] = r
    doc["targets_met"] = {b: r["targets"]["verdict"] for b, r in doc["backends"].items()}
    doc["notes"] = [
        "Latencies are per request, client side, one client at a time (concurrency 1), after an unrecorded "
        "warm-up; hook calls and baselines are interleaved in slices in rotating order.",
        "Every answer is checked: each hook call must return the recognition card naming the other "
        "institution's result (order-sign: a warning with the five 不互认理由), each baseline search at least "
        "one entry; failed checks are errors, not latencies.",
        "baseline_search is the same query without rules: the Observation search the recognition rule runs for "
        "the ordered item (patient = the five linked registrations, code = every code of the item, date >= the "
        "window's start, _count=1000, _total=none), over the same HTTP stack with the same clinician token, so "
        "the gate, token check, Access and audit row are in both; the ratio is what the rules add. "
        "baseline_search_reports is the rule's other search (DiagnosticReport).",
        "Each hook call also writes a cds-cards audit row (the cards given, for feedback and the 互认 dashboard) "
        "besides the gate's audit row; a search writes only the gate's.",
        f"The machine has {os.cpu_count()} cores shared by the server, the database, this load generator and, "
        "on this machine, other people's work: cpu.others_cores is what other processes used during the "
        "measurement; figures measured while it was high are upper bounds of the latency.",
    ]
    if ds.resources + RESIDENT_RESOURCES < TARGET_RESOURCES:
        doc["notes"].append(f"Run at {ds.resources:,} region resources, not the target's {TARGET_RESOURCES:,}: "
                            "the latency figures do not judge the target.")
    doc["seconds"] = round(time.perf_counter() - t_all, 1)
    emit(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
