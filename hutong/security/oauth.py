"""Sign-in and the OAuth2 token endpoint, free of any web framework.

- Token endpoint (RFC 6749 section 3.2) for systems: ``client_credentials``
  (section 4.4) with ``client_secret_basic`` / ``client_secret_post``
  (section 2.3.1) or ``private_key_jwt`` (RFC 7523 section 2.2, as SMART App
  Launch v2 "Backend Services" profiles it: RS384 or ES384, iss = sub =
  client_id, aud = the token endpoint URL, exp at most 5 minutes ahead, jti
  used once); ``refresh_token`` (section 6).  The resource owner password
  grant is not offered (RFC 9700 section 2.4: MUST NOT).  Errors are RFC 6749
  section 5.2 JSON.
- People: staff sign in with username + password + TOTP; residents and
  delegates with their ID number + an SMS one-time code (the ID number only
  resolves to a golden person through the injected ``find_person`` and is
  neither stored nor logged nor audited).
- Revocation (RFC 7009) and the SMART configuration document (SMART App
  Launch v2, "Conformance", .well-known/smart-configuration).

Every sign-in, token issue, refresh, revocation, failure and lockout is
handed to ``audit`` as an :class:`~hutong.security.events.AuditRecord`.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from hutong.errors import HutongError, InvalidRequest, Unauthorized
from hutong.security import passwords, scopes
from hutong.security.accounts import CLIENT_ROLES, OTP_ROLES, Account, Accounts
from hutong.security.authn import principal_from_claims
from hutong.security.events import REFUSED, SUCCESS, AuditRecord
from hutong.security.principal import Principal
from hutong.security.settings import SecuritySettings
from hutong.security.smart import SmartService
from hutong.security.sms import SmsGateway
from hutong.security.tokens import CLOCK_SKEW_S, MAX_TOKEN_BYTES, TokenService

log = logging.getLogger("hutong.security.oauth")

Audit = Callable[[AuditRecord], object]  # the audit log returns its row id; unused here
FindPerson = Callable[[str], str | None]

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ("RS384", "ES384")      # SMART Backend Services: "RS384 or ES384"
ASSERTION_MAX_LIFETIME_S = 300
GRANT_TYPES = ("authorization_code", "client_credentials", "refresh_token")

# HT code of a refusal -> (RFC 6749 section 5.2 error, HTTP status)
_OAUTH_ERRORS: dict[str, tuple[str, int]] = {
    "HT-0130": ("invalid_client", 401),
    "HT-0137": ("invalid_client", 401),
    "HT-0126": ("invalid_client", 401),
    "HT-0131": ("invalid_scope", 400),
    "HT-0132": ("invalid_scope", 400),
    "HT-0133": ("invalid_grant", 400),
    "HT-0138": ("invalid_request", 400),
    # SMART App Launch (hutong.security.smart)
    "HT-0280": ("invalid_client", 401),
    "HT-0290": ("invalid_client", 401),
    "HT-0283": ("invalid_request", 400),
    "HT-0285": ("invalid_scope", 400),
    "HT-0287": ("invalid_grant", 400),
    "HT-0288": ("invalid_grant", 400),
    "HT-0289": ("invalid_grant", 400),
    "HT-0291": ("invalid_grant", 400),
}


class OAuthError(Exception):
    """An RFC 6749 section 5.2 error response."""

    def __init__(self, error: str, description: str, status: int = 400, code: str = "HT-0138") -> None:
        super().__init__(f"{code}: {description}")
        self.error = error
        self.description = description
        self.status = status
        self.code = code

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": f"{self.code}: {self.description}"}

    @classmethod
    def of(cls, e: HutongError, *, refresh: bool = False) -> OAuthError:
        error, status = _OAUTH_ERRORS.get(e.code, ("invalid_request", 400))
        if refresh and e.code == "HT-0126":  # an account disabled since the grant: the grant is void
            error, status = "invalid_grant", 400
        return cls(error, e.message, status, e.code)


def principal_of_account(a: Account, *, client_id: str | None = None, peer: str | None = None,
                         now: int = 0) -> Principal:
    return Principal(account_id=a.id, role=a.role, display=a.display, scopes=tuple(a.scopes.split()),
                     organization=a.organization, organization_id=a.organization_id,
                     practitioner_id=a.practitioner_id, practitioner_role_id=a.practitioner_role_id,
                     persons=a.persons(now), client_id=client_id or a.client_id, peer=peer)


def _str_field(body: Any, name: str, *, required: bool = True, limit: int = 256) -> str | None:
    v = body.get(name) if isinstance(body, dict) else None
    if v is None or v == "":
        if required:
            raise InvalidRequest("HT-0138", f"{name} is required")
        return None
    if not isinstance(v, str) or len(v) > limit:
        raise InvalidRequest("HT-0138", f"{name} must be a string of at most {limit} characters")
    return v


class AuthService:
    """Every sign-in path of the platform (see the module docstring)."""

    def __init__(self, repo: Any, settings: SecuritySettings, key_dir: Path, *, audit: Audit,
                 find_person: FindPerson, sms: SmsGateway, clock: Callable[[], int] | None = None,
                 tokens: TokenService | None = None) -> None:
        self.settings = settings
        self.tokens = tokens or TokenService(repo, settings, key_dir, clock=clock)
        self.accounts: Accounts = self.tokens.accounts
        self.clock = self.tokens.clock
        self.audit = audit
        self.find_person = find_person
        self.sms = sms
        self.smart = SmartService(self.tokens, audit)  # third-party apps: authorization_code + PKCE

    # ------------------------------------------------------------ helpers
    def _issued(self, action: str, a: Account, response: dict[str, Any], *, claimed: str | None,
                peer: str | None, extra: dict[str, str] | None = None) -> dict[str, Any]:
        claims = self.tokens.decode(response["access_token"])
        self.audit(AuditRecord(action=action, outcome=SUCCESS, principal=principal_from_claims(claims, peer),
                               claimed=claimed, peer=peer, extra=extra or {}))
        return response

    def _refused(self, action: str, code: str, *, claimed: str | None, peer: str | None,
                 principal: Principal | None = None) -> None:
        self.audit(AuditRecord(action=action, outcome=REFUSED, principal=principal, claimed=claimed, peer=peer,
                               code=code))

    # ------------------------------------------------------------ token endpoint
    def token(self, form: Mapping[str, str], authorization: str | None, token_urls: tuple[str, ...],
              peer: str | None) -> dict[str, Any]:
        """POST /auth/token (RFC 6749 section 3.2); raises OAuthError."""
        grant = form.get("grant_type", "")
        if grant == "client_credentials":
            return self._client_credentials(form, authorization, token_urls, peer)
        if grant == "refresh_token":
            smart = self.smart.grant_of_refresh(form.get("refresh_token", ""))
            if smart is not None:
                return self._smart(lambda basic: self.smart.refresh(form, basic, smart, peer), authorization)
            return self._refresh(form, peer)
        if grant == "authorization_code":
            return self._smart(lambda basic: self.smart.exchange(form, basic, peer), authorization)
        if not grant:
            raise OAuthError("invalid_request", "grant_type is required")
        shown = grant[:40]
        raise OAuthError("unsupported_grant_type", f"grant type {shown!r} is not offered; "
                                                   f"use one of {', '.join(GRANT_TYPES)}")

    def _smart(self, step: Callable[[tuple[str, str] | None], dict[str, Any]],
               authorization: str | None) -> dict[str, Any]:
        """A SMART app's token request (hutong.security.smart); its refusals as RFC 6749 errors."""
        try:
            basic = self._basic(authorization) if authorization and authorization[:6].lower() == "basic " else None
            return step(basic)
        except HutongError as e:
            raise OAuthError.of(e) from None

    def _client_credentials(self, form: Mapping[str, str], authorization: str | None,
                            token_urls: tuple[str, ...], peer: str | None) -> dict[str, Any]:
        claimed = form.get("client_id") or None
        try:
            a = self.authenticate_client(form, authorization, token_urls)
            claimed = a.client_id
            scope = scopes.narrow(form.get("scope"), a.scopes)
        except HutongError as e:
            self._refused("token", e.code, claimed=claimed[:64] if claimed else None, peer=peer)
            raise OAuthError.of(e) from None
        response = self.tokens.issue(a, scope, client_id=a.client_id, refresh=False)
        return self._issued("token", a, response, claimed=a.client_id, peer=peer)

    def authenticate_client(self, form: Mapping[str, str], authorization: str | None,
                            token_urls: tuple[str, ...]) -> Account:
        """The client a token request comes from (RFC 6749 section 2.3; RFC 7523 section 2.2)."""
        basic = authorization is not None and authorization[:6].lower() == "basic "
        post = "client_secret" in form
        assertion = "client_assertion" in form or "client_assertion_type" in form
        if basic + post + assertion > 1:  # section 2.3: "MUST NOT use more than one authentication method"
            raise InvalidRequest("HT-0138", "use one client authentication method only")
        if basic:
            assert authorization is not None
            client_id, secret = self._basic(authorization)
            if form.get("client_id") not in (None, client_id):
                raise Unauthorized("HT-0130", "client_id does not match the Basic credentials")
            return self.accounts.check_client_secret(client_id, secret)
        if post:
            return self.accounts.check_client_secret(form.get("client_id", ""), form["client_secret"])
        if assertion:
            return self._private_key_jwt(form, token_urls)
        raise Unauthorized("HT-0130", "client authentication required (client_secret_basic, client_secret_post "
                                      "or private_key_jwt)")

    @staticmethod
    def _basic(authorization: str) -> tuple[str, str]:
        try:
            raw = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise Unauthorized("HT-0130", "malformed Basic credentials") from None
        cid, sep, secret = raw.partition(":")
        if not sep:
            raise Unauthorized("HT-0130", "malformed Basic credentials")
        # RFC 6749 section 2.3.1: both parts are form-urlencoded before Basic encoding.
        return unquote_plus(cid), unquote_plus(secret)

    def _private_key_jwt(self, form: Mapping[str, str], token_urls: tuple[str, ...]) -> Account:
        bad = "client assertion not acceptable"
        if form.get("client_assertion_type") != JWT_BEARER:
            raise Unauthorized("HT-0137", f"client_assertion_type must be {JWT_BEARER}")
        assertion = form.get("client_assertion", "")
        parts = assertion.split(".")
        if len(assertion) > MAX_TOKEN_BYTES or len(parts) != 3:
            raise Unauthorized("HT-0137", f"{bad}: not a signed JWT of at most {MAX_TOKEN_BYTES} bytes")
        try:
            header = orjson.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
            unverified = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except (ValueError, binascii.Error, orjson.JSONDecodeError):
            raise Unauthorized("HT-0137", f"{bad}: header or payload is not base64url JSON") from None
        if not isinstance(header, dict) or not isinstance(unverified, dict):
            raise Unauthorized("HT-0137", f"{bad}: header or payload is not a JSON object")
        alg = header.get("alg")
        if alg not in ASSERTION_ALGORITHMS:
            raise Unauthorized("HT-0137", f"{bad}: alg must be one of {', '.join(ASSERTION_ALGORITHMS)}")
        client_id = unverified.get("iss")
        if not isinstance(client_id, str) or form.get("client_id") not in (None, client_id):
            raise Unauthorized("HT-0137", f"{bad}: iss must be the client_id")
        a = self.accounts.by_client_id(client_id) if 0 < len(client_id) <= 64 else None
        jwks = self.accounts.jwks_of(a.id) if a is not None and a.role in CLIENT_ROLES else None
        if a is None or jwks is None:
            raise Unauthorized("HT-0130", "client authentication failed")
        # parse_jwks checked the set when it was registered.
        keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
        kid = header.get("kid")
        if kid is not None:
            candidates = [k for k in keys.keys if k.kid == kid]
        else:
            candidates = list(keys.keys)
        claims: dict[str, Any] | None = None
        for key in candidates:
            try:
                claims = dict(jwt.decode(assertion, key, algorithms=[str(alg)]).claims)
                break
            except (JoseError, ValueError, TypeError):
                continue
        if claims is None:
            raise Unauthorized("HT-0137", f"{bad}: signature does not verify with the registered keys")
        now_s = self.clock() / 1000
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        exp = claims.get("exp")
        jti = claims.get("jti")
        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            raise Unauthorized("HT-0137", f"{bad}: iss and sub must both be the client_id")
        if not any(u in token_urls for u in auds):
            raise Unauthorized("HT-0137", f"{bad}: aud must be the token endpoint URL")
        if not isinstance(exp, int | float) or exp + CLOCK_SKEW_S < now_s:
            raise Unauthorized("HT-0137", f"{bad}: expired or without exp")
        if exp > now_s + ASSERTION_MAX_LIFETIME_S + CLOCK_SKEW_S:
            raise Unauthorized("HT-0137", f"{bad}: exp more than 5 minutes ahead")
        if not isinstance(jti, str) or not jti or len(jti) > 200:
            raise Unauthorized("HT-0137", f"{bad}: jti missing")
        if a.status != "active":
            raise Unauthorized("HT-0126", "client disabled")
        if not self.tokens.remember_assertion(client_id, jti, int(exp * 1000)):
            raise Unauthorized("HT-0137", f"{bad}: jti already used (replay)")
        return a

    def _refresh(self, form: Mapping[str, str], peer: str | None) -> dict[str, Any]:
        token = form.get("refresh_token", "")
        if not token:
            raise OAuthError("invalid_request", "refresh_token is required")
        try:
            a, response = self.tokens.refresh(token, client_id=form.get("client_id") or None,
                                              scope=form.get("scope"))
        except HutongError as e:
            self._refused("refresh", e.code, claimed=None, peer=peer)
            raise OAuthError.of(e, refresh=True) from None
        return self._issued("refresh", a, response, claimed=a.username or a.client_id, peer=peer)

    # ------------------------------------------------------------ people
    def login(self, body: Any, peer: str | None) -> dict[str, Any]:
        """POST /auth/login {"username", "password", "totp", ["scope"]}: staff sign-in."""
        username = _str_field(body, "username", limit=100)
        assert username is not None
        try:
            password = _str_field(body, "password") or ""
            code = _str_field(body, "totp", required=False, limit=16)
            a = self.accounts.check_password(username, password, code, peer=peer)
            scope = scopes.narrow(_str_field(body, "scope", required=False, limit=2000), a.scopes)
        except HutongError as e:
            # The audit trail keeps the real cause (HT-0140: held back) of a one-answer refusal.
            self._refused("login", getattr(e, "audit_code", e.code), claimed=username, peer=peer)
            raise
        response = self.tokens.issue(a, scope)
        response["account"] = a.to_json()
        return self._issued("login", a, response, claimed=username, peer=peer)

    def change_password(self, body: Any, peer: str | None) -> dict[str, Any]:
        """POST /auth/password {"username", "old", "new", "totp"}; ends the account's
        other sessions (their refresh tokens)."""
        username = _str_field(body, "username", limit=100)
        assert username is not None
        try:
            old = _str_field(body, "old") or ""
            new = _str_field(body, "new") or ""
            a = self.accounts.change_password(username, old, new, _str_field(body, "totp", required=False,
                                                                             limit=16), peer=peer)
        except HutongError as e:
            # The audit trail keeps the real cause (HT-0140: held back) of a one-answer refusal.
            self._refused("login", getattr(e, "audit_code", e.code), claimed=username, peer=peer)
            raise
        self.tokens.revoke_account(a.id)
        self.audit(AuditRecord(action="login", outcome=SUCCESS, principal=principal_of_account(
            a, peer=peer, now=self.clock()), claimed=username, peer=peer, extra={"event": "password-change"}))
        return {"status": "changed", "account": a.to_json()}

    def _resident(self, body: Any) -> Account | None:
        id_number = _str_field(body, "id_number", limit=32)
        assert id_number is not None
        person = self.find_person(id_number.strip().upper())
        a = self.accounts.by_person(person) if person else None
        return a if a is not None and a.role in OTP_ROLES else None

    def otp_send(self, body: Any, peer: str | None) -> dict[str, Any]:
        """POST /auth/otp/send {"id_number"}: text a sign-in code to the account's phone.

        The answer is the same whether or not the account exists, and whether
        or not the rate limit held the code back (no account enumeration)."""
        a = self._resident(body)
        sent = False
        phone = self.accounts.phone_of(a.id) if a is not None and a.status == "active" else None
        if a is not None and phone is not None:
            code = self.accounts.start_otp(a)
            if code is not None:
                self.sms.send(phone, f"【互通】您的登录验证码为 {code}，5分钟内有效，请勿告诉他人。"
                                     f"Hutong sign-in code: {code} (valid 5 minutes).")
                sent = True
        else:
            passwords.hash_secret("000000")  # the cost of a real send, so timing tells nothing
        if sent:
            assert a is not None
            self.audit(AuditRecord(action="otp", outcome=SUCCESS,
                                   principal=principal_of_account(a, peer=peer, now=self.clock()),
                                   peer=peer, extra={"event": "send"}))
        else:
            self._refused("otp", "HT-0135" if a is None else "HT-0134", claimed=None, peer=peer)
        return {"status": "accepted",
                "detail": "if an account with a registered phone exists, a code was sent to it"}

    def otp_verify(self, body: Any, peer: str | None) -> dict[str, Any]:
        """POST /auth/otp/verify {"id_number", "code"}: tokens for a resident or delegate."""
        try:
            a = self._resident(body)
            code = (_str_field(body, "code", limit=16) or "").strip()
            a = self.accounts.check_otp(a, code)
            scope = scopes.narrow(_str_field(body, "scope", required=False, limit=2000), a.scopes)
        except HutongError as e:
            self._refused("otp", e.code, claimed=None, peer=peer)
            raise
        response = self.tokens.issue(a, scope)
        response["account"] = a.to_json()
        return self._issued("login", a, response, claimed=None, peer=peer, extra={"method": "otp"})

    # ------------------------------------------------------------ revocation
    def revoke(self, form: Mapping[str, str], peer: str | None) -> None:
        """POST /auth/revoke (RFC 7009 section 2.1).  Unknown tokens are answered
        like known ones (section 2.2)."""
        token = form.get("token", "")
        if not token:
            raise OAuthError("invalid_request", "token is required")
        hint = form.get("token_type_hint")
        grant = self.smart.grant_of_refresh(token) if hint != "access_token" else None
        if grant is not None:  # an app's refresh token: its whole grant ends
            self.smart.revoke_refresh(grant, peer)
            return
        account_id = self.tokens.revoke(token, hint if hint in ("access_token", "refresh_token") else None)
        a = self.accounts.get(account_id) if account_id else None
        if a is None:
            self._refused("revoke", "HT-0133", claimed=None, peer=peer)
            return
        self.audit(AuditRecord(action="revoke", outcome=SUCCESS,
                               principal=principal_of_account(a, peer=peer, now=self.clock()),
                               claimed=a.username or a.client_id, peer=peer))

    # ------------------------------------------------------------ discovery
    def smart_configuration(self, base: str) -> dict[str, Any]:
        """SMART App Launch v2 "Conformance" (.well-known/smart-configuration)."""
        return self.smart.configuration(base, grant_types=GRANT_TYPES, auth_methods=[
            "client_secret_basic", "client_secret_post", "private_key_jwt"],
            signing_algs=list(ASSERTION_ALGORITHMS))
