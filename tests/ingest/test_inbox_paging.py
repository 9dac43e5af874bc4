"""The inbox lists (/ingest/dead-letters, /ingest/flagged) page with _count and
after, and refuse what is not a page: a negative _count was a negative SQL
LIMIT, which SQLite reads as no limit at all (every message listed at once)."""

from __future__ import annotations

import pytest
from fhirapi import issue_code
from harness import Server


@pytest.mark.parametrize("path", ["/ingest/dead-letters", "/ingest/flagged"])
@pytest.mark.parametrize("params", [{"_count": "-1"}, {"_count": "0"}, {"after": "-3"}, {"_count": "x"}])
def test_what_is_not_a_page_is_refused(server: Server, path: str, params: dict[str, str]) -> None:
    r = server.client.get(server.root + path, params=params)
    assert r.status_code == 400, r.text
    assert issue_code(r) == "HT-0041"


@pytest.mark.parametrize("path", ["/ingest/dead-letters", "/ingest/flagged"])
def test_a_page_is_answered(server: Server, path: str) -> None:
    for params in ({}, {"_count": "5000"}, {"_count": "1", "after": "0"}):
        r = server.client.get(server.root + path, params=params)
        assert r.status_code == 200, r.text
        assert r.json() == {"items": []}


@pytest.mark.parametrize("path", ["/ingest/timeliness", "/ingest/quality"])
def test_day_ranges_are_checked_alike(server: Server, path: str) -> None:
    assert server.client.get(server.root + path, params={"from": "2026-12-07", "to": "2026-12-01"}).status_code == 400
    assert server.client.get(server.root + path, params={"from": "2025-01-01", "to": "2026-12-01"}).status_code == 400
    assert server.client.get(server.root + path, params={"from": "yesterday"}).status_code == 400
    assert server.client.get(server.root + path, params={"from": "2026-12-01", "to": "2026-12-07"}).status_code == 200
