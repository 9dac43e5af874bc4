"""Every zh-CN portal page speaks Chinese and names people and institutions
(issue 16, item 3 and "Build"): the visible text of each page of the tour
(tests/ui/tour.py) holds no English word outside a short allow-list and no
raw id where a name belongs.

Visible text: lxml.html's text nodes outside <script>, <style> and
<template>, and the attributes a person meets (``aria-label`` is read aloud,
``placeholder`` shown in an empty field).  Text inside <code> is a code shown
as such (an institution's registration code in its column, an audited
request line beside its words) and is not scanned for words, but it is for
raw ids.
"""

from __future__ import annotations

import json
import re

import lxml.html
from conftest import UiRegion
from tour import Tour, tour  # noqa: F401  (the fixture)

from hutong.systems import ORGANIZATION

# Words a zh-CN page may show, and why:
UNITS = {  # UCUM units as printed beside values (results, vital signs); Chinese labs print them too
    "mmol/L", "umol/L", "µmol/L", "g/L", "mg/L", "mg/dL", "g/dL", "U/L", "IU/L", "mL", "L", "mg", "g", "kg",
    "cm", "mm", "mmHg", "bpm", "fL", "pg", "10^9/L", "10^12/L", "kg/m2", "/min", "mIU/L", "pmol/L", "nmol/L",
    "ng/mL", "mU/L", "min", "ms", "s", "h", "d", "μmol/L", "mL/min/1.73m", "pH",
}
ACRONYMS = {  # standard names clinicians and officials use as such, untranslated in Chinese practice
    "ID",  # 主索引ID, 机构ID: the Chinese wording itself
    "ICD", "ICD-10", "HL7", "FHIR", "CDA", "SMART", "LOINC", "WS", "T",  # code systems and standards (WS/T 500)
    "CT", "MR", "MRI", "DR", "DX", "US", "X",  # imaging modalities (DICOM modality codes, X线)
    "HIS", "LIS", "PACS", "EMR", "CSV",  # hospital systems and file formats, named so in Chinese
    "English",  # the language switch names the other language in its own words
    "HR", "I", "D",  # 互认 marks 京HR/京津冀HR as printed on reports; 肌钙蛋白I, D-二聚体 (issue 14 items)
    "CKD-EPI",  # the eGFR equation, named so on Chinese lab reports
}
BRANDS = {"Hutong", "Chart.js"}
# Codes shown in a code column or as a stable error code: ICD-10 (E11.9), error codes (HT-0104).
CODE = re.compile(r"^(?:[A-Z]\d{2}(?:\.\d{1,3})?|HT-\d{4}|[A-Z]\d{2}-[A-Z]\d{2})$")
# A Latin letter joined to Han characters is part of the Chinese term (C反应蛋白, B超, X线):
# not an English word.
WORD = re.compile(r"(?<![A-Za-z0-9^/])(?>(?:10\^\d+/)?[A-Za-z\u00b5\u03bc][A-Za-z0-9\u00b5\u03bc]*"
                  r"(?:[/.^-][A-Za-z0-9\u00b5\u03bc.]+)*)(?![\u4e00-\u9fff])")  # atomic: no shorter retry
