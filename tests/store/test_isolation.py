"""Two nodes racing on one conditional create make one resource, whatever the server's default isolation.

Issue 18, item 2: "conditional creates racing on two nodes still make exactly one
resource".  A conditional create takes an advisory lock, then searches
(hutong.fhir.service.FhirService.create).  A PostgreSQL whose DBA set
``default_transaction_isolation = 'repeatable read'`` took each transaction's snapshot
at its first statement, the lock, before waiting for it: the second node then
searched a snapshot without the first node's row and created a duplicate.  The
store now opens READ COMMITTED transactions by name (hutong.store.database.Database.begin_sql).
Two repositories (two connection pools: two nodes) on one database, threads racing.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import orjson
import psycopg
import pytest
from fhirapi import patient

from hutong.fhir.assembly import open_repository
from hutong.fhir.service import FhirService
from hutong.security.guard import as_operator


@pytest.fixture
def repeatable_read_db(pg_server: str) -> Iterator[str]:
    name = "iso_" + uuid.uuid4().hex[:8]
    admin = pg_server.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
        conn.execute(f"ALTER DATABASE {name} SET default_transaction_isolation = 'repeatable read'")
    url = pg_server.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _race(svcs: list[FhirService], idno: str, clients: int = 8) -> list[int]:
    """``clients`` threads, alternating between the nodes, create the same Patient at once."""
    body = orjson.dumps(patient(idno=idno))
    start = threading.Barrier(clients)
    statuses: list[int] = []
    errors: list[BaseException] = []

    def create(svc: FhirService) -> None:
        try:
            start.wait()
            statuses.append(svc.create("Patient", body, {"if-none-exist": f"identifier={idno}"}).status)
        except BaseException as e:  # noqa: BLE001 -- reported below
            errors.append(e)

    threads = [threading.Thread(target=create, args=(svcs[i % len(svcs)],)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return sorted(statuses)


def test_conditional_create_races_on_two_nodes_make_one(repeatable_read_db: str) -> None:
    nodes = [open_repository(repeatable_read_db) for _ in range(2)]
    try:
        svcs = [FhirService(as_operator(r), "http://h/fhir") for r in nodes]
        for round_ in range(3):
            idno = f"11010519491231{round_:03d}X"
            assert _race(svcs, idno) == [200] * 7 + [201]
            found = orjson.loads(svcs[0].search("Patient", [("identifier", idno)], {}).body or b"")
            assert found["total"] == 1, found
    finally:
        for r in nodes:
            r.db.close()
