"""The MPI on a small synthetic region, against its ground truth, driven
through the ``hutong`` command (import, mpi stats/train/relink/review)."""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from hutong.cli import main
from hutong.fhir.assembly import open_repository
from hutong.synth import SynthConfig, generate


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("region") / "r"
    # A raised hard-negative rate so the small region holds several namesake pairs.
    generate(out, SynthConfig(residents=300, institutions=12, seed=7, clinical=False, hard_negative_rate=0.05))
    return out


def pairs_by(groups: dict[str, list[str]]) -> set[tuple[str, str]]:
    return {tuple(sorted(p)) for members in groups.values() for p in itertools.combinations(members, 2)}  # type: ignore[misc]


def evaluate(db: str, region: Path) -> tuple[float, float, int]:
    truth: dict[str, str] = {}
    for line in (region / "ground_truth.ndjson").read_bytes().splitlines():
        g = orjson.loads(line)
        truth[g["patient"]] = g["resident"]
    repo = open_repository(db)
    person = {p: q for p, q in repo.query("SELECT patient_id, person_id FROM mpi_source", ())}
    assert set(person) == set(truth)
    by_person: dict[str, list[str]] = defaultdict(list)
    by_resident: dict[str, list[str]] = defaultdict(list)
    for p in truth:
        by_person[person[p]].append(p)
        by_resident[truth[p]].append(p)
    linked, true = pairs_by(by_person), pairs_by(by_resident)
    tp = len(linked & true)
    precision = tp / len(linked) if linked else 1.0
    recall = tp / len(true) if true else 1.0
    negatives = [orjson.loads(x) for x in (region / "hard_negatives.ndjson").read_bytes().splitlines()]
    assert negatives, "the region should contain hard negatives"
    merged = 0
    for n in negatives:
        pa = {person[p] for p in by_resident[n["a"]]}
        pb = {person[p] for p in by_resident[n["b"]]}
        merged += bool(pa & pb)
    return precision, recall, merged


def test_region_links_accurately_and_relink_keeps_it(region: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path}/mpi.db"
    assert main(["import", str(region / "Patient.ndjson"), "--database", db, "--quiet", "--workers", "1"]) == 0
    precision, recall, merged = evaluate(db, region)
    assert merged == 0
    assert precision >= 0.995 and recall >= 0.97, (precision, recall)
    capsys.readouterr()
    assert main(["mpi", "--database", db, "stats"]) == 0
    stats = orjson.loads(capsys.readouterr().out)
    assert stats["sources"] > 300 and stats["persons"] <= stats["sources"] and stats["model_version"] == 0
    assert main(["mpi", "--database", db, "train"]) == 0
    trained = orjson.loads(capsys.readouterr().out)
    assert trained["version"] == 1 and trained["blocked_pairs"] > 0
    assert main(["mpi", "--database", db, "relink", "--dry-run"]) == 0
    dry = orjson.loads(capsys.readouterr().out)
    assert dry["dry_run"] is True and dry["sources"] == stats["sources"]
    assert main(["mpi", "--database", db, "relink"]) == 0
    done = orjson.loads(capsys.readouterr().out)
    assert done["moved"] == dry["moved"] and done["model_version"] == 1
    precision2, recall2, merged2 = evaluate(db, region)
    assert merged2 == 0 and precision2 >= 0.995 and recall2 >= 0.97, (precision2, recall2)
    # a second relink with nothing changed moves nothing
    assert main(["mpi", "--database", db, "relink"]) == 0
    assert orjson.loads(capsys.readouterr().out)["moved"] == 0
    assert main(["mpi", "--database", db, "review"]) == 0
    assert isinstance(orjson.loads(capsys.readouterr().out), list)


def test_cli_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path}/empty.db"
    assert main(["mpi", "--database", db, "train"]) == 2
    assert "too few records" in capsys.readouterr().err
    assert main(["mpi", "--database", db, "unlink", "nobody"]) == 2
    assert "HT-0056" in capsys.readouterr().err
