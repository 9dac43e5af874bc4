"""Bulk import of a real Synthea R4 export and $everything over each patient's compartment.

Fixture: ../shared/data/synthea-10 (Synthea, Apache-2.0, SMART on FHIR sample data).
The expected compartment is computed from the files independently of the
server: a resource belongs to patient X when it references Patient/X.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import orjson
from fhirapi import NOT_GOLDEN
from harness import SYNTHEA, Server

from hutong.ingest.bulk import import_ndjson
from hutong.security.guard import as_operator


def _refs(node: object, out: set[str]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "reference" and isinstance(v, str):
                out.add(v)
            else:
                _refs(v, out)
    elif isinstance(node, list):
        for v in node:
            _refs(v, out)


def expected() -> tuple[Counter[str], dict[str, set[tuple[str, str]]]]:
    counts: Counter[str] = Counter()
    comp: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for f in sorted(Path(SYNTHEA).glob("*.ndjson")):
        if f.name.startswith("log"):
            continue
        with f.open("rb") as fh:
            lines = fh.readlines()
        for line in lines:
            r = orjson.loads(line)
            counts[r["resourceType"]] += 1
            if r["resourceType"] == "Patient":
                comp[r["id"]].add(("Patient", r["id"]))
            refs: set[str] = set()
            _refs(r, refs)
            for ref in refs:
                if ref.startswith("Patient/"):
                    comp[ref.split("/", 1)[1]].add((r["resourceType"], r["id"]))
    return counts, comp


def test_synthea_loads_whole_and_everything_returns_each_compartment(server: Server) -> None:
    counts, comp = expected()
    rep = import_ndjson(as_operator(server.repo), SYNTHEA, workers=1)
    assert rep.errors == []
    assert rep.loaded == sum(counts.values()) == 7160
    for t, n in counts.items():
        params = [("_summary", "count")] + ([NOT_GOLDEN] if t == "Patient" else [])
        assert server.client.get(f"/{t}", params=params).json()["total"] == n, t
    assert len(comp) == counts["Patient"] == 13
    for pid, members in comp.items():
        got: list[tuple[str, str]] = []
        included: set[tuple[str, str]] = set()
        url: str | None = f"/Patient/{pid}/$everything?_count=250"
        pages = 0
        while url:
            r = server.client.get(url)
            assert r.status_code == 200, r.text
            b = r.json()
            pages += 1
            for e in b.get("entry", []):
                key = (e["resource"]["resourceType"], e["resource"]["id"])
                (got.append(key) if e["search"]["mode"] == "match" else included.add(key))
            url = next((lk["url"] for lk in b["link"] if lk["relation"] == "next"), None)
        assert len(got) == len(set(got)), "no resource repeats across pages"
        assert set(got) == members, pid
        assert pages == (len(members) + 249) // 250 + (1 if len(members) % 250 == 0 else 0) or pages >= 1
        assert all(t in ("Organization", "Practitioner", "Location", "PractitionerRole") for t, _ in included)
    # _type and _since narrow the result
    pid = max(comp, key=lambda p: len(comp[p]))
    b = server.client.get(f"/Patient/{pid}/$everything", params={"_type": "Condition", "_count": 1000}).json()
    assert {e["resource"]["resourceType"] for e in b["entry"] if e["search"]["mode"] == "match"} == {"Condition"}
    assert len([e for e in b["entry"] if e["search"]["mode"] == "match"]) == sum(
        1 for t, _ in comp[pid] if t == "Condition")
    b = server.client.get(f"/Patient/{pid}/$everything", params={"_since": "2100-01-01"}).json()
    assert "entry" not in b  # json.html: no empty arrays (issue 15, item 6)


def test_reimport_is_idempotent_versions(server: Server) -> None:
    f = Path(SYNTHEA) / "Patient.000.ndjson"
    import_ndjson(as_operator(server.repo), f, workers=1)
    import_ndjson(as_operator(server.repo), f, workers=1)
    with f.open("rb") as fh:
        first = orjson.loads(fh.readline())
    r = server.client.get(f"/Patient/{first['id']}")
    assert r.json()["meta"]["versionId"] == "2"
    assert server.client.get("/Patient", params=[("_summary", "count"), NOT_GOLDEN]).json()["total"] == 13
