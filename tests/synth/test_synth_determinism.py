"""Same seed, same bytes; another seed, other data; worker count and demographics-only change nothing shared."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from hutong.synth import SynthConfig, generate, iter_resources

CFG = SynthConfig(residents=80, institutions=10, seed=3)


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_same_seed_gives_byte_identical_output(tmp_path: Path) -> None:
    generate(tmp_path / "a", CFG)
    generate(tmp_path / "b", CFG)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys() and "Observation.ndjson" in a
    for name in a:
        assert a[name] == b[name], name


def test_other_seed_gives_other_output(tmp_path: Path) -> None:
    generate(tmp_path / "a", CFG)
    generate(tmp_path / "c", SynthConfig(residents=80, institutions=10, seed=4))
    for name in ("Patient.ndjson", "Observation.ndjson", "Organization.ndjson", "ground_truth.ndjson"):
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_workers_do_not_change_output(tmp_path: Path) -> None:
    cfg = SynthConfig(residents=250, institutions=6, seed=3)  # two chunks
    generate(tmp_path / "one", cfg)
    generate(tmp_path / "two", SynthConfig(residents=250, institutions=6, seed=3, workers=2))
    assert _files(tmp_path / "one") == _files(tmp_path / "two")


def test_demographics_only_has_the_same_patients(tmp_path: Path) -> None:
    generate(tmp_path / "full", CFG)
    generate(tmp_path / "demo", SynthConfig(residents=80, institutions=10, seed=3, clinical=False))
    for name in ("Patient.ndjson", "ground_truth.ndjson", "Organization.ndjson", "PractitionerRole.ndjson"):
        assert (tmp_path / "full" / name).read_bytes() == (tmp_path / "demo" / name).read_bytes()
    assert not (tmp_path / "demo" / "Encounter.ndjson").exists()


def test_iterator_yields_what_generate_writes(tmp_path: Path) -> None:
    report = generate(tmp_path / "a", CFG)
    counts: dict[str, int] = {}
    for r in iter_resources(CFG):
        counts[r["resourceType"]] = counts.get(r["resourceType"], 0) + 1
    assert counts == report.counts
    assert report.total == sum(counts.values()) and report.bytes > 0
