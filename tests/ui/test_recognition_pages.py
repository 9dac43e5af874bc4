"""Issue 14, item 5 in the browser: the committee drafts the region's 互认 knowledge by pasting it,
another member approves it on the version page (the author sees no approve button); a clinician's
orders meet it through /cds-services (a card accepted, another overridden with a reason); the
commission reads the 互认 dashboard; the author uploads a changed version and the reviewer reads
its changes in plain words.  Screenshots at 390 and 1366 px: recognition-dashboard, rules,
rule-version, rule-new (var/test-artifacts/screenshots/).  The knowledge is retired at the end,
so the session's other tests meet the region as before.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from conftest import UiRegion, shot, sign_in_staff
from playwright.sync_api import Page, expect

from hutong.cds import demo_knowledge
from hutong.cds.knowledge import KIND
from hutong.cds.versions import KnowledgeVersions, account_principal, region_day
from hutong.cli.demo_recognition import _candidates
from hutong.security.accounts import DEFAULT_SCOPES
from hutong.security.policy import Access
from hutong.security.principal import Principal, Role
from hutong.security.settings import SecuritySettings
from hutong.systems import ORGANIZATION


def _both(page: Page, name: str) -> None:
    for width, height in ((390, 844), (1366, 900)):
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(150)
        shot(page, f"{name}-{width}")
        assert page.evaluate("document.scrollingElement.scrollWidth") <= width + 1, name


def _trial(ui: UiRegion, data: dict[str, Any]) -> tuple[str, demo_knowledge.Trial]:
    """An institution whose clinician gets a card for one of its patients today."""
    security = SecuritySettings.from_env()
    for org in sorted(ui.search("Organization", [("_count", "100")]), key=lambda o: o["id"]):
        code = next(i["value"] for i in org["identifier"] if i["system"] == ORGANIZATION)
        who = Principal(account_id="probe", role=Role.CLINICIAN, organization=code, organization_id=org["id"],
                        scopes=tuple(DEFAULT_SCOPES[Role.CLINICIAN].split()))
        access = Access(ui.repo, who, security)
        t = demo_knowledge.try_it(ui.repo, access, _candidates(ui.repo, access, "", 200)[1:], data, code)
        if t is not None:
            return org["id"], t
    raise AssertionError("no institution of the session's region has a recognisable result today")


def _hook(ui: UiRegion, token: str, hook: str, patient: str, user: str, orders: list[dict[str, Any]]) -> list[Any]:
    ctx: dict[str, Any] = {"userId": user, "patientId": patient,
                           "draftOrders": {"resourceType": "Bundle", "type": "collection",
                                           "entry": [{"resource": o} for o in orders]}}
    if hook == "order-select":
        ctx["selections"] = [f"ServiceRequest/{o['id']}" for o in orders]
    with httpx.Client(base_url=ui.url, timeout=30, headers={"authorization": f"Bearer {token}"}) as cl:
        r = cl.post(f"/cds-services/hutong-{hook}", json={"hook": hook, "hookInstance": str(uuid.uuid4()),
                                                          "context": ctx})
    assert r.status_code == 200, r.text
    return [c for c in r.json()["cards"] if c["source"]["label"].startswith("检查检验结果互认")]


def _feedback(ui: UiRegion, token: str, hook: str, item: dict[str, Any]) -> None:
    with httpx.Client(base_url=ui.url, timeout=30, headers={"authorization": f"Bearer {token}"}) as cl:
        r = cl.post(f"/cds-services/hutong-{hook}/feedback",
                    json={"feedback": [{**item, "outcomeTimestamp": datetime.now(UTC).isoformat()}]})
    assert r.status_code == 200, r.text


def test_rules_and_dashboard_in_the_browser(ui: UiRegion, new_page: Callable[..., Page]) -> None:
    author = ui.staff(Role.COMMITTEE, name="质控中心王委员")
    reviewer = ui.staff(Role.COMMITTEE, name="专家委员会李委员")
    orgs = ui.search("Organization", [("_count", "100")])
    data = demo_knowledge.region_knowledge(demo_knowledge.seed_json(), orgs)
    data["title"] = "互认清单（界面测试）"
    versions = KnowledgeVersions(ui.repo, ui.app.platform.audit)
    today = region_day(ui.repo.clock())

    # The author pastes the knowledge: a draft, and no approve button for them.
    a = new_page(phone=True)
    sign_in_staff(a, author)
    assert a.url.endswith("/console/rules")
    a.goto("/console/rules/new?kind=recognition")
    a.locator("#effective_from").fill(today)
    a.locator("#json").fill(orjson.dumps(data).decode())
    a.locator("#note").fill("演示区域各机构质控与本地编码")
    _both(a, "rule-new")
    a.locator("form[action='/console/rules/new'] button[type=submit]").click()
    a.wait_for_url("**/console/rules/v/**")
    expect(a.locator("#rule-own")).to_be_visible()
    vid = a.url.split("/")[-1].split("?")[0]
    assert versions.get(vid).status == "draft"
    assert a.locator("#rule-approve").count() == 0

    # The reviewer approves it on the version page.
    b = new_page(phone=True)
    sign_in_staff(b, reviewer)
    b.goto(f"/console/rules/v/{vid}")
    b.locator("#rule-approve").click()
    b.wait_for_url("**done=approve")
    assert versions.get(vid).status == "active" and b.locator("#rule-status").inner_text() == "已生效"
    assert "专家委员会李委员" in b.locator("#rule-approver").inner_text()

    # A clinician's orders meet it: one card accepted, one overridden with a reason.
    org, trial = _trial(ui, data)
    doc = ui.clinician(org, name="内科陈医生")
    token = ui.app.platform.authenticator.tokens.issue(doc.account, DEFAULT_SCOPES[Role.CLINICIAN])["access_token"]
    user = f"Practitioner/{doc.account.practitioner_id}"

    def order(oid: str) -> dict[str, Any]:
        return {"resourceType": "ServiceRequest", "id": oid, "status": "draft", "intent": "order",
                "subject": {"reference": f"Patient/{trial.patient}"},
                "code": {"coding": [{"system": trial.system, "code": trial.code}]}}

    [c] = _hook(ui, token, "order-select", trial.patient, user, [order("sr-ui-1")])
    _feedback(ui, token, "order-select", {"card": c["uuid"], "outcome": "accepted",
                                          "acceptedSuggestions": [{"id": c["suggestions"][0]["uuid"]}]})
    [w] = _hook(ui, token, "order-sign", trial.patient, user, [order("sr-ui-2")])
    _feedback(ui, token, "order-sign", {"card": w["uuid"], "outcome": "overridden",
                                        "overrideReason": {"reason": w["overrideReasons"][0]}})

    # The commission reads the dashboard.
    commission = ui.staff(Role.COMMISSION, name="信息中心统计员")
    d = new_page(phone=True)
    sign_in_staff(d, commission)
    d.goto("/console/recognition")
    d.wait_for_load_state("networkidle")
    row = d.locator(f"#recognition tr[data-org='{org}']", has_text=trial.item).first
    assert row.locator("[data-k=checked]").inner_text() == "2"
    assert row.locator("[data-k=recognised]").inner_text() == "1"
    assert row.locator("[data-k=overridden]").inner_text().startswith("1")
    assert "病情变化" in row.inner_text() and trial.item in row.inner_text()
    assert d.locator("canvas[data-chart=chart-monthly]").is_visible()
    _both(d, "recognition-dashboard")

    # The author uploads a changed version; the reviewer reads what changed, in words.
    changed = orjson.loads(orjson.dumps(data))
    for it in changed["items"]:
        if it["key"] == "cbc":
            it["window_days"] = 5
    changed["items"] = [i for i in changed["items"] if i["key"] != "esr"]
    for lc in changed["local_codes"]:
        lc["codes"] = {k: v for k, v in lc["codes"].items() if v["item"] != "esr"}
    a.goto("/console/rules/new?kind=recognition")
    a.locator("#effective_from").fill(today)
    a.locator("#file").set_input_files(files=[{"name": "hr.json", "mimeType": "application/json",
                                                "buffer": orjson.dumps(changed)}])
    a.locator("form[action='/console/rules/new'] button[type=submit]").click()
    a.wait_for_url("**/console/rules/v/**")
    v2 = a.url.split("/")[-1].split("?")[0]
    b.goto(f"/console/rules/v/{v2}")
    assert b.locator(".rule-changes").count() == 1, b.locator("main").inner_text()[:800]
    words = b.locator(".rule-changes").inner_text()
    assert "删除项目 红细胞沉降率" in words and re.search(r"血常规在北京的互认：可互认时间（天）由 7 改为 5", words)
    _both(b, "rule-version")
    b.goto("/console/rules")
    listed = b.locator(f"tr[data-version='{vid}']").inner_text()
    assert "已生效" in listed and "质控中心王委员" in listed and "专家委员会李委员" in listed
    _both(b, "rules")
    # Retired again (by the reviewer, in the page), so the session's region is as before.
    for v in (v2, vid):
        b.goto(f"/console/rules/v/{v}")
        b.locator("#rule-retire").click()
        b.wait_for_url("**done=retire")
        assert versions.get(v).status == "retired"
    assert all(x.status != "active" or x.kind != KIND or x.id not in (vid, v2) for x in versions.list())
    assert account_principal(ui.repo, reviewer.username).role == Role.COMMITTEE
