"""What arrived and what became of it: the envelope every channel hands the
ingestor, and the receipt it hands back (issue 13, item 5).

A channel adapter (``hl7v2`` over MLLP, ``cda`` over HTTP or from a folder,
later ones) wraps the bytes it received in an :class:`Envelope` -- who the
transport says sent them (the :class:`Credential`: a TLS client certificate, a
configured address, a bearer token, the local command line), when and from
where.  :meth:`hutong.ingest.pipeline.Ingestor.receive` completes it with what
the message itself says (control id, kind, clinical event time, the claimed
institution) and answers with a :class:`Receipt`.  The pipeline builds no
acknowledgement: ``hl7v2.ack`` turns a receipt into an HL7 ACK and the web
layer into an HTTP status with an OperationOutcome, so every channel gets the
same decisions in its own terms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

HL7V2 = "hl7v2"
CDA = "cda"

# How the transport authenticated the sender (hutong.ingest.hl7v2.connection
# names the MLLP ones; DESIGN "Trust model": senders are authenticated per connection).
TLS_CERTIFICATE = "tls-certificate"
CONFIGURED_ADDRESS = "configured-address"
BEARER_TOKEN = "bearer-token"
LOCAL = "local"
UNAUTHENTICATED = "none"


@dataclass(frozen=True, slots=True)
class Credential:
    """Who the transport established the sender to be, before the message is read."""

    method: str = UNAUTHENTICATED       # one of the constants above
    institution: str | None = None      # institution code it authenticated as; None = not known
    description: str | None = None      # certificate subject + SHA-256, mapped network, token/client id (audit)


@dataclass(frozen=True, slots=True)
class Envelope:
    """One received message.  The adapter fills what the transport knows; the
    ingestor fills ``sender``, ``control_id``, ``kind``, ``event_time`` and
    ``claimed`` from the message (``dataclasses.replace``) before it is
    recorded, audited or answered."""

    channel: str                        # HL7V2 | CDA
    raw: bytes = field(repr=False)
    received: int                       # epoch ms (a retry keeps the first receipt's time: timeliness)
    peer: str | None = None             # "host:port", "file:NAME", None
    credential: Credential = Credential()
    sender: str = ""                    # registered institution the message is from ("" = not known)
    control_id: str = ""                # MSH-10 / CDA document id ("" = not readable)
    kind: str = ""                      # ADT^A04, ORU^R01, C0007 ...; "unparsed" / "frame" when unreadable
    event_time: int | None = None       # epoch ms of the clinical event (次日归集)
    claimed: str | None = None          # the institution the message names, when it is not the sender's
    retry_of: int | None = None         # inbox id of the dead letter this is a retry of
    retried_by: str | None = None       # account id of the operator who asked for the retry


class Outcome(StrEnum):
    STORED = "stored"          # written (and durably committed) now
    DUPLICATE = "duplicate"    # a resend of a stored message: nothing changed
    DEAD = "dead"              # kept raw as a dead letter with the reason (may be retried once fixed)
    REFUSED = "refused"        # the sender may not send this (authentication, ownership): never retried


@dataclass(frozen=True, slots=True)
class Location:
    """Where in the message the problem is (HL7 v2.5.1 ch. 2.15.5.2, ERR-2)."""

    segment: str
    field: int | None = None
    sequence: int = 1


@dataclass(frozen=True, slots=True)
class Receipt:
    """What became of one envelope.

    ``code`` is the stable HT code of the problem (or of the warning on a
    stored message, e.g. HT-0195 a merge waiting for review); ``condition`` the
    channel's own condition code where it has one (HL7 table 0357);
    ``resend`` False means the message must not be sent again unchanged (HL7
    AR: wrong type, version, charset, unknown sender)."""

    outcome: Outcome
    envelope: Envelope
    code: str | None = None
    reason: str | None = None
    references: tuple[str, ...] = ()    # "Type/id" of every resource written
    message_id: int | None = None       # the inbox row (when known)
    condition: str | None = None
    location: Location | None = None
    resend: bool = True
    forbidden: bool = False             # dead because the policy refused a write (audited as a refusal)

    @property
    def accepted(self) -> bool:
        return self.outcome in (Outcome.STORED, Outcome.DUPLICATE)

    @property
    def warning(self) -> str | None:
        """A note on an accepted message (it was stored, but ...)."""
        return self.reason if self.accepted else None

    def summary(self) -> dict[str, Any]:
        """The receipt as JSON (the CLI's output, the HTTP answer's body)."""
        out: dict[str, Any] = {"status": "ok" if self.accepted else self.outcome.value,
                               "outcome": self.outcome.value, "channel": self.envelope.channel,
                               "sender": self.envelope.sender, "control_id": self.envelope.control_id,
                               "type": self.envelope.kind}
        if self.message_id is not None:
            out["message"] = self.message_id
        if self.code is not None:
            out["code"] = self.code
        if self.reason is not None:
            out["reason"] = self.reason
        if self.accepted and self.reason is not None:
            out["warning"] = self.reason  # stored, but: the sender should fix this (and it counts as data quality)
        if self.accepted:
            out["documentReference"] = next((r for r in self.references if r.startswith("DocumentReference/")),
                                            None)
            out["resources"] = list(self.references)
        return out
