"""Search semantics through HTTP on both databases (search.html)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fhirapi import NOT_GOLDEN, ids, issue_code, observation, patient
from harness import Server


def post(server: Server, res: dict[str, Any]) -> dict[str, Any]:
    r = server.client.post(f"/{res['resourceType']}", content=json.dumps(res))
    assert r.status_code == 201, r.text
    return dict(r.json())


def search(server: Server, type: str, **params: Any) -> dict[str, Any]:
    items = list(params.items()) + ([NOT_GOLDEN] if type == "Patient" else [])
    r = server.client.get(f"/{type}", params=items)
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.fixture
def people(server: Server) -> dict[str, str]:
    out = {}
    out["wang"] = post(server, patient("王", "小明", "11010519491231002X", birth="1949-12-31", gender="female"))["id"]
    out["li"] = post(server, patient("李", "四", "440524188001010014", birth="1980-01-01", gender="male",
                                      mrn="MRN-7"))["id"]
    out["wangwu"] = post(server, patient("王", "五", "34052419800101001X", birth="1980-01-01", gender="male"))["id"]
    out["en"] = post(server, patient("Müller", "Hans", "P1234567", birth="1975-06", gender="male"))["id"]
    return out


def test_token_string_date(server: Server, people: dict[str, str]) -> None:
    assert ids(search(server, "Patient", identifier="440524188001010014")) == [people["li"]]
    assert ids(search(server, "Patient", identifier="urn:oid:2.16.156.10011.1.3|440524188001010014")) == [people["li"]]
    assert ids(search(server, "Patient", identifier="urn:hutong:mrn:H001|")) == [people["li"]]
    assert ids(search(server, "Patient", identifier="|440524188001010014")) == []
    assert ids(search(server, "Patient", identifier="other|440524188001010014")) == []
    assert sorted(ids(search(server, "Patient", family="王"))) == sorted([people["wang"], people["wangwu"]])
    assert ids(search(server, "Patient", name="mull")) == [people["en"]]  # accent- and case-insensitive prefix
    assert ids(search(server, "Patient", **{"name:exact": "Müller"})) == [people["en"]]
    assert ids(search(server, "Patient", **{"name:exact": "müller"})) == []
    # Names are blind-indexed (hutong.security.blindindex): prefix and exact work, :contains is refused
    # with a reason; other strings keep :contains.
    r = server.client.get("/Patient", params={"given:contains": "an"})
    assert r.status_code == 400 and issue_code(r) == "HT-0150"
    hosp = post(server, {"resourceType": "Organization", "name": "Hanshan Hospital"})
    assert ids(search(server, "Organization", **{"name:contains": "SHAN"})) == [hosp["id"]]
    assert sorted(ids(search(server, "Patient", gender="male", birthdate="1980"))) == sorted(
        [people["li"], people["wangwu"]])
    assert sorted(ids(search(server, "Patient", **{"gender:not": "male"}))) == [people["wang"]]
    assert ids(search(server, "Patient", birthdate="1949-12-31")) == [people["wang"]]
    assert set(ids(search(server, "Patient", birthdate="lt1980"))) == {people["wang"], people["en"]}
    assert set(ids(search(server, "Patient", birthdate="ge1980-01-01"))) == {people["li"], people["wangwu"]}
    assert ids(search(server, "Patient", birthdate="gt1980-01-01")) == []
    # a month-precision birth date is inside the year, and overlaps a day inside it (ap)
    assert ids(search(server, "Patient", birthdate="1975")) == [people["en"]]
    assert ids(search(server, "Patient", birthdate="1975-06-15")) == []
    assert ids(search(server, "Patient", birthdate="sa1975-01-01", family="Müller")) == [people["en"]]
    assert set(ids(search(server, "Patient", family="王,李"))) == {people["wang"], people["wangwu"], people["li"]}
    # AND of repeated parameters
    r = server.client.get("/Patient", params=[("family", "王"), ("given", "五"), NOT_GOLDEN]).json()
    assert ids(r) == [people["wangwu"]]
    assert ids(search(server, "Patient", phone="13800138000", _count=1))


def test_missing_id_lastupdated(server: Server, people: dict[str, str]) -> None:
    assert search(server, "Patient", **{"birthdate:missing": "true"})["total"] == 0
    assert search(server, "Patient", **{"birthdate:missing": "false"})["total"] == 4
    assert search(server, "Patient", **{"address:missing": "true"})["total"] == 4
    assert ids(search(server, "Patient", _id=people["li"])) == [people["li"]]
    assert set(ids(search(server, "Patient", _id=f"{people['li']},{people['en']}"))) == {people["li"], people["en"]}
    assert search(server, "Patient", _lastUpdated="gt2000-01-01")["total"] == 4
    assert search(server, "Patient", _lastUpdated="lt2000-01-01")["total"] == 0


def test_reference_chain_has_quantity(server: Server, people: dict[str, str]) -> None:
    o1 = post(server, observation(people["li"], value=5.6))
    o2 = post(server, observation(people["li"], code="4548-4", value=7.2, unit="%"))
    o3 = post(server, observation(people["wang"], value=11.0))
    assert set(ids(search(server, "Observation", patient=people["li"]))) == {o1["id"], o2["id"]}
    assert set(ids(search(server, "Observation", subject=f"Patient/{people['li']}"))) == {o1["id"], o2["id"]}
    assert set(ids(search(server, "Observation", subject=f"{server.url}/Patient/{people['li']}"))) == {
        o1["id"], o2["id"]}
    assert ids(search(server, "Observation", **{"subject:Patient": people["wang"]})) == [o3["id"]]
    # chained search on a reference parameter
    assert set(ids(search(server, "Observation", **{"subject.identifier": "440524188001010014"}))) == {
        o1["id"], o2["id"]}
    assert ids(search(server, "Observation", **{"patient.family": "王", "code": "http://loinc.org|2345-7"})) == [
        o3["id"]]
    assert ids(search(server, "Observation", **{"subject:Patient.birthdate": "1949"})) == [o3["id"]]
    # reverse chaining
    assert ids(search(server, "Patient", **{"_has:Observation:patient:code": "4548-4"})) == [people["li"]]
    # quantity prefixes and units
    assert ids(search(server, "Observation", **{"value-quantity": "gt10"})) == [o3["id"]]
    assert ids(search(server, "Observation", **{"value-quantity": "5.6"})) == [o1["id"]]
    assert set(ids(search(server, "Observation", **{"value-quantity": "le7.2"}))) == {o1["id"], o2["id"]}
    assert ids(search(server, "Observation", **{"value-quantity": "7.2|http://unitsofmeasure.org|%"})) == [o2["id"]]
    assert ids(search(server, "Observation", **{"value-quantity": "ap5.5"})) == [o1["id"]]
    assert ids(search(server, "Observation", date="2026-01-05")) and not ids(search(
        server, "Observation", date="2026-01-06"))
    assert search(server, "Observation", **{"code:text": "血糖"})["total"] == 3


def test_include_revinclude_iterate(server: Server, people: dict[str, str]) -> None:
    org = post(server, {"resourceType": "Organization", "name": "北京协和医院",
                        "identifier": [{"system": "urn:oid:2.16.156.10011.1.5", "value": "400000001"}]})
    pat = post(server, patient("赵", "六", "110105198001010033") | {
        "managingOrganization": {"reference": f"Organization/{org['id']}"}})
    obs = post(server, observation(pat["id"]))
    b = search(server, "Observation", _id=obs["id"], _include="Observation:patient")
    assert ids(b) == [obs["id"]] and ids(b, "include") == [pat["id"]]
    b = search(server, "Observation", _id=obs["id"], _include="Observation:patient",
               **{"_include:iterate": "Patient:organization"})
    assert set(ids(b, "include")) == {pat["id"], org["id"]}
    b = search(server, "Patient", _id=pat["id"], _revinclude="Observation:patient")
    assert ids(b) == [pat["id"]] and ids(b, "include") == [obs["id"]]
    b = search(server, "Organization", _id=org["id"], _revinclude="Patient:organization",
               **{"_revinclude:iterate": "Observation:patient"})
    assert set(ids(b, "include")) == {pat["id"], obs["id"]}


def test_sort_count_paging_stable_under_writes(server: Server) -> None:
    created = [post(server, patient("孙", f"名{i:02d}", f"ID{i:03d}", birth=f"19{50 + i}-01-01"))["id"]
               for i in range(12)]
    b = search(server, "Patient", _sort="-birthdate", _count=5)
    assert b["total"] == 12
    first = ids(b)
    assert first == list(reversed(created))[:5]
    nxt = next(lk["url"] for lk in b["link"] if lk["relation"] == "next")
    # others write while we page: a new oldest-born patient (sorts last) and a deletion of an already-seen one
    post(server, patient("孙", "新", "IDNEW", birth="1900-01-01"))
    server.client.delete(f"/Patient/{first[0]}")
    p2 = server.client.get(nxt).json()
    assert ids(p2) == list(reversed(created))[5:10]
    prev = next(lk["url"] for lk in p2["link"] if lk["relation"] == "previous")
    assert ids(server.client.get(prev).json()) == first[1:]
    nxt = next(lk["url"] for lk in p2["link"] if lk["relation"] == "next")
    p3 = server.client.get(nxt).json()
    assert ids(p3)[:2] == list(reversed(created))[10:]
    assert len(ids(p3)) == 3  # the newly written one sorts last and is not skipped
    assert [lk["relation"] for lk in p3["link"]].count("next") == 0
    # sort by string ascending, ties broken stably (names are keyed hashes: no order to sort by)
    r = server.client.get("/Patient", params={"_sort": "given,_id"})
    assert r.status_code == 400 and issue_code(r) == "HT-0151"
    for name in ("乙医院", "甲医院", "丙医院", "甲医院"):
        post(server, {"resourceType": "Organization", "name": name})
    b = search(server, "Organization", _sort="name,_id", _count=100)
    names = [e["resource"]["name"] for e in b["entry"]]
    assert names == sorted(names) and len(names) == 4


def test_summary_elements(server: Server, people: dict[str, str]) -> None:
    b = search(server, "Patient", _summary="count")
    assert b["total"] == 4 and "entry" not in b
    b = search(server, "Patient", _elements="birthDate", _id=people["li"])
    res = b["entry"][0]["resource"]
    assert set(res) == {"resourceType", "id", "meta", "birthDate"}
    assert any(t["code"] == "SUBSETTED" for t in res["meta"]["tag"])
    b = search(server, "Patient", _summary="true", _id=people["li"])
    assert "birthDate" in b["entry"][0]["resource"]


def test_post_search_and_compartment(server: Server, people: dict[str, str]) -> None:
    r = server.client.post("/Patient/_search", content="family=王&gender=male&_tag:not="
                           "https%3A%2F%2Ffhir.hutong.dev%2FCodeSystem%2Fmpi%7Cgolden",
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and ids(r.json()) == [people["wangwu"]]
    o = post(server, observation(people["li"]))
    r = server.client.get(f"/Patient/{people['li']}/Observation")
    assert ids(r.json()) == [o["id"]]


def test_search_errors(server: Server, people: dict[str, str]) -> None:
    c = server.client
    r = c.get("/Patient", params={"nonsense": "1"}, headers={"Prefer": "handling=strict"})
    assert r.status_code == 400 and issue_code(r) == "HT-0020"
    r = c.get("/Patient", params=[("nonsense", "1"), NOT_GOLDEN])  # lenient: ignored and reported
    assert r.status_code == 200 and r.json()["total"] == 4
    assert r.json()["entry"][-1]["search"]["mode"] == "outcome"
    for params, code in [
        ({"birthdate": "yesterday"}, "HT-0021"),
        ({"_count": "-1"}, "HT-0023"),
        ({"_sort": "bogus"}, "HT-0025"),
        ({"_include": "Nope:x"}, "HT-0025"),
        ({"_cursor": "!!!"}, "HT-0024"),
        ({"family:near": "x"}, "HT-0022"),
        ({"gender.name": "x"}, "HT-0021"),
        ({"_summary": "bogus"}, "HT-0021"),
    ]:
        r = c.get("/Patient", params=params)
        assert r.status_code == 400, (params, r.text)
        assert issue_code(r) == code, params
    r = c.get("/Nope")
    assert r.status_code == 404 and issue_code(r) == "HT-0004"


@pytest.mark.parametrize("payload", ["' OR 1=1 --", "\"; DROP TABLE resource; --", "%", "_", "\\", "王' UNION "
                                     "SELECT body FROM resource --", "1) OR (1=1"])
def test_injection_is_inert(server: Server, people: dict[str, str], payload: str) -> None:
    for param in ["family", "identifier", "name:contains", "_id", "gender", "subject.identifier"]:
        type = "Observation" if param.startswith("subject") else "Patient"
        r = server.client.get(f"/{type}", params={param: payload})
        assert r.status_code in (200, 400), r.text
        if r.status_code == 200:
            assert r.json()["total"] == 0
    assert search(server, "Patient")["total"] == 4
