"""The Repository interface every layer above the store programs against."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from hutong.store.context import WriteContext
from hutong.store.query import Include, Query

T = TypeVar("T")


@dataclass(slots=True)
class Stored:
    """One version of one resource as stored.  ``body`` is the JSON with meta set."""

    type: str
    id: str
    version: int
    last_updated: int  # epoch ms
    deleted: bool
    method: str
    body: bytes | None
    pk: int = 0


@dataclass(slots=True)
class SearchPage:
    matches: list[Stored]
    includes: list[Stored]
    total: int | None
    next_cursor: Any | None
    prev_cursor: Any | None


class Writer(Protocol):
    """Operations inside one all-or-nothing write transaction."""

    # The transaction's typed state (who it acts for, what the write stages note).
    ctx: WriteContext

    def read_current(self, type: str, id: str, *, lock: bool = False) -> Stored | None: ...

    def insert(self, type: str, id: str, resource: dict[str, Any], *, method: str = "POST") -> Stored: ...

    def insert_many(self, items: list[tuple[str, str, dict[str, Any]]], *, method: str = "POST",
                    prepared: Any = None) -> list[Stored]: ...

    def replace(self, current: Stored, resource: dict[str, Any]) -> Stored: ...

    def delete(self, current: Stored) -> Stored: ...

    def search_ids(self, query: Query, limit: int) -> list[Stored]: ...

    def lock_key(self, key: str) -> None: ...

    def current_by_identifier(self, type: str, system: str, values: list[str], *,
                              without_tag: tuple[str, str] | None = None) -> dict[str, list[Stored]]:
        """Identifier lookup for conditional writes (``identifier=system|value``
        for many values in one statement): value -> current resources of
        ``type`` holding it, ordered by pk; those tagged ``without_tag``
        (system, code) left out.  Take :meth:`lock_key` first, as a search would."""
        ...


class Repository(Protocol):
    """What the FHIR layer needs from storage; hutong.store.sql.SqlRepository implements it
    (checked by mypy in hutong.fhir.assembly)."""

    def transact(self, fn: Callable[[Writer], T]) -> T: ...

    def write(self) -> AbstractContextManager[Writer]: ...

    def read(self, type: str, id: str) -> Stored | None: ...

    def vread(self, type: str, id: str, version: int) -> Stored | None: ...

    def history(self, type: str | None, id: str | None, *, since: int | None, count: int,
                before: tuple[int, int, int] | None = None) -> list[Stored]: ...

    def search(self, query: Query) -> SearchPage: ...

    def count(self, query: Query) -> int: ...

    def include(self, page: list[Stored], includes: list[Include]) -> list[Stored]: ...

    def everything(self, patient_ids: list[str], *, types: tuple[str, ...] | None, since: int | None,
                   after_pk: int, count: int) -> tuple[list[Stored], bool]: ...

    def fetch(self, refs: Iterable[tuple[str, str]]) -> list[Stored]: ...

    def existing_ids(self, type: str, ids: list[str], w: Any = None) -> set[str]: ...

    def analyze(self) -> None: ...
