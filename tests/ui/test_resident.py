"""The resident portal (健康档案随身带) in a real browser on a phone-sized screen:
the record timeline across institutions, lab values out of range said in
words and arrows, a correction request created and listed, the access log,
the delegate view; a screenshot of each page."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from conftest import UiRegion, shot, sign_in_resident
from playwright.sync_api import Page, expect

from hutong.security.accounts import Delegation
from hutong.security.principal import Role
from hutong.systems import ID_CARD, ORGANIZATION

LAB = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"


def _used(ui: UiRegion) -> set[str]:
    """Persons other tests took (one account per person, and SMS codes are rate
    limited per account); the first person is test_signin's."""
    used: set[str] = ui.cache.setdefault("used", {ui.persons(min_institutions=1)[0]["id"]})
    return used


def _fresh(ui: UiRegion, people: list[dict[str, Any]]) -> dict[str, Any]:
    """A person no test has given an account yet (one account per golden person)."""
    used = _used(ui)
    for p in people:
        if p["id"] not in used and ui.accounts.by_person(p["id"]) is None:
            used.add(p["id"])
            return p
    pytest.fail("no unused person left in the synthetic region")


def _person_with_high_lab(ui: UiRegion) -> tuple[dict[str, Any], dict[str, Any]]:
    """A person (with ID number and phone) one of whose lab values lies above its range."""
    source_to_person = {}
    people = ui.persons(min_institutions=2)
    for p in people:
        for ln in p.get("link", []):
            source_to_person[ln["other"]["reference"].split("/")[1]] = p
    used = _used(ui)
    for obs in ui.search("Observation", [("category", LAB), ("_count", "1000")]):
        p = source_to_person.get(obs["subject"]["reference"].split("/")[1])
        if p is None or p["id"] in used or ui.accounts.by_person(p["id"]) is not None:
            continue
        q, rr = obs.get("valueQuantity"), (obs.get("referenceRange") or [{}])[0]
        if q and "high" in rr and q["value"] > rr["high"]["value"]:
            used.add(p["id"])
            return p, obs
    pytest.fail("no person with a lab value above its range")


def test_timeline_shows_every_institution(ui: UiRegion, new_page: Callable[..., Page]) -> None:
    person = _fresh(ui, ui.persons(min_institutions=3))
    _account, idno = ui.resident(person)
    orgs = ui.institutions_of(person)
    names = {o["id"]: o["name"] for o in ui.search("Organization", [("_count", "1000")])}
    page = new_page(phone=True)
    sign_in_resident(page, ui, idno)
    page.goto("/resident")
    expect(page.get_by_role("heading", name="就诊记录")).to_be_visible()
    visits = page.locator(".res-visit")
    assert visits.count() > 0
    text = page.locator("main").inner_text()
    # Visits from each institution that holds an encounter of this person (all pages of the timeline).
    seen = set()
    while True:
        seen |= {t.strip() for t in page.locator(".res-where .tag.src").all_inner_texts()}
        more = page.get_by_role("link", name="更早的记录")
        if more.count() == 0:
            break
        more.click()
    with_visits = {names[o] for o in orgs
                   if ui.search("Encounter", [("subject", f"Patient/{_source_at(ui, person, o)}"), ("_count", "1")])}
    assert with_visits and with_visits <= seen
    assert "共" in text and "次就诊" in text
    # the page fits a phone: no horizontal scrolling of the page itself
    page.goto("/resident")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    shot(page, "resident-timeline-phone")
    page.get_by_role("link", name="English").click()
    expect(page.get_by_role("heading", name="Visits")).to_be_visible()
    shot(page, "resident-timeline-phone-en")


def _source_at(ui: UiRegion, person: dict[str, Any], org: str) -> str:
    for ln in person.get("link", []):
        sid = ln["other"]["reference"].split("/")[1]
        src = ui.search("Patient", [("_id", sid)])
        if src and (src[0].get("managingOrganization") or {}).get("reference") == f"Organization/{org}":
            return sid
    raise AssertionError("no source patient at that institution")


def test_labs_out_of_range_in_words_and_arrows(ui: UiRegion, new_page: Callable[..., Page]) -> None:
    person, obs = _person_with_high_lab(ui)
    _account, idno = ui.resident(person)
    page = new_page(phone=True)
    sign_in_resident(page, ui, idno)
    page.goto("/resident/labs")
    expect(page.get_by_role("heading", name="检验报告", exact=True)).to_be_visible()
    name = obs["code"]["text"]
    value = f"{obs['valueQuantity']['value']:g}"
    row = page.locator("tr.res-out", has_text=name).filter(has_text=value).first
    expect(row).to_be_visible()
    expect(row.locator(".flag-high")).to_have_text(re.compile(r"偏高\s*↑"))
    expect(row).to_contain_text(obs["referenceRange"][0]["text"])
    # a normal row says so in words too (no information by colour alone)
    expect(page.locator("tbody tr:not(.res-out) td").filter(has_text="正常").first).to_be_visible()
    shot(page, "resident-labs-phone")
    # only the out-of-range results
    page.get_by_label("只看异常项目").check()
    page.get_by_role("button", name="筛选").click()
    assert page.locator("tbody tr").count() == page.locator("tbody tr.res-out").count() > 0
    # a trend of one test, drawn by Chart.js, with the values also in a table
    row = page.locator("tr.res-out", has_text=name).first
    row.get_by_role("link", name="变化趋势").click()
    expect(page.locator("canvas[data-chart][data-drawn='1']")).to_be_visible()
    expect(page.get_by_role("heading", name=re.compile("变化趋势"))).to_be_visible()
    shot(page, "resident-labs-trend-phone")
    page.get_by_role("link", name="English").click()
    expect(page.locator(".flag-high").first).to_have_text(re.compile(r"High\s*↑"))


