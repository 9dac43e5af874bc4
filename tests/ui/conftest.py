"""Portal tests: a live server loaded with a synthetic region, driven by
Playwright in Debian's Chromium (``make test`` installs the ``chromium``
package; Playwright's own browser download is not used).

- ``ui``: one server per test session (SQLite), loaded with a small synthetic
  region (hutong.synth) so pages show realistic records from several
  institutions; tests create the accounts they need (``ui.clinician(...)``).
- ``page``: a fresh browser context per test (no shared cookies), phone-sized
  or desktop as the test asks.
- ``shot(page, name)``: saves a full-page screenshot under
  ``var/test-artifacts/screenshots/`` (kept as CI artifacts).
"""

from __future__ import annotations

import os
import re
import shutil
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyotp
import pytest
from harness import serving
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from hutong.config import Settings
from hutong.fhir import search as fsearch
from hutong.fhir.assembly import open_repository
from hutong.fhir.service import FhirService
from hutong.ingest.bulk import import_ndjson
from hutong.security.accounts import Account
from hutong.security.guard import as_operator
from hutong.security.principal import Role
from hutong.store.sql import SqlRepository
from hutong.synth import SynthConfig, generate
from hutong.systems import ID_CARD, ORGANIZATION
from hutong.web.app import create_app

