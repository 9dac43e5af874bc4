"""A generated region loads into the store with ``hutong import`` without a single error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hutong.cli import main
from hutong.synth import SynthConfig, generate


def test_hutong_import_loads_everything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    region = tmp_path / "region"
    report = generate(region, SynthConfig(residents=25, institutions=6, seed=4))
    capsys.readouterr()
    rc = main(["import", str(region), "--database", f"sqlite:///{tmp_path}/hutong.db", "--quiet"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    m = re.search(r"loaded (\d+) resources .*; (\d+) errors", out.out)
    assert m is not None, out.out
    assert int(m.group(1)) == report.total and int(m.group(2)) == 0
    counts = json.loads((region / "manifest.json").read_text())["counts"]
    for t, n in counts.items():
        assert re.search(rf"^\s+{t}\s+{n}$", out.out, re.M), (t, n)
