"""Rewriting the search index of stored resources in place (no new versions).

What key-management jobs need (hutong.security.blindindex: digests replacing
clear index values, clinical text sealed): scan current resources in pk order,
and replace some of one resource's index rows in a write.  The index tables are
the store's (hutong.store.schema), so their SQL lives here (issue 13, item 1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

from hutong.store.repository import Repository, Writer
from hutong.store.sql import sql_repository, sql_writer


def param_ids(repo: Repository) -> dict[tuple[str, str], int]:
    """The store's small id of every (type, search parameter) it indexes: the
    index rows a job rewrites name their parameter by it."""
    return dict(sql_repository(repo).param_ids)


def resources_after(repo: Repository, after_pk: int, limit: int,
                    types: Sequence[str] | None = None) -> list[tuple[int, str, bytes]]:
    """(pk, type, stored body) of the current resources with pk > ``after_pk``
    (of ``types`` when given), in pk order; the body as stored (codec-encoded)."""
    if types:
        rows = sql_repository(repo).query(
            f"SELECT pk, type, body FROM resource WHERE pk > ? AND deleted = 0 AND type IN ({','.join('?' * len(types))}) "  # noqa: S608
            "ORDER BY pk LIMIT ?", (after_pk, *types, limit))
    else:
        rows = sql_repository(repo).query("SELECT pk, type, body FROM resource WHERE pk > ? AND deleted = 0 ORDER BY pk LIMIT ?",
                          (after_pk, limit))
    return [(int(pk), str(t), bytes(body)) for pk, t, body in rows]


def replace_index_rows(w: Writer, pk: int, rows: Iterable[tuple[str, int, tuple[Any, ...]]], *,
                       string_params: Sequence[int], token_params: Sequence[int] | None) -> None:
    """Delete resource ``pk``'s string rows of ``string_params`` and token rows of
    ``token_params`` (None: every token row), then insert ``rows``: (index type
    "string" | "token", param id, the row's values)."""
    if token_params is None:
        sql_writer(w).execute("DELETE FROM idx_token WHERE res_pk = ?", (pk,))
    elif token_params:
        sql_writer(w).execute(f"DELETE FROM idx_token WHERE res_pk = ? AND param_id IN ({','.join('?' * len(token_params))})",  # noqa: S608
                  (pk, *token_params))
    if string_params:
        sql_writer(w).execute(f"DELETE FROM idx_string WHERE res_pk = ? AND param_id IN ({','.join('?' * len(string_params))})",  # noqa: S608
                  (pk, *string_params))
    for ptype, pid, row in rows:
        if ptype == "string":
            sql_writer(w).execute("INSERT INTO idx_string (res_pk, param_id, norm, exact) VALUES (?, ?, ?, ?)", (pk, pid, *row))
        elif ptype == "token":
            sql_writer(w).execute("INSERT INTO idx_token (res_pk, param_id, system, code, text) VALUES (?, ?, ?, ?, ?)",
                      (pk, pid, *row))


def rebuild(repo: Repository, *, types: Sequence[str] | None = None, batch: int = 500,
            progress: Callable[[int], None] | None = None) -> int:
    """Every current resource's search index and compartments (of ``types``, or
    all) made again by the repository's indexer, ``batch`` resources a
    transaction, without new versions; returns how many.

    What a release that adds or corrects search parameters needs for the
    resources stored before it (the index is written with each write, so the
    new parameters find only what was written since: ``hutong index rebuild``).
    Each batch is all-or-nothing; a run stopped half-way is resumed by running
    it again (re-indexing a resource twice changes nothing)."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    n = 0
    after = 0
    while True:
        rows = resources_after(repo, after, batch, types)
        if not rows:
            return n
        after = rows[-1][0]
        with repo.write() as w:
            sw = sql_writer(w)
            for pk, type, body in rows:
                sw.reindex(pk, type, orjson.loads(repo.codec.decode(body)))
        n += len(rows)
        if progress is not None:
            progress(n)
