"""SMART App Launch with an independent client in a real browser (issue 15,
"SMART App Launch for third-party apps").

The third-party app is the ``fhirclient`` package (SMART on FHIR's Python
client, not written here): a small app server uses its ``FHIRClient``
(``authorize_url``, ``handle_callback``, ``patient``, ``reauthorize``) and
nothing of Hutong's; it finds the endpoints in the CapabilityStatement's
oauth-uris extension and sends PKCE S256 on its own.  Playwright drives
Debian's Chromium through the platform's own pages:

- standalone launch on a phone (390 px): the app sends the resident to the
  authorize page, they sign in with their ID number and SMS code, approve,
  and the app reads their Patient; the resident then revokes the app under
  已授权的应用 and the app's refresh and token stop working;
- EHR launch on a desktop (1366 px): a clinician opens the app from a
  patient's record in the workspace; the app gets that patient as context.

Screenshots: var/test-artifacts/screenshots/smart-*.png.
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from conftest import UiRegion, shot, sign_in_staff
from fhirclient import client as smart_client
from playwright.sync_api import Browser, Page, expect


@dataclass
class ThirdPartyApp:
    """A SMART app built on fhirclient, served on its own loopback port."""

    fhir_base: str
    client_id: str = ""
    scope: str = "patient/*.rs offline_access"
    url: str = ""
    smart: Any = None
    seen: dict[str, Any] = field(default_factory=dict)

    def settings(self, launch: str | None = None) -> dict[str, Any]:
        s = {"app_id": self.client_id, "api_base": self.fhir_base, "redirect_uri": self.url + "/callback",
             "scope": self.scope}
        if launch is not None:
            s["launch_token"] = launch
        return s

    def handler(self) -> type[BaseHTTPRequestHandler]:
        app = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def reply(self, status: int, body: str = "", location: str | None = None) -> None:
                data = body.encode()
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                parts = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(parts.query).items()}
                try:
                    if parts.path == "/start":  # standalone launch
                        app.smart = smart_client.FHIRClient(settings=app.settings())
                        self.reply(302, location=app.smart.authorize_url)
                    elif parts.path == "/launch":  # EHR launch: iss + launch from the workspace
                        app.seen["iss"] = q.get("iss")
                        s = app.settings(q.get("launch"))
                        s["api_base"] = q["iss"]
                        app.smart = smart_client.FHIRClient(settings=s)
                        self.reply(302, location=app.smart.authorize_url)
                    elif parts.path == "/callback":
                        if "error" in q:
                            app.seen["error"] = q["error"]
                            self.reply(200, f"<p id='error'>{html.escape(q['error'])}</p>")
                            return
                        app.smart.handle_callback(app.url + self.path)
                        patient = app.smart.patient
                        app.seen["patient_id"] = app.smart.patient_id
                        app.seen["name"] = app.smart.human_name(patient.name[0]) if patient.name else ""
                        app.seen["context"] = dict(app.smart.launch_context or {})
                        self.reply(200, f"<h1>第三方应用</h1><p id='patient'>{html.escape(app.seen['name'])}</p>")
                    else:
                        self.reply(404)
                except Exception as e:  # shown to the test, which fails on it
                    app.seen["exception"] = repr(e)
                    self.reply(500, f"<pre id='exception'>{html.escape(repr(e))}</pre>")

        return Handler


@pytest.fixture
def app_server(ui: UiRegion) -> Iterator[ThirdPartyApp]:
    app = ThirdPartyApp(ui.url + "/fhir")
    srv = ThreadingHTTPServer(("127.0.0.1", 0), app.handler())
    app.url = f"http://127.0.0.1:{srv.server_address[1]}"
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        yield app
    finally:
        srv.shutdown()
        srv.server_close()
        th.join(5)


def _context(browser: Browser, ui: UiRegion, width: int) -> Any:
    ctx = browser.new_context(base_url=ui.url, locale="zh-CN",
                              viewport={"width": width, "height": 844 if width < 600 else 900})
    ctx.set_default_timeout(20_000)
    return ctx


def _no_overflow(page: Page) -> None:
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), "horizontal scroll"


def test_standalone_launch_resident_on_a_phone(browser: Browser, ui: UiRegion, app_server: ThirdPartyApp) -> None:
    smart = ui.app.platform.auth.smart
    row, _ = smart.register("健康助手（测试）", kind="public", redirect_uris=[app_server.url + "/callback"])
    app_server.client_id = row.client_id
    # A resident no other test signs in: codes are limited to one a minute per
    # resident, and test_console signs in the last person of the list.
    used: set[str] = ui.cache.setdefault("used", {ui.persons(min_institutions=1)[0]["id"]})
    person = next(p for p in reversed(ui.persons(1)[:-1])
                  if p["id"] not in used and ui.accounts.by_person(p["id"]) is None)
    used.add(person["id"])
    account, id_number = ui.resident(person)
    ctx = _context(browser, ui, 390)
    try:
        page = ctx.new_page()
        page.goto(app_server.url + "/start")
        # Not signed in: the platform's own sign-in, which comes back to the approval page.
        page.wait_for_url(re.compile(r"/\?next=%2Fsignin%2Fauthorize%2F|/\?next=/signin/authorize/"))
        before = ui.outbox_lines()
        page.locator("#id_number").fill(id_number)
        page.locator("button[formaction='/signin/resident/code']").click()
        page.wait_for_load_state("networkidle")
        page.locator("#code").fill(ui.last_sms_code(before))
        page.locator("form[action='/signin/resident'] button[type=submit]:not([formaction])").click()
        page.wait_for_url(re.compile(r"/signin/authorize/"))
        expect(page.locator("h1")).to_have_text("授权第三方应用")
        expect(page.locator("#granted")).to_contain_text("读取")
        expect(page.locator("#offline")).to_be_visible()
        expect(page.locator("#whose")).to_have_text("本人")
        _no_overflow(page)
        shot(page, "smart-authorize-390")
        page.locator("#approve").click()
        page.wait_for_url(re.compile(re.escape(app_server.url) + r"/callback"))
        assert "exception" not in app_server.seen, app_server.seen
        expect(page.locator("#patient")).not_to_be_empty()
        assert app_server.seen["patient_id"] == person["id"]
        assert "offline_access" in app_server.seen["context"]["scope"]
        assert app_server.smart.server.auth.refresh_token  # offline_access: the app can refresh
        assert app_server.smart.reauthorize()  # fhirclient's own refresh (rotated)
        token = app_server.smart.server.auth.access_token
        ok = requests.get(f"{ui.url}/fhir/Patient/{person['id']}", headers={"Authorization": f"Bearer {token}"},
                          timeout=30)
        assert ok.status_code == 200
        # 已授权的应用: the resident sees the app and revokes it.
        page.goto("/resident/apps")
        expect(page.locator(".smart-app h2")).to_have_text("健康助手（测试）")
        _no_overflow(page)
        shot(page, "smart-apps-390")
        page.on("dialog", lambda d: d.accept())
        page.locator(".smart-app button.danger").click()
        page.wait_for_url(re.compile(r"/resident/apps\?done=revoked"))
        expect(page.locator("#no-apps")).to_be_visible()
        shot(page, "smart-apps-revoked-390")
        gone = requests.get(f"{ui.url}/fhir/Patient/{person['id']}", headers={"Authorization": f"Bearer {token}"},
                            timeout=30)
        assert gone.status_code == 401
        # The refresh token the app holds is dead too (its grant was revoked).
        refresh = requests.post(ui.url + "/auth/token", timeout=30, data={
            "grant_type": "refresh_token", "refresh_token": app_server.smart.server.auth.refresh_token,
            "client_id": app_server.client_id})
        assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant", refresh.text
    finally:
        ctx.close()


def test_ehr_launch_from_the_clinician_workspace(browser: Browser, ui: UiRegion,
                                                 app_server: ThirdPartyApp) -> None:
    smart = ui.app.platform.auth.smart
    row, _ = smart.register("检验结果解读（测试）", kind="public", redirect_uris=[app_server.url + "/callback"],
                            launch_url=app_server.url + "/launch")
    app_server.client_id = row.client_id
    app_server.scope = "patient/*.rs"
    person = ui.persons(1)[0]
    org = ui.institutions_of(person)[0]
    doctor = ui.clinician(org, name="李医生")
    ctx = _context(browser, ui, 1366)
    try:
        page = ctx.new_page()
        sign_in_staff(page, doctor)
        page.goto(f"/clinician/patient/{person['id']}")  # the access step, then the record
        page.locator("#open-record").click()
        page.locator("#open-app").click()
        page.wait_for_url(re.compile(r"/clinician/apps\?patient="))
        expect(page.locator("h2")).to_contain_text("检验结果解读（测试）")
        shot(page, "smart-launch-1366")
        page.get_by_role("button", name="打开").click()
        page.wait_for_url(re.compile(r"/signin/authorize/"))
        expect(page.locator("#whose")).not_to_be_empty()
        expect(page.locator("#refused")).to_have_count(0)  # patient/*.rs granted as the clinician's user/*.rs
        expect(page.locator("#granted")).to_contain_text("您有权查看的档案中的")
        _no_overflow(page)
        shot(page, "smart-authorize-clinician-1366")
        page.locator("#approve").click()
        page.wait_for_url(re.compile(re.escape(app_server.url) + r"/callback"))
        assert "exception" not in app_server.seen, app_server.seen
        assert app_server.seen["iss"] == ui.url + "/fhir"
        assert app_server.seen["patient_id"] == person["id"]
        assert app_server.seen["context"].get("need_patient_banner") is True
        assert "launch" in app_server.seen["context"]["scope"].split()
        expect(page.locator("#patient")).not_to_be_empty()
        shot(page, "smart-app-callback-1366")
    finally:
        ctx.close()
