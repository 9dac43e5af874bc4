"""The typed state of one write transaction, shared by its write stages.

Carried by the store's writer (:class:`hutong.store.sql.SqlWriter`, the
:class:`~hutong.store.repository.Writer` Protocol's ``ctx``) and read by the
write hooks: the policy (hutong.security.guard, write_policy) and the MPI
linker (hutong.mpi.service).  Kept apart from the SQL so the layers above
program against the Protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class WriteContext:
    """The typed state one write transaction shares between its write stages
    (hooks run in order: authorise -> label -> link identity -> index), instead
    of untyped scratch keys.  A fresh one per transaction: each call of
    :meth:`SqlRepository.transact` (also inside a group commit's shared
    transaction, where each call is its own savepoint) and each
    :meth:`SqlRepository.write`.

    ``actor`` is the caller the transaction acts for, bound with
    :meth:`SqlRepository.acting_as` (a :class:`hutong.security.policy.Access`;
    the store only carries it).  None means nobody: the policy stage refuses
    every resource write then (issue 13: no "unset means trusted").
    """

    actor: object | None = None
    # authorise (hutong.security.policy): registrations this transaction creates
    # (Patient id -> owner Organization id), and owners moved by $transfer.
    pending_owners: dict[str, str] = field(default_factory=dict)
    transfers: dict[str, str] = field(default_factory=dict)
    # link identity (hutong.mpi.service): Patients written in this transaction
    # whose rows are not visible yet (id -> body), and a counter for new ids.
    unlinked: dict[str, dict[str, Any]] = field(default_factory=dict)
    link_seq: int = 0
    # Patients whose records this transaction wrote (their persons go on the audit row).
    written_patients: set[str] = field(default_factory=set)
