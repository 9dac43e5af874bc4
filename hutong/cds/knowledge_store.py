"""Data access for decision-support knowledge: the versions and the mutual-recognition (互认) rows.

Why tables and not FHIR resources in the store: the knowledge is the platform's own rule data,
not anyone's record.  As FHIR resources (ConceptMap, Library) it would pass the clinical write
path (owner, compartment, sensitivity labels: none of which apply) and its four-eyes life cycle
would be a status element any writer with ``ConceptMap.u`` could flip; here a version changes
state only by a conditional UPDATE on the state it is expected in, in the same transaction as
its audit row (hutong.cds.versions).  The rule reads an approved version's rows once and keeps
them (a version's rows never change after it is drafted), and the code maps go out and come in
as FHIR ConceptMaps for the institutions' systems (hutong.cds.knowledge).

Tables (revision 0005): ``cds_knowledge_version`` (one row per version: kind, state, effective
dates as Beijing days, author, approver, retirer, the canonical JSON and its SHA-256), and per
version the rows of hutong.cds.knowledge: ``cds_hr_item``, ``cds_hr_item_region``,
``cds_hr_negative``, ``cds_hr_trigger``, ``cds_hr_quality``, ``cds_hr_local_code``.
The only module with SQL for them (tests/test_layering.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, Column, Index, Integer, PrimaryKeyConstraint, String, Table, Text

from hutong.cds.knowledge import Item, ItemRegion, KnowledgeSet, LocalCode, Negative, Quality, Trigger
from hutong.store.repository import Repository, Writer
from hutong.store.schema import metadata
from hutong.store.sql import sql_repository, sql_writer

cds_knowledge_version = Table(
    "cds_knowledge_version", metadata,
    Column("id", String(40), primary_key=True),          # kv-<hex>
    Column("kind", String(32), nullable=False),           # recognition
    Column("seq", Integer, nullable=False),               # 1, 2, ... per kind (what people call "version 3")
    Column("title", String(200), nullable=False),
    Column("status", String(12), nullable=False),         # draft | active | retired
    Column("effective_from", String(10), nullable=False),  # YYYY-MM-DD, Beijing day, inclusive
    Column("effective_to", String(10), nullable=True),    # inclusive; NULL: until retired or superseded
    Column("author", String(128), nullable=False),        # account id
    Column("approver", String(128), nullable=True),
    Column("retired_by", String(128), nullable=True),
    Column("created", BigInteger, nullable=False),        # epoch ms
    Column("approved", BigInteger, nullable=True),
    Column("retired", BigInteger, nullable=True),
    Column("note", String(500), nullable=True),
    Column("digest", String(64), nullable=False),         # SHA-256 of body: what was approved
    Column("body", Text, nullable=False),                 # the knowledge set as submitted (canonical JSON)
    Index("ix_cds_knowledge_version_kind", "kind", "status", "effective_from"),
)

cds_hr_item = Table(
    "cds_hr_item", metadata,
    Column("version_id", String(40), nullable=False),
    Column("item", String(64), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("name", String(200), nullable=False),
    Column("loinc", String(32), nullable=True),
    Column("modality", String(16), nullable=True),
    Column("body_site", String(32), nullable=True),
    Column("proc_system", String(200), nullable=True),
    Column("proc_code", String(64), nullable=True),
    PrimaryKeyConstraint("version_id", "item", name="pk_cds_hr_item"),
)

cds_hr_item_region = Table(
    "cds_hr_item_region", metadata,
    Column("version_id", String(40), nullable=False),
    Column("item", String(64), nullable=False),
    Column("region", String(6), nullable=False),
    Column("window_days", Integer, nullable=False),
    Column("scope_mark", String(32), nullable=False),
    PrimaryKeyConstraint("version_id", "item", "region", name="pk_cds_hr_item_region"),
)

cds_hr_negative = Table(
    "cds_hr_negative", metadata,
    Column("version_id", String(40), nullable=False),
    Column("situation", String(64), nullable=False),
    Column("item", String(64), nullable=False),
    PrimaryKeyConstraint("version_id", "situation", "item", name="pk_cds_hr_negative"),
)

cds_hr_trigger = Table(
    "cds_hr_trigger", metadata,
    Column("version_id", String(40), nullable=False),
    Column("situation", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("system", String(200), nullable=False),
    Column("value", String(64), nullable=False),
    PrimaryKeyConstraint("version_id", "situation", "kind", "system", "value", name="pk_cds_hr_trigger"),
)

cds_hr_quality = Table(
    "cds_hr_quality", metadata,
    Column("version_id", String(40), nullable=False),
    Column("institution", String(64), nullable=False),
    Column("item", String(64), nullable=False),
    Column("program", String(64), nullable=False),
    Column("passed", Integer, nullable=False),
    Column("valid_from", String(10), nullable=False),
    Column("valid_to", String(10), nullable=False),
    PrimaryKeyConstraint("version_id", "institution", "item", "program", "valid_from",
                         name="pk_cds_hr_quality"),
)

cds_hr_local_code = Table(
    "cds_hr_local_code", metadata,
    Column("version_id", String(40), nullable=False),
    Column("system", String(200), nullable=False),
    Column("code", String(64), nullable=False),
    Column("institution", String(64), nullable=False),
    Column("item", String(64), nullable=False),
    Column("display", String(200), nullable=False),
    PrimaryKeyConstraint("version_id", "system", "code", name="pk_cds_hr_local_code"),
)

TABLES = (cds_knowledge_version, cds_hr_item, cds_hr_item_region, cds_hr_negative, cds_hr_trigger, cds_hr_quality,
          cds_hr_local_code)

Row = Sequence[Any]
VERSION_COLS = ("id, kind, seq, title, status, effective_from, effective_to, author, approver, retired_by, created, "
                "approved, retired, note, digest")
SELECT_VERSION = ("SELECT id, kind, seq, title, status, effective_from, effective_to, author, approver, retired_by, "
                  "created, approved, retired, note, digest FROM cds_knowledge_version WHERE id = ?")
SELECT_VERSIONS = ("SELECT id, kind, seq, title, status, effective_from, effective_to, author, approver, retired_by, "
                   "created, approved, retired, note, digest FROM cds_knowledge_version WHERE kind = ? "
                   "ORDER BY seq DESC")
# The version in force on a day: approved, effective that day, the latest start (then the latest approval) wins.
SELECT_IN_FORCE = ("SELECT id FROM cds_knowledge_version WHERE kind = ? AND status = 'active' "
                   "AND effective_from <= ? AND (effective_to IS NULL OR effective_to >= ?) "
                   "ORDER BY effective_from DESC, approved DESC, seq DESC LIMIT 1")
SELECT_BODY = "SELECT body FROM cds_knowledge_version WHERE id = ?"
NEXT_SEQ = "SELECT COALESCE(MAX(seq), 0) + 1 FROM cds_knowledge_version WHERE kind = ?"
INSERT_VERSION = ("INSERT INTO cds_knowledge_version (id, kind, seq, title, status, effective_from, effective_to, "
                  "author, approver, retired_by, created, approved, retired, note, digest, body) "
                  "VALUES (?, ?, ?, ?, 'draft', ?, ?, ?, NULL, NULL, ?, NULL, NULL, ?, ?, ?)")
APPROVE = ("UPDATE cds_knowledge_version SET status = 'active', approver = ?, approved = ? "
           "WHERE id = ? AND status = 'draft' AND author <> ?")
RETIRE = ("UPDATE cds_knowledge_version SET status = 'retired', retired_by = ?, retired = ? "
          "WHERE id = ? AND status IN ('draft', 'active')")
INSERT_ITEM = ("INSERT INTO cds_hr_item (version_id, item, kind, name, loinc, modality, body_site, proc_system, "
               "proc_code) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
INSERT_REGION = ("INSERT INTO cds_hr_item_region (version_id, item, region, window_days, scope_mark) "
                 "VALUES (?, ?, ?, ?, ?)")
INSERT_NEGATIVE = "INSERT INTO cds_hr_negative (version_id, situation, item) VALUES (?, ?, ?)"
INSERT_TRIGGER = ("INSERT INTO cds_hr_trigger (version_id, situation, name, kind, system, value) "
                  "VALUES (?, ?, ?, ?, ?, ?)")
INSERT_QUALITY = ("INSERT INTO cds_hr_quality (version_id, institution, item, program, passed, valid_from, valid_to) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?)")
INSERT_LOCAL = ("INSERT INTO cds_hr_local_code (version_id, system, code, institution, item, display) "
                "VALUES (?, ?, ?, ?, ?, ?)")
SELECT_ITEMS = ("SELECT item, kind, name, loinc, modality, body_site, proc_system, proc_code FROM cds_hr_item "
                "WHERE version_id = ? ORDER BY item")
SELECT_REGIONS = ("SELECT item, region, window_days, scope_mark FROM cds_hr_item_region WHERE version_id = ? "
                  "ORDER BY item, region")
SELECT_NEGATIVES = "SELECT situation, item FROM cds_hr_negative WHERE version_id = ? ORDER BY situation, item"
SELECT_TRIGGERS = ("SELECT situation, name, kind, system, value FROM cds_hr_trigger WHERE version_id = ? "
                   "ORDER BY situation, kind, system, value")
SELECT_QUALITY = ("SELECT institution, item, program, passed, valid_from, valid_to FROM cds_hr_quality "
                  "WHERE version_id = ? ORDER BY institution, item, program, valid_from")
SELECT_LOCAL = ("SELECT institution, system, code, item, display FROM cds_hr_local_code WHERE version_id = ? "
                "ORDER BY institution, system, code")


def _rows(repo: Repository, w: Writer | None, sql: str, args: tuple[Any, ...]) -> list[Row]:
    if w is not None:
        return list(sql_writer(w).execute(sql, args).fetchall())
    return list(sql_repository(repo).query(sql, args))


def version_row(repo: Repository, version_id: str, w: Writer | None = None) -> Row | None:
    rows = _rows(repo, w, SELECT_VERSION, (version_id,))
    return rows[0] if rows else None


def version_rows(repo: Repository, kind: str) -> list[Row]:
    """Every version of ``kind``, newest first."""
    return _rows(repo, None, SELECT_VERSIONS, (kind,))


def in_force(repo: Repository, kind: str, day: str) -> str | None:
    """The id of the approved version of ``kind`` in force on ``day`` (YYYY-MM-DD), if any."""
    rows = _rows(repo, None, SELECT_IN_FORCE, (kind, day, day))
    return str(rows[0][0]) if rows else None


def body_of(repo: Repository, version_id: str) -> bytes | None:
    rows = _rows(repo, None, SELECT_BODY, (version_id,))
    if not rows:
        return None
    b = rows[0][0]
    return b.encode() if isinstance(b, str) else bytes(b)


def insert_version(w: Writer, version_id: str, kind: str, ks: KnowledgeSet, effective_from: str,
                   effective_to: str | None, author: str, note: str | None, now: int) -> int:
    """A new draft and all its rows; its sequence number.  The caller holds the kind's lock."""
    sw = sql_writer(w)
    seq = int(sw.execute(NEXT_SEQ, (kind,)).fetchall()[0][0])
    sw.execute(INSERT_VERSION, (version_id, kind, seq, ks.title, effective_from, effective_to, author, now, note,
                                ks.digest, ks.body.decode()))
    v = version_id
    _many(w, INSERT_ITEM, [(v, i.key, i.kind, i.name, i.loinc, i.modality, i.body_site, i.proc_system, i.proc_code)
                           for i in ks.items])
    _many(w, INSERT_REGION, [(v, r.item, r.region, r.window_days, r.scope_mark) for r in ks.regions])
    _many(w, INSERT_NEGATIVE, [(v, n.situation, n.item) for n in ks.negatives])
    _many(w, INSERT_TRIGGER, [(v, t.situation, t.name, t.kind, t.system, t.value) for t in ks.triggers])
    _many(w, INSERT_QUALITY, [(v, q.institution, q.item, q.program, int(q.passed), q.valid_from, q.valid_to)
                              for q in ks.quality])
    _many(w, INSERT_LOCAL, [(v, c.system, c.code, c.institution, c.item, c.display) for c in ks.local_codes])
    return seq


