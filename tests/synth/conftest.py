"""Shared regions for the synth tests: generated once per session, small enough to be fast."""

from __future__ import annotations

from pathlib import Path

import pytest
from synth_helpers import SMALL

from hutong.synth import Resident, generate, iter_residents


@pytest.fixture(scope="session")
def small_region(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "small"
    generate(out, SMALL)
    return out


@pytest.fixture(scope="session")
def small_residents() -> dict[str, Resident]:
    return {r.key: r for chunk in iter_residents(SMALL) for r in chunk}
