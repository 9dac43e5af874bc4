"""Generating a region: directory (institutions, physicians), then residents chunk by chunk.

Streaming with bounded memory: residents are made ``CHUNK`` at a time, each
chunk's resources are written and dropped before the next; what stays in
memory is the directory (institutions and their physicians), the ID-number
sequence counters (a few MB) and the noise counters, whatever the size.

Determinism: every random stream is seeded from (seed, purpose, chunk), so a
chunk's output depends only on the configuration and its residents; with
``workers > 1`` chunks are built in worker processes and written in order, so
the files are byte-identical to a single-process run.  Resident identities
(and their ID-number sequence codes) are always made in order in the parent.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from hutong import __version__
from hutong.synth import institutions, noise, practitioners
from hutong.synth.care import Planner
from hutong.synth.config import SynthConfig
from hutong.synth.institutions import Institution
from hutong.synth.records import RESOURCE_TYPES, ChunkOutput, RecordBuilder
from hutong.synth.regions import DISTRICT_BY_CODE, DISTRICTS
from hutong.synth.residents import CHUNK, Resident, ResidentFactory
from hutong.synth.sampling import stream
from hutong.synth.writer import PARTS, AtomicOutput, SerializedChunk, check_destination, dumps_lines


@dataclass(slots=True)
class SynthReport:
    counts: dict[str, int]
    total: int
    seconds: float
    bytes: int
    residents: int
    source_patients: int
    out_dir: Path | None = None

    @property
    def resources_per_s(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0


@dataclass(slots=True)
class Region:
    """The directory of a region: institutions with their physicians, ready for planning."""

    config: SynthConfig
    institutions: list[Institution]
    organizations: list[dict[str, Any]]
    practitioners: list[dict[str, Any]]
    roles: list[dict[str, Any]]
    planner: Planner = field(init=False)

    def __post_init__(self) -> None:
        c = self.config
        self.planner = Planner(self.institutions, c.today, c.years, c.repeat_test_rate)

    def directory_resources(self) -> dict[str, list[dict[str, Any]]]:
        return {"Organization": self.organizations, "Practitioner": self.practitioners,
                "PractitionerRole": self.roles}

    def build_chunk(self, c: int, residents: list[Resident]) -> ChunkOutput:
        cfg = self.config
        out = ChunkOutput()
        builder = RecordBuilder(c, cfg.today.toordinal(), cfg.noise, cfg.clinical,
                                stream(cfg.seed, "records", c), stream(cfg.seed, "noise", c))
        plan_rng = stream(cfg.seed, "plan", c)
        plan = self.planner.plan
        for r in residents:
            builder.resident(r, plan(plan_rng, r), out)
        return out


def build_region(config: SynthConfig) -> Region:
    config.validate()
    codes = config.districts or tuple(d.code for d in DISTRICTS)
    districts = tuple(DISTRICT_BY_CODE[c] for c in codes)
    insts = institutions.build(config.institutions, districts, stream(config.seed, "institutions"))
    orgs = [institutions.organization(i, insts) for i in insts]
    prng = stream(config.seed, "practitioners")
    pracs: list[dict[str, Any]] = []
    roles: list[dict[str, Any]] = []
    for inst in insts:
        for phys in practitioners.staff(inst, prng):
            pracs.append(phys.practitioner)
            roles.extend(phys.roles)
    return Region(config, insts, orgs, pracs, roles)


def _chunks(factory: ResidentFactory, config: SynthConfig) -> Iterator[tuple[int, list[Resident], list[dict[str, Any]]]]:
    for c in range((config.residents + CHUNK - 1) // CHUNK):
        residents = factory.chunk(c)
        pairs = [{"a": a.key, "b": b.key, "name": a.name, "birthDate": a.birth.isoformat()}
                 for a, b in factory.hard_negatives]
        factory.hard_negatives.clear()
        yield c, residents, pairs


def iter_chunk_outputs(config: SynthConfig, region: Region | None = None) -> Iterator[ChunkOutput]:
    """Each chunk's resources, in order, in this process (no files)."""
    region = region or build_region(config)
    factory = ResidentFactory(config)
    for c, residents, pairs in _chunks(factory, config):
        out = region.build_chunk(c, residents)
        out.hard_negatives = pairs
        yield out


