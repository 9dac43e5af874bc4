"""Master patient index: accuracy on the synthetic region, inline latency against
an index of a million persons, and a full relink.  One JSON document on stdout.

    python -m bench.bench_mpi                  # 20,000 residents; 400,000 at scale; index of 1,000,000 persons
    python -m bench.bench_mpi --quick          # 2,000 residents; 20,000 at scale; index of 50,000 persons
    python -m bench.bench_mpi --parts accuracy --residents 5000 --seed 2
    python -m bench.bench_mpi --out var/bench/mpi.json

accuracy  Every source Patient of a hutong.synth region (identities only:
          ``clinical=False``) is written through the store with the MPI hook, one
          transaction each (the inline path of a REST create, without HTTP).  The
          result is scored pairwise against the generator's ground truth: two
          sources truly match iff they are the same resident; an auto-link is two
          sources sharing a person.  Reported: precision / recall / F1, open review
          items (and how many are true matches), hard-negative residents (namesakes
          born the same day) whose sources ended in one person, recall per noise
          kind, and the comparison patterns of missed and false pairs.
          (a) with the shipped default model, (b) after ``train.fit`` on the
          loaded features (ground truth unused), ``store`` and ``relink``.
          Baselines on the same features, same run: deterministic linkage on the
          valid ID number alone, and on ID number or exact name + birth date.
scale     The same scores for every source of 400,000 residents (~1,040,000
          sources; a region this size has the namesakes a 20,000-resident one
          lacks), linked by replaying the inline decisions in memory: relink's
          loop without the database (same keys, block depth, ``decide``).
          Default model, and a model fitted on those features.
latency   An index of N persons (default 1,000,000), one source each: the first
          registration of each of N synthetic residents.  Built without the hook:
          mpi_source / mpi_block rows from hutong.mpi.features / blocking written
          with executemany, source Patients and golden records with insert_many,
          in large transactions.  Cached in var/bench/mpi-index-<N>-s<seed>/ and
          copied for each run.  Probes: other registrations of indexed residents
          (the person exists) and first registrations of residents not indexed
          (a new person).  (i) decision only: features, then ``Mpi._decide``
          inside a write transaction (candidate lookup + scoring); (ii) the full
          inline create: ``transact`` + ``w.insert`` with the hook (golden record
          written) + COMMIT, alternating with (baseline) the same create with
          ``hooks=False``: the store's own cost under the same conditions.
relink    ``relink(mpi)`` over the latency index (after the probes): a dry run,
          then a real one, each in a child process so that its peak RSS is its own.

Not a test; not run in CI.  The machine is shared: each phase records the cores
other processes used (``cpu.others_cores``); figures measured while it was high
are lower bounds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.cpuload import CpuMeter, wait_for_quiet
from bench.data import CACHE, stderr_log, synth_version
from bench.databases import remove_sqlite
from bench.report import emit
from hutong.fhir.assembly import open_repository
from hutong.mpi import state as st
from hutong.mpi.blocking import MAX_BLOCK, raw_keys
from hutong.mpi.comparisons import COMPARISONS, Gamma, gamma
from hutong.mpi.features import Features, extract, merge
from hutong.mpi.fellegi_sunter import NULL
from hutong.mpi.golden import SourceView, build, with_person_link
from hutong.mpi.matcher import decide
from hutong.mpi.model import MpiModel, default_model
from hutong.mpi.relink import relink
from hutong.mpi.service import Mpi
from hutong.mpi.train import fit, load_features, store
from hutong.security.guard import as_operator
from hutong.store.sql import SqlRepository
from hutong.synth import SynthConfig, generate
from hutong.synth.pipeline import iter_chunk_outputs

ROOT = Path(__file__).resolve().parents[1]
Log = Callable[[str], None]

# The targets (2-core machine).
TARGETS: dict[str, tuple[str, str, float]] = {
    "f1_default_model": ("accuracy.default.auto_links.f1", ">=", 0.995),
    "f1_trained_model": ("accuracy.trained.auto_links.f1", ">=", 0.995),
    "f1_default_model_at_scale": ("scale.default.auto_links.f1", ">=", 0.995),
    "f1_trained_model_at_scale": ("scale.trained.auto_links.f1", ">=", 0.995),
    "hard_negative_merges_default": ("accuracy.default.hard_negatives.merged_pairs", "<=", 0),
    "hard_negative_merges_trained": ("accuracy.trained.hard_negatives.merged_pairs", "<=", 0),
    "hard_negative_merges_default_at_scale": ("scale.default.hard_negatives.merged_pairs", "<=", 0),
    "hard_negative_merges_trained_at_scale": ("scale.trained.hard_negatives.merged_pairs", "<=", 0),
    "decision_p99_ms": ("latency.decision.p99_ms", "<=", 20),
    "inline_create_p99_ms": ("latency.inline_create.p99_ms", "<=", 20),
    "relink_seconds": ("relink.full.wall_s", "<=", 300),
}
INDEX_FORMAT = 1  # bump when the index layout or the probe choice changes


# ============================================================================ helpers
def _c2(n: int) -> int:
    return n * (n - 1) // 2


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 6) if b else None


def percentiles(xs_s: Sequence[float]) -> dict[str, Any]:
    """p50/p95/p99/max of durations in seconds, as milliseconds (nearest rank)."""
    xs = sorted(xs_s)
    if not xs:
        return {"n": 0}

    def p(q: float) -> float:
        return round(xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))] * 1000, 3)

    return {"n": len(xs), "p50_ms": p(0.50), "p95_ms": p(0.95), "p99_ms": p(0.99), "max_ms": round(xs[-1] * 1000, 3),
            "mean_ms": round(sum(xs) / len(xs) * 1000, 3)}


def _db_bytes(path: Path) -> int:
    return sum(q.stat().st_size for q in (path, Path(f"{path}-wal")) if q.exists())


def _table_bytes(path: Path) -> dict[str, int]:
    """Bytes per table including its indexes (SQLite dbstat)."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
        owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_master").fetchall())
    except sqlite3.Error:
        return {}
    finally:
        conn.close()
    out: Counter[str] = Counter()
    for name, size in rows:
        out[owner.get(name, name)] += int(size)
    return dict(out.most_common())


