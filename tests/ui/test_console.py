"""The commission console in a real browser (issue 7): institutions with
connection status and Chart.js charts, the identity review queue (link,
unlink), break-glass accesses reviewed by an auditor, audit search, users and
roles, and every page refused to the roles it is not for."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import orjson
from conftest import Staff, UiRegion, shot, sign_in_resident, sign_in_staff
from playwright.sync_api import Dialog, Page, expect

from hutong.fhir.service import FhirService, mpi_of
from hutong.ingest import inbox
from hutong.ingest.pipeline import Ingestor
from hutong.mpi.idnumber import check_char
from hutong.security.guard import as_operator
from hutong.security.principal import Role
from hutong.store.sql import SqlRepository
from hutong.systems import ID_CARD, ORGANIZATION, mrn_system
from hutong.web.ui.console import (
    institution_rows,
    mask_id_number,
    mask_name,
    mask_phone,
    record_counts,
    status_of,
)

BEIJING = timezone(timedelta(hours=8))
HOUR_MS = 3_600_000


def organizations(ui: UiRegion) -> list[dict[str, Any]]:
    return sorted(ui.search("Organization", [("_count", "100")]), key=lambda o: o["id"])


def code_of(org: dict[str, Any]) -> str:
    return str(next(i["value"] for i in org["identifier"] if i["system"] == ORGANIZATION))


def id_number(birth: str, seq: str) -> str:
    first = "110105" + birth + seq
    return first + check_char(first)


# One resident per sending institution (repeated messages update the same
# Patient), distinct enough that the MPI queues nothing for review.
PEOPLE = {"L": ("赵^静怡", "19860214", "F", "024", "13912345678", "朝阳区建国路88号"),
          "Q": ("钱^文博", "19720830", "M", "013", "13566667777", "海淀区中关村南大街5号")}


def adt(code: str, control: str, who: str, event_ms: int) -> bytes:
    name, birth, sex, seq, phone, street = PEOPLE[who]
    when = datetime.fromtimestamp(event_ms / 1000, BEIJING).strftime("%Y%m%d%H%M%S")
    segs = [f"MSH|^~\\&|HIS|{code}|HUTONG|REGION|{when}||ADT^A04^ADT_A01|{control}|P|2.5.1|||||CHN|UNICODE UTF-8",
            f"EVN|A04|{when}",
            f"PID|1||MR-{who}^^^{code}^MR~{id_number(birth, seq)}^^^2.16.156.10011.1.3^NNCHN||{name}||{birth}|{sex}"
            f"|||{street}^^北京市^^100022^CHN||{phone}",
            f"PV1|1|O|内科门诊^^^^^^^^内科||||D001^李^医生|||||||||||V{control}"]
    return "\r".join(segs).encode()


def send(ui: UiRegion, code: str, control: str, who: str, received_ms: int, delay_h: float) -> None:
    """One HL7 message through the ingestion pipeline, as if received at ``received_ms``."""
    ing = Ingestor(FhirService(as_operator(ui.repo)), clock=lambda: received_ms)
    ack = ing.hl7(adt(code, control, who, received_ms - int(delay_h * HOUR_MS)), "127.0.0.1").decode()
    assert "MSA|AA" in ack, ack


def expect_403(page: Page, path: str) -> None:
    resp = page.goto(path)
    assert resp is not None and resp.status == 403, (path, resp.status if resp else None)
    expect(page.get_by_role("alert")).to_contain_text("HT-0104")


def check_page(page: Page) -> None:
    """Accessibility basics and complete wording: every control labelled, no
    untranslated key shown, one h1."""
    for el in page.locator("input:not([type=hidden]), select, textarea").all():
        wrapped = el.evaluate("e => !!e.closest('label')")
        ident = el.get_attribute("id")
        assert wrapped or (ident and page.locator(f"label[for='{ident}']").count() == 1), el.evaluate(
            "e => e.outerHTML")
    assert not re.search(r"\b(con|role)\.[a-z_.]+\b", page.locator("main").inner_text())
    expect(page.locator("h1")).to_have_count(1)


def accept_dialogs(page: Page) -> None:
    def on(d: Dialog) -> None:
        d.accept()

    page.on("dialog", on)


# --------------------------------------------------------------------------- units


def test_status_thresholds_and_masks() -> None:
    now = 1_000 * HOUR_MS
    assert status_of(now - 2 * HOUR_MS, now) == "online"
    assert status_of(now - 30 * HOUR_MS, now) == "silent"
    assert status_of(now - 100 * HOUR_MS, now) == "down"
    assert status_of(None, now) == "down"
    assert mask_id_number("110105198602140243") == "110105********0243"
    assert mask_phone("13912345678") == "139****5678"


def test_record_counts_are_numbers_per_institution(repo: SqlRepository) -> None:
    """The dashboard's counts-only read, on SQLite and PostgreSQL."""
    svc = FhirService(as_operator(repo))
    for org, code in (("org-a", "A0001"), ("org-b", "B0002")):
        svc.update("Organization", org, orjson.dumps({"resourceType": "Organization", "id": org, "name": org,
                                                      "identifier": [{"system": ORGANIZATION, "value": code}]}),
                   {})
    svc.update("Organization", "org-c", orjson.dumps({"resourceType": "Organization", "id": "org-c", "name": "org-c"}),
               {})
    for n, (org, obs) in enumerate((("org-a", 2), ("org-a", 0), ("org-b", 1))):
        body = {"resourceType": "Patient", "identifier": [{"system": mrn_system(org), "value": f"M{n}"}],
                "name": [{"text": ("甲一", "乙二", "丙三")[n]}], "birthDate": f"19{60 + 10 * n}-01-0{n + 1}",
                "managingOrganization": {"reference": f"Organization/{org}"}}
        pid = orjson.loads(svc.create("Patient", orjson.dumps(body), {}).body or b"{}")["id"]
        for k in range(obs):
            svc.create("Observation", orjson.dumps({"resourceType": "Observation", "status": "final",
                                                    "code": {"text": f"t{k}"},
                                                    "subject": {"reference": f"Patient/{pid}"}}), {})
    counts = record_counts(repo)
    assert counts["org-a"][:2] == (2, 4) and counts["org-b"][:2] == (1, 2)
    assert counts["org-a"][2] is not None and "org-c" not in counts
    orgs = [orjson.loads(s.body) for s in (repo.read("Organization", i) for i in ("org-a", "org-b", "org-c"))
            if s is not None and s.body is not None]
    rows = institution_rows(orgs, {"days": [], "last_seen": {}}, counts, int(time.time() * 1000))
    assert [(r.id, r.patients, r.records, r.status) for r in rows] == [
        ("org-a", 2, 4, "down"), ("org-b", 1, 2, "down"), ("org-c", 0, 0, "down")]


