"""Sample HL7 v2 messages for the ingest tests (origins in fixtures/hl7/README.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hutong.fhir.validation import validate
from hutong.ingest.hl7v2.mapping import Mapped, Sender, to_bundle
from hutong.ingest.hl7v2.message import Hl7Message, parse

FIXTURES = Path(__file__).parent / "fixtures" / "hl7"
SENDER = Sender(code="12110000400000000X", organization_id="org-pumch")
MRN = "urn:hutong:mrn:12110000400000000X"
ORDERS = "urn:hutong:order:12110000400000000X"
VISITS = "urn:hutong:visit:12110000400000000X"
LOCAL = "urn:hutong:code:12110000400000000X"


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def message(name: str) -> Hl7Message:
    return parse(raw(name))


def mapped(name: str) -> Mapped:
    """Parse and map a fixture; every resource of the Bundle must be valid R4."""
    m = to_bundle(message(name), SENDER)
    for e in m.bundle["entry"]:
        validate(e["resource"], e["resource"]["resourceType"])
    return m


def resources(m: Mapped, rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in m.bundle["entry"] if e["resource"]["resourceType"] == rtype]


def entry(m: Mapped, rtype: str, n: int = 0) -> dict[str, Any]:
    return [e for e in m.bundle["entry"] if e["resource"]["resourceType"] == rtype][n]


def build(*segments: str, charset: str | None = "UNICODE UTF-8", version: str = "2.5.1",
          msg_type: str = "ORU^R01^ORU_R01", control: str = "CTRL1", enc: str = "utf-8") -> bytes:
    """A message from its segments after a standard MSH."""
    msh = (f"MSH|^~\\&|HIS|12110000400000000X|HUTONG|BJ-RHIN|20240105103000||{msg_type}|{control}|P|{version}"
           + (f"|||||CHN|{charset}" if charset is not None else ""))
    return "\r".join((msh, *segments)).encode(enc) + b"\r"
