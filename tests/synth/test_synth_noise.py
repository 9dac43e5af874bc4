"""Registration noise: observed rates match the configured ones, and each kind does what it says."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
from pypinyin import Style, pinyin
from synth_helpers import read_ndjson

from hutong.synth import NoiseRates, SynthConfig, generate, iter_residents
from hutong.synth.charvariants import TRADITIONAL
from hutong.synth.noise import KINDS, applicable, id_missing_rate

# Distinct, larger-than-default rates so that a mix-up between kinds shows.
RATES = NoiseRates(
    name_homophone=0.12, name_typo=0.07, name_traditional=0.05, birthdate_swap=0.09, id_missing_clinic=0.5,
    id_missing_primary=0.2, id_missing_hospital=0.03, id_legacy15=0.15, id_transposed=0.06, phone_changed=0.11,
    address_moved=0.08,
)
MEDIUM = SynthConfig(residents=4000, institutions=40, seed=5, noise=RATES, clinical=False)


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("noise") / "medium"
    generate(out, MEDIUM)
    return out


def _within(applied: int, n: int, p: float) -> bool:
    """Binomial tolerance: 4.5 standard deviations (plus 2 for tiny counts)."""
    return abs(applied - n * p) <= 4.5 * math.sqrt(n * p * (1 - p)) + 2


def test_observed_rates_match_configuration(medium: Path) -> None:
    residents = {r.key: r for chunk in iter_residents(MEDIUM) for r in chunk}
    levels = {o["id"]: o["type"][0]["coding"][0]["code"] for o in read_ndjson(medium / "Organization.ndjson")}
    patient_level = {p["id"]: levels[p["managingOrganization"]["reference"].split("/")[1]]
                     for p in read_ndjson(medium / "Patient.ndjson")}
    eligible: Counter[str] = Counter()
    applied: Counter[str] = Counter()
    expected: dict[str, float] = {"id_missing": 0.0}
    variance: dict[str, float] = {"id_missing": 0.0}
    for t in read_ndjson(medium / "ground_truth.ndjson"):
        r = residents[t["resident"]]
        noise = set(t["noise"])
        # Eligibility recomputed from the clean resident, independently of the generator's own counts.
        for kind in ("name_homophone", "name_typo", "name_traditional", "birthdate_swap"):
            if applicable(kind, r):
                eligible[kind] += 1
                applied[kind] += kind in noise
        for kind in ("phone_changed", "address_moved"):
            eligible[kind] += 1
            applied[kind] += kind in noise
        if r.id_number is not None:
            p = id_missing_rate(RATES, patient_level[t["patient"]])
            eligible["id_missing"] += 1
            applied["id_missing"] += "id_missing" in noise
            expected["id_missing"] += p
            variance["id_missing"] += p * (1 - p)
            if "id_missing" not in noise:
                if 1900 <= r.birth.year <= 1999:
                    eligible["id_legacy15"] += 1
                    applied["id_legacy15"] += "id_legacy15" in noise
                if "id_legacy15" not in noise:
                    eligible["id_transposed"] += 1
                    applied["id_transposed"] += "id_transposed" in noise
        else:
            assert not noise & {"id_missing", "id_legacy15", "id_transposed"}
    assert set(eligible) == set(KINDS)
    for kind in KINDS:
        n = eligible[kind]
        assert n > 300, (kind, n)
        if kind == "id_missing":
            tol = 4.5 * math.sqrt(variance[kind]) + 2
            assert abs(applied[kind] - expected[kind]) <= tol, (kind, applied[kind], expected[kind])
        else:
            rate = getattr(RATES, kind)
            assert _within(applied[kind], n, rate), (kind, applied[kind], n, rate)
    # The manifest reports the same eligibility and counts.
    observed = json.loads((medium / "manifest.json").read_text())["noise"]["observed"]
    for kind in KINDS:
        assert observed[kind]["applicable"] == eligible[kind]
        assert observed[kind]["applied"] == applied[kind]


def test_noise_kinds_change_what_they_say(medium: Path) -> None:
    residents = {r.key: r for chunk in iter_residents(MEDIUM) for r in chunk}
    truth = {t["patient"]: t for t in read_ndjson(medium / "ground_truth.ndjson")}
    seen: Counter[str] = Counter()
    for p in read_ndjson(medium / "Patient.ndjson"):
        t = truth[p["id"]]
        r = residents[t["resident"]]
        noise = t["noise"]
        name = p["name"][0]["family"] + p["name"][0]["given"][0]
        clean = r.surname + r.given
        if noise == ["name_homophone"]:
            seen["homophone"] += 1
            diff = [(a, b) for a, b in zip(name, clean, strict=True) if a != b]
            assert len(diff) == 1
            a, b = diff[0]
            assert set(pinyin(a, style=Style.TONE3, heteronym=True)[0]) & set(pinyin(b, style=Style.TONE3, heteronym=True)[0])
        if noise == ["name_traditional"]:
            seen["traditional"] += 1
            assert name == "".join(TRADITIONAL.get(c, c) for c in clean) != clean
        if "birthdate_swap" in noise:
            seen["swap"] += 1
            assert p["birthDate"] == f"{r.birth.year:04d}-{r.birth.day:02d}-{r.birth.month:02d}"
        if "address_moved" in noise:
            seen["moved"] += 1
            assert p["address"][0]["text"] == r.old_address.text != r.address.text
    assert min(seen.values()) > 10 and len(seen) == 4


def test_default_rates_are_met(tmp_path: Path) -> None:
    cfg = SynthConfig(residents=2500, institutions=30, seed=9, clinical=False)
    generate(tmp_path / "d", cfg)
    observed = json.loads((tmp_path / "d" / "manifest.json").read_text())["noise"]["observed"]
    for kind in KINDS:
        if kind == "id_missing":
            continue  # level-dependent; covered above
        o = observed[kind]
        assert _within(o["applied"], o["applicable"], getattr(cfg.noise, kind)), (kind, o)