RAW_ID = re.compile(r"\bacct-[0-9a-f]{6,}|\bmpi-[0-9A-Za-z-]{4,}|\borg-\d{4}\b|"
                    r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
# "C反应蛋白 · C反应蛋白": one name twice around a separator
REPEATED = re.compile(r"(?<![^\s·])([^\s·]{2,})\s*·\s*\1(?![^\s·])")
# Emoji the CJK fonts (Noto Sans CJK) lack: drawn as an empty box (⏳ was)
NO_GLYPH = re.compile("[\u23e9-\u23fa\U0001f300-\U0001faff]")
HIDDEN = ("script", "style", "template", "noscript")


def visible_text(html: str) -> tuple[list[str], list[str]]:
    """(words: text to scan for English and ids, codes: text inside <code>, scanned for ids only)."""
    doc = lxml.html.document_fromstring(html)
    # Chart.js configs (<script type="application/json">): their dataset labels are the legend a reader sees
    legends = []
    for el in doc.xpath("//script[@type='application/json']"):
        try:
            cfg = json.loads(el.text or "null")
        except ValueError:
            continue
        if isinstance(cfg, dict):
            legends += [str(d["label"]) for d in (cfg.get("data") or {}).get("datasets") or ()
                        if isinstance(d, dict) and d.get("label")]
    for el in doc.iter(*HIDDEN):
        el.drop_tree()
    for el in doc.xpath("//*[@hidden or @aria-hidden='true']"):
        el.drop_tree()
    codes = [str(t) for t in doc.xpath("//body//code//text()") if t.strip()]
    for el in doc.xpath("//body//code"):
        el.drop_tree()
    out = [str(t) for t in doc.xpath("//body//text()") if t.strip()]
    out += [str(a) for a in doc.xpath("//body//@aria-label | //body//@placeholder") if a.strip()]
    return out + legends, codes


def allowed(word: str, names: set[str]) -> bool:
    return word in UNITS or word in ACRONYMS or word in BRANDS or word in names or bool(CODE.match(word))


def findings(html: str, codes: set[str], names: frozenset[str] = frozenset()) -> list[str]:
    """What a zh-CN page should not show; ``codes``: institution codes (names belong there),
    ``names``: sign-in names, which are ASCII by design (the users list shows them)."""
    found = []
    texts, in_code = visible_text(html)
    for text in in_code:
        for m in RAW_ID.finditer(text):
            found.append(f"raw id {m.group(0)!r} in {text.strip()[:80]!r}")
    for text in texts:
        for m in RAW_ID.finditer(text):
            found.append(f"raw id {m.group(0)!r} in {text.strip()[:80]!r}")
        text = RAW_ID.sub(" ", text)
        for code in codes:
            if code in text:
                found.append(f"institution code {code} in {text.strip()[:80]!r}")
        for m in NO_GLYPH.finditer(text):
            found.append(f"emoji without a CJK glyph {m.group(0)!r} in {text.strip()[:40]!r}")
        for m in REPEATED.finditer(text):
            found.append(f"label repeated {m.group(0)!r}")
        for m in WORD.finditer(text):
            w = m.group(0)
            if not allowed(w, set(names)):
                found.append(f"{w!r} in {text.strip()[:80]!r}")
    return found


def test_scanner_finds_english_and_ids() -> None:
    html = ("<html><body><p>复核人：acct-0123abcdef 已 completed</p><td>Hb 155 g/L</td>"
            "<script>var x = 'English words';</script><p aria-label='upper bound'>上限</p><span>E11.9</span>"
            "<code>GET /fhir/Patient</code><code>mpi-0a1b2c3d</code>"
            "<script type='application/json'>{\"data\": {\"datasets\": [{\"label\": \"上限 / upper\"}]}}</script>"
            "</body></html>")
    got = findings(html, {"12110105MB0123456X"})
    assert any("acct-0123abcdef" in f for f in got)
    assert any("'completed'" in f for f in got)
    assert any("'upper' in '上限" in f for f in got), got
    assert any("'Hb'" in f for f in got)
    assert any("repeated" in f for f in findings("<p>C反应蛋白 · C反应蛋白</p>", set()))
    assert any("emoji" in f for f in findings("<p>⏳ 待复核</p>", set()))
    assert any("mpi-0a1b2c3d" in f for f in got)
    assert not any("GET" in f for f in got)
    assert not any(f.startswith(("'English'", "'E11.9'", "'g/L'", "'acct")) for f in got), got


def test_every_page_is_chinese_with_names_not_ids(ui: UiRegion, tour: Tour) -> None:  # noqa: F811
    codes = {next(i["value"] for i in o["identifier"] if i["system"] == ORGANIZATION)
             for o in ui.search("Organization", [("_count", "100")])}
    usernames = frozenset(a.username or a.client_id or "" for a in ui.accounts.list_accounts())
    report: dict[str, list[str]] = {}
    for name, role, visit in tour.pages:
        page = tour.tabs[role]
        visit(page)
        got = findings(page.content(), codes, usernames)
        if got:
            report[name] = sorted(set(got))
    assert not report, "\n".join(f"{n}:\n  " + "\n  ".join(v) for n, v in report.items())