def _mpi(repo: SqlRepository) -> Mpi:
    for h in repo.hooks:
        if isinstance(h, Mpi):
            return h
    raise RuntimeError("open_repository installed no Mpi hook")


def _mib(kib: int) -> float:
    return round(kib / 1024, 1)


def _judge(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, (path, op, target) in TARGETS.items():
        v: Any = result
        for part in path.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        if v is None:
            continue
        out[key] = {"value": v, "target": f"{op} {target}", "met": v >= target if op == ">=" else v <= target}
    return out


def _environment() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=False).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "hutong/mpi"],
                                    capture_output=True, text=True, check=False).stdout.strip())
    except OSError:
        commit, dirty = "", False
    return {"commit": os.environ.get("BENCH_COMMIT", commit), "hutong_mpi_uncommitted_changes": dirty,
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "cpus": os.cpu_count(),
            "mpi_version": mpi_version()}


def mpi_version() -> str:
    """Fingerprint of what the index rows depend on (a change means rebuilding the cached index)."""
    h = hashlib.sha1()
    for name in ("features.py", "blocking.py", "normalize.py", "idnumber.py", "schema.py", "golden.py"):
        h.update((ROOT / "hutong" / "mpi" / name).read_bytes())
    return h.hexdigest()[:10]


# ============================================================================ the region
def region(residents: int, institutions: int, seed: int, log: Log) -> Path:
    """The synthetic region's identities (no clinical records), generated once and cached."""
    d = CACHE / f"mpi-region-{residents}-i{institutions}-s{seed}"
    stamp = d / "bench-synth-version"
    if stamp.exists() and stamp.read_text() == synth_version():
        return d
    log(f"generating {residents:,} residents at {institutions} institutions (seed {seed}) into {d}")
    CACHE.mkdir(parents=True, exist_ok=True)
    rep = generate(d, SynthConfig(residents=residents, institutions=institutions, seed=seed, clinical=False),
                   overwrite=True)
    log(f"  {rep.counts.get('Patient', 0):,} source Patients in {rep.seconds:.1f} s")
    stamp.write_text(synth_version())
    return d


@dataclass
class Truth:
    resident: dict[str, str]                 # source Patient id -> resident
    noise: dict[str, tuple[str, ...]]        # source Patient id -> noise kinds applied
    hard_negatives: set[tuple[str, str]]     # resident pairs (sorted)


def read_truth(d: Path) -> Truth:
    resident: dict[str, str] = {}
    noise: dict[str, tuple[str, ...]] = {}
    with open(d / "ground_truth.ndjson", "rb") as f:
        for line in f:
            t = orjson.loads(line)
            resident[t["patient"]] = t["resident"]
            noise[t["patient"]] = tuple(t["noise"])
    hn: set[tuple[str, str]] = set()
    with open(d / "hard_negatives.ndjson", "rb") as f:
        for line in f:
            if line.strip():
                h = orjson.loads(line)
                a, b = sorted((h["a"], h["b"]))
                hn.add((a, b))
    return Truth(resident, noise, hn)


# ============================================================================ scoring a linkage
def pairwise(person_of: dict[str, str], truth: Truth) -> dict[str, Any]:
    """Pairwise precision/recall/F1 of a clustering of sources, and hard-negative merges."""
    by_person: dict[str, Counter[str]] = defaultdict(Counter)
    for pid, person in person_of.items():
        by_person[person][truth.resident[pid]] += 1
    tp = sum(_c2(n) for cnt in by_person.values() for n in cnt.values())
    predicted = sum(_c2(sum(cnt.values())) for cnt in by_person.values())
    by_res = Counter(truth.resident[p] for p in person_of)
    true = sum(_c2(n) for n in by_res.values())
    precision = tp / predicted if predicted else 1.0
    recall = tp / true if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    hn_pairs: set[tuple[str, str]] = set()
    hn_source_pairs = 0
    for cnt in by_person.values():
        if len(cnt) < 2:
            continue
        rs = sorted(cnt)
        for i, a in enumerate(rs):
            for b in rs[i + 1:]:
                if (a, b) in truth.hard_negatives:
                    hn_pairs.add((a, b))
                    hn_source_pairs += cnt[a] * cnt[b]
    residents_split = Counter(r for cnt in by_person.values() for r in cnt)
    return {
        "auto_links": {"precision": round(precision, 6), "recall": round(recall, 6), "f1": round(f1, 6),
                       "true_pairs": true, "linked_pairs": predicted, "correct_pairs": tp,
                       "false_pairs": predicted - tp, "missed_pairs": true - tp},
        "hard_negatives": {"resident_pairs": len(truth.hard_negatives), "merged_pairs": len(hn_pairs),
                           "merged_source_pairs": hn_source_pairs},
        "sources": len(person_of), "residents": len(by_res), "persons": len(by_person),
        "persons_with_several_residents": sum(1 for cnt in by_person.values() if len(cnt) > 1),
        "residents_split_over_persons": sum(1 for n in residents_split.values() if n > 1),
    }


