"""SMART App Launch 2.0 for third-party apps (internet hospitals, resident apps).

Implements, over the platform's own accounts, tokens and policy:

- app registration by an operator (app-launch.html#register-app-with-ehr):
  public and confidential clients (only a confidential client's secret hash
  is kept), redirect URIs compared exactly (RFC 9700 section 4.1.3), an
  optional EHR launch URL, and the most the app may ever ask for;
- the authorization request (app-launch.html#request-authorization-code,
  RFC 6749 section 4.1.1): ``response_type=code``, ``aud`` the FHIR base,
  ``state``, PKCE with S256 only (RFC 7636; SMART 2.0 "SHALL NOT" plain),
  ``launch`` for an EHR launch;
- the person's approval: a resident or delegate picks whose record (their own
  or one delegated to them) and the token is bound to that one person; a
  clinician's grant is bounded by their own account's scopes and, as every
  request, by the access policy (treatment, consent, break-glass);
- the code exchange (RFC 6749 section 4.1.3, RFC 7636 section 4.6): one use,
  short-lived, bound to client and redirect_uri; a replayed code revokes
  what it issued (RFC 6749 section 4.1.2);
- refresh tokens only with ``offline_access`` (scopes-and-launch-context.html
  #scopes-for-requesting-a-refresh-token), rotated on each use, the grant
  revocable by the person (resident portal) or the app (RFC 7009);
- the SMART configuration document (conformance.html).

Scopes the platform does not implement (``openid``, ``fhirUser``,
``profile``: no OpenID Connect) are not granted; the token response's
``scope`` says what was (SMART 2.0: the app must check it).  Every grant,
denial, exchange, refresh and revocation is audited.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson

from hutong.errors import Forbidden, HutongError, InvalidRequest, NotFound, Unauthorized
from hutong.security import passwords
from hutong.security import scopes as scopemod
from hutong.security.accounts import Account
from hutong.security.authn import principal_from_claims
from hutong.security.events import REFUSED, SUCCESS, AuditRecord
from hutong.security.principal import Principal, Role
from hutong.security.smart_store import AuthorizationRow, ClientRow, GrantRow, LaunchRow, SmartStore
from hutong.security.tokens import TokenService, hash_token

Audit = Callable[[AuditRecord], object]

REQUEST_TTL_MS = 10 * 60_000        # an authorization request waits this long for the person
CODE_TTL_MS = 120_000               # RFC 6749 section 4.1.2: short-lived ("maximum of 10 minutes")
LAUNCH_TTL_MS = 5 * 60_000          # an EHR launch context is used at once or not at all
GRANT_DAYS = 90                     # offline_access: the person renews (or revokes) at least this often
LAUNCH_SCOPES = frozenset({"launch", "launch/patient"})
UNOFFERED = frozenset({"openid", "fhirUser", "profile"})  # no OpenID Connect: not granted
APP_ROLES = frozenset({Role.RESIDENT, Role.DELEGATE, Role.CLINICIAN})
PERSON_ROLES = frozenset({Role.RESIDENT, Role.DELEGATE})
DEFAULT_APP_SCOPES = "launch launch/patient patient/*.rs user/*.rs offline_access"
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")       # RFC 7636 section 4.1
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")             # base64url(SHA-256), no padding
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{20,40}$")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def s256(verifier: str) -> str:
    """RFC 7636 section 4.2: BASE64URL(SHA256(ASCII(code_verifier)))."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).decode().rstrip("=")


def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_app_url(url: str, what: str) -> str:
    """An absolute https URL without a fragment (http only on the loopback
    interface, RFC 8252 section 7.3) -- how redirect URIs and launch URLs are registered."""
    parts = urlsplit(url)
    if len(url) > 500 or parts.fragment or not parts.netloc:
        raise InvalidRequest("HT-0292", f"{what} must be an absolute URL of at most 500 characters, no fragment")
    if parts.scheme != "https" and not (parts.scheme == "http" and _loopback(parts.hostname)):
        raise InvalidRequest("HT-0292", f"{what} must use https (http only for 127.0.0.1 / localhost)")
    return url


