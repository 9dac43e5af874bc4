"""Shared regions for the synth tests: generated once per session, small enough to be fast."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from hutong.synth import Resident, SynthConfig, generate, iter_residents

SMALL = SynthConfig(residents=150, institutions=14, seed=7)


@pytest.fixture(scope="session")
def small_region(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "small"
    generate(out, SMALL)
    return out


@pytest.fixture(scope="session")
def small_residents() -> dict[str, Resident]:
    return {r.key: r for chunk in iter_residents(SMALL) for r in chunk}


def read_ndjson(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as f:
        for line in f:
            yield orjson.loads(line)


def resources(region: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for f in sorted(region.glob("*.ndjson")):
        if f.stem[:1].isupper():
            out[f.stem] = list(read_ndjson(f))
    return out
