"""The generated CDA fixtures on disk are what make_fixtures.py writes, and every one is synthetic."""

from __future__ import annotations

import re

from cda_helpers import FIXTURES, INVALID, MINIMAL, REALISTIC, make_fixtures

from hutong.ingest.cda.doctypes import DOCTYPES
from hutong.mpi.idnumber import parse_id_number
from hutong.synth.uscc import is_valid


def test_generated_files_are_up_to_date() -> None:
    for t in DOCTYPES:
        assert (MINIMAL / f"{t.code}.xml").read_bytes() == make_fixtures.minimal(t), \
            f"run tests/ingest/fixtures/cda/make_fixtures.py ({t.code})"
    for name, data in make_fixtures.INVALID.items():
        assert (INVALID / name).read_bytes() == data, f"run tests/ingest/fixtures/cda/make_fixtures.py ({name})"
    assert len(list(MINIMAL.glob("*.xml"))) == 53


def test_identifiers_in_fixtures_are_synthetic_and_valid() -> None:
    assert is_valid(make_fixtures.SENDER_CODE) and is_valid(make_fixtures.OTHER_SENDER_CODE)
    for path in [*REALISTIC.glob("*.xml"), MINIMAL / "C0001.xml"]:
        text = path.read_text(encoding="utf-8")
        numbers = re.findall(r'root="2\.16\.156\.10011\.1\.3" extension="([0-9Xx]+)"', text)
        assert numbers, path
        for n in numbers:
            assert parse_id_number(n).valid, (path.name, n)
        for code in re.findall(r'root="2\.16\.156\.10011\.1\.5" extension="([0-9A-Z]+)"', text):
            assert code == make_fixtures.SENDER_CODE, path.name


def test_readme_names_the_sources() -> None:
    readme = (FIXTURES / "README.md").read_text(encoding="utf-8")
    assert "make_fixtures.py" in readme and "bzrrr/cda" in readme