# --------------------------------------------------------------------------- pages


def test_institutions_dashboard_shows_status_volumes_and_timeliness(ui: UiRegion,
                                                                    new_page: Callable[..., Page]) -> None:
    # Institutions of this test's own (others in the session send documents too),
    # and the bulk-loaded region's as the silent ones.
    svc = FhirService(as_operator(ui.repo))
    for oid, name, code in (("console-live", "控制台在线医院", "CONSOLE-LIVE"),
                            ("console-quiet", "控制台安静医院", "CONSOLE-QUIET")):
        svc.update("Organization", oid, orjson.dumps({"resourceType": "Organization", "id": oid, "name": name,
                                                      "identifier": [{"system": ORGANIZATION, "value": code}]}), {})
    orgs = organizations(ui)
    live = next(o for o in orgs if o["id"] == "console-live")
    quiet = next(o for o in orgs if o["id"] == "console-quiet")
    counts = record_counts(ui.repo)
    today = datetime.now(BEIJING).date()
    heard = inbox.timeliness(ui.repo, start=today - timedelta(days=60), end=today)["last_seen"]
    codes = {o["id"]: next((i["value"] for i in o.get("identifier", []) if i.get("system") == ORGANIZATION), "")
             for o in orgs}
    silent = [o for o in orgs if counts.get(o["id"], (0, 0, None))[1] > 0 and codes[o["id"]] not in heard
              and o["id"] not in ("console-live", "console-quiet")]
    assert silent
    now = int(time.time() * 1000)
    midnight = datetime.now(BEIJING).replace(hour=0, minute=0, second=0, microsecond=0)
    now = max(now, int(midnight.timestamp() * 1000) + 5 * 60_000)  # each day's messages stay on that day
    # live: messages today and on the days before (one late: 30 h after the event)
    for day in range(4):
        for n in range(day + 2):
            send(ui, code_of(live), f"L{day}-{n}", "L", now - day * 24 * HOUR_MS - n * 60_000,
                 30 if (day, n) == (1, 0) else 2)
    # quiet: its last message two days ago
    send(ui, code_of(quiet), "Q1", "Q", now - 48 * HOUR_MS, 1)

    who = ui.staff(Role.COMMISSION, name="信息中心王工")
    page = new_page()
    sign_in_staff(page, who)
    assert page.url.endswith("/console")
    expect(page.get_by_role("heading", name="机构接入状态")).to_be_visible()
    for chart in ("chart-volume", "chart-timely"):
        expect(page.locator(f"canvas[data-chart='{chart}']")).to_have_attribute("data-drawn", "1")
    spec = orjson.loads(page.locator("#chart-volume").text_content() or "{}")
    assert spec["type"] == "bar" and len(spec["data"]["labels"]) == 7
    live_set = next(d for d in spec["data"]["datasets"] if d["label"] == live["name"])
    assert live_set["data"][-4:] == [5, 4, 3, 2]
    timely = orjson.loads(page.locator("#chart-timely").text_content() or "{}")
    live_line = next(d for d in timely["data"]["datasets"] if d["label"] == live["name"])
    assert live_line["data"][-2] == 66.7 and live_line["data"][-1] == 100.0
    row = page.locator(f"#institutions tr[data-org='{live['id']}']")
    expect(row).to_contain_text("✔ 在线")
    expect(row.locator("td").nth(3)).to_have_text("14")  # messages in 7 days
    expect(page.locator(f"#institutions tr[data-org='{quiet['id']}']")).to_contain_text("⚠ 今日无数据")
    other = page.locator(f"#institutions tr[data-org='{silent[0]['id']}']")
    expect(other).to_contain_text("✖ 连接中断")
    # the bulk-loaded region's records are counted per institution (counts only)
    assert int(other.locator("td").nth(7).inner_text()) > 0
    assert int(other.locator("td").nth(6).inner_text()) > 0
    check_page(page)
    shot(page, "console-institutions")
    page.get_by_label("统计周期").select_option("30")
    page.locator("form.con-filter button").click()
    expect(page.locator("canvas[data-chart='chart-volume']")).to_have_attribute("data-drawn", "1")
    assert len(orjson.loads(page.locator("#chart-volume").text_content() or "{}")["data"]["labels"]) == 30
    page.get_by_role("link", name="English").click()
    expect(page.locator(f"#institutions tr[data-org='{live['id']}']")).to_contain_text("online")
    expect(page.get_by_role("heading", name="Institutions and their connections")).to_be_visible()
    check_page(page)
    for path in ("/console/identity", "/console/break-glass", "/console/users"):
        page.goto(path)
        expect(page.locator("html")).to_have_attribute("lang", "en")
        check_page(page)
    phone = new_page(phone=True)
    sign_in_staff(phone, ui.staff(Role.COMMISSION, name="信息中心李工"))
    expect(phone.locator("canvas[data-chart='chart-timely']")).to_have_attribute("data-drawn", "1")
    shot(phone, "console-institutions-phone")


