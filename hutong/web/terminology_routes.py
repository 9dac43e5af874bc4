"""The terminology service over HTTP (FHIR R4 terminology-service.html):
``CodeSystem/$lookup``, ``CodeSystem/$validate-code``, ``ValueSet/$expand``,
``ValueSet/$validate-code`` and ``ConceptMap/$translate``, by GET (URL
parameters) or POST (a Parameters resource), type-level.

Code systems are not clinical data, but these routes sit behind the gate like
every FHIR route: a caller is authenticated and each request audited (only
/fhir/metadata describes the server publicly).  The knowledge is
hutong.terminology (the shipped R4 core and Chinese code systems, plus the
operator's files, re-read when ``hutong terminology load`` adds one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from hutong.errors import InvalidRequest
from hutong.fhir.response import FhirResponse
from hutong.platform import Platform
from hutong.terminology import operations as ops
from hutong.terminology.loader import directory
from hutong.terminology.service import Terminology, shipped
from hutong.web import gate
from hutong.web.fhir_http import body_of, run

Operation = Callable[[Terminology, ops.Inputs], dict[str, Any]]
OPERATIONS: tuple[tuple[str, str, Operation, str], ...] = (
    ("CodeSystem", "$lookup", ops.lookup, "concept details: display, parent and children (codesystem-operation-lookup)"),
    ("CodeSystem", "$validate-code", ops.validate_code_system, "is a code in a code system "
                                                                "(codesystem-operation-validate-code)"),
    ("ValueSet", "$expand", ops.expand, "the codes of a value set, paged, filtered by text "
                                        "(valueset-operation-expand)"),
    ("ValueSet", "$validate-code", ops.validate_value_set, "is a code in a value set "
                                                           "(valueset-operation-validate-code)"),
    ("ConceptMap", "$translate", ops.translate, "map a code to another system (conceptmap-operation-translate)"),
)


def fhir_router(platform: Platform) -> APIRouter:
    """Mounted inside the FHIR router (hutong.web.fhir_routes), before the instance routes."""
    limit = platform.settings.max_body_bytes
    terminology = Terminology(shipped(), directory(platform.settings.database_url))
    r = APIRouter(tags=["terminology"])

    def add(rtype: str, name: str, fn: Operation, summary: str) -> None:
        path = f"/fhir/{rtype}/{name}"

        async def by_get(request: Request) -> Response:
            gate.access_of(request)  # authenticated by the gate (not a public route)
            inputs = ops.Inputs.of_query(request.query_params.multi_items())
            return await run(lambda: FhirResponse.json(200, fn(terminology, inputs)))

        async def by_post(request: Request) -> Response:
            gate.access_of(request)
            raw = await body_of(request, limit)
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise InvalidRequest("HT-0001", "the body is not valid JSON") from None
            inputs = ops.Inputs.of_parameters(body)
            return await run(lambda: FhirResponse.json(200, fn(terminology, inputs)))

        r.add_api_route(path, by_get, methods=["GET"], summary=summary, name=f"{rtype}{name}-get")
        r.add_api_route(path, by_post, methods=["POST"], summary=summary + " (Parameters body)",
                        name=f"{rtype}{name}-post")

    for rtype, name, fn, summary in OPERATIONS:
        add(rtype, name, fn, summary)
    return r
