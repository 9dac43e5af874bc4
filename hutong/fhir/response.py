"""A framework-free response: what the FHIR layer hands to the web layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from hutong.store import exactjson
from hutong.store.repository import Stored

FHIR_JSON = "application/fhir+json; charset=utf-8"


@dataclass
class FhirResponse:
    status: int
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, obj: Any, headers: dict[str, str] | None = None) -> FhirResponse:
        return cls(status, exactjson.dumps(obj), headers or {})  # decimals as written


def etag(version: int) -> str:
    return f'W/"{version}"'


def http_date(ms: int) -> str:
    return formatdate(ms / 1000, usegmt=True)


def version_headers(s: Stored, base_url: str) -> dict[str, str]:
    """ETag, Last-Modified and Location of a stored version (http.html#versioning)."""
    return {
        "ETag": etag(s.version),
        "Last-Modified": http_date(s.last_updated),
        "Location": f"{base_url}/{s.type}/{s.id}/_history/{s.version}",
    }
