"""Issue 15, item 3: FHIR decimals come back exactly as sent (datatypes.html#decimal,
json.html#primitive) and are searched with their implicit precision range
(search.html#number); through HTTP on both databases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import Server

from hutong.ingest.bulk import import_ndjson
from hutong.security.guard import as_operator

# Written by hand for this test (not any sender's data): numbers a float rewrites.
DECIMALS = ["0.40", "100.000", "1.0e-7", "3.14159265358979323846", "-2.50E+3", "12345678901234567890123"]


def _obs(value: str, pid: str = "", code: str = "t15-dec") -> str:
    head = f'"id":"{pid}",' if pid else ""
    return ('{"resourceType":"Observation",' + head + '"status":"final",'
            '"code":{"coding":[{"system":"urn:hutong:test","code":"' + code + '"}]},'
            '"valueQuantity":{"value":' + value + ',"unit":"mmol/L"},'
            '"component":[{"code":{"text":"c"},"valueQuantity":{"value":' + value + '}}],'
            '"extension":[{"url":"urn:hutong:test:ext","valueDecimal":' + value + '}]}')


def _post(server: Server, body: str) -> Any:
    r = server.client.post("/Observation", content=body.encode())
    assert r.status_code == 201, r.text
    return r


def test_decimals_come_back_as_written(server: Server) -> None:
    c = server.client
    for text in DECIMALS:
        r = _post(server, _obs(text))
        oid = r.json()["id"]
        want = f'"value":{text}'
        assert r.text.count(want) == 2 and f'"valueDecimal":{text}' in r.text, (text, r.text)
        for got in (c.get(f"/Observation/{oid}"), c.get(f"/Observation/{oid}/_history/1"),
                    c.get("/Observation", params={"_id": oid}),
                    c.get("/Observation", params={"_id": oid, "_elements": "valueQuantity"}),
                    c.get(f"/Observation/{oid}/_history")):
            assert got.status_code == 200 and want in got.text, (text, got.request.url, got.text)
        # update and a transaction keep them too
        r = c.put(f"/Observation/{oid}", content=_obs(text, oid).encode())
        assert r.status_code == 200 and want in c.get(f"/Observation/{oid}").text
        tx = ('{"resourceType":"Bundle","type":"transaction","entry":[{"resource":' + _obs(text)
              + ',"request":{"method":"POST","url":"Observation"}}]}')
        r = c.post("/", content=tx.encode())
        assert r.status_code == 200, r.text
        loc = r.json()["entry"][0]["response"]["location"]
        assert want in c.get("/" + loc.split("/fhir/")[-1].split("/_history")[0]).text
        batch = tx.replace('"transaction"', '"batch"')
        r = c.post("/", content=batch.encode())
        loc = r.json()["entry"][0]["response"]["location"]
        assert want in c.get("/" + loc.split("/fhir/")[-1].split("/_history")[0]).text


def test_decimal_search_uses_the_implicit_range(server: Server) -> None:
    ids = {v: _post(server, _obs(v, code="t15-range")).json()["id"]
           for v in ("99.4", "99.5", "100.000", "100.4", "100.5", "3.14159265358979323846")}

    def found(value: str) -> set[str]:
        b = server.client.get("/Observation", params={"code": "urn:hutong:test|t15-range", "value-quantity": value,
                                                       "_count": "50"}).json()
        back = {v: k for k, v in ids.items()}
        return {back[e["resource"]["id"]] for e in b.get("entry", [])}

    assert found("100") == {"99.5", "100.000", "100.4"}        # [99.5, 100.5)
    assert found("100.0") == {"100.000"}                         # [99.95, 100.05)
    assert found("1.0e2") == {"99.4", "99.5", "100.000", "100.4", "100.5"}  # [95, 105)
    assert found("ge100.4") == {"100.4", "100.5"}
    assert found("lt99.5") == {"99.4", "3.14159265358979323846"}
    assert found("3.14159265358979323846") == {"3.14159265358979323846"}  # more digits than a double
    assert found("3.14159265358979323846|urn:x|mmol") == set()


def test_bulk_import_keeps_decimals(server: Server, tmp_path: Path) -> None:
    lines = [_obs(v, f"t15-bulk-{n}") for n, v in enumerate(DECIMALS)]
    (tmp_path / "Observation.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rep = import_ndjson(as_operator(server.repo), tmp_path, workers=1)
    assert rep.errors == []
    for n, v in enumerate(DECIMALS):
        assert f'"value":{v}' in server.client.get(f"/Observation/t15-bulk-{n}").text, v


def test_json_patch_keeps_decimals(server: Server) -> None:
    c = server.client
    oid = _post(server, _obs("0.40")).json()["id"]
    patch = b'[{"op": "replace", "path": "/status", "value": "amended"},' \
            b' {"op": "replace", "path": "/component/0/valueQuantity/value", "value": 2.50}]'
    r = c.patch(f"/Observation/{oid}", content=patch, headers={"content-type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    text = c.get(f"/Observation/{oid}").text
    assert '"status":"amended"' in text and '"value":0.40' in text and '"value":2.50' in text, text
