"""Ingestion over HTTP (hutong.ingest): WS/T 500 CDA documents in, and the
commission's views of the inbox (next-day timeliness, dead letters, retry)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from hutong.errors import InvalidRequest, UnsupportedMediaType
from hutong.fhir.response import FhirResponse
from hutong.fhir.service import FhirService
from hutong.ingest import inbox
from hutong.ingest.pipeline import Ingestor
from hutong.platform import Platform
from hutong.quality.data_quality import data_quality
from hutong.security.principal import Role
from hutong.systems import REGION_TZ
from hutong.web import gate, receipts
from hutong.web.fhir_http import base_url, raw_body, require, run

OVERSIGHT = (Role.COMMISSION, Role.OPERATOR, Role.PLATFORM)
Institution = Annotated[str | None, Query(alias="institution", description="sending institution code")]


def _page(count: str | None, after: str | None) -> tuple[int, int]:
    """``_count`` (1..1000, default 100; more is cut to 1000) and ``after`` (a message id >= 0)."""
    try:
        n = int(count if count is not None else "100")
        since = int(after if after is not None else "0")
    except ValueError:
        raise InvalidRequest("HT-0041", "_count and after must be integers") from None
    if n < 1 or since < 0:
        # a negative LIMIT is no limit at all in SQLite: _count=-1 listed every message
        raise InvalidRequest("HT-0041", "_count must be at least 1 and after not negative")
    return min(n, 1000), since


def _days(from_: str | None, to: str | None) -> tuple[date, date]:
    """A range of days: ``to`` defaults to today (Beijing), ``from`` to six days before ``to``."""
    try:
        end = date.fromisoformat(to) if to is not None else datetime.now(REGION_TZ).date()
        start = date.fromisoformat(from_) if from_ is not None else end - timedelta(days=6)
    except ValueError:
        raise InvalidRequest("HT-0041", "from and to must be dates (YYYY-MM-DD)") from None
    if start > end or (end - start).days > 366:
        raise InvalidRequest("HT-0041", "from must not be after to, and the range at most 366 days")
    return start, end


def router(platform: Platform) -> APIRouter:
    limit = platform.settings.max_body_bytes
    r = APIRouter(tags=["ingestion"])
    ingestors: list[Ingestor] = []

    def ingestor(request: Request) -> Ingestor:
        if not ingestors:
            svc = FhirService(platform.repo, base_url(platform, request))
            ingestors.append(receipts.ingestor(platform.repo, svc, platform.security, platform.audit.record))
        return ingestors[0]

    @r.get("/ingest/timeliness", summary="next-day timeliness (次日归集) per institution and day")
    async def timeliness(request: Request,
                         from_: Annotated[str | None, Query(alias="from", description="first day, YYYY-MM-DD")]
                         = None,
                         to: Annotated[str | None, Query(description="last day, YYYY-MM-DD (default today)")]
                         = None,
                         institution: Institution = None) -> Response:
        require(request, *OVERSIGHT, what="ingestion timeliness")
        start, end = _days(from_, to)
        ing = ingestor(request)
        return await run(lambda: FhirResponse.json(200, inbox.timeliness(
            ing.repo, start=start, end=end, sender=institution)))

    @r.get("/ingest/dead-letters", summary="messages that could not be stored")
    async def dead_letters(request: Request,
                           count: Annotated[str | None, Query(alias="_count", description="at most 1000")] = None,
                           after: Annotated[str | None, Query(description="page after this message id")] = None,
                           institution: Institution = None) -> Response:
        require(request, *OVERSIGHT, what="the dead-letter list")
        n, since = _page(count, after)
        ing = ingestor(request)
        return await run(lambda: FhirResponse.json(200, {"items": [
            d.summary() for d in inbox.dead_letters(ing.repo, limit=n, after=since, sender=institution)]}))

    @r.get("/ingest/flagged", summary="stored messages that were accepted with a warning")
    async def flagged(request: Request,
                      code: Annotated[str | None, Query(description="only this warning, e.g. HT-0265")] = None,
                      count: Annotated[str | None, Query(alias="_count", description="at most 1000")] = None,
                      after: Annotated[str | None, Query(description="page after this message id")] = None,
                      institution: Institution = None) -> Response:
        """Messages stored with a note (HL7 AA with an ERR of severity W, the CDA answer's
        ``warning``): a demographic code outside its table, a re-used MSH-10, CDA sections
        outside structuredBody ... (issue 15, items 11, 17, 19).  No message content."""
        require(request, *OVERSIGHT, what="the flagged-message list")
        n, since = _page(count, after)
        ing = ingestor(request)
        return await run(lambda: FhirResponse.json(200, {"items": [
            d.summary() for d in inbox.flagged(ing.repo, code=code, limit=n, after=since, sender=institution)]}))

    @r.get("/ingest/quality", summary="data-quality warnings per institution and code")
    async def quality(request: Request,
                      from_: Annotated[str | None, Query(alias="from", description="first day, YYYY-MM-DD")] = None,
                      to: Annotated[str | None, Query(description="last day, YYYY-MM-DD (default today)")] = None
                      ) -> Response:
        require(request, *OVERSIGHT, what="data-quality counts")
        start, end = _days(from_, to)
        ing = ingestor(request)
        return await run(lambda: FhirResponse.json(200, {"from": start.isoformat(), "to": end.isoformat(), "items": [
            {"institution": c.institution, "code": c.code, "label": c.label, "messages": c.messages}
            for c in data_quality(ing.repo, start=start, end=end)]}))

    @r.post("/ingest/dead-letters/{message_id}/retry", summary="retry a dead letter")
    async def retry_dead_letter(message_id: Annotated[str, Path(description="message id (integer)")],
                                request: Request) -> Response:
        operator = require(request, Role.COMMISSION, Role.PLATFORM, what="retrying dead letters").principal
        if not message_id.isdigit():
            raise InvalidRequest("HT-0041", "message id must be an integer")
        ing = ingestor(request)
        return await run(lambda: receipts.retry(ing, operator, int(message_id)))

    @r.post("/ingest/cda", summary="a WS/T 500 shared document (CDA R2)", openapi_extra={"requestBody": {
        "required": True, "content": {"application/hl7-cda+xml": {"schema": {"type": "string"}}}}})
    async def post_cda(request: Request) -> Response:
        sender = require(request, Role.INSTITUTION, Role.PLATFORM, what="sending CDA documents").principal
        gate.access_of(request).require_scope("DocumentReference", "create")
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("application/xml", "text/xml", "application/hl7-cda+xml"):
            raise UnsupportedMediaType("HT-0002", "send the CDA document as application/hl7-cda+xml")
        body = await raw_body(request, limit)
        ing = ingestor(request)
        client = request.client
        peer = f"{client.host}:{client.port}" if client else None
        return await run(lambda: receipts.post_cda(ing, sender, body, peer))

    return r
