"""HTTP methods on the FHIR API: HEAD, and 405 with the methods a path allows.

- HEAD wherever GET (RFC 9110 section 9.3.2; FHIR http.html lets clients use
  HEAD on read and search, as HAPI and Medplum answer it): the request is answered as a GET
  (same authentication, policy and audit: the audit row says GET) and sent with
  the GET's status and headers and no body.
- 405 Method Not Allowed carries an ``Allow`` header (RFC 9110 section
  15.5.6): the methods of the routes whose template matches the path.
- A path with a route of its own (``/fhir/metadata``, ``/fhir/_history``,
  ``/fhir/Patient/$match``) is that route's: another method on it is 405, not
  taken by ``/fhir/{type}`` as a resource type named "metadata" (which sent
  ``DELETE /fhir/metadata``, a public path, to the delete route without a
  caller: a 500).
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hutong.web import outcomes
from hutong.web.allow import FHIR_PREFIX, allow_header, not_allowed, route_list, under_fhir

__all__ = ["FHIR_PREFIX", "HeadAsGet", "OwnPaths", "under_fhir"]


class HeadAsGet:
    """HEAD on the FHIR API, answered as GET without the body.  Installed
    outside the gate, so the gate authenticates, authorises and audits the
    GET it becomes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD" or not under_fhir(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                # RFC 9110 section 9.3.2: the same header fields (Content-Length
                # included), no content.
                message = {**message, "body": b""}
            await send(message)

        # A copy: the HTTP server keeps its own scope saying HEAD.
        await self.app({**scope, "method": "GET"}, receive, without_body)


class OwnPaths:
    """Inside the gate: a method the routes of a literal FHIR path do not
    declare is answered 405 with Allow, before ``/fhir/{type}`` can take the
    path's last segment for a resource type."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes
        self._literal: dict[str, set[str]] | None = None

    def literal(self) -> dict[str, set[str]]:
        """Literal FHIR path -> its routes' methods, made at the first request
        (the routes are all added by then).  A scan of every route per request
        cost ~0.1 ms of the authenticated read (bench.bench_gate_ab)."""
        if self._literal is None:
            table: dict[str, set[str]] = {}
            for r in route_list(self.routes):
                if under_fhir(r.path) and "{" not in r.path:
                    table.setdefault(r.path, set()).update(r.methods or ())
            self._literal = table
        return self._literal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and under_fhir(scope["path"]):
            path: str = scope["path"]
            methods = self.literal().get(path)
            if methods is not None and scope["method"] not in methods:
                err = not_allowed(self.routes, path, scope["method"])
                outcomes.remember_error(Request(scope), err)
                resp = outcomes.error_response(err)
                resp.headers.update(allow_header(self.routes, path))
                await resp(scope, receive, send)
                return
        await self.app(scope, receive, send)
