"""The institution answers a resident's correction request, in browsers (issue 16, item 8).

End to end on the session's synthetic region: a resident files a correction
request on their phone; the institution's designated officer (医务科/病案管理:
PractitionerRole.code correction-officer) finds it in the clinician
workspace's inbox, opens it and answers; the resident's home page says an
answer came, and their corrections page shows it in words.  The inbox and the
request page fit 390 px and 1366 px (screenshots corrections-inbox-390.png,
corrections-inbox-1366.png, corrections-request-390.png, corrections-request-1366.png).
An ordinary clinician of the same institution gets no inbox.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson
from conftest import SCREENSHOTS, Staff, UiRegion, shot, sign_in_resident, sign_in_staff
from playwright.sync_api import Page, expect
from test_resident import _fresh

from hutong.fhir.service import FhirService
from hutong.security.guard import as_operator
from hutong.security.principal import Role
from hutong.systems import CORRECTION_OFFICER, DUTY_SYSTEM, ORGANIZATION

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 900}


def officer(ui: UiRegion, organization_id: str, name: str = "病案室赵老师") -> Staff:
    """A clinician whose post the institution designates to answer correction requests."""
    svc = FhirService(as_operator(ui.repo))
    pr = orjson.loads(svc.create("Practitioner", orjson.dumps(
        {"resourceType": "Practitioner", "name": [{"text": name}]}), {}).body or b"{}")
    role = orjson.loads(svc.create("PractitionerRole", orjson.dumps({
        "resourceType": "PractitionerRole", "active": True,
        "practitioner": {"reference": f"Practitioner/{pr['id']}"},
        "organization": {"reference": f"Organization/{organization_id}"},
        "code": [{"coding": [{"system": DUTY_SYSTEM, "code": CORRECTION_OFFICER, "display": "更正申请答复"}]}]}),
        {}).body or b"{}")
    org = ui.search("Organization", [("_id", organization_id)])[0]
    code = next(i["value"] for i in org["identifier"] if i["system"] == ORGANIZATION)
    return ui.staff(Role.CLINICIAN, name=name, organization=code, organization_id=organization_id,
                    practitioner_id=pr["id"], practitioner_role_id=role["id"])


def fits(page: Page) -> None:
    got = page.evaluate("() => [document.scrollingElement.scrollWidth, window.innerWidth]")
    assert got[0] <= got[1], f"page {got[0]} px wide on a {got[1]} px screen"


def test_resident_files_the_institution_answers_the_resident_reads(
        ui: UiRegion, new_page: Callable[..., Page]) -> None:
    person = _fresh(ui, ui.persons(min_institutions=2))
    _account, idno = ui.resident(person)
    res = new_page(phone=True)
    sign_in_resident(res, ui, idno)
    res.goto("/resident/corrections")
    options = res.locator("#item option[value^='Condition/'], #item option[value^='Observation/']")
    assert options.count() > 0
    item = options.first.get_attribute("value") or ""
    res.locator("#item").select_option(item)
    res.get_by_label("哪里不对，应该是什么").fill("这一项不是我的，我从未在该院做过此项检查。")
    res.get_by_role("button", name="提交申请").click()
    entry = res.locator(".res-correction").first
    expect(entry).to_have_attribute("data-status", "requested")
    task_id = entry.get_attribute("data-task") or ""
    task: dict[str, Any] = ui.search("Task", [("_id", task_id)])[0]
    org = task["owner"]["reference"].split("/")[1]

    # An ordinary clinician of that institution: no inbox, no link to it.
    plain = new_page()
    sign_in_staff(plain, ui.clinician(org, name="内科钱医生"))
    expect(plain.get_by_role("heading", name="查找患者")).to_be_visible()
    expect(plain.locator("#corrections-inbox")).to_have_count(0)
    plain.goto("/clinician/corrections")
    expect(plain.locator("main")).to_contain_text("医务科")

    # The designated officer: the workspace links to the inbox, the request is there in words.
    desk = new_page()
    desk.set_viewport_size(DESKTOP)  # type: ignore[arg-type]
    sign_in_staff(desk, officer(ui, org))
    desk.locator("#corrections-inbox").click()
    expect(desk.get_by_role("heading", name="更正申请", exact=True)).to_be_visible()
    row = desk.locator(f".cor-item[data-task='{task_id}']")
    expect(row).to_contain_text("这一项不是我的")
    expect(row).to_contain_text(re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}"))
    main = desk.locator("main").inner_text()
    assert item.split("/")[1] not in main and task_id not in main, "raw ids on the inbox"
    shot(desk, "corrections-inbox-1366")
    desk.set_viewport_size(PHONE)  # type: ignore[arg-type]
    fits(desk)
    shot(desk, "corrections-inbox-390")
    desk.set_viewport_size(DESKTOP)  # type: ignore[arg-type]
    row.get_by_role("link", name="处理").click()
    expect(desk.locator("main")).to_contain_text("这一项不是我的")
    shot(desk, "corrections-request-1366")
    desk.set_viewport_size(PHONE)  # type: ignore[arg-type]
    fits(desk)
    shot(desk, "corrections-request-390")
    desk.set_viewport_size(DESKTOP)  # type: ignore[arg-type]
    desk.get_by_label("更正了什么（居民会看到）").fill("经核实系录入错误，已在本院系统中删除该项。")
    desk.get_by_role("button", name="确认已更正").click()
    expect(desk.get_by_role("status")).to_contain_text("答复已保存")
    expect(desk.locator(f".cor-item[data-task='{task_id}'][data-status='completed']")).to_be_visible()
    stored = ui.search("Task", [("_id", task_id)])[0]
    assert stored["status"] == "completed" and stored["businessStatus"]["coding"][0]["code"] == "corrected"
    assert stored["output"][0]["valueString"] == "经核实系录入错误，已在本院系统中删除该项。"

    # The resident: told on the home page, the answer in words on the corrections page, then the notice goes.
    res.goto("/resident")
    expect(res.locator("#correction-answered")).to_contain_text("您的更正申请已有答复")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    res.screenshot(path=str(SCREENSHOTS / "resident-correction-answered-notice-390.png"))  # the top: a long page
    res.locator("#correction-answered").get_by_role("link", name="查看答复").click()
    mine = res.locator(f".res-correction[data-task='{task_id}']")
    expect(mine).to_have_attribute("data-status", "completed")
    expect(mine).to_contain_text("已更正")
    expect(mine).to_contain_text("经核实系录入错误，已在本院系统中删除该项。")
    res.goto("/resident")
    expect(res.locator("#correction-answered")).to_have_count(0)
