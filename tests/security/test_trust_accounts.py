"""Issue 12, findings 13 and 16-20: accounts, tokens, search limits, break-glass
review, the favicon and HTTP headers -- each as the attack through the real
server (uvicorn + httpx), on SQLite and PostgreSQL.

13. Password guessing against a clinician's username from another address
    neither ends the clinician's live session nor stops them signing in from
    their own address; unknown account, wrong password and throttled address
    get one identical answer; every failure is audited.
16. An ex-delegate's token reads no access log once the delegation ends;
    tokens issued before an account was disabled stay dead after it is
    enabled again; a revocation is seen at once by another app instance on
    the same database.
17. Hundreds of OR values in a search: 200 (or a clear 400 above the
    documented limit), never 500.
18. Break-glass in the clinician portal reaches the auditors' review queue;
    the resident's SMS gives Beijing time whatever the server's time zone.
19. /favicon.ico: 200, public, no audit row.
20. Security headers on every answer; /docs loads no third-party script;
    the CSRF cookie is rotated at sign-in.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import httpx
import pyotp
import pytest
from fhirapi import issue_code
from harness import Server, serving
from region import Region, build

from hutong.config import Settings
from hutong.fhir.assembly import open_repository
from hutong.security import totp
from hutong.security.accounts import Delegation
from hutong.security.events import REFUSED
from hutong.security.principal import Role
from hutong.systems import ID_CARD
from hutong.web.app import create_app
from hutong.web.ui import session

PW = "Zhongshan-Rd-88"
ATTACKER = "127.0.0.2"   # another client address on the loopback network (Linux routes all of 127/8)


@pytest.fixture
def region(server: Server) -> Iterator[Region]:
    yield build(server)


def from_address(server: Server, address: str) -> httpx.Client:
    """A client whose connections come from ``address`` (the server sees it as the peer)."""
    return httpx.Client(base_url=server.root, timeout=30,
                        transport=httpx.HTTPTransport(local_address=address))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def staff(server: Server, region: Region, username: str, org: str = "A") -> tuple[Any, str]:
    """A clinician at hospital ``org`` with a known password; returns it and its TOTP secret."""
    a, _pw, uri = server.accounts.add_user(
        username, role=Role.CLINICIAN, name=f"{org}院医生", password=PW, organization=region.ids[f"org{org}_code"],
        organization_id=region.ids[f"org{org}"], practitioner_id=region.ids[f"doc{org}"])
    return a, pyotp.parse_uri(uri).secret


def login(http: httpx.Client, username: str, password: str, secret: str | None) -> httpx.Response:
    code = totp.code_at(secret, now_ms()) if secret else "000000"
    return http.post("/auth/login", json={"username": username, "password": password, "totp": code})


# ------------------------------------------------------------------ 13: lockout as a lever
def test_f13_guessing_from_another_address_neither_ends_the_session_nor_locks_the_owner_out(
        server: Server, region: Region) -> None:
    doc, secret = staff(server, region, "doctora.li")
    # docA's live session (what the token endpoint handed out at sign-in).
    live = server.app.platform.authenticator.tokens.issue(doc, doc.scopes)
    audit = server.app.platform.audit
    with from_address(server, ATTACKER) as attacker, httpx.Client(base_url=server.root, timeout=30) as own:
        wrong = [login(attacker, "doctora.li", f"Guess-{i}-pass", secret) for i in range(12)]
        unknown = login(attacker, "nobody.here", "Guess-x-pass", secret)
        # The attacker now has the right password (and a valid code): its address is held back all the same.
        throttled = login(attacker, "doctora.li", PW, None)
        answers = [*wrong, unknown, throttled]
        assert all(a.status_code == 401 for a in answers), [a.status_code for a in answers]
        # One answer for wrong password, unknown account and a held-back address: nothing to enumerate.
        assert {a.content for a in answers} == {wrong[0].content}, {a.text for a in answers}
        assert issue_code(wrong[0]) == "HT-0127" and "access_token" not in throttled.text

        # The owner's live session is untouched: its access token reads, its refresh token rotates.
        read = own.get(f"/fhir/Patient/{region.ids['pA']}",
                       headers={"authorization": f"Bearer {live['access_token']}"})
        assert read.status_code == 200, read.text
        refreshed = own.post("/auth/token", data={"grant_type": "refresh_token",
                                                  "refresh_token": live["refresh_token"]})
        assert refreshed.status_code == 200, refreshed.text
        # ...and the owner signs in from its own address with the right password.
        mine = login(own, "doctora.li", PW, secret)
        assert mine.status_code == 200, mine.text
        assert own.get(f"/fhir/Patient/{region.ids['pA']}", headers={
            "authorization": f"Bearer {mine.json()['access_token']}"}).status_code == 200
    # Every failure is on the audit trail, with the address it came from.
    rows = [e for e in audit.search(outcome=REFUSED, action="login", limit=50) if e.claimed == "doctora.li"]
    assert len(rows) == 13, [(e.code, e.peer) for e in rows]
    assert {e.peer for e in rows} == {ATTACKER}
    assert {e.code for e in rows} == {"HT-0127", "HT-0140"}     # wrong, and held back (back-off)
    assert all(PW not in repr(e) and "Guess-" not in repr(e) for e in rows)
    assert server.accounts.require(doc.id).status == "active"


def test_f13_unknown_and_wrong_cost_the_same_argon2_work(server: Server, region: Region) -> None:
    """Timing: an unknown username costs a password verification too (no enumeration by timing)."""
    staff(server, region, "doctora.wang")
    with from_address(server, "127.0.0.3") as http:
        def timed(user: str) -> float:
            t = time.perf_counter()
            assert login(http, user, "Guess-1-pass", None).status_code == 401
            return time.perf_counter() - t

        known = sorted(timed("doctora.wang") for _ in range(3))[1]
        unknown = sorted(timed(f"ghost{i}") for i in range(3))[1]
    assert unknown > known / 3, (known, unknown)   # both pay one argon2id verification (~50 ms)


# ------------------------------------------------------------------ 16: stale authority in tokens
def test_f16_ex_delegate_gets_403_on_the_access_log_right_after_the_delegation_ends(
        server: Server, region: Region) -> None:
    acc = server.accounts
    delegate = acc.add_delegate("person-delegate-d", acts_for=[Delegation(region.ids["R"], "family", None)],
                                phone="13700000001", name="王大明")
    token = server.token(delegate)
    with httpx.Client(base_url=server.root, timeout=30, headers={"authorization": f"Bearer {token}"}) as http:
        assert http.get("/me/access-log").status_code == 200
        assert http.get("/me/access-log", params={"person": region.ids["R"]}).status_code == 200
        with _page_client(server, token) as browser:
            page = browser.get("/resident/access-log")
            assert page.status_code == 200, page.text[:300]
        assert acc.end_delegation(delegate.id, region.ids["R"])
        # The same token, a moment later: the platform's facts, not the token's claims.
        gone = http.get("/me/access-log")
        assert gone.status_code == 403 and issue_code(gone) == "HT-0146", gone.text
        asked = http.get("/me/access-log", params={"person": region.ids["R"]})
        assert asked.status_code == 403 and issue_code(asked) == "HT-0146"
        assert http.get(f"/fhir/Patient/{region.ids['R']}").status_code == 403
    with _page_client(server, token) as browser:
        page = browser.get("/resident/access-log")
        assert page.status_code == 403 and "HT-0146" in page.text


def test_f16_tokens_issued_before_a_disable_stay_dead_after_enable(server: Server, region: Region) -> None:
    acc = server.accounts
    doc = region.accounts["docA"]
    old = server.app.platform.authenticator.tokens.issue(doc, doc.scopes)
    url = f"/fhir/Patient/{region.ids['pA']}"
    with httpx.Client(base_url=server.root, timeout=30) as http:
        def use(t: str) -> httpx.Response:
            return http.get(url, headers={"authorization": f"Bearer {t}"})

        assert use(old["access_token"]).status_code == 200
        acc.set_status(doc.id, False)
        assert use(old["access_token"]).status_code == 401
        acc.set_status(doc.id, True)
        back = use(old["access_token"])
        assert back.status_code == 401 and issue_code(back) == "HT-0124", back.text
        refresh = http.post("/auth/token", data={"grant_type": "refresh_token",
                                                 "refresh_token": old["refresh_token"]})
        assert refresh.status_code == 400 and "access_token" not in refresh.text
        # A token issued after (even within the second of the disable) works.
        fresh = server.app.platform.authenticator.tokens.issue(doc, doc.scopes)["access_token"]
        assert use(fresh).status_code == 200


def test_f16_revocation_is_seen_at_once_by_another_instance(db_url: str, server: Server, region: Region) -> None:
    doc = region.accounts["docA"]
    with ExitStack() as stack:
        repo2 = open_repository(db_url)
        stack.callback(repo2.db.close)
        other = stack.enter_context(serving(create_app(Settings(database_url=db_url), repo=repo2)))
        url = f"/fhir/Patient/{region.ids['pA']}"
        issued = server.app.platform.authenticator.tokens.issue(doc, doc.scopes)
        token = issued["access_token"]
        with httpx.Client(base_url=other, timeout=30, headers={"authorization": f"Bearer {token}"}) as second, \
                httpx.Client(base_url=server.root, timeout=30) as first:
            assert second.get(url).status_code == 200          # the second instance knows the token now
            assert first.post("/auth/revoke", data={"token": token}).status_code == 200
            gone = second.get(url)                             # at once: no cached revocation list
            assert gone.status_code == 401 and issue_code(gone) == "HT-0124", gone.text
            # Disabling on the first instance reaches the second at once too.
            t2 = server.app.platform.authenticator.tokens.issue(doc, doc.scopes)["access_token"]
            h = {"authorization": f"Bearer {t2}"}
            assert second.get(url, headers=h).status_code == 200
            server.accounts.set_status(doc.id, False)
            assert second.get(url, headers=h).status_code == 401


# ------------------------------------------------------------------ 17: many OR values
def test_f17_hundreds_of_or_values_are_answered_never_500(server: Server, region: Region) -> None:
    ids = [f"{ID_CARD}|11010519491231{i:04d}" for i in range(300)]
    ids[150] = f"{ID_CARD}|11010519491231002X"
    codes = ",".join(f"http://loinc.org|{1000 + i}-0" for i in range(299)) + ",http://loinc.org|2345-7"
    with region.client("docA") as doc, region.client("R") as r:
        for client, path, params in (
                (server.client, "/Patient", {"identifier": ",".join(ids)}),
                (doc, "/Patient", {"identifier": ",".join(ids)}),
                (doc, "/Observation", {"code": codes, "subject": f"Patient/{region.ids['pA']}"}),
                (r, "/Observation", {"code": codes}),
                (doc, "/Patient", {"family": ",".join(f"姓{i}" for i in range(300))}),
                (doc, "/Patient", {"birthdate": ",".join(f"19{i % 100:02d}-01-{1 + i % 28:02d}"
                                                         for i in range(300))}),
                # Chains and _has nest each value deeper: these gave 500 from about 250 values.
                (server.client, "/Observation", {"subject.identifier": ",".join(ids)}),
                (r, "/Observation", {"subject:Patient.identifier": ",".join(ids)}),
                (server.client, "/Patient", {"_has:Observation:patient:code": codes}),
                (server.client, "/Patient", {"identifier": ",".join(ids * 3)}),        # 900 values
        ):
            resp = client.post(f"{path}/_search", data=params,
                               headers={"content-type": "application/x-www-form-urlencoded"})
            assert resp.status_code == 200, (path, list(params), resp.status_code, resp.text[:300])
        found = server.client.post("/Patient/_search", data={"identifier": ",".join(ids)},
                                   headers={"content-type": "application/x-www-form-urlencoded"}).json()
        assert {e["resource"]["id"] for e in found.get("entry", [])} >= {region.ids["pA"], region.ids["pB"]}
        mine = r.post("/Observation/_search", data={"code": codes},
                      headers={"content-type": "application/x-www-form-urlencoded"}).json()
        assert {e["resource"]["id"] for e in mine.get("entry", [])} >= {region.ids["obsA"], region.ids["obsB"]}
        # Above the documented limit: a clear 400, not a 500.
        many = doc.post("/Patient/_search", data={"identifier": ",".join(f"x|{i}" for i in range(5000))},
                        headers={"content-type": "application/x-www-form-urlencoded"})
        assert many.status_code == 400 and issue_code(many) == "HT-0021", many.text[:300]
        assert "1000" in many.text
        repeated = doc.post("/Patient/_search", content=urlencode([("family", f"f{i}") for i in range(1200)]),
                            headers={"content-type": "application/x-www-form-urlencoded"})
        assert repeated.status_code == 400 and issue_code(repeated) == "HT-0021", repeated.text[:300]


# ------------------------------------------------------------------ 18: break-glass review and SMS time
def _page_client(server: Server, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.root, timeout=30, cookies={session.ACCESS_COOKIE: token})


def _csrf(http: httpx.Client, path: str) -> str:
    page = http.get(path)
    assert page.status_code == 200, page.text[:300]
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert m, "no CSRF field on " + path
    return m.group(1)


def test_f18_portal_break_glass_reaches_the_review_queue(server: Server, region: Region) -> None:
    reason = "患者昏迷急诊送入，需查看既往病史"
    with _page_client(server, server.token(region.accounts["docB"])) as doc:
        csrf = _csrf(doc, f"/clinician/patient/{region.ids['R']}")
        r = doc.post(f"/clinician/patient/{region.ids['R']}/break-glass", data={"csrf": csrf, "reason": reason})
        assert r.status_code == 303 and "reason=break-glass" in r.headers["location"], r.text[:300]
    claims = [i for i in server.app.platform.audit.break_glass_list(reviewed=False)
              if i.entry.reason == reason and "/break-glass" in i.entry.interaction]
    assert len(claims) == 1 and claims[0].entry.action == "break-glass"
    assert claims[0].entry.persons == (region.ids["R"],)
    seq = claims[0].entry.seq
    # The auditor's queue (claims only, awaiting review) shows it and takes a verdict on it.
    with _page_client(server, server.token(region.accounts["auditor"])) as auditor:
        queue = auditor.get("/console/break-glass")
        assert queue.status_code == 200 and f'id="bg-{seq}"' in queue.text, queue.text[-2000:]
        csrf = _csrf(auditor, "/console/break-glass")
        done = auditor.post(f"/console/break-glass/{seq}/review", data={"csrf": csrf, "verdict": "justified"})
        assert done.status_code == 303
    with region.client("auditor") as api:
        listed = api.get(f"{server.root}/audit/break-glass", params={"reviewed": "true"}).json()["items"]
        assert seq in [i["seq"] for i in listed]


def test_f18_break_glass_sms_gives_beijing_time(server: Server, region: Region,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")     # the server's own zone is not Beijing's
    time.tzset()
    try:
        sms = server.app.platform.sms
        before = len(sms.messages())
        with region.client("docB") as doc:
            r = doc.post(f"/Patient/{region.ids['R']}/$break-glass", json={"reason": "急诊抢救需要查看既往史"})
            assert r.status_code == 200, r.text
        texts = [str(m.get("text")) for m in sms.messages()[before:]]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert len(texts) == 1
    beijing = datetime.now(ZoneInfo("Asia/Shanghai"))
    allowed = {(beijing - timedelta(minutes=k)).strftime("%Y-%m-%d %H:%M") for k in (0, 1)}
    assert any(t in texts[0] for t in allowed), (texts[0], allowed)
    assert "北京时间" in texts[0]


# ------------------------------------------------------------------ 19: favicon
def test_f19_favicon_is_public_and_not_audited(server: Server) -> None:
    audit = server.app.platform.audit
    head = len(audit.search(limit=500))
    with httpx.Client(base_url=server.root, timeout=30) as browser:
        for _ in range(5):
            r = browser.get("/favicon.ico")
            assert r.status_code == 200 and r.headers["content-type"] in ("image/x-icon", "image/vnd.microsoft.icon")
            assert r.content[:4] == b"\x00\x00\x01\x00"      # an ICO file
        assert browser.get("/static/app.css").status_code == 200
        # Something private without a token is still refused and audited.
        assert browser.get("/fhir/Patient").status_code == 401
    rows = audit.search(limit=500)
    assert len(rows) == head + 1 and rows[0].code == "HT-0100"


# ------------------------------------------------------------------ 20: headers, /docs, CSRF rotation
def _check_headers(r: httpx.Response, *, hsts: bool) -> None:
    h = r.headers
    assert h.get("x-content-type-options") == "nosniff", (r.url, dict(h))
    assert h.get("referrer-policy") == "no-referrer", r.url
    assert h.get("x-frame-options") == "DENY", r.url
    csp = h.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in csp and "default-src" in csp, (r.url, csp)
    assert ("strict-transport-security" in h) == hsts, (r.url, dict(h))


def test_f20_security_headers_on_every_kind_of_answer(server: Server) -> None:
    with httpx.Client(base_url=server.root, timeout=30) as http:
        for r in (http.get("/"), http.get("/healthz"), http.get("/fhir/metadata"), http.get("/fhir/Patient"),
                  http.get("/favicon.ico"), http.get("/static/app.css"), http.get("/docs"),
                  http.get("/openapi.json"), http.get("/no/such/path"),
                  server.client.get("/Patient", params={"_count": "1"})):
            _check_headers(r, hsts=False)
    # Over HTTPS (the public base URL says so): HSTS too.
    url = server.repo.db.engine.url.render_as_string(hide_password=False)
    with ExitStack() as stack:
        repo = open_repository(url)
        stack.callback(repo.db.close)
        app = create_app(Settings(database_url=url, base_url="https://hutong.example.cn/fhir"), repo=repo)
        root = stack.enter_context(serving(app))
        with httpx.Client(base_url=root, timeout=30) as http:
            for r in (http.get("/"), http.get("/fhir/metadata"), http.get("/fhir/Patient")):
                _check_headers(r, hsts=True)
                assert "max-age=" in r.headers["strict-transport-security"]


def test_f20_docs_load_no_third_party_script(server: Server) -> None:
    with httpx.Client(base_url=server.root, timeout=30) as http:
        docs = http.get("/docs")
        assert docs.status_code == 200
        srcs = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', docs.text)
        assert srcs, docs.text
        assert all(s.startswith("/") and not s.startswith("//") for s in srcs), srcs
        assert "<script>" not in docs.text.replace(" ", "")   # no inline script (CSP forbids it)
        csp = docs.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
        for s in srcs:
            asset = http.get(s)
            assert asset.status_code == 200 and asset.content, s
        assert http.get("/openapi.json").json()["openapi"]


def test_f20_csrf_cookie_is_rotated_at_sign_in(server: Server, region: Region) -> None:
    _doc, secret = staff(server, region, "doctora.zhou")
    with httpx.Client(base_url=server.root, timeout=30) as browser:
        landing = browser.get("/")
        before = browser.cookies.get(session.CSRF_COOKIE)
        assert before and f'value="{before}"' in landing.text
        signed = browser.post("/signin/staff", data={"csrf": before, "username": "doctora.zhou", "password": PW,
                                                     "totp": totp.code_at(secret, now_ms())})
        assert signed.status_code == 303 and signed.headers["location"] == "/clinician", signed.text[:300]
        after = browser.cookies.get(session.CSRF_COOKIE)
        assert after and after != before
        page = browser.get("/clinician")
        assert page.status_code == 200 and f'value="{after}"' in page.text
        # A form made with the pre-sign-in token (e.g. planted by a fixation attack) is refused.
        browser.cookies.set(session.CSRF_COOKIE, after)
        forged = browser.post("/clinician/search", data={"csrf": before, "mode": "id", "id_number": "x"})
        assert forged.status_code == 403
        ok = browser.post("/clinician/search", data={"csrf": after, "mode": "id", "id_number": "x"})
        assert ok.status_code == 400 and "身份证号" in ok.text      # the form was accepted (the ID is bad)


def test_f20_no_cdn_anywhere_in_served_pages(server: Server) -> None:
    with httpx.Client(base_url=server.root, timeout=30) as http:
        for path in ("/", "/docs"):
            text = http.get(path).text
            assert not re.search(r'(?:src|href)="(?:https?:)?//', text), (path, text[:500])
