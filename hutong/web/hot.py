"""The hot FHIR routes (read and search) tried first, routing unchanged.

Starlette tries routes in order and FastAPI's ``APIRoute.matches`` costs a
few µs each, so the authenticated read (``GET /fhir/{type}/{id}``) paid for
every route registered before it: 45 once, still 14 after the literal
operations that must win over it (``Patient/$ihe-pix``, the terminology
``$lookup`` ..., ``{type}/_history``), ~10% of the read's CPU
(bench.bench_gate_ab, yappi).

A :class:`HotRoute` is tried first and steps aside (no match) for a request
that a route registered before it would take in full (its path and method):
literal paths in a set, templated ones by their own path regex.  The router
then goes on in the registered order, so every request reaches the route it
reached before (tests/web/test_route_order.py checks every route's own paths
in both orders).  A request an earlier route matches only by path (another
method: a 405) does not make the hot route step aside, as the router prefers
a full match to an earlier partial one in either order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette._utils import get_route_path  # the router's own path-below-root_path (starlette.routing)
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

__all__ = ["HotRoute", "hot_first", "hot_get"]

F = TypeVar("F", bound=Callable[..., Any])

PROBES = ("/healthz", "/readyz")  # load balancers poll these: first too


class HotRoute(APIRoute):
    """An APIRoute that steps aside for what earlier routes take (set by :func:`hot_first`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shadow_paths: dict[str, frozenset[str]] = {}
        self.shadow_patterns: tuple[tuple[re.Pattern[str], frozenset[str]], ...] = ()

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and (self.shadow_paths or self.shadow_patterns):
            path, method = get_route_path(scope), scope["method"]
            if method in self.shadow_paths.get(path, ()):
                return Match.NONE, {}
            for pattern, methods in self.shadow_patterns:
                if method in methods and pattern.match(path):
                    return Match.NONE, {}
        return super().matches(scope)


def hot_get(router: APIRouter, path: str, **kwargs: Any) -> Callable[[F], F]:
    """``@router.get(path, ...)`` declaring a :class:`HotRoute`."""
    def declare(endpoint: F) -> F:
        router.add_api_route(path, endpoint, methods=["GET"], route_class_override=HotRoute, **kwargs)
        return endpoint
    return declare


def _prefix(path: str) -> str:
    return path.split("{", 1)[0]


def _may_take(route: Route, hot: HotRoute) -> bool:
    """Whether ``route`` could match a path ``hot`` matches: their literal beginnings agree."""
    a, b = _prefix(route.path), _prefix(hot.path)
    return a.startswith(b) or b.startswith(a)


def _shadow(hot: HotRoute, earlier: list[BaseRoute]) -> bool:
    """Give ``hot`` the routes registered before it; False if one is of a kind it cannot judge."""
    literal: dict[str, set[str]] = {}
    patterns: list[tuple[re.Pattern[str], frozenset[str]]] = []
    for r in earlier:
        if not isinstance(r, Route):
            path: Any = getattr(r, "path", None)
            if isinstance(path, str) and not (path.startswith("/fhir") or "/fhir".startswith(path)):
                continue  # a mount elsewhere (/static): never a /fhir path
            return False
        if not _may_take(r, hot):
            continue
        methods = frozenset(r.methods or ())
        if "{" in r.path:
            patterns.append((r.path_regex, methods))
        else:
            literal.setdefault(r.path, set()).update(methods)
    hot.shadow_paths = {p: frozenset(m) for p, m in literal.items()}
    hot.shadow_patterns = tuple(patterns)
    return True


def hot_first(routes: list[BaseRoute]) -> None:
    """The probes, then the HotRoutes, then every other route in its order; in place."""
    hot = [r for r in routes if isinstance(r, HotRoute)]
    for r in hot:
        if not _shadow(r, routes[:routes.index(r)]):
            return  # a route it cannot judge: leave the order alone
    probes = [r for r in routes if getattr(r, "path", "") in PROBES]
    front = [*probes, *hot]
    routes[:] = front + [r for r in routes if r not in front]
