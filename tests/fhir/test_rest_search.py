"""Issue 15, item 6: search and read as FHIR clients use them (search.html, http.html,
json.html), through HTTP on both databases.  Samples written for these tests."""

from __future__ import annotations

from typing import Any

from fhirapi import issue_code, patient
from harness import Server

SUBSETTED = "SUBSETTED"


def _post(server: Server, res: dict[str, Any]) -> str:
    r = server.client.post(f"/{res['resourceType']}", json=res)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _ids(body: dict[str, Any], mode: str = "match") -> set[str]:
    return {e["resource"]["id"] for e in body.get("entry", []) if e["search"]["mode"] == mode}


def test_core_parameters_deceased_and_task(server: Server) -> None:
    c = server.client
    alive = _post(server, patient("钱", "一", "110101195001010011", birth="1950-01-01", gender="male"))
    dead = _post(server, {**patient("钱", "二", "110101195001010038", birth="1950-01-01", gender="male"),
                          "deceasedBoolean": True})
    died = _post(server, {**patient("钱", "三", "110101195001010054", birth="1950-01-01", gender="male"),
                          "deceasedDateTime": "2024-03-01"})
    not_dead = _post(server, {**patient("钱", "四", "110101195001010070", birth="1950-01-01", gender="male"),
                              "deceasedBoolean": False})
    assert _ids(c.get("/Patient", params={"family": "钱", "deceased": "true"}).json()) == {dead, died}
    assert _ids(c.get("/Patient", params={"family": "钱", "deceased": "false"}).json()) == {alive, not_dead}
    task = _post(server, {"resourceType": "Task", "status": "requested", "intent": "order", "priority": "urgent",
                          "groupIdentifier": {"system": "urn:hutong:test", "value": "G-15"},
                          "executionPeriod": {"start": "2026-02-01", "end": "2026-02-10"}})
    _post(server, {"resourceType": "Task", "status": "requested", "intent": "order", "priority": "routine"})
    assert _ids(c.get("/Task", params={"priority": "urgent"}).json()) == {task}
    assert _ids(c.get("/Task", params={"group-identifier": "urn:hutong:test|G-15"}).json()) == {task}
    assert _ids(c.get("/Task", params={"period": "2026-02"}).json()) == {task}
    meta = c.get("/metadata").json()
    (pat,) = [x for x in meta["rest"][0]["resource"] if x["type"] == "Patient"]
    assert "deceased" in {p["name"] for p in pat["searchParam"]}


