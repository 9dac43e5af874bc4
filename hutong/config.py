"""Settings: every ``HUTONG_*`` environment variable, in one typed place.

:data:`VARIABLES` is the registry: each variable the package reads, its
default and its meaning (the README's "Settings" table says the same, and
tests/test_settings_documented.py fails when a ``HUTONG_*`` name appears in
``hutong/`` without being registered here and documented there).  Code reads
a variable through :func:`env` (an unregistered name is refused, HT-0340) and
holds the result in a frozen dataclass read once at start: :class:`Settings`
(serving) and :class:`hutong.security.settings.SecuritySettings` (等保三级
policy numbers, keys, residency, MLLP senders).  Three are read below this
module, where importing it would point an arrow upwards: HUTONG_DATABASE_URL
(hutong.store.database.resolve_url), HUTONG_AUTO_MIGRATE (hutong.store.migrations),
HUTONG_MASTER_KEYS (hutong.security.keys) and HUTONG_REGION_MAP
(hutong.security.residency); they are registered here all the same.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from hutong.errors import ConfigError
from hutong.store.database import resolve_url


@dataclass(frozen=True)
class Variable:
    name: str
    default: str   # as an operator would write it ("" = unset)
    meaning: str


VARIABLES: tuple[Variable, ...] = (
    # --- serving (Settings)
    Variable("HUTONG_DATABASE_URL", "sqlite:///var/hutong.db",
             "the database (sqlite:///path or postgresql://...); --database wins"),
    Variable("HUTONG_BASE_URL", "", "public base of the FHIR API, for links and HSTS; unset: from each request"),
    Variable("HUTONG_MAX_BODY_BYTES", "16777216", "largest request body; larger ones get 413 (HT-0003)"),
    Variable("HUTONG_INLINE_READS", "1", "0: serve reads by id from the thread pool (a remote, slow database)"),
    Variable("HUTONG_TERMINOLOGY_DIR", "", "code systems the operator loaded (`hutong terminology load`); unset: "
             "terminology/ beside a SQLite database, else var/terminology"),
    Variable("HUTONG_AUTO_MIGRATE", "", "1: upgrade an older database schema when opened (else `hutong db upgrade`)"),
    Variable("HUTONG_LOG_FORMAT", "", "json or text: the logs' format (unset: json for `hutong serve`, text "
             "for the other commands); JSON lines carry the request id and no personal data"),
    Variable("HUTONG_LOG_LEVEL", "warning", "the server's log level; info adds one line per request (route "
             "template, status, duration, request id)"),
    Variable("HUTONG_METRICS_ADDRESS", "", "host:port of a separate /metrics listener (e.g. 127.0.0.1:9100); "
             "unset: /metrics on the app, for operator and platform accounts only"),
    Variable("HUTONG_MAX_IN_FLIGHT", "256", "requests one server worker takes at once; the next get 503 with "
             "Retry-After at once (HT-0560) instead of waiting until they time out; 0 = no limit"),
    Variable("HUTONG_STANDBY_DATABASE_URL", "", "PostgreSQL only: a hot standby (streaming replica) of the "
             "database for lag-tolerant reads (portal timelines and labs, the clinician's record pages, the "
             "commission's institutions dashboard); "
             "authorisation and audit stay on the primary; refused on SQLite (HT-0630)"),
    Variable("HUTONG_STANDBY_MAX_LAG_SECONDS", "10", "a standby further behind than this (or not answering) "
             "is not read from: the primary answers"),
    Variable("HUTONG_HR_PRICES", "", "price table (JSON, yuan per 互认 item) the 互认 dashboard values avoided "
             "examinations at; unset: hutong/cds/seed/prices.json"),
    # --- passwords and sessions
    Variable("HUTONG_PASSWORD_MIN_LENGTH", "8", "shortest staff password"),
    Variable("HUTONG_PASSWORD_MIN_CLASSES", "3", "character classes a password needs (lower, upper, digit, symbol)"),
    Variable("HUTONG_LOCKOUT_FAILURES", "5", "failed sign-ins of one username from one address before back-off"),
    Variable("HUTONG_LOCKOUT_MINUTES", "30", "longest sign-in back-off"),
    Variable("HUTONG_PASSWORD_MAX_AGE_DAYS", "0", "forced password rotation (0 = none; 90 is the usual choice)"),
    Variable("HUTONG_IDLE_TIMEOUT_MINUTES", "30", "a portal session ends after this long idle"),
    # --- tokens
    Variable("HUTONG_ACCESS_TOKEN_MINUTES", "15", "lifetime of an access token"),
    Variable("HUTONG_REFRESH_TOKEN_HOURS", "12", "lifetime of a refresh token"),
    Variable("HUTONG_ISSUER", "", "token issuer URL; unset: the request's base URL"),
    # --- policy
    Variable("HUTONG_TREATMENT_WINDOW_DAYS", "90", "how long an encounter or accepted referral is a treatment basis"),
    Variable("HUTONG_BREAK_GLASS_HOURS", "24", "how long a break-glass grant lasts"),
    Variable("HUTONG_SENSITIVE_LABELS", "PSY,HIV,SEX,ETH,SUD,STD", "sensitivity labels only a consent opens"),
    # --- audit
    Variable("HUTONG_AUDIT_RETENTION_DAYS", "180", "audit rows kept at least this long (at least 180)"),
    Variable("HUTONG_AUDIT_HEADS", "", "file of published signed audit heads; unset: <key dir>/audit-heads.ndjson"),
    Variable("HUTONG_AUDIT_HEAD_SECONDS", "300", "a signed audit head at most this often (the tail-cut window)"),
    Variable("HUTONG_NODE_ID", "", "this node's audit chain when several `hutong serve` share one database: 1-32 "
             "of a-z, 0-9, '-' (HT-0149), different on each node; unset: the one chain of a single node"),
    # --- keys, residency, SMS
    Variable("HUTONG_KEY_DIR", "", "key directory (0700), outside the database directory; unset: beside it"),
    Variable("HUTONG_MASTER_KEYS", "", "id1:base64,id2:base64 master keys instead of key files (last is current)"),
    Variable("HUTONG_KEY_COMMAND", "", "a KMS seam: a program (and its arguments) that prints the master keys as "
             "id:base64 lines, oldest first; wins over HUTONG_MASTER_KEYS and key files"),
    Variable("HUTONG_KEY_COMMAND_TIMEOUT", "10", "seconds HUTONG_KEY_COMMAND may take before it is killed (HT-0608)"),
    Variable("HUTONG_KEY_BACKUP_PASSPHRASE", "", "passphrase of `hutong keys backup` / `restore-backup` when no "
             "--passphrase-file is given and there is no terminal to ask on"),
    Variable("HUTONG_BACKUP_PASSPHRASE", "", "passphrase of `hutong backup --encrypt` / `hutong restore` of an "
             "encrypted backup when no --passphrase-file is given (else a prompt)"),
    Variable("HUTONG_ALLOWED_REGIONS", "CN", "regions where data may be stored or sent"),
    Variable("HUTONG_STORAGE_REGION", "CN", "region of this deployment's storage"),
    Variable("HUTONG_REGION_MAP", "", "host=REGION or .suffix=REGION pairs placing database and peer hosts"),
    Variable("HUTONG_SMS_OUTBOX", "", "the development SMS gateway's file; unset: <key dir>/sms-outbox.ndjson"),
    # --- MLLP senders
    Variable("HUTONG_MLLP_ALLOW", "127.0.0.1/32,::1/128", "networks that may connect to MLLP (a filter only)"),
    Variable("HUTONG_MLLP_TLS_CERT", "", "MLLP over TLS: the listener's certificate chain (PEM)"),
    Variable("HUTONG_MLLP_TLS_KEY", "", "MLLP over TLS: its private key (PEM)"),
    Variable("HUTONG_MLLP_TLS_CA", "", "CA that issued the institutions' client certificates"),
    Variable("HUTONG_MLLP_CERTS", "", "sha256:<hex>=<institution code> certificate pins"),
    Variable("HUTONG_MLLP_SENDERS", "", "network=<institution code> (transition, plain TCP)"),
    Variable("HUTONG_MLLP_DEV_LOOPBACK", "", "1: development only, unauthenticated loopback senders taken at MSH-4"),
    # --- the demo (hutong demo)
    Variable("HUTONG_DEMO_SIMULATE", "1", "0: `hutong demo` serves without its simulated hospitals (hutong simulate)"),
)
REGISTERED = frozenset(v.name for v in VARIABLES)


def env(name: str) -> str | None:
    """The value of a registered ``HUTONG_*`` variable (None when unset)."""
    if name not in REGISTERED:
        raise ConfigError("HT-0340", f"{name} is not a registered setting (hutong.config.VARIABLES)")
    return os.environ.get(name)


def env_int(name: str, default: int) -> int:
    v = env(name)
    if v is None or v.strip() == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise ConfigError("HT-0341", f"{name} must be a whole number, not {v[:40]!r}") from None


def env_flag(name: str, default: bool) -> bool:
    v = env(name)
    if v is None or v.strip() == "":
        return default
    return v.strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class Settings:
    """How this process serves (the security policy is SecuritySettings)."""

    database_url: str
    base_url: str | None = None  # public base of the FHIR API; None = derived from each request
    max_body_bytes: int = 16 * 1024 * 1024
    # Primary-key reads run on the event loop (hutong.web.fhir_routes); False hands
    # them to the thread pool (e.g. for a remote, slow database).
    inline_reads: bool = True
    # host:port of the separate metrics listener (hutong serve starts it); None: /metrics on the app, gated.
    metrics_address: str | None = None
    # Requests in flight per worker before 503 + Retry-After (hutong.web.overload); 0 = no limit.
    max_in_flight: int = 256
    # A hot standby for lag-tolerant reads (hutong.store.standby); None: every read on the primary.
    standby_url: str | None = None
    standby_max_lag_s: float = 10.0

    @classmethod
    def from_env(cls, database_url: str | None = None) -> Settings:
        if env_int("HUTONG_MAX_IN_FLIGHT", 256) < 0:
            raise ConfigError("HT-0561", "HUTONG_MAX_IN_FLIGHT must be 0 (no limit) or more")
        return cls(
            database_url=resolve_url(database_url),
            base_url=env("HUTONG_BASE_URL") or None,
            max_body_bytes=env_int("HUTONG_MAX_BODY_BYTES", 16 * 1024 * 1024),
            inline_reads=env("HUTONG_INLINE_READS") != "0",
            metrics_address=env("HUTONG_METRICS_ADDRESS") or None,
            max_in_flight=env_int("HUTONG_MAX_IN_FLIGHT", 256),
            standby_url=env("HUTONG_STANDBY_DATABASE_URL") or None,
            standby_max_lag_s=_seconds("HUTONG_STANDBY_MAX_LAG_SECONDS", 10.0),
        )


def _seconds(name: str, default: float) -> float:
    v = env(name)
    if v is None or v.strip() == "":
        return default
    try:
        s = float(v)
    except ValueError:
        s = math.nan
    if not s > 0 or math.isinf(s):
        raise ConfigError("HT-0635", f"{name} must be a positive number of seconds, not {v[:40]!r}")
    return s