def with_query(url: str, params: Mapping[str, str | None]) -> str:
    """``url`` with ``params`` added to its query (RFC 6749 section 4.1.2: keep the
    registered URI's own query)."""
    extra = urlencode({k: v for k, v in params.items() if v is not None})
    return url + ("&" if urlsplit(url).query else "?") + extra


@dataclass(frozen=True, slots=True)
class Scopes:
    """A SMART scope request split into what the platform acts on."""

    resources: tuple[scopemod.Scope, ...]
    special: frozenset[str]          # offline_access / online_access
    launch: frozenset[str]           # launch / launch/patient
    unoffered: tuple[str, ...]       # understood words not granted here (openid ...)

    def claim(self) -> str:
        return " ".join([str(s) for s in self.resources] + sorted(self.special))

    def text(self) -> str:
        return " ".join([str(s) for s in self.resources] + sorted(self.special) + sorted(self.launch))


def split_scopes(text: str) -> Scopes:
    """Parse a requested scope string; a malformed resource scope raises HT-0132."""
    words = text.split()
    launch = frozenset(w for w in words if w in LAUNCH_SCOPES)
    unoffered = tuple(w for w in words if w in UNOFFERED)
    rest = [w for w in words if w not in LAUNCH_SCOPES and w not in UNOFFERED]
    resources, special = scopemod.parse(rest)
    return Scopes(resources, special, launch, unoffered)


def intersect(requested: tuple[scopemod.Scope, ...], held: tuple[scopemod.Scope, ...],
              *, patient_from_user: bool = False) -> tuple[scopemod.Scope, ...]:
    """The part of each requested scope that some held scope also allows
    (same context, the narrower type, the common letters): a grant never
    exceeds what the person holds.

    ``patient_from_user`` (clinicians): the ``patient/`` scopes an EHR-launched
    app asks for are granted as the matching ``user/`` scopes the clinician
    holds, because that is what the token allows: the clinician's own access,
    within their basis (treatment, consent, break-glass) for each patient; the
    policy does not narrow it to the launch patient, so the grant does not
    claim it (scopes-and-launch-context.html: the server may grant other
    scopes than asked, and says which)."""
    out: list[scopemod.Scope] = []
    for r in requested:
        for g in held:
            if not (g.context == r.context or (patient_from_user and r.context == "patient" and g.context == "user")):
                continue
            if g.type != "*" and r.type != "*" and g.type != r.type:
                continue
            letters = "".join(c for c in scopemod.PERMISSIONS if c in r.permissions and c in g.permissions)
            if not letters:
                continue
            context = "user" if patient_from_user and g.context == "user" else r.context
            s = scopemod.Scope(context, r.type if g.type == "*" else g.type, letters)
            if not any(x.covers(s) for x in out):
                out = [x for x in out if not s.covers(x)] + [s]
    return tuple(out)


def register_app(store: SmartStore, now: int, name: str, *, kind: str, redirect_uris: list[str],
                 launch_url: str | None = None, scopes: str | None = None) -> tuple[ClientRow, str | None]:
    """Register an app (an operator's act: `hutong smart register`); returns it and,
    for a confidential app, its secret, shown once (only its hash is kept)."""
    if kind not in ("public", "confidential"):
        raise InvalidRequest("HT-0292", "kind must be public or confidential")
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidRequest("HT-0292", "name must be 1 to 200 characters")
    if not redirect_uris or len(redirect_uris) > 10:
        raise InvalidRequest("HT-0292", "register 1 to 10 redirect URIs")
    uris = [check_app_url(u, "redirect URI") for u in redirect_uris]
    if launch_url is not None:
        check_app_url(launch_url, "launch URL")
    try:
        asked = split_scopes(scopes or DEFAULT_APP_SCOPES)
    except HutongError as e:
        raise InvalidRequest("HT-0292", e.message) from None
    if any(s.context == "system" for s in asked.resources):
        raise InvalidRequest("HT-0292", "system/ scopes are for backend services (hutong accounts add-client), "
                                        "not for apps acting for a person")
    if asked.unoffered:
        raise InvalidRequest("HT-0292", f"not offered here (no OpenID Connect): {' '.join(asked.unoffered)}")
    secret = passwords.generate_secret() if kind == "confidential" else None
    row = ClientRow(client_id="app-" + secrets.token_hex(8), name=name, kind=kind,
                    secret_hash=passwords.hash_secret(secret) if secret else None,
                    redirect_uris=orjson.dumps(uris).decode(), launch_url=launch_url, scopes=asked.text(),
                    status="active", created=now)
    store.add_client(row)
    return row, secret