def _many(w: Writer, sql: str, rows: list[tuple[Any, ...]]) -> None:
    if rows:
        sw = sql_writer(w)
        sw.cur.executemany(sw.db.sql(sql), rows)


def approve(w: Writer, version_id: str, approver: str, now: int) -> bool:
    """draft -> active, never by its author (four-eyes in the statement itself); False: not so."""
    return int(sql_writer(w).execute(APPROVE, (approver, now, version_id, approver)).rowcount) == 1


def retire(w: Writer, version_id: str, by: str, now: int) -> bool:
    return int(sql_writer(w).execute(RETIRE, (by, now, version_id)).rowcount) == 1


def knowledge_rows(repo: Repository, version_id: str, title: str) -> KnowledgeSet:
    """A stored version's rows as a :class:`KnowledgeSet` (body left empty)."""
    args = (version_id,)
    items = tuple(Item(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]) for r in _rows(repo, None, SELECT_ITEMS, args))
    regions = tuple(ItemRegion(r[0], r[1], int(r[2]), r[3]) for r in _rows(repo, None, SELECT_REGIONS, args))
    negatives = tuple(Negative(r[0], r[1]) for r in _rows(repo, None, SELECT_NEGATIVES, args))
    triggers = tuple(Trigger(r[0], r[1], r[2], r[3], r[4]) for r in _rows(repo, None, SELECT_TRIGGERS, args))
    quality = tuple(Quality(r[0], r[1], r[2], bool(r[3]), r[4], r[5]) for r in _rows(repo, None, SELECT_QUALITY, args))
    local = tuple(LocalCode(r[0], r[1], r[2], r[3], r[4]) for r in _rows(repo, None, SELECT_LOCAL, args))
    return KnowledgeSet(title, items, regions, negatives, triggers, quality, local)
