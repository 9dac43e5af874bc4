"""The hot FHIR routes first (hutong.web.hot.hot_first) changes how fast a
request is routed, never where it goes: every route's own requests, and the
paths the literal routes shadow, resolve to the same route in both orders."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import BaseRoute, Match, Route

import hutong.web.app as web_app
from hutong.config import Settings

SAMPLES = {"type": ["Patient", "Observation", "metadata", "_history", ".well-known", "CodeSystem"],
           "id": ["p1", "_history", "$everything", "$match", "smart-configuration", "$lookup"],
           "vid": ["1"], "op": ["$match", "$x"], "cid": ["p1"], "ctype": ["Patient"]}


def _resolve(routes: list[BaseRoute], method: str, path: str) -> str:
    scope: dict[str, Any] = {"type": "http", "method": method, "path": path, "root_path": "", "headers": [],
                             "query_string": b""}
    partial = None
    for r in routes:
        match, _child = r.matches(scope)
        if match is Match.FULL:
            return f"{sorted(getattr(r, 'methods', None) or [])} {getattr(r, 'path', r)}"
        if match is Match.PARTIAL and partial is None:
            # a 405: its Allow header lists every route of the path (hutong.web.allow), whichever matched first
            partial = "405"
    return partial or "404"


def _paths(template: str) -> list[str]:
    out = [template]
    for name in re.findall(r"{(\w+)(?::\w+)?}", template):
        out = [p.replace(m, v, 1) for p in out for m in re.findall(r"{" + name + r"(?::\w+)?}", p)[:1]
               for v in SAMPLES.get(name, ["x1"])]
    return out


@pytest.fixture
def apps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    fast = web_app.create_app(Settings(database_url=f"sqlite:///{tmp_path}/a.db"))
    monkeypatch.setattr(web_app, "hot_first", lambda routes: None)
    plain = web_app.create_app(Settings(database_url=f"sqlite:///{tmp_path}/b.db"))
    return fast, plain


def test_hot_routes_first_routes_every_request_as_before(apps: tuple[Any, Any]) -> None:
    fast, plain = apps
    index = {getattr(r, "path", ""): n for n, r in enumerate(fast.routes)
             if "GET" in (getattr(r, "methods", None) or ())}
    assert index["/fhir/{type}/{id}"] < 5 and index["/fhir/{type}"] < 5  # tried first, after the probes
    paths = {p for r in plain.routes if isinstance(r, Route) for p in _paths(r.path)}
    checked = 0
    for path in sorted(paths):
        for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
            assert _resolve(fast.routes, method, path) == _resolve(plain.routes, method, path), (method, path)
            checked += 1
    assert checked > 500