def test_correction_request_created_and_listed(ui: UiRegion, new_page: Callable[..., Page]) -> None:
    person = _fresh(ui, ui.persons(min_institutions=2))
    _account, idno = ui.resident(person)
    page = new_page(phone=True)
    sign_in_resident(page, ui, idno)
    page.goto("/resident/corrections")
    expect(page.get_by_role("heading", name="申请更正").first).to_be_visible()
    options = page.locator("#item option[value^='Condition/']")
    assert options.count() > 0
    item = options.first.get_attribute("value")
    assert item
    page.locator("#item").select_option(item)
    page.get_by_label("哪里不对，应该是什么").fill("这个诊断不是我的，我从未患过此病。")
    page.get_by_role("button", name="提交申请").click()
    if page.locator(".error, [role=alert]").count():
        pytest.fail("correction refused: " + page.locator("main").inner_text()[:300])
    expect(page.get_by_role("status")).to_contain_text("申请已提交")
    entry = page.locator(".res-correction").first
    expect(entry).to_contain_text("这个诊断不是我的")
    expect(entry).to_contain_text("等待答复")
    expect(entry).to_have_attribute("data-status", "requested")
    shot(page, "resident-corrections-phone")
    # stored as a FHIR Task owned by the institution holding the item
    task = ui.search("Task", [("_id", entry.get_attribute("data-task") or "")])[0]
    assert task["status"] == "requested" and task["intent"] == "order"
    assert task["for"]["reference"] == f"Patient/{person['id']}"
    assert task["focus"]["reference"] == item
    cond = ui.search("Condition", [("_id", item.split("/")[1])])[0]
    src = ui.search("Patient", [("_id", cond["subject"]["reference"].split("/")[1])])[0]
    assert task["owner"]["reference"] == src["managingOrganization"]["reference"]
    assert task["code"]["coding"][0]["code"] == "correction-request"

    # The institution answers (through the API, under its own policy); the resident sees the answer.
    owner = task["owner"]["reference"].split("/")[1]
    org = ui.search("Organization", [("_id", owner)])[0]
    code = next(i["value"] for i in org["identifier"] if i["system"] == ORGANIZATION)
    his, _secret = ui.accounts.add_client("纠错测试HIS", organization=code, organization_id=owner)
    token = ui.app.platform.authenticator.tokens.issue(his, his.scopes)["access_token"]
    with httpx.Client(base_url=ui.url + "/fhir", headers={"Authorization": f"Bearer {token}"}) as c:
        r = c.get(f"/Task/{task['id']}")
        assert r.status_code == 200, r.text
        answered = {**r.json(), "status": "completed", "businessStatus": {"text": "已更正"},
                    "output": [{"type": {"text": "答复"}, "valueString": "经核实系录入错误，已删除该诊断。"}]}
        answered.pop("meta", None)
        r = c.put(f"/Task/{task['id']}", content=orjson.dumps(answered),
                  headers={"Content-Type": "application/fhir+json"})
        assert r.status_code == 200, r.text
    page.reload()
    entry = page.locator(f".res-correction[data-task='{task['id']}']")
    expect(entry).to_have_attribute("data-status", "completed")
    expect(entry).to_contain_text("已更正")
    expect(entry).to_contain_text("经核实系录入错误，已删除该诊断。")
    shot(page, "resident-corrections-answered-phone")


