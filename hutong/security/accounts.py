"""Accounts: who may sign in, with what, and what they were granted (issue 6).

One ``account`` row per institution system (an OAuth2 client), platform
client, clinician, resident, delegate, commission staff member, auditor and
operator.  What a row never holds: a plain password, client secret, TOTP
secret, phone number, one-time code or resident ID number.  Passwords,
client secrets and one-time codes are argon2id hashes
(:mod:`hutong.security.passwords`); the TOTP secret and the phone go through
the store codec (AES-GCM once keys are configured); a resident is found at
sign-in through the golden person their ID number resolves to (an injected
``find_person``), so the ID number is not stored here at all.

Sign-in rules (GB/T 22239-2019 level 3, 8.1.4.1 a-d, with issue 6's numbers,
all in :class:`~hutong.security.settings.SecuritySettings`): optional
password expiry; a second factor (TOTP, RFC 6238) for clinicians, commission
staff, auditors and operators; residents and delegates sign in with an SMS
one-time code instead of a password.

Repeated failures (GB/T 22239-2019 8.1.4.1 b "登录失败处理"; OWASP
Authentication Cheat Sheet, "Account lockout" and "Protect against automated
attacks") hold back the pair (username, client address), never the account:
after ``lockout_failures`` consecutive failures from one address, each
further one doubles the wait before that address may try that username
again (1 s, 2 s, 4 s ... up to ``lockout_minutes``).  A hard account lock let
anyone who knew a username keep its owner out and end their sessions (issue
12, finding 13); under back-off the owner signs in from their own address and
their live sessions are untouched.  Wrong password, unknown username and a
held-back address get one answer (HT-0127, same text, one argon2id
verification each), so neither the answer nor its timing tells whether an
account exists; the audit trail tells them apart (HT-0140 for held back).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from hutong.errors import InvalidRequest, NotFound, Unauthorized
from hutong.security import passwords, scopes, totp
from hutong.security.accounts_store import AccountStore
from hutong.security.accounts_store import person_has_account as person_has_account
from hutong.security.principal import Role
from hutong.security.settings import SecuritySettings
from hutong.store.repository import Repository, Writer
from hutong.store.schema import metadata

account = Table(
    "account",
    metadata,
    Column("id", String(40), primary_key=True),             # acct-<hex>
    Column("role", String(16), nullable=False),
    Column("display", String(200), nullable=False),
    Column("username", String(100), nullable=True, unique=True),    # people with passwords
    Column("client_id", String(64), nullable=True, unique=True),    # OAuth2 clients
    Column("secret_hash", String(200), nullable=True),      # argon2id of the password or client secret
    Column("jwks", Text, nullable=True),                    # private_key_jwt public keys (JSON)
    Column("totp_secret", LargeBinary, nullable=True),      # codec-encoded
    Column("totp_last_step", BigInteger, nullable=True),    # replay protection (RFC 6238 5.2)
    Column("phone", LargeBinary, nullable=True),            # codec-encoded
    Column("organization", String(64), nullable=True),      # institution identifier value
    Column("organization_id", String(64), nullable=True),   # its Organization id
    Column("practitioner_id", String(64), nullable=True),
    Column("practitioner_role_id", String(64), nullable=True),
    Column("person_id", String(64), nullable=True, unique=True),  # resident/delegate: own golden Patient
    Column("scopes", String(2000), nullable=False),
    Column("status", String(8), nullable=False),            # active | disabled
    Column("failed_count", Integer, nullable=False),
    Column("locked_until", BigInteger, nullable=False),     # epoch ms; 0 = not locked
    Column("password_changed_at", BigInteger, nullable=True),
    Column("created", BigInteger, nullable=False),
    Column("updated", BigInteger, nullable=False),
    Index("ix_account_role", "role"),
)

# Persons a delegate acts for (亲友代办; guardians of children under 14).
account_person = Table(
    "account_person",
    metadata,
    Column("account_id", String(40), nullable=False),
    Column("person_id", String(64), nullable=False),
    Column("relationship", String(16), nullable=False),     # family | guardian
    Column("expires", BigInteger, nullable=True),           # epoch ms; NULL = until revoked
    PrimaryKeyConstraint("account_id", "person_id", name="pk_account_person"),
    Index("ix_account_person_person", "person_id"),
)

refresh_token = Table(
    "refresh_token",
    metadata,
    Column("token_hash", String(64), primary_key=True),     # SHA-256 hex of the opaque token
    Column("family", String(40), nullable=False),           # every rotation of one sign-in
    Column("account_id", String(40), nullable=False),
    Column("client_id", String(64), nullable=True),
    Column("scopes", String(2000), nullable=False),
    Column("expires", BigInteger, nullable=False),
    Column("revoked", Integer, nullable=False),
    Column("last_used", BigInteger, nullable=False),
    Column("created", BigInteger, nullable=False),
    Index("ix_refresh_token_family", "family"),
    Index("ix_refresh_token_account", "account_id"),
)

revoked_token = Table(
    "revoked_token",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("expires", BigInteger, nullable=False),          # the token's exp (ms): the row may go after
)

otp_challenge = Table(
    "otp_challenge",
    metadata,
    Column("account_id", String(40), primary_key=True),     # one live challenge per account
    Column("code_hash", String(200), nullable=False),
    Column("expires", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False),
)

otp_sent = Table(
    "otp_sent",
    metadata,
    Column("account_id", String(40), nullable=False),
    Column("sent_at", BigInteger, nullable=False),
    Index("ix_otp_sent", "account_id", "sent_at"),
)

# private_key_jwt assertions already used (RFC 7523 section 3 item 7: jti replay).
used_assertion = Table(
    "used_assertion",
    metadata,
    Column("assertion_key", String(300), primary_key=True),           # client_id + " " + jti
    Column("expires", BigInteger, nullable=False),
)

# Failed sign-ins per (username, client address): the back-off state (see the module docstring).
signin_throttle = Table(
    "signin_throttle",
    metadata,
    Column("throttle_key", String(64), primary_key=True),   # SHA-256 hex of username + address
    Column("username", String(100), nullable=False),        # as typed (also names nobody has)
    Column("peer", String(100), nullable=False),
    Column("failures", Integer, nullable=False),            # consecutive, from this address
    Column("blocked_until", BigInteger, nullable=False),    # epoch ms
    Column("last_failure", BigInteger, nullable=False),
    Index("ix_signin_throttle_username", "username"),
    Index("ix_signin_throttle_last", "last_failure"),
)

# Access tokens of an account whose iat is at or before ``not_before`` (epoch
# seconds, the unit of a JWT's iat) are void: disabling an account or changing
# its password ends every access token already out, also after the account is
# enabled again.  Tokens issued later get a later iat (TokenService.issue).
token_cutoff = Table(
    "token_cutoff",
    metadata,
    Column("account_id", String(40), primary_key=True),
    Column("not_before", BigInteger, nullable=False),
)

TABLES = (account, account_person, refresh_token, revoked_token, otp_challenge, otp_sent, used_assertion,
          signin_throttle, token_cutoff)



# Roles whose people must present a TOTP code at sign-in.
TOTP_ROLES = frozenset({Role.CLINICIAN, Role.COMMISSION, Role.AUDITOR, Role.OPERATOR, Role.COMMITTEE})
USER_ROLES = TOTP_ROLES
CLIENT_ROLES = frozenset({Role.INSTITUTION, Role.PLATFORM})
OTP_ROLES = frozenset({Role.RESIDENT, Role.DELEGATE})
RELATIONSHIPS = ("family", "guardian")

DEFAULT_SCOPES: dict[Role, str] = {
    Role.INSTITUTION: "system/*.cruds",
    Role.PLATFORM: "system/*.cruds",
    Role.CLINICIAN: "user/*.rs user/Consent.cruds user/ServiceRequest.cruds user/Task.u",
    Role.RESIDENT: "patient/*.rs patient/Consent.cruds patient/Task.cru",  # Task: correction requests
    Role.DELEGATE: "patient/*.rs patient/Consent.cruds patient/Task.cru",
    Role.COMMISSION: "user/*.rs",
    Role.AUDITOR: "user/AuditEvent.rs",
    Role.OPERATOR: "",
    Role.COMMITTEE: "",  # approves knowledge versions (hutong.cds.versions); reads no FHIR data
}

# Which scope contexts each role may be granted: a resident holding system/*
# would read every institution's data.
ROLE_CONTEXTS: dict[Role, frozenset[str]] = {
    Role.INSTITUTION: frozenset({"system"}),
    Role.PLATFORM: frozenset({"system"}),
    Role.CLINICIAN: frozenset({"user", "patient"}),
    Role.RESIDENT: frozenset({"patient"}),
    Role.DELEGATE: frozenset({"patient"}),
    Role.COMMISSION: frozenset({"user"}),
    Role.AUDITOR: frozenset({"user"}),
    Role.OPERATOR: frozenset({"user"}),
    Role.COMMITTEE: frozenset({"user"}),
}

OTP_LIFETIME_MS = 5 * 60_000
THROTTLE_FORGET_MS = 86_400_000     # failure rows of an address silent for a day are dropped
SIGN_IN_FAILED = ("sign-in failed: username, password or code wrong (after repeated failures, wait a "
                  "little before trying again)")
OTP_MAX_ATTEMPTS = 5
OTP_MIN_INTERVAL_MS = 60_000
OTP_MAX_PER_HOUR = 10
GUARDIAN_UNTIL_AGE = 14



class SignInRefused(Unauthorized):
    """One answer for every failed password sign-in (HT-0127, one text); the
    audit trail gets the real cause in ``audit_code`` (HT-0140: held back)."""

    def __init__(self, audit_code: str = "HT-0127") -> None:
        super().__init__("HT-0127", SIGN_IN_FAILED)
        self.audit_code = audit_code


@dataclass(frozen=True, slots=True)
class TokenState:
    """What a bearer token's use is checked against, read fresh on every use."""

    active: bool                       # the account exists and is enabled
    revoked: bool                      # this token's jti was revoked (RFC 7009)
    not_before: int                    # epoch s: tokens with iat <= this are void (0: none)
    persons: tuple[str, ...] | None    # a delegate's live delegations; None for other roles


