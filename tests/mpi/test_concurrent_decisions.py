"""Human identity decisions racing on two nodes (issue 18, item 2) leave a consistent index.

Two repositories (two connection pools: two app nodes) on one PostgreSQL merge X into Y
and Y into X at the same moment.  Before hutong.mpi.service.Mpi._lock_persons both read
the persons' sources and then updated each other's rows crosswise: PostgreSQL found a
deadlock and aborted one of them, an internal error for its caller (seen in this test
before the fix); with other timing both could commit, each having moved the other's
sources.  Now one merge wins and the other is refused with HT-0056 (its source person
has no sources left), in every round.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fhirapi import patient

from hutong.errors import HutongError
from hutong.fhir.assembly import open_repository
from hutong.fhir.service import FhirService
from hutong.mpi.idnumber import check_char
from hutong.platform import mpi_of
from hutong.security.guard import as_operator
from hutong.store.sql import SqlRepository

ROUNDS = 4


@pytest.fixture
def two_nodes(db_url: str) -> Iterator[list[SqlRepository]]:
    """Two repositories on the (emptied) PostgreSQL of tests/conftest.py's db_url."""
    nodes = [open_repository(db_url) for _ in range(2)]
    yield nodes
    for r in nodes:
        r.db.close()


def _resident(family: str, given: str, birth: str, gender: str, k: int, phone: str) -> dict[str, Any]:
    first = "110105" + birth.replace("-", "") + f"{k:02d}" + ("1" if gender == "male" else "2")
    res: dict[str, Any] = patient(family, given, first + check_char(first), birth=birth, gender=gender,
                                  mrn=f"{family}{k}")
    res["telecom"] = [{"system": "phone", "value": phone}]
    return res


def _create(svc: FhirService, res: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(svc.create("Patient", orjson.dumps(res), {}).body or b"")
    return out


def _person_of(svc: FhirService, res: dict[str, Any]) -> str:
    stored = orjson.loads(svc.read("Patient", res["id"]).body or b"")
    refs = [ln["other"]["reference"] for ln in stored.get("link", []) if ln.get("type") == "refer"]
    assert len(refs) == 1, stored.get("link")
    return str(refs[0].split("/")[1])


def _replaced_by(svc: FhirService, person: str) -> list[str]:
    body: dict[str, Any] = orjson.loads(svc.read("Patient", person).body or b"")
    return [str(ln["other"]["reference"]) for ln in body.get("link", []) if ln.get("type") == "replaced-by"]


def _crossed_merges(nodes: list[SqlRepository], x: str, y: str) -> tuple[list[str], list[str]]:
    """Node 0 merges x into y while node 1 merges y into x; (merges done, codes refused)."""
    start = threading.Barrier(2)
    done: list[str] = []
    refused: list[str] = []

    def merge(node: SqlRepository, source: str, target: str) -> None:
        start.wait()
        try:
            mpi_of(node).merge(source, target, actor="op", reason="same resident")
            done.append(f"{source}->{target}")
        except HutongError as e:
            refused.append(e.code)

    threads = [threading.Thread(target=merge, args=(nodes[0], x, y)),
               threading.Thread(target=merge, args=(nodes[1], y, x))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return done, refused


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # SQLite serialises writers already
def test_crossed_merges_on_two_nodes_never_make_a_cycle(two_nodes: list[SqlRepository]) -> None:
    svc = FhirService(as_operator(two_nodes[0]), "http://h/fhir")
    for k in range(ROUNDS):
        a = _create(svc, _resident("陈", "静", "1975-02-03", "female", k, "13500000000"))
        b = _create(svc, _resident("刘", "洋", "1992-11-30", "male", k, "13300000000"))
        x, y = _person_of(svc, a), _person_of(svc, b)
        assert x != y
        done, refused = _crossed_merges(two_nodes, x, y)
        assert len(done) == 1 and refused == ["HT-0056"], (done, refused)
        # Both registrations are with the surviving person; exactly one golden record is retired.
        survivor = done[0].split("->")[1]
        assert _person_of(svc, a) == survivor and _person_of(svc, b) == survivor
        retired = x if survivor == y else y
        assert _replaced_by(svc, retired) == [f"Patient/{survivor}"]
        assert _replaced_by(svc, survivor) == []
