"""Small but visible (issue 16, item 10): a first visit is asked to sign in
(not told its session expired); ``/?error=`` shows only known error codes, in
words; 获取验证码 pressed again within the minute says when to retry; the
consent form's choice is named and a refusal hides the sensitive categories;
the English record heading has an English colon.  (No emoji without a CJK
glyph, such as ⏳, and no label twice around a separator: the page-wide scan,
tests/ui/test_zh_pages.py.)"""

from __future__ import annotations

import re

import httpx
from conftest import UiRegion
from playwright.sync_api import expect
from test_zh_pages import visible_text
from tour import Tour, tour  # noqa: F401  (the fixture)

from hutong.web.ui.i18n import MESSAGES


def test_first_visit_is_asked_to_sign_in_an_ended_session_is_told(ui: UiRegion) -> None:
    with httpx.Client(base_url=ui.url, timeout=30) as c:
        first = c.get("/clinician", follow_redirects=False)
        assert first.status_code == 303
        assert "expired" not in first.headers["location"], first.headers["location"]
        page = c.get(first.headers["location"]).text
        assert MESSAGES["signin.needed"][0] in page and MESSAGES["signin.expired"][0] not in page
    with httpx.Client(base_url=ui.url, timeout=30, cookies={"hutong_at": "an.old.token"}) as c:
        ended = c.get("/clinician", follow_redirects=False)
        assert "expired=1" in ended.headers["location"]
        assert MESSAGES["signin.expired"][0] in c.get(ended.headers["location"]).text


def test_sign_in_errors_are_known_codes_in_words(ui: UiRegion) -> None:
    crafted = "账户异常，请立即致电 010-12345678 解冻"
    with httpx.Client(base_url=ui.url, timeout=30) as c:
        page = " ".join(visible_text(c.get("/", params={"error": crafted}).text)[0])
        assert "010-12345678" not in page and "解冻" not in page, page
        assert MESSAGES["signin.err.generic"][0] in page
        known = c.get("/", params={"error": "HT-0127"}).text
        assert MESSAGES["signin.err.HT-0127"][0] in known
        # a failed sign-in sends the browser to its code only
        r = c.get("/")
        csrf = re.search(r'name="csrf" value="([^"]+)"', r.text)
        assert csrf
        failed = c.post("/signin/staff", data={"csrf": csrf.group(1), "username": "nobody", "password": "x" * 12,
                                               "totp": "000000"}, follow_redirects=False)
        assert failed.headers["location"].startswith("/?error=HT-01"), failed.headers["location"]


def test_asking_for_a_code_again_within_the_minute_says_when(ui: UiRegion, tour: Tour) -> None:  # noqa: F811
    # A resident no other test signs in (they take the first and last of the list, or mark theirs
    # used): asking twice within the minute holds back that resident's next code.
    people = ui.persons()
    taken = ui.cache.setdefault("used", {people[0]["id"]})  # as tests/ui/test_resident.py keeps it
    avoid = taken | ui.cache.get("clinician-taken", set()) | {tour.facts["person"]["id"]}
    person = next(p for p in people[len(people) // 2:-1] if p["id"] not in avoid)
    taken.add(person["id"])
    _account, idno = ui.resident(person)
    page = tour.tabs["public"]
    page.goto("/")
    before = ui.outbox_lines()
    page.locator("#id_number").fill(idno)
    page.locator("button[formaction='/signin/resident/code']").click()
    expect(page.get_by_role("status").first).to_contain_text("验证码已发送")
    assert ui.outbox_lines() == before + 1
    page.locator("button[formaction='/signin/resident/code']").click()
    wait = page.locator("#code-wait")
    expect(wait).to_contain_text(re.compile(r"请在 \d+ 秒后重试"))
    assert not page.get_by_text("验证码已发送").count()
    assert ui.outbox_lines() == before + 1  # nothing sent, and the page says so


def test_consent_choice_is_named_and_refusal_hides_the_categories(ui: UiRegion, tour: Tour) -> None:  # noqa: F811
    page = tour.tabs["resident"]
    org = ui.search("Organization", [("_count", "1")])[0]["id"]
    page.goto(f"/resident/consents?org={org}")
    form = page.locator("form.res-grant")
    expect(form.locator("legend").first).to_have_text("允许还是拒绝")
    cats = form.locator("fieldset.res-cats")
    expect(cats).to_be_visible()
    form.locator("#kind-deny").check()
    expect(cats).to_be_hidden()
    form.locator("#kind-permit").check()
    expect(cats).to_be_visible()


def test_english_record_heading_has_an_english_colon(tour: Tour) -> None:  # noqa: F811
    page = tour.tabs["clinician"]
    pid = tour.facts["person"]["id"]
    try:
        page.goto(f"/clinician/patient/{pid}/record?reason=treatment&lang=en")
        heading = page.get_by_role("heading", level=1).inner_text()
        assert heading.startswith("Health record: ") and "：" not in heading, heading
    finally:
        page.goto("/clinician?lang=zh-CN")
