"""Issue 15, item 1: golden MPI records stay out of ordinary Patient searches
(a client's ``search(identifier=<MRN>).get()`` finds its one registration) and
are found when asked for (read, _id, _tag=...|golden); through HTTP on both databases."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fhirapi import ID_CARD, patient
from harness import Server

from hutong.fhir import search as fsearch
from hutong.fhir.assembly import open_repository
from hutong.store.sql import COLS, sql_repository

GOLDEN_TAG = "https://fhir.hutong.dev/CodeSystem/mpi|golden"
MRN = "urn:hutong:mrn:H001"


def test_golden_records_only_when_asked_for(server: Server) -> None:
    c = server.client
    r = c.post("/Patient", json=patient("赵", "晓燕", "110101199003070024", birth="1990-03-07", mrn="T15-1"))
    assert r.status_code == 201, r.text
    source = r.json()["id"]
    for params in ({"identifier": f"{MRN}|T15-1"}, {"identifier": f"{ID_CARD}|110101199003070024"},
                   {"identifier": "T15-1"}, {"family": "赵"}, {"birthdate": "1990-03-07"}):
        b = c.get("/Patient", params=params).json()
        assert [e["resource"]["id"] for e in b.get("entry", [])] == [source], (params, b)
        assert b["total"] == 1, params
        count = c.get("/Patient", params={**params, "_summary": "count"}).json()
        assert count["total"] == 1, (params, count)
    # the explicit, documented way: _tag=<golden system>|golden (or the bare code)
    for tag in (GOLDEN_TAG, "golden"):
        g = c.get("/Patient", params={"identifier": f"{MRN}|T15-1", "_tag": tag}).json()
        golden = [e["resource"]["id"] for e in g.get("entry", [])]
        assert len(golden) == 1 and golden[0] != source, g
    gid = golden[0]
    assert c.get(f"/Patient/{gid}").status_code == 200
    assert [e["resource"]["id"] for e in c.get("/Patient", params={"_id": gid}).json()["entry"]] == [gid]
    ev = c.get(f"/Patient/{gid}/$everything").json()
    assert source in {e["resource"]["id"] for e in ev["entry"]}
    meta = c.get("/metadata").json()
    (pat,) = [x for x in meta["rest"][0]["resource"] if x["type"] == "Patient"]
    assert GOLDEN_TAG in pat["documentation"]


def test_golden_exclusion_is_checked_per_row(tmp_path: Path) -> None:
    """Every Patient search now carries ``_tag:not=...|golden``: it must be looked up per
    candidate row (the res_pk index), not by listing every golden record of the region."""
    repo = open_repository(f"sqlite:///{tmp_path}/plan.db")
    try:
        q = fsearch.parse("Patient", [("identifier", f"{MRN}|T15-1")]).query
        q.clauses.append(fsearch.without_tag("Patient", GOLDEN_TAG.split("|")[0], "golden"))
        sql, args = sql_repository(repo).compiler.page_sql(q, COLS)
        con = sqlite3.connect(f"{tmp_path}/plan.db")
        plan = " / ".join(str(row[3]) for row in con.execute("EXPLAIN QUERY PLAN " + sql, args))
        con.close()
        assert "CORRELATED" in plan and "ix_idx_token_r" in plan, plan
        assert "LIST SUBQUERY 2" not in plan, plan
    finally:
        repo.db.close()