def test_break_glass_appears_for_review_and_the_auditor_reviews_it(ui: UiRegion,
                                                                   new_page: Callable[..., Page]) -> None:
    person = ui.persons(min_institutions=2)[0]
    orgs = [o["id"] for o in organizations(ui)]
    elsewhere = next(o for o in orgs if o not in ui.institutions_of(person))
    doctor = ui.clinician(elsewhere, name="急诊科刘医生")
    token = ui.app.platform.authenticator.tokens.issue(doctor.account, doctor.account.scopes)["access_token"]
    reason = "患者昏迷送至急诊，需立即查看既往过敏史与用药"
    r = httpx.post(f"{ui.url}/fhir/Patient/{person['id']}/$break-glass", content=orjson.dumps({"reason": reason}),
                   headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"})
    assert r.status_code == 200, r.text
    r = httpx.get(f"{ui.url}/fhir/Patient/{person['id']}/$everything", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text

    # the commission sees it (and may not review)
    commission = new_page()
    sign_in_staff(commission, ui.staff(Role.COMMISSION, name="信息中心赵工"))
    commission.goto("/console/break-glass")
    claim = commission.locator("section.con-bg-item", has_text=reason)
    expect(claim).to_have_count(1)
    expect(claim).to_contain_text("急诊科刘医生")
    # the person by their masked name, not the master index id (issue 16, item 3)
    expect(claim).to_contain_text(mask_name(person["name"][0].get("text") or ""))
    expect(claim).not_to_contain_text(person["id"])
    expect(claim).to_contain_text("待复核")
    expect(claim.locator("form")).to_have_count(0)
    shot(commission, "console-break-glass-commission")
    # every access under the glass, on request
    commission.get_by_role("link", name="显示紧急授权下的每次访问").click()
    expect(commission.locator("section.con-bg-item", has_text="$everything").first).to_be_visible()

    auditor = new_page()
    sign_in_staff(auditor, ui.staff(Role.AUDITOR, name="审计员孙"))
    assert auditor.url.endswith("/console/break-glass")  # the auditor's landing page
    item = auditor.locator("section.con-bg-item", has_text=reason)
    expect(item).to_have_count(1)
    check_page(auditor)
    shot(auditor, "console-break-glass-auditor")
    item.get_by_label("合理", exact=True).check()
    item.get_by_label("复核意见").fill("急诊记录与病历相符")
    item.get_by_role("button", name="提交复核").click()
    expect(auditor.get_by_role("status")).to_contain_text("复核已记录")
    expect(auditor.locator("section.con-bg-item", has_text=reason)).to_have_count(0)  # no longer pending
    auditor.get_by_role("link", name="已复核").click()
    done = auditor.locator("section.con-bg-item", has_text=reason)
    expect(done).to_contain_text("✔ 合理")
    expect(done).to_contain_text("急诊记录与病历相符")
    reviewed = [i for i in ui.app.platform.audit.break_glass_list(True) if i.entry.reason == reason]
    assert len(reviewed) == 1 and reviewed[0].review.verdict == "justified"
    assert reviewed[0].review.reviewer == auditor_account(ui, "审计员孙")

    # audit search: the person's accesses, newest first, the claim flagged
    auditor.get_by_role("link", name="审计查询").click()
    auditor.get_by_label("人员（主索引ID）").fill(person["id"])
    auditor.get_by_role("button", name="查询").click()
    rows = auditor.locator("#audit-results tbody tr")
    expect(rows.first).to_be_visible()
    expect(auditor.locator("#audit-results")).to_contain_text("$break-glass")
    expect(auditor.locator("#audit-results")).to_contain_text("⚠ 紧急授权")
    seqs = [int(rows.nth(i).locator("td").first.inner_text()) for i in range(rows.count())]
    assert seqs == sorted(seqs, reverse=True)
    check_page(auditor)
    shot(auditor, "console-audit")
    auditor.get_by_label("结果").select_option("0")
    auditor.get_by_role("button", name="查询").click()
    expect(auditor.locator("#audit-results")).not_to_contain_text("拒绝")
    expect(auditor.get_by_label("结果")).to_have_value("0")


def auditor_account(ui: UiRegion, name: str) -> str:
    return str(next(a.id for a in ui.accounts.list_accounts(Role.AUDITOR) if a.display == name))


def test_identity_review_side_by_side_link_then_unlink(ui: UiRegion, new_page: Callable[..., Page]) -> None:
    orgs = organizations(ui)
    svc = FhirService(as_operator(ui.repo))
    idno = id_number("19770309", "046")

    def patient(org: dict[str, Any], mrn: str, **kw: Any) -> str:
        body: dict[str, Any] = {
            "resourceType": "Patient", "identifier": [{"system": mrn_system(code_of(org)), "value": mrn}],
            "name": [{"text": "慕容秋菊", "family": "慕容", "given": ["秋菊"]}], "gender": "female",
            "birthDate": "1977-03-09", "managingOrganization": {"reference": f"Organization/{org['id']}"},
            "telecom": [{"system": "phone", "value": kw.get("phone", "13811112222")}],
            "address": [{"use": "home", "text": kw.get("address", "北京市西城区金融大街7号")}]}
        if kw.get("idno"):
            body["identifier"].append({"system": ID_CARD, "value": kw["idno"]})
        r = svc.create("Patient", orjson.dumps(body), {})
        assert r.status == 201
        return str(orjson.loads(r.body or b"{}")["id"])

    a = patient(orgs[0], "MR-REV-1", idno=idno)
    # No ID number, another phone and address: only name, birth date and sex agree.
    b = patient(orgs[1], "MR-REV-2", phone="13700000000", address="北京市丰台区南三环西路16号")
    mpi = mpi_of(ui.repo)
    person_a = mpi.person_of(a)
    assert mpi.person_of(b) != person_a
    [item] = [i for i in mpi.review_items(limit=500) if i["patient"] == b]
    assert item["person"] == person_a

    page = new_page()
    sign_in_staff(page, ui.staff(Role.COMMISSION, name="身份管理员"))
    page.get_by_role("link", name="身份复核").click()
    card = page.locator(f"#review-{item['id']}")
    expect(card).to_be_visible()
    table = card.locator("table.con-compare")
    expect(table.locator("tr", has_text="姓名")).to_contain_text("一致")
    expect(table.locator("tr", has_text="电话")).to_contain_text("不同")
    expect(table.locator("tr", has_text="电话")).to_contain_text("137****0000")
    expect(table.locator("tr", has_text="身份证号")).to_contain_text("缺失（不计）")
    assert idno not in (card.inner_text())  # ID numbers are masked
    expect(table).to_contain_text(orgs[1]["name"])
    expect(table).to_contain_text(orgs[0]["name"])
    card.scroll_into_view_if_needed()
    check_page(page)
    shot(page, "console-identity")
    card.get_by_label("备注（可选）").fill("电话核实为同一人")
    card.get_by_role("button", name="确认为同一人并关联").click()
    expect(page.get_by_role("status")).to_contain_text("已关联")
    assert mpi.person_of(b) == person_a
    expect(page.locator(f"#review-{item['id']}")).to_have_count(0)

    page.get_by_role("link", name="已关联").click()
    linked = page.locator(f"#review-{item['id']}")
    expect(linked).to_be_visible()
    accept_dialogs(page)
    linked.get_by_label("解除关联的理由（必填）").fill("本人来电：不是同一人")
    linked.get_by_role("button", name="解除关联").click()
    expect(page.get_by_role("status")).to_contain_text("已解除关联")
    assert mpi.person_of(b) not in (None, person_a)
    # the item left 已关联 at once (issue 16, item 6) and is listed under 已解除关联
    expect(page.locator(f"#review-{item['id']}")).to_contain_text("本人来电：不是同一人")
    page.goto("/console/identity?status=linked")
    expect(page.locator(f"#review-{item['id']}")).to_have_count(0)
    # The decisions are audited under the steward's account, naming both persons.
    rows = ui.app.platform.audit.search(person=person_a, limit=20)
    assert any(e.interaction == "POST /console/identity/{review_id}/link" and e.outcome == "0" for e in rows)


def test_identity_reject_remembers_not_the_same(ui: UiRegion, new_page: Callable[..., Page]) -> None:
    orgs = organizations(ui)
    svc = FhirService(as_operator(ui.repo))
    ids = []
    for n, (org, phone) in enumerate(((orgs[2], "13600000001"), (orgs[3], "13600000002"))):
        body = {"resourceType": "Patient", "identifier": [{"system": mrn_system(code_of(org)), "value": f"RJ{n}"}],
                "name": [{"text": "上官雨桐"}], "gender": "female", "birthDate": "1990-10-10",
                "managingOrganization": {"reference": f"Organization/{org['id']}"},
                "telecom": [{"system": "phone", "value": phone}],
                "address": [{"text": ("北京市东城区东直门内大街5号", "北京市通州区新华大街2号")[n]}]}
        ids.append(str(orjson.loads(svc.create("Patient", orjson.dumps(body), {}).body or b"{}")["id"]))
    mpi = mpi_of(ui.repo)
    [item] = [i for i in mpi.review_items(limit=500) if i["patient"] == ids[1]]
    page = new_page()
    sign_in_staff(page, ui.staff(Role.COMMISSION, name="身份管理员二"))
    page.goto("/console/identity")
    card = page.locator(f"#review-{item['id']}")
    card.get_by_label("不是同一人的理由（必填）").fill("住址电话均不同，已电话核实")
    card.get_by_role("button", name="不是同一人").click()
    expect(page.get_by_role("status")).to_contain_text("不是同一人")
    assert mpi.person_of(ids[1]) != mpi.person_of(ids[0])
    assert [i["id"] for i in mpi.review_items(status="rejected", limit=500)].count(item["id"]) == 1
    # deciding twice is refused with its code (the item is no longer open)
    resp = page.request.post(f"/console/identity/{item['id']}/link",
                             form={"csrf": csrf_of(page)}, max_redirects=0)
    assert resp.status == 409 and "HT-0058" in resp.text()


def csrf_of(page: Page) -> str:
    return str(page.locator("input[name=csrf]").first.get_attribute("value"))


def test_users_add_disable_enable(ui: UiRegion, new_page: Callable[..., Page]) -> None:
    operator = ui.staff(Role.OPERATOR, name="运维小周")
    page = new_page()
    accept_dialogs(page)
    sign_in_staff(page, operator)
    assert page.url.endswith("/console/users")  # the operator's landing page
    expect(page.locator("#users")).to_contain_text(operator.username)
    form = page.locator("#add-user")
    form.get_by_label("用户名").fill("auditor-qian")
    form.get_by_label("姓名").fill("审计员钱")
    form.get_by_label("角色").select_option("auditor")
    form.get_by_role("button", name="添加", exact=True).click()
    expect(page.locator("#created")).to_contain_text("只显示这一次")
    password = page.locator("#created-password").inner_text()
    uri = str(page.locator("#created-otpauth").text_content())
    assert len(password) >= 8 and uri.startswith("otpauth://totp/")
    check_page(page)
    shot(page, "console-users")
    new = ui.accounts.by_username("auditor-qian")
    assert new is not None and new.role == Role.AUDITOR and new.status == "active" and new.has_totp
    # the new auditor can sign in with what the page showed
    secret = re.search(r"secret=([A-Z2-7]+)", uri)
    assert secret is not None
    fresh = new_page()
    sign_in_staff(fresh, Staff(new, "auditor-qian", password, secret.group(1)))
    assert fresh.url.endswith("/console/break-glass")

    # a clinician needs an institution and a doctor chosen from its directory (issue 16, item 9:
    # tests/ui/test_console_accounts.py); the form says so beside the fields and keeps what was typed
    page.goto("/console/users")
    form = page.locator("#add-user")
    form.get_by_label("用户名").fill("doctor-wu")
    form.get_by_label("姓名").fill("吴医生")
    form.get_by_label("角色").select_option("clinician")
    form.get_by_role("button", name="添加", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("需要修改")
    expect(page.locator("#err-organization")).to_contain_text("HT-0466")
    expect(page.locator("#err-practitioner_role")).to_contain_text("HT-0464")
    expect(page.locator("#new-username")).to_have_value("doctor-wu")
    page.goto("/console/users")

    row = page.locator("#users tr[data-username='auditor-qian']")
    row.get_by_role("button", name=re.compile("^停用")).click()
    expect(page.get_by_role("status")).to_contain_text("账户已停用")
    expect(page.locator("#users tr[data-username='auditor-qian']")).to_contain_text("✖ 停用")
    assert (ui.accounts.by_username("auditor-qian")).status == "disabled"
    fresh.goto("/console/break-glass")  # the disabled account's session ends
    assert "/?next=" in fresh.url
    page.locator("#users tr[data-username='auditor-qian']").get_by_role("button", name=re.compile("^启用")).click()
    expect(page.get_by_role("status")).to_contain_text("账户已启用")
    assert ui.accounts.by_username("auditor-qian").status == "active"
    # the operator cannot disable themselves (no button; refused if posted)
    me = page.locator(f"#users tr[data-username='{operator.username}']")
    expect(me.get_by_role("button", name=re.compile("^停用"))).to_have_count(0)
    resp = page.request.post(f"/console/users/{operator.account.id}/status", form={"csrf": csrf_of(page),
                                                                                   "active": "0"})
    assert resp.status == 403
    # account changes leave audit records naming the account
    changes = ui.app.platform.audit.search(action="account-admin", account=operator.account.id, limit=10)
    assert {e.extra.get("change") for e in changes} >= {"added (auditor)", "disabled", "enabled"}
    assert all(e.extra.get("account") == new.id for e in changes)

    # the commission may view the list, not change it
    viewer = new_page()
    sign_in_staff(viewer, ui.staff(Role.COMMISSION, name="信息中心周工"))
    viewer.goto("/console/users")
    expect(viewer.locator("#users")).to_contain_text("auditor-qian")
    expect(viewer.locator("#add-user")).to_have_count(0)
    expect(viewer.locator("#users form")).to_have_count(0)
    resp = viewer.request.post(f"/console/users/{new.id}/status", form={"csrf": csrf_of(viewer), "active": "0"})
    assert resp.status == 403


def test_console_pages_refused_to_other_roles(ui: UiRegion, new_page: Callable[..., Page]) -> None:
    org = organizations(ui)[0]["id"]
    clinician = new_page()
    sign_in_staff(clinician, ui.clinician(org, name="拒绝测试医生"))
    for path in ("/console", "/console/identity", "/console/audit", "/console/break-glass", "/console/users"):
        expect_403(clinician, path)
    resident = new_page(phone=True)
    person = ui.persons(min_institutions=1)[-1]
    _acct, idno = ui.resident(person)
    sign_in_resident(resident, ui, idno)
    for path in ("/console", "/console/audit", "/console/users"):
        expect_403(resident, path)
    shot(resident, "console-refused-resident")
    auditor = new_page()
    sign_in_staff(auditor, ui.staff(Role.AUDITOR, name="审计员拒绝"))
    for path in ("/console/identity", "/console/users"):
        expect_403(auditor, path)
    operator = new_page()
    sign_in_staff(operator, ui.staff(Role.OPERATOR, name="运维拒绝"))
    for path in ("/console/identity", "/console/audit", "/console/break-glass"):
        expect_403(operator, path)
    commission = new_page()
    sign_in_staff(commission, ui.staff(Role.COMMISSION, name="信息中心拒绝"))
    expect_403(commission, "/console/audit")
    # a commission user cannot review break-glass accesses
    resp = commission.request.post("/console/break-glass/1/review", form={"csrf": csrf_of(commission),
                                                                          "verdict": "justified"})
    assert resp.status == 403
    # forms without the CSRF token are refused
    resp = commission.request.post("/console/identity/1/reject", form={"note": "x"})
    assert resp.status == 403
