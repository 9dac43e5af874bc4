"""Data residency: where a storage or export target is, and whether it may be used.

Health data are sensitive personal information (PIPL art. 28) and "important
data" under the Data Security Law; the 2018 national health big-data notice
requires them to be stored on servers inside China and assessed before any
transfer out (cross-border: PIPL arts. 38-40).  So before the platform opens a
database or writes an export it asks :func:`check_target`, which answers the
target's region or refuses:

- local disk (``sqlite:///path``, ``file:///path``, a plain path) and loopback
  or private (RFC 1918 / ULA / link-local) hosts are where the platform runs:
  ``storage_region``;
- ``postgresql://host/...`` and ``https://host/...``: the host's region from
  ``HUTONG_REGION_MAP`` (``host=REGION`` exact, ``.suffix=REGION`` for a
  domain and its subdomains, ``CIDR=REGION`` for addresses; the longest
  match wins), e.g. ``HUTONG_REGION_MAP=".bjhealth.cn=CN,db.internal=CN"``;
- ``s3://bucket/...?region=cn-north-1`` (also ``oss://``): the cloud region
  name; ``cn-*`` is CN, ``us-*`` US, any other name stands for itself (``AP-EAST-1``);
- anything else, or a host nobody mapped, is refused as "region unknown":
  the check fails closed.  A ``.cn`` name is not assumed to be in China (a
  domain says nothing about where its servers are), so it needs a mapping too.

The function is pure (its inputs are the URL, the settings and the map) and
cheap (no DNS look-up: a name is judged by configuration, never by where it
happens to resolve today).  Messages name the target with any user:password
removed and list the allowed regions.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from urllib.parse import parse_qs, urlsplit

from hutong.errors import ConfigError
from hutong.security.settings import SecuritySettings

REGION_MAP_ENV = "HUTONG_REGION_MAP"
LOCAL_SCHEMES = ("file", "sqlite")
HOST_SCHEMES = ("postgresql", "postgres", "https", "http")
BUCKET_SCHEMES = ("s3", "oss")
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def parse_region_map(text: str) -> dict[str, str]:
    """``"host=CN,.suffix=CN,10.0.0.0/8=CN"`` -> ``{"host": "CN", ...}`` (keys lower-case)."""
    out: dict[str, str] = {}
    for part in text.split(","):
        key, sep, region = part.strip().partition("=")
        if not sep or not key.strip() or not region.strip():
            if part.strip():
                raise ConfigError("HT-0162", f"{REGION_MAP_ENV}: entry {part.strip()[:60]!r} is not "
                                             "host-or-suffix=REGION")
            continue
        out[key.strip().lower()] = region.strip().upper()
    return out


def region_map_from_env() -> dict[str, str]:
    return parse_region_map(os.environ.get(REGION_MAP_ENV, ""))


def redact(url: str) -> str:
    """The URL without user:password (safe to show in a message or a log)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparsable URL)"
    if "password=" in parts.query.lower():
        # libpq also takes the password as a query parameter.
        q = "&".join(kv for kv in parts.query.split("&") if not kv.lower().startswith("password="))
        parts = parts._replace(query=q)
        url = parts.geturl()
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"***@{host}" + (f":{port}" if port is not None else "")
    return parts._replace(netloc=netloc).geturl()


def _refuse_unknown(url: str, why: str, allowed: tuple[str, ...], purpose: str) -> ConfigError:
    return ConfigError("HT-0161", f"{purpose} target {redact(url)}: region unknown ({why}); "
                                  f"allowed regions: {', '.join(allowed)}. Map the host in "
                                  f"{REGION_MAP_ENV} (host=REGION or .suffix=REGION) if it is inside them")