def throttle_key(username: str, peer: str | None) -> str:
    return hashlib.sha256(f"{username}\n{peer or ''}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Delegation:
    person_id: str
    relationship: str                  # family | guardian
    expires: int | None                # epoch ms


@dataclass(frozen=True, slots=True)
class Account:
    """An account as others may see it: no hash, secret or phone number."""

    id: str
    role: Role
    display: str
    username: str | None
    client_id: str | None
    organization: str | None
    organization_id: str | None
    practitioner_id: str | None
    practitioner_role_id: str | None
    person_id: str | None
    scopes: str
    status: str
    failed_count: int
    locked_until: int
    password_changed_at: int | None
    created: int
    updated: int
    has_password: bool = False
    has_totp: bool = False
    has_phone: bool = False
    has_jwks: bool = False
    delegations: tuple[Delegation, ...] = field(default=())

    @property
    def is_person(self) -> bool:
        return self.role not in CLIENT_ROLES

    def locked(self, now: int) -> bool:
        return self.locked_until > now

    def persons(self, now: int) -> tuple[str, ...]:
        """Golden person ids this account may act for now (own record, or live delegations)."""
        if self.role == Role.RESIDENT:
            return (self.person_id,) if self.person_id else ()
        if self.role == Role.DELEGATE:
            return tuple(d.person_id for d in self.delegations if d.expires is None or d.expires > now)
        return ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "account_id": self.id, "role": str(self.role), "name": self.display, "status": self.status,
            "scopes": self.scopes,
        }
        for k in ("username", "client_id", "organization", "organization_id", "practitioner_id",
                  "practitioner_role_id", "person_id"):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        if self.delegations:
            out["acts_for"] = [{"person_id": d.person_id, "relationship": d.relationship,
                                "expires": _iso(d.expires)} for d in self.delegations]
        out["locked_until"] = _iso(self.locked_until) if self.locked_until else None
        out["totp_enrolled"] = self.has_totp
        out["phone_registered"] = self.has_phone
        if self.role in CLIENT_ROLES:
            out["auth"] = [m for m, on in (("client_secret", self.has_password), ("private_key_jwt", self.has_jwks))
                           if on]
        return out


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _account(r: Any, delegations: tuple[Delegation, ...] = ()) -> Account:
    return Account(
        id=r[0], role=Role(r[1]), display=r[2], username=r[3], client_id=r[4], organization=r[5],
        organization_id=r[6], practitioner_id=r[7], practitioner_role_id=r[8], person_id=r[9], scopes=r[10],
        status=r[11], failed_count=int(r[12]), locked_until=int(r[13]),
        password_changed_at=int(r[14]) if r[14] is not None else None, created=int(r[15]), updated=int(r[16]),
        has_password=bool(r[17]), has_totp=bool(r[18]), has_phone=bool(r[19]), has_jwks=bool(r[20]),
        delegations=delegations,
    )