def iter_resources(config: SynthConfig) -> Iterator[dict[str, Any]]:
    """Every resource of the region as a dict, directory first (the benchmark's entry point)."""
    region = build_region(config)
    for items in region.directory_resources().values():
        yield from items
    for out in iter_chunk_outputs(config, region):
        for t in RESOURCE_TYPES:
            yield from out.resources[t]


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while generating.

    A chunk holds a few hundred thousand freshly built dicts and none of them
    form reference cycles (plain trees sharing immutable codings), so the
    collector's repeated full passes over them are pure cost - about a third
    of generation time.  Reference counting still frees every chunk.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _worker_init() -> None:
    gc.disable()


# Worker processes inherit the region by fork; each builds and serialises whole chunks
# and leaves them as part files, so that only file names travel back through the pipe.
_WORKER_REGION: Region | None = None
_WORKER_PARTS: Path | None = None


def _work(task: tuple[int, list[Resident], list[dict[str, Any]]]) -> SerializedChunk:
    assert _WORKER_REGION is not None and _WORKER_PARTS is not None
    c, residents, pairs = task
    out = _WORKER_REGION.build_chunk(c, residents)
    out.hard_negatives = pairs
    chunk = SerializedChunk(out)
    chunk.spill(_WORKER_PARTS, c)
    return chunk


def _serialized(config: SynthConfig, region: Region, parts: Path) -> Iterator[SerializedChunk]:
    global _WORKER_REGION, _WORKER_PARTS
    factory = ResidentFactory(config)
    tasks = _chunks(factory, config)
    if config.workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for c, residents, pairs in tasks:
            out = region.build_chunk(c, residents)
            out.hard_negatives = pairs
            yield SerializedChunk(out)
        return
    _WORKER_REGION, _WORKER_PARTS = region, parts
    parts.mkdir()
    try:
        with multiprocessing.get_context("fork").Pool(config.workers, initializer=_worker_init) as pool:
            yield from pool.imap(_work, tasks, chunksize=1)
    finally:
        _WORKER_REGION = _WORKER_PARTS = None


def generate(out_dir: Path, config: SynthConfig, *, overwrite: bool = False) -> SynthReport:
    """Write the region described by ``config`` into ``out_dir`` (atomically) and report on it.

    ``out_dir`` may be missing, empty, or an earlier output of this generator
    (which is replaced); anything else raises FileExistsError unless
    ``overwrite``.  Bad parameters raise SynthConfigError before any file is
    touched.
    """
    t0 = time.perf_counter()
    region = build_region(config)
    out_dir = Path(out_dir)
    check_destination(out_dir, overwrite)
    counts: dict[str, int] = dict.fromkeys(RESOURCE_TYPES, 0)
    applicable: dict[str, int] = dict.fromkeys(noise.KINDS, 0)
    applied: dict[str, int] = dict.fromkeys(noise.KINDS, 0)
    repeat_visits = source_patients = hard_negatives = 0
    with AtomicOutput(out_dir, overwrite=overwrite) as sink, _gc_paused():
        for t, items in region.directory_resources().items():
            sink.append(f"{t}.ndjson", dumps_lines(items))
            counts[t] += len(items)
        sink.append("hard_negatives.ndjson", b"")
        for chunk in _serialized(config, region, sink.tmp / PARTS):
            for name, data in chunk.files.items():
                sink.append(name, data)
            for name, part in chunk.parts.items():
                sink.append_part(name, part)
            for t, n in chunk.counts.items():
                counts[t] += n
            for k in noise.KINDS:
                applicable[k] += chunk.noise_applicable[k]
                applied[k] += chunk.noise_applied[k]
            repeat_visits += chunk.repeat_visits
            source_patients += chunk.source_patients
            hard_negatives += chunk.hard_negatives
        counts = {t: n for t, n in counts.items() if n}
        total = sum(counts.values())
        manifest = {
            "generator": "hutong.synth",
            "version": __version__,
            "config": config.manifest(),
            "counts": counts,
            "total_resources": total,
            "residents": config.residents,
            "source_patients": source_patients,
            "hard_negative_pairs": hard_negatives,
            "repeat_test_visits": repeat_visits,
            "noise": {
                "rates": config.noise.as_dict(),
                "kinds": noise.DESCRIPTIONS,
                "observed": {k: {"applicable": applicable[k], "applied": applied[k],
                                 "rate": round(applied[k] / applicable[k], 6) if applicable[k] else None}
                             for k in noise.KINDS},
            },
            "files": sorted([*(f"{t}.ndjson" for t in counts), "ground_truth.ndjson", "hard_negatives.ndjson",
                             "manifest.json"]),
        }
        sink.write("manifest.json", orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
        nbytes = sink.bytes
        sink.commit()
    return SynthReport(counts, total, time.perf_counter() - t0, nbytes, config.residents, source_patients,
                       out_dir)


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))
