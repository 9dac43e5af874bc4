"""Access tokens and refresh tokens against attack: forged, expired, revoked,
oversized, malformed, escalated, replayed refresh tokens, idle sessions."""

from __future__ import annotations

import base64
import hashlib
import hmac
import stat
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from hutong.errors import HutongError, Unauthorized
from hutong.fhir.assembly import open_repository
from hutong.security.accounts import TABLES, Accounts
from hutong.security.authn import Authenticator
from hutong.security.principal import Role
from hutong.security.settings import SecuritySettings
from hutong.security.tokens import KEY_FILE, TokenService, load_signing_key

T0 = 1_767_225_600_000
MIN = 60_000


class Clock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Env:
    def __init__(self, repo: object, tokens: TokenService, authn: Authenticator, clock: Clock,
                 key_dir: Path) -> None:
        self.repo = repo
        self.tokens = tokens
        self.accounts: Accounts = tokens.accounts
        self.authn = authn
        self.clock = clock
        self.key_dir = key_dir


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    repo = open_repository(db_url)
    with repo.db.engine.begin() as conn:
        for t in TABLES:
            conn.execute(t.delete())
    clock = Clock()
    key_dir = tmp_path / "keys"
    tokens = TokenService(repo, SecuritySettings(), key_dir, clock=clock)
    yield Env(repo, tokens, Authenticator(repo, SecuritySettings(), key_dir, tokens=tokens), clock, key_dir)
    repo.db.close()


def refused(env: Env, token: str, code: str) -> Unauthorized:
    with pytest.raises(Unauthorized) as e:
        env.authn.authenticate(f"Bearer {token}", "127.0.0.1")
    assert e.value.code == code, e.value.message
    assert token not in e.value.message and token[-20:] not in e.value.message  # never echoed
    return e.value


def client(env: Env, scopes: str | None = None) -> tuple[str, str]:
    a, _ = env.accounts.add_client("HIS", organization="400000001", organization_id="org-1", scopes_text=scopes)
    assert a.client_id
    return a.id, a.client_id


def clinician(env: Env) -> str:
    a, _, _ = env.accounts.add_user("dr.zhao", role=Role.CLINICIAN, name="赵医生", password="Passw0rd-x",
                                    organization="400000001", organization_id="org-1", practitioner_id="pr-1",
                                    practitioner_role_id="prr-1")
    return a.id


def forge(claims: dict[str, object], header: dict[str, object], key: object) -> str:
    return jwt.encode(header, claims, key)  # type: ignore[arg-type]


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


# ------------------------------------------------------------------ issue and verify
def test_signing_key_file_and_jwks(env: Env) -> None:
    path = env.key_dir / KEY_FILE
    assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in path.read_bytes()
    # The same key is read back, not regenerated.
    assert load_signing_key(env.key_dir).thumbprint() == env.tokens.kid
    keys = env.tokens.jwks()["keys"]
    assert len(keys) == 1 and keys[0]["kty"] == "EC" and keys[0]["crv"] == "P-256" and "d" not in keys[0]
    assert keys[0]["kid"] == env.tokens.kid and keys[0]["alg"] == "ES256"


def test_issued_token_carries_the_principal(env: Env) -> None:
    cid = clinician(env)
    resp = env.tokens.issue(cid, "user/*.rs")
    assert resp["token_type"] == "Bearer" and resp["expires_in"] == 15 * 60 and resp["scope"] == "user/*.rs"
    assert "refresh_token" in resp                                    # people get one
    p = env.authn.authenticate("Bearer " + resp["access_token"], "10.1.2.3")
    assert p.account_id == cid and p.role == Role.CLINICIAN and p.scopes == ("user/*.rs",)
    assert (p.organization, p.organization_id, p.practitioner_id, p.practitioner_role_id) == (
        "400000001", "org-1", "pr-1", "prr-1")
    assert p.display == "赵医生" and p.peer == "10.1.2.3" and p.token_id
    header = orjson.loads(base64.urlsafe_b64decode(resp["access_token"].split(".")[0] + "=="))
    assert header["alg"] == "ES256" and header["kid"] == env.tokens.kid


def test_client_token_has_no_refresh_and_resident_token_has_persons(env: Env) -> None:
    aid, client_id = client(env)
    resp = env.tokens.issue(aid, "system/*.rs", client_id=client_id)
    assert "refresh_token" not in resp
    p = env.authn.authenticate("Bearer " + resp["access_token"], None)
    assert p.role == Role.INSTITUTION and p.client_id == client_id and p.organization_id == "org-1"
    r = env.accounts.add_resident("mpi-r1", phone="13800000001", name="王芳")
    claims = env.tokens.verify(env.tokens.issue(r, "patient/*.rs")["access_token"])
    assert claims["persons"] == ["mpi-r1"] and "name" not in claims     # a resident's name stays out


