"""Break-glass grants: emergency access a clinician claims with a written reason.

A grant lets one account read one person's whole record (masking lifted) for
``SecuritySettings.break_glass_hours``.  It is flagged in the audit trail
(purpose ``break-glass``), the resident is told (SMS through the gateway, and
the access log), and auditors review it (hutong.security.audit).  The reason is
free text that may name the resident's condition, so it is stored encrypted
through the store codec.  Its queries live in hutong.security.grants_store.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, LargeBinary, String, Table

from hutong.security.grants_store import AccessGrant, active, add
from hutong.store.schema import metadata

__all__ = ["AccessGrant", "access_grant", "active", "add", "metadata"]


access_grant = Table(
    "access_grant",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(64), nullable=False),
    Column("person_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # break-glass
    Column("reason", LargeBinary, nullable=False),  # codec-encoded UTF-8
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Index("ix_access_grant_lookup", "account_id", "person_id", "expires_ms"),
)

