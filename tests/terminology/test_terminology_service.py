"""Issue 15, item 8: the terminology service (FHIR R4 terminology-service.html) through
HTTP on both databases, and code systems the operator loads (``hutong terminology load``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import Server, serve_app

from hutong.cli import main as hutong_main

GENDER_VS = "http://hl7.org/fhir/ValueSet/administrative-gender"
GB_SEX = "urn:oid:2.16.156.10011.2.3.3.4"


def _params(body: dict[str, Any]) -> dict[str, Any]:
    assert body["resourceType"] == "Parameters", body
    return {p["name"]: next((v for k, v in p.items() if k.startswith("value")), p.get("part"))
            for p in body["parameter"]}


def test_lookup_and_validate_code(server: Server) -> None:
    c = server.client
    r = c.get("/CodeSystem/$lookup", params={"system": "http://hl7.org/fhir/administrative-gender", "code": "female"})
    assert r.status_code == 200, r.text
    p = _params(r.json())
    assert p["display"] == "Female" and p["name"] == "AdministrativeGender" and p["version"] == "4.0.1"
    # a nested code system keeps its hierarchy (v3 ActCode is not shipped; condition-clinical nests)
    r = c.get("/CodeSystem/$lookup", params={"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                             "code": "recurrence"})
    assert r.status_code == 200, r.text
    props = [x for x in r.json()["parameter"] if x["name"] == "property"]
    assert {"name": "code", "valueCode": "parent"} in props[0]["part"]
    # the Chinese code systems Hutong uses
    r = c.get("/CodeSystem/$lookup", params={"system": GB_SEX, "code": "2"})
    assert _params(r.json())["display"] == "女性"
    r = c.get("/CodeSystem/$lookup", params={"system": "urn:oid:2.16.156.10011.2.4", "code": "C0016"})
    assert _params(r.json())["display"] == "剖宫产记录"
    r = c.get("/CodeSystem/$lookup", params={"system": "urn:oid:2.16.156.10011.2.3.3.2", "code": "110108"})
    assert _params(r.json())["display"] == "海淀区"
    r = c.get("/CodeSystem/$lookup", params={"system": GB_SEX, "code": "5"})
    assert r.status_code == 404 and r.json()["issue"][0]["details"]["coding"][0]["code"] == "HT-0242"
    r = c.get("/CodeSystem/$lookup", params={"system": "http://loinc.org", "code": "2345-7"})
    assert r.status_code == 404  # not shipped (licence): the operator loads it

    r = c.get("/CodeSystem/$validate-code", params={"url": GB_SEX, "code": "9"})
    assert _params(r.json()) == {"result": True, "display": "未说明的性别"}
    r = c.get("/CodeSystem/$validate-code", params={"url": GB_SEX, "code": "3"})
    assert _params(r.json())["result"] is False
    r = c.get("/ValueSet/$validate-code", params={"url": "http://hl7.org/fhir/ValueSet/observation-status",
                                                  "code": "done"})
    p = _params(r.json())
    assert p["result"] is False and "observation-status" in p["message"]
    r = c.post("/ValueSet/$validate-code", json={"resourceType": "Parameters", "parameter": [
        {"name": "url", "valueUri": GENDER_VS},
        {"name": "coding", "valueCoding": {"system": "http://hl7.org/fhir/administrative-gender", "code": "male",
                                           "display": "Male"}}]})
    assert r.status_code == 200 and _params(r.json())["result"] is True
    r = c.post("/ValueSet/$validate-code", json={"resourceType": "Parameters", "parameter": [
        {"name": "url", "valueUri": GENDER_VS},
        {"name": "codeableConcept", "valueCodeableConcept": {"coding": [
            {"system": GB_SEX, "code": "1"}, {"system": "http://hl7.org/fhir/administrative-gender", "code": "male",
                                               "display": "男"}]}}]})
    p = _params(r.json())
    assert p["result"] is False and "display" in p["message"]  # the wrong display is an error
    r = c.get("/ValueSet/$validate-code", params={"code": "male"})
    assert r.status_code == 400 and r.json()["issue"][0]["details"]["coding"][0]["code"] == "HT-0244"


def test_expand_and_translate(server: Server) -> None:
    c = server.client
    r = c.get("/ValueSet/$expand", params={"url": GENDER_VS})
    assert r.status_code == 200, r.text
    exp = r.json()["expansion"]
    assert exp["total"] == 4 and {x["code"] for x in exp["contains"]} == {"male", "female", "other", "unknown"}
    r = c.get("/ValueSet/$expand", params={"url": "https://fhir.hutong.dev/ValueSet/wst500-document-type",
                                           "filter": "知情同意", "count": "2", "offset": "1"})
    exp = r.json()["expansion"]
    assert exp["total"] == 3 and len(exp["contains"]) == 2 and exp["offset"] == 1  # C0026, C0027, C0031
    assert [x["code"] for x in exp["contains"]] == ["C0027", "C0031"]
    r = c.get("/ValueSet/$expand", params={"url": "http://hl7.org/fhir/ValueSet/mimetypes"})
    assert r.status_code == 422 and r.json()["issue"][0]["details"]["coding"][0]["code"] == "HT-0243"

    r = c.get("/ConceptMap/$translate", params={"system": GB_SEX, "code": "1"})
    p = r.json()["parameter"]
    assert p[0] == {"name": "result", "valueBoolean": True}
    match = {x["name"]: x for x in p[1]["part"]}
    assert match["concept"]["valueCoding"] == {"system": "http://hl7.org/fhir/administrative-gender", "code": "male"}
    assert match["equivalence"]["valueCode"] == "equivalent"
    r = c.get("/ConceptMap/$translate", params={"system": "http://hl7.org/fhir/administrative-gender",
                                                "code": "female", "reverse": "true",
                                                "targetsystem": GB_SEX})
    assert [x["part"][1]["valueCoding"]["code"] for x in r.json()["parameter"][1:]] == ["2"]
    r = c.get("/ConceptMap/$translate", params={"system": GB_SEX, "code": "7"})
    assert _params(r.json())["result"] is False


def test_terminology_is_authenticated(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as anon:
        r = anon.get("/ValueSet/$expand", params={"url": GENDER_VS})
    assert r.status_code == 401
    # the route is the operation, not a read of a CodeSystem called "$lookup"
    r = server.client.get("/CodeSystem/$lookup", params={"system": GB_SEX, "code": "1"})
    assert r.status_code == 200 and r.json()["resourceType"] == "Parameters"


@pytest.fixture
def sqlite_server(sqlite_url: str) -> Iterator[Server]:
    yield from serve_app(sqlite_url)


def test_operator_loads_code_systems(sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A LOINC-style table (LOINC's own column names), written for this test.
    table = tmp_path / "lab-codes.csv"
    table.write_text("LOINC_NUM,COMPONENT,LONG_COMMON_NAME\n"
                     "99991-1,Glucose,Glucose [Moles/volume] in Test fluid\n"
                     "99992-9,Sodium,Sodium [Moles/volume] in Test fluid\n", encoding="utf-8")
    assert hutong_main(["terminology", "--database", sqlite_url, "load", str(table), "--url",
                        "http://example.org/test-lab"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["codeSystems"] == [{"url": "http://example.org/test-lab", "concepts": 2}]
    # A FHIR CodeSystem with a hierarchy (an ICD-10-style chapter), and a CSV without --url is refused.
    cs = tmp_path / "icd-test.json"
    cs.write_text(json.dumps({"resourceType": "CodeSystem", "url": "http://example.org/icd-test", "status": "active",
                              "content": "complete", "concept": [{"code": "E00-E90", "display": "内分泌疾病",
                                                                  "concept": [{"code": "E11", "display": "2型糖尿病"}]}]},
                             ensure_ascii=False), encoding="utf-8")
    assert hutong_main(["terminology", "--database", sqlite_url, "load", str(cs)]) == 0
    assert hutong_main(["terminology", "--database", sqlite_url, "load", str(table)]) == 2
    assert "HT-0245" in capsys.readouterr().err
    # a national table as Chinese sources ship them: GB18030 (read only when said so)
    icd = tmp_path / "icd10-gb.csv"
    icd.write_bytes("编码,名称\nI10.x00,特发性(原发性)高血压\n".encode("gb18030"))
    assert hutong_main(["terminology", "--database", sqlite_url, "load", str(icd), "--url",
                        "http://example.org/icd10-gb"]) == 2
    assert "gb18030" in capsys.readouterr().err
    assert hutong_main(["terminology", "--database", sqlite_url, "load", str(icd), "--url",
                        "http://example.org/icd10-gb", "--encoding", "gb18030"]) == 0
    capsys.readouterr()

    for server in serve_app(sqlite_url):
        c = server.client
        r = c.get("/CodeSystem/$lookup", params={"system": "http://example.org/test-lab", "code": "99992-9"})
        assert r.status_code == 200 and _params(r.json())["display"] == "Sodium [Moles/volume] in Test fluid"
        r = c.get("/CodeSystem/$lookup", params={"system": "http://example.org/icd10-gb", "code": "I10.x00"})
        assert _params(r.json())["display"] == "特发性(原发性)高血压"
        r = c.get("/CodeSystem/$lookup", params={"system": "http://example.org/icd-test", "code": "E11"})
        assert {"name": "code", "valueCode": "parent"} in r.json()["parameter"][-1]["part"]
        r = c.get("/ValueSet/$validate-code", params={"url": "http://example.org/icd-test?vs", "code": "E11",
                                                      "system": "http://example.org/icd-test"})
        assert _params(r.json())["result"] is True
        # loaded while the server runs: read on the next request
        more = tmp_path / "more.csv"
        more.write_text("code,display\nX1,新的代码\n", encoding="utf-8")
        assert hutong_main(["terminology", "--database", sqlite_url, "load", str(more), "--url",
                            "http://example.org/more"]) == 0
        r = c.get("/CodeSystem/$lookup", params={"system": "http://example.org/more", "code": "X1"})
        assert r.status_code == 200 and _params(r.json())["display"] == "新的代码"
