"""One stored row (the resource table's columns, in ``hutong.store.sql.COLS``
order) as a :class:`Stored`, its body opened by the codec.  Shared by the SQL
repository and the identifier fast path (hutong.store.identifiers), so that
neither imports the other for it (tests/test_import_cycles.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hutong.store.codec import Codec
from hutong.store.repository import Stored


def stored_of(r: Sequence[Any], codec: Codec) -> Stored:
    """(pk, type, fhir_id, version, last_updated, deleted, method, body) -> Stored."""
    body = r[7]
    return Stored(
        type=r[1], id=r[2], version=r[3], last_updated=r[4], deleted=bool(r[5]), method=r[6],
        body=codec.decode(bytes(body)) if body is not None else None, pk=r[0],
    )
