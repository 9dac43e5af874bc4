"""The /auth routes over real HTTP (uvicorn + httpx) on SQLite and PostgreSQL:
token endpoint (client secret, private_key_jwt), scope escalation, staff
sign-in with back-off after failures, residents' SMS codes, refresh, revocation, discovery;
and the SMART v2 scope grammar."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyotp
import pytest
from fastapi import FastAPI
from harness import serving
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from hutong.errors import HutongError, InvalidRequest, Unauthorized
from hutong.fhir.assembly import open_repository
from hutong.security import scopes, totp
from hutong.security.accounts import TABLES, Accounts
from hutong.security.authn import Authenticator
from hutong.security.events import REFUSED, SUCCESS, AuditRecord
from hutong.security.principal import Role
from hutong.security.settings import SecuritySettings
from hutong.security.sms import OutboxGateway
from hutong.store.sql import SqlRepository
from hutong.web.auth_routes import register

ID_NUMBER = "11010519491231002X"
PW = "Zhongshan-Rd-88"
FORM = {"content-type": "application/x-www-form-urlencoded"}


class Clock:
    """Real time plus an offset the test may move."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset


@dataclass
class Auth:
    root: str
    http: httpx.Client
    repo: SqlRepository
    authn: Authenticator
    accounts: Accounts
    audit: list[AuditRecord]
    persons: dict[str, str]
    outbox: OutboxGateway
    clock: Clock

    def bearer(self, token: str) -> Any:
        return self.authn.authenticate("Bearer " + token, "127.0.0.1")


@pytest.fixture
def auth(db_url: str, tmp_path: Path) -> Iterator[Auth]:
    repo = open_repository(db_url)
    with repo.db.engine.begin() as conn:
        for t in TABLES:
            conn.execute(t.delete())
    app = FastAPI()
    records: list[AuditRecord] = []
    persons: dict[str, str] = {}
    outbox = OutboxGateway(tmp_path / "outbox.jsonl")
    clock = Clock()
    authn = register(app, repo, SecuritySettings(), tmp_path / "keys", records.append, persons.get,
                     sms=outbox, clock=clock)
    try:
        with serving(app) as root, httpx.Client(base_url=root, timeout=30) as http:
            yield Auth(root, http, repo, authn, app.state.auth_service.accounts, records, persons, outbox, clock)
    finally:
        repo.db.close()


def institution(auth: Auth, **kw: Any) -> tuple[str, str]:
    a, secret = auth.accounts.add_client("协和 HIS", organization="400000001", organization_id="org-1", **kw)
    assert a.client_id
    return a.client_id, secret or ""


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def token(auth: Auth, form: dict[str, str], headers: dict[str, str] | None = None) -> httpx.Response:
    return auth.http.post("/auth/token", data=form, headers={**FORM, **(headers or {})})


