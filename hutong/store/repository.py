"""The Repository interface every layer above the store programs against.

Issue 13 item 1: nothing outside ``hutong/store/`` and the composition root
(``hutong/platform.py``) names the SQL classes (``SqlRepository``, ``SqlWriter``,
``Database``); everything else takes these Protocols, which
``hutong.store.sql`` implements (mypy checks it where platform.py builds one).
The per-package data-access modules narrow a Writer/Repository to the SQL
classes with ``hutong.store.sql.sql_writer``/``sql_repository``; they are the
only modules allowed SQL text (tests/test_layering.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from hutong.store.codec import Codec
from hutong.store.context import WriteContext
from hutong.store.query import Include, Query

T = TypeVar("T")
IndexRow = tuple[str, str, tuple[Any, ...]]  # (ptype, param name, values)
Prepared = tuple[list[IndexRow], set[str]]  # index rows and compartment patient ids


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


class Indexer(Protocol):
    """What the FHIR layer tells the store about search parameters (injected)."""

    def params(self) -> Iterable[tuple[str, str, str]]: ...  # (type, name, ptype)

    def index(self, type: str, resource: dict[str, Any]) -> tuple[list[IndexRow], set[str]]:
        """Index rows and the ids of the patients whose compartment holds the resource."""
        ...


def compartment_of(indexer: Indexer, type: str, resource: dict[str, Any]) -> set[str]:
    """The patient compartments of a resource: the indexer's cheap path when it
    has one (``compartment``), else from full indexing."""
    fast = getattr(indexer, "compartment", None)
    if fast is not None:
        found: set[str] = fast(type, resource)
        return found
    return indexer.index(type, resource)[1]


class DatabaseHandle(Protocol):
    """What callers outside the store may know of the database behind a
    repository: where it is, its dialect, and its lifetime (never a connection)."""

    @property
    def url(self) -> str: ...

    @property
    def dialect(self) -> str: ...  # "sqlite" | "postgresql"

    def relaxed_durability(self) -> AbstractContextManager[None]:
        """Commits inside run at SQLite synchronous=NORMAL (fsynced by the
        checkpointer within a second); read-request audit rows only."""
        ...

    def sync_relaxed(self) -> None: ...

    def close(self) -> None: ...


class WriteHook(Protocol):
    """Code that must run inside the same transaction as a write of some type.

    The identity layer links every Patient write to its person this way, so
    REST, transactions, bulk import and HL7 all pass through it (DESIGN.md:
    nothing reaches the store around it).  Called before the row is written;
    ``resource`` is None for a delete.  Returns True when it changed
    ``resource`` (index rows computed elsewhere must then be recomputed).
    """

    types: frozenset[str]

    def on_write(self, w: Writer, type: str, id: str, resource: dict[str, Any] | None,
                 current: Stored | None) -> bool: ...


class Writer(Protocol):
    """Operations inside one all-or-nothing write transaction."""

    # The transaction's typed state (who it acts for, what the write stages note).
    ctx: WriteContext

    @property
    def repo(self) -> Repository:
        """The repository this transaction writes to (its hooks, codec, clock)."""
        ...

    @property
    def now(self) -> int:
        """The transaction's clock reading (epoch ms): every row it writes carries it."""
        ...

    def read_current(self, type: str, id: str, *, lock: bool = False) -> Stored | None: ...

    # ``hooks=False`` only for the write stages' own rows (a golden record the
    # identity stage writes must not be matched as a source of itself).
    def insert(self, type: str, id: str, resource: dict[str, Any], *, method: str = "POST",
               hooks: bool = True) -> Stored: ...

    def insert_many(self, items: list[tuple[str, str, dict[str, Any]]], *, method: str = "POST",
                    prepared: Any = None, hooks: bool = True) -> list[Stored]: ...

    def replace(self, current: Stored, resource: dict[str, Any], *, hooks: bool = True) -> Stored: ...

    def delete(self, current: Stored, *, hooks: bool = True) -> Stored: ...

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
    """What the layers above need from storage; hutong.store.sql.SqlRepository implements it
    (checked by mypy in hutong.platform)."""

    @property
    def db(self) -> DatabaseHandle: ...

    @property
    def codec(self) -> Codec:
        """Seals bodies and sealed columns at rest (AES-GCM once keys are configured)."""
        ...

    @property
    def indexer(self) -> Indexer: ...

    @property
    def hooks(self) -> list[WriteHook]:
        """The write stages installed on this repository, in order (the composition
        root and the policy's ``install`` put them there)."""
        ...

    @property
    def actor(self) -> object | None:
        """Whom this handle's writes act for (:meth:`acting_as`); None: nobody."""
        ...

    def clock(self) -> int:
        """Epoch milliseconds (injected: tests run the platform at a fixed time)."""
        ...

    def acting_as(self, actor: object) -> Repository:
        """This repository, its writes acting for ``actor`` (one request's or job's policy)."""
        ...

    def view(self, w: Writer) -> Repository:
        """This repository reading through an open write transaction (sees its writes)."""
        ...

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

    def existing_ids(self, type: str, ids: list[str], w: Writer | None = None) -> set[str]: ...

    def analyze(self) -> None: ...
