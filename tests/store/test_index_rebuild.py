"""``hutong index rebuild``: the search index of stored resources made again in
place, as an upgrade that adds search parameters needs (the index is written
with each write, so new parameters find only what was written since).

The test removes a parameter's index rows and the compartment rows, as a
database from before that parameter holds them, then rebuilds: the rows come
back identical (blind-index digests included), searches find the resources
again, and no resource gets a new version."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from fhirapi import observation, patient

from hutong.cli import main
from hutong.fhir.service import FhirService
from hutong.platform import open_repository
from hutong.security.guard import as_operator
from hutong.store.sql import sql_repository, sql_writer


def _rows(repo: Any, table: str) -> list[tuple[Any, ...]]:
    return sorted(tuple(r) for r in sql_repository(repo).query(f"SELECT * FROM {table}"))  # noqa: S608


def _ids(svc: FhirService, type: str, params: list[tuple[str, str]]) -> set[str]:
    return {e["resource"]["id"] for e in orjson.loads(svc.search(type, params, {}).body or b"").get("entry", [])}


def test_rebuild_restores_every_index_row_and_makes_no_version(db_url: str, capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    repo = open_repository(db_url)
    try:
        svc = FhirService(as_operator(repo), "http://h/fhir")
        pid = orjson.loads(svc.create("Patient", orjson.dumps(patient()), {}).body or b"")["id"]
        obs = [orjson.loads(svc.create("Observation", orjson.dumps(observation(pid, value=5.0 + i)), {}).body
                            or b"")["id"] for i in range(3)]
        before = {t: _rows(repo, t) for t in ("idx_token", "idx_reference", "idx_date", "compartment")}
        versions = _rows(repo, "resource_version")
        current = sql_repository(repo).query(  # the Patient, its golden person record and the Observations
            "SELECT COUNT(*) FROM resource WHERE deleted = 0 AND type IN ('Observation', 'Patient')")[0][0]
        code = sql_repository(repo).param_ids[("Observation", "code")]
        sql = sql_repository(repo)
        with repo.write() as w:  # a database from before these rows were indexed
            sql_writer(w).execute("DELETE FROM idx_token WHERE param_id = ?", (code,))
            sql_writer(w).execute("DELETE FROM compartment")
        assert _ids(svc, "Observation", [("code", "2345-7")]) == set()
        assert sql.query("SELECT COUNT(*) FROM compartment")[0][0] == 0
    finally:
        repo.db.close()

    assert main(["index", "--database", db_url, "rebuild", "--type", "Observation", "--type", "Patient",
                 "--batch", "2"]) == 0
    out = orjson.loads(capsys.readouterr().out)
    assert out["reindexed"] == current == 5

    repo = open_repository(db_url)
    try:
        svc = FhirService(as_operator(repo), "http://h/fhir")
        assert {t: _rows(repo, t) for t in before} == before  # the same rows, digests included
        assert _rows(repo, "resource_version") == versions  # no new versions
        assert _ids(svc, "Observation", [("code", "2345-7")]) == set(obs)
        assert _ids(svc, "Observation", [("patient", f"Patient/{pid}")]) == set(obs)
        meta = orjson.loads(svc.read("Observation", obs[0]).body or b"")["meta"]
        assert meta["versionId"] == "1"
    finally:
        repo.db.close()


def test_rebuild_refuses_what_is_not_a_type_or_a_batch(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["index", "--database", sqlite_url, "rebuild", "--type", "Observaton"]) == 2
    assert "Observaton" in capsys.readouterr().err
    assert main(["index", "--database", sqlite_url, "rebuild", "--batch", "0"]) == 2