def _union_find(ids: Sequence[str], keys: Callable[[str], Iterable[str]]) -> dict[str, str]:
    parent = {i: i for i in ids}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first: dict[str, str] = {}
    for i in ids:
        for k in keys(i):
            j = first.setdefault(k, i)
            if j != i:
                parent[find(i)] = find(j)
    return {i: find(i) for i in ids}


def baselines(feats: dict[str, Features], truth: Truth) -> dict[str, Any]:
    """Deterministic rules on the same features: what the probabilistic model has to beat."""
    ids = sorted(feats)
    id_only = _union_find(ids, lambda p: feats[p].ids)
    id_or_demo = _union_find(ids, lambda p: [*feats[p].ids, *(f"{n}|{b}" for n in feats[p].names
                                                              for b in feats[p].birth_dates)])
    out = {}
    for name, clusters in (("valid_id_number", id_only), ("id_number_or_exact_name_and_birth_date", id_or_demo)):
        r = pairwise(clusters, truth)
        out[name] = {"auto_links": r["auto_links"], "hard_negatives": r["hard_negatives"]}
    return out


_SHORT = ("id", "name", "birth", "sex", "phone", "addr", "card", "passport")


def describe(g: Gamma) -> str:
    return " ".join(f"{_SHORT[i]}={'-' if lv == NULL else COMPARISONS[i].levels[lv]}" for i, lv in enumerate(g))


def _weights(model: MpiModel) -> dict[str, Any]:
    ws = model.fs.weights()
    return {"prior_log2_odds": round(model.fs.prior_weight(), 2), "upper": model.upper, "lower": model.lower,
            "levels": {c.name: {lv: round(ws[i][j], 2) for j, lv in enumerate(c.levels)}
                       for i, c in enumerate(COMPARISONS)}}


def evaluate(repo: SqlRepository, mpi: Mpi, truth: Truth) -> dict[str, Any]:
    """Score the linkage now in the index against the ground truth."""
    rows = repo.query("SELECT patient_id, person_id, state, rule, features FROM mpi_source", ())
    person_of = {r[0]: r[1] for r in rows}
    rule_of = {r[0]: r[3] for r in rows}
    feats = {r[0]: st.decode_features(repo, r[4]) for r in rows}
    reviews = repo.query("SELECT patient_id, person_id, reason FROM mpi_review WHERE status = 'open'", ())
    out = assess(person_of, rule_of, feats, [tuple(r) for r in reviews], truth, mpi.model())
    out["states"] = dict(Counter(r[2] for r in rows).most_common())
    return out


