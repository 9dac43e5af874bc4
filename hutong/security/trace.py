"""What one request, message or job touched, and the one way it becomes an audit row.

The policy (:mod:`hutong.security.policy`) notes on a :class:`Trace` the
persons whose records were read, written or refused, the resources read or
written, the bases used (purposes) and a break-glass reason.  Every entry
point turns it into its :class:`~hutong.security.events.AuditRecord` with
:func:`to_audit_record`: the HTTP gate (hutong.web.gate), the HL7 and CDA
channels (hutong.ingest) and the command line, so a resident's access log
(谁看了我的档案) reads the same whichever door the access came through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from hutong.mpi.golden import PERSON_PREFIX
from hutong.security.events import SUCCESS, AuditRecord
from hutong.security.principal import Principal, Role
from hutong.store.repository import Stored

# Entities named on one audit row (the rest are counted by the request itself).
MAX_ENTITIES = 200

# When one request used several bases, the audit row names the strongest (the
# one that needed the most justification): what residents and auditors look for.
PURPOSE_ORDER = ("break-glass", "consent", "treatment", "delegate", "own-record", "own-institution", "identity",
                 "platform", "directory")


def primary_purpose(purposes: Iterable[str]) -> str | None:
    found = set(purposes)
    for p in PURPOSE_ORDER:
        if p in found:
            return p
    return None


@dataclass
class Trace:
    """What one caller's request (or message, or job) touched."""

    persons: set[str] = field(default_factory=set)       # golden person ids (or patient ids not linked yet)
    entities: list[str] = field(default_factory=list)    # "Type/id", the first MAX_ENTITIES
    purposes: set[str] = field(default_factory=set)      # bases used (policy.OWN_RECORD ... policy.DIRECTORY)
    reason: str | None = None                             # a break-glass claim's reason
    written: set[str] = field(default_factory=set)       # patients whose records were written (see settle)

    def entity(self, ref: str) -> None:
        if len(self.entities) < MAX_ENTITIES:
            self.entities.append(ref)

    def touched(self, stored: Iterable[Stored], purpose: str | None = None) -> None:
        for s in stored:
            self.entity(f"{s.type}/{s.id}")
        if purpose:
            self.purposes.add(purpose)

    def settle(self, person_of: Callable[[str], str | None]) -> None:
        """After the work: the persons of the patients it wrote (known only once
        the MPI has linked them, in the same transaction)."""
        for p in self.written:
            self.persons.add(p if p.startswith(PERSON_PREFIX) else (person_of(p) or p))
        self.written.clear()


def to_audit_record(trace: Trace | None, *, action: str, principal: Principal | None, outcome: str = SUCCESS,
                    interaction: str = "", query: str | None = None, code: str | None = None,
                    peer: str | None = None, claimed: str | None = None, purpose: str | None = None,
                    extra: dict[str, str] | None = None, time_ms: int | None = None) -> AuditRecord:
    """The audit row of one request, message or job (AuditEvent, auditevent.html).

    ``purpose`` is the strongest basis the trace used (:data:`PURPOSE_ORDER`);
    the given one only when the trace used none (e.g. a refused request).  A
    delegate's row names the person acted for (``on_behalf_of``).  Settle the
    trace first (:meth:`Trace.settle`) so the persons written are on it.
    """
    t = trace or Trace()
    return AuditRecord(
        action=action, outcome=outcome, principal=principal, claimed=claimed,
        on_behalf_of=principal.persons[0] if principal is not None and principal.role is Role.DELEGATE
        and principal.persons else None,
        persons=tuple(sorted(t.persons)), entities=tuple(t.entities[:MAX_ENTITIES]), interaction=interaction,
        query=query, purpose=primary_purpose(t.purposes) or purpose, reason=t.reason, code=code, peer=peer,
        time_ms=time_ms, extra=dict(extra or {}))
