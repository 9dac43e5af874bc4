"""Data access for who wrote each Consent version (the ``consent_author`` table,
declared in hutong.security.consent_authors).

The only module that writes SQL for Consent authorship (issue 13, item 1: one
storage seam); what a Consent counts for stays in hutong.security.consent_authors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hutong.store.repository import Repository, Writer
from hutong.store.sql import sql_repository, sql_writer


@dataclass(frozen=True)
class Author:
    kind: str
    account_id: str
    organization_id: str | None
    own_refs: frozenset[str]
    acting_for: tuple[str, ...]
    documented: bool
    notified_ms: int | None


_COLS = "consent_id, version, kind, account_id, organization_id, own_refs, acting_for, documented, notified_ms"


def _author(r: Sequence[Any]) -> Author:
    return Author(str(r[2]), str(r[3]), str(r[4]) if r[4] is not None else None,
                  frozenset(str(r[5]).split()), tuple(str(r[6]).split(",")) if r[6] else (), bool(r[7]),
                  int(r[8]) if r[8] is not None else None)


def save(w: Writer, consent_id: str, version: int, author: Author, notified_ms: int | None,
         created_ms: int) -> None:
    """Record (or re-record, when a rolled-back write left it) who wrote this version."""
    sql_writer(w).execute("DELETE FROM consent_author WHERE consent_id = ? AND version = ?", (consent_id, version))
    sql_writer(w).execute("INSERT INTO consent_author (consent_id, version, kind, account_id, organization_id, own_refs, "
              "acting_for, documented, notified_ms, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
              (consent_id, version, author.kind, author.account_id, author.organization_id,
               " ".join(sorted(author.own_refs)), ",".join(author.acting_for) or None, int(author.documented),
               notified_ms, created_ms))


def author_in(w: Writer, consent_id: str, version: int) -> Author | None:
    """The author of one version, read inside the write transaction."""
    r = sql_writer(w).execute(f"SELECT {_COLS} FROM consent_author WHERE consent_id = ? AND version = ?",  # noqa: S608
                  (consent_id, version)).fetchone()
    return _author(r) if r else None


def authors_of(repo: Repository, versions: Mapping[str, int]) -> dict[str, Author]:
    """The author of each Consent's given (current) version, by Consent id
    (absent: no known author)."""
    want = dict(versions)
    out: dict[str, Author] = {}
    ids = sorted(want)
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        for r in sql_repository(repo).query(f"SELECT {_COLS} FROM consent_author WHERE consent_id IN ("  # noqa: S608
                            + ",".join("?" * len(chunk)) + ")", chunk):
            if want.get(str(r[0])) == int(r[1]):
                out[str(r[0])] = _author(r)
    return out
