"""Who an HL7 v2 sender is: the MLLP entry point's authentication.

MLLP carries no credentials (HL7 v2.x Appendix C: framing only), so a message is
accepted only from a network address in ``SecuritySettings.mllp_allow``
(loopback by default; in production the hospitals' VPN or leased-line
ranges, or a TLS-terminating proxy on loopback).  The sender is then the
registered institution named in MSH-4, and the message is written under that
institution's policy: it may create and update only its own patients'
records (hutong.security.policy), exactly like its OAuth2 client would.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from hutong.errors import Forbidden
from hutong.ingest.pipeline import Authorise, Institution
from hutong.security.policy import Access
from hutong.security.principal import Principal, Role
from hutong.security.settings import SecuritySettings
from hutong.store.sql import SqlRepository

MLLP_SCOPES = ("system/*.cru",)  # registrations, results and merges; never a read over MLLP


def _allowed(peer: str | None, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """``peer`` is "host:port" as the listener records it (IPv6 hosts unbracketed)."""
    if not peer:
        return False
    host = peer.rsplit(":", 1)[0].strip("[]")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(addr in n for n in networks)


def mllp_authoriser(repo: SqlRepository, settings: SecuritySettings,
                    clock: Callable[[], int] | None = None) -> Authorise:
    networks = [ipaddress.ip_network(n, strict=False) for n in settings.mllp_allow]

    def authorise(inst: Institution, peer: str | None) -> Access:
        if not _allowed(peer, networks):
            raise Forbidden("HT-0104", "this network address may not send HL7 messages (HUTONG_MLLP_ALLOW)")
        principal = Principal(account_id=f"mllp:{inst.code}", role=Role.INSTITUTION,
                              display=f"HL7 interface of {inst.code}", scopes=MLLP_SCOPES,
                              organization=inst.code, organization_id=inst.organization_id, peer=peer)
        if clock is not None:
            return Access(repo, principal, settings, clock=clock)
        return Access(repo, principal, settings)

    return authorise