def assess(person_of: dict[str, str], rule_of: dict[str, str], feats: dict[str, Features],
           reviews: Sequence[tuple[str, str, str]], truth: Truth, model: MpiModel) -> dict[str, Any]:
    """Pairwise scores, review items, recall per noise kind and the patterns of errors."""
    out = pairwise(person_of, truth)
    out["rules"] = dict(Counter(rule_of.values()).most_common())
    residents_of: dict[str, set[str]] = defaultdict(set)
    for pid, person in person_of.items():
        residents_of[person].add(truth.resident[pid])
    review_pairs = {(p, q) for p, q, _r in reviews}
    by_reason: dict[str, Counter[str]] = defaultdict(Counter)
    true_reviews = 0
    for p, q, reason in reviews:
        ok = truth.resident[p] in residents_of.get(q, ())
        true_reviews += ok
        by_reason[reason]["true" if ok else "false"] += 1
    out["review"] = {"open_items": len(reviews), "true_matches": true_reviews,
                     "false_matches": len(reviews) - true_reviews,
                     "sources_with_items": len({p for p, _q, _r in reviews}),
                     "by_reason": {k: dict(v) for k, v in sorted(by_reason.items())}}

    # Recall per noise kind: over the true pairs involving a source with that noise.
    by_resident: dict[str, list[str]] = defaultdict(list)
    for pid in person_of:
        by_resident[truth.resident[pid]].append(pid)
    total: Counter[str] = Counter()
    linked: Counter[str] = Counter()
    in_review: Counter[str] = Counter()
    missed: Counter[str] = Counter()
    missed_noise: dict[str, Counter[str]] = defaultdict(Counter)
    recovered = 0
    for srcs in by_resident.values():
        for i, s in enumerate(srcs):
            for t in srcs[i + 1:]:
                kinds = set(truth.noise[s]) | set(truth.noise[t]) or {"(none)"}
                ok = person_of[s] == person_of[t]
                rev = not ok and ((s, person_of[t]) in review_pairs or (t, person_of[s]) in review_pairs)
                recovered += rev
                for k in kinds:
                    total[k] += 1
                    linked[k] += ok
                    in_review[k] += rev
                if not ok:
                    desc = describe(gamma(feats[s], feats[t]))
                    missed[desc] += 1
                    missed_noise[desc].update(kinds)
    out["auto_links"]["recall_if_true_reviews_accepted"] = _ratio(out["auto_links"]["correct_pairs"] + recovered,
                                                                  out["auto_links"]["true_pairs"])
    out["recall_by_noise"] = {k: {"true_pairs": total[k], "linked": linked[k], "recall": _ratio(linked[k], total[k]),
                                  "missed_in_review": in_review[k]}
                              for k in sorted(total, key=lambda k: (k != "(none)", k))}

    # Why pairs were missed / wrongly linked: source-to-source comparison patterns.
    def _pw(desc: str, s: str, t: str) -> float:
        return round(model.weight(gamma(feats[s], feats[t]), tuple(set(feats[s].names) & set(feats[t].names))), 2)

    missed_example: dict[str, tuple[str, str]] = {}
    for srcs in by_resident.values():
        for i, s in enumerate(srcs):
            for t in srcs[i + 1:]:
                if person_of[s] != person_of[t]:
                    missed_example.setdefault(describe(gamma(feats[s], feats[t])), (s, t))
    out["missed_patterns"] = [{"pattern": d, "pairs": n, "pair_weight": _pw(d, *missed_example[d]),
                               "noise": dict(missed_noise[d].most_common(4))}
                              for d, n in missed.most_common(12)]
    by_person: dict[str, list[str]] = defaultdict(list)
    for pid, person in person_of.items():
        by_person[person].append(pid)
    false: Counter[str] = Counter()
    false_rules: dict[str, Counter[str]] = defaultdict(Counter)
    false_hn: Counter[str] = Counter()
    false_example: dict[str, tuple[str, str]] = {}
    for srcs in by_person.values():
        for i, s in enumerate(srcs):
            for t in srcs[i + 1:]:
                rs, rt = truth.resident[s], truth.resident[t]
                if rs != rt:
                    d = describe(gamma(feats[s], feats[t]))
                    false[d] += 1
                    false_rules[d].update((rule_of[s], rule_of[t]))
                    false_hn[d] += tuple(sorted((rs, rt))) in truth.hard_negatives
                    false_example.setdefault(d, (s, t))
    out["false_patterns"] = [{"pattern": d, "pairs": n, "pair_weight": _pw(d, *false_example[d]),
                              "rules": dict(false_rules[d]), "hard_negative_pairs": false_hn[d]}
                             for d, n in false.most_common(12)]
    out["model"] = {"version": model.version, **_weights(model)}
    return out


