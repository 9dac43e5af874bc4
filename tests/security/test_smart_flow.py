"""SMART App Launch 2.0 for third-party apps (issue 15, "SMART App Launch for
third-party apps" and item 9), over real HTTP on SQLite and PostgreSQL.

The app side is written here from the specifications (RFC 6749, RFC 7636,
app-launch.html), not with the server's helpers: its own PKCE verifier and
S256 challenge, the authorize URL, the approval form a browser would post
(with the session cookie the portals' sign-in sets), the code exchange and
the refresh.  The browser run with an independent client library is
tests/ui/test_smart_browser.py.

Attacks (issue 12 style): a redirect_uri not registered, PKCE missing or
``plain``, a wrong verifier, a code replayed (and what it issued revoked), a
code redeemed by another app, a refresh after revocation (portal and RFC
7009), a scope beyond the app's registration or the person's rights, a
resident asking for another resident's record, a confidential app without
its secret.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from harness import Server
from region import Region, build

from hutong.cli import main
from hutong.security.principal import Role
from hutong.systems import ID_CARD

REDIRECT = "https://app.example.cn/callback"
FORM = {"content-type": "application/x-www-form-urlencoded"}


@dataclass
class App:
    client_id: str
    secret: str | None = None


@pytest.fixture
def region(server: Server) -> Region:
    return build(server)


@pytest.fixture
def app(server: Server) -> App:
    row, _ = server.app.platform.auth.smart.register("互联网医院测试应用", kind="public", redirect_uris=[REDIRECT])
    return App(row.client_id)


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


_OPEN: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def _close_browsers() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


class Browser:
    """A person's browser: the portals' session cookie and the approval form."""

    def __init__(self, server: Server, account: Any) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.root, timeout=30, follow_redirects=False)
        _OPEN.append(self.http)
        if account is not None:
            self.http.cookies.set("hutong_at", server.token(account))

    def authorize(self, app: App, *, scope: str = "launch/patient patient/*.rs offline_access",
                  challenge: str | None = None, method: str | None = "S256", redirect_uri: str = REDIRECT,
                  **extra: str) -> httpx.Response:
        params = {"response_type": "code", "client_id": app.client_id, "redirect_uri": redirect_uri,
                  "scope": scope, "state": "st-" + secrets.token_hex(4), "aud": self.server.url}
        if challenge is not None:
            params["code_challenge"] = challenge
        if method is not None:
            params["code_challenge_method"] = method
        params.update(extra)
        return self.http.get("/auth/authorize?" + urlencode(params))

    def approval_page(self, r: httpx.Response) -> tuple[str, str]:
        """Follow the authorize page on to the approval page; its path and CSRF token."""
        assert r.status_code == 200, r.text
        target = r.headers["refresh"].split("url=", 1)[1]
        page = self.http.get(target)
        assert page.status_code == 200, page.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        return target, csrf.group(1)

    def approve(self, r: httpx.Response, *, patient: str | None = None, decision: str = "approve") -> httpx.Response:
        target, csrf = self.approval_page(r)
        form = {"csrf": csrf, "decision": decision}
        if patient is not None:
            form["patient"] = patient
        return self.http.post(target, data=form)


def callback(r: httpx.Response) -> dict[str, str]:
    assert r.status_code == 303, r.text
    loc = r.headers["location"]
    assert loc.startswith(REDIRECT + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(loc).query).items()}


def code_for(server: Server, app: App, account: Any, **kw: Any) -> tuple[str, str]:
    """The standalone launch up to the code: (code, verifier)."""
    verifier, challenge = pkce()
    b = Browser(server, account)
    back = callback(b.approve(b.authorize(app, challenge=challenge, **kw.pop("authorize", {})), **kw))
    assert "code" in back, back
    return back["code"], verifier


def exchange(server: Server, app: App, code: str, verifier: str, *, redirect_uri: str = REDIRECT,
             auth: tuple[str, str] | None = None) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "code_verifier": verifier, "client_id": app.client_id}
    return httpx.post(server.root + "/auth/token", data=form, headers=FORM, auth=auth, timeout=30)


def token_post(server: Server, form: dict[str, str], auth: tuple[str, str] | None = None) -> httpx.Response:
    return httpx.post(server.root + "/auth/token", data=form, headers=FORM, auth=auth, timeout=30)


def fhir(server: Server, token: str, path: str) -> httpx.Response:
    return httpx.get(server.url + path, headers={"authorization": f"Bearer {token}"}, timeout=30)


def oauth_error(r: httpx.Response, error: str, code: str) -> None:
    assert r.status_code in (400, 401), r.text
    assert r.json()["error"] == error, r.text
    assert r.json()["error_description"].startswith(code), r.text


@pytest.fixture
def audit_actions(server: Server) -> Iterator[Any]:
    def actions(action: str) -> list[Any]:
        return list(server.app.platform.audit.search(action=action, limit=200))
    yield actions


# ------------------------------------------------------------------ item 9: configuration
def test_smart_configuration_is_smart_2_0(server: Server) -> None:
    for path in ("/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"):
        c = httpx.get(server.root + path).json()
        assert c["authorization_endpoint"] == server.root + "/auth/authorize"
        assert c["token_endpoint"] == server.root + "/auth/token"
        assert c["code_challenge_methods_supported"] == ["S256"]
        assert "plain" not in c["code_challenge_methods_supported"]
        assert c["response_types_supported"] == ["code"]
        assert "issuer" not in c  # OpenID Connect is not offered
        assert "sso-openid-connect" not in c["capabilities"]
        assert {"authorization_code", "refresh_token", "client_credentials"} == set(c["grant_types_supported"])
        assert {"launch-ehr", "launch-standalone", "client-public", "client-confidential-symmetric",
                "context-ehr-patient", "context-standalone-patient", "permission-patient", "permission-user",
                "permission-offline", "permission-v2"} <= set(c["capabilities"])
        assert {"launch", "launch/patient", "offline_access", "patient/*.rs"} <= set(c["scopes_supported"])
        assert c["revocation_endpoint"] == server.root + "/auth/revoke"
    # Every endpoint it names answers (the document describes behaviour, not hopes).
    no_app = httpx.get(server.root + "/auth/authorize")
    assert no_app.status_code == 400 and "HT-0280" in no_app.text  # no such app: shown, not redirected
    meta = httpx.get(server.url + "/metadata").json()
    uris = {e["url"]: e["valueUri"] for e in meta["rest"][0]["security"]["extension"][0]["extension"]}
    assert uris["authorize"] == server.root + "/auth/authorize"


# ------------------------------------------------------------------ the flow
def test_standalone_launch_resident(server: Server, region: Region, app: App, audit_actions: Any) -> None:
    r_acct, s_id = region.accounts["R"], region.ids["S"]
    code, verifier = code_for(server, app, r_acct)
    t = exchange(server, app, code, verifier)
    assert t.status_code == 200, t.text
    body = t.json()
    assert body["patient"] == region.ids["R"]
    assert body["token_type"] == "Bearer" and body["refresh_token"]
    assert set(body["scope"].split()) == {"patient/*.rs", "offline_access", "launch/patient"}
    at = body["access_token"]
    assert fhir(server, at, f"/Patient/{region.ids['R']}").status_code == 200
    assert fhir(server, at, f"/Observation?patient={region.ids['pA']}").json()["total"] >= 1
    assert fhir(server, at, f"/Patient/{s_id}").status_code == 403  # another resident: never
    # The scope gate: patient/*.rs holds no write, although the resident's own sign-in could write Consents.
    w = httpx.post(server.url + "/Consent", headers={"authorization": f"Bearer {at}",
                                                     "content-type": "application/fhir+json"},
                   json={"resourceType": "Consent", "status": "active",
                         "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                               "code": "patient-privacy"}]},
                         "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
                         "patient": {"reference": f"Patient/{region.ids['R']}"},
                         "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                                    "code": "OPTIN"}]},
                         "provision": {"type": "permit", "actor": [{
                             "role": {"coding": [{"code": "PRCP"}]},
                             "reference": {"reference": f"Practitioner/{region.ids['docA']}"}}]}})
    assert w.status_code == 403 and "HT-0101" in w.text, w.text
    # Refresh (offline_access): rotated; the old refresh token then ends the grant.
    r1 = token_post(server, {"grant_type": "refresh_token", "refresh_token": body["refresh_token"],
                             "client_id": app.client_id})
    assert r1.status_code == 200, r1.text
    assert r1.json()["patient"] == region.ids["R"] and r1.json()["refresh_token"] != body["refresh_token"]
    assert fhir(server, r1.json()["access_token"], f"/Patient/{region.ids['R']}").status_code == 200
    # The rotated-away refresh token comes back (stolen?): the whole grant ends (RFC 9700 section 4.14.2).
    oauth_error(token_post(server, {"grant_type": "refresh_token", "refresh_token": body["refresh_token"],
                                    "client_id": app.client_id}), "invalid_grant", "HT-0291")
    oauth_error(token_post(server, {"grant_type": "refresh_token", "refresh_token": r1.json()["refresh_token"],
                                    "client_id": app.client_id}), "invalid_grant", "HT-0291")
    assert fhir(server, r1.json()["access_token"], f"/Patient/{region.ids['R']}").status_code == 401
    # The audit trail has the approval, the token and the refresh.
    assert any(e.outcome == "0" for e in audit_actions("smart-authorize"))
    assert audit_actions("token") and audit_actions("refresh")


def test_delegate_picks_only_a_delegated_person(server: Server, region: Region, app: App) -> None:
    acc = server.accounts
    from hutong.security.accounts import Delegation  # noqa: PLC0415

    # The delegate is a third person (their own golden record, ID number written for this test).
    own = "110102198506150031"
    r = server.client.post("/Patient", json={
        "resourceType": "Patient", "identifier": [{"system": ID_CARD, "value": own}],
        "managingOrganization": {"reference": f"Organization/{region.ids['orgA']}"},
        "name": [{"family": "王", "given": ["家属"]}], "gender": "male", "birthDate": "1985-06-15"})
    assert r.status_code == 201, r.text
    golden = server.client.get("/Patient", params={"identifier": f"{ID_CARD}|{own}",
                                                   "_tag": "https://fhir.hutong.dev/CodeSystem/mpi|golden"})
    d = acc.add_delegate(golden.json()["entry"][0]["resource"]["id"],
                         acts_for=[Delegation(region.ids["R"], "family", None)], phone="13700000000")
    # R is delegated to them, S is not: S is refused.
    b = Browser(server, d)
    _verifier, challenge = pkce()
    r = b.approve(b.authorize(app, challenge=challenge), patient=region.ids["S"])
    assert r.status_code == 403 and "HT-0287" in r.text
    code, verifier = code_for(server, app, d, patient=region.ids["R"])
    t = exchange(server, app, code, verifier).json()
    assert t["patient"] == region.ids["R"]
    assert fhir(server, t["access_token"], f"/Patient/{region.ids['R']}").status_code == 200
    # The approval page showed R's name to the delegate: a read of R's record, in R's access log.
    shown = server.app.platform.audit.search(person=region.ids["R"], account=d.id, action="read")
    assert any(e.interaction == "GET /signin/authorize/{request_id}" for e in shown)
    # R sees both apps on R's record (the delegate's grant and R's own) and may end either;
    # the delegate sees, and may end, only the grant they made.
    exchange(server, app, *code_for(server, app, region.accounts["R"]))
    r_page = Browser(server, region.accounts["R"]).http.get("/resident/apps")
    d_page = Browser(server, d).http.get("/resident/apps")
    assert r_page.status_code == d_page.status_code == 200
    assert r_page.text.count('/revoke"') == 2 and d_page.text.count('/revoke"') == 1


def test_resident_cannot_take_another_residents_patient_context(server: Server, region: Region, app: App) -> None:
    b = Browser(server, region.accounts["R"])
    _v, challenge = pkce()
    r = b.approve(b.authorize(app, challenge=challenge), patient=region.ids["S"])
    assert r.status_code == 403 and "HT-0287" in r.text
    # Nor through an EHR launch made for S by a clinician (it names another user).
    doc = region.accounts["docB"]
    row, _ = server.app.platform.auth.smart.register("EHR app", kind="public", redirect_uris=[REDIRECT],
                                                     launch_url="https://app.example.cn/launch")
    url = server.app.platform.auth.smart.launch(server.app.platform.authenticator.authenticate(
        "Bearer " + server.token(doc), None), row.client_id, region.ids["S"], server.url)
    launch = parse_qs(urlsplit(url).query)["launch"][0]
    r = b.authorize(App(row.client_id), challenge=challenge, scope="launch patient/*.rs", launch=launch)
    target = r.headers["refresh"].split("url=", 1)[1]
    page = b.http.get(target)
    assert page.status_code == 403 and "HT-0286" in page.text


def test_ehr_launch_from_the_clinician_workspace(server: Server, region: Region) -> None:
    smart = server.app.platform.auth.smart
    row, _ = smart.register("检验结果解读", kind="public", redirect_uris=[REDIRECT],
                            launch_url="https://app.example.cn/launch")
    app = App(row.client_id)
    doc = Browser(server, region.accounts["docB"])
    # The workspace creates a launch context for a patient the clinician may open (S: treated at B).
    page = doc.http.get(f"/clinician/apps?patient={region.ids['S']}")
    assert page.status_code == 200 and "检验结果解读" in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    r = doc.http.post("/clinician/launch", data={"csrf": csrf.group(1), "client_id": app.client_id,
                                                 "patient": region.ids["S"]})
    assert r.status_code == 303
    launched = parse_qs(urlsplit(r.headers["location"]).query)
    assert r.headers["location"].startswith("https://app.example.cn/launch?")
    assert launched["iss"] == [server.url]
    verifier, challenge = pkce()
    back = callback(doc.approve(doc.authorize(app, challenge=challenge, scope="launch patient/*.rs",
                                              launch=launched["launch"][0])))
    t = exchange(server, app, back["code"], verifier).json()
    assert t["patient"] == region.ids["S"] and t["need_patient_banner"] is True
    assert "refresh_token" not in t  # no offline_access asked
    # Granted as what the token allows: the clinician's own user/ access (within their basis), not patient/.
    assert set(t["scope"].split()) == {"launch", "user/*.rs"}
    assert fhir(server, t["access_token"], f"/Patient/{region.ids['S']}").status_code == 200
    # A clinician without a basis gets no launch context for the patient.
    doc_a = Browser(server, region.accounts["docA"])
    assert doc_a.http.get(f"/clinician/apps?patient={region.ids['S']}").status_code == 403


# ------------------------------------------------------------------ attacks
def test_redirect_uri_and_pkce_are_enforced(server: Server, region: Region, app: App) -> None:
    b = Browser(server, region.accounts["R"])
    verifier, challenge = pkce()
    # A redirect URI not registered (even a prefix or extension of one): shown, never redirected to.
    for bad in (REDIRECT + "/evil", "https://app.example.cn/callback?x=1", "https://evil.example/callback"):
        r = b.authorize(app, challenge=challenge, redirect_uri=bad)
        assert r.status_code == 400 and "location" not in r.headers and "HT-0281" in r.text
    # PKCE missing, or plain: back to the app with invalid_request.
    for kw in ({"challenge": None}, {"challenge": verifier[:43], "method": "plain"},
               {"challenge": challenge, "method": None}):
        back = callback(b.authorize(app, **kw))
        assert back["error"] == "invalid_request" and back["error_description"].startswith("HT-0282")
        assert back["state"].startswith("st-")
    # Parameters repeated or past reason: a page, not a redirect (or a server error).
    r = b.http.get("/auth/authorize?client_id=" + app.client_id + "&client_id=x")
    assert r.status_code == 400 and "HT-0283" in r.text
    r = b.http.get("/auth/authorize?" + "&".join(f"p{i}=1" for i in range(60)))
    assert r.status_code == 400 and "HT-0283" in r.text
    # aud must be this server.
    back = callback(b.authorize(app, challenge=challenge, aud="https://other.example/fhir"))
    assert back["error"] == "invalid_request"
    # A wrong verifier, a different redirect_uri at the token endpoint.
    code, verifier = code_for(server, app, region.accounts["R"])
    oauth_error(exchange(server, app, code, pkce()[0]), "invalid_grant", "HT-0289")
    code, verifier = code_for(server, app, region.accounts["R"])
    oauth_error(exchange(server, app, code, verifier, redirect_uri=REDIRECT + "/"), "invalid_grant", "HT-0288")


def test_code_replay_and_another_clients_code(server: Server, region: Region, app: App) -> None:
    other, _ = server.app.platform.auth.smart.register("另一个应用", kind="public", redirect_uris=[REDIRECT])
    code, verifier = code_for(server, app, region.accounts["R"])
    oauth_error(exchange(server, App(other.client_id), code, verifier), "invalid_grant", "HT-0288")
    first = exchange(server, app, code, verifier)
    assert first.status_code == 200, first.text
    oauth_error(exchange(server, app, code, verifier), "invalid_grant", "HT-0288")
    # RFC 6749 section 4.1.2: what the replayed code issued is revoked.
    assert fhir(server, first.json()["access_token"], f"/Patient/{region.ids['R']}").status_code == 401
    oauth_error(token_post(server, {"grant_type": "refresh_token", "refresh_token": first.json()["refresh_token"],
                                    "client_id": app.client_id}), "invalid_grant", "HT-0291")


def test_concurrent_exchanges_of_one_code(server: Server, region: Region, app: App) -> None:
    """Four exchanges of one code at once: at most one gets tokens (a conditional
    UPDATE decides), and what it got is revoked, since the code was used twice
    (or refused outright when the revocation came first)."""
    code, verifier = code_for(server, app, region.accounts["R"])
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: exchange(server, app, code, verifier), range(4)))
    ok = [r for r in answers if r.status_code == 200]
    assert len(ok) <= 1, [r.text for r in answers]
    assert all(r.json()["error"] == "invalid_grant" for r in answers if r.status_code != 200)
    for r in ok:
        assert fhir(server, r.json()["access_token"], f"/Patient/{region.ids['R']}").status_code == 401
        oauth_error(token_post(server, {"grant_type": "refresh_token", "refresh_token": r.json()["refresh_token"],
                                        "client_id": app.client_id}), "invalid_grant", "HT-0291")


def test_scope_escalation(server: Server, region: Region) -> None:
    smart = server.app.platform.auth.smart
    row, _ = smart.register("读取应用", kind="public", redirect_uris=[REDIRECT],
                            scopes="launch/patient patient/*.rs patient/*.cruds user/*.cruds offline_access")
    app = App(row.client_id)
    b = Browser(server, region.accounts["R"])
    # Beyond the app's registration: refused outright.
    narrow, _ = smart.register("只读应用", kind="public", redirect_uris=[REDIRECT], scopes="patient/Observation.rs")
    back = callback(b.authorize(App(narrow.client_id), challenge=pkce()[1], scope="patient/*.rs"))
    assert back["error"] == "invalid_scope" and "HT-0285" in back["error_description"]
    # Beyond the person's rights: not granted (a resident holds no user/ scopes, no write on Observation).
    code, verifier = code_for(server, app, region.accounts["R"],
                              authorize={"scope": "launch/patient user/*.cruds patient/*.cruds offline_access"})
    t = exchange(server, app, code, verifier).json()
    granted = set(t["scope"].split())
    assert not any(s.startswith("user/") for s in granted)
    assert "patient/*.cruds" not in granted and "patient/*.rs" in granted
    assert "patient/Consent.cruds" in granted  # the resident's own right, within what was asked
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "subject": {"reference": f"Patient/{region.ids['pA']}"}}
    w = httpx.post(server.url + "/Observation", json=obs, headers={"authorization": f"Bearer {t['access_token']}"})
    assert w.status_code == 403
    # A refresh asking for more than the grant.
    oauth_error(token_post(server, {"grant_type": "refresh_token", "refresh_token": t["refresh_token"],
                                    "client_id": app.client_id, "scope": "patient/*.cruds"}),
                "invalid_scope", "HT-0285")
    # A clinician's grant is bounded by the clinician's own scopes (no Observation write).
    code, verifier = code_for(server, app, region.accounts["docA"], authorize={"scope": "user/*.cruds"})
    granted = set(exchange(server, app, code, verifier).json()["scope"].split())
    assert "user/*.rs" in granted and "user/*.cruds" not in granted
    # Operators cannot authorize apps at all.
    op, _pw, _uri = server.accounts.add_user("op1", role=Role.OPERATOR, name="运维")
    ob = Browser(server, op)
    r = ob.authorize(app, challenge=pkce()[1])
    page = ob.http.get(r.headers["refresh"].split("url=", 1)[1])
    assert page.status_code == 403 and "HT-0294" in page.text


def test_revocation_portal_and_endpoint(server: Server, region: Region, app: App, audit_actions: Any) -> None:
    r_acct = region.accounts["R"]
    t1 = exchange(server, app, *code_for(server, app, r_acct)).json()
    t2 = exchange(server, app, *code_for(server, app, r_acct)).json()
    me = Browser(server, r_acct)
    page = me.http.get("/resident/apps")
    assert page.status_code == 200 and "互联网医院测试应用" in page.text
    forms = re.findall(r'action="(/resident/apps/[^"]+/revoke)"', page.text)
    assert len(forms) == 2
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    # Another resident cannot revoke (or see) R's grants.
    other = Browser(server, region.accounts["S"])
    other_page = other.http.get("/resident/apps")
    assert "互联网医院测试应用" not in other_page.text
    ocsrf = re.search(r'name="csrf" value="([^"]+)"', other_page.text)
    assert ocsrf
    assert other.http.post(forms[0], data={"csrf": ocsrf.group(1)}).status_code == 404
    # The resident revokes one: its live access token and its refresh token stop at once.
    grant_of_t1 = server.app.platform.auth.smart.grant_of_refresh(t1["refresh_token"])
    assert grant_of_t1 is not None
    r = me.http.post(f"/resident/apps/{grant_of_t1.grant_id}/revoke", data={"csrf": csrf.group(1)})
    assert r.status_code == 303
    assert fhir(server, t1["access_token"], f"/Patient/{region.ids['R']}").status_code == 401
    oauth_error(token_post(server, {"grant_type": "refresh_token", "refresh_token": t1["refresh_token"],
                                    "client_id": app.client_id}), "invalid_grant", "HT-0291")
    assert fhir(server, t2["access_token"], f"/Patient/{region.ids['R']}").status_code == 200
    assert len(re.findall(r"/revoke\"", me.http.get("/resident/apps").text)) == 1
    # The app revokes the other (RFC 7009, its refresh token): the whole grant ends.
    rv = httpx.post(server.root + "/auth/revoke", data={"token": t2["refresh_token"]}, headers=FORM)
    assert rv.status_code == 200
    assert fhir(server, t2["access_token"], f"/Patient/{region.ids['R']}").status_code == 401
    oauth_error(token_post(server, {"grant_type": "refresh_token", "refresh_token": t2["refresh_token"],
                                    "client_id": app.client_id}), "invalid_grant", "HT-0291")
    assert "no-apps" in me.http.get("/resident/apps").text
    assert len([e for e in audit_actions("revoke") if e.outcome == "0"]) >= 2


def test_confidential_app_and_registration_cli(server: Server, region: Region, db_url: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import orjson  # noqa: PLC0415

    assert main(["smart", "--database", db_url, "register", "网上医院（服务端）", "--confidential",
                 "--redirect-uri", REDIRECT]) == 0
    out = orjson.loads(capsys.readouterr().out)
    app = App(out["client_id"], out["client_secret"])
    assert out["kind"] == "confidential"
    listed = capsys.readouterr()
    assert main(["smart", "--database", db_url, "list"]) == 0
    listed = capsys.readouterr()
    assert app.client_id in listed.out and app.secret not in listed.out  # only its hash is kept
    assert main(["smart", "--database", db_url, "register", "bad", "--redirect-uri",
                 "http://app.example.cn/cb"]) == 2  # http only on the loopback
    assert "HT-0292" in capsys.readouterr().err
    code, verifier = code_for(server, app, region.accounts["R"])
    oauth_error(exchange(server, app, code, verifier), "invalid_client", "HT-0290")  # no secret
    oauth_error(exchange(server, app, code, verifier, auth=(app.client_id, "wrong")), "invalid_client", "HT-0290")
    assert app.secret
    t = exchange(server, app, code, verifier, auth=(app.client_id, app.secret))
    assert t.status_code == 200, t.text
    # Its refresh needs the secret too.
    oauth_error(token_post(server, {"grant_type": "refresh_token", "refresh_token": t.json()["refresh_token"],
                                    "client_id": app.client_id}), "invalid_client", "HT-0290")
    ok = token_post(server, {"grant_type": "refresh_token", "refresh_token": t.json()["refresh_token"]},
                    auth=(app.client_id, app.secret))
    assert ok.status_code == 200, ok.text
    # Disabled by the operator: no more tokens.
    assert main(["smart", "--database", db_url, "disable", app.client_id]) == 0
    oauth_error(token_post(server, {"grant_type": "refresh_token", "refresh_token": ok.json()["refresh_token"]},
                           auth=(app.client_id, app.secret)), "invalid_client", "HT-0290")


def test_denial_goes_back_to_the_app(server: Server, region: Region, app: App, audit_actions: Any) -> None:
    b = Browser(server, region.accounts["R"])
    back = callback(b.approve(b.authorize(app, challenge=pkce()[1]), decision="deny"))
    assert back["error"] == "access_denied" and "code" not in back
    assert any(e.code == "HT-0293" for e in audit_actions("smart-authorize"))
    # Not signed in: the approval page sends the browser to sign in, and back.
    anon = Browser(server, None)
    r = anon.authorize(app, challenge=pkce()[1])
    target = r.headers["refresh"].split("url=", 1)[1]
    page = anon.http.get(target)
    assert page.status_code == 303 and page.headers["location"] == "/?next=" + target