def test_missing_and_non_bearer_credentials(env: Env) -> None:
    for header in (None, "", "   "):
        with pytest.raises(Unauthorized) as e:
            env.authn.authenticate(header, None)
        assert e.value.code == "HT-0100"
    for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "Token abc"):
        with pytest.raises(Unauthorized) as e:
            env.authn.authenticate(header, None)
        assert e.value.code == "HT-0100"


@pytest.mark.parametrize("token", [
    "garbage", "a.b", "a.b.c.d", "..", "a..c", "e30.e30.", "ey!!.ey.ey", "Bearer.x.y",
    "eyJhbGciOiJFUzI1NiJ9.%%%.sig", "\u00e9\u00e9.\u00e9.\u00e9", "eyJ.eyJ.eyJ",
])
def test_malformed_tokens(env: Env, token: str) -> None:
    with pytest.raises(Unauthorized) as e:
        env.authn.authenticate("Bearer " + token, None)
    assert e.value.code in ("HT-0121", "HT-0122")


def test_oversized_token(env: Env) -> None:
    huge = b64({"alg": "ES256"}) + "." + "A" * 9000 + ".sig"
    refused(env, huge, "HT-0121")
    with pytest.raises(Unauthorized) as e:
        env.authn.authenticate("Bearer " + "x" * 100_000, None)
    assert e.value.code == "HT-0121"


