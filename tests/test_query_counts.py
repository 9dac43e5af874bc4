"""SQL statements per hot-path operation stay bounded (SQLite trace callback).

A regression that adds a query per request, or per index row, shows up here
before it shows up in the benchmark.
"""

from __future__ import annotations

from typing import Any

from fhirapi import observation, patient

from hutong.fhir.assembly import open_repository
from hutong.fhir.registry import FhirIndexer
from hutong.fhir.service import FhirService
from hutong.security.guard import as_operator


def _svc(sqlite_url: str) -> FhirService:
    repo = open_repository(sqlite_url)
    repo.db.max_idle = 1  # one pooled connection, so the trace sees every statement
    return FhirService(as_operator(repo), "http://h/fhir")


def _body(res: dict[str, Any]) -> bytes:
    import orjson

    return orjson.dumps(res)


def test_read_search_create_statement_counts(sqlite_url: str) -> None:
    svc = _svc(sqlite_url)
    p = svc.create("Patient", _body(patient()), {})
    import orjson

    pid = orjson.loads(p.body or b"")["id"]
    db = svc.repo.db
    with db.connection() as c:
        conn = c
    stmts_all: list[str] = []
    conn.set_trace_callback(stmts_all.append)
    try:
        svc.read("Patient", pid)
        assert len(stmts_all) == 1, stmts_all  # one primary-key lookup
        stmts_all.clear()
        svc.search("Patient", [("identifier", "11010519491231002X")], {})
        assert len(stmts_all) == 2, stmts_all  # the page and the total
        stmts_all.clear()
        svc.search("Patient", [("identifier", "11010519491231002X"), ("_total", "none")], {})
        assert len(stmts_all) == 1, stmts_all
        stmts_all.clear()
        obs = observation(pid)
        svc.create("Observation", _body(obs), {})
        rows, patients = FhirIndexer().index("Observation", obs)
        # The trace reports each executemany row: MAX(pk), the resource row, one
        # row per index value and per compartment membership, nothing else.
        writes = [s for s in stmts_all if not s.startswith(("BEGIN", "SAVEPOINT", "RELEASE", "COMMIT"))]
        assert len(writes) == 2 + len(rows) + len(patients), stmts_all
        assert len(stmts_all) == len(writes) + 4, stmts_all
        stmts_all.clear()
        svc.everything(pid, [])
        assert len(stmts_all) <= 3, stmts_all  # patient, the compartment page, referenced shared resources
        stmts_all.clear()
        o2 = orjson.loads(svc.create("Observation", _body(observation(pid)), {}).body or b"")
        stmts_all.clear()
        svc.update("Observation", o2["id"], _body(o2), {})
        # read current, archive the old version, update the row, clear the 7 index
        # tables and the compartment, then the new index rows
        writes = [s for s in stmts_all if not s.startswith(("BEGIN", "SAVEPOINT", "RELEASE", "COMMIT"))]
        assert len(writes) == 3 + 8 + len(rows) + len(patients), stmts_all
    finally:
        conn.set_trace_callback(None)
        svc.repo.db.close()
