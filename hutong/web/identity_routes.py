"""Identity services over HTTP (hutong.fhir.identity): IHE PDQm ``$match``
(ITI-119), PIXm ``$ihe-pix`` (ITI-83), the MPI stewards' link/unlink/merge/
unmerge operations and their review queue (/mpi/review)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from hutong.errors import NotFound
from hutong.fhir.identity import IdentityOperations
from hutong.platform import Platform
from hutong.security.principal import Role
from hutong.web.fhir_http import body_of, require, run, service

# Who may use the identity services: find a resident, steward the index.
IDENTITY_LOOKUP = (Role.INSTITUTION, Role.CLINICIAN, Role.COMMISSION, Role.PLATFORM)
IDENTITY_STEWARDS = (Role.COMMISSION, Role.PLATFORM)
MPI_OPERATIONS = {"$mpi-link": "link", "$mpi-unlink": "unlink", "$mpi-merge": "merge", "$mpi-unmerge": "unmerge"}


def fhir_router(platform: Platform) -> APIRouter:
    """The Patient operations, mounted inside the FHIR router (hutong.web.fhir_routes)."""
    limit = platform.settings.max_body_bytes
    r = APIRouter(tags=["identity (MPI)"])

    @r.post("/fhir/Patient/$match", summary="IHE PDQm $match (ITI-119)")
    async def pdqm_match(request: Request) -> Response:
        require(request, *IDENTITY_LOOKUP, what="identity lookups ($match)")
        body = await body_of(request, limit)
        ops = IdentityOperations(service(platform, request))
        return await run(lambda: ops.match(body))

    @r.get("/fhir/Patient/$ihe-pix", summary="IHE PIXm $ihe-pix (ITI-83)")
    async def pixm(request: Request,
                   sourceIdentifier: Annotated[str | None, Query(description="system|value to cross-reference")]
                   = None,
                   targetSystem: Annotated[str | None, Query(description="identifier systems wanted")] = None,
                   ) -> Response:
        require(request, *IDENTITY_LOOKUP, what="identity lookups ($ihe-pix)")
        ops = IdentityOperations(service(platform, request))
        return await run(lambda: ops.pix(list(request.query_params.multi_items())))

    @r.post("/fhir/Patient/{op}", summary="MPI stewardship: $mpi-link, $mpi-unlink, $mpi-merge, $mpi-unmerge")
    async def mpi_operation(op: Annotated[str, Path(description="$mpi-link | $mpi-unlink | $mpi-merge | "
                                                                "$mpi-unmerge",
                                                    json_schema_extra={"enum": list(MPI_OPERATIONS)})],
                            request: Request) -> Response:
        if op not in MPI_OPERATIONS:
            raise NotFound("HT-0040", f"unknown Patient operation {op[:40]!r}")
        require(request, *IDENTITY_STEWARDS, what="identity stewardship (link, unlink, merge)")
        body = await body_of(request, limit)
        ops = IdentityOperations(service(platform, request))
        fn = getattr(ops, MPI_OPERATIONS[op])
        return await run(lambda: fn(body))

    return r


def router(platform: Platform) -> APIRouter:
    """The review queue of uncertain matches (/mpi/review)."""
    limit = platform.settings.max_body_bytes
    r = APIRouter(tags=["identity (MPI)"])

    @r.get("/mpi/review", summary="the identity review queue")
    async def mpi_review(request: Request) -> Response:
        require(request, *IDENTITY_STEWARDS, what="the identity review queue")
        ops = IdentityOperations(service(platform, request))
        return await run(lambda: ops.review(list(request.query_params.multi_items())))

    @r.post("/mpi/review/{review_id}/reject", summary="reject a proposed match")
    async def mpi_reject(review_id: Annotated[str, Path(description="review item id")], request: Request) -> Response:
        require(request, *IDENTITY_STEWARDS, what="the identity review queue")
        body = await body_of(request, limit) if request.headers.get("content-length", "0") != "0" else b""
        ops = IdentityOperations(service(platform, request))
        return await run(lambda: ops.reject(review_id, body))

    return r
