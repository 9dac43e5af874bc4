"""Runtime settings, read once from arguments and the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass

from hutong.store.database import resolve_url


@dataclass(frozen=True)
class Settings:
    database_url: str
    base_url: str | None = None  # public base of the FHIR API; None = derived from each request
    max_body_bytes: int = 16 * 1024 * 1024

    @classmethod
    def from_env(cls, database_url: str | None = None) -> Settings:
        return cls(
            database_url=resolve_url(database_url),
            base_url=os.environ.get("HUTONG_BASE_URL") or None,
            max_body_bytes=int(os.environ.get("HUTONG_MAX_BODY_BYTES", 16 * 1024 * 1024)),
        )