def new_account_id() -> str:
    return "acct-" + secrets.token_hex(8)


def check_scopes(role: Role, text: str | None) -> str:
    """Canonical scopes for a grant to ``role`` (default when None); HT-0132 when a
    scope is malformed, HT-0135 when its context does not suit the role."""
    if text is None:
        return DEFAULT_SCOPES[role]
    parsed, special = scopes.parse(text)
    if special:
        raise InvalidRequest("HT-0135", "grant resource scopes only (offline_access is asked for at sign-in)")
    wrong = [str(s) for s in parsed if s.context not in ROLE_CONTEXTS[role]]
    if wrong:
        raise InvalidRequest("HT-0135", f"a {role} account may not hold {' '.join(wrong)} "
                                        f"(allowed: {', '.join(sorted(ROLE_CONTEXTS[role]))} scopes)")
    return " ".join(str(s) for s in parsed)


def _phone(phone: str) -> str:
    p = "".join(ch for ch in phone if ch not in " -")
    digits = p[1:] if p.startswith("+") else p
    if not (5 <= len(digits) <= 20 and digits.isdigit()):
        raise InvalidRequest("HT-0135", "phone number must be 5 to 20 digits (optionally +country code)")
    return p


def parse_jwks(text: str | bytes | dict[str, Any]) -> dict[str, Any]:
    """A JWK Set of public keys (RFC 7517 section 5) for private_key_jwt; private
    key material is refused (the platform must never hold a client's private key)."""
    try:
        data = orjson.loads(text) if not isinstance(text, dict) else text
    except orjson.JSONDecodeError as e:
        raise InvalidRequest("HT-0135", "JWKS is not valid JSON") from e
    if isinstance(data, dict) and "keys" not in data and "kty" in data:
        data = {"keys": [data]}
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, list) or not keys:
        raise InvalidRequest("HT-0135", "JWKS must be {\"keys\": [...]} with at least one key")
    from joserfc.jwk import KeySet

    for k in keys:
        if not isinstance(k, dict) or k.get("kty") not in ("RSA", "EC"):
            raise InvalidRequest("HT-0135", "JWKS keys must be RSA or EC public keys")
        if "d" in k:
            raise InvalidRequest("HT-0135", "JWKS holds a private key: register the public key only")
    try:
        KeySet.import_key_set({"keys": keys})
    except Exception as e:  # joserfc raises several types for malformed keys
        raise InvalidRequest("HT-0135", f"JWKS key not usable: {type(e).__name__}") from e
    return {"keys": keys}


