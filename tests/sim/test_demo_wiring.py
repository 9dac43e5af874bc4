"""``hutong demo`` prepares its simulated hospitals (issue 16, item 1): one system
client per institution for their CDA documents, and none when
HUTONG_DEMO_SIMULATE=0 turns the simulation off."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from hutong.cli import main
from hutong.systems import ORGANIZATION


def _demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, simulate: str | None) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HUTONG_KEY_DIR", str(tmp_path / "keys"))
    if simulate is not None:
        monkeypatch.setenv("HUTONG_DEMO_SIMULATE", simulate)
    assert main(["demo", "--residents", "60", "--institutions", "4", "--no-serve"]) == 0
    return tmp_path / "var" / "demo"


def test_demo_makes_a_system_client_per_institution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    demo = _demo(tmp_path, monkeypatch, None)
    clients = demo / "his-clients.json"
    assert stat.S_IMODE(clients.stat().st_mode) == 0o600
    codes = {next(i["value"] for i in json.loads(line)["identifier"] if i["system"] == ORGANIZATION)
             for line in (demo / "region" / "Organization.ndjson").read_text().splitlines()}
    data = json.loads(clients.read_text())
    assert set(data) == codes and all(c["client_id"] and c["client_secret"] for c in data.values())


def test_simulation_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    demo = _demo(tmp_path, monkeypatch, "0")
    assert (demo / "accounts.json").exists() and not (demo / "his-clients.json").exists()
