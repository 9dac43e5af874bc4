"""Read one person's record through the caller's policy: every page of one
``Patient/[id]/$everything`` (operation-patient-everything.html), paged by
``_count`` and the ``next`` link, never truncated."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from hutong.fhir.search import MAX_COUNT
from hutong.fhir.service import FhirService
from hutong.record.build import build_record
from hutong.record.model import Record

MAX_PAGES = 200  # 200 pages of 1,000: far beyond any one person's record


def everything_rows(svc: FhirService, person_or_patient_id: str) -> tuple[list[dict[str, Any]], int]:
    """Every resource of the record the caller of ``svc`` may see, and the number of pages read."""
    out: list[dict[str, Any]] = []
    items: list[tuple[str, str]] = [("_count", str(MAX_COUNT))]
    pages = 0
    while pages < MAX_PAGES:
        pages += 1
        bundle = orjson.loads(svc.everything(person_or_patient_id, items).body or b"{}")
        for e in bundle.get("entry") or ():
            res = e.get("resource")
            if isinstance(res, dict):
                out.append(res)
        nxt = next((ln.get("url") for ln in bundle.get("link") or () if ln.get("relation") == "next"), None)
        if not nxt:
            break
        cursor = dict(parse_qsl(urlsplit(str(nxt)).query)).get("_cursor")
        if not cursor:
            break
        items = [("_count", str(MAX_COUNT)), ("_cursor", cursor)]
    return out, pages


def load_record(svc: FhirService, person_or_patient_id: str) -> Record:
    """The record of a golden person (``mpi-...``: every linked source) or of one
    source Patient, as the caller of ``svc`` may see it."""
    rows, pages = everything_rows(svc, person_or_patient_id)
    return build_record(person_or_patient_id, rows, pages=pages)