def test_access_log_lists_others_and_flags_break_glass(ui: UiRegion, new_page: Callable[..., Page]) -> None:
    person = _fresh(ui, ui.persons(min_institutions=1))
    _account, idno = ui.resident(person)
    held = set(ui.institutions_of(person))
    other = next(o["id"] for o in ui.search("Organization", [("_count", "1000")]) if o["id"] not in held)
    doctor = ui.clinician(other, name="急诊科刘医生")
    token = ui.app.platform.authenticator.tokens.issue(doctor.account, doctor.account.scopes)["access_token"]
    with httpx.Client(base_url=ui.url + "/fhir", headers={"Authorization": f"Bearer {token}"}) as c:
        r = c.post(f"/Patient/{person['id']}/$break-glass", content=orjson.dumps({"reason": "患者昏迷送医，需查过敏史和既往病史"}),
                   headers={"Content-Type": "application/fhir+json"})
        assert r.status_code == 200, r.text
        assert c.get(f"/Patient/{person['id']}/$everything").status_code == 200
    page = new_page(phone=True)
    sign_in_resident(page, ui, idno)
    page.goto("/resident")  # the resident's own look: hidden from the log unless asked for
    page.goto("/resident/access-log")
    expect(page.get_by_role("heading", name="谁看了我的档案", exact=True)).to_be_visible()
    # the claim (with its reason) and the read under it: one entry (issue 16, item 4), said to be reviewed
    glass = page.locator(".res-log-entry.res-glass").filter(has_text="急诊科刘医生")
    expect(glass).to_have_count(1)
    expect(glass).to_have_attribute("data-count", "2")
    expect(glass).to_contain_text("紧急查看")
    expect(glass).to_contain_text("紧急授权（破窗）")
    expect(glass).to_contain_text("审计人员复核")
    expect(glass.locator(".res-reason")).to_have_text("患者昏迷送医，需查过敏史和既往病史")
    expect(glass.locator(".res-log-summary")).to_contain_text("申请紧急查看 1 次，查看了 1 次")
    expect(glass).to_contain_text(ui.search("Organization", [("_id", other)])[0]["name"])
    assert page.locator(".res-log-entry").filter(has_text="本人查看").count() == 0
    shot(page, "resident-access-log-phone")
    page.get_by_label("包括我自己和家人的查看").check()
    page.get_by_role("button", name="筛选").click()
    assert page.locator(".res-log-entry").filter(has_text="本人查看").count() >= 1
    expect(page.locator(".res-log-entry[data-actor='self']").first.locator(".res-log-who")).to_have_text("您本人")


def test_delegate_sees_the_record_of_the_person_they_act_for(ui: UiRegion, new_page: Callable[..., Page]) -> None:
    people = ui.persons(min_institutions=2)
    elder = _fresh(ui, people)
    carer = _fresh(ui, people)
    elder_account, _ = ui.resident(elder)
    phone = next(t["value"] for t in carer["telecom"] if t.get("system") == "phone")
    carer_idno = next(i["value"] for i in carer["identifier"] if i.get("system") == ID_CARD)
    ui.accounts.add_delegate(carer["id"], acts_for=[Delegation(elder["id"], "family", None)], phone=phone,
                             name="王小明")
    elder_name = elder["name"][0].get("text") or ""
    page = new_page(phone=True)
    sign_in_resident(page, ui, carer_idno)
    assert "/resident" in page.url
    expect(page.locator("#viewing")).to_have_text(elder_name)
    assert page.locator(".res-visit").count() > 0
    shot(page, "resident-delegate-timeline-phone")
    page.goto("/resident/delegates")
    expect(page.get_by_role("heading", name="我可以代谁查看")).to_be_visible()
    expect(page.locator("main table")).to_contain_text(elder_name)
    shot(page, "resident-delegates-delegate-phone")
    # someone else's record is refused
    page.goto(f"/resident?person={carer['id']}")
    expect(page.locator("main")).to_contain_text("HT-0146")
    # the elder sees who acts for them
    page2 = new_page(phone=True)
    elder_idno = next(i["value"] for i in elder["identifier"] if i.get("system") == ID_CARD)
    assert elder_account.role is Role.RESIDENT
    sign_in_resident(page2, ui, elder_idno)
    page2.goto("/resident/delegates")
    expect(page2.get_by_role("heading", name="谁可以代我查看")).to_be_visible()
    expect(page2.locator("main table")).to_contain_text("王小明")
    expect(page2.locator("main table")).to_contain_text("家人")
    shot(page2, "resident-delegates-phone")
    # the elder ends the delegation: the carer's open session loses the record at once
    page2.once("dialog", lambda d: d.accept())
    page2.get_by_role("button", name="结束代办").click()
    expect(page2.get_by_role("status")).to_contain_text("已结束代办")
    expect(page2.locator("main")).not_to_contain_text("王小明")
    resp = page.goto(f"/resident?person={elder['id']}")
    assert resp is not None and resp.status == 403


def test_every_resident_portal_text_has_english() -> None:
    from hutong.web.ui import i18n

    prefixes = ("res.", "labs.", "con.", "del.", "log.", "cor.", "purpose.", "action.", "type.")
    mine = {k: v for k, v in i18n.MESSAGES.items() if k.startswith(prefixes)}
    assert len(mine) > 100
    missing = [k for k, (zh, en) in mine.items() if not zh or not en]
    assert not missing
    # English texts are English: no Chinese characters left in them
    untranslated = [k for k, (_zh, en) in mine.items() if any("\u4e00" <= ch <= "\u9fff" for ch in en)]
    assert not untranslated


def test_staff_may_not_use_the_resident_portal(ui: UiRegion, new_page: Callable[..., Page]) -> None:
    from conftest import sign_in_staff

    org = ui.search("Organization", [("_count", "1")])[0]["id"]
    page = new_page()
    sign_in_staff(page, ui.clinician(org, name="越权测试医生"))
    for path in ("/resident", "/resident/consents", "/resident/access-log"):
        resp = page.goto(path)
        assert resp is not None and resp.status == 403
        expect(page.locator("main")).to_contain_text("HT-0104")
