"""Issue 7's cross-portal flow: a resident grants a doctor access in the browser,
the doctor reads the record, the resident revokes it and the doctor no
longer can, and the resident's access log shows the doctor's reads."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from conftest import UiRegion, shot, sign_in_resident
from playwright.sync_api import Dialog, Page, expect


def _used(ui: UiRegion) -> set[str]:
    """Persons other tests took (one account per person, and SMS codes are rate
    limited per account); the first person is test_signin's."""
    used: set[str] = ui.cache.setdefault("used", {ui.persons(min_institutions=1)[0]["id"]})
    return used


def _person_and_stranger_institution(ui: UiRegion) -> tuple[dict[str, Any], str]:
    """A person seen at two or more institutions, and an institution that holds
    none of their records (so no treatment relationship there)."""
    orgs = [o["id"] for o in ui.search("Organization", [("_count", "1000")])]
    used = _used(ui)
    for person in ui.persons(min_institutions=2):
        if person["id"] in used or ui.accounts.by_person(person["id"]) is not None:
            continue
        held = set(ui.institutions_of(person))
        stranger = next((o for o in orgs if o not in held), None)
        if stranger is not None:
            used.add(person["id"])
            return person, stranger
    pytest.fail("no person with an institution that never saw them")


def test_resident_grants_then_revokes_a_doctor(ui: UiRegion, new_page: Callable[..., Page]) -> None:
    person, org = _person_and_stranger_institution(ui)
    _account, idno = ui.resident(person)
    doctor = ui.clinician(org, name="授权测试医生")
    pract = doctor.account.practitioner_id
    token = ui.app.platform.authenticator.tokens.issue(doctor.account, doctor.account.scopes)["access_token"]
    api = httpx.Client(base_url=ui.url + "/fhir", headers={"Authorization": f"Bearer {token}"}, timeout=60)
    everything = f"/Patient/{person['id']}/$everything"

    # No basis yet: the doctor's institution never saw this resident.
    r = api.get(everything)
    assert r.status_code == 403, r.text
    assert "HT-0103" in r.text

    # The resident grants this one doctor access, in the browser, on a phone.
    page = new_page(phone=True)
    sign_in_resident(page, ui, idno)
    page.goto("/resident/consents")
    expect(page.get_by_role("heading", name="授权管理", exact=True)).to_be_visible()
    page.get_by_label("第一步：选择医院/机构").select_option(org)
    page.get_by_role("button", name="选择", exact=True).click()
    page.get_by_label("医生（可选：不选则为整个医院）").select_option(pract)
    expect(page.get_by_label("有效天数")).to_have_value("30")
    page.get_by_role("button", name="保存").click()
    expect(page.get_by_role("status")).to_contain_text("已保存")
    consent = page.locator(".res-consent[data-status='active']")
    expect(consent).to_have_count(1)
    expect(consent).to_contain_text("允许查看")
    shot(page, "resident-consents-granted-phone")

    # The doctor reads the whole record: every institution's part of it.
    for _ in range(2):
        r = api.get(everything)
        assert r.status_code == 200, r.text
    rows = [e["resource"] for e in r.json()["entry"]]
    sources = {(res.get("managingOrganization") or {}).get("reference") for res in rows
               if res["resourceType"] == "Patient" and not res["id"].startswith("mpi-")}
    assert {f"Organization/{o}" for o in ui.institutions_of(person)} <= sources
    assert any(res["resourceType"] == "Encounter" for res in rows)

    # The resident revokes; the doctor is refused again.
    page.on("dialog", lambda d: Dialog.accept(d))
    consent.get_by_role("button", name=re.compile("^撤销")).click()
    expect(page.get_by_role("status")).to_contain_text("授权已撤销")
    expect(page.locator(".res-consent[data-status='inactive']")).to_have_count(1)
    expect(page.locator(".res-consent[data-status='active']")).to_have_count(0)
    r = api.get(everything)
    assert r.status_code == 403, r.text
    api.close()

    # The access log names the doctor, the institution and the reason: both reads in one entry
    # (one sitting, issue 16, item 4), and the refused attempts before the grant and after the revoke.
    page.goto("/resident/access-log")
    reads = page.locator(".res-log-entry[data-outcome='0']").filter(has_text="授权测试医生")
    expect(reads).to_have_count(1)
    expect(reads).to_have_attribute("data-count", "2")
    expect(reads).to_contain_text("您的授权")
    expect(reads).to_contain_text(ui.search("Organization", [("_id", org)])[0]["name"])
    refused = page.locator(".res-log-entry[data-outcome='4']").filter(has_text="授权测试医生")
    assert refused.count() >= 1
    expect(refused.first).to_contain_text("被拒绝")
    shot(page, "resident-access-log-after-revoke-phone")
