"""Who an HL7 v2 sender is: the MLLP entry point's authentication.

MLLP carries no credentials (HL7 v2.x Appendix C: framing only), and MSH-4 is
whatever the sender typed, so a sender is known by its connection (issue 12,
finding 5; DESIGN "Trust model": senders are authenticated per connection,
MSH-4 must match):

- **TLS client certificates** (``HUTONG_MLLP_TLS_CERT`` / ``_KEY`` / ``_CA``):
  the listener speaks only TLS (1.2 or later) and the handshake demands a
  certificate issued by the operator's CA.  The certificate names its
  institution by a pinned SHA-256 fingerprint (``HUTONG_MLLP_CERTS``,
  ``fingerprint=code``) or, failing that, by its subject's
  organizationIdentifier (X.520 2.5.4.97, e.g. the 统一社会信用代码) or else
  serialNumber (2.5.4.5) -- exactly one code.  Use a CA that issues
  certificates only to the region's institutions (the region's own CA), or
  pin every certificate.
- **Configured addresses** (transition; ``HUTONG_MLLP_SENDERS``,
  ``network=code``): a plain-TCP peer whose address lies in networks mapped
  to exactly one institution is that institution.
- **Development** (``HUTONG_MLLP_DEV_LOOPBACK=1``): unauthenticated senders
  on a loopback address are taken at their MSH-4, as tests and the demo do.
  Without it, an unauthenticated sender is refused.

``HUTONG_MLLP_ALLOW`` stays a network filter in front of all of these; it
never says who sends.  The pipeline (hutong.ingest.pipeline) refuses a
message whose MSH-4 does not name the connection's institution with AR and
audits it; each accepted message is then written under that institution's
policy, exactly like its OAuth2 client would write.
"""

from __future__ import annotations

import hashlib
import ipaddress
import ssl
from collections.abc import Callable

from cryptography import x509
from cryptography.x509.oid import NameOID

from hutong.errors import ConfigError, Forbidden
from hutong.ingest.hl7v2.connection import CONFIGURED_ADDRESS, TLS_CERTIFICATE, Connection
from hutong.ingest.pipeline import Authorise, Institution
from hutong.security.policy import Access
from hutong.security.principal import Principal, Role
from hutong.security.settings import SecuritySettings
from hutong.store.repository import Repository