class Accounts:
    """Account operations on the store (SQLite or PostgreSQL).

    ``clock`` (epoch ms) is injected so tests move time instead of sleeping."""

    def __init__(self, repo: Repository, settings: SecuritySettings,
                 clock: Callable[[], int] | None = None) -> None:
        self.repo = repo
        self.store = AccountStore(repo)
        self.settings = settings
        self.clock: Callable[[], int] = clock or repo.clock

    # ------------------------------------------------------------ reading
    def _delegations(self, account_id: str) -> tuple[Delegation, ...]:
        rows = self.store.delegation_rows(account_id)
        return tuple(Delegation(r[0], r[1], int(r[2]) if r[2] is not None else None) for r in rows)

    def _one(self, key: str, arg: str) -> Account | None:
        row = self.store.account_row(key, arg)
        if row is None:
            return None
        dl = self._delegations(row[0]) if row[1] == Role.DELEGATE else ()
        return _account(row, dl)

    def get(self, account_id: str) -> Account | None:
        return self._one("id", account_id)

    def require(self, account_id: str) -> Account:
        a = self.get(account_id)
        if a is None:
            raise NotFound("HT-0135", "no such account")
        return a

    def by_username(self, username: str) -> Account | None:
        return self._one("username", username)

    def by_client_id(self, client_id: str) -> Account | None:
        return self._one("client_id", client_id)

    def by_person(self, person_id: str) -> Account | None:
        """The resident or delegate account whose own golden person is ``person_id``."""
        return self._one("person_id", person_id)

    def list_accounts(self, role: Role | None = None) -> list[Account]:
        rows = self.store.account_rows(None if role is None else str(role))
        return [_account(r, self._delegations(r[0]) if r[1] == Role.DELEGATE else ()) for r in rows]

    def jwks_of(self, account_id: str) -> dict[str, Any] | None:
        text = self.store.jwks(account_id)
        if text is None:
            return None
        data: dict[str, Any] = orjson.loads(text)
        return data

    def phone_of(self, account_id: str) -> str | None:
        enc = self.store.phone(account_id)
        if enc is None:
            return None
        return self.repo.codec.decode(enc).decode()

    def token_state(self, account_id: str, jti: str, now: int) -> TokenState:
        """The account's state for one use of its access token: one primary-key
        query (two for a delegate).  Never cached, so a revocation, a disable or
        an ended delegation holds on every worker at once (issue 12, finding 16)."""
        row = self.store.token_state_row(account_id, jti)
        if row is None:
            return TokenState(False, False, 0, None)
        status, role, revoked, not_before = row
        persons: tuple[str, ...] | None = None
        if role == Role.DELEGATE:
            persons = self.store.live_delegations(account_id, now)
        return TokenState(status == "active", revoked is not None, int(not_before or 0), persons)

    def tokens_not_before(self, account_id: str) -> int:
        """The account's token cutoff (epoch s; 0: none), see :meth:`void_tokens`."""
        return self.store.tokens_not_before(account_id)

    def blocked(self, now: int) -> set[str]:
        """Ids of accounts that are disabled or locked now (token verification refuses them)."""
        return self.store.blocked_ids(now)

    # ------------------------------------------------------------ creation
    def _insert(self, w: Writer, values: dict[str, Any]) -> None:
        now = self.clock()
        row: dict[str, Any] = {
            "id": new_account_id(), "display": "", "username": None, "client_id": None, "secret_hash": None,
            "jwks": None, "totp_secret": None, "totp_last_step": None, "phone": None, "organization": None,
            "organization_id": None, "practitioner_id": None, "practitioner_role_id": None, "person_id": None,
            "status": "active", "failed_count": 0, "locked_until": 0, "password_changed_at": None,
            "created": now, "updated": now,
        }
        row.update(values)
        try:
            self.store.insert(w, row)
        except Exception as e:
            if "UNIQUE" in str(e) or type(e).__name__ in ("IntegrityError", "UniqueViolation"):
                raise InvalidRequest("HT-0135", "an account with this username, client id or person exists") from e
            raise
        values["id"] = row["id"]

    def add_client(self, name: str, *, organization: str | None, organization_id: str | None,
                   scopes_text: str | None = None, jwks: dict[str, Any] | None = None,
                   platform: bool = False, secret: bool = True) -> tuple[Account, str | None]:
        """An institution (or platform) OAuth2 client; returns it and its client secret
        (shown once; None when ``secret`` is False, e.g. private_key_jwt only)."""
        role = Role.PLATFORM if platform else Role.INSTITUTION
        if role == Role.INSTITUTION and not (organization and organization_id):
            raise InvalidRequest("HT-0135", "an institution client needs its organization")
        if not name.strip():
            raise InvalidRequest("HT-0135", "a client needs a name")
        if not secret and jwks is None:
            raise InvalidRequest("HT-0135", "a client needs a secret or a JWKS")
        plain = passwords.generate_secret() if secret else None
        values: dict[str, Any] = {
            "role": str(role), "display": name.strip()[:200], "client_id": "hc-" + secrets.token_hex(10),
            "secret_hash": passwords.hash_secret(plain) if plain else None,
            "jwks": orjson.dumps(parse_jwks(jwks)).decode() if jwks is not None else None,
            "organization": organization, "organization_id": organization_id,
            "scopes": check_scopes(role, scopes_text),
        }
        self.repo.transact(lambda w: self._insert(w, values))
        return self.require(values["id"]), plain

    def add_user(self, username: str, *, role: Role, name: str, password: str | None = None,
                 organization: str | None = None, organization_id: str | None = None,
                 practitioner_id: str | None = None, practitioner_role_id: str | None = None,
                 scopes_text: str | None = None) -> tuple[Account, str, str]:
        """A person who signs in with username, password and TOTP.  Returns the
        account, its initial password (generated unless given) and the otpauth://
        URI to enrol the authenticator app with (both shown once)."""
        if role not in USER_ROLES:
            raise InvalidRequest("HT-0135", f"add-user takes {', '.join(sorted(USER_ROLES))}; "
                                            "residents and delegates sign in by ID number and SMS code")
        username = username.strip()
        if not (3 <= len(username) <= 100) or any(ch.isspace() for ch in username):
            raise InvalidRequest("HT-0135", "username must be 3 to 100 characters without spaces")
        if role == Role.CLINICIAN and not (organization and organization_id and practitioner_id):
            raise InvalidRequest("HT-0135", "a clinician needs an organization and a practitioner id")
        plain = password if password is not None else passwords.generate_password(self.settings)
        passwords.check_policy(plain, self.settings)
        secret = totp.new_secret()
        values: dict[str, Any] = {
            "role": str(role), "display": name.strip()[:200], "username": username,
            "secret_hash": passwords.hash_secret(plain), "password_changed_at": self.clock(),
            "totp_secret": self.repo.codec.encode(secret.encode()),
            "organization": organization, "organization_id": organization_id,
            "practitioner_id": practitioner_id, "practitioner_role_id": practitioner_role_id,
            "scopes": check_scopes(role, scopes_text),
        }
        self.repo.transact(lambda w: self._insert(w, values))
        return self.require(values["id"]), plain, totp.provisioning_uri(secret, username)

    def add_resident(self, person_id: str, *, phone: str, name: str = "",
                     scopes_text: str | None = None) -> Account:
        """A resident who signs in with their ID number (resolved to ``person_id``) and an SMS code."""
        values: dict[str, Any] = {
            "role": str(Role.RESIDENT), "display": name.strip()[:200], "person_id": person_id,
            "phone": self.repo.codec.encode(_phone(phone).encode()),
            "scopes": check_scopes(Role.RESIDENT, scopes_text),
        }
        self.repo.transact(lambda w: self._insert(w, values))
        return self.require(values["id"])

    def add_delegate(self, person_id: str, *, acts_for: list[Delegation], phone: str, name: str = "",
                     scopes_text: str | None = None) -> Account:
        """A family member or guardian (own golden person ``person_id``) acting for others.

        A guardian's delegation without an expiry ends on the child's 14th
        birthday when the golden record has a birth date (issue 6: guardians
        for children under 14)."""
        if not acts_for:
            raise InvalidRequest("HT-0135", "a delegate acts for at least one person")
        values: dict[str, Any] = {
            "role": str(Role.DELEGATE), "display": name.strip()[:200], "person_id": person_id,
            "phone": self.repo.codec.encode(_phone(phone).encode()),
            "scopes": check_scopes(Role.DELEGATE, scopes_text),
        }
        dl = [self._delegation(d) for d in acts_for]

        def tx(w: Writer) -> None:
            self._insert(w, values)
            for d in dl:
                self.store.add_delegation(w, values["id"], d.person_id, d.relationship, d.expires)

        self.repo.transact(tx)
        return self.require(values["id"])

    def _delegation(self, d: Delegation) -> Delegation:
        if d.relationship not in RELATIONSHIPS:
            raise InvalidRequest("HT-0135", f"relationship must be one of {', '.join(RELATIONSHIPS)}")
        if d.relationship == "guardian" and d.expires is None:
            born = self._birth_date(d.person_id)
            if born is not None:
                try:
                    until = born.replace(year=born.year + GUARDIAN_UNTIL_AGE)
                except ValueError:  # born on 29 February
                    until = date(born.year + GUARDIAN_UNTIL_AGE, 3, 1)
                ms = int(datetime(until.year, until.month, until.day, tzinfo=UTC).timestamp() * 1000)
                if ms <= self.clock():
                    raise InvalidRequest("HT-0135", "guardianship applies to children under 14; "
                                                    "this person is older (use relationship family)")
                return Delegation(d.person_id, d.relationship, ms)
        return d

    def _birth_date(self, person_id: str) -> date | None:
        st = self.repo.read("Patient", person_id)
        if st is None or st.body is None:
            return None
        bd = orjson.loads(st.body).get("birthDate")
        try:
            return date.fromisoformat(bd) if isinstance(bd, str) and len(bd) == 10 else None
        except ValueError:
            return None

    # ------------------------------------------------------------ management
    def _update(self, account_id: str, values: dict[str, Any]) -> Account:
        if not self.store.update(account_id, values, self.clock()):
            raise NotFound("HT-0135", "no such account")
        return self.require(account_id)

    def set_status(self, account_id: str, active: bool) -> Account:
        a = self._update(account_id, {"status": "active" if active else "disabled"})
        if not active:
            self.end_sessions(account_id)
            self.void_tokens(account_id)
        return a

    def void_tokens(self, account_id: str) -> None:
        """Every access token of the account issued up to now stops working, for
        good: enabling the account again does not bring them back."""
        # iat has whole seconds: tokens of this very second are void too, and
        # TokenService.issue gives the next ones a later iat.
        self.store.void_tokens(account_id, self.clock() // 1000)

    def end_sessions(self, account_id: str) -> None:
        """Revoke every refresh token of the account (its access tokens lapse within
        minutes, and token verification refuses a disabled account at once)."""
        self.store.end_sessions(account_id)

    def end_delegation(self, account_id: str, person_id: str) -> bool:
        """The resident (or an operator) ends a family member's or guardian's
        delegation for ``person_id``.  The delegate's sessions end too; the
        policy checks live delegations on every request, so access tokens
        already issued stop working for that person at once."""
        ended = self.store.end_delegation(account_id, person_id)
        if ended:
            self.end_sessions(account_id)
        return ended

    def unlock(self, account_id: str) -> Account:
        """Clear the back-off of every address for this account's username (an operator's call)."""
        a = self._update(account_id, {"failed_count": 0, "locked_until": 0})
        if a.username is not None:
            self.store.clear_throttle_of(a.username)
        return a

    def set_scopes(self, account_id: str, scopes_text: str) -> Account:
        a = self.require(account_id)
        return self._update(account_id, {"scopes": check_scopes(a.role, scopes_text)})

    def set_jwks(self, account_id: str, jwks: dict[str, Any]) -> Account:
        a = self.require(account_id)
        if a.role not in CLIENT_ROLES:
            raise InvalidRequest("HT-0135", "only clients have a JWKS")
        return self._update(account_id, {"jwks": orjson.dumps(parse_jwks(jwks)).decode()})

    def reset_password(self, account_id: str, password: str | None = None) -> tuple[Account, str]:
        a = self.require(account_id)
        if a.role not in USER_ROLES:
            raise InvalidRequest("HT-0135", "only people who sign in with a password have one")
        plain = password if password is not None else passwords.generate_password(self.settings)
        passwords.check_policy(plain, self.settings)
        a = self._update(account_id, {"secret_hash": passwords.hash_secret(plain), "password_changed_at": self.clock(),
                                      "failed_count": 0, "locked_until": 0})
        self.end_sessions(account_id)
        self.void_tokens(account_id)
        return a, plain

    def rotate_secret(self, account_id: str) -> tuple[Account, str]:
        a = self.require(account_id)
        if a.role not in CLIENT_ROLES:
            raise InvalidRequest("HT-0135", "only clients have a client secret")
        plain = passwords.generate_secret()
        return self._update(account_id, {"secret_hash": passwords.hash_secret(plain)}), plain

    def set_phone(self, account_id: str, phone: str) -> Account:
        return self._update(account_id, {"phone": self.repo.codec.encode(_phone(phone).encode())})

    # ------------------------------------------------------------ sign-in
    def _secrets_of(self, account_id: str) -> tuple[str | None, bytes | None, int | None]:
        return self.store.secrets_of(account_id)

    def _held_back(self, key: str, now: int) -> bool:
        until = self.store.held_until(key)
        return until is not None and until > now

    def _fail(self, key: str, username: str, peer: str | None) -> SignInRefused:
        """Count one failure of (username, address); from the ``lockout_failures``-th
        on, the address waits 1 s, 2 s, 4 s ... (at most ``lockout_minutes``)."""
        now = self.clock()
        limit = max(1, self.settings.lockout_failures)
        cap_ms = max(1, self.settings.lockout_minutes) * 60_000

        def wait_ms(n: int) -> int:
            return min(cap_ms, 1000 << min(n - limit, 40)) if n >= limit else 0

        self.store.record_failure(key, username, peer, now, wait_ms, forget_before=now - THROTTLE_FORGET_MS)
        return SignInRefused()

    def check_password(self, username: str, password: str, totp_code: str | None, *,
                       allow_expired: bool = False, peer: str | None = None) -> Account:
        """The account of a person signing in with password (+ TOTP for staff roles)
        from address ``peer``.

        Unknown username, wrong password or code, and an address held back
        after repeated failures all raise :class:`SignInRefused` (HT-0127, one
        text) after one argon2id verification; a disabled account gives
        HT-0126 and an expired password HT-0129 (unless ``allow_expired``),
        both only to someone who gave the right password and code."""
        now = self.clock()
        key = throttle_key(username, peer)
        if self._held_back(key, now):
            # Refused unseen, at the price of a real check (timing tells nothing),
            # and not counted: waiting out the back-off is all it takes.
            passwords.verify_secret(None, password)
            raise SignInRefused("HT-0140")
        a = self.by_username(username) if 0 < len(username) <= 100 else None
        if a is None or a.role not in USER_ROLES:
            passwords.verify_secret(None, password)
            raise self._fail(key, username, peer)
        stored, enc_secret, last_step = self._secrets_of(a.id)
        if not passwords.verify_secret(stored, password):
            raise self._fail(key, username, peer)
        step: int | None = None
        if a.role in TOTP_ROLES:
            if enc_secret is None:
                raise Unauthorized("HT-0127", "sign-in failed: no second factor enrolled; ask an operator")
            secret = self.repo.codec.decode(enc_secret).decode()
            try:
                step = totp.verify(secret, totp_code or "", now, last_step)
            except totp.Replayed:
                self._fail(key, username, peer)
                raise Unauthorized("HT-0139", "this authenticator code was already used; wait for the next one")\
                    from None
            if step is None:
                raise self._fail(key, username, peer)
        if a.status != "active":
            raise Unauthorized("HT-0126", "account disabled")
        max_age = self.settings.password_max_age_days
        if (not allow_expired and max_age > 0
                and now - (a.password_changed_at or 0) > max_age * 86_400_000):
            raise Unauthorized("HT-0129", "password expired: change it (POST /auth/password)")
        self._succeed(a, step, stored)
        self.store.clear_throttle(key)
        return self.require(a.id)

    def _succeed(self, a: Account, step: int | None, stored: str | None) -> None:
        # Conditional update: two concurrent sign-ins with one code, only one wins.
        if not self.store.signed_in(a.id, step, self.clock()):
            raise Unauthorized("HT-0139", "this authenticator code was already used; wait for the next one")

    def change_password(self, username: str, old: str, new: str, totp_code: str | None, *,
                        peer: str | None = None) -> Account:
        """Change a password (also when expired): the old one and the second factor
        are checked; access tokens issued before are void afterwards."""
        if new == old:
            raise InvalidRequest("HT-0120", "the new password must differ from the old one")
        passwords.check_policy(new, self.settings)
        a = self.check_password(username, old, totp_code, allow_expired=True, peer=peer)
        a = self._update(a.id, {"secret_hash": passwords.hash_secret(new), "password_changed_at": self.clock()})
        self.void_tokens(a.id)
        return a

    def check_client_secret(self, client_id: str, secret: str) -> Account:
        """The client with this id and secret (RFC 6749 section 2.3.1), else HT-0130."""
        a = self.by_client_id(client_id) if 0 < len(client_id) <= 64 else None
        stored = self._secrets_of(a.id)[0] if a is not None else None
        ok = passwords.verify_secret(stored, secret[:512])
        if a is None or not ok or a.role not in CLIENT_ROLES:
            raise Unauthorized("HT-0130", "client authentication failed")
        if a.status != "active":
            raise Unauthorized("HT-0126", "client disabled")
        return a

    # ------------------------------------------------------------ one-time codes (residents)
    def start_otp(self, a: Account) -> str | None:
        """A new 6-digit code for ``a`` (replacing any live one), or None when the
        send rate limit (one a minute, ten an hour) says no.  The caller sends it."""
        now = self.clock()
        code = f"{secrets.randbelow(1_000_000):06d}"
        h = passwords.hash_secret(code)

        def may_send(sent_last_hour: int, last: int | None) -> bool:
            return sent_last_hour < OTP_MAX_PER_HOUR and (last is None or now - last >= OTP_MIN_INTERVAL_MS)

        return code if self.store.start_otp(a.id, h, now, now + OTP_LIFETIME_MS, may_send) else None

    def check_otp(self, a: Account | None, code: str) -> Account:
        """Consume ``a``'s live challenge when ``code`` matches; HT-0134 otherwise
        (also for no account, so the answer does not tell whether one exists).
        The fifth wrong code burns the challenge."""
        wrong = Unauthorized("HT-0134", "one-time code wrong, expired or used up; ask for a new one")
        if a is None:
            passwords.verify_secret(None, code)
            raise wrong
        now = self.clock()
        challenge = self.store.otp_challenge(a.id)
        if challenge is None or challenge[1] <= now or challenge[2] >= OTP_MAX_ATTEMPTS:
            passwords.verify_secret(None, code)
            raise wrong
        stored = challenge[0]
        good = len(code) == 6 and code.isdigit() and passwords.verify_secret(stored, code)
        # A good code deletes the very row checked: a second use of it finds nothing.
        if not self.store.settle_otp(a.id, stored, good, OTP_MAX_ATTEMPTS):
            raise wrong
        if a.status != "active":
            raise Unauthorized("HT-0126", "account disabled")
        return a
