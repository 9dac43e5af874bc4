"""The policy on the store's write path, bound to each request's caller.

Every entry point acts as an explicit principal (DESIGN.md trust model; issue
13): the HTTP gate builds the request's :class:`Access` and the FHIR service
writes through ``repo.acting_as(access)`` (:func:`bind`); an MLLP or CDA message
is written as its authenticated sender (a dead-letter retry as the sender on
record, hutong.ingest.acting); the command line, bulk import and the demo
loader as the local operator (:func:`as_operator`; any other principal a job
acts as: :func:`as_principal`).  The MPI's own golden-record writes run inside
an authorised transaction or as checked stewardship, with the write stages
off (``hooks=False``).  The Access travels in the transaction's typed context
(:class:`~hutong.store.context.WriteContext`), never in
ambient state, and a resource write with no principal is refused (HT-0350):
nothing is trusted for being unset.

The :class:`PolicyGuard` write hook then checks every insert, replace and
delete against that Access *inside the transaction*, whatever path produced
it: REST, transaction and batch bundles, conditional writes, bulk import, HL7
and CDA mapping.  A refused write raises and the whole transaction rolls back
(all-or-nothing).  Ownership is judged from what is stored, never from what
the write claims (issue 12): the owner of an existing registration, the
patients of the record a write replaces (or of its last version, when it
re-creates a deleted id), the institution that registered a Practitioner.
The policy may also stamp what it accepts (a registration's owner when left
out, ``entered-by|clinician`` on a clinician's Encounter, the registrar of an
institution's Practitioner); the hook then returns True so index rows
computed elsewhere are recomputed.
"""

from __future__ import annotations

from typing import Any

from hutong.errors import Forbidden
from hutong.security import consent_authors
from hutong.security.policy import Access
from hutong.security.policy_store import mpi_of
from hutong.security.principal import LOCAL_OPERATOR, Principal
from hutong.security.sensitivity import SensitivityLabeler
from hutong.security.settings import SecuritySettings
from hutong.store.repository import Repository, Stored, Writer
from hutong.store.sql import compartment_of


def access_in(w: Writer) -> Access | None:
    """The Access a write transaction acts for (None: nobody): the one its
    repository handle was bound to when the transaction opened."""
    actor = w.ctx.actor
    return actor if isinstance(actor, Access) else None


def bind(repo: Repository, access: Access) -> Repository:
    """``repo``, every write through it acting as ``access``'s caller."""
    return repo.acting_as(access)


def as_principal(repo: Repository, principal: Principal,
                 settings: SecuritySettings | None = None) -> Repository:
    """``repo`` acting as ``principal`` for a whole job (a command, a loader, a
    retry): its own Access, so the policy applies to the job as to a request."""
    return bind(repo, Access(repo, principal, settings or SecuritySettings(), mpi=mpi_of(repo)))


def as_operator(repo: Repository) -> Repository:
    """``repo`` acting as the operator at the machine's own command line
    (:data:`~hutong.security.principal.LOCAL_OPERATOR`: the platform's
    authority, every write audited under ``local-cli``).  For the CLI, the
    demo loader and tests that set up data directly."""
    return as_principal(repo, LOCAL_OPERATOR)


def no_principal() -> Forbidden:
    return Forbidden("HT-0350", "a write without a principal is refused: the entry point must act as someone "
                                "(a request's caller, a message's sender, or the operator: "
                                "hutong.security.guard.as_operator)")


class _EveryType(frozenset[str]):
    def __contains__(self, item: object) -> bool:
        return True


class PolicyGuard:
    """Write hook: scope and ownership of every write (hutong.security.policy)."""

    types: frozenset[str] = _EveryType()
    batchable = True  # checks each item alone; fine inside insert_many

    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    def on_write(self, w: Writer, type: str, id: str, resource: dict[str, Any] | None,
                 current: Stored | None) -> bool:
        access = access_in(w)
        if access is None:
            raise no_principal()
        interaction = "delete" if resource is None else \
            "create" if current is None or current.deleted else "update"
        access.require_scope(type, interaction)
        # The platform's writes are bound by scopes only: no compartment to compute
        # (bulk import writes millions of rows through here).
        patients = compartment_of(self.repo.indexer, type, resource) \
            if resource is not None and not access.unrestricted else set()
        stamped = access.check_write(w, type, id, resource, current, patients)
        consent_authors.record(w, access, type, id, resource, current)  # issue 12 F2/F6: who wrote each Consent
        access.trace.entity(f"{type}/{id}")
        return stamped


def install(repo: Repository) -> None:
    """Put the policy first among the repository's write hooks (before the MPI
    links a Patient) and the sensitivity labeller before anything indexes."""
    if any(isinstance(h, PolicyGuard) for h in repo.hooks):
        return
    repo.hooks.insert(0, SensitivityLabeler())
    repo.hooks.insert(0, PolicyGuard(repo))
