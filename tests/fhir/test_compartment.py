"""The indexer's compartment-only path (what the access policy asks before
every write) agrees with full indexing on every resource we generate or load."""

from __future__ import annotations

from pathlib import Path

import orjson
from harness import SYNTHEA

from hutong.fhir.registry import FhirIndexer
from hutong.synth import SynthConfig, generate


def test_compartment_agrees_with_index(tmp_path: Path) -> None:
    generate(tmp_path, SynthConfig(residents=40, institutions=3, seed=5, years=1))
    idx = FhirIndexer()
    seen = 0
    for f in [*tmp_path.glob("*.ndjson"), *SYNTHEA.glob("*.ndjson")]:
        for line in f.read_bytes().splitlines():
            res = orjson.loads(line)
            if "resourceType" not in res:
                continue
            t = res["resourceType"]
            assert idx.compartment(t, res) == idx.index(t, res)[1], (t, res.get("id"))
            seen += 1
    assert seen > 1000
