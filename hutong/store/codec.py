"""The one seam through which every resource body is serialised for storage.

A stored body is one format byte followed by the payload.  ``J`` is the
compact JSON produced by the FHIR layer.  The security issue adds an
encrypting format here (AES-256-GCM under an envelope key), which is why
bodies are opaque bytes in both databases rather than JSONB: searches never
read bodies (they run on index tables), so nothing is lost.
"""

from __future__ import annotations

from typing import Protocol

PLAIN = b"J"


class Codec(Protocol):
    def encode(self, body: bytes) -> bytes: ...

    def decode(self, stored: bytes) -> bytes: ...


class PlainCodec:
    """Stores the JSON as is (the default until keys are configured)."""

    def encode(self, body: bytes) -> bytes:
        return PLAIN + body

    def decode(self, stored: bytes) -> bytes:
        if stored[:1] != PLAIN:
            raise ValueError(f"unknown body format {stored[:1]!r}")
        return stored[1:]
