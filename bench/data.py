"""The benchmark data set: a synthetic region of >= N resources plus one heavy patient.

Generated once per (size, seed) under ``var/bench/data-<size>-s<seed>/`` and
reused: ``region/`` holds the NDJSON files that are bulk-imported (the
generator's files plus ``BenchHeavyPatient.ndjson``) and ``bench-meta.json``,
written last, records counts and the samples the HTTP phases draw from
(ids to read, Patient identifiers to search, the heavy patient's id).

The region comes from :mod:`hutong.synth`.  While that generator is not
importable (it is being written alongside), the Synthea sample export in
``../shared/data/synthea-10`` is replicated with fresh ids instead, and the
metadata says so.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from hutong.ingest.bulk import ndjson_files
from hutong.systems import ID_CARD

CACHE = Path("var/bench")
SYNTHEA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "synthea-10"
HEAVY_ID = "bench-heavy-patient"
HEAVY_FILE = "BenchHeavyPatient.ndjson"
HEAVY_IDENTIFIER = (ID_CARD, "11010119800101999X")
META = "bench-meta.json"
FORMAT = 2  # bump when the layout or the samples change, to regenerate caches
# Types whose count follows the number of institutions, not of residents.
DIRECTORY_TYPES = frozenset({"Organization", "Location", "Practitioner", "PractitionerRole", "HealthcareService",
                             "Endpoint"})
MARGIN = 1.04  # generate a little more than asked: the per-resident yield varies with the seed

Log = Callable[[str], None]


def stderr_log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Dataset:
    dir: Path  # the directory handed to import_ndjson
    size_asked: int
    seed: int
    resources: int  # lines in the NDJSON files = resources the import stores
    by_type: dict[str, int]
    source: str  # "hutong.synth" or "synthea-10 replicated"
    generator: dict[str, Any]  # what was asked of the generator, and how long it took
    heavy_patient: str = HEAVY_ID
    heavy_resources: int = 0  # resources in the heavy patient's compartment (including the Patient)
    read_sample: list[tuple[str, str]] = field(default_factory=list)
    patient_sample: list[str] = field(default_factory=list)
    identifier_sample: list[tuple[str, str]] = field(default_factory=list)
    bytes: int = 0
    synth_version: str = ""  # fingerprint of hutong/synth's source when the region was generated

    def files(self) -> list[Path]:
        return ndjson_files(self.dir)


# ---------------------------------------------------------------- the heavy patient
def heavy_patient_resources(n: int = 500) -> list[dict[str, Any]]:
    """One Patient plus ``n - 1`` resources in its compartment (encounters, results, ...).

    Proportions follow a chronically ill adult's two-year record: per encounter
    about five lab results, plus diagnoses, prescriptions and procedures.
    """
    rng = random.Random(20261101)
    pid = HEAVY_ID
    subj = {"reference": f"Patient/{pid}"}
    out: list[dict[str, Any]] = [{
        "resourceType": "Patient", "id": pid,
        "identifier": [{"system": HEAVY_IDENTIFIER[0], "value": HEAVY_IDENTIFIER[1]}],
        "name": [{"text": "王大伟", "family": "王", "given": ["大伟"]}],
        "gender": "male", "birthDate": "1980-01-01",
    }]
    rest = n - 1
    n_enc = rest * 12 // 100
    n_obs = rest * 60 // 100
    n_cond = rest * 10 // 100
    n_med = rest * 10 // 100
    n_proc = rest - n_enc - n_obs - n_cond - n_med
    encs = []
    for i in range(n_enc):
        day = f"2025-{1 + i % 12:02d}-{1 + (i * 7) % 28:02d}"
        eid = f"bench-heavy-enc-{i:04d}"
        encs.append((eid, day))
        out.append({
            "resourceType": "Encounter", "id": eid, "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": subj, "period": {"start": f"{day}T09:00:00+08:00", "end": f"{day}T09:30:00+08:00"},
        })
    labs = [("2345-7", "Glucose", "mmol/L", 4.0, 9.0), ("4548-4", "HbA1c", "%", 5.0, 9.0),
            ("2160-0", "Creatinine", "umol/L", 50, 120), ("718-7", "Hemoglobin", "g/L", 110, 170),
            ("2093-3", "Cholesterol", "mmol/L", 3.0, 7.0)]
    for i in range(n_obs):
        eid, day = encs[i % len(encs)]
        code, disp, unit, lo, hi = labs[i % len(labs)]
        out.append({
            "resourceType": "Observation", "id": f"bench-heavy-obs-{i:04d}", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": disp}]},
            "subject": subj, "encounter": {"reference": f"Encounter/{eid}"},
            "effectiveDateTime": f"{day}T09:10:00+08:00",
            "valueQuantity": {"value": round(rng.uniform(lo, hi), 1), "unit": unit,
                              "system": "http://unitsofmeasure.org", "code": unit},
        })
    for i in range(n_cond):
        eid, day = encs[i % len(encs)]
        out.append({
            "resourceType": "Condition", "id": f"bench-heavy-cond-{i:04d}",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "E11.9"}], "text": "2型糖尿病"},
            "subject": subj, "encounter": {"reference": f"Encounter/{eid}"}, "onsetDateTime": day,
        })
    for i in range(n_med):
        eid, day = encs[i % len(encs)]
        out.append({
            "resourceType": "MedicationRequest", "id": f"bench-heavy-med-{i:04d}", "status": "completed",
            "intent": "order", "medicationCodeableConcept": {"text": "二甲双胍片 0.5g"},
            "subject": subj, "encounter": {"reference": f"Encounter/{eid}"}, "authoredOn": day,
        })
    for i in range(n_proc):
        eid, day = encs[i % len(encs)]
        out.append({
            "resourceType": "Procedure", "id": f"bench-heavy-proc-{i:04d}", "status": "completed",
            "code": {"text": "静脉采血"}, "subject": subj, "encounter": {"reference": f"Encounter/{eid}"},
            "performedDateTime": f"{day}T09:05:00+08:00",
        })
    return out


def write_heavy(region: Path, n: int = 500) -> int:
    res = heavy_patient_resources(n)
    with (region / HEAVY_FILE).open("wb") as f:
        for r in res:
            f.write(orjson.dumps(r) + b"\n")
    return len(res)


# ---------------------------------------------------------------- the region
def _count(region: Path) -> tuple[int, dict[str, int]]:
    total = 0
    by_type: dict[str, int] = {}
    for f in ndjson_files(region):
        with f.open("rb") as fh:
            for line in fh:
                if not line.strip():
                    continue
                total += 1
                m = re.search(rb'"resourceType"\s*:\s*"([A-Za-z]+)"', line)
                t = m.group(1).decode() if m else "?"
                by_type[t] = by_type.get(t, 0) + 1
    return total, by_type


def synth_version() -> str:
    """A fingerprint of the generator's source: a changed generator means a new region."""
    root = Path(__file__).resolve().parents[1] / "hutong" / "synth"
    h = hashlib.sha1()
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.suffix in (".py", ".json", ".txt", ".csv"):
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:10]


