"""The ``Allow`` header of a 405 (RFC 9110 sections 10.2.1 and 15.5.6): the
methods of the routes whose template matches the path; a path with routes of
its own (no parameters) has only theirs.  Pure functions of the route table,
used by the error mapping (hutong.web.outcomes) and hutong.web.methods."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from starlette.routing import BaseRoute, Route

from hutong.errors import HutongError

FHIR_PREFIX = "/fhir"


def under_fhir(path: str) -> bool:
    return path == FHIR_PREFIX or path.startswith(FHIR_PREFIX + "/")


def route_list(routes: Iterable[BaseRoute]) -> list[Route]:
    """The plain routes (mounts and the like have no methods)."""
    return [r for r in routes if isinstance(r, Route)]


def literal_methods(routes: Iterable[BaseRoute], path: str) -> set[str] | None:
    """The methods of the routes whose template is exactly ``path`` (no
    parameters), or None when no route names that path literally."""
    own = [r for r in route_list(routes) if r.path == path]
    if not own:
        return None
    return set().union(*(r.methods or set() for r in own))


def allowed(routes: Sequence[BaseRoute], path: str) -> list[str]:
    """What goes in ``Allow`` for ``path`` (RFC 9110 section 10.2.1)."""
    methods = literal_methods(routes, path)
    if methods is None:
        methods = set().union(*(r.methods or set() for r in route_list(routes) if r.path_regex.match(path)))
    if "GET" in methods and under_fhir(path):
        methods.add("HEAD")
    return sorted(methods)


def not_allowed(routes: Sequence[BaseRoute], path: str, method: str) -> HutongError:
    allow = ", ".join(allowed(routes, path)) or "none"
    return HutongError("HT-0220", f"{method} is not allowed on {path[:100]} (allowed: {allow})", status=405,
                       issue_code="not-supported")


def allow_header(routes: Sequence[BaseRoute], path: str) -> dict[str, str]:
    return {"Allow": ", ".join(allowed(routes, path))}
