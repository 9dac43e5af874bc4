"""The official FHIR R4 examples through the server (issue 15, "Done when").

The package ``hl7.fhir.r4.examples`` 4.0.1 (5,306 resources, CC0-1.0) is
downloaded once from npm into a cache (~/.cache/hutong, or $XDG_CACHE_HOME/hutong;
``make test`` runs with network) and checked against its published SHA-1.
Every resource is PUT at its own id (POST when it has none) in batch Bundles
over HTTP to a served app on SQLite; each refusal must be one of
:data:`EXPECTED_REFUSALS` (file -> HT code, why), and each listed refusal must
still happen, so the list stays exact.  The same package regenerates the
shipped extracts (hutong.terminology.generate, hutong.fhir.r4_differences):
they must be what is committed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from harness import serve_app

from hutong.fhir import r4_differences
from hutong.fhir.registry import RESOURCE_TYPES
from hutong.terminology import cn, generate

URL = "https://registry.npmjs.org/hl7.fhir.r4.examples/-/hl7.fhir.r4.examples-4.0.1.tgz"
SHA1 = "537ea7db3f3c7b3575fe2eaa7808bad21261cca3"  # npm's dist.shasum of the 4.0.1 tarball
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hutong"
BATCH_BYTES = 6_000_000
LIMIT = 16 * 1024 * 1024  # Settings.max_body_bytes (HUTONG_MAX_BODY_BYTES) default

_NBSP = "code ending in a no-break space ('CHEST\\xa0'): not a valid code (datatypes.html#code: no leading/trailing " \
        "whitespace)"
_SP_BASE = "SearchParameter.base is 1..* in R4 and missing (an error of the published example)"
# file -> (HT code, why the refusal is right).  Each is an error in the example
# itself, a deliberate limit, or an R4/R4B difference the CapabilityStatement lists.
EXPECTED_REFUSALS: dict[str, tuple[str, str]] = {
    "Bundle-resources.json": ("HT-0003", "29.7 MB: above the 16 MiB body limit (HUTONG_MAX_BODY_BYTES), "
                                         "which an operator may raise"),
    "Bundle-v2-valuesets.json": ("HT-0008", _NBSP),
    "CodeSystem-v2-0550.json": ("HT-0008", _NBSP),
    "Evidence-example.json": ("HT-0008", "the R4B Evidence model requires variableDefinition, which R4 Evidence "
                                         "does not have (listed in the CapabilityStatement: hutong.fhir.r4_differences)"),
    "ig-r4.json": ("HT-0008", "ImplementationGuide.name is 1..1 in R4 and missing"),
    "ImplementationGuide-fhir.json": ("HT-0008", "ImplementationGuide.name is 1..1 in R4 and missing"),
    "Questionnaire-qs1.json": ("HT-0008", "Questionnaire.item.linkId is 1..1 in R4 and missing in a nested item"),
    "SearchParameter-questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json": (
        "HT-0005", "an id of 66 characters: R4 ids are at most 64 (datatypes.html#id)"),
    **{f"SearchParameter-{vs}-extensions-{t}-{p}.json": ("HT-0008", _SP_BASE)
       for vs, t in (("codesystem", "CodeSystem"), ("valueset", "ValueSet"))
       for p in ("author", "effective", "end", "keyword", "workflow")},
}


@pytest.fixture(scope="session")
def examples_tgz() -> Path:
    path = CACHE / "hl7.fhir.r4.examples-4.0.1.tgz"
    if not path.exists() or hashlib.sha1(path.read_bytes()).hexdigest() != SHA1:  # noqa: S324 - npm's checksum
        CACHE.mkdir(parents=True, exist_ok=True)
        data = httpx.get(URL, timeout=300, follow_redirects=True).raise_for_status().content
        assert hashlib.sha1(data).hexdigest() == SHA1, "the downloaded package is not npm's 4.0.1"  # noqa: S324
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


@pytest.fixture(scope="session")
def examples(examples_tgz: Path) -> list[tuple[str, dict[str, Any]]]:
    out = []
    with tarfile.open(examples_tgz) as tf:
        for m in tf.getmembers():
            name = m.name.rsplit("/", 1)[-1]
            if m.isfile() and name.endswith(".json") and not name.startswith(".") and name != "package.json":
                f = tf.extractfile(m)
                assert f is not None
                r = json.load(f)
                if isinstance(r, dict) and "resourceType" in r:
                    out.append((name, r))
    return sorted(out)


def _entry(r: dict[str, Any]) -> dict[str, Any]:
    if r.get("id"):
        return {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
    return {"resource": r, "request": {"method": "POST", "url": r["resourceType"]}}


def _outcome_code(response: dict[str, Any]) -> str | None:
    oo = response.get("outcome") or {}
    for issue in oo.get("issue", []):
        for c in issue.get("details", {}).get("coding", []):
            return str(c.get("code"))
    return None


def _send(c: httpx.Client, batch: list[tuple[str, dict[str, Any]]]) -> dict[str, tuple[int, str | None]]:
    """One batch Bundle (bundle.html#batch: each entry on its own), its verdicts by file."""
    body = orjson.dumps({"resourceType": "Bundle", "type": "batch", "entry": [_entry(r) for _, r in batch]})
    r = c.post("", content=body, timeout=600)
    assert r.status_code == 200, r.text[:500]
    return {name: (int(e["response"]["status"].split()[0]), _outcome_code(e["response"]))
            for (name, _res), e in zip(batch, r.json()["entry"], strict=True)}


@pytest.mark.slow
def test_official_r4_examples(examples: list[tuple[str, dict[str, Any]]], sqlite_url: str) -> None:
    assert len(examples) == 5306
    withdrawn = set(r4_differences.differences()["withdrawn"])
    verdicts: dict[str, tuple[int, str | None]] = {}
    started = time.monotonic()
    for server in serve_app(sqlite_url):
        c = server.client
        batches: list[list[tuple[str, dict[str, Any]]]] = []
        batch: list[tuple[str, dict[str, Any]]] = []
        size = 0

        for name, res in examples:
            n = len(orjson.dumps(res))
            if n > LIMIT:  # alone: the body limit answers before anything is read
                r = c.put(f"/{res['resourceType']}/{res['id']}", content=orjson.dumps(res))
                body = r.json()
                verdicts[name] = (r.status_code, body["issue"][0]["details"]["coding"][0]["code"])
                continue
            if batch and size + n > BATCH_BYTES:
                batches.append(batch)
                batch, size = [], 0
            batch.append((name, res))
            size += n
        batches.append(batch)
        # Two batches in flight: one validates while the other writes (SQLite has one writer).
        with ThreadPoolExecutor(2) as pool:
            for got in pool.map(_send, [c] * len(batches), batches):
                verdicts.update(got)
        # What was stored reads back as sent (an R4-only shape from item 5, and a plain one).
        cs = c.get("/CodeSystem/v2-0207").json()
        assert "_valueString" in cs["concept"][2]["extension"][0]
        pat = c.get("/Patient/example").json()
        assert pat["name"] == dict(examples)["Patient-example.json"]["name"]
    elapsed = time.monotonic() - started

    accepted = {n for n, (status, _c) in verdicts.items() if status in (200, 201)}
    refused = {n: v for n, v in verdicts.items() if n not in accepted}
    unsupported = {n for n, r in examples if r["resourceType"] not in RESOURCE_TYPES}
    # R4 types withdrawn in R4B: not served (404 HT-0004), listed in the CapabilityStatement.
    assert {n for n, r in examples if r["resourceType"] in withdrawn} == unsupported and len(unsupported) == 13
    assert all(refused[n] == (404, "HT-0004") for n in unsupported), {n: refused.get(n) for n in unsupported}
    got = {n: code for n, (_s, code) in refused.items() if n not in unsupported}
    assert got == {n: code for n, (code, _why) in EXPECTED_REFUSALS.items()}, (
        f"unexpected: {sorted(set(got) - set(EXPECTED_REFUSALS))[:20]}; "
        f"now accepted: {sorted(set(EXPECTED_REFUSALS) - set(got))}")
    supported = len(examples) - len(unsupported)
    rate = len(accepted) / supported
    print(f"\nofficial R4 examples: {len(accepted)}/{supported} of the supported types accepted ({rate:.2%}); "
          f"{len(accepted)}/{len(examples)} of all ({len(accepted) / len(examples):.2%}); {elapsed:.0f} s")
    assert rate > 0.995


def test_shipped_extracts_are_generated_from_the_package(examples_tgz: Path) -> None:
    """r4-core.json, cn.json and r4_differences.json are what their generators write."""
    data = generate.DATA
    assert json.loads((data / "r4-core.json").read_text(encoding="utf-8")) == generate.build_core(examples_tgz)
    assert json.loads((data / "cn.json").read_text(encoding="utf-8")) == cn.build()
    assert r4_differences.differences() == r4_differences.build(examples_tgz)