def test_forged_tokens(env: Env) -> None:
    cid = clinician(env)
    good = env.tokens.issue(cid, "user/*.rs")["access_token"]
    claims = env.tokens.verify(good)
    h, p, s = good.split(".")
    # 1. Payload changed (scope escalated), signature kept.
    claims_up = dict(claims, scope="user/*.cruds system/*.cruds")
    refused(env, f"{h}.{b64(claims_up)}.{s}", "HT-0122")
    # 2. Signature changed.
    refused(env, f"{h}.{p}.{s[:-4]}AAAA", "HT-0122")
    # 3. Signed by another EC key with the right kid.
    other = ECKey.generate_key("P-256", private=True)
    refused(env, forge(claims, {"alg": "ES256", "kid": env.tokens.kid}, other), "HT-0122")
    # 4. alg none.
    refused(env, f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.", "HT-0121")
    refused(env, f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.e30", "HT-0122")
    # 5. HS256 keyed with the public key (algorithm confusion).
    pub_pem = env.tokens.key.as_pem(private=False)
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(claims)}"
    mac = hmac.new(pub_pem, signing_input.encode(), hashlib.sha256).digest()
    refused(env, signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode(), "HT-0122")
    # 6. RS256 with an attacker's RSA key.
    refused(env, forge(claims, {"alg": "RS256"}, RSAKey.generate_key(2048, private=True)), "HT-0122")
    # 7. Our key but another issuer / audience.
    refused(env, forge(dict(claims, iss="https://evil.example"), {"alg": "ES256"}, env.tokens.key), "HT-0125")
    refused(env, forge(dict(claims, aud="https://other.example/fhir"), {"alg": "ES256"}, env.tokens.key),
            "HT-0125")
    # 8. Our key, no jti.
    no_jti = {k: v for k, v in claims.items() if k != "jti"}
    refused(env, forge(no_jti, {"alg": "ES256"}, env.tokens.key), "HT-0121")
    # 9. Our key, a role that does not exist.
    with pytest.raises(Unauthorized) as e:
        env.authn.authenticate("Bearer " + forge(dict(claims, role="root"), {"alg": "ES256"}, env.tokens.key),
                               None)
    assert e.value.code == "HT-0121"
    # The genuine token still works.
    assert env.authn.authenticate("Bearer " + good, None).account_id == cid


def test_expiry_with_thirty_seconds_skew(env: Env) -> None:
    token = env.tokens.issue(clinician(env), "user/*.rs")["access_token"]
    env.clock.now += 15 * MIN + 29_000
    env.authn.authenticate("Bearer " + token, None)
    env.clock.now += 2_000
    refused(env, token, "HT-0123")
    # Issued in the future (a clock far ahead at the signer): not yet valid.
    env.clock.now = T0 - 5 * MIN
    refused(env, token, "HT-0123")


def test_revoked_access_token(env: Env) -> None:
    cid = clinician(env)
    a = env.tokens.issue(cid, "user/*.rs")["access_token"]
    b = env.tokens.issue(cid, "user/*.rs")["access_token"]
    assert env.tokens.revoke(a) == cid
    refused(env, a, "HT-0124")
    env.authn.authenticate("Bearer " + b, None)        # only that token
    assert env.tokens.revoke("not-a-token") is None      # RFC 7009 2.2: unknown tokens are fine


def test_revocation_reaches_other_processes_at_once(env: Env) -> None:
    """Issue 12, finding 16: a revoked token was accepted for about 2 s by
    another worker (a cached revocation list).  Only the signature is cached."""
    cid = clinician(env)
    token = env.tokens.issue(cid, "user/*.rs")["access_token"]
    other = TokenService(env.tokens.repo, SecuritySettings(), env.key_dir, clock=env.clock)
    other.verify(token)          # its signature is now remembered by the other process
    env.tokens.revoke(token)
    with pytest.raises(Unauthorized) as e:
        other.verify(token)      # at once, no waiting
    assert e.value.code == "HT-0124"


def test_disabled_since_issue_and_failed_guesses(env: Env) -> None:
    cid = clinician(env)
    token = env.tokens.issue(cid, "user/*.rs")["access_token"]
    env.accounts.set_status(cid, False)
    refused(env, token, "HT-0126")
    env.accounts.set_status(cid, True)
    # Issue 12, finding 16: enabling the account again brings no old token back.
    refused(env, token, "HT-0124")
    fresh = env.tokens.issue(cid, "user/*.rs")["access_token"]   # same second as the disable: still valid
    env.authn.authenticate("Bearer " + fresh, None)
    # Finding 13: someone else's failed guesses do not end the live session.
    for _ in range(8):
        with pytest.raises(HutongError):
            env.accounts.check_password("dr.zhao", "wrong-Passw0rd", None, peer="192.0.2.7")
    env.authn.authenticate("Bearer " + fresh, None)


# ------------------------------------------------------------------ refresh tokens
def test_refresh_rotates_and_reuse_revokes_the_family(env: Env) -> None:
    cid = clinician(env)
    first = env.tokens.issue(cid, "user/*.rs")
    _, second = env.tokens.refresh(first["refresh_token"])
    assert second["refresh_token"] != first["refresh_token"] and second["scope"] == "user/*.rs"
    env.authn.authenticate("Bearer " + second["access_token"], None)
    # The rotated-away token comes back (stolen copy): refused, and the live one dies too.
    with pytest.raises(Unauthorized) as e:
        env.tokens.refresh(first["refresh_token"])
    assert e.value.code == "HT-0133"
    with pytest.raises(Unauthorized) as e:
        env.tokens.refresh(second["refresh_token"])
    assert e.value.code == "HT-0133"


def test_refresh_idle_timeout_and_absolute_expiry(env: Env) -> None:
    cid = clinician(env)
    t = env.tokens.issue(cid, "user/*.rs")["refresh_token"]
    env.clock.now += 29 * MIN
    _, r = env.tokens.refresh(t)
    env.clock.now += 31 * MIN
    with pytest.raises(Unauthorized) as e:
        env.tokens.refresh(r["refresh_token"])
    assert e.value.code == "HT-0133" and "30 minutes" in e.value.message
    # Absolute lifetime (12 h) holds across rotations.
    t = env.tokens.issue(cid, "user/*.rs")["refresh_token"]
    for _ in range(25):
        env.clock.now += 29 * MIN
        try:
            _, r = env.tokens.refresh(t)
        except Unauthorized as e:
            assert e.code == "HT-0133"
            break
        t = r["refresh_token"]
    else:
        pytest.fail("refresh token outlived refresh_token_hours")


def test_refresh_cannot_escalate_and_follows_reduced_grants(env: Env) -> None:
    cid = clinician(env)
    t = env.tokens.issue(cid, "user/Observation.rs user/Patient.rs")["refresh_token"]
    with pytest.raises(HutongError) as e:
        env.tokens.refresh(t, scope="user/*.rs")
    assert e.value.code == "HT-0131"
    _, r = env.tokens.refresh(t, scope="user/Patient.r")
    assert r["scope"] == "user/Patient.r"
    # The operator takes Patient away: the next refresh no longer carries it.
    t2 = env.tokens.issue(cid, "user/Observation.rs user/Patient.rs")["refresh_token"]
    env.accounts.set_scopes(cid, "user/Observation.rs")
    _, r2 = env.tokens.refresh(t2)
    assert r2["scope"] == "user/Observation.rs"


def test_refresh_refused_for_disabled_account_and_garbage(env: Env) -> None:
    cid = clinician(env)
    t = env.tokens.issue(cid, "user/*.rs")["refresh_token"]
    env.accounts.set_status(cid, False)
    with pytest.raises(Unauthorized) as e:
        env.tokens.refresh(t)
    assert e.value.code in ("HT-0126", "HT-0133")
    for junk in ("", "x" * 10_000, "nope", t + "x"):
        with pytest.raises(Unauthorized) as e:
            env.tokens.refresh(junk)
        assert e.value.code == "HT-0133"


def test_revoking_a_refresh_token(env: Env) -> None:
    cid = clinician(env)
    resp = env.tokens.issue(cid, "user/*.rs")
    assert env.tokens.revoke(resp["refresh_token"], "refresh_token") == cid
    with pytest.raises(Unauthorized):
        env.tokens.refresh(resp["refresh_token"])
