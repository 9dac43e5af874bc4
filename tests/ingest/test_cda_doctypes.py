"""The 53 WS/T 500 document types and their recognition (hutong.ingest.cda.doctypes)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hutong.ingest.cda.doctypes import BY_CODE, DOCTYPES, EXTRACTED, DocType, recognise
from hutong.ingest.cda.parse import CdaError

STANDARDS = Path(__file__).resolve().parents[3] / "shared" / "domain" / "cn-standards.md"


def test_table_has_53_types_with_the_template_scheme() -> None:
    assert len(DOCTYPES) == 53
    for n, t in enumerate(DOCTYPES, start=1):
        assert t.number == n
        assert t.code == f"C{n:04d}"
        assert t.template_id == f"2.16.156.10011.2.1.1.{20 + n}"
        assert t.extracted == (t.code in EXTRACTED)
    assert {t.code for t in DOCTYPES if t.extracted} == {"C0002", "C0006", "C0007", "C0032", "C0053"}
    # templateIds confirmed in public WS/T 500 implementations (see doctypes' docstring)
    assert {c: BY_CODE[c].template_id[len("2.16.156.10011.2.1.1."):]
            for c in ("C0002", "C0006", "C0007", "C0023", "C0032", "C0033", "C0053")} == {
        "C0002": "22", "C0006": "26", "C0007": "27", "C0023": "43", "C0032": "52", "C0033": "53", "C0053": "73"}


@pytest.mark.skipif(not STANDARDS.exists(), reason="shared/domain/cn-standards.md not beside the repository")
def test_titles_are_the_standards_titles() -> None:
    text = STANDARDS.read_text(encoding="utf-8")
    line = next(ln for ln in text.splitlines() if ln.startswith("01 病历概要"))
    titles = dict(re.findall(r"(\d\d) (\S+)", line))
    assert {f"C00{k}": v for k, v in titles.items()} == {t.code: t.title for t in DOCTYPES}


@pytest.mark.parametrize("t", DOCTYPES, ids=lambda t: t.code)
def test_recognised_by_code_by_template_and_by_both(t: DocType) -> None:
    assert recognise(t.code, []) is t
    assert recognise(None, [t.template_id]) is t
    assert recognise(t.code, [t.template_id]) is t
    # a regional profile's own templateId beside the national one is ignored
    assert recognise(t.code, ["1.2.156.112635.9.9", t.template_id]) is t
    assert recognise(f" {t.code} ", []) is t


def test_code_and_template_must_agree() -> None:
    with pytest.raises(CdaError) as e:
        recognise("C0007", [BY_CODE["C0006"].template_id])
    assert e.value.code == "cda-type"
    assert "C0007" in e.value.text and "C0006" in e.value.text and "/ClinicalDocument/templateId" in e.value.text


def test_two_national_templates_of_different_types() -> None:
    with pytest.raises(CdaError, match="C0006 and C0007|C0007 and C0006") as e:
        recognise(None, [BY_CODE["C0006"].template_id, BY_CODE["C0007"].template_id])
    assert e.value.code == "cda-type"


@pytest.mark.parametrize(("code", "templates", "fragment"), [
    ("C0054", [], "/ClinicalDocument/code/@code: 'C0054'"),
    ("C0000", [], "'C0000' is not a WS/T 500"),
    ("EMR01", [], "'EMR01'"),
    (None, ["2.16.156.10011.2.1.1.74"], "/ClinicalDocument/templateId/@root: '2.16.156.10011.2.1.1.74'"),
    (None, ["2.16.156.10011.2.1.1.20"], "names none of the 53"),
    (None, [], "no WS/T 500 document type"),
    (None, ["1.2.3.4"], "no WS/T 500 document type"),
    ("", [], "no WS/T 500 document type"),
])
def test_unknown_types_are_refused(code: str | None, templates: list[str], fragment: str) -> None:
    with pytest.raises(CdaError) as e:
        recognise(code, templates)
    assert e.value.code == "cda-type"
    assert fragment in e.value.text
