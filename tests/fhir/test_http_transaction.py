"""Transactions as clients write them (issue 15, item 7: "transactions refusing
absolute request.url, operations inside a transaction, and ifNoneExist written
with a type prefix"), through the running server on SQLite and PostgreSQL.

bundle.html#transaction, http.html#ccreate.  Samples written for this test:
residents of an invented clinic, identified by its MRN system."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fhirapi import NOT_GOLDEN, issue_code
from harness import Server, serve_app

MRN = "urn:hutong:mrn:test-clinic-15"


def _patient(mrn: str, family: str = "郑") -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": MRN, "value": mrn}],
            "name": [{"family": family, "given": ["十"]}], "gender": "female", "birthDate": "1990-10-10"}


def _tx(entries: list[dict[str, Any]], type: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": type, "entry": entries}


def _count(c: httpx.Client, mrn: str) -> int:
    """Registrations with this MRN (the MPI's golden records left out)."""
    return int(c.get("/Patient", params=[("identifier", f"{MRN}|{mrn}"), ("_summary", "count"),
                                         NOT_GOLDEN]).json()["total"])


def test_absolute_request_urls_of_this_server(server: Server) -> None:
    c = server.client
    base = server.url
    b = urlsplit(base)
    # The same server written with another scheme (a TLS-terminating proxy) or an
    # upper-case scheme and host: relative to this base.
    for i, url in enumerate((f"{base}/Patient", f"https://{b.netloc}{b.path}/Patient",
                             f"HTTP://{b.netloc.upper()}{b.path}/Patient")):
        r = c.post("", json=_tx([{"fullUrl": f"urn:uuid:1b5e0c2a-0000-4000-8000-00000000000{i}",
                                  "request": {"method": "POST", "url": url}, "resource": _patient(f"ABS-{i}")}]))
        assert r.status_code == 200, (url, r.text[:300])
        assert r.json()["entry"][0]["response"]["status"].startswith("201")
        assert _count(c, f"ABS-{i}") == 1
    # PUT and GET with absolute URLs.
    r = c.post("", json=_tx([{"request": {"method": "PUT", "url": f"{base}/Patient/abs-put-1"},
                              "resource": _patient("ABS-PUT") | {"id": "abs-put-1"}}]))
    assert r.status_code == 200, r.text[:300]
    r = c.post("", json=_tx([{"request": {"method": "GET", "url": f"{base}/Patient/abs-put-1"}}], "batch"))
    assert r.json()["entry"][0]["resource"]["id"] == "abs-put-1"
    # Another server's URL is refused, naming the entry, and nothing is stored.
    r = c.post("", json=_tx([
        {"request": {"method": "POST", "url": "Patient"}, "resource": _patient("OTHER-0")},
        {"request": {"method": "POST", "url": "http://other-hospital.example/fhir/Patient"},
         "resource": _patient("OTHER-1")}]))
    assert r.status_code == 400 and issue_code(r) == "HT-0226", r.text[:300]
    assert r.json()["issue"][0]["expression"] == ["Bundle.entry[1].request.url"]
    assert _count(c, "OTHER-0") == 0 and _count(c, "OTHER-1") == 0


@pytest.fixture
def proxied(db_url: str) -> Iterator[Server]:
    """The server behind a proxy: its configured base is not the address this client reaches it by."""
    yield from serve_app(db_url, base_url="https://hutong.region.example/fhir")


def test_absolute_urls_by_configured_base_or_by_the_address_used(proxied: Server) -> None:
    c = proxied.client
    for i, url in enumerate(("https://hutong.region.example/fhir/Patient", f"{proxied.url}/Patient")):
        r = c.post("", json=_tx([{"request": {"method": "POST", "url": url}, "resource": _patient(f"PX-{i}")}]))
        assert r.status_code == 200, (url, r.text[:300])
        assert _count(c, f"PX-{i}") == 1


def test_if_none_exist_with_a_type_prefix(server: Server) -> None:
    c = server.client
    forms = ("identifier={s}|{v}", "Patient?identifier={s}|{v}", "{base}/Patient?identifier={s}|{v}")
    for n, form in enumerate(forms):
        mrn = f"INE-{n}"
        crit = form.format(s=MRN, v=mrn, base=server.url)
        ids = set()
        for _ in range(2):
            r = c.post("", json=_tx([{"request": {"method": "POST", "url": "Patient", "ifNoneExist": crit},
                                      "resource": _patient(mrn)}]))
            assert r.status_code == 200, (crit, r.text[:300])
            ids.add(r.json()["entry"][0]["fullUrl"])
        assert len(ids) == 1 and _count(c, mrn) == 1, crit
        # The same in a batch and in the If-None-Exist header of a plain create.
        r = c.post("", json=_tx([{"request": {"method": "POST", "url": "Patient", "ifNoneExist": crit},
                                  "resource": _patient(mrn)}], "batch"))
        assert r.json()["entry"][0]["response"]["status"].startswith("200"), r.text[:300]
        r = c.post("/Patient", json=_patient(mrn), headers={"if-none-exist": crit})
        assert r.status_code == 200, (crit, r.text[:300])
        assert _count(c, mrn) == 1, crit
    # Criteria naming another type are refused, naming the entry.
    r = c.post("", json=_tx([{"request": {"method": "POST", "url": "Patient",
                                          "ifNoneExist": f"Observation?identifier={MRN}|INE-9"},
                              "resource": _patient("INE-9")}]))
    assert r.status_code == 400 and issue_code(r) == "HT-0227", r.text[:300]
    assert r.json()["issue"][0]["expression"] == ["Bundle.entry[0].request.ifNoneExist"]
    assert _count(c, "INE-9") == 0
    r = c.post("/Patient", json=_patient("INE-9"), headers={"if-none-exist": f"Observation?identifier={MRN}|x"})
    assert r.status_code == 400 and issue_code(r) == "HT-0227"


def test_operations_inside_a_transaction_are_refused_by_name(server: Server) -> None:
    c = server.client
    match = {"request": {"method": "POST", "url": "Patient/$match"},
             "resource": {"resourceType": "Parameters", "parameter": [{"name": "resource",
                                                                       "resource": _patient("OP-1")}]}}
    r = c.post("", json=_tx([{"request": {"method": "POST", "url": "Patient"}, "resource": _patient("OP-0")},
                             match]))
    assert r.status_code == 400 and issue_code(r) == "HT-0225", r.text[:300]
    out = r.json()["issue"][0]
    assert out["expression"] == ["Bundle.entry[1].request.url"] and "$match" in out["details"]["text"]
    assert _count(c, "OP-0") == 0  # all or nothing
    # In a batch the operation's entry fails on its own; the others are processed,
    # and GET Patient/[id]/$everything (a read) is served.
    pid = c.post("/Patient", json=_patient("OP-2")).json()["id"]
    r = c.post("", json=_tx([{"request": {"method": "POST", "url": "Patient"}, "resource": _patient("OP-3")},
                             match, {"request": {"method": "GET", "url": f"Patient/{pid}/$everything"}},
                             {"request": {"method": "POST", "url": f"Patient/{pid}/$break-glass"},
                              "resource": {"resourceType": "Parameters"}}], "batch"))
    assert r.status_code == 200, r.text[:300]
    statuses = [e["response"]["status"][:3] for e in r.json()["entry"]]
    assert statuses == ["201", "400", "200", "400"], statuses
    outcome = r.json()["entry"][1]["response"]["outcome"]
    assert outcome["issue"][0]["details"]["coding"][0]["code"] == "HT-0225"
    assert _count(c, "OP-3") == 1
