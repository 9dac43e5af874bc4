"""WS/T 500 documents as real generators write them (issue 15, items 14, 16, 17),
through HTTP (POST /ingest/cda) into the store, on SQLite and PostgreSQL.

The documents are built for the test by the fixture generator
(tests/ingest/fixtures/cda/make_fixtures.py, invented people and institutions)
after the class of quirk the issue describes; none is copied from anyone's data."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from cda_helpers import make_fixtures
from harness import Server
from test_cda_pipeline import count, post, register

from hutong.cli import main
from hutong.systems import REGION_TZ

BY_CODE = make_fixtures.BY_CODE
GENDER = ('<administrativeGenderCode code="1" codeSystem="2.16.156.10011.2.3.3.4" '
          'displayName="男性"/>')


def doc(code: str, *, doc_id: str | None = None, body: str = "") -> bytes:
    t = BY_CODE[code]
    head = make_fixtures.header(t, doc_id=doc_id)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
            f'  {head}{body}\n</ClinicalDocument>\n').encode()


def without_gender(xml: bytes) -> bytes:
    assert GENDER.encode() in xml
    return xml.replace(GENDER.encode(), b"")


def diagnostics(r: object) -> str:
    return str(r.json()["issue"][0]["diagnostics"])  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- item 14
def test_a_different_document_under_a_used_id_is_refused(server: Server) -> None:
    register(server)
    first = doc("C0007", doc_id="DOC-2026-000777")
    r = post(server, first)
    assert r.status_code == 201, r.text
    other = doc("C0006", doc_id="DOC-2026-000777")  # another type under the same id
    r2 = post(server, other)
    assert r2.status_code == 409, r2.text
    assert "HT-0263" in diagnostics(r2) and "C0007" in diagnostics(r2)
    assert count(server, "DocumentReference") == 1
    types = server.client.get("/DocumentReference").json()["entry"][0]["resource"]["type"]["coding"][0]["code"]
    assert types == "C0007"
    # same type, other content: refused too
    changed = first.replace("<title>检验报告</title>".encode(), "<title>检验报告（更正）</title>".encode())
    assert changed != first
    assert post(server, changed).status_code == 409
    # the document itself again (re-serialised: other indentation) stays an idempotent resend
    assert post(server, first).status_code == 201
    assert post(server, first.replace(b"\n  <", b"\n    <")).status_code == 201
    assert count(server, "DocumentReference") == 1
    dead = server.client.get(server.root + "/ingest/dead-letters").json()["items"]
    assert len(dead) == 2 and all("HT-0263" in d["reason"] for d in dead)


# ----------------------------------------------------------------------------- item 16
@pytest.mark.parametrize("code", ["C0014", "C0015", "C0016"])
def test_obstetric_documents_without_gender_are_stored(server: Server, code: str) -> None:
    register(server)
    r = post(server, without_gender(doc(code)))
    assert r.status_code == 201, r.text
    assert r.json()["type"] == code
    patient = server.client.get("/" + next(x for x in r.json()["resources"] if x.startswith("Patient/"))).json()
    assert "gender" not in patient


def test_other_documents_still_need_the_gender(server: Server) -> None:
    register(server)
    r = post(server, without_gender(doc("C0013")))
    assert r.status_code == 422
    assert "administrativeGenderCode" in diagnostics(r)


# ----------------------------------------------------------------------------- item 17
STRAY = """
  <component>
    <section>
      <code code="30954-2" codeSystem="2.16.840.1.113883.6.1" displayName="检验结果"/>
      <text>血红蛋白 128 g/L</text>
    </section>
  </component>"""


def test_sections_outside_structured_body_are_reported(server: Server,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    register(server)
    r = post(server, doc("C0007", doc_id="DOC-STRAY-1", body=STRAY))
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["code"] == "HT-0264" and "structuredBody" in out["warning"]
    from hutong.quality.data_quality import data_quality
    today = datetime.now(REGION_TZ).date()
    counts = data_quality(server.repo, start=today - timedelta(days=1), end=today + timedelta(days=1))
    assert [(c.institution, c.code, c.messages) for c in counts] == [(make_fixtures.SENDER_CODE, "HT-0264", 1)]
    # a well-formed document carries no warning
    clean = post(server, doc("C0007", doc_id="DOC-CLEAN-1"))
    assert clean.status_code == 201 and "warning" not in clean.json()
    # the same figures from the command line
    db = str(server.repo.db.url)
    assert main(["ingest", "--database", db, "quality"]) == 0
    assert [(c["code"], c["messages"]) for c in json.loads(capsys.readouterr().out)] == [("HT-0264", 1)]
    assert main(["ingest", "--database", db, "flagged", "--code", "HT-0264"]) == 0
    assert [r["control_id"] for r in json.loads(capsys.readouterr().out)] == ["DOC-STRAY-1"]
