"""Who is on the other end of one MLLP connection, as the listener established it.

MLLP itself carries no credentials (HL7 v2.x Appendix C: framing only), so a
sender is known by its connection: the TLS client certificate it presented,
or, for a transition period, the network address an operator mapped to one
institution (hutong.security.senders decides which).  The message's own
MSH-4 is a claim that must match this, never the source of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from hutong.ingest.envelope import CONFIGURED_ADDRESS, TLS_CERTIFICATE, UNAUTHENTICATED, Credential

__all__ = ["CONFIGURED_ADDRESS", "TLS_CERTIFICATE", "UNAUTHENTICATED", "Connection"]


@dataclass(frozen=True, slots=True)
class Connection:
    peer: str | None                 # "host:port" (IPv6 hosts unbracketed)
    institution: str | None = None   # institution code the connection authenticated as; None = not known
    method: str = UNAUTHENTICATED    # TLS_CERTIFICATE | CONFIGURED_ADDRESS | UNAUTHENTICATED
    credential: str | None = None    # certificate subject and SHA-256 fingerprint, or the mapped network (audit)

    @property
    def authenticated(self) -> bool:
        return self.institution is not None

    def as_credential(self) -> Credential:
        """What the envelopes of this connection's messages carry."""
        return Credential(self.method, self.institution, self.credential)