def host_region(host: str, region_map: Mapping[str, str], storage_region: str) -> str | None:
    """The region of a host name or address; None when nothing says where it is."""
    h = host.strip("[]").lower().rstrip(".")
    if not h or h in LOOPBACK_NAMES or h.endswith(".localhost"):
        return storage_region
    try:
        addr = ipaddress.ip_address(h)
    except ValueError:
        addr = None
    if addr is not None:
        if addr.is_loopback or addr.is_private or addr.is_link_local:
            return storage_region
        best: tuple[int, str] | None = None
        for key, region in region_map.items():
            if "/" in key or key == h:
                try:
                    net = ipaddress.ip_network(key, strict=False)
                except ValueError:
                    continue
                if addr in net and (best is None or net.prefixlen > best[0]):
                    best = (net.prefixlen, region)
        return best[1] if best else None
    if h in region_map:
        return region_map[h]
    # Longest matching ".suffix": a more specific mapping overrides a broader one.
    best_len, found = -1, None
    for key, region in region_map.items():
        if key.startswith(".") and (h.endswith(key) or h == key[1:]) and len(key) > best_len:
            best_len, found = len(key), region
    return found


def cloud_region(name: str) -> str:
    """Cloud region names (AWS ``cn-north-1``, Alibaba ``cn-hangzhou``): ``cn-*`` is mainland
    China, ``us-*`` the United States; any other name stands for itself (``AP-EAST-1``), so it
    is allowed only if listed as such."""
    n = name.strip().lower()
    for prefix, region in (("cn-", "CN"), ("us-", "US")):
        if n.startswith(prefix):
            return region
    return n.upper()


def check_target(url: str, settings: SecuritySettings | None = None, purpose: str = "storage", *,
                 region_map: Mapping[str, str] | None = None) -> str:
    """The region of storage or export target ``url``, or ConfigError if it is
    outside ``settings.allowed_regions`` (HT-0160), unknown (HT-0161) or not a
    target this check understands (HT-0162).

    ``region_map`` defaults to ``HUTONG_REGION_MAP`` from the environment.
    """
    s = settings or SecuritySettings()
    allowed = tuple(r.upper() for r in s.allowed_regions)
    rmap = region_map_from_env() if region_map is None else {k.lower(): v.upper() for k, v in region_map.items()}
    local = s.storage_region.upper()
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        raise ConfigError("HT-0162", f"{purpose} target is not a valid URL") from None
    scheme = parts.scheme.lower().split("+", 1)[0]  # postgresql+psycopg -> postgresql
    region: str | None
    if scheme == "" or (len(scheme) == 1 and url[1:2] == ":"):
        region = local  # a plain path (or a Windows drive letter)
    elif scheme in LOCAL_SCHEMES:
        # file://host/path names a file on another machine: judge the host.
        region = host_region(parts.hostname or "", rmap, local) if scheme == "file" else local
        if region is None:
            raise _refuse_unknown(url, f"host {parts.hostname} is not mapped", allowed, purpose)
    elif scheme in HOST_SCHEMES:
        try:
            host = parts.hostname or ""
        except ValueError:
            raise ConfigError("HT-0162", f"{purpose} target {redact(url)}: invalid host") from None
        if not host and scheme.startswith("postgres"):
            # postgresql:///db or ?host=/run/postgresql: a Unix socket (this machine);
            # ?host=name (libpq's other spelling) is judged like a host in the authority.
            qhost = (parse_qs(parts.query).get("host") or [""])[0]
            host = "" if qhost.startswith("/") else qhost
        if not host and scheme.startswith("http"):
            raise ConfigError("HT-0162", f"{purpose} target {redact(url)}: no host")
        region = host_region(host, rmap, local)
        if region is None:
            raise _refuse_unknown(url, f"host {host} is not mapped", allowed, purpose)
    elif scheme in BUCKET_SCHEMES:
        names = parse_qs(parts.query).get("region") or []
        if not names or not names[0].strip():
            raise _refuse_unknown(url, "no ?region= given for the bucket", allowed, purpose)
        region = cloud_region(names[0])
    else:
        raise ConfigError("HT-0162", f"{purpose} target {redact(url)}: scheme {scheme!r} is not a known "
                                     "storage or export target (file, sqlite, postgresql, https, s3, oss); "
                                     f"allowed regions: {', '.join(allowed)}")
    if region not in allowed:
        raise ConfigError("HT-0160", f"{purpose} target {redact(url)} is in region {region}, outside the "
                                     f"allowed regions ({', '.join(allowed)}): personal health data stay "
                                     "inside them (PIPL art. 38-40, Data Security Law art. 31)")
    return region
