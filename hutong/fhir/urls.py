"""Request URLs relative to this server's base: absolute ``request.url`` in
bundles (bundle.html#transaction) and conditional criteria written with their
type (``Patient?identifier=...``, http.html#ccreate), as clients send them."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from hutong.errors import InvalidRequest

DEFAULT_PORTS = {"http": "80", "https": "443"}


def _authority(scheme: str, netloc: str) -> str:
    """host[:port] as compared: lower case, without user info, the scheme's default port dropped."""
    netloc = netloc.rpartition("@")[2].lower()
    host, port = netloc, ""
    if ":" in netloc.rpartition("]")[2]:
        host, _, port = netloc.rpartition(":")
    if port and DEFAULT_PORTS.get(scheme.lower()) == port:
        port = ""
    return f"{host}:{port}" if port else host


def relative_url(url: str, bases: Sequence[str]) -> str | None:
    """``url`` relative to the server's base, or None when it names another
    server.  A relative ``url`` stays as it is (without a leading slash).  The
    base is compared by host, port and path, not by scheme: behind a
    TLS-terminating proxy one server is https outside and http inside."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url.lstrip("/")
    for base in bases:
        b = urlsplit(base)
        if not b.netloc or _authority(parts.scheme, parts.netloc) != _authority(b.scheme, b.netloc):
            continue
        prefix = b.path.rstrip("/") + "/"
        if (parts.path + "/").startswith(prefix):
            rest = parts.path[len(prefix):]
            return rest + (f"?{parts.query}" if parts.query else "")
    return None


def criteria(type: str, query: str, bases: Sequence[str] = ()) -> str:
    """The search part of conditional criteria.  Clients write ifNoneExist and
    If-None-Exist as the query alone (``identifier=...``, as http.html#ccreate
    shows) or with the type in front (``Patient?identifier=...``, also
    ``[base]/Patient?...``); the type must be the request's own."""
    q = query.strip()
    head, sep, rest = q.partition("?")
    if not sep or "=" in head or "&" in head:
        return q  # no type in front ("?" may sit inside a value)
    named = relative_url(head, bases)
    if named is None or named.strip("/") != type:
        raise InvalidRequest("HT-0227", f"conditional criteria {q[:100]!r} name {head[:60]!r}, not {type}")
    return rest
