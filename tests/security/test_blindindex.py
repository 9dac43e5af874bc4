"""Blind indexes: direct identifiers are digests in the index tables, and
FHIR search on them (search.html#token, #string) still answers, over HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from harness import Server

from hutong.security.blindindex import PREFIX_MAX, BlindIndex, is_protected
from hutong.store.query import StringMatch, TokenMatch

ID_CARD = "urn:oid:2.16.156.10011.1.3"
MRN = "urn:hutong:mrn:H001"


def _patient(family: str, given: str, idno: str, phone: str, city: str, mrn: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family, "given": [given], "text": family + given}],
            "identifier": [{"system": ID_CARD, "value": idno}, {"system": MRN, "value": mrn}],
            "telecom": [{"system": "phone", "value": phone}, {"system": "email", "value": f"{mrn}@example.cn"}],
            "address": [{"line": ["建国路88号"], "city": city, "postalCode": "100022"}],
            "gender": "female", "birthDate": "1990-03-07"}


def _ids(server: Server, type: str = "Patient", **params: str) -> list[str]:
    items = list(params.items()) + ([("_tag:not", "golden")] if type == "Patient" else [])
    r = server.client.get(f"/{type}", params=items)
    assert r.status_code == 200, r.text
    return sorted(e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match")


@pytest.fixture
def people(server: Server) -> dict[str, str]:
    out = {}
    for key, args in {
        "ouyang": ("欧阳", "娜娜", "11010519491231002X", "13912345678", "北京市", "1"),
        "wang": ("王", "芳", "110101199003078515", "13800138000", "天津市", "2"),
        "wangwu": ("王五", "明", "110101198001010016", "13700000000", "北京市", "3"),
        "en": ("Müller", "Anna", "110101197001010011", "13600000000", "上海市", "4"),
    }.items():
        r = server.client.post("/Patient", json=_patient(*args))
        assert r.status_code == 201, r.text
        out[key] = r.json()["id"]
    return out


def test_search_on_digests(server: Server, people: dict[str, str]) -> None:
    p = people
    assert _ids(server, identifier=f"{ID_CARD}|11010519491231002X") == [p["ouyang"]]
    assert _ids(server, identifier="11010519491231002X") == [p["ouyang"]]          # any system
    assert _ids(server, identifier="|11010519491231002X") == []                    # no system: none stored so
    assert _ids(server, identifier=f"{MRN}|") == sorted(p.values())                # system alone: kept in clear
    assert _ids(server, identifier=f"{MRN}|2") == [p["wang"]]
    assert _ids(server, **{"identifier:not": f"{MRN}|2"}) == sorted(v for k, v in p.items() if k != "wang")
    assert _ids(server, family="王") == sorted([p["wang"], p["wangwu"]])            # prefix of 1 character
    assert _ids(server, family="王五") == [p["wangwu"]]
    assert _ids(server, name="欧阳娜") == [p["ouyang"]]                             # prefix of the text
    assert _ids(server, given="娜娜") == [p["ouyang"]]
    assert _ids(server, name="mull") == [p["en"]]                                  # accent/case-insensitive
    assert _ids(server, **{"name:exact": "Müller"}) == [p["en"]]
    assert _ids(server, **{"name:exact": "müller"}) == []
    assert _ids(server, phone="13912345678") == [p["ouyang"]]
    assert _ids(server, telecom="phone|13800138000") == [p["wang"]]
    assert _ids(server, email="3@example.cn") == [p["wangwu"]]
    assert _ids(server, **{"address-city": "北京"}) == sorted([p["ouyang"], p["wangwu"]])
    assert _ids(server, address="建国路") == sorted(p.values())
    assert _ids(server, **{"address-postalcode": "100022"}) == sorted(p.values())
    assert _ids(server, gender="female", family="王", birthdate="1990-03-07") == sorted([p["wang"], p["wangwu"]])


def test_chained_and_conditional_use_the_same_digests(server: Server, people: dict[str, str]) -> None:
    r = server.client.post("/Observation", json={
        "resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "http://loinc.org",
                                                                               "code": "2345-7"}]},
        "subject": {"reference": f"Patient/{people['wang']}"}, "valueQuantity": {"value": 5.6}})
    assert r.status_code == 201, r.text
    assert len(_ids(server, "Observation", **{"subject:Patient.identifier": "110101199003078515"})) == 1
    assert len(_ids(server, "Observation", **{"subject:Patient.family": "王"})) == 1
    # a transaction's conditional create by identifier (what HL7 and CDA mapping send) finds the Patient
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "fullUrl": "urn:uuid:1", "resource": _patient("王", "芳", "110101199003078515", "13800138000", "天津市", "2"),
        "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={MRN}|2"}}]}
    r = server.client.post("", json=bundle)
    assert r.status_code == 200, r.text
    entry = r.json()["entry"][0]
    assert entry["response"]["status"] == "200 OK" and entry["response"]["location"].startswith(
        f"Patient/{people['wang']}")
    r = server.client.post("/Patient", json=_patient("王", "芳", "1", "1", "天津市", "2"),
                           headers={"if-none-exist": f"identifier={MRN}|2"})
    assert r.status_code == 200 and r.json()["id"] == people["wang"]


def test_contains_and_sort_are_refused_with_a_clear_code(server: Server, people: dict[str, str]) -> None:
    r = server.client.get("/Patient", params={"name:contains": "娜"})
    assert r.status_code == 400
    assert "HT-0150" in r.text and "name:contains is not supported" in r.text
    r = server.client.get("/Patient", params={"_sort": "family"})
    assert r.status_code == 400 and "HT-0151" in r.text
    # other parameters keep :contains and _sort
    assert server.client.get("/Organization", params={"name:contains": "医院"}).status_code == 200
    assert server.client.get("/Patient", params={"_sort": "birthdate"}).status_code == 200


def test_index_tables_hold_no_identifier(server: Server, people: dict[str, str]) -> None:
    repo = server.repo
    strings = {r[0] for r in repo.query("SELECT norm FROM idx_string", ())} | {
        r[0] for r in repo.query("SELECT exact FROM idx_string", ())}
    codes = {r[0] for r in repo.query("SELECT code FROM idx_token", ())}
    for clear in ("王", "欧阳", "娜娜", "müller", "Müller", "北京市", "建国路88号", "100022"):
        assert clear not in strings
    for clear in ("11010519491231002X", "13912345678", "2", "3@example.cn"):
        assert clear not in codes
    assert "female" in codes  # not a direct identifier: in clear, as before


def test_digest_rows() -> None:
    b = BlindIndex(b"k" * 32)
    rows = b.string_rows("欧阳娜娜", "欧阳娜娜")
    assert len(rows) == 4 and rows[-1] == (b.prefix("欧阳娜娜"), b.exact("欧阳娜娜"))
    assert all(x == "" for _n, x in rows[:-1])
    long = "x" * (PREFIX_MAX + 5)
    rows = b.string_rows(long, long)
    assert len(rows) == PREFIX_MAX + 1 and rows[-1][0] == b.prefix(long)
    # query side and index side agree; distinct domains for distinct searches
    assert b.token(TokenMatch(None, "1")).code == b.token_any_system("1")
    assert b.token(TokenMatch("s", "1")).code == b.token_with_system("s", "1") != b.token_any_system("1")
    assert b.token(TokenMatch("", "1")).code == b.token_with_system("", "1")
    assert b.string("name", StringMatch("王")) == ("norm", b.prefix("王"))
    assert b.string("name", StringMatch("王", "exact")) == ("exact", b.exact("王"))
    assert BlindIndex(b"j" * 32).prefix("王") != b.prefix("王")  # keyed: another database, other digests
    assert is_protected("Patient", "name") and not is_protected("Organization", "name")
    assert not is_protected("Patient", "address-country") and not is_protected("Patient", "birthdate")