@dataclass(frozen=True, slots=True)
class Pending:
    """An authorization request waiting for the person (its page: /signin/authorize/<id>)."""

    request_id: str


@dataclass(frozen=True, slots=True)
class Redirect:
    """Back to the app (RFC 6749 section 4.1.2 / 4.1.2.1)."""

    url: str


@dataclass(frozen=True, slots=True)
class Approval:
    """What the approval page shows."""

    request_id: str
    client: ClientRow
    requested: Scopes
    granted: tuple[scopemod.Scope, ...]
    refused: tuple[str, ...]          # asked for, not grantable by this person
    offline: bool
    choices: tuple[str, ...]          # persons a resident/delegate may pick (golden ids)
    launch_patient: str | None        # EHR launch: the patient the workspace showed


class SmartService:
    """Registration, authorization, code exchange, refresh and revocation of SMART apps."""

    def __init__(self, tokens: TokenService, audit: Audit) -> None:
        self.tokens = tokens
        self.accounts = tokens.accounts
        self.store = SmartStore(tokens.repo)
        self.audit = audit
        self.clock = tokens.clock

    # ------------------------------------------------------------ registration (operator)
    def register(self, name: str, *, kind: str, redirect_uris: list[str], launch_url: str | None = None,
                 scopes: str | None = None) -> tuple[ClientRow, str | None]:
        return register_app(self.store, self.clock(), name, kind=kind, redirect_uris=redirect_uris,
                            launch_url=launch_url, scopes=scopes)

    def clients(self) -> list[ClientRow]:
        return self.store.clients()

    def client(self, client_id: str) -> ClientRow | None:
        return self.store.client(client_id) if 0 < len(client_id) <= 64 else None

    def set_status(self, client_id: str, active: bool) -> None:
        if not self.store.set_client_status(client_id, "active" if active else "disabled", self.clock()):
            raise NotFound("HT-0280", "no such SMART app")

    def _active_client(self, client_id: str | None) -> ClientRow:
        c = self.client(client_id or "")
        if c is None or c.status != "active":
            # Shown to the person on a page, never sent to the app (RFC 6749 section 4.1.2.1).
            raise InvalidRequest("HT-0280", "unknown or disabled app (client_id)")
        return c

    # ------------------------------------------------------------ authorization request
    def authorize(self, params: Mapping[str, str], fhir_bases: tuple[str, ...]) -> Pending | Redirect:
        """GET /auth/authorize.  Errors about the client or redirect_uri raise (they
        are shown to the person, never sent to an unverified redirect URI: RFC 6749
        section 4.1.2.1); the others go back to the app."""
        client = self._active_client(params.get("client_id"))
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in orjson.loads(client.redirect_uris):
            raise InvalidRequest("HT-0281", "redirect_uri is not one registered for this app (compared exactly)")
        state = params.get("state")

        def back(error: str, code: str, why: str) -> Redirect:
            return Redirect(with_query(redirect_uri, {"error": error, "error_description": f"{code}: {why}",
                                                      "state": state}))

        if params.get("response_type") != "code":
            return back("unsupported_response_type", "HT-0283", "response_type must be code")
        if not state or len(state) > 500:
            return back("invalid_request", "HT-0283", "state is required (at most 500 characters)")
        method = params.get("code_challenge_method")
        challenge = params.get("code_challenge", "")
        if method != "S256" or not _CHALLENGE.match(challenge):
            return back("invalid_request", "HT-0282", "PKCE required: code_challenge_method=S256 and a "
                                                      "43-character base64url code_challenge (plain is refused)")
        aud = (params.get("aud") or "").rstrip("/")
        if aud not in {b.rstrip("/") for b in fhir_bases}:
            return back("invalid_request", "HT-0283", "aud must be this server's FHIR base URL")
        try:
            asked = split_scopes(params.get("scope", ""))
        except HutongError as e:
            return back("invalid_scope", e.code, e.message)
        registered = split_scopes(client.scopes)
        beyond = scopemod.covered(asked.resources, registered.resources)
        extra = (asked.special - registered.special) | (asked.launch - registered.launch)
        if beyond or extra:
            shown = " ".join([str(s) for s in beyond] + sorted(extra))
            return back("invalid_scope", "HT-0285", f"beyond what the app is registered for: {shown}")
        if not asked.resources:
            return back("invalid_scope", "HT-0285", "no FHIR resource scope requested")
        if len(asked.text()) > 2000:  # what smart_authorization.scope holds
            return back("invalid_scope", "HT-0285", "scope longer than 2,000 characters")
        launch = params.get("launch")
        launch_hash = None
        if launch is not None:
            row = self.store.launch(_sha(launch)) if 0 < len(launch) <= 100 else None
            if row is None or row.client_id != client.client_id or row.expires <= self.clock():
                return back("invalid_request", "HT-0286", "launch context unknown, expired or for another app")
            launch_hash = _sha(launch)
        now = self.clock()
        request_id = secrets.token_urlsafe(24)
        self.store.add_request(AuthorizationRow(
            request_id=request_id, client_id=client.client_id, redirect_uri=redirect_uri, scope=asked.text(),
            state=state, code_challenge=challenge, launch_hash=launch_hash, status="pending", account_id=None,
            patient=None, granted=None, grant_id=None, expires=now + REQUEST_TTL_MS), now)
        return Pending(request_id)

    def _pending(self, request_id: str) -> AuthorizationRow:
        row = self.store.request(request_id) if _REQUEST_ID.match(request_id) else None
        if row is None or row.status != "pending" or row.expires <= self.clock():
            raise NotFound("HT-0284", "this authorization request is unknown, expired or already answered; "
                                      "start again from the app")
        return row

    def _launch_of(self, row: AuthorizationRow, who: Principal) -> LaunchRow | None:
        if row.launch_hash is None:
            return None
        launch = self.store.launch(row.launch_hash)
        if launch is None or launch.expires <= self.clock() or launch.client_id != row.client_id:
            raise Forbidden("HT-0286", "the launch context has expired; launch the app again")
        if launch.account_id != who.account_id:
            raise Forbidden("HT-0286", "this launch was made by another user")
        return launch

    def approval(self, request_id: str, who: Principal) -> Approval:
        """What the signed-in person is asked to approve."""
        if who.role not in APP_ROLES:
            raise Forbidden("HT-0294", "only residents, delegates and clinicians can authorize apps")
        row = self._pending(request_id)
        client = self._active_client(row.client_id)
        account = self.accounts.get(who.account_id)
        if account is None or account.status != "active":
            raise Forbidden("HT-0294", "this account cannot authorize apps now")
        asked = split_scopes(row.scope)
        launch = self._launch_of(row, who)
        held = scopemod.parse(account.scopes)[0]
        granted = intersect(asked.resources, held, patient_from_user=who.role is Role.CLINICIAN)
        clinician = who.role is Role.CLINICIAN
        refused = tuple(str(s) for s in asked.resources if scopemod.covered(
            [scopemod.Scope("user", s.type, s.permissions) if clinician and s.context == "patient" else s], granted))
        refused += asked.unoffered
        choices = account.persons(self.clock()) if who.role in PERSON_ROLES else ()
        return Approval(request_id, client, asked, granted, refused, "offline_access" in asked.special,
                        choices, launch.patient if launch else None)

    def decide(self, request_id: str, who: Principal, *, approve: bool, patient: str | None,
               peer: str | None) -> Redirect:
        """The person's answer: a code (or access_denied) back to the app."""
        view = self.approval(request_id, who)
        row = self._pending(request_id)
        now = self.clock()
        if not approve:
            self.store.decide(request_id, status="denied", account_id=who.account_id, patient=None, granted=None,
                              code_hash=None, expires=now)
            self.audit(AuditRecord(action="smart-authorize", outcome=REFUSED, principal=who, peer=peer,
                                   code="HT-0293", extra={"client_id": row.client_id, "decision": "denied"}))
            return Redirect(with_query(row.redirect_uri, {
                "error": "access_denied", "error_description": "HT-0293: the person did not approve the request",
                "state": row.state}))
        chosen: str | None = None
        if who.role in PERSON_ROLES:
            # Authority from the platform's facts: the account's own person or a live delegation.
            chosen = patient or (view.choices[0] if len(view.choices) == 1 else None)
            if chosen is None or chosen not in view.choices:
                self.audit(AuditRecord(action="smart-authorize", outcome=REFUSED, principal=who, peer=peer,
                                       code="HT-0287", extra={"client_id": row.client_id}))
                raise Forbidden("HT-0287", "choose your own record or one delegated to you")
        elif view.launch_patient is not None:
            chosen = view.launch_patient
        if not view.granted:
            self.store.decide(request_id, status="denied", account_id=who.account_id, patient=None, granted=None,
                              code_hash=None, expires=now)
            self.audit(AuditRecord(action="smart-authorize", outcome=REFUSED, principal=who, peer=peer,
                                   code="HT-0285", extra={"client_id": row.client_id}))
            return Redirect(with_query(row.redirect_uri, {
                "error": "invalid_scope", "state": row.state,
                "error_description": "HT-0285: none of the requested scopes can be granted by this person"}))
        granted = Scopes(view.granted, view.requested.special, view.requested.launch, ())
        code = secrets.token_urlsafe(32)
        if not self.store.decide(request_id, status="approved", account_id=who.account_id, patient=chosen,
                                 granted=granted.text(), code_hash=_sha(code), expires=now + CODE_TTL_MS):
            raise NotFound("HT-0284", "this authorization request was already answered")
        self.audit(AuditRecord(action="smart-authorize", outcome=SUCCESS, principal=who, peer=peer,
                               persons=(chosen,) if chosen and who.role in PERSON_ROLES else (),
                               on_behalf_of=chosen if who.role is Role.DELEGATE else None,
                               extra={"client_id": row.client_id, "scope": granted.text()[:500]}))
        return Redirect(with_query(row.redirect_uri, {"code": code, "state": row.state}))

    # ------------------------------------------------------------ EHR launch (clinician workspace)
    def launch(self, who: Principal, client_id: str, patient: str, fhir_base: str) -> str:
        """A launch context for the patient the workspace shows; the app's launch URL
        with ``iss`` and ``launch`` (app-launch.html#launch-app-ehr-launch)."""
        if who.role is not Role.CLINICIAN:
            raise Forbidden("HT-0294", "apps are launched from the clinician workspace by clinicians")
        client = self._active_client(client_id)
        if not client.launch_url:
            raise InvalidRequest("HT-0286", "this app has no launch URL (standalone launch only)")
        token = secrets.token_urlsafe(24)
        now = self.clock()
        self.store.add_launch(_sha(token), LaunchRow(who.account_id, client.client_id, patient,
                                                     now + LAUNCH_TTL_MS), now)
        return with_query(client.launch_url, {"iss": fhir_base, "launch": token})

    def launchable(self) -> list[ClientRow]:
        return [c for c in self.store.clients() if c.status == "active" and c.launch_url]

    # ------------------------------------------------------------ token endpoint
    def _client_auth(self, form: Mapping[str, str], basic: tuple[str, str] | None) -> ClientRow:
        """RFC 6749 section 2.3: confidential apps authenticate (Basic or post);
        public apps name themselves with client_id and hold no secret."""
        if basic is not None and "client_secret" in form:
            raise InvalidRequest("HT-0283", "use one client authentication method only")
        secret: str | None
        if basic is not None:
            client_id, secret = basic
            if form.get("client_id") not in (None, client_id):
                raise Unauthorized("HT-0290", "client_id does not match the Basic credentials")
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret")
        c = self.client(client_id)
        if c is None or c.status != "active":
            passwords.verify_secret(None, secret or "x")  # same cost: the answer tells nothing
            raise Unauthorized("HT-0290", "client authentication failed")
        if c.kind == "confidential":
            if not secret or not passwords.verify_secret(c.secret_hash, secret):
                raise Unauthorized("HT-0290", "client authentication failed")
        elif secret is not None:
            raise Unauthorized("HT-0290", "a public app has no client secret")
        return c

    def _issue(self, a: Account, grant: GrantRow, scopes: Scopes, *, refresh: bool,
               refresh_expires: int | None = None) -> dict[str, Any]:
        persons: tuple[str, ...] | None = None
        if a.role in PERSON_ROLES:
            # Never the account's whole list: an app sees one person's record or none.
            persons = (grant.patient,) if grant.patient else ()
        out = self.tokens.issue(a, scopes.claim(), client_id=grant.client_id, refresh=refresh,
                                family=grant.grant_id, refresh_expires=refresh_expires, persons=persons)
        claims = self.tokens.decode(out["access_token"], check_time=False)
        if not self.store.add_grant_token(grant.grant_id, str(claims["jti"]), int(claims["exp"]) * 1000,
                                          self.clock()):
            # Revoked while this token was being made (e.g. its code replayed at the same moment).
            self.tokens.revoke_access(str(claims["jti"]), claims["exp"])
            self.tokens.revoke_family(grant.grant_id)
            raise Unauthorized("HT-0291", "the grant was revoked while its token was issued")
        out["scope"] = scopes.text()
        # app-launch.html#launch-context-arrives-with-your-access_token
        if grant.patient and (scopes.launch or a.role in PERSON_ROLES):
            out["patient"] = grant.patient
            out["need_patient_banner"] = a.role is Role.CLINICIAN
        return out

    def _audit_token(self, action: str, response: dict[str, Any], grant: GrantRow, peer: str | None) -> None:
        claims = self.tokens.decode(response["access_token"], check_time=False)
        who = principal_from_claims(claims, peer)
        self.audit(AuditRecord(action=action, outcome=SUCCESS, principal=who, peer=peer, claimed=grant.client_id,
                               persons=who.persons, extra={"client_id": grant.client_id,
                                                           "grant": grant.grant_id[:12]}))

    def refused(self, action: str, e: HutongError, claimed: str | None, peer: str | None) -> None:
        self.audit(AuditRecord(action=action, outcome=REFUSED, claimed=(claimed or "")[:64] or None, peer=peer,
                               code=e.code))

    def exchange(self, form: Mapping[str, str], basic: tuple[str, str] | None, peer: str | None) -> dict[str, Any]:
        """grant_type=authorization_code (RFC 6749 section 4.1.3; RFC 7636 section 4.5)."""
        try:
            client = self._client_auth(form, basic)
            code = form.get("code", "")
            row = self.store.by_code(_sha(code)) if 0 < len(code) <= 200 else None
            bad = Unauthorized("HT-0288", "authorization code invalid, expired, already used, or issued to "
                                          "another client or redirect_uri")
            if row is None or row.client_id != client.client_id:
                raise bad
            if row.status == "used":
                # RFC 6749 section 4.1.2: a code used twice revokes what it issued.
                if row.grant_id:
                    self._end_grant(row.grant_id)
                raise bad
            if row.status != "approved" or row.expires <= self.clock():
                raise bad
            if form.get("redirect_uri") != row.redirect_uri:
                raise bad
            verifier = form.get("code_verifier", "")
            if not _VERIFIER.match(verifier) or not hmac.compare_digest(s256(verifier), row.code_challenge):
                raise Unauthorized("HT-0289", "code_verifier does not match the code_challenge (PKCE S256)")
            a = self.accounts.get(row.account_id or "")
            if a is None or a.status != "active":
                raise Unauthorized("HT-0288", "the account that approved this code is disabled")
            granted = split_scopes(row.granted or "")
            now = self.clock()
            offline = "offline_access" in granted.special
            grant = GrantRow(grant_id=secrets.token_hex(16), client_id=client.client_id, account_id=a.id,
                             patient=row.patient, scope=granted.text(), created=now,
                             expires=now + (GRANT_DAYS * 86_400_000 if offline else CODE_TTL_MS +
                                            self.tokens.settings.access_token_minutes * 60_000), revoked=None)
            if not self.store.use_code(row.request_id, grant):
                # Used by a concurrent request a moment ago: a replay like any other.
                used = self.store.request(row.request_id)
                if used is not None and used.grant_id:
                    self._end_grant(used.grant_id)
                raise bad
            response = self._issue(a, grant, granted, refresh=offline, refresh_expires=grant.expires)
        except HutongError as e:
            self.refused("token", e, form.get("client_id") or (basic[0] if basic else None), peer)
            raise
        self._audit_token("token", response, grant, peer)
        return response

    def grant_of_refresh(self, token: str) -> GrantRow | None:
        """The SMART grant a refresh token belongs to (None: a platform sign-in's)."""
        if not token or len(token) > 512:
            return None
        row = self.tokens.store.refresh_row(hash_token(token))
        return self.store.grant(row.family) if row is not None else None

    def refresh(self, form: Mapping[str, str], basic: tuple[str, str] | None, grant: GrantRow,
                peer: str | None) -> dict[str, Any]:
        """grant_type=refresh_token for an app's grant (RFC 6749 section 6): client
        authenticated as at the code exchange, the grant live, the scopes within
        the grant and within what the person still holds, the token rotated."""
        try:
            client = self._client_auth(form, basic)
            refused = Unauthorized("HT-0291", "refresh token invalid, or its grant was revoked or has expired")
            if client.client_id != grant.client_id:
                raise refused
            now = self.clock()
            h = hash_token(form.get("refresh_token", ""))
            row = self.tokens.store.refresh_row(h)
            if row is None or grant.revoked is not None or grant.expires <= now or row.expires <= now:
                raise refused
            if row.revoked:  # a rotated-away token came back: end the whole grant (RFC 9700 section 4.14.2)
                self._end_grant(grant.grant_id)
                raise refused
            a = self.accounts.get(grant.account_id)
            if a is None or a.status != "active":
                raise refused
            if grant.patient and a.role in PERSON_ROLES and grant.patient not in a.persons(now):
                raise Unauthorized("HT-0287", "the delegation behind this grant has ended")
            had = split_scopes(grant.scope)
            asked = split_scopes(form["scope"]) if form.get("scope") else had
            if scopemod.covered(asked.resources, had.resources) or not asked.special <= had.special:
                raise InvalidRequest("HT-0285", "scope beyond the original grant")
            kept = intersect(asked.resources, scopemod.parse(a.scopes)[0],
                             patient_from_user=a.role is Role.CLINICIAN)
            if not kept:
                raise refused
            if not self.tokens.store.rotate(h, now):
                self._end_grant(grant.grant_id)
                raise refused
            response = self._issue(a, grant, Scopes(kept, asked.special, had.launch, ()), refresh=True,
                                   refresh_expires=grant.expires)
        except HutongError as e:
            self.refused("refresh", e, grant.client_id, peer)
            raise
        self._audit_token("refresh", response, grant, peer)
        return response

    # ------------------------------------------------------------ revocation
    def _end_grant(self, grant_id: str) -> None:
        for jti, exp_ms in self.store.revoke_grant(grant_id, self.clock()):
            self.tokens.revoke_access(jti, exp_ms / 1000)
        self.tokens.revoke_family(grant_id)

    def revoke_refresh(self, grant: GrantRow, peer: str | None) -> None:
        """RFC 7009 with an app's refresh token: the whole grant ends."""
        self._end_grant(grant.grant_id)
        self.audit(AuditRecord(action="revoke", outcome=SUCCESS, claimed=grant.client_id, peer=peer,
                               persons=(grant.patient,) if grant.patient else (),
                               extra={"client_id": grant.client_id, "grant": grant.grant_id[:12], "by": "app"}))

    def grants_for(self, who: Principal) -> list[tuple[GrantRow, ClientRow | None]]:
        """Apps this person may end: a resident's, those with access to their record
        (whoever granted it); a delegate's, those the delegate granted."""
        persons = who.persons if who.role is Role.RESIDENT else ()
        rows = self.store.grants_for(patients=tuple(persons), account_id=who.account_id, now=self.clock())
        return [(g, self.store.client(g.client_id)) for g in rows]

    def revoke_grant(self, grant_id: str, who: Principal, peer: str | None) -> GrantRow:
        """A person ends an app's access (their own grant, or any grant on their record)."""
        g = self.store.grant(grant_id) if 0 < len(grant_id) <= 40 else None
        mine = g is not None and (g.account_id == who.account_id or (
            g.patient is not None and who.role is Role.RESIDENT and g.patient in who.persons))
        if g is None or not mine:
            raise NotFound("HT-0291", "no such app access on your record")
        self._end_grant(g.grant_id)
        self.audit(AuditRecord(action="revoke", outcome=SUCCESS, principal=who, peer=peer,
                               persons=(g.patient,) if g.patient else (),
                               extra={"client_id": g.client_id, "grant": g.grant_id[:12], "by": "person"}))
        return g

    # ------------------------------------------------------------ discovery
    @staticmethod
    def configuration(base: str, *, grant_types: tuple[str, ...], auth_methods: list[str],
                      signing_algs: list[str]) -> dict[str, Any]:
        """SMART App Launch 2.0 conformance.html#metadata: the required fields
        (authorization_endpoint, token_endpoint, capabilities,
        code_challenge_methods_supported with S256 and never plain) and those this
        server has.  No ``issuer``: it is for OpenID Connect, which is not
        offered (sso-openid-connect is not among the capabilities); ``jwks_uri``
        publishes the access-token key (optional in SMART 2.0)."""
        return {
            "authorization_endpoint": f"{base}/auth/authorize",
            "token_endpoint": f"{base}/auth/token",
            "jwks_uri": f"{base}/auth/jwks",
            "token_endpoint_auth_methods_supported": auth_methods,
            "token_endpoint_auth_signing_alg_values_supported": signing_algs,
            "revocation_endpoint": f"{base}/auth/revoke",
            "grant_types_supported": list(grant_types),
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["launch", "launch/patient", "offline_access", "patient/*.rs", "patient/*.cruds",
                                 "user/*.rs", "user/*.cruds", "system/*.rs", "system/*.cruds"],
            "capabilities": ["launch-ehr", "launch-standalone", "client-public", "client-confidential-symmetric",
                             "client-confidential-asymmetric", "context-ehr-patient", "context-standalone-patient",
                             "permission-offline", "permission-patient", "permission-user", "permission-v1",
                             "permission-v2"],
        }
