"""Routes served without FastAPI's per-request parameter solving.

The FHIR API declares its query and header parameters (``_format``,
``_count``, ``If-None-Match``, ...) so that ``/openapi.json`` and the
CapabilityStatement describe them (issue 13), and its endpoints build their
Responses themselves.  FastAPI nevertheless validates every declared
parameter of every request through pydantic (``solve_dependencies``), several
µs each, although each is a plain optional string the endpoint takes as is:
the search route declares nine, the read five, and the documentation cost the
authenticated read about a tenth of its throughput (bench.bench_gate_ab).

For a route whose parameters are all plain strings, its declared signature
stays what OpenAPI reads, and the request is served by taking each parameter
straight from the request with the containers and lookups FastAPI's own
solver uses (``path_params``, ``query_params.get``: the last value,
``headers.get``: the first, case-insensitive), so the endpoint receives
exactly the arguments FastAPI would have given it.

A route qualifies only when (checked once, when the app is built, never per
request): its endpoint is a coroutine function declared to return a
Response; it has no dependencies, body, cookie or other special parameters;
every path parameter is a plain ``str``; and every query and header parameter
is an optional ``str`` defaulting to None with no constraints (so FastAPI could
never have answered 422 for it).  Any other route keeps FastAPI's handler.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi.params import Header, Path, Query
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, request_response

__all__ = ["direct", "qualifies"]

Endpoint = Callable[..., Awaitable[Response]]
_OPTIONAL_STR = (str | None, None | str)


def _returns_response(endpoint: Callable[..., Any]) -> bool:
    try:
        ret = inspect.signature(endpoint, eval_str=True).return_annotation
    except (NameError, TypeError, SyntaxError):  # an annotation that does not resolve: leave it to FastAPI
        return False
    return isinstance(ret, type) and issubclass(ret, Response)


def _header_key(name: str, alias: str, info: Header) -> str:
    # fastapi.dependencies.utils: an explicit alias is looked up as given; a
    # bare name with convert_underscores has its underscores turned into hyphens.
    if alias != name or not info.convert_underscores:
        return alias
    return name.replace("_", "-")


def qualifies(route: BaseRoute) -> bool:
    """Whether ``route`` may be served directly (the conditions in the module docstring)."""
    if not isinstance(route, APIRoute) or not inspect.iscoroutinefunction(route.endpoint):
        return False
    d = route.dependant
    if (d.dependencies or d.body_params or d.cookie_params or route.body_field is not None
            or d.http_connection_param_name or d.websocket_param_name or d.response_param_name
            or d.background_tasks_param_name or d.security_scopes_param_name):
        return False
    if not _returns_response(route.endpoint):
        return False
    for f in d.path_params:
        if not isinstance(f.field_info, Path) or f.field_info.annotation is not str or f.field_info.metadata:
            return False
    for f in (*d.query_params, *d.header_params):
        info = f.field_info
        if (not isinstance(info, Query | Header) or info.annotation not in _OPTIONAL_STR or info.metadata
                or info.is_required() or info.default is not None):
            return False
    return True


def _serve(route: APIRoute) -> Callable[[Request], Awaitable[Response]]:
    d = route.dependant
    endpoint: Endpoint = route.endpoint
    paths = tuple(f.name for f in d.path_params)
    queries = tuple((f.name, f.alias) for f in d.query_params)
    headers = tuple((f.name, _header_key(f.name, f.alias, f.field_info))
                    for f in d.header_params if isinstance(f.field_info, Header))
    request_name = d.request_param_name

    async def serve(request: Request) -> Response:
        args: dict[str, Any] = {name: request.path_params[name] for name in paths}
        if queries:
            q = request.query_params
            for name, alias in queries:
                args[name] = q.get(alias)
        if headers:
            h = request.headers
            for name, key in headers:
                args[name] = h.get(key)
        if request_name:
            args[request_name] = request
        return await endpoint(**args)

    return serve


def direct(routes: Iterable[BaseRoute]) -> int:
    """Serve every qualifying route of ``routes`` directly, in place; how many were."""
    n = 0
    for route in routes:
        if isinstance(route, APIRoute) and qualifies(route):
            route.app = request_response(_serve(route))
            n += 1
    return n