def test_unknown_parameters_strict_and_lenient(server: Server) -> None:
    c = server.client
    _post(server, patient("孙", "一", "110101196001010019", birth="1960-01-01", gender="male"))
    r = c.get("/Patient", params={"family": "孙", "bogus-param": "1"}, headers={"Prefer": "handling=strict"})
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
    assert issue_code(r) == "HT-0020" and "bogus-param" in r.text
    r = c.get("/Patient", params={"family": "孙", "bogus-param": "1"}, headers={"Prefer": "handling=lenient"})
    assert r.status_code == 200
    body = r.json()
    outcome = [e for e in body["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcome) == 1 and "bogus-param" in str(outcome[0]["resource"])
    self_link = next(x["url"] for x in body["link"] if x["relation"] == "self")
    assert "bogus" not in self_link and "family" in self_link


def test_summary_and_elements_on_read_and_vread(server: Server) -> None:
    c = server.client
    pid = _post(server, patient("周", "一", "110101197001010017", birth="1970-01-01", gender="male"))
    for url in (f"/Patient/{pid}", f"/Patient/{pid}/_history/1"):
        whole = c.get(url).json()
        assert "telecom" in whole
        r = c.get(url, params={"_elements": "gender,birthDate"})
        assert r.status_code == 200, r.text
        got = r.json()
        assert set(got) == {"resourceType", "id", "meta", "gender", "birthDate"}, got
        assert SUBSETTED in {t["code"] for t in got["meta"]["tag"]}
        got = c.get(url, params={"_summary": "true"}).json()
        assert "name" in got and "telecom" in got and SUBSETTED in {t["code"] for t in got["meta"]["tag"]}
        got = c.get(url, params={"_summary": "text"}).json()
        assert "gender" not in got and SUBSETTED in {t["code"] for t in got["meta"]["tag"]}
        assert c.get(url, params={"_summary": "false"}).json() == whole
        r = c.get(url, params={"_summary": "count"})
        assert r.status_code == 400 and issue_code(r) == "HT-0200"


def test_contains_on_names_is_not_advertised_where_refused(server: Server) -> None:
    c = server.client
    r = c.get("/Patient", params={"name:contains": "小"})
    assert r.status_code == 400 and issue_code(r) == "HT-0150"
    meta = c.get("/metadata").json()
    res = {x["type"]: {p["name"]: p.get("documentation", "") for p in x["searchParam"]}
           for x in meta["rest"][0]["resource"]}
    for name in ("name", "family", "given", "address"):
        assert "contains" not in res["Patient"][name].replace("no :contains", ""), (name, res["Patient"][name])
    assert "contains" in res["Organization"]["name"]
    hosp = _post(server, {"resourceType": "Organization", "name": "Tongren Eye Hospital"})
    assert _ids(c.get("/Organization", params={"name:contains": "EYE"}).json()) == {hosp}


def test_include_wildcard(server: Server) -> None:
    c = server.client
    pid = _post(server, patient("吴", "一", "110101198001010014", birth="1980-01-01", gender="male"))
    org = _post(server, {"resourceType": "Organization", "name": "检验科 include"})
    obs = _post(server, {"resourceType": "Observation", "status": "final", "code": {"text": "血糖"},
                         "subject": {"reference": f"Patient/{pid}"}, "performer": [{"reference": f"Organization/{org}"}],
                         "valueQuantity": {"value": 5.5}})
    for inc in ("*", "Observation:*"):
        b = c.get("/Observation", params={"_id": obs, "_include": inc}).json()
        assert _ids(b) == {obs} and _ids(b, "include") == {pid, org}, (inc, b)
    b = c.get("/Organization", params={"_id": org, "_revinclude": "Observation:*"}).json()
    assert _ids(b, "include") == {obs}
    meta = c.get("/metadata").json()
    (o,) = [x for x in meta["rest"][0]["resource"] if x["type"] == "Observation"]
    assert "*" in o["searchInclude"]


def test_no_empty_arrays(server: Server) -> None:
    c = server.client
    for r in (c.get("/Observation", params={"code": "urn:hutong:test|nothing-has-this"}),
              c.get("/Patient", params={"family": "不存在的姓"}),
              c.get("/Organization/_history", params={"_since": "2999-01-01"})):
        assert r.status_code == 200, r.text
        assert "entry" not in r.json() and "[]" not in r.text, r.text
    assert "[]" not in c.get("/metadata").text


def test_post_with_criteria_is_a_conditional_create(server: Server) -> None:
    """fhirpy's ``search(identifier=...).get_or_create(resource)`` and
    ``resource.create(identifier=...)`` POST [type]?criteria with the resource."""
    c = server.client
    org = {"resourceType": "Organization", "identifier": [{"system": "urn:hutong:test:org", "value": "O-15"}],
           "name": "条件创建医院"}
    params = {"identifier": "urn:hutong:test:org|O-15"}
    first = c.post("/Organization", params=params, json=org, headers={"content-type": "application/json"})
    assert first.status_code == 201, first.text
    again = c.post("/Organization", params=params, json=org)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert c.get("/Organization", params={**params, "_summary": "count"}).json()["total"] == 1
    # the same condition in both places is fine; different ones are refused
    same = c.post("/Organization", params=params, json=org, headers={"If-None-Exist": "identifier=urn:hutong:test:org|O-15"})
    assert same.status_code == 200
    r = c.post("/Organization", params=params, json=org, headers={"If-None-Exist": "identifier=urn:hutong:test:org|O-16"})
    assert r.status_code == 400 and issue_code(r) == "HT-0201"
    # _format is not a criterion: a plain create
    r = c.post("/Organization", params={"_format": "json"}, json={"resourceType": "Organization", "name": "x"})
    assert r.status_code == 201