def _institutions_for(residents: int) -> int:
    return max(10, min(2000, residents // 200))


def _synth_calibrate(cache: Path, seed: int, log: Log) -> tuple[float, float]:
    """Resources per resident and per institution, measured on a small region (cached)."""
    from hutong.synth import SynthConfig, generate

    f = cache / f"calibration-s{seed}-{synth_version()}.json"
    if f.exists():
        c = json.loads(f.read_text())
        return float(c["per_resident"]), float(c["per_institution"])
    tmp = cache / f"calibration-s{seed}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    residents, insts = 1000, 10
    t0 = time.perf_counter()
    generate(tmp, SynthConfig(residents=residents, institutions=insts, seed=seed))
    _total, by_type = _count(tmp)
    directory = sum(n for t, n in by_type.items() if t in DIRECTORY_TYPES)
    clinical = sum(n for t, n in by_type.items() if t not in DIRECTORY_TYPES)
    per_res, per_inst = clinical / residents, directory / insts
    log(f"synth calibration: {residents} residents, {insts} institutions -> {clinical} clinical + "
        f"{directory} directory resources in {time.perf_counter() - t0:.1f}s")
    f.write_text(json.dumps({"per_resident": per_res, "per_institution": per_inst, "by_type": by_type}))
    shutil.rmtree(tmp, ignore_errors=True)
    return per_res, per_inst


def _generate_synth(cache: Path, region: Path, size: int, seed: int, log: Log) -> dict[str, Any]:
    from hutong.synth import SynthConfig, generate

    per_res, per_inst = _synth_calibrate(cache, seed, log)
    residents = max(100, int(size / per_res))
    for _ in range(20):  # fixed point: institutions depend on residents
        need = size * MARGIN - _institutions_for(residents) * per_inst
        residents = max(100, int(need / per_res) + 1)
    insts = _institutions_for(residents)
    cfg = SynthConfig(residents=residents, institutions=insts, seed=seed, workers=2)
    log(f"generating a synthetic region: {residents:,} residents, {insts:,} institutions (seed {seed}) "
        f"for ~{size:,} resources")
    t0 = time.perf_counter()
    generate(region, cfg)
    secs = time.perf_counter() - t0
    log(f"generated in {secs:.0f}s")
    return {"residents": residents, "institutions": insts, "seed": seed, "seconds": round(secs, 1)}


_UUID_RE = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _replicate_synthea(region: Path, size: int, seed: int, log: Log) -> dict[str, Any]:
    """Copies of the Synthea export, each with its own ids (every UUID rewritten consistently)."""
    src = ndjson_files(SYNTHEA)
    lines = {f.name: f.read_bytes().splitlines() for f in src}
    per_copy = sum(len(v) for v in lines.values())
    copies = -(-size // per_copy)
    log(f"hutong.synth unavailable: replicating synthea-10 x{copies} ({per_copy} resources each)")
    t0 = time.perf_counter()
    outs = {name: (region / name).open("wb") for name in lines}
    try:
        for k in range(copies):
            salt = f"{seed}:{k}:".encode()

            def sub(m: re.Match[bytes], salt: bytes = salt) -> bytes:
                return str(uuid.UUID(bytes=hashlib.md5(salt + m.group(0)).digest())).encode()

            for name, ls in lines.items():
                out = outs[name]
                for line in ls:
                    out.write(_UUID_RE.sub(sub, line) + b"\n")
    finally:
        for o in outs.values():
            o.close()
    secs = time.perf_counter() - t0
    return {"copies": copies, "seed": seed, "seconds": round(secs, 1)}


def _sample(region: Path, seed: int) -> dict[str, Any]:
    """One pass over the files: samples of ids to read, patients and identifiers to search."""
    rng = random.Random(seed)
    reads: list[tuple[str, str]] = []
    patients: list[str] = []
    idents: list[tuple[str, str]] = []
    k_read = k_pat = 0
    total_bytes = 0
    for f in ndjson_files(region):
        with f.open("rb") as fh:
            for line in fh:
                if not line.strip():
                    continue
                total_bytes += len(line)
                r = orjson.loads(line)
                t, i = r["resourceType"], r.get("id")
                if not i or i.startswith("bench-heavy"):
                    continue
                k_read += 1
                if len(reads) < 20000:
                    reads.append((t, i))
                elif (j := rng.randrange(k_read)) < 20000:
                    reads[j] = (t, i)
                if t == "Patient":
                    ids = [(x["system"], x["value"]) for x in r.get("identifier", [])
                           if isinstance(x, dict) and x.get("system") and x.get("value")
                           and "|" not in x["value"] and "," not in x["value"]]
                    if not ids:
                        continue
                    # A clinician searches by ID number first, else by the record number at hand.
                    pick = next((x for x in ids if x[0] == ID_CARD), ids[0])
                    k_pat += 1
                    if len(patients) < 5000:
                        patients.append(i)
                        idents.append(pick)
                    elif (j := rng.randrange(k_pat)) < 5000:
                        patients[j] = i
                        idents[j] = pick
    return {"reads": reads, "patients": patients, "identifiers": idents, "bytes": total_bytes}


def _load(d: Path, log: Log) -> Dataset | None:
    meta = d / META
    if not meta.exists():
        return None
    m = json.loads(meta.read_text())
    if m.pop("format", None) != FORMAT:
        return None
    if m["source"] == "hutong.synth" and m.get("synth_version") != synth_version():
        log(f"cached data set in {d} was made by another version of hutong.synth: regenerating")
        return None
    m["dir"] = Path(m["dir"])
    for k in ("read_sample", "identifier_sample"):
        m[k] = [tuple(x) for x in m[k]]
    ds = Dataset(**m)
    log(f"data set from cache: {ds.dir} ({ds.resources:,} resources, {ds.source})")
    return ds


def _finish(d: Path, size: int, seed: int, source: str, gen: dict[str, Any], heavy: int, log: Log) -> Dataset:
    region = d / "region"
    write_heavy(region, heavy)
    total, by_type = _count(region)
    s = _sample(region, seed)
    ds = Dataset(dir=region, size_asked=size, seed=seed, resources=total, by_type=by_type, source=source,
                 generator=gen, heavy_resources=heavy, read_sample=s["reads"], patient_sample=s["patients"],
                 identifier_sample=s["identifiers"], bytes=s["bytes"],
                 synth_version=synth_version() if source == "hutong.synth" else "")
    m = asdict(ds)
    m["dir"] = str(ds.dir)
    m["format"] = FORMAT
    (d / META).write_text(json.dumps(m))
    log(f"data set ready: {total:,} resources, {s['bytes'] / 1e6:.0f} MB in {d}")
    return ds


def prepare(size: int, seed: int, *, cache: Path = CACHE, log: Log = stderr_log, heavy: int = 500) -> Dataset:
    """The data set for ``size`` resources, generated now or taken from the cache.

    hutong.synth is the source; should it fail (it is being written alongside),
    the Synthea sample export replicated with fresh ids stands in, cached
    apart and said so in ``source``.
    """
    d = cache / f"data-{size}-s{seed}"
    ds = _load(d, log)
    if ds is not None:
        return ds
    try:
        from hutong.synth import SynthConfig, generate  # noqa: F401

        shutil.rmtree(d, ignore_errors=True)
        (d / "region").mkdir(parents=True)
        gen = _generate_synth(cache, d / "region", size - heavy, seed, log)
        return _finish(d, size, seed, "hutong.synth", gen, heavy, log)
    except Exception as e:  # noqa: BLE001 - any failure of the generator: fall back, loudly
        log(f"WARNING: hutong.synth failed ({type(e).__name__}: {e}); using replicated Synthea data instead")
        reason = f"{type(e).__name__}: {e}"[:300]
    d = cache / f"data-{size}-s{seed}-synthea"
    ds = _load(d, log)
    if ds is not None:
        return ds
    shutil.rmtree(d, ignore_errors=True)
    (d / "region").mkdir(parents=True)
    gen = _replicate_synthea(d / "region", size - heavy, seed, log)
    gen["why"] = f"hutong.synth failed: {reason}"
    return _finish(d, size, seed, "synthea-10 replicated", gen, heavy, log)