# ============================================================================ part 1: accuracy
def load_inline(repo: SqlRepository, patients: list[dict[str, Any]], log: Log) -> dict[str, Any]:
    """Every source Patient through the store with the hook, one transaction each."""
    times: list[float] = []
    t0 = time.perf_counter()
    with CpuMeter() as cpu:
        for n, p in enumerate(patients, 1):
            body = p
            s = time.perf_counter()
            as_operator(repo).transact(lambda w, body=body: w.insert("Patient", body["id"], body))
            times.append(time.perf_counter() - s)
            if n % 10_000 == 0:
                log(f"  {n:,} / {len(patients):,} sources, {n / (time.perf_counter() - t0):.0f}/s")
    wall = time.perf_counter() - t0
    tail = times[-max(1, len(times) // 10):]
    return {"sources": len(patients), "seconds": round(wall, 1), "sources_per_s": round(len(patients) / wall, 1),
            "last_tenth_sources_per_s": round(len(tail) / sum(tail), 1), "create": percentiles(times),
            "cpu": cpu.result}


def accuracy(residents: int, institutions: int, seed: int, log: Log, keep: bool = False) -> dict[str, Any]:
    d = region(residents, institutions, seed, log)
    truth = read_truth(d)
    with open(d / "Patient.ndjson", "rb") as f:
        patients = [orjson.loads(line) for line in f]
    manifest = orjson.loads((d / "manifest.json").read_bytes())
    db = (CACHE / f"mpi-accuracy-{residents}-s{seed}.db").resolve()
    remove_sqlite(db)
    repo = open_repository(f"sqlite:///{db}")
    mpi = _mpi(repo)
    out: dict[str, Any] = {"region": {"residents": residents, "institutions": institutions, "seed": seed,
                                      "sources": len(patients),
                                      "hard_negative_pairs": len(truth.hard_negatives),
                                      "noise_applied": {k: v["applied"] for k, v in
                                                        manifest["noise"]["observed"].items()}}}
    try:
        wait_for_quiet(20)
        log(f"accuracy: loading {len(patients):,} source Patients through the inline path")
        out["load"] = load_inline(repo, patients, log)
        log(f"  {out['load']['sources_per_s']} sources/s")
        log("accuracy: evaluating the default model")
        out["default"] = evaluate(repo, mpi, truth)
        feats = {pid: f for pid, f in zip(
            [r[0] for r in repo.query("SELECT patient_id FROM mpi_source ORDER BY seq, patient_id", ())],
            load_features(mpi), strict=True)}
        out["baselines"] = baselines(feats, truth)
        log("accuracy: fit on the loaded features, store, relink")
        t = time.perf_counter()
        model = fit(list(feats.values()))
        fit_s = time.perf_counter() - t
        version = store(mpi, model)
        t = time.perf_counter()
        with CpuMeter() as cpu:
            rep = relink(mpi)
        out["training"] = {"fit_s": round(fit_s, 1), "version": version, "trained": model.fs.trained,
                           "prior": model.fs.prior, "relink": {**rep.to_json(), "wall_s": round(time.perf_counter() - t, 1),
                                                               "cpu": cpu.result}}
        log("accuracy: evaluating the trained model")
        out["trained"] = evaluate(repo, mpi, truth)
    finally:
        repo.db.close()
        if not keep:
            remove_sqlite(db)
    return out


# ============================================================================ part 1b: accuracy at scale
def replay(model: MpiModel, order: Sequence[str], feats: dict[str, Features]
           ) -> tuple[dict[str, str], dict[str, str], list[tuple[str, str, str]]]:
    """Inline linkage of ``order`` replayed in memory: relink's loop (hutong.mpi.relink)
    without the database - the same blocking keys, block depth, person features and
    ``decide`` - so it decides what the inline path would."""
    blocks: dict[str, list[str]] = defaultdict(list)
    member: dict[str, str] = {}
    members: dict[str, list[str]] = defaultdict(list)
    merged: dict[str, Features] = {}
    rule_of: dict[str, str] = {}
    reviews: list[tuple[str, str, str]] = []
    n = 0
    for pid in order:
        f = feats[pid]
        keys = raw_keys(f)
        persons: dict[str, Features] = {}
        for k in keys:
            for other in blocks.get(k, ())[:MAX_BLOCK]:
                c = member[other]
                if c not in persons:
                    if c not in merged:
                        merged[c] = merge([feats[s] for s in members[c]])
                    persons[c] = merged[c]
        d = decide(model, f, persons)
        if d.person_id is None:
            key = f"k{n}"
            n += 1
        else:
            key = d.person_id
        rule_of[pid] = d.rule
        reviews += [(pid, p, why) for p, _w, why in d.review]
        member[pid] = key
        members[key].append(pid)
        merged.pop(key, None)
        for k in keys:
            blocks[k].append(pid)
    return member, rule_of, reviews


def scale(residents: int, institutions: int, seed: int, log: Log) -> dict[str, Any]:
    """Every source of ``residents`` residents (about 2.6 each), linked by replaying the
    inline decisions in memory, default model and a model fitted on those features."""
    log(f"scale: features of every source of {residents:,} residents (seed {seed})")
    t = time.perf_counter()
    feats: dict[str, Features] = {}
    resident: dict[str, str] = {}
    noise: dict[str, tuple[str, ...]] = {}
    hn: set[tuple[str, str]] = set()
    for out in iter_chunk_outputs(SynthConfig(residents=residents, institutions=institutions, seed=seed,
                                              clinical=False)):
        for g in out.truth:
            resident[g["patient"]] = g["resident"]
            noise[g["patient"]] = tuple(g["noise"])
        for body in out.resources["Patient"]:
            feats[body["id"]] = extract(body)
        for h in out.hard_negatives:
            a, b = sorted((h["a"], h["b"]))
            hn.add((a, b))
    truth = Truth(resident, noise, hn)
    order = list(feats)
    res: dict[str, Any] = {"residents": residents, "seed": seed, "sources": len(order),
                           "hard_negative_pairs": len(hn), "features_s": round(time.perf_counter() - t, 1)}
    t = time.perf_counter()
    trained = fit(list(feats.values()))
    res["fit_s"] = round(time.perf_counter() - t, 1)
    for name, model in (("default", default_model()), ("trained", trained)):
        log(f"scale: replaying {len(order):,} sources with the {name} model")
        t = time.perf_counter()
        person_of, rule_of, reviews = replay(model, order, feats)
        res[f"{name}_replay_s"] = round(time.perf_counter() - t, 1)
        res[name] = assess(person_of, rule_of, feats, reviews, truth, model)
        log(f"  F1 {res[name]['auto_links']['f1']}, hard-negative merges "
            f"{res[name]['hard_negatives']['merged_pairs']}")
    return res


# ============================================================================ part 2: the index of N persons
@dataclass
class Index:
    dir: Path
    db: Path
    meta: dict[str, Any]
    probes: list[dict[str, Any]]


def _resident_no(key: str) -> int:
    return int(key.lstrip("R"))


def person_id_of(resident: str) -> str:
    return f"mpi-{resident}"


def build_index(persons: int, probes: int, institutions: int, seed: int, log: Log) -> Index:
    """The index of ``persons`` persons (cached) and ``2 * probes`` probe Patients per kind."""
    d = CACHE / f"mpi-index-{persons}-i{institutions}-s{seed}"
    meta_path = d / "meta.json"
    want = {"format": INDEX_FORMAT, "persons": persons, "probes_per_kind": 2 * probes, "institutions": institutions,
            "seed": seed, "synth_version": synth_version(), "mpi_version": mpi_version()}
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if {k: meta.get(k) for k in want} == want:
            with open(d / "probes.ndjson", "rb") as f:
                return Index(d, d / "index.db", meta, [orjson.loads(line) for line in f])
        log(f"cached index in {d} was built differently: rebuilding")
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    db = (d / "index.db").resolve()
    n_probe = 2 * probes  # per kind; the two measurement sets use half of them (probes / 2 each)
    extra = n_probe + n_probe // 2 + 200  # residents not indexed: some have no registration
    cfg = SynthConfig(residents=persons + extra, institutions=institutions, seed=seed, clinical=False)
    repo = open_repository(f"sqlite:///{db}")
    blind = _mpi(repo).blind_key
    rng = random.Random(seed)
    existing: list[dict[str, Any]] = []  # reservoir of later registrations of indexed residents
    seen_existing = 0
    new: list[dict[str, Any]] = []
    seq = 0
    timing: Counter[str] = Counter()
    batch: list[tuple[dict[str, Any], str, Features]] = []
    t0 = time.perf_counter()

    def flush() -> None:
        nonlocal seq
        if not batch:
            return
        t = time.perf_counter()
        with repo.write() as w:
            w.execute("PRAGMA cache_size=-1048576")
            src_rows, block_rows, goldens = [], [], []
            for body, person, f in batch:
                src_rows.append((body["id"], person, "auto", "new", None, seq, w.now, st.encode_features(repo, f)))
                seq += 1
                block_rows += [(k, body["id"]) for k in sorted(f.blocking_keys(blind))]
                with_person_link(body, person)
                goldens.append(build(person, [SourceView(body["id"], body, f, w.now)]))
            t1 = time.perf_counter()
            w.cur.executemany(w.db.sql("INSERT INTO mpi_source (patient_id, person_id, state, rule, score, seq, updated, "
                                       "features) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
                              src_rows)
            w.cur.executemany(w.db.sql("INSERT INTO mpi_block (key, patient_id) VALUES (?, ?)"), block_rows)
            t2 = time.perf_counter()
            w.insert_many([("Patient", b["id"], b) for b, _p, _f in batch], hooks=False)
            w.insert_many([("Patient", g["id"], g) for g in goldens], hooks=False)
            t3 = time.perf_counter()
        timing["rows_and_golden_s"] += t1 - t
        timing["mpi_tables_s"] += t2 - t1
        timing["resources_s"] += t3 - t2
        timing["commit_s"] += time.perf_counter() - t3
        batch.clear()

    indexed = 0
    with CpuMeter() as cpu:
        for out in iter_chunk_outputs(cfg):
            t = time.perf_counter()
            truth = {g["patient"]: g for g in out.truth}
            firsts: set[str] = set()
            for body in out.resources["Patient"]:
                g = truth[body["id"]]
                r = g["resident"]
                probe = {"resident": r, "noise": g["noise"], "body": body}
                if _resident_no(r) > persons:
                    if r not in firsts and len(new) < n_probe:
                        new.append({**probe, "kind": "new", "person": None})
                    firsts.add(r)
                elif r not in firsts:
                    firsts.add(r)
                    batch.append((body, person_id_of(r), extract(body)))
                    indexed += 1
                else:
                    seen_existing += 1
                    item = {**probe, "kind": "existing", "person": person_id_of(r)}
                    if len(existing) < n_probe:
                        existing.append(item)
                    else:
                        j = rng.randrange(seen_existing)
                        if j < n_probe:
                            existing[j] = item
            timing["features_s"] += time.perf_counter() - t
            if len(batch) >= 20_000:
                flush()
                el = time.perf_counter() - t0
                log(f"  index: {indexed:,} / {persons:,} persons, {el:.0f} s "
                    f"({', '.join(f'{k} {v:.0f}' for k, v in timing.items())})")
        flush()
        t = time.perf_counter()
        with repo.write() as w:
            w.execute("ANALYZE")
        repo.db.close()
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        timing["analyze_checkpoint_s"] += time.perf_counter() - t
    if len(new) < n_probe or len(existing) < n_probe:
        raise RuntimeError(f"too few probes: {len(new)} new, {len(existing)} existing (want {n_probe})")
    probe_list = existing + new
    with open(d / "probes.ndjson", "wb") as f:
        for p in probe_list:
            f.write(orjson.dumps(p) + b"\n")
    meta = {**want, "indexed_sources": indexed, "build_s": round(time.perf_counter() - t0, 1),
            "build_phases_s": {k: round(v, 1) for k, v in timing.items()}, "build_cpu": cpu.result,
            "database_bytes": _db_bytes(db), "table_bytes": _table_bytes(db)}
    meta_path.write_text(json.dumps(meta, indent=1))
    log(f"index of {persons:,} persons built in {meta['build_s']} s, {meta['database_bytes'] / 1e9:.2f} GB")
    return Index(d, db, meta, probe_list)


def _split(probes: list[dict[str, Any]], n: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Two disjoint probe sets of ``n``, each half existing / half new persons, in a shuffled order."""
    ex = [p for p in probes if p["kind"] == "existing"]
    nw = [p for p in probes if p["kind"] == "new"]
    h = n // 2
    a, b = ex[:h] + nw[:h], ex[h:2 * h] + nw[h:2 * h]
    rng = random.Random(seed)
    rng.shuffle(a)
    rng.shuffle(b)
    return a, b


def _outcome(p: dict[str, Any], person: str | None, review: bool) -> str:
    """What became of a probe: index persons are named mpi-R..., persons the MPI starts are not."""
    if p["kind"] == "existing" and person == p["person"]:
        return "linked_to_its_person"
    if person is not None and person.startswith("mpi-R"):
        return "linked_to_another_person"
    return "new_person_with_review" if review else "new_person"


def latency(index: Index, probes: int, seed: int, log: Log) -> tuple[dict[str, Any], Path]:
    work = (CACHE / "mpi-latency-work.db").resolve()
    remove_sqlite(work)
    log(f"latency: copying the index ({index.meta['database_bytes'] / 1e9:.2f} GB)")
    shutil.copyfile(index.db, work)
    shutil.rmtree(f"{work}.keys", ignore_errors=True)
    shutil.copytree(f"{index.db}.keys", f"{work}.keys")  # the copy's master key (hutong.security.keys)
    os.sync()  # measure with the copy on disk, not while 10 GB of dirty pages are written back
    repo = open_repository(f"sqlite:///{work}")
    mpi = _mpi(repo)
    decide_set, write_set = _split(index.probes, probes, seed)
    out: dict[str, Any] = {"index": {k: index.meta[k] for k in ("persons", "indexed_sources", "build_s",
                                                                 "build_phases_s", "database_bytes", "table_bytes")}}
    try:
        # (i) the decision alone, inside a write transaction (sees what an inline write sees).
        log(f"latency: {len(decide_set)} decisions")
        out["quiet_before_decisions"] = wait_for_quiet(20)
        feat_t: list[float] = []
        dec_t: list[float] = []
        cands: list[int] = []
        outcomes: Counter[str] = Counter()
        with CpuMeter() as cpu, repo.write() as w:
            read = st.writer_reader(w)
            for p in decide_set:
                body = p["body"]
                t0 = time.perf_counter()
                f = extract(body)
                blocks = f.blocking_keys(mpi.blind_key)
                t1 = time.perf_counter()
                dec = mpi._decide(w, read, body["id"], f, blocks)
                t2 = time.perf_counter()
                feat_t.append(t1 - t0)
                dec_t.append(t2 - t1)
                cands.append(len(dec.scored))
                outcomes[f"{p['kind']}: {_outcome(p, dec.person_id, bool(dec.review))}"] += 1
        cands.sort()
        out["decision"] = {**percentiles(dec_t), "cpu": cpu.result}
        out["features"] = percentiles(feat_t)
        out["decision_with_features"] = percentiles([a + b for a, b in zip(feat_t, dec_t, strict=True)])
        out["candidates_per_decision"] = {"p50": cands[len(cands) // 2], "p99": cands[int(len(cands) * 0.99)],
                                          "max": cands[-1]}
        out["decision_outcomes"] = dict(sorted(outcomes.items()))

        # (ii) the full inline create, alternating with the same create without the hook.
        log(f"latency: {len(write_set)} inline creates (+ as many without the hook)")
        out["quiet_before_writes"] = wait_for_quiet(20)
        hooked: list[float] = []
        plain: list[float] = []
        inside: dict[str, list[float]] = {"hooked": [], "plain": []}
        hook_t: list[float] = []
        on_write = mpi.on_write

        def timed_hook(*args: Any, **kw: Any) -> bool:
            t = time.perf_counter()
            try:
                return on_write(*args, **kw)
            finally:
                hook_t.append(time.perf_counter() - t)

        mpi.on_write = timed_hook  # type: ignore[method-assign]

        def create(body: dict[str, Any], kind: str) -> None:
            def fn(w: Any) -> None:
                t = time.perf_counter()
                w.insert("Patient", body["id"], body, hooks=kind == "hooked")
                inside[kind].append(time.perf_counter() - t)
            as_operator(repo).transact(fn)

        with CpuMeter() as cpu:
            for n, p in enumerate(write_set):
                body = orjson.loads(orjson.dumps(p["body"]))
                t0 = time.perf_counter()
                create(body, "hooked")
                hooked.append(time.perf_counter() - t0)
                twin = orjson.loads(orjson.dumps(p["body"]))
                twin["id"] = f"plain-{n:05d}"
                t0 = time.perf_counter()
                create(twin, "plain")
                plain.append(time.perf_counter() - t0)
        del mpi.on_write

        # The twins were written around the MPI: delete them, or relink would backfill them.
        def drop_twins(w: Any) -> None:
            for n in range(len(write_set)):
                cur = w.read_current("Patient", f"plain-{n:05d}")
                if cur is not None:
                    w.delete(cur, hooks=False)
        repo.transact(drop_twins)
        out["inline_create"] = {**percentiles(hooked), "cpu": cpu.result}
        # Where the time goes: inside the transaction (the insert with the hook), of which the
        # hook (decision, MPI rows, golden record); the rest is COMMIT (and WAL checkpoints).
        out["inline_create_parts"] = {
            "insert_with_hook": percentiles(inside["hooked"]), "hook": percentiles(hook_t),
            "commit_and_rest": percentiles([a - b for a, b in zip(hooked, inside["hooked"], strict=True)])}
        out["baseline_create_without_hook"] = percentiles(plain)
        out["baseline_parts"] = {
            "insert": percentiles(inside["plain"]),
            "commit_and_rest": percentiles([a - b for a, b in zip(plain, inside["plain"], strict=True)])}
        mean_extra = (sum(hooked) - sum(plain)) / len(hooked)
        out["mpi_share_of_inline_create_mean_ms"] = round(mean_extra * 1000, 3)
        # The same inline create with SQLite's automatic WAL checkpoint off: what the tail
        # would be if checkpoints ran outside the committing request (the decision
        # probes, not written yet, are the bodies).
        log(f"latency: {len(decide_set)} inline creates with wal_autocheckpoint=0")
        off: list[float] = []
        with CpuMeter() as cpu:
            for p in decide_set:
                body = orjson.loads(orjson.dumps(p["body"]))

                def fn_off(w: Any, body: dict[str, Any] = body) -> None:
                    w.execute("PRAGMA wal_autocheckpoint=0")
                    w.insert("Patient", body["id"], body)
                t0 = time.perf_counter()
                as_operator(repo).transact(fn_off)
                off.append(time.perf_counter() - t0)
        out["inline_create_without_wal_autocheckpoint"] = {**percentiles(off), "cpu": cpu.result}
        ids = [p["body"]["id"] for p in write_set]
        person = st.persons_of(st.repo_reader(repo), ids)
        open_rev = {r[0] for r in repo.query("SELECT DISTINCT patient_id FROM mpi_review WHERE status = 'open'", ())}
        wo: Counter[str] = Counter()
        for p in write_set:
            pid = p["body"]["id"]
            wo[f"{p['kind']}: {_outcome(p, person.get(pid), pid in open_rev)}"] += 1
        out["write_outcomes"] = dict(sorted(wo.items()))
        out["database_bytes_after"] = _db_bytes(work)
    finally:
        repo.db.close()
    return out, work


# ============================================================================ part 3: relink
def _vm_hwm_kib() -> int | None:
    """Peak RSS of this process image (/proc: unlike ru_maxrss, not inherited across fork + exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def relink_child(db: Path, dry_run: bool) -> dict[str, Any]:
    """Run in a child process: its peak RSS is relink's (plus the interpreter's)."""
    repo = open_repository(f"sqlite:///{db}")
    mpi = _mpi(repo)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm0 = _vm_hwm_kib()
    t = time.perf_counter()
    with CpuMeter() as cpu:
        rep = relink(mpi, dry_run=dry_run)
    wall = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm = _vm_hwm_kib()
    repo.db.close()
    return {**rep.to_json(), "wall_s": round(wall, 1),
            "seconds": {k: round(v, 2) for k, v in rep.seconds.items()},
            "sources_per_s": round(rep.sources / wall) if wall else None,
            # VmHWM: this process's own peak.  ru_maxrss on Linux keeps the peak of the
            # parent at fork (the benchmark process), so it is only an upper bound here.
            "peak_rss_mib": _mib(hwm) if hwm is not None else _mib(rss),
            "peak_rss_before_relink_mib": _mib(hwm0) if hwm0 is not None else _mib(rss0),
            "ru_maxrss_mib": _mib(rss), "cpu": cpu.result}


def relink_part(db: Path, log: Log) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, dry in (("dry_run", True), ("full", False)):
        wait_for_quiet(20)
        log(f"relink ({name}) of {db}")
        args = [sys.executable, "-m", "bench.bench_mpi", "--relink-child", str(db)] + (["--dry-run"] if dry else [])
        r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"relink child failed: {r.stderr[-2000:]}")
        out[name] = json.loads(r.stdout)
        log(f"  {out[name]['wall_s']} s, {out[name]['seconds']}, peak {out[name]['peak_rss_mib']} MiB")
    return out


# ============================================================================ the command
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2,000 residents, index of 50,000 persons, 500 probes")
    ap.add_argument("--parts", default="accuracy,scale,latency,relink",
                    help="comma-separated subset of accuracy,scale,latency,relink; 'build' only builds the cached index")
    ap.add_argument("--residents", type=int, help="accuracy region (default 20,000; quick 2,000)")
    ap.add_argument("--institutions", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scale-residents", type=int, help="scale part: residents (default 400,000 = ~1M sources; "
                    "quick 20,000)")
    ap.add_argument("--index-persons", type=int, help="latency index size (default 1,000,000; quick 50,000)")
    ap.add_argument("--probes", type=int, help="probes per latency measurement (default 2,000; quick 500)")
    ap.add_argument("--keep", action="store_true", help="keep the accuracy and latency databases in var/bench")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    ap.add_argument("--relink-child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--dry-run", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.relink_child:
        print(json.dumps(relink_child(a.relink_child, a.dry_run)))
        return 0
    parts = {p.strip() for p in a.parts.split(",") if p.strip()}
    residents = a.residents or (2_000 if a.quick else 20_000)
    persons = a.index_persons or (50_000 if a.quick else 1_000_000)
    scale_residents = a.scale_residents or (20_000 if a.quick else 400_000)
    probes = a.probes or (500 if a.quick else 2_000)
    log = stderr_log
    t0 = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "mpi", "quick": a.quick, "environment": _environment(),
                              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if "accuracy" in parts:
        result["accuracy"] = accuracy(residents, a.institutions, a.seed, log, keep=a.keep)
    if "scale" in parts:
        result["scale"] = scale(scale_residents, a.institutions, a.seed, log)
    work: Path | None = None
    if parts & {"latency", "relink", "build"}:
        index = build_index(persons, probes, a.institutions, a.seed, log)
        result["index"] = index.meta
        if "latency" in parts:
            result["latency"], work = latency(index, probes, a.seed, log)
        if "relink" in parts:
            if work is None:
                work = (CACHE / "mpi-latency-work.db").resolve()
                remove_sqlite(work)
                shutil.copyfile(index.db, work)
                shutil.rmtree(f"{work}.keys", ignore_errors=True)
                shutil.copytree(f"{index.db}.keys", f"{work}.keys")  # the copy's master key (hutong.security.keys)
                os.sync()
            result["relink"] = {"index_persons": persons, **relink_part(work, log)}
        if work is not None and not a.keep:
            remove_sqlite(work)
    result["targets"] = _judge(result)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    emit(result, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
