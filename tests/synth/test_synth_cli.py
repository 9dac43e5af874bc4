"""``hutong synth``: clear errors with exit code 2 on bad input, atomic output, a summary line."""

from __future__ import annotations

from pathlib import Path

import pytest

from hutong.cli import main
from hutong.synth import SynthConfig, generate, pipeline


@pytest.mark.parametrize(("args", "flag"), [
    (["--residents", "-5"], "--residents"),
    (["--residents", "0"], "--residents"),
    (["--institutions", "-1"], "--institutions"),
    (["--years", "0"], "--years"),
    (["--districts", "110105,999999"], "--districts"),
    (["--districts", "110105,110105"], "--districts"),
    (["--workers", "0"], "--workers"),
])
def test_bad_parameters_exit_2_naming_the_parameter(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    args: list[str], flag: str) -> None:
    out = tmp_path / "out"
    assert main(["synth", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert flag in err and "error" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["--residents", "many"], ["--today", "2026-13-01"], []])
def test_malformed_arguments_exit_2(tmp_path: Path, args: list[str]) -> None:
    argv = ["synth", *args] + (["--out", str(tmp_path / "o")] if args else [])
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2


def test_run_writes_region_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "region"
    assert main(["synth", "--residents", "20", "--institutions", "5", "--seed", "2", "--out", str(out),
                 "--districts", "110105,110108"]) == 0
    line = capsys.readouterr().out
    assert "resources/s" in line and "20 residents" in line
    assert (out / "manifest.json").exists() and (out / "Patient.ndjson").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["region"], "no temporary directory left behind"
    # Running again replaces the earlier output.
    assert main(["synth", "--residents", "21", "--institutions", "5", "--out", str(out)]) == 0
    assert '"residents": 21' in (out / "manifest.json").read_text()


def test_refuses_to_clobber_other_directories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["synth", "--residents", "5", "--institutions", "3", "--out", str(out)]) == 2
    assert "--out" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"
    assert main(["synth", "--residents", "5", "--institutions", "3", "--out", str(out), "--force"]) == 0
    assert not (out / "notes.txt").exists() and (out / "manifest.json").exists()


def test_failure_leaves_no_partial_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = pipeline.Region.build_chunk

    def failing(self: pipeline.Region, c: int, residents: list) -> object:  # type: ignore[type-arg]
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk on fire")
        return real(self, c, residents)

    monkeypatch.setattr(pipeline.Region, "build_chunk", failing)
    out = tmp_path / "region"
    with pytest.raises(RuntimeError):
        generate(out, SynthConfig(residents=450, institutions=5, seed=1))
    assert calls["n"] == 2
    assert list(tmp_path.iterdir()) == [], "neither the output nor its temporary directory remains"


def test_bad_config_raises_before_touching_disk(tmp_path: Path) -> None:
    from hutong.synth import SynthConfigError

    with pytest.raises(SynthConfigError) as e:
        generate(tmp_path / "x", SynthConfig(residents=10, noise=SynthConfig().noise.__class__(phone_changed=1.5)))
    assert e.value.parameter == "noise.phone_changed"
    assert list(tmp_path.iterdir()) == []
