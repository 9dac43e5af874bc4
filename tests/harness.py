"""Shared pieces of the test harness, importable by test modules (conftest is not)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import httpx

from hutong.store.sql import SqlRepository

# ../shared beside the checkout (as CI lays it out), or HUTONG_SHARED_DIR.
SHARED = Path(os.environ.get("HUTONG_SHARED_DIR") or Path(__file__).resolve().parents[1].parent / "shared")
SYNTHEA = SHARED / "data" / "synthea-10"


@dataclass
class Server:
    url: str  # base of the FHIR API, e.g. http://127.0.0.1:PORT/fhir
    root: str
    client: httpx.Client
    repo: SqlRepository
