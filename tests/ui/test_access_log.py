"""谁看了我的档案 grouped (issue 16, item 4), end to end: a clinician reads a
resident's record several times over HTTP against the running server, another
institution's doctor is refused; the resident signs in (Playwright) and sees
ONE entry for the doctor's sitting with the right count, institution and
kinds of record, the refusal said in words, and the single rows behind a
<details>; screenshots at 390 and 1366 px.  Attack: a resident's page never
shows another resident's accesses, also not through crafted query parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from conftest import SCREENSHOTS, UiRegion, sign_in_resident
from playwright.sync_api import Page, expect

from hutong.systems import ORGANIZATION

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 900}


def _fresh(ui: UiRegion, people: list[dict[str, Any]]) -> dict[str, Any]:
    """A person no other test has given an account (one SMS code a minute per resident;
    the shared set is tests/ui/test_resident.py's)."""
    used: set[str] = ui.cache.setdefault("used", {ui.persons(min_institutions=1)[0]["id"]})
    for p in people:
        if p["id"] not in used and ui.accounts.by_person(p["id"]) is None:
            used.add(p["id"])
            return p
    pytest.fail("no unused person left in the synthetic region")


def _api(ui: UiRegion, staff: Any) -> httpx.Client:
    token = ui.app.platform.authenticator.tokens.issue(staff.account, staff.account.scopes)["access_token"]
    return httpx.Client(base_url=ui.url + "/fhir", headers={"Authorization": f"Bearer {token}"}, timeout=60)


def _source_patient(ui: UiRegion, person: dict[str, Any], org: str) -> str:
    """The person's Patient registered at institution ``org``."""
    for ln in person.get("link", []):
        pid = ln["other"]["reference"].split("/")[1]
        src = ui.search("Patient", [("_id", pid)])
        if src and (src[0].get("managingOrganization") or {}).get("reference") == f"Organization/{org}":
            return pid
    raise AssertionError("no Patient of this person at that institution")


def test_a_doctors_reads_are_one_entry_with_count_and_institution(ui: UiRegion,
                                                                  new_page: Callable[..., Page]) -> None:
    person = _fresh(ui, ui.persons(min_institutions=1))
    _account, idno = ui.resident(person)
    home = ui.institutions_of(person)[0]
    home_name = ui.search("Organization", [("_id", home)])[0]["name"]
    stranger = next(o for o in ui.search("Organization", [("_count", "1000")])
                    if o["id"] not in set(ui.institutions_of(person)))
    doctor = ui.clinician(home, name="分组测试孙医生")
    outsider = ui.clinician(stranger["id"], name="分组测试外院周医生")
    patient = _source_patient(ui, person, home)

    # One sitting (one token): the whole record, then one lab result and one medicine by id, twice over.
    # (Searches by the doctor's own institution are left out: their audit rows name no person, see the report.)
    with _api(ui, doctor) as c:
        everything = c.get(f"/Patient/{person['id']}/$everything")
        assert everything.status_code == 200, everything.text
        found = {e["resource"]["resourceType"]: e["resource"]["id"] for e in everything.json()["entry"]}
        reads = [f"/Patient/{person['id']}/$everything", f"/Observation/{found['Observation']}",
                 f"/Patient/{patient}"] * 2
        for path in reads[1:]:
            r = c.get(path)
            assert r.status_code == 200, r.text
    with _api(ui, outsider) as c:
        for _ in range(2):
            r = c.get(f"/Patient/{person['id']}/$everything")
            assert r.status_code == 403 and "HT-0103" in r.text

    # The hospital's own system sends a lab result for the resident: a machine, not a person reading.
    code = next(i["value"] for i in ui.search("Organization", [("_id", home)])[0]["identifier"]
                if i["system"] == ORGANIZATION)
    his, _secret = ui.accounts.add_client("分组测试检验系统", organization=code, organization_id=home)
    token = ui.app.platform.authenticator.tokens.issue(his, his.scopes)["access_token"]
    with httpx.Client(base_url=ui.url + "/fhir", headers={"Authorization": f"Bearer {token}"}) as c:
        r = c.post("/Observation", json={
            "resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}], "text": "葡萄糖"},
            "subject": {"reference": f"Patient/{patient}"}, "effectiveDateTime": "2026-12-01T08:00:00+08:00",
            "valueQuantity": {"value": 5.1, "unit": "mmol/L"}})
        assert r.status_code == 201, r.text

    page = new_page(phone=True)
    sign_in_resident(page, ui, idno)
    page.goto("/resident/access-log")
    expect(page.get_by_role("heading", name="谁看了我的档案", exact=True)).to_be_visible()
    machine = page.locator(".res-log-entry[data-actor='system']").filter(has_text="发送了 1 次数据")
    expect(machine).to_have_count(1)
    expect(machine.locator(".res-log-who")).to_contain_text("医院信息系统")
    expect(machine).to_contain_text("机器自动访问（不是人在查看）")
    expect(machine.locator(".res-log-org")).to_have_text(home_name)
    expect(machine.locator(".res-log-outcome")).to_have_text("已存入您的档案")
    expect(machine).to_contain_text("在本院就诊")
    mine = page.locator(".res-log-entry").filter(has_text="分组测试孙医生")
    expect(mine).to_have_count(1)
    expect(mine).to_have_attribute("data-count", str(len(reads)))
    expect(mine).to_have_attribute("data-outcome", "0")
    expect(mine.locator(".res-log-org")).to_have_text(home_name)
    summary = mine.locator(".res-log-summary")
    expect(summary).to_contain_text(f"查看了 {len(reads)} 次")
    expect(summary).to_contain_text("全部档案")
    expect(mine).to_contain_text("医生")
    # the single rows behind a <details>, closed until opened (no script needed)
    rows = mine.locator("details.res-log-rows li")
    expect(rows).to_have_count(len(reads))
    expect(rows.first).to_be_hidden()
    mine.locator("details.res-log-rows summary").click()
    expect(rows.first).to_be_visible()

    refused = page.locator(".res-log-entry[data-outcome='4']").filter(has_text="分组测试外院周医生")
    expect(refused).to_have_count(1)
    expect(refused).to_have_attribute("data-count", "2")
    expect(refused.locator(".res-log-outcome")).to_contain_text("被拒绝：该医生近期没有为您诊疗的记录")
    expect(refused.locator(".res-log-org")).to_have_text(stranger["name"])
    expect(refused).to_contain_text("没有查看依据")
    # nothing of the page is raw: no account, person or institution ids
    text = page.locator("main").inner_text()
    for raw in ("acct-", "mpi-", person["id"], doctor.account.id, stranger["id"]):
        assert raw not in text

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size(PHONE)
    width = page.evaluate("document.scrollingElement.scrollWidth")
    assert width <= PHONE["width"], width
    page.screenshot(path=str(SCREENSHOTS / "access-log-390.png"), full_page=True)
    page.set_viewport_size(DESKTOP)
    page.screenshot(path=str(SCREENSHOTS / "access-log-1366.png"), full_page=True)


def test_a_resident_never_sees_another_residents_accesses(ui: UiRegion, new_page: Callable[..., Page]) -> None:
    people = ui.persons(min_institutions=1)
    me = _fresh(ui, people)
    other = _fresh(ui, people)
    _account, idno = ui.resident(me)
    org = ui.institutions_of(other)[0]
    doctor = ui.clinician(org, name="越界测试吴医生")
    with _api(ui, doctor) as c:
        for _ in range(3):
            assert c.get(f"/Patient/{other['id']}/$everything").status_code == 200
    # the other resident's log has the doctor's reads (so their absence below means something)
    theirs = ui.app.platform.audit.access_log([other["id"]], limit=50)
    assert any(e.who == "越界测试吴医生" for e in theirs)
    newest = max(e.seq for e in theirs)

    page = new_page(phone=True)
    sign_in_resident(page, ui, idno)
    for query in ("", "?mine=1", f"?after={newest + 1}", f"?after={newest + 1}&mine=1", "?after=999999999",
                  f"?person={me['id']}"):
        resp = page.goto("/resident/access-log" + query)
        assert resp is not None and resp.status == 200, query
        expect(page.get_by_role("heading", name="谁看了我的档案", exact=True)).to_be_visible()
        assert "越界测试吴医生" not in page.locator("main").inner_text(), query
    # asking for the other resident's log by their person id is refused, and shows nothing of it
    for query in (f"?person={other['id']}", f"?person={other['id']}&mine=1", f"?person={me['id']},{other['id']}"):
        resp = page.goto("/resident/access-log" + query)
        assert resp is not None and resp.status == 403, query
        assert "越界测试吴医生" not in page.locator("main").inner_text()
    # a person id given twice does not widen it either (one of them is asked for, never both)
    resp = page.goto(f"/resident/access-log?person={me['id']}&person={other['id']}")
    assert resp is not None
    assert "越界测试吴医生" not in page.locator("main").inner_text()