ARTIFACTS = Path(os.environ.get("HUTONG_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "var" / "test-artifacts"))
SCREENSHOTS = ARTIFACTS / "screenshots"
GOLDEN = "https://fhir.hutong.dev/CodeSystem/mpi|golden"


def chromium_path() -> str:
    for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", shutil.which("chromium") or ""):
        if p and Path(p).exists():
            return p
    pytest.fail("Debian's chromium is not installed (make test installs it: apt-get install chromium)")


@dataclass
class Staff:
    account: Account
    username: str
    password: str
    totp_secret: str

    def code(self) -> str:
        # A fresh code each time, never one already used (TOTP replay is refused).
        return pyotp.TOTP(self.totp_secret).now()


@dataclass
class UiRegion:
    url: str
    app: Any
    repo: SqlRepository
    outbox: Path
    _n: int = 0
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def accounts(self) -> Any:
        return self.app.platform.authenticator.tokens.accounts

    def search(self, type: str, items: list[tuple[str, str]]) -> list[dict[str, Any]]:
        parsed = fsearch.parse(type, items, base_url="", strict=True)
        return [orjson.loads(s.body) for s in self.repo.search(parsed.query).matches if s.body is not None]

    def _username(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def staff(self, role: Role, **kw: Any) -> Staff:
        username = self._username(role.value)
        account, password, uri = self.accounts.add_user(username, role=role, name=kw.pop("name", username), **kw)
        secret = urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)["secret"][0]
        return Staff(account, username, password, secret)

    def clinician(self, organization_id: str, name: str = "张医生") -> Staff:
        """A clinician at the institution whose Organization id is given (a real post there)."""
        org = self.search("Organization", [("_id", organization_id)])[0]
        code = next(i["value"] for i in org["identifier"] if i["system"] == ORGANIZATION)
        roles = self.search("PractitionerRole", [("organization", f"Organization/{organization_id}"),
                                                 ("_count", "1")])
        if not roles:  # an institution another test registered without staff: give it a post
            svc = FhirService(as_operator(self.repo))
            pr = orjson.loads(svc.create("Practitioner", orjson.dumps(
                {"resourceType": "Practitioner", "name": [{"text": name}]}), {}).body or b"{}")
            roles = [orjson.loads(svc.create("PractitionerRole", orjson.dumps(
                {"resourceType": "PractitionerRole", "practitioner": {"reference": f"Practitioner/{pr['id']}"},
                 "organization": {"reference": f"Organization/{organization_id}"}}), {}).body or b"{}")]
        practitioner = roles[0]["practitioner"]["reference"].split("/")[1]
        return self.staff(Role.CLINICIAN, name=name, organization=code, organization_id=organization_id,
                          practitioner_id=practitioner, practitioner_role_id=roles[0]["id"])

    def persons(self, min_institutions: int = 1, limit: int = 500) -> list[dict[str, Any]]:
        """Golden persons with an ID number and a phone, linked to at least
        ``min_institutions`` institutions' records."""
        out = []
        for person in self.search("Patient", [("_tag", GOLDEN), ("_count", str(limit))]):
            if not any(i.get("system") == ID_CARD for i in person.get("identifier", [])):
                continue
            if not any(t.get("system") == "phone" for t in person.get("telecom", [])):
                continue
            if len(self.institutions_of(person)) >= min_institutions:
                out.append(person)
        return out

    def institutions_of(self, person: dict[str, Any]) -> list[str]:
        """Organization ids managing this person's source Patients."""
        orgs = []
        for ln in person.get("link", []):
            if ln.get("type") != "seealso":
                continue
            s = self.repo.read("Patient", ln["other"]["reference"].split("/")[1])
            if s is not None and s.body is not None:
                ref = (orjson.loads(s.body).get("managingOrganization") or {}).get("reference")
                if ref and ref.split("/")[1] not in orgs:
                    orgs.append(ref.split("/")[1])
        return orgs

    def resident(self, person: dict[str, Any]) -> tuple[Account, str]:
        """A resident account for a golden person; returns it and their ID number."""
        phone = next(t["value"] for t in person["telecom"] if t.get("system") == "phone")
        idno = next(i["value"] for i in person["identifier"] if i.get("system") == ID_CARD)
        existing = self.accounts.by_person(person["id"])
        return (existing or self.accounts.add_resident(person["id"], phone=phone)), idno

    def last_sms_code(self, after: int = 0) -> str:
        """The newest sign-in code in the development SMS outbox."""
        lines = self.outbox.read_text(encoding="utf-8").splitlines()[after:]
        for line in reversed(lines):
            m = re.search(r"(\d{6})", orjson.loads(line)["text"])
            if m:
                return m.group(1)
        raise AssertionError("no sign-in code in the SMS outbox")

    def outbox_lines(self) -> int:
        return len(self.outbox.read_text(encoding="utf-8").splitlines()) if self.outbox.exists() else 0


@pytest.fixture(scope="session")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiRegion]:
    d = tmp_path_factory.mktemp("ui")
    generate(d / "region", SynthConfig(residents=300, institutions=6, seed=11, years=2))
    url = f"sqlite:///{d}/ui.db"
    repo = open_repository(url)
    result = import_ndjson(as_operator(repo), d / "region", workers=1)
    assert not result.errors, result.errors[:3]
    app = create_app(Settings(database_url=url), repo=repo)
    try:
        with serving(app) as root:
            yield UiRegion(root, app, repo, app.platform.sms.path)
    finally:
        repo.db.close()


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(executable_path=chromium_path(), headless=True,
                                   args=["--no-sandbox", "--disable-dev-shm-usage"])
    yield b
    b.close()


@pytest.fixture
def new_page(browser: Browser, ui: UiRegion) -> Iterator[Callable[..., Page]]:
    """``new_page(phone=False)``: a page in its own context (its own cookies)."""
    contexts = []

    def make(phone: bool = False, lang: str = "zh-CN") -> Page:
        ctx = browser.new_context(base_url=ui.url, locale=lang,
                                  viewport={"width": 390, "height": 844} if phone else {"width": 1280, "height": 900})
        ctx.set_default_timeout(15_000)
        contexts.append(ctx)
        return ctx.new_page()

    yield make
    for ctx in contexts:
        ctx.close()


def shot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in_staff(page: Page, who: Staff) -> None:
    page.goto("/")
    page.get_by_label(re.compile("用户名|Username")).fill(who.username)
    page.get_by_label(re.compile("^密码$|^Password$")).fill(who.password)
    page.get_by_label(re.compile("动态口令|Authenticator")).fill(who.code())
    page.locator("form[action='/signin/staff'] button[type=submit]").click()
    page.wait_for_load_state()


def sign_in_resident(page: Page, ui: UiRegion, id_number: str) -> None:
    page.goto("/")
    before = ui.outbox_lines()
    page.locator("#id_number").fill(id_number)
    page.locator("button[formaction='/signin/resident/code']").click()
    page.wait_for_load_state()
    code = ui.last_sms_code(before)
    page.locator("#code").fill(code)
    page.locator("form[action='/signin/resident'] button[type=submit]:not([formaction])").click()
    page.wait_for_load_state()
