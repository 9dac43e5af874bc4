"""Security settings (等保三级 defaults), read once from the environment.

Every number here is a policy choice a region may change; the defaults follow
GB/T 22239-2019 level 3 practice as issue 6 states them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from hutong.config import env, env_flag
from hutong.config import env_int as _int
from hutong.errors import ConfigError

# A node's audit chain name (hutong.security.audit: one chain per node): short,
# lower-case, no spaces, so it fits audit_event.chain (String(32)) and a lock key.
NODE_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


def _list(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    v = env(name)
    if v is None:
        return default
    return tuple(x.strip() for x in v.split(",") if x.strip())


def node_id(value: str | None) -> str:
    """HUTONG_NODE_ID checked: "" (unset: the one audit chain of a single node) or
    [a-z0-9][a-z0-9-]{0,31}; anything else is refused (HT-0149) rather than cut or
    folded, so two nodes never end up writing one chain by accident of spelling."""
    v = value or ""
    if v and NODE_ID.fullmatch(v) is None:
        raise ConfigError("HT-0149", f"HUTONG_NODE_ID {v[:40]!r} is not a node id: 1-32 characters of a-z, "
                                     "0-9 and '-', starting with a letter or digit")
    return v


def _path(name: str) -> Path | None:
    v = env(name)
    return Path(v) if v else None


@dataclass(frozen=True)
class SecuritySettings:
    # --- passwords and sessions (accounts)
    password_min_length: int = 8
    password_min_classes: int = 3            # of lower, upper, digit, symbol
    lockout_failures: int = 5
    lockout_minutes: int = 30
    password_max_age_days: int = 0           # 0 = no forced rotation (90 is the usual choice)
    idle_timeout_minutes: int = 30
    # --- tokens
    access_token_minutes: int = 15
    refresh_token_hours: int = 12
    issuer: str | None = None                # None = derived from the request's base URL
    # --- policy
    treatment_window_days: int = 90          # encounter/referral at the clinician's institution
    break_glass_hours: int = 24
    sensitive_labels: tuple[str, ...] = ("PSY", "HIV", "SEX", "ETH", "SUD", "STD")
    # --- audit
    audit_retention_days: int = 180
    audit_heads: Path | None = None          # published signed heads; None = <key_dir>/audit-heads.ndjson
    audit_head_seconds: int = 300            # a signed head at most this often (tail-cut window)
    node_id: str = ""                        # this node's audit chain; "" = the one chain of a single node
    # --- keys, residency
    key_dir: Path | None = None              # keys (0700); None = keys.default_key_dir, outside the db dir
    key_command: str | None = None           # a KMS: program printing id:base64 master keys (keys.CommandKeySource)
    key_command_timeout: int = 10            # seconds it may take
    allowed_regions: tuple[str, ...] = ("CN",)
    storage_region: str = "CN"
    mllp_allow: tuple[str, ...] = ("127.0.0.1/32", "::1/128")  # network filter only; never says who sends
    # MLLP sender authentication (hutong.security.senders): TLS client certificates,
    # or (transition) peer addresses an operator maps to one institution each.
    mllp_tls_cert: Path | None = None        # the listener's certificate chain (PEM)
    mllp_tls_key: Path | None = None         # its private key (PEM)
    mllp_tls_ca: Path | None = None          # CA bundle that issued the institutions' client certificates
    mllp_certs: tuple[str, ...] = ()         # "sha256-fingerprint=institution code" pins
    mllp_senders: tuple[str, ...] = ()       # "network=institution code" (transition, plain TCP)
    mllp_dev_loopback: bool = False          # development/tests: unauthenticated loopback senders, MSH-4 trusted
    sms_outbox: Path | None = None           # development SMS gateway file; None = beside the database
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> SecuritySettings:
        """Every variable is registered and documented in hutong.config.VARIABLES."""
        return cls(
            password_min_length=_int("HUTONG_PASSWORD_MIN_LENGTH", 8),
            password_min_classes=_int("HUTONG_PASSWORD_MIN_CLASSES", 3),
            lockout_failures=_int("HUTONG_LOCKOUT_FAILURES", 5),
            lockout_minutes=_int("HUTONG_LOCKOUT_MINUTES", 30),
            password_max_age_days=_int("HUTONG_PASSWORD_MAX_AGE_DAYS", 0),
            idle_timeout_minutes=_int("HUTONG_IDLE_TIMEOUT_MINUTES", 30),
            access_token_minutes=_int("HUTONG_ACCESS_TOKEN_MINUTES", 15),
            refresh_token_hours=_int("HUTONG_REFRESH_TOKEN_HOURS", 12),
            issuer=env("HUTONG_ISSUER") or None,
            treatment_window_days=_int("HUTONG_TREATMENT_WINDOW_DAYS", 90),
            break_glass_hours=_int("HUTONG_BREAK_GLASS_HOURS", 24),
            sensitive_labels=_list("HUTONG_SENSITIVE_LABELS", ("PSY", "HIV", "SEX", "ETH", "SUD", "STD")),
            audit_retention_days=_int("HUTONG_AUDIT_RETENTION_DAYS", 180),
            audit_heads=_path("HUTONG_AUDIT_HEADS"),
            audit_head_seconds=_int("HUTONG_AUDIT_HEAD_SECONDS", 300),
            node_id=node_id(env("HUTONG_NODE_ID")),
            key_dir=_path("HUTONG_KEY_DIR"),
            key_command=env("HUTONG_KEY_COMMAND") or None,
            key_command_timeout=_int("HUTONG_KEY_COMMAND_TIMEOUT", 10),
            allowed_regions=_list("HUTONG_ALLOWED_REGIONS", ("CN",)),
            storage_region=env("HUTONG_STORAGE_REGION") or "CN",
            mllp_allow=_list("HUTONG_MLLP_ALLOW", ("127.0.0.1/32", "::1/128")),
            mllp_tls_cert=_path("HUTONG_MLLP_TLS_CERT"),
            mllp_tls_key=_path("HUTONG_MLLP_TLS_KEY"),
            mllp_tls_ca=_path("HUTONG_MLLP_TLS_CA"),
            mllp_certs=_list("HUTONG_MLLP_CERTS", ()),
            mllp_senders=_list("HUTONG_MLLP_SENDERS", ()),
            mllp_dev_loopback=env_flag("HUTONG_MLLP_DEV_LOOPBACK", False),
            sms_outbox=_path("HUTONG_SMS_OUTBOX"),
        )