def oauth_error(r: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["error"] == error and body["error_description"]
    return body


# ------------------------------------------------------------------ discovery
def test_smart_configuration_and_jwks(auth: Auth) -> None:
    for path in ("/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"):
        r = auth.http.get(path)
        assert r.status_code == 200
        c = r.json()
        assert c["token_endpoint"] == auth.root + "/auth/token"
        assert c["revocation_endpoint"] == auth.root + "/auth/revoke"
        assert c["jwks_uri"] == auth.root + "/auth/jwks"
        assert set(c["token_endpoint_auth_methods_supported"]) == {
            "client_secret_basic", "client_secret_post", "private_key_jwt"}
        assert {"authorization_code", "client_credentials", "refresh_token"} == set(c["grant_types_supported"])
        assert "password" not in c["grant_types_supported"]
        assert {"client-confidential-symmetric", "client-confidential-asymmetric", "permission-v2"} <= set(
            c["capabilities"])
        assert c["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    keys = auth.http.get("/auth/jwks").json()["keys"]
    assert keys[0]["kty"] == "EC" and "d" not in keys[0]


# ------------------------------------------------------------------ client credentials
def test_client_secret_basic_and_post(auth: Auth) -> None:
    cid, secret = institution(auth)
    r = token(auth, {"grant_type": "client_credentials"}, basic(cid, secret))
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "system/*.cruds" and "refresh_token" not in body
    p = auth.bearer(body["access_token"])
    assert p.role == Role.INSTITUTION and p.client_id == cid and p.organization_id == "org-1"
    r = token(auth, {"grant_type": "client_credentials", "client_id": cid, "client_secret": secret,
                     "scope": "system/Patient.rs system/Observation.read"})
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "system/Patient.rs system/Observation.rs"
    assert auth.bearer(r.json()["access_token"]).scopes == ("system/Patient.rs", "system/Observation.rs")
    ok = [a for a in auth.audit if a.action == "token" and a.outcome == SUCCESS]
    assert len(ok) == 2 and ok[0].claimed == cid and ok[0].principal and ok[0].principal.client_id == cid


def test_client_authentication_failures(auth: Auth) -> None:
    cid, secret = institution(auth)
    r = token(auth, {"grant_type": "client_credentials"}, basic(cid, "wrong"))
    oauth_error(r, 401, "invalid_client")
    assert r.headers["www-authenticate"].startswith("Basic")
    oauth_error(token(auth, {"grant_type": "client_credentials"}, basic("hc-nobody", secret)), 401,
                "invalid_client")
    oauth_error(token(auth, {"grant_type": "client_credentials"}), 401, "invalid_client")
    oauth_error(token(auth, {"grant_type": "client_credentials"}, {"authorization": "Basic !!!"}), 401,
                "invalid_client")
    # Two methods at once (RFC 6749 2.3).
    oauth_error(token(auth, {"grant_type": "client_credentials", "client_id": cid, "client_secret": secret},
                      basic(cid, secret)), 400, "invalid_request")
    refusals = [a for a in auth.audit if a.action == "token" and a.outcome == REFUSED]
    assert refusals and all(a.code for a in refusals) and all(secret not in repr(a) for a in auth.audit)


def test_scope_escalation_is_refused(auth: Auth) -> None:
    cid, secret = institution(auth, scopes_text="system/Patient.rs system/Observation.cruds")
    for asked in ("system/*.rs", "system/Patient.cruds", "system/Encounter.r", "user/Patient.rs",
                  "system/Patient.rs system/Condition.rs"):
        body = oauth_error(token(auth, {"grant_type": "client_credentials", "scope": asked}, basic(cid, secret)),
                           400, "invalid_scope")
        assert "HT-0131" in body["error_description"]
    body = oauth_error(token(auth, {"grant_type": "client_credentials", "scope": "system/Patient.sr"},
                             basic(cid, secret)), 400, "invalid_scope")
    assert "HT-0132" in body["error_description"]
    r = token(auth, {"grant_type": "client_credentials", "scope": "system/Observation.rs"}, basic(cid, secret))
    assert r.status_code == 200 and r.json()["scope"] == "system/Observation.rs"


@pytest.mark.parametrize("form, error", [
    ({"grant_type": "password", "username": "x", "password": "y"}, "unsupported_grant_type"),
    # authorization_code is offered to SMART apps (tests/security/test_smart_flow.py)
    ({"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": "x"}, "unsupported_grant_type"),
    ({}, "invalid_request"),
    ({"grant_type": "refresh_token"}, "invalid_request"),
])
def test_token_request_errors(auth: Auth, form: dict[str, str], error: str) -> None:
    oauth_error(token(auth, form), 400, error)


def test_malformed_token_requests_never_500(auth: Auth) -> None:
    cid, secret = institution(auth)
    r = auth.http.post("/auth/token", content=b'{"grant_type": "client_credentials"}',
                       headers={"content-type": "application/json", **basic(cid, secret)})
    oauth_error(r, 400, "invalid_request")
    r = auth.http.post("/auth/token", content=b"grant_type=client_credentials&grant_type=refresh_token",
                       headers={**FORM, **basic(cid, secret)})
    oauth_error(r, 400, "invalid_request")  # repeated parameter (RFC 6749 3.2)
    r = auth.http.post("/auth/token", content=b"\xff\xfe=\xff", headers=FORM)
    assert r.status_code == 400
    r = auth.http.post("/auth/token", content=b"a=" + b"x" * 70_000, headers=FORM)
    assert r.status_code == 400
    r = token(auth, {"grant_type": "client_credentials", "client_assertion_type": "x", "client_assertion": "y"})
    oauth_error(r, 401, "invalid_client")


# ------------------------------------------------------------------ private_key_jwt
def assertion(key: Any, alg: str, client_id: str, aud: str, *, exp_in: int = 240, jti: str | None = None,
              sub: str | None = None, kid: str | None = "k1") -> str:
    now = int(time.time())
    header = {"alg": alg, "typ": "JWT", **({"kid": kid} if kid else {})}
    return jwt.encode(header, {"iss": client_id, "sub": sub or client_id, "aud": aud, "exp": now + exp_in,
                               "jti": jti or uuid.uuid4().hex}, key, algorithms=[alg])


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_private_key_jwt(auth: Auth, alg: str) -> None:
    key: Any = (ECKey.generate_key("P-384", private=True) if alg == "ES384"
                else RSAKey.generate_key(2048, private=True))
    pub = dict(key.as_dict(private=False), kid="k1", alg=alg)
    a, secret = auth.accounts.add_client("LIS", organization="400000002", organization_id="org-2",
                                         jwks={"keys": [pub]}, secret=False)
    assert secret is None and a.client_id
    cid = a.client_id
    url = auth.root + "/auth/token"

    def ask(jwt_: str, **extra: str) -> httpx.Response:
        return token(auth, {"grant_type": "client_credentials", "scope": "system/*.rs",
                            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                            "client_assertion": jwt_, **extra})

    jti = uuid.uuid4().hex
    r = ask(assertion(key, alg, cid, url, jti=jti))
    assert r.status_code == 200, r.text
    assert auth.bearer(r.json()["access_token"]).client_id == cid
    oauth_error(ask(assertion(key, alg, cid, url, jti=jti)), 401, "invalid_client")         # replay
    oauth_error(ask(assertion(key, alg, cid, "https://elsewhere/token")), 401, "invalid_client")  # aud
    oauth_error(ask(assertion(key, alg, cid, url, exp_in=600)), 401, "invalid_client")        # > 5 min
    oauth_error(ask(assertion(key, alg, cid, url, exp_in=-120)), 401, "invalid_client")       # expired
    oauth_error(ask(assertion(key, alg, cid, url, sub="someone-else")), 401, "invalid_client")
    other: Any = (ECKey.generate_key("P-384", private=True) if alg == "ES384"
                  else RSAKey.generate_key(2048, private=True))
    oauth_error(ask(assertion(other, alg, cid, url)), 401, "invalid_client")                  # wrong key
    weak = ECKey.generate_key("P-256", private=True)
    oauth_error(ask(assertion(weak, "ES256", cid, url)), 401, "invalid_client")               # alg not allowed
    oauth_error(ask(assertion(key, alg, cid, url), client_id="hc-other"), 401, "invalid_client")
    # No kid: the registered key is tried.
    r = ask(assertion(key, alg, cid, url, kid=None))
    assert r.status_code == 200, r.text
    # This client has no secret: client_secret_post cannot work.
    oauth_error(token(auth, {"grant_type": "client_credentials", "client_id": cid, "client_secret": ""}), 401,
                "invalid_client")


# ------------------------------------------------------------------ staff sign-in
def staff(auth: Auth) -> str:
    _, _, uri = auth.accounts.add_user("dr.sun", role=Role.CLINICIAN, name="孙医生", password=PW,
                                       organization="400000001", organization_id="org-1", practitioner_id="pr-9")
    secret: str = pyotp.parse_uri(uri).secret
    return secret


def login(auth: Auth, username: str, password: str, code: str | None) -> httpx.Response:
    return auth.http.post("/auth/login", json={"username": username, "password": password, "totp": code})


def test_login_refresh_revoke(auth: Auth) -> None:
    secret = staff(auth)
    r = login(auth, "dr.sun", PW, totp.code_at(secret, auth.clock()))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["account"]["username"] == "dr.sun" and "password" not in orjson.dumps(body).decode().lower()
    p = auth.bearer(body["access_token"])
    assert p.role == Role.CLINICIAN and p.practitioner_id == "pr-9"
    # Refresh through the token endpoint, then reuse of the old one is refused.
    r2 = token(auth, {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]})
    assert r2.status_code == 200, r2.text
    oauth_error(token(auth, {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}), 400,
                "invalid_grant")
    # Revocation (RFC 7009) of the access token.
    access = r2.json()["access_token"]
    assert auth.http.post("/auth/revoke", data={"token": access}, headers=FORM).status_code == 200
    with pytest.raises(Unauthorized) as e:
        auth.bearer(access)
    assert e.value.code == "HT-0124"
    assert auth.http.post("/auth/revoke", data={"token": "unknown"}, headers=FORM).status_code == 200
    assert auth.http.post("/auth/revoke", data={}, headers=FORM).status_code == 400
    actions = [(a.action, a.outcome) for a in auth.audit]
    assert ("login", SUCCESS) in actions and ("refresh", SUCCESS) in actions and ("refresh", REFUSED) in actions
    assert ("revoke", SUCCESS) in actions


def test_login_failures_and_back_off_over_http(auth: Auth) -> None:
    secret = staff(auth)
    wrong = login(auth, "dr.sun", "Wrong-pass-1", None)
    unknown = login(auth, "nobody", "Wrong-pass-1", None)
    for r in (wrong, unknown):
        assert r.status_code == 401 and r.json()["resourceType"] == "OperationOutcome"
    assert wrong.json() == unknown.json()                        # the same answer: no enumeration
    for _ in range(4):
        login(auth, "dr.sun", "Wrong-pass-1", None)
    # The 5th failure from this address holds it back (1 s, doubling): even the
    # right password is refused, with the very same answer (issue 12, finding 13).
    held = login(auth, "dr.sun", PW, totp.code_at(secret, auth.clock()))
    assert held.status_code == 401 and held.json() == wrong.json()
    holds = [a for a in auth.audit if a.code == "HT-0140"]
    assert holds and holds[0].claimed == "dr.sun" and holds[0].outcome == REFUSED
    assert auth.accounts.by_username("dr.sun").status == "active"   # no account lock
    auth.clock.offset += 1_001                                   # the back-off has passed
    right = login(auth, "dr.sun", PW, totp.code_at(secret, auth.clock()))
    assert right.status_code == 200, right.text
    assert all(PW not in repr(a) and "Wrong-pass-1" not in repr(a) for a in auth.audit)
    # Malformed bodies: 400 OperationOutcome, never 500.
    for content, ctype in ((b"[1,2]", "application/json"), (b"{", "application/json"),
                           (b"username=x", "application/x-www-form-urlencoded"),
                           (b'{"username": 5, "password": []}', "application/json")):
        r = auth.http.post("/auth/login", content=content, headers={"content-type": ctype})
        assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome", r.text


def test_expired_password_must_be_changed(auth: Auth) -> None:
    secret = staff(auth)
    auth.accounts.settings = SecuritySettings(password_max_age_days=90)
    auth.clock.offset = 91 * 86_400_000
    r = login(auth, "dr.sun", PW, totp.code_at(secret, auth.clock()))
    assert r.status_code == 401 and "HT-0129" in r.text
    auth.clock.offset += 30_000
    r = auth.http.post("/auth/password", json={"username": "dr.sun", "old": PW, "new": "Brand-New-Pw1",
                                               "totp": totp.code_at(secret, auth.clock())})
    assert r.status_code == 200, r.text
    auth.clock.offset += 30_000
    r = login(auth, "dr.sun", "Brand-New-Pw1", totp.code_at(secret, auth.clock()))
    assert r.status_code == 200, r.text


# ------------------------------------------------------------------ residents
def test_resident_sign_in_with_sms_code(auth: Auth) -> None:
    auth.persons[ID_NUMBER] = "mpi-r1"
    auth.accounts.add_resident("mpi-r1", phone="13800138000")
    r = auth.http.post("/auth/otp/send", json={"id_number": "110105194912310029"})   # nobody
    assert r.status_code == 202 and auth.outbox.messages() == []
    unknown_body = r.json()
    r = auth.http.post("/auth/otp/send", json={"id_number": ID_NUMBER.lower()})
    assert r.status_code == 202 and r.json() == unknown_body                # same answer either way
    msgs = auth.outbox.messages()
    assert len(msgs) == 1 and msgs[0]["to"] == "13800138000" and msgs[0]["status"] == "outbox"
    code = next(w for w in str(msgs[0]["text"]).replace("，", " ").split() if w.isdigit() and len(w) == 6)
    # Rate limit: a second send within a minute sends nothing but answers the same.
    r = auth.http.post("/auth/otp/send", json={"id_number": ID_NUMBER})
    assert r.status_code == 202 and len(auth.outbox.messages()) == 1
    bad = auth.http.post("/auth/otp/verify", json={"id_number": ID_NUMBER, "code": "000000" if code != "000000"
                                                   else "111111"})
    assert bad.status_code == 401 and "HT-0134" in bad.text
    r = auth.http.post("/auth/otp/verify", json={"id_number": ID_NUMBER, "code": code})
    assert r.status_code == 200, r.text
    p = auth.bearer(r.json()["access_token"])
    assert p.role == Role.RESIDENT and p.persons == ("mpi-r1",) and p.scopes == (
        "patient/*.rs", "patient/Consent.cruds", "patient/Task.cru")
    again = auth.http.post("/auth/otp/verify", json={"id_number": ID_NUMBER, "code": code})
    assert again.status_code == 401                                          # a code works once
    # The ID number is nowhere: not in audit records, not in the account tables.
    assert all(ID_NUMBER not in repr(a) and ID_NUMBER.lower() not in repr(a) for a in auth.audit)
    for t in TABLES:
        for row in auth.repo.query("SELECT * FROM " + t.name):  # noqa: S608  (table names of this module)
            assert ID_NUMBER not in repr(row) and code not in repr(row)
    assert any(a.action == "otp" and a.outcome == SUCCESS for a in auth.audit)
    assert any(a.action == "login" and a.outcome == SUCCESS and a.claimed is None for a in auth.audit)


def test_otp_code_burns_after_five_wrong_over_http(auth: Auth) -> None:
    auth.persons[ID_NUMBER] = "mpi-r1"
    auth.accounts.add_resident("mpi-r1", phone="13800138000")
    assert auth.http.post("/auth/otp/send", json={"id_number": ID_NUMBER}).status_code == 202
    code = next(w for w in str(auth.outbox.messages()[0]["text"]).replace("，", " ").split()
                if w.isdigit() and len(w) == 6)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        assert auth.http.post("/auth/otp/verify", json={"id_number": ID_NUMBER, "code": wrong}).status_code == 401
    r = auth.http.post("/auth/otp/verify", json={"id_number": ID_NUMBER, "code": code})
    assert r.status_code == 401 and "HT-0134" in r.text


# ------------------------------------------------------------------ scope grammar (SMART v2)
@pytest.mark.parametrize("text, canonical", [
    ("patient/Observation.rs", "patient/Observation.rs"),
    ("user/*.cruds", "user/*.cruds"),
    ("system/Patient.c", "system/Patient.c"),
    ("patient/*.read", "patient/*.rs"),           # v1
    ("user/Observation.write", "user/Observation.cud"),
    ("system/*.*", "system/*.cruds"),
    ("patient/*.rs patient/*.read offline_access", "patient/*.rs offline_access"),
])
def test_scope_grammar(text: str, canonical: str) -> None:
    assert scopes.normalize(text) == canonical


@pytest.mark.parametrize("text", [
    "patient/Observation.sr", "user/*.rr", "system/*.x", "admin/*.rs", "patient/observation.rs",
    "patient/Observation", "patient/*.", "openid", "patient/Observation.rs?category=laboratory",
    "patient/*.cruds.rs", "/*.rs", "patient//.rs",
])
def test_scope_grammar_refuses(text: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        scopes.parse(text)
    assert e.value.code == "HT-0132"


def test_scope_comparison_and_allows() -> None:
    assert scopes.narrow(None, "user/*.rs") == "user/*.rs"
    assert scopes.narrow("user/Patient.r", "user/*.rs") == "user/Patient.r"
    for asked, granted in (("user/*.rs", "user/Patient.rs"), ("user/Patient.c", "user/*.rs"),
                           ("patient/*.rs", "user/*.rs"), ("system/*.s", "user/*.cruds")):
        with pytest.raises(HutongError) as e:
            scopes.narrow(asked, granted)
        assert e.value.code == "HT-0131"
    g = ["user/*.rs", "user/Consent.cruds"]
    assert scopes.allows(g, "Observation", "read") and scopes.allows(g, "Observation", "search-type")
    assert not scopes.allows(g, "Observation", "create") and scopes.allows(g, "Consent", "create")
    assert scopes.allows(g, "Consent", "d") and not scopes.allows(g, "Patient", "delete")
    assert not scopes.allows(g, "Observation", "read", contexts=["patient"])
    assert not scopes.allows(["garbage", "user/*.zz"], "Observation", "read")       # fails closed
    with pytest.raises(ValueError):
        scopes.allows(g, "Observation", "frobnicate")
