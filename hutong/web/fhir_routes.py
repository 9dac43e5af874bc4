"""The FHIR R4 REST API at /fhir (http.html): one route per interaction.

Routes only translate HTTP to :class:`hutong.fhir.service.FhirService` calls;
the parameters FHIR defines for each interaction are declared, so
``/openapi.json`` documents them (search parameters proper are open-ended:
the CapabilityStatement at /fhir/metadata lists them per type).

Matching order matters: type-level routes, then the ``$``-operations of other
route groups (``operations``), then instance-level routes, so that
``/fhir/Patient/$ihe-pix`` is not read as a Patient with id ``$ihe-pix``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Header, Path, Query, Request
from starlette.responses import Response

from hutong.errors import HutongError, InvalidRequest, UnsupportedMediaType
from hutong.fhir.bundle import BundleProcessor
from hutong.fhir.capability import capability_statement
from hutong.fhir.patch import JSON_PATCH, PATCH_FORMATS, check_media_type
from hutong.fhir.response import FhirResponse
from hutong.platform import Platform
from hutong.web.application import add_routes
from hutong.web.fhir_http import (
    SERVED_FORMATS,
    base_url,
    body_of,
    check_format,
    headers_of,
    raw_body,
    rest_routes,
    run,
    service,
    to_response,
)
from hutong.web.hot import hot_get
from hutong.web.outcomes import error_response, remember_error

# Declared parameters (documentation; values are read from the request as sent,
# so that repeated parameters and FHIR's own error codes stay as they were).
Type = Annotated[str, Path(description="FHIR resource type, e.g. Patient, Observation", examples=["Patient"])]
Id = Annotated[str, Path(description="logical id of the resource ([A-Za-z0-9-.]{1,64})")]
Vid = Annotated[str, Path(description="version id (history.html)")]
Format = Annotated[str | None, Query(alias="_format", description="json only (http.html#mime-type)")]
Count = Annotated[str | None, Query(alias="_count", description="page size (search.html#count)")]
Since = Annotated[str | None, Query(alias="_since", description="only versions after this instant")]
IfMatch = Annotated[str | None, Header(alias="If-Match", description='W/"version": update only this version')]
IfNoneMatch = Annotated[str | None, Header(alias="If-None-Match",
                                          description='W/"version": 304 if the resource is at it (http.html#cread)')]
IfModifiedSince = Annotated[str | None, Header(alias="If-Modified-Since",
                                               description="HTTP date: 304 if not changed since (http.html#cread)")]
IfNoneExist = Annotated[str | None, Header(alias="If-None-Exist",
                                           description="conditional create: search query that must match nothing")]
Prefer = Annotated[str | None, Header(alias="Prefer", description="return=minimal | representation | "
                                                                  "OperationOutcome")]
FHIR_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/fhir+json": {"schema": {"type": "object", "required": ["resourceType"],
                                         "properties": {"resourceType": {"type": "string"}}}}}}}

PATCH_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    JSON_PATCH: {"schema": {"type": "array", "items": {"type": "object", "required": ["op", "path"]}}}}}}


def router(platform: Platform, operations: Sequence[APIRouter] = ()) -> APIRouter:
    limit = platform.settings.max_body_bytes
    # Primary-key reads (tens of microseconds on SQLite, one local round trip on
    # PostgreSQL) run on the event loop: measured 3.1k vs 1.7k req/s (SQLite)
    # and 2.1k vs 1.4k (PostgreSQL) against handing them to the thread pool.
    # HUTONG_INLINE_READS=0 turns this off (e.g. for a remote, slow database).
    inline_reads = platform.settings.inline_reads
    r = APIRouter(tags=["FHIR R4"])

    @r.get("/fhir/metadata", summary="CapabilityStatement (public)")
    async def metadata(request: Request) -> Response:
        # Public (gate.PUBLIC_PATHS): the gate gives it no Access, so not service(request).
        # Generated from the routes registered (hutong.fhir.capability), not from a list.
        statement = capability_statement(base_url(platform, request), rest_routes(request.app.routes),
                                         SERVED_FORMATS, PATCH_FORMATS)
        return to_response(FhirResponse.json(200, statement))

    @r.post("/fhir", summary="transaction or batch Bundle (bundle.html, http.html#transaction)", openapi_extra=FHIR_BODY)
    @r.post("/fhir/", include_in_schema=False)
    async def bundle(request: Request, prefer: Prefer = None) -> Response:
        body = await body_of(request, limit)
        svc = service(platform, request)
        return await run(lambda: BundleProcessor(svc).process(body, headers_of(request)))

    @r.get("/fhir/_history", summary="history of every type (http.html#history)")
    async def system_history(request: Request, _count: Count = None, _since: Since = None) -> Response:
        svc = service(platform, request)
        return await run(lambda: svc.history(None, None, list(request.query_params.multi_items())))

    @hot_get(r, "/fhir/{type}", summary="search a type (search.html; any search parameter of the type)")
    async def search(type: Type, request: Request, _format: Format = None, _count: Count = None,
                     _sort: Annotated[str | None, Query(alias="_sort", description="search.html#sort")] = None,
                     _include: Annotated[str | None, Query(alias="_include", description="Type:param[:target]")]
                     = None,
                     _revinclude: Annotated[str | None, Query(alias="_revinclude")] = None,
                     _summary: Annotated[str | None, Query(alias="_summary", description="true | count | ...")]
                     = None,
                     _elements: Annotated[str | None, Query(alias="_elements")] = None,
                     identifier: Annotated[str | None, Query(description="system|value (token)")] = None,
                     ) -> Response:
        check_format(_format)
        svc = service(platform, request)
        return await run(lambda: svc.search(type, list(request.query_params.multi_items()), headers_of(request)))

    @r.post("/fhir/{type}/_search", summary="search by form post (search.html#Introduction)",
            openapi_extra={"requestBody": {"content": {"application/x-www-form-urlencoded": {
                "schema": {"type": "object", "additionalProperties": {"type": "string"}}}}}})
    async def search_post(type: Type, request: Request) -> Response:
        ctype = request.headers.get("content-type", "").split(";")[0].strip()
        if ctype != "application/x-www-form-urlencoded":
            raise UnsupportedMediaType("HT-0002", "POST _search needs application/x-www-form-urlencoded")
        raw = await request.body()
        try:
            form = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise InvalidRequest("HT-0021", "_search body is not UTF-8") from None
        items = list(request.query_params.multi_items()) + form
        svc = service(platform, request)
        return await run(lambda: svc.search(type, items, headers_of(request)))

    @r.post("/fhir/{type}", summary="create (http.html#create; If-None-Exist or ?criteria: conditional create)",
            openapi_extra=FHIR_BODY)
    async def create(type: Type, request: Request, if_none_exist: IfNoneExist = None,
                     prefer: Prefer = None) -> Response:
        body = await body_of(request, limit)
        svc = service(platform, request)
        q = request.url.query
        return await run(lambda: svc.create(type, body, headers_of(request), q))

    @r.put("/fhir/{type}", summary="conditional update (http.html#cond-update)", openapi_extra=FHIR_BODY)
    async def conditional_update(type: Type, request: Request) -> Response:
        body = await body_of(request, limit)
        svc = service(platform, request)
        q = request.url.query
        return await run(lambda: svc.conditional_update(type, q, body, headers_of(request)))

    @r.delete("/fhir/{type}", summary="conditional delete (http.html#cdelete)")
    async def conditional_delete(type: Type, request: Request) -> Response:
        svc = service(platform, request)
        q = request.url.query
        return await run(lambda: svc.conditional_delete(type, q))

    @r.get("/fhir/{type}/_history", summary="history of a type (http.html#history)")
    async def type_history(type: Type, request: Request, _count: Count = None, _since: Since = None) -> Response:
        svc = service(platform, request)
        return await run(lambda: svc.history(type, None, list(request.query_params.multi_items())))

    for ops in operations:
        add_routes(r, ops)

    @r.get("/fhir/Patient/{id}/$everything", summary="the whole record of a person (patient-operation-everything)")
    @r.post("/fhir/Patient/{id}/$everything", include_in_schema=False)
    async def everything(id: Id, request: Request, _count: Count = None, _since: Since = None,
                         _type: Annotated[str | None, Query(alias="_type", description="comma-separated types")]
                         = None) -> Response:
        svc = service(platform, request)
        return await run(lambda: svc.everything(id, list(request.query_params.multi_items())))

    @hot_get(r, "/fhir/{type}/{id}", summary="read (http.html#read)")
    async def read(type: Type, id: Id, request: Request, _format: Format = None, if_none_match: IfNoneMatch = None,
                   if_modified_since: IfModifiedSince = None) -> Response:
        check_format(_format)
        svc = service(platform, request)
        params = list(request.query_params.multi_items())  # _summary, _elements (search.html#summary)
        if inline_reads:
            return to_response(svc.read(type, id, headers_of(request), params))
        return await run(lambda: svc.read(type, id, headers_of(request), params))

    @r.put("/fhir/{type}/{id}", summary="update or create with a client id (http.html#update)", openapi_extra=FHIR_BODY)
    async def update(type: Type, id: Id, request: Request, if_match: IfMatch = None,
                     prefer: Prefer = None) -> Response:
        body = await body_of(request, limit)
        svc = service(platform, request)
        return await run(lambda: svc.update(type, id, body, headers_of(request)))

    @r.patch("/fhir/{type}/{id}", summary="patch with a JSON Patch document (http.html#patch, RFC 6902)",
             openapi_extra=PATCH_BODY)
    async def patch(type: Type, id: Id, request: Request, if_match: IfMatch = None,
                    prefer: Prefer = None) -> Response:
        try:
            check_media_type(request.headers.get("content-type"))
        except HutongError as e:
            # RFC 5789 section 2.2: a 415 for a patch format names the supported ones.
            remember_error(request, e)
            refused = error_response(e)
            refused.headers["Accept-Patch"] = ", ".join(PATCH_FORMATS)
            return refused
        body = await raw_body(request, limit)
        svc = service(platform, request)
        return await run(lambda: svc.patch(type, id, body, headers_of(request)))

    @r.delete("/fhir/{type}/{id}", summary="delete (http.html#delete)")
    async def delete(type: Type, id: Id, request: Request, if_match: IfMatch = None) -> Response:
        svc = service(platform, request)
        return await run(lambda: svc.delete(type, id, headers_of(request)))

    @r.get("/fhir/{type}/{id}/_history", summary="history of a resource (http.html#history)")
    async def instance_history(type: Type, id: Id, request: Request, _count: Count = None,
                               _since: Since = None) -> Response:
        svc = service(platform, request)
        return await run(lambda: svc.history(type, id, list(request.query_params.multi_items())))

    @r.get("/fhir/{type}/{id}/_history/{vid}", summary="read a version (http.html#vread)")
    async def vread(type: Type, id: Id, vid: Vid, request: Request) -> Response:
        svc = service(platform, request)
        params = list(request.query_params.multi_items())
        return await run(lambda: svc.vread(type, id, vid, params))

    @r.get("/fhir/{ctype}/{cid}/{type}", summary="search in a compartment (compartmentdefinition.html)")
    async def compartment_search(ctype: Annotated[str, Path(description="compartment type, e.g. Patient")],
                                 cid: Annotated[str, Path(description="compartment id")], type: Type,
                                 request: Request, _count: Count = None) -> Response:
        svc = service(platform, request)
        items = list(request.query_params.multi_items())
        return await run(lambda: svc.search(type, items, headers_of(request), compartment=(ctype, cid)))

    return r
