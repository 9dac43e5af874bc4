"""A search is a look at the records it returns: the residents whose records a
search returned see it in 谁看了我的档案, like a read by id (DESIGN.md trust
model).  Before, a search by the caller's own institution
(``Observation?patient=<own patient>``, ``Observation?code=...``) named no
person on its audit row, so the resident never saw it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from harness import Server
from region import Region, build


@pytest.fixture
def region(server: Server) -> Iterator[Region]:
    yield build(server)


def _rows_by(region: Region, person: str, account: Any) -> list[Any]:
    log = region.server.app.platform.audit.access_log([region.ids[person]], limit=500)
    return [e for e in log if e.account_id == account.id]


@pytest.mark.parametrize("who", ["docB", "sysB"])
def test_own_institution_searches_name_the_residents_they_returned(region: Region, who: str) -> None:
    ids, account = region.ids, region.accounts[who]
    assert _rows_by(region, "R", account) == [] and _rows_by(region, "S", account) == []
    with region.client(who) as c:
        by_patient = c.get("/Observation", params={"patient": f"Patient/{ids['pB']}", "code": "2345-7"})
        assert by_patient.status_code == 200, by_patient.text
        assert {e["resource"]["id"] for e in by_patient.json()["entry"]} == {ids["obsB"]}
    seen_r = _rows_by(region, "R", account)
    assert len(seen_r) == 1 and seen_r[0].action == "search", seen_r
    assert _rows_by(region, "S", account) == []  # S's records were not returned: S sees nothing

    with region.client(who) as c:  # a search by code returns both of B's residents' results
        by_code = c.get("/Observation", params={"code": "2345-7"})
        assert by_code.status_code == 200
        got = {e["resource"]["id"] for e in by_code.json()["entry"]}
    assert {ids["obsB"], ids["obsS"]} <= got and ids["obsA"] not in got  # A's result is not B's to search
    assert len(_rows_by(region, "R", account)) == 2
    assert len(_rows_by(region, "S", account)) == 1

    with region.client(who) as c:  # R's observation naming S as its performer is in S's compartment too
        trap = c.get("/Observation", params={"code": "8867-4"})
        assert [e["resource"]["id"] for e in trap.json()["entry"]] == [ids["trap"]]
    assert len(_rows_by(region, "R", account)) == 3
    assert len(_rows_by(region, "S", account)) == 2


def test_a_search_that_returned_nothing_names_nobody(region: Region) -> None:
    with region.client("docB") as c:
        r = c.get("/Observation", params={"code": "no-such-code"})
        assert r.status_code == 200 and not r.json().get("entry")
    assert _rows_by(region, "R", region.accounts["docB"]) == []
    assert _rows_by(region, "S", region.accounts["docB"]) == []


def test_another_institutions_search_without_a_basis_is_refused_and_still_shown(region: Region) -> None:
    """The attack: hospital A's clinician has no basis for S (a patient of B only)."""
    with region.client("docA") as c:
        r = c.get("/Observation", params={"patient": f"Patient/{region.ids['pS']}"})
        assert r.status_code == 403
    rows = _rows_by(region, "S", region.accounts["docA"])
    assert len(rows) == 1 and rows[0].outcome != "success"
