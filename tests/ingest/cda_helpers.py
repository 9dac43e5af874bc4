"""Shared pieces of the CDA tests: fixture paths, the generator script, bundle helpers."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from hutong.fhir.validation import validate
from hutong.ingest.cda.mapping import CdaMapped, Sender, to_bundle

FIXTURES = Path(__file__).parent / "fixtures" / "cda"
MINIMAL = FIXTURES / "minimal"
INVALID = FIXTURES / "invalid"
REALISTIC = FIXTURES / "realistic"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cda_make_fixtures", FIXTURES / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_fixtures = _load_generator()
SENDER = Sender(code=make_fixtures.SENDER_CODE, organization_id="org-hutong-demo")


def read(path: Path | str) -> bytes:
    return (FIXTURES / path).read_bytes() if isinstance(path, str) else path.read_bytes()


def mapped(name: str) -> CdaMapped:
    return to_bundle(read(name), SENDER)


def resources(m: CdaMapped, rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in m.bundle["entry"] if e["resource"]["resourceType"] == rtype]


def one(m: CdaMapped, rtype: str) -> dict[str, Any]:
    found = resources(m, rtype)
    assert len(found) == 1, f"{len(found)} {rtype} resources"
    return found[0]


def full_url(m: CdaMapped, resource: dict[str, Any]) -> str:
    return next(e["fullUrl"] for e in m.bundle["entry"] if e["resource"] is resource)


def validate_all(m: CdaMapped) -> None:
    for e in m.bundle["entry"]:
        validate(e["resource"], e["resource"]["resourceType"])
