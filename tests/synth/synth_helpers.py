"""Helpers shared by the synth tests (a plain module: conftest names are not unique across test dirs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from hutong.synth import SynthConfig

SMALL = SynthConfig(residents=150, institutions=14, seed=7)


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
