"""The one seam through which every resource body is serialised for storage.

A stored body is one format byte followed by the payload.  ``J`` is the
compact JSON produced by the FHIR layer; ``E`` is AES-256-GCM under an
envelope key (:mod:`hutong.security.crypto`, installed by
``hutong.fhir.assembly.open_repository``).  Bodies are opaque bytes in both
databases rather than JSONB: searches never read bodies (they run on index
tables), so nothing is lost.  Every encrypting codec still reads ``J``
values, so databases written before encryption keep working.

``with_purpose`` gives a codec for another kind of value (MPI features, raw
inbound messages, audit text...): an encrypting codec binds the purpose into
the ciphertext, so a value copied into another table's column does not
decrypt there.
"""

from __future__ import annotations

from typing import Protocol

PLAIN = b"J"
ENCRYPTED = b"E"


class Codec(Protocol):
    def encode(self, body: bytes) -> bytes: ...

    def decode(self, stored: bytes) -> bytes: ...

    def with_purpose(self, purpose: str) -> Codec: ...


class PlainCodec:
    """Stores the JSON as is (only with ``open_repository(url, encrypt=False)``)."""

    def encode(self, body: bytes) -> bytes:
        return PLAIN + body

    def decode(self, stored: bytes) -> bytes:
        if stored[:1] != PLAIN:
            raise ValueError(f"unknown body format {stored[:1]!r}")
        return stored[1:]

    def with_purpose(self, purpose: str) -> Codec:
        return self
