"""Index rows keep their values exactly, whatever the characters (hutong.store.sql._insert_rows).

On PostgreSQL a resource's index rows go in as arrays (``INSERT ... SELECT FROM unnest(...)``):
a value must not turn into SQL NULL ("NULL" is NULL in an array literal), lose a quote or a
backslash, or split at a comma or brace.  Each value is written and found again by search.
"""

from __future__ import annotations

import orjson
import pytest

from hutong.fhir.assembly import open_repository
from hutong.fhir.service import FhirService
from hutong.security.guard import as_operator

SYSTEM = "urn:oid:2.16.156.10011.1.99"
TRICKY = ["NULL", "null", '{"a\\b",}', "a,b", "{}", '引号"', "back\\slash", "x y"]


def _escaped(v: str) -> str:
    """A search value with FHIR's escapes (search.html#escaping): backslash first."""
    for c in "\\,$|":
        v = v.replace(c, "\\" + c)
    return v


@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
def test_tricky_values_are_stored_and_found(db_url: str) -> None:
    repo = open_repository(db_url)
    try:
        svc = FhirService(as_operator(repo))
        ids = {}
        for v in TRICKY:
            body = {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": v}],
                    "name": [{"family": v, "given": ["测试"]}]}
            ids[v] = orjson.loads(svc.create("Patient", orjson.dumps(body), {}).body or b"")["id"]
        for v in TRICKY:
            for items in ([("identifier", f"{SYSTEM}|{_escaped(v)}")], [("family:exact", _escaped(v))]):
                found = orjson.loads(svc.search("Patient", items, {}).body or b"")
                got = [e["resource"]["id"] for e in found.get("entry", [])]
                assert got == [ids[v]], (v, items, got)
    finally:
        repo.db.close()


@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
def test_one_create_writes_every_kind_of_index_row(db_url: str) -> None:
    """A REST create's quantity, date, reference, token and compartment rows, which on
    PostgreSQL go in with the resource row in one statement (hutong.store.sql._create_statement,
    floats and integers in arrays of their own types): each found again by search."""
    repo = open_repository(db_url)
    try:
        svc = FhirService(as_operator(repo))
        pid = orjson.loads(svc.create("Patient", orjson.dumps(
            {"resourceType": "Patient", "name": [{"family": "索引"}]}), {}).body or b"")["id"]
        oid = orjson.loads(svc.create("Observation", orjson.dumps({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": "2026-12-01T10:00:00+08:00",
            "valueQuantity": {"value": 72.5, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
        }), {}).body or b"")["id"]
        for items in ([("value-quantity", "72.5|http://unitsofmeasure.org|/min")], [("value-quantity", "gt72")],
                      [("date", "2026-12-01")], [("subject", f"Patient/{pid}")], [("patient", pid)],
                      [("code", "http://loinc.org|8867-4")]):
            found = orjson.loads(svc.search("Observation", items, {}).body or b"")
            assert [e["resource"]["id"] for e in found.get("entry", [])] == [oid], items
        # and what must not match does not
        for items in ([("value-quantity", "lt72")], [("date", "2026-12-02")]):
            found = orjson.loads(svc.search("Observation", items, {}).body or b"")
            assert found.get("entry", []) == [], items
    finally:
        repo.db.close()
