"""The policy on the store's write path, and the request's acting Access.

Entry points (the HTTP middleware, the MLLP listener, the CDA route) run
their work inside :func:`acting`; the :class:`PolicyGuard` write hook then
checks every insert, replace and delete against that Access *inside the
transaction*, whatever path produced it: REST, transaction and batch bundles,
conditional writes, bulk import, HL7 and CDA mapping.  A refused write raises
and the whole transaction rolls back (all-or-nothing).  Ownership is judged
from what is stored, never from what the write claims (issue 12): the owner of
an existing registration, the patients of the record a write replaces (or of
its last version, when it re-creates a deleted id), the institution that
registered a Practitioner.  The policy may also stamp what it accepts (a
registration's owner when left out, ``entered-by|clinician`` on a clinician's
Encounter, the registrar of an institution's Practitioner); the hook then
returns True so index rows computed elsewhere are recomputed.

Without an acting Access the caller is trusted code running with the
operator's own credentials (the command line, tests of the internals); every
network entry point sets one, which the route enumeration test checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from hutong.security import consent_authors
from hutong.security.policy import Access
from hutong.security.sensitivity import SensitivityLabeler
from hutong.store.repository import Stored
from hutong.store.sql import SqlRepository, SqlWriter, compartment_of

_acting: ContextVar[Access | None] = ContextVar("hutong_acting", default=None)


def current() -> Access | None:
    return _acting.get()


@contextmanager
def acting(access: Access) -> Iterator[Access]:
    token = _acting.set(access)
    try:
        yield access
    finally:
        _acting.reset(token)


class _EveryType(frozenset[str]):
    def __contains__(self, item: object) -> bool:
        return True


class PolicyGuard:
    """Write hook: scope and ownership of every write (hutong.security.policy)."""

    types: frozenset[str] = _EveryType()
    batchable = True  # checks each item alone; fine inside insert_many

    def __init__(self, repo: SqlRepository) -> None:
        self.repo = repo

    def on_write(self, w: SqlWriter, type: str, id: str, resource: dict[str, Any] | None,
                 current: Stored | None) -> bool:
        access = _acting.get()
        if access is None:
            return False
        interaction = "delete" if resource is None else \
            "create" if current is None or current.deleted else "update"
        access.require_scope(type, interaction)
        patients = compartment_of(self.repo.indexer, type, resource) if resource is not None else set()
        stamped = access.check_write(w, type, id, resource, current, patients)
        consent_authors.record(w, access, type, id, resource, current)  # issue 12 F2/F6: who wrote each Consent
        if len(access.entities) < 200:
            access.entities.append(f"{type}/{id}")
        return stamped


def install(repo: SqlRepository) -> None:
    """Put the policy first among the repository's write hooks (before the MPI
    links a Patient) and the sensitivity labeller before anything indexes."""
    if any(isinstance(h, PolicyGuard) for h in repo.hooks):
        return
    repo.hooks.insert(0, SensitivityLabeler())
    repo.hooks.insert(0, PolicyGuard(repo))
