"""Routes served without FastAPI's parameter solver (hutong.web.direct) receive
exactly the arguments FastAPI's solver gives them, and only plain-string
routes are served so."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query
from fastapi.routing import APIRoute
from fhirapi import patient
from harness import Server, serving
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hutong.web.direct import direct, qualifies

Fmt = Annotated[str | None, Query(alias="_format")]
Count = Annotated[str | None, Query(alias="_count")]
IfNoneMatch = Annotated[str | None, Header(alias="If-None-Match")]


def dep() -> str:
    return "d"


def _app() -> FastAPI:
    app = FastAPI()
    r = APIRouter()

    @r.get("/fhir/{type}/{id}")
    async def read(type: str, id: str, request: Request, _format: Fmt = None, _count: Count = None,
                   if_none_match: IfNoneMatch = None, x_trace: Annotated[str | None, Header()] = None) -> Response:
        return JSONResponse({"type": type, "id": id, "format": _format, "count": _count, "inm": if_none_match,
                             "trace": x_trace, "path": request.url.path})

    @r.get("/required")
    async def required(q: Annotated[str, Query()]) -> Response:
        return JSONResponse({"q": q})

    @r.get("/number/{n}")
    async def number(n: Annotated[int, Path()]) -> Response:
        return JSONResponse({"n": n})

    @r.get("/dep")
    async def with_dep(d: Annotated[str, Depends(dep)]) -> Response:
        return JSONResponse({"d": d})

    @r.get("/plain")
    async def plain() -> dict[str, Any]:
        return {"ok": True}

    @r.get("/sync")
    def sync() -> Response:
        return JSONResponse({"ok": True})

    app.router.routes.extend(r.routes)
    return app


REQUESTS: list[tuple[str, dict[str, str]]] = [
    ("/fhir/Patient/p1", {}),
    ("/fhir/Patient/p1?_format=json&_count=3", {"If-None-Match": 'W/"2"', "X-Trace": "t"}),
    ("/fhir/Patient/p1?_format=xml&_format=json&_count=", {"if-none-match": "a"}),  # the last value; empty kept
    ("/fhir/Observation/a.b-c?other=1", {"x-trace": "1"}),
    ("/fhir/Patient/%E7%8E%8B", {}),  # percent-encoded path parameter
]


def _answers(app: FastAPI) -> list[tuple[int, Any]]:
    out: list[tuple[int, Any]] = []
    with serving(app) as root, httpx.Client(base_url=root) as c:
        for url, headers in REQUESTS:
            resp = c.get(url, headers=headers)
            out.append((resp.status_code, resp.json()))
    return out


def test_direct_serving_gives_the_endpoint_what_fastapis_solver_gives() -> None:
    reference = _answers(_app())
    app = _app()
    assert direct(app.router.routes) == 1  # only the plain-string route
    assert _answers(app) == reference
    assert reference[2][1]["format"] == "json" and reference[2][1]["count"] == ""


def test_only_plain_string_coroutine_routes_qualify() -> None:
    app = _app()
    verdict = {r.path: qualifies(r) for r in app.routes if isinstance(r, APIRoute)}
    assert verdict == {"/fhir/{type}/{id}": True, "/required": False, "/number/{n}": False, "/dep": False,
                       "/plain": False, "/sync": False}
    direct(app.router.routes)
    with serving(app) as root, httpx.Client(base_url=root) as c:  # the others keep FastAPI's validation and serialisation
        assert c.get("/required").status_code == 422
        assert c.get("/number/x").status_code == 422
        assert c.get("/number/7").json() == {"n": 7}
        assert c.get("/dep").json() == {"d": "d"}
        assert c.get("/plain").json() == {"ok": True}


def test_the_fhir_read_and_search_are_served_directly_and_still_documented(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The running server (in this process) answers a read and a search with
    FastAPI's parameter solver made to fail: they never reach it."""
    import fastapi.routing

    created = server.client.post("/Patient", json=patient())
    assert created.status_code == 201, created.text
    pid = created.json()["id"]

    def solver_called(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("FastAPI's parameter solver ran for a directly served route")

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", solver_called)
    read = server.client.get(f"/Patient/{pid}", params={"_format": "json"}, headers={"If-None-Match": 'W/"0"'})
    assert read.status_code == 200 and read.json()["id"] == pid
    found = server.client.get("/Patient", params={"_id": pid, "_count": "5"})
    assert found.status_code == 200 and [e["resource"]["id"] for e in found.json()["entry"]] == [pid]
    assert server.client.get(f"/Patient/{pid}", headers={"If-None-Match": read.headers["etag"]}).status_code == 304
    routes = {(r.path, m): r for r in server.app.routes if isinstance(r, APIRoute) for m in (r.methods or ())}
    assert all(qualifies(routes[k]) for k in (("/fhir/{type}/{id}", "GET"), ("/fhir/{type}", "GET")))
