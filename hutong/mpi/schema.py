"""Tables of the master patient index, beside the FHIR store's (same MetaData,
so ``open_database`` creates them).

- ``mpi_source``: one row per source Patient (an institution's registration):
  the person it belongs to, how it got there (rule, score, state) and its
  matching features (codec-encoded: they hold names and ID numbers, so they
  get the same encryption at rest as resource bodies).
- ``mpi_block``: blocking keys -> source patient, so a lookup reads a handful
  of candidates instead of scanning everyone.
- ``mpi_nolink``: human "not the same person" decisions, kept across relinks.
- ``mpi_review``: the review queue (candidate person, score, reason).
- ``mpi_review_decision``: each human decision on a review item (who, when, note).
- ``mpi_event``: every link/unlink/merge/unmerge/relink with a snapshot of the
  state before it, so an unmerge restores exactly and history is complete.
- ``mpi_model``: Fellegi-Sunter parameters with their version.
The golden persons themselves are Patient resources in ``resource`` (tagged).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
)

from hutong.store.schema import PK, Text, metadata

mpi_source = Table(
    "mpi_source",
    metadata,
    Column("patient_id", String(64), primary_key=True),
    Column("person_id", String(64), nullable=False),
    # auto: placed by the matcher; manual: a human decided (pinned across relinks);
    # review: placed alone while a review item about it is open.
    Column("state", String(8), nullable=False),
    Column("rule", String(8), nullable=False),  # id | fs | new | manual
    Column("score", Float, nullable=True),
    Column("seq", BigInteger, nullable=False),  # arrival order: relink replays it
    Column("updated", BigInteger, nullable=False),
    Column("features", LargeBinary, nullable=False),
    Index("ix_mpi_source_person", "person_id"),
    Index("ix_mpi_source_seq", "seq"),
)

mpi_block = Table(
    "mpi_block",
    metadata,
    Column("key", Text, nullable=False),
    Column("patient_id", String(64), nullable=False),
    Index("ix_mpi_block_key", "key"),
    Index("ix_mpi_block_patient", "patient_id"),
)

mpi_nolink = Table(
    "mpi_nolink",
    metadata,
    Column("a", String(64), nullable=False),
    Column("b", String(64), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("reason", String(500), nullable=True),
    PrimaryKeyConstraint("a", "b", name="pk_mpi_nolink"),
    Index("ix_mpi_nolink_b", "b"),
)

mpi_review = Table(
    "mpi_review",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("patient_id", String(64), nullable=False),
    Column("person_id", String(64), nullable=False),  # the candidate person
    Column("score", Float, nullable=True),
    Column("reason", String(500), nullable=False),
    Column("status", String(10), nullable=False),  # open | linked | rejected | obsolete
    Column("created", BigInteger, nullable=False),
    Column("decided", BigInteger, nullable=True),
    Column("actor", String(128), nullable=True),
    Index("ix_mpi_review_status", "status", "id"),
    Index("ix_mpi_review_patient", "patient_id"),
)

# Each human decision on a review item (issue 16, item 6): linked, rejected
# (not the same person) or, later, unlinked; who (account id: pages show the
# account's name), when, and the note.  mpi_review keeps only the last status.
mpi_review_decision = Table(
    "mpi_review_decision",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("review_id", BigInteger, nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("decision", String(10), nullable=False),  # linked | rejected | unlinked
    Column("actor", String(128), nullable=False),
    Column("note", String(500), nullable=True),
    Index("ix_mpi_review_decision_review", "review_id", "id"),
)

mpi_event = Table(
    "mpi_event",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("kind", String(12), nullable=False),  # link unlink merge unmerge relink
    Column("actor", String(128), nullable=False),
    Column("reason", String(500), nullable=True),
    Column("undone", SmallInteger, nullable=False, default=0),
    Column("detail", LargeBinary, nullable=False),  # codec-encoded JSON: before/after
    Index("ix_mpi_event_at", "at"),
)

mpi_model = Table(
    "mpi_model",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("created", BigInteger, nullable=False),
    Column("active", SmallInteger, nullable=False),
    Column("params", LargeBinary, nullable=False),  # JSON (no personal data)
)
