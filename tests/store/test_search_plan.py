"""A search that names particular records is driven from them (hutong.store.sqlsearch, Compiler.where).

At 1M resources the recognition rule's search (issue 14: ``patient=<five registrations>&code=
<the item's codes>&date=ge<window start>``) took 50 ms because SQLite listed every
Observation of the region in the window before keeping the patient's six.  Now the other
clauses are checked per candidate row.  These tests check that the answers are unchanged
on both databases (the same rows as the clauses applied one by one), and on SQLite that the
plan looks the date up per row (ix_idx_date_r) when a patient drives the search, and still
lists it (ix_idx_date_hi/lo) when nothing names records.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson
from fhirapi import observation, patient

from hutong.fhir import search as fsearch
from hutong.fhir.assembly import open_repository
from hutong.fhir.service import FhirService
from hutong.security.guard import as_operator
from hutong.store.sqlsearch import Compiler

CODES = ("2345-7", "4548-4", "718-7")
DATES = ("2025-06-01", "2026-02-10", "2026-03-15", "2026-05-20")


def _region(svc: FhirService) -> tuple[list[str], list[dict[str, Any]]]:
    """Three patients, each with one Observation per code and date (36 in all)."""
    pids = []
    made: list[dict[str, Any]] = []
    for i, idno in enumerate(("11010519491231002X", "110105194912310037", "110105194912310045")):
        p = orjson.loads(svc.create("Patient", orjson.dumps(patient(idno=idno, mrn=f"M{i}")), {}).body or b"")
        pids.append(p["id"])
        for code in CODES:
            for d in DATES:
                o = orjson.loads(svc.create("Observation", orjson.dumps(
                    observation(p["id"], code=code, date=f"{d}T08:00:00+08:00")), {}).body or b"")
                made.append(o)
    return pids, made


def _ids(svc: FhirService, items: list[tuple[str, str]]) -> set[str]:
    b = orjson.loads(svc.search("Observation", [*items, ("_count", "1000")], {}).body or b"")
    return {e["resource"]["id"] for e in b.get("entry", [])}


def _expected(made: list[dict[str, Any]], patients: set[str], codes: set[str], since: str) -> set[str]:
    return {o["id"] for o in made
            if o["subject"]["reference"].split("/")[1] in patients
            and o["code"]["coding"][0]["code"] in codes
            and o["effectiveDateTime"][:10] >= since}


def test_driven_search_answers_as_each_clause_would(db_url: str) -> None:
    repo = open_repository(db_url)
    try:
        svc = FhirService(as_operator(repo), "http://h/fhir")
        pids, made = _region(svc)
        two = {pids[0], pids[2]}
        items = [("patient", ",".join(sorted(two))), ("code", "http://loinc.org|4548-4,http://loinc.org|718-7"),
                 ("date", "ge2026-03-01")]
        got = _ids(svc, items)
        want = _expected(made, two, {"4548-4", "718-7"}, "2026-03-01")
        assert got == want and len(want) == 8
        # The same rows as each clause alone, intersected (no driver: each is a list).
        each = [_ids(svc, [it]) for it in items]
        assert got == set.intersection(*each)
        # subject= and a negated clause, a :missing clause, an _id driver: unchanged answers too.
        got_not = _ids(svc, [("subject", f"Patient/{pids[1]}"), ("code:not", "http://loinc.org|2345-7"),
                             ("value-quantity:missing", "false")])
        assert got_not == _expected(made, {pids[1]}, {"4548-4", "718-7"}, "0000")
        some = sorted(o["id"] for o in made[:5])
        assert _ids(svc, [("_id", ",".join(some)), ("date", "ge2026-02-01")]) == \
            {o["id"] for o in made[:5] if o["effectiveDateTime"][:10] >= "2026-02-01"}
    finally:
        repo.db.close()


def _plan(repo: Any, url: str, items: list[tuple[str, str]]) -> str:
    q = fsearch.parse("Observation", items).query
    sql, args = repo.compiler.page_sql(q, "r.pk")
    con = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        return "\n".join(str(r[3]) for r in con.execute("EXPLAIN QUERY PLAN " + sql, args))
    finally:
        con.close()


def test_sqlite_plan_checks_the_date_per_patient_row(sqlite_url: str) -> None:
    repo = open_repository(sqlite_url)
    try:
        svc = FhirService(as_operator(repo), "http://h/fhir")
        pids, _made = _region(svc)
        driven = _plan(repo, sqlite_url, [("patient", pids[0]), ("code", "http://loinc.org|4548-4"),
                                          ("date", "ge2026-03-01")])
        assert "ix_idx_reference_v" in driven  # the patient's rows drive
        assert "ix_idx_date_r" in driven and "ix_idx_token_r" in driven  # the rest per row
        assert "ix_idx_date_hi" not in driven and "ix_idx_date_lo" not in driven
        alone = _plan(repo, sqlite_url, [("code", "http://loinc.org|4548-4"), ("date", "ge2026-03-01")])
        assert "ix_idx_date_r" not in alone and "ix_idx_token_v" in alone  # nothing names records: lists
    finally:
        repo.db.close()


def test_only_clauses_naming_records_drive() -> None:
    q = fsearch.parse("Observation", [("patient", "x"), ("patient:missing", "false"), ("code", "a|b"),
                                      ("date", "ge2026-01-01"), ("subject:Patient.name", "王")]).query
    assert [Compiler._names_records(c) for c in q.clauses] == [True, False, False, False, False]
