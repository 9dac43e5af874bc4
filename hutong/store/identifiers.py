"""Current resources by identifier, many values at once (the conditional-write fast path).

A transaction Bundle from HL7 or CDA mapping carries one ``identifier=system|value``
condition per entry (ifNoneExist, conditional PUT; FHIR R4 http.html#ccreate,
bundle.html#transaction); answering them with one statement per type and system
instead of one search per entry is what makes bulk ingestion fast.  The FHIR
layer asks through :meth:`hutong.store.repository.Writer.current_by_identifier`
and holds no SQL and no dialect knowledge (issue 13, item 1); the statements and
their planner hints live here.

SQLite: the join starts from the token index (``CROSS JOIN`` fixes SQLite's join
order, https://sqlite.org/optoverview.html#crossjoin) and the tag exclusion uses
the index on ``res_pk`` (``INDEXED BY``) whatever the planner's statistics say:
a database never ANALYZEd would otherwise scan every resource of the type.
The value list is one JSON parameter (``json_each``); PostgreSQL takes an array
(``= ANY``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from hutong.store.repository import Stored
from hutong.store.rows import stored_of

if TYPE_CHECKING:
    from hutong.store.sql import SqlWriter

# Constant statements: no SQL is assembled from values.
_SQLITE = (
    "SELECT t.code, r.pk, r.type, r.fhir_id, r.version, r.last_updated, r.deleted, r.method, r.body "
    "FROM idx_token t CROSS JOIN resource r ON r.pk = t.res_pk "
    "WHERE t.param_id = ? AND t.system = ? AND t.code IN (SELECT value FROM json_each(?)) "
    "AND r.type = ? AND r.deleted = 0")
_PG = (
    "SELECT t.code, r.pk, r.type, r.fhir_id, r.version, r.last_updated, r.deleted, r.method, r.body "
    "FROM idx_token t JOIN resource r ON r.pk = t.res_pk "
    "WHERE t.param_id = ? AND t.system = ? AND t.code = ANY(?) AND r.type = ? AND r.deleted = 0")
_WITHOUT_TAG_SQLITE = (
    "SELECT t.code, r.pk, r.type, r.fhir_id, r.version, r.last_updated, r.deleted, r.method, r.body "
    "FROM idx_token t CROSS JOIN resource r ON r.pk = t.res_pk "
    "WHERE t.param_id = ? AND t.system = ? AND t.code IN (SELECT value FROM json_each(?)) "
    "AND r.type = ? AND r.deleted = 0 AND NOT EXISTS (SELECT 1 FROM idx_token g INDEXED BY ix_idx_token_r "
    "WHERE g.res_pk = r.pk AND g.param_id = ? AND g.code = ? AND g.system = ?)")
_WITHOUT_TAG_PG = (
    "SELECT t.code, r.pk, r.type, r.fhir_id, r.version, r.last_updated, r.deleted, r.method, r.body "
    "FROM idx_token t JOIN resource r ON r.pk = t.res_pk "
    "WHERE t.param_id = ? AND t.system = ? AND t.code = ANY(?) AND r.type = ? AND r.deleted = 0 "
    "AND NOT EXISTS (SELECT 1 FROM idx_token g WHERE g.res_pk = r.pk "
    "AND g.param_id = ? AND g.code = ? AND g.system = ?)")


def current_by_identifier(w: SqlWriter, type: str, system: str, values: list[str], *,
                          without_tag: tuple[str, str] | None = None) -> dict[str, list[Stored]]:
    """value -> the current resources of ``type`` holding identifier ``system|value``,
    ordered by pk; resources carrying the tag ``without_tag`` (system, code) left out."""
    repo = w.repo
    pg = repo.db.dialect == "postgresql"
    pid = repo.param_ids.get((type, "identifier"), -1)
    # Protected identifiers are stored as blind-index digests (hutong.security.blindindex).
    stored = {repo.compiler.token_code(type, "identifier", system, v): v for v in values}
    codes = list(stored)
    args: tuple[Any, ...] = (pid, system, codes if pg else orjson.dumps(codes).decode(), type)
    if without_tag is not None:
        sql = _WITHOUT_TAG_PG if pg else _WITHOUT_TAG_SQLITE
        args += (repo.param_ids.get((type, "_tag"), -1), without_tag[1], without_tag[0])
    else:
        sql = _PG if pg else _SQLITE
    found: dict[str, dict[int, Stored]] = {v: {} for v in values}
    for r in w.execute(sql, args).fetchall():
        found[stored[r[0]]].setdefault(r[1], stored_of(r[1:], repo.codec))
    return {v: [found[v][pk] for pk in sorted(found[v])] for v in values}