MLLP_SCOPES = ("system/*.cru",)  # registrations, results and merges; never a read over MLLP
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _host(peer: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``peer`` is "host:port" as the listener records it (IPv6 hosts unbracketed)."""
    if not peer:
        return None
    try:
        return ipaddress.ip_address(peer.rsplit(":", 1)[0].strip("[]"))
    except ValueError:
        return None


def _allowed(peer: str | None, networks: list[Network]) -> bool:
    addr = _host(peer)
    return addr is not None and any(addr in n for n in networks)


def _loopback(peer: str | None) -> bool:
    addr = _host(peer)
    return addr is not None and addr.is_loopback


# ------------------------------------------------------------------ configuration
def _pairs(entries: tuple[str, ...], setting: str) -> list[tuple[str, str]]:
    out = []
    for e in entries:
        key, sep, code = e.partition("=")
        if not sep or not key.strip() or not code.strip():
            raise ConfigError("HT-0193", f"{setting}: {e[:80]!r} is not KEY=INSTITUTION_CODE")
        out.append((key.strip(), code.strip()))
    return out


def certificate_pins(settings: SecuritySettings) -> dict[str, str]:
    """``HUTONG_MLLP_CERTS``: SHA-256 fingerprint of a client certificate (hex, colons
    allowed, optional ``sha256:``) -> institution code."""
    pins: dict[str, str] = {}
    for fp, code in _pairs(settings.mllp_certs, "HUTONG_MLLP_CERTS"):
        digest = fp.lower().removeprefix("sha256:").replace(":", "")
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ConfigError("HT-0193", f"HUTONG_MLLP_CERTS: {fp[:80]!r} is not a SHA-256 fingerprint")
        pins[digest] = code
    return pins


def sender_networks(settings: SecuritySettings) -> list[tuple[Network, str]]:
    """``HUTONG_MLLP_SENDERS``: network -> institution code (the transition mapping)."""
    out = []
    for net, code in _pairs(settings.mllp_senders, "HUTONG_MLLP_SENDERS"):
        try:
            out.append((ipaddress.ip_network(net, strict=False), code))
        except ValueError:
            raise ConfigError("HT-0193", f"HUTONG_MLLP_SENDERS: {net[:80]!r} is not a network") from None
    return out


def server_tls(settings: SecuritySettings) -> ssl.SSLContext | None:
    """The listener's TLS context (client certificates required), or None when TLS is not configured."""
    files = (settings.mllp_tls_cert, settings.mllp_tls_key, settings.mllp_tls_ca)
    if not any(files):
        return None
    if not all(files):
        raise ConfigError("HT-0193", "MLLP over TLS needs HUTONG_MLLP_TLS_CERT, HUTONG_MLLP_TLS_KEY and "
                                     "HUTONG_MLLP_TLS_CA (the CA that issued the institutions' certificates)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_cert_chain(str(settings.mllp_tls_cert), str(settings.mllp_tls_key))
        ctx.load_verify_locations(cafile=str(settings.mllp_tls_ca))
    except (OSError, ssl.SSLError) as e:
        raise ConfigError("HT-0193", f"MLLP TLS files unusable: {type(e).__name__}: {e}") from None
    return ctx


def require_sender_authentication(settings: SecuritySettings) -> str:
    """Checks the settings at start-up; returns how senders are authenticated
    (for the start-up line).  With no method configured the listener would
    refuse everybody, so ``hutong serve --mllp-port`` does not start."""
    tls = server_tls(settings)
    certificate_pins(settings)
    if tls is not None:
        return "TLS, client certificates required"
    if sender_networks(settings):
        return "plain TCP, senders by configured address (HUTONG_MLLP_SENDERS)"
    if settings.mllp_dev_loopback:
        return "DEVELOPMENT: unauthenticated loopback senders taken at their MSH-4 (HUTONG_MLLP_DEV_LOOPBACK)"
    raise ConfigError("HT-0193", "MLLP senders must be authenticated: configure TLS client certificates "
                                 "(--mllp-tls-cert/--mllp-tls-key/--mllp-tls-ca or HUTONG_MLLP_TLS_*) or, "
                                 "for a transition, HUTONG_MLLP_SENDERS=network=institution-code; "
                                 "HUTONG_MLLP_DEV_LOOPBACK=1 accepts unauthenticated loopback senders "
                                 "for development only")


# ------------------------------------------------------------------ per connection
def certificate_institution(der: bytes, pins: dict[str, str]) -> tuple[str | None, str]:
    """(institution code or None, credential text for the audit) of a verified client certificate."""
    fingerprint = hashlib.sha256(der).hexdigest()
    try:
        cert = x509.load_der_x509_certificate(der)
        subject = cert.subject.rfc4514_string()
    except ValueError:
        return None, f"unreadable certificate sha256:{fingerprint}"
    credential = f"{subject[:200]} sha256:{fingerprint}"
    if fingerprint in pins:
        return pins[fingerprint], credential
    for oid in (NameOID.ORGANIZATION_IDENTIFIER, NameOID.SERIAL_NUMBER):
        codes = {str(a.value).strip() for a in cert.subject.get_attributes_for_oid(oid)} - {""}
        if codes:
            return (codes.pop() if len(codes) == 1 else None), credential
    return None, credential


def connection_identifier(settings: SecuritySettings) -> Callable[[str, ssl.SSLObject | None], Connection]:
    """The listener's ``identify`` seam: the peer address and (over TLS) the
    verified session -> who this connection is."""
    pins = certificate_pins(settings)
    senders = sender_networks(settings)

    def identify(peer: str, tls: ssl.SSLObject | None) -> Connection:
        if tls is not None:
            der = tls.getpeercert(binary_form=True)
            if not der:
                return Connection(peer, None, TLS_CERTIFICATE, "no client certificate")
            code, credential = certificate_institution(der, pins)
            return Connection(peer, code, TLS_CERTIFICATE, credential)
        addr = _host(peer)
        if addr is not None:
            hits = [(n, c) for n, c in senders if addr in n]
            if hits and len({c for _n, c in hits}) == 1:
                return Connection(peer, hits[0][1], CONFIGURED_ADDRESS, ", ".join(str(n) for n, _c in hits))
        return Connection(peer)

    return identify


def mllp_authoriser(repo: Repository, settings: SecuritySettings,
                    clock: Callable[[], int] | None = None) -> Authorise:
    """The pipeline's ``authorise``: the Access a message is written under, or a refusal."""
    networks = [ipaddress.ip_network(n, strict=False) for n in settings.mllp_allow]

    def authorise(inst: Institution, conn: Connection) -> Access:
        if not _allowed(conn.peer, networks):
            raise Forbidden("HT-0104", "this network address may not send HL7 messages (HUTONG_MLLP_ALLOW)")
        if conn.institution is None:
            if conn.method == TLS_CERTIFICATE:
                raise Forbidden("HT-0192", "the client certificate names no institution (subject "
                                           "organizationIdentifier or serialNumber, or HUTONG_MLLP_CERTS)")
            if not (settings.mllp_dev_loopback and _loopback(conn.peer)):
                raise Forbidden("HT-0191", "unauthenticated sender: send over TLS with your institution's client "
                                           "certificate (or from an address configured in HUTONG_MLLP_SENDERS)")
        elif conn.institution != inst.code:
            # The pipeline refuses this before; kept so no caller can skip it.
            raise Forbidden("HT-0190", f"MSH-4 names {inst.code}, but the connection is {conn.institution}")
        principal = Principal(account_id=f"mllp:{inst.code}", role=Role.INSTITUTION,
                              display=f"HL7 interface of {inst.code}", scopes=MLLP_SCOPES,
                              organization=inst.code, organization_id=inst.organization_id, peer=conn.peer,
                              attributes={"sender_auth": conn.method})
        if clock is not None:
            return Access(repo, principal, settings, clock=clock)
        return Access(repo, principal, settings)

    return authorise
