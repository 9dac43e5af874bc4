"""Sign-in pages in a real browser: staff with password + TOTP, residents with
ID number + SMS code, wrong input refused, sessions end at sign-out."""

from __future__ import annotations

import re
from collections.abc import Callable

from conftest import UiRegion, shot, sign_in_resident, sign_in_staff
from playwright.sync_api import Page, expect

from hutong.security.principal import Role


def test_landing_page_is_bilingual_and_labelled(new_page: Callable[..., Page]) -> None:
    page = new_page(phone=True)
    page.goto("/")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.get_by_role("heading", name="登录", exact=True)).to_be_visible()
    shot(page, "signin-phone-zh")
    page.get_by_role("link", name="English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", name="Sign in", exact=True)).to_be_visible()
    # every input has a label
    for el in page.locator("input:not([type=hidden])").all():
        assert page.locator(f"label[for='{el.get_attribute('id')}']").count() == 1


def test_staff_sign_in_wrong_code_then_right(ui: UiRegion, new_page: Callable[..., Page]) -> None:
    who = ui.staff(Role.COMMISSION, name="信息中心")
    page = new_page()
    page.goto("/")
    page.locator("#username").fill(who.username)
    page.locator("#password").fill(who.password)
    page.locator("#totp").fill("000000")
    page.locator("form[action='/signin/staff'] button[type=submit]").click()
    expect(page.locator(".error")).to_be_visible()
    sign_in_staff(page, who)
    assert "/console" in page.url  # each role lands on its own portal
    page.goto("/")
    page.get_by_role("button", name=re.compile("退出|Sign out")).click()
    page.goto("/console")
    assert "/?next=" in page.url  # signed out: sent back to sign in


def test_resident_signs_in_with_sms_code(ui: UiRegion, new_page: Callable[..., Page]) -> None:
    person = ui.persons(min_institutions=1)[0]
    _account, idno = ui.resident(person)
    page = new_page(phone=True)
    sign_in_resident(page, ui, idno)
    assert "/resident" in page.url
