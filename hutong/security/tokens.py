"""Access and refresh tokens: issue, verify, rotate, revoke.

- Access tokens are JWTs (RFC 7519) signed ES256 (RFC 7518 section 3.4) with
  the platform's EC P-256 key, kept as PEM at ``<key_dir>/token-signing.pem``
  (created, mode 0600, on first use; its thumbprint is recorded in the
  database and every node's must match: hutong.security.keycheck) and
  published as a JWK Set at ``/auth/jwks``.  Claims: iss, sub (account id), aud, exp, iat, jti, scope
  (SMART v2, space separated), role, org, org_id, practitioner,
  practitioner_role, persons, client_id, name.
- Verification refuses (HTTP 401, never the token in the message): more than
  8 KB, not three base64url parts, any algorithm but ES256 (so ``none`` and
  HS256-with-the-public-key confusion are out, RFC 8725 section 3.1), a bad
  signature, another issuer or audience (RFC 8725 section 3.8/3.9), expiry
  (30 s clock skew allowed), a revoked jti, an account disabled since issue
  or whose tokens were voided after issue (disabled, password changed: a
  per-account cutoff, so enabling it again brings no old token back).  A
  token's signature is checked once per process (it cannot change); its
  revocation and its account's state are read on every use (one primary-key
  query), never cached, so a revocation holds on every worker at once
  (issue 12, finding 16).  A delegate's token names the persons delegated at
  issue; each use keeps only those still delegated now.
- Refresh tokens (RFC 6749 section 6) are opaque random strings; only their
  SHA-256 is stored.  Each use rotates them (the old one is revoked); using a
  revoked one again revokes its whole family (OAuth 2.0 Security BCP, RFC
  9700 section 4.14.2), and for people a refresh after more than
  ``idle_timeout_minutes`` without use is refused (GB/T 22239-2019 8.1.4.1 b,
  session idle timeout).
- Revocation (RFC 7009) takes either kind of token.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError

from hutong.errors import InvalidRequest, Unauthorized
from hutong.security import scopes as scopemod
from hutong.security.accounts import Account, Accounts
from hutong.security.keycheck import KEY_FILE as KEY_FILE  # re-exported: the file is the token service's
from hutong.security.keycheck import load_signing_key as load_signing_key
from hutong.security.keycheck import token_signing_key
from hutong.security.principal import Role
from hutong.security.settings import SecuritySettings
from hutong.security.tokens_store import TokenStore
from hutong.store.repository import Repository

ALGORITHM = "ES256"
MAX_TOKEN_BYTES = 8192
CLOCK_SKEW_S = 30
DEFAULT_ISSUER = "urn:hutong"
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")


VERIFIED_CACHE = 20_000  # tokens whose signature is remembered (about 15 minutes of a busy region)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _b64json(part: str) -> Any:
    return orjson.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def system_clock() -> int:
    return time.time_ns() // 1_000_000


class TokenService:
    """Issues and checks the platform's tokens; one per process (it caches)."""

    def __init__(self, repo: Repository, settings: SecuritySettings, key_dir: Path, *,
                 accounts: Accounts | None = None, clock: Callable[[], int] | None = None) -> None:
        self.repo = repo
        self.store = TokenStore(repo)
        self.settings = settings
        self.clock: Callable[[], int] = clock or system_clock
        self.accounts = accounts or Accounts(repo, settings, clock=self.clock)
        self.key_dir = settings.key_dir or key_dir
        # The key the database records (issue 18, item 2): a key directory that is not a copy
        # of the other nodes' is refused here (HT-0636/0637) instead of signing tokens they refuse.
        self.key = token_signing_key(repo.db, self.key_dir, self.clock())
        self.kid = self.key.thumbprint()
        self.issuer = (settings.issuer or DEFAULT_ISSUER).rstrip("/")
        # The FHIR API these tokens are for (RFC 8707 resource / JWT aud).
        self.audience = self.issuer + "/fhir"
        self._lock = threading.Lock()
        self._verified: dict[str, dict[str, Any]] = {}  # token -> claims whose signature checked out

    # ------------------------------------------------------------ keys
    def jwks(self) -> dict[str, Any]:
        """The public signing key as a JWK Set (RFC 7517 section 5)."""
        pub = dict(self.key.as_dict(private=False))
        pub.update({"kid": self.kid, "use": "sig", "alg": ALGORITHM})
        return {"keys": [pub]}

    # ------------------------------------------------------------ issue
    def issue(self, account: Account | str, scopes: str, *, client_id: str | None = None,
              refresh: bool | None = None, family: str | None = None,
              refresh_expires: int | None = None, persons: tuple[str, ...] | None = None) -> dict[str, Any]:
        """An access token (and, for people by default, a refresh token) for
        ``account`` carrying ``scopes`` (already checked against the grant).
        ``persons`` narrows a resident's or delegate's token to some of the
        persons they may act for (a SMART app's patient context, hutong.security.smart).

        Returns the RFC 6749 section 5.1 token response."""
        a = account if isinstance(account, Account) else self.accounts.require(account)
        now = self.clock()
        scope = scopemod.normalize(scopes)
        lifetime_s = self.settings.access_token_minutes * 60
        # After a cutoff in this very second (void_tokens), the new token must
        # fall after it: iat at most a second ahead, within the clock skew allowed.
        iat = max(now // 1000, self.accounts.tokens_not_before(a.id) + 1)
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": a.id, "aud": self.audience, "iat": iat, "exp": iat + lifetime_s,
            "jti": secrets.token_hex(16), "scope": scope, "role": str(a.role),
        }
        if a.role not in (Role.RESIDENT, Role.DELEGATE):
            # A person's own name stays out of tokens a resident holds; staff names
            # and system names are what residents' access logs show.
            claims["name"] = a.display
        for claim, value in (("org", a.organization), ("org_id", a.organization_id),
                             ("practitioner", a.practitioner_id), ("practitioner_role", a.practitioner_role_id),
                             ("client_id", client_id or a.client_id)):
            if value is not None:
                claims[claim] = value
        mine = a.persons(now)
        acts_for = mine if persons is None else tuple(p for p in persons if p in mine)
        if acts_for:
            claims["persons"] = list(acts_for)
        token = jwt.encode({"alg": ALGORITHM, "kid": self.kid, "typ": "at+jwt"}, claims, self.key,
                           algorithms=[ALGORITHM])
        out: dict[str, Any] = {"access_token": token, "token_type": "Bearer", "expires_in": lifetime_s,
                               "scope": scope}
        # Clients get none (RFC 6749 section 4.4.3: client credentials "SHOULD NOT" include one).
        if refresh if refresh is not None else a.is_person:
            out["refresh_token"] = self._new_refresh(a, scope, client_id, family, refresh_expires)
        return out

    def _new_refresh(self, a: Account, scope: str, client_id: str | None, family: str | None,
                     expires: int | None) -> str:
        now = self.clock()
        token = secrets.token_urlsafe(32)
        exp = expires if expires is not None else now + self.settings.refresh_token_hours * 3_600_000
        fam = family or secrets.token_hex(16)
        self.store.add_refresh(hash_token(token), fam, a.id, client_id, scope, exp, now)
        return token

    # ------------------------------------------------------------ verify
    def invalidate(self) -> None:
        """Nothing to forget: revocations and account state are read on every use."""

    def decode(self, token: str, *, check_time: bool = True) -> dict[str, Any]:
        """The claims of a token this platform signed, else Unauthorized."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
            raise Unauthorized("HT-0121", f"access token malformed or longer than {MAX_TOKEN_BYTES} bytes")
        parts = token.split(".")
        if len(parts) != 3 or not all(_B64URL.match(p) for p in parts):
            raise Unauthorized("HT-0121", "access token malformed: not a JWT (three base64url parts)")
        known = self._verified.get(token)
        if known is not None:
            return self._check_time(dict(known), check_time)
        try:
            header = _b64json(parts[0])
        except (ValueError, orjson.JSONDecodeError):
            raise Unauthorized("HT-0121", "access token malformed: header is not base64url JSON") from None
        if not isinstance(header, dict) or header.get("alg") != ALGORITHM:
            raise Unauthorized("HT-0122", f"access token algorithm not accepted (only {ALGORITHM})")
        try:
            claims: dict[str, Any] = dict(jwt.decode(token, self.key, algorithms=[ALGORITHM]).claims)
        except BadSignatureError:
            raise Unauthorized("HT-0122", "access token signature invalid") from None
        except (JoseError, ValueError, TypeError):
            raise Unauthorized("HT-0121", "access token malformed") from None
        aud = claims.get("aud")
        if claims.get("iss") != self.issuer or not (aud == self.audience or (
                isinstance(aud, list) and self.audience in aud)):
            raise Unauthorized("HT-0125", "access token was issued by or for another party")
        for c in ("sub", "jti", "exp", "iat"):
            if c not in claims:
                raise Unauthorized("HT-0121", f"access token lacks the {c} claim")
        # The signature check (ES256) was the largest cost of an authenticated
        # request; a token's signature and issuer do not change, so they are
        # checked once per process.  Time, revocation and account state are
        # checked on every use (verify).
        with self._lock:
            if len(self._verified) >= VERIFIED_CACHE:
                self._verified.pop(next(iter(self._verified)))
            self._verified[token] = dict(claims)
        return self._check_time(claims, check_time)

    def _check_time(self, claims: dict[str, Any], check_time: bool) -> dict[str, Any]:
        if check_time:
            now_s = self.clock() / 1000
            exp, iat = claims["exp"], claims["iat"]
            if not isinstance(exp, int | float) or not isinstance(iat, int | float):
                raise Unauthorized("HT-0121", "access token times are not numbers")
            if now_s > exp + CLOCK_SKEW_S:
                raise Unauthorized("HT-0123", "access token expired")
            if iat > now_s + CLOCK_SKEW_S or claims.get("nbf", 0) > now_s + CLOCK_SKEW_S:
                raise Unauthorized("HT-0123", "access token not yet valid")
        return claims

    def verify(self, token: str) -> dict[str, Any]:
        """Claims of a valid, unexpired, unrevoked access token of an active account
        (a delegate's ``persons`` narrowed to the delegations live now)."""
        claims = self.decode(token)
        state = self.accounts.token_state(str(claims["sub"]), str(claims["jti"]), self.clock())
        if state.revoked:
            raise Unauthorized("HT-0124", "access token revoked")
        if not state.active:
            raise Unauthorized("HT-0126", "account disabled")
        if claims["iat"] <= state.not_before:
            raise Unauthorized("HT-0124", "access token revoked: the account was disabled or its password "
                                          "changed since it was issued")
        if state.persons is not None:
            # Authority from the platform's facts, not the token's: an ended or
            # expired delegation ends here, on every request.
            live = set(state.persons)
            claims["persons"] = [p for p in claims.get("persons") or [] if p in live]
        return claims

    # ------------------------------------------------------------ refresh
    def refresh(self, token: str, *, client_id: str | None = None,
                scope: str | None = None) -> tuple[Account, dict[str, Any]]:
        """Rotate a refresh token (RFC 6749 section 6): the account and a new token response."""
        refused = Unauthorized("HT-0133", "refresh token invalid, expired, revoked or idle too long")
        if not token or len(token) > 512:
            raise refused
        h = hash_token(token)
        row = self.store.refresh_row(h)
        if row is None:
            raise refused
        family, account_id, bound_client, granted = row.family, row.account_id, row.client_id, row.scopes
        expires, revoked, last_used = row.expires, row.revoked, row.last_used
        now = self.clock()
        if revoked:
            # A rotated-away token came back: whoever holds the family's live token
            # may be a thief (or the victim); end the whole sign-in.
            self.revoke_family(family)
            raise refused
        if bound_client is not None and client_id != bound_client:
            raise refused
        if int(expires) <= now:
            raise refused
        a = self.accounts.get(account_id)
        if a is None or a.status != "active":
            raise Unauthorized("HT-0126", "account disabled")
        if a.is_person and now - int(last_used) > self.settings.idle_timeout_minutes * 60_000:
            self.revoke_family(family)
            raise Unauthorized("HT-0133", f"signed out after {self.settings.idle_timeout_minutes} minutes "
                                          "without activity; sign in again")
        # RFC 6749 section 6: no scope beyond the original grant, and none the
        # account has lost since.
        wanted, _special = scopemod.parse(scopemod.narrow(scope, granted))
        current = scopemod.parse(a.scopes)[0]
        kept = [s for s in wanted if not scopemod.covered([s], current)]
        if wanted and not kept:
            raise InvalidRequest("HT-0131", "the account no longer holds the scopes of this sign-in")
        if not self.store.rotate(h, now):  # a concurrent use rotated it first
            self.revoke_family(family)
            raise refused
        return a, self.issue(a, " ".join(str(s) for s in kept), client_id=bound_client, refresh=True, family=family,
                             refresh_expires=int(expires))

    def revoke_family(self, family: str) -> None:
        self.store.revoke_family(family)

    def revoke_account(self, account_id: str) -> None:
        """End every refresh token of an account (disable, password reset)."""
        self.accounts.end_sessions(account_id)

    # ------------------------------------------------------------ revocation
    def revoke_access(self, jti: str, exp_s: int | float) -> None:
        # Rows of tokens long expired are kept no longer than needed.
        self.store.revoke_jti(jti, int(exp_s * 1000), forget_before=self.clock() - 86_400_000)

    def revoke(self, token: str, hint: str | None = None) -> str | None:
        """RFC 7009 section 2.1: revoke an access or refresh token.  Returns the
        account id the token belonged to (for audit), None for an unknown token
        (which section 2.2 says is answered like a success)."""
        if not token or len(token) > MAX_TOKEN_BYTES:
            return None
        if token.count(".") == 2 and hint != "refresh_token":
            try:
                claims = self.decode(token, check_time=False)
            except Unauthorized:
                return None
            self.revoke_access(str(claims["jti"]), claims["exp"])
            return str(claims["sub"])
        h = hash_token(token)
        row = self.store.refresh_row(h)
        if row is None:
            return None
        self.revoke_family(row.family)
        return row.account_id

    # ------------------------------------------------------------ client assertions
    def remember_assertion(self, client_id: str, jti: str, exp_ms: int) -> bool:
        """Record a private_key_jwt assertion's jti; False when it was used before
        (RFC 7523 section 3, item 7)."""
        key = f"{client_id} {jti}"[:300]
        return self.store.remember_assertion(key, exp_ms, forget_before=self.clock() - 600_000)
