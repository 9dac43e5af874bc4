"""A tour of every portal page (issue 16, "Build"): one signed-in browser tab
per role on the session's synthetic region, with enough happening first
(a treatment read, a break-glass access, a consent, a correction request, an
identity review item) that every page has rows to show.

``tour`` yields a :class:`Tour`; ``tour.pages`` lists (name, role, visit),
where ``visit(page)`` brings that role's tab to the page.  The page-wide tests
(tests/ui/test_zh_pages.py: words and ids; tests/ui/test_phone_layout.py:
widths at 390 px) walk the same list, so a page added here is checked by both.
Pages of SMART App Launch (templates/smart/) are listed too: they are
portal pages a resident and a clinician reach.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from conftest import UiRegion, sign_in_resident, sign_in_staff
from playwright.sync_api import Browser, Page
from test_clinician import _id_number, _treated
from test_corrections_inbox import officer

from hutong.cds.versions import KnowledgeVersions, account_principal
from hutong.cli.cds import SEED
from hutong.fhir.service import FhirService, mpi_of
from hutong.mpi.idnumber import check_char
from hutong.security.guard import as_operator
from hutong.security.principal import Role
from hutong.systems import ID_CARD, ORGANIZATION, mrn_system

Visit = Callable[[Page], None]


@dataclass
class Tour:
    tabs: dict[str, Page]
    pages: list[tuple[str, str, Visit]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


def _goto(path: str) -> Visit:
    def visit(page: Page) -> None:
        # goto returns at the page's "load" event: its stylesheet and scripts
        # are in and app.js has drawn the charts (on DOMContentLoaded).  The
        # portal pages make no request after that (no fetch or XHR in app.js),
        # so waiting for "networkidle" only added its 500 ms of quiet per page.
        # After a click that submits a form, Playwright's click waits for the
        # navigation it started, and wait_for_load_state() for that page's load.
        page.goto(path)
    return visit


def _search(id_number: str) -> Visit:
    def visit(page: Page) -> None:
        page.goto("/clinician")
        page.locator("#id_number").fill(id_number)
        page.locator("form:has(#id_number) button[type=submit]").click()
        page.wait_for_load_state()
    return visit


def _order_checked(person: str) -> Visit:
    """The ordering panel after a pick (the first item and a tier-2 antibiotic) and 签署前核对."""
    def visit(page: Page) -> None:
        page.goto(f"/clinician/patient/{person}/order?reason=treatment")
        form = page.locator("#ord-pick")
        form.locator("input[type=checkbox]").first.check()
        form.get_by_label("左氧氟沙星片", exact=True).check()
        page.locator("#ord-check").click()
        page.wait_for_load_state()
        page.locator("#ord-sign").click()
        page.wait_for_load_state()
    return visit


def _failed_sign_in(page: Page) -> None:
    """A staff sign-in with a wrong password: the sign-in page with its error."""
    page.goto("/")
    page.locator("#username").fill("nobody-here")
    page.locator("#password").fill("wrong password")
    page.locator("#totp").fill("123456")
    page.locator("form[action='/signin/staff'] button[type=submit]").click()
    page.wait_for_load_state()


def _review_item(ui: UiRegion) -> int:
    """Two registrations of one woman at two institutions, the second without
    an ID number: the MPI queues it for a steward (the identity review page)."""
    orgs = sorted(ui.search("Organization", [("_count", "100")]), key=lambda o: o["id"])
    svc = FhirService(as_operator(ui.repo))
    first = "110108" + "19640521" + "072"
    idno = first + check_char(first)

    def patient(org: dict[str, Any], mrn: str, phone: str, address: str, with_id: bool) -> str:
        code = next(i["value"] for i in org["identifier"] if i["system"] == ORGANIZATION)
        body: dict[str, Any] = {
            "resourceType": "Patient", "identifier": [{"system": mrn_system(code), "value": mrn}],
            "name": [{"text": "上官晓梅", "family": "上官", "given": ["晓梅"]}], "gender": "female",
            "birthDate": "1964-05-21", "managingOrganization": {"reference": f"Organization/{org['id']}"},
            "telecom": [{"system": "phone", "value": phone}], "address": [{"use": "home", "text": address}]}
        if with_id:
            body["identifier"].append({"system": ID_CARD, "value": idno})
        r = svc.create("Patient", orjson.dumps(body), {})
        assert r.status == 201
        return str(orjson.loads(r.body or b"{}")["id"])

    patient(orgs[2], "MR-TOUR-1", "13822223333", "北京市东城区东四十条5号", True)
    b = patient(orgs[3], "MR-TOUR-2", "13600001111", "北京市通州区新华大街3号", False)
    return next(i["id"] for i in mpi_of(ui.repo).review_items(limit=500) if i["patient"] == b)


def _find_doctors(page: Page) -> None:
    """An institution's operator lists its doctors on the 添加用户 form (issue 16, item 9)."""
    page.goto("/console/users")
    page.locator("#add-user").get_by_role("button", name="查找医生").click()
    page.wait_for_load_state()


def _form_error(page: Page) -> None:
    """添加用户 with a username holding a space: the form again, what was typed kept, the error beside it."""
    page.goto("/console/users")
    form = page.locator("#add-user")
    form.locator("#new-username").fill("a b")
    form.locator("#new-name").fill("重名测试")
    form.locator("#new-role").select_option("auditor")
    form.get_by_role("button", name="添加", exact=True).click()
    page.wait_for_load_state()


def _enrol() -> Visit:
    """A new auditor added: the enrolment page (QR code, key in groups), shown once."""
    n = [0]

    def visit(page: Page) -> None:
        n[0] += 1
        page.goto("/console/users")
        form = page.locator("#add-user")
        form.locator("#new-username").fill(f"70{n[0]:04d}")  # a staff number: ASCII words would be flagged
        form.locator("#new-name").fill("审计员许")
        form.locator("#new-role").select_option("auditor")
        form.get_by_role("button", name="添加", exact=True).click()
        page.wait_for_load_state()
    return visit


def build(ui: UiRegion, browser: Browser) -> Iterator[Tour]:
    person, org, _sources = _treated(ui, 2)
    pid = person["id"]
    idno = _id_number(person)
    all_orgs = [o["id"] for o in ui.search("Organization", [("_count", "100")])]
    mine = set(ui.institutions_of(person))
    elsewhere = next(o for o in all_orgs if o not in mine)

    # A break-glass access by a doctor elsewhere (reviewed on the console, listed in the access log).
    stranger = ui.clinician(elsewhere, name="急诊科周医生")
    token = ui.app.platform.authenticator.tokens.issue(stranger.account, stranger.account.scopes)["access_token"]
    hdr = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    r = httpx.post(f"{ui.url}/fhir/Patient/{pid}/$break-glass", headers=hdr,
                   content=orjson.dumps({"reason": "夜间急诊昏迷患者，需查既往用药"}))
    assert r.status_code == 200, r.text
    assert httpx.get(f"{ui.url}/fhir/Patient/{pid}/$everything", headers=hdr).status_code == 200
    review_id = _review_item(ui)

    contexts = []

    def tab(phone: bool = True) -> Page:
        ctx = browser.new_context(base_url=ui.url, locale="zh-CN",
                                  viewport={"width": 390, "height": 844} if phone else {"width": 1366, "height": 900})
        ctx.set_default_timeout(15_000)
        contexts.append(ctx)
        return ctx.new_page()

    tabs = {"public": tab()}
    doctor = ui.clinician(org, name="全科吴医生")
    tabs["clinician"] = tab()
    sign_in_staff(tabs["clinician"], doctor)
    for role, name in ((Role.COMMISSION, "信息中心钱工"), (Role.AUDITOR, "审计员冯"), (Role.OPERATOR, "运维郑工")):
        tabs[role.value] = tab()
        sign_in_staff(tabs[role.value], ui.staff(role, name=name))
    tabs["institution-operator"] = tab()
    org_res = ui.search("Organization", [("_id", org)])[0]
    sign_in_staff(tabs["institution-operator"], ui.staff(
        Role.OPERATOR, name="机构运维吴工", organization_id=org,
        organization=next(i["value"] for i in org_res["identifier"] if i["system"] == ORGANIZATION)))
    ui.resident(person)
    tabs["resident"] = tab()
    sign_in_resident(tabs["resident"], ui, idno)

    # The doctor reads the record (an access-log row), the resident files a
    # correction and grants the stranger's institution access.
    tabs["clinician"].goto(f"/clinician/patient/{pid}/record?reason=treatment")
    res = tabs["resident"]
    res.goto("/resident/corrections")
    res.locator("#item").select_option(index=1)
    res.locator("#text").fill("出生日期登记有误，应为身份证上的日期")
    res.locator("form:has(#text) button[type=submit]").click()
    res.wait_for_load_state()
    # The institution holding the item answers it: its 病案室 officer's inbox (issue 16, item 8).
    filed = ui.search("Task", [("patient", f"Patient/{pid}"), ("status", "requested")])
    holder = filed[0]["owner"]["reference"].split("/")[1]
    tabs["records"] = tab()
    sign_in_staff(tabs["records"], officer(ui, holder, name="病案室孙老师"))
    res.goto("/resident/consents")
    res.get_by_label("第一步：选择医院/机构").select_option(elsewhere)
    res.get_by_role("button", name="选择", exact=True).click()
    res.get_by_role("button", name="保存").click()
    res.wait_for_load_state()

    docs = []
    for src in _sources.values():
        docs += ui.search("DocumentReference", [("subject", f"Patient/{src}"), ("_count", "1")])
    trend = ""
    obs = ui.search("Observation", [("subject", f"Patient/{next(iter(_sources.values()))}"), ("_count", "50")])
    codes = [o["code"]["coding"][0]["code"] for o in obs if "valueQuantity" in o]
    if codes:
        trend = max(set(codes), key=codes.count)

    # A draft of the 互认 knowledge (never approved here, so no rule fires): the rule pages' rows.
    committee = ui.staff(Role.COMMITTEE, name="质控中心赵委员")
    draft = KnowledgeVersions(ui.repo, ui.app.platform.audit).draft(
        account_principal(ui.repo, committee.username), orjson.loads(SEED.read_bytes()), effective_from="2025-01-01")

    record = f"/clinician/patient/{pid}/record?reason=treatment"
    pages: list[tuple[str, str, Visit]] = [
        ("signin", "public", _goto("/")),
        ("signin-failed", "public", _failed_sign_in),
        ("clinician-search", "clinician", _goto("/clinician")),
        ("clinician-search-results", "clinician", _search(idno)),
        ("clinician-access-step", "clinician", _goto(f"/clinician/patient/{pid}")),
        *[(f"clinician-record-{t}", "clinician", _goto(f"{record}&tab={t}"))
          for t in ("summary", "timeline", "labs", "imaging", "documents")],
        *([("clinician-document", "clinician", _goto(f"/clinician/document/{docs[0]['id']}?reason=treatment"))]
          if docs else []),
        ("clinician-apps", "clinician", _goto(f"/clinician/apps?patient={pid}")),
        # the ordering panel (issue 14, item 5): the catalogue, then a pick checked before signing (cards)
        ("clinician-order", "clinician", _goto(f"/clinician/patient/{pid}/order?reason=treatment")),
        ("clinician-order-checked", "clinician", _order_checked(pid)),
        ("resident-timeline", "resident", _goto("/resident")),
        ("resident-labs", "resident", _goto("/resident/labs")),
        *([("resident-labs-trend", "resident", _goto(f"/resident/labs?trend={trend}"))] if trend else []),
        ("resident-consents", "resident", _goto("/resident/consents")),
        ("resident-delegates", "resident", _goto("/resident/delegates")),
        ("resident-access-log", "resident", _goto("/resident/access-log")),
        ("resident-corrections", "resident", _goto("/resident/corrections")),
        ("clinician-corrections", "records", _goto("/clinician/corrections")),
        ("clinician-correction", "records", _goto(f"/clinician/corrections/{filed[0]['id']}")),
        ("resident-apps", "resident", _goto("/resident/apps")),
        ("console-institutions", "commission", _goto("/console")),
        ("console-identity", "commission", _goto("/console/identity")),
        ("console-identity-linked", "commission", _goto("/console/identity?status=linked")),
        ("console-identity-unlinked", "commission", _goto("/console/identity?status=unlinked")),
        ("console-identity-item", "commission", _goto(f"/console/identity/{review_id}")),
        ("console-break-glass-every", "commission", _goto("/console/break-glass?show=all&every=1")),
        ("console-recognition", "commission", _goto("/console/recognition")),
        ("console-rules", "commission", _goto("/console/rules")),
        ("console-rules-new", "commission", _goto("/console/rules/new")),
        ("console-rule-version", "commission", _goto(f"/console/rules/v/{draft.id}")),
        ("console-break-glass", "auditor", _goto("/console/break-glass")),
        ("console-audit", "auditor", _goto(f"/console/audit?person={pid}")),
        ("console-users", "operator", _goto("/console/users")),
        ("console-users-residents", "operator", _goto("/console/users?role=resident")),
        ("console-users-doctors", "institution-operator", _find_doctors),
        ("console-users-form-error", "operator", _form_error),
        ("console-enrol", "operator", _enrol()),
        # error pages, as their users meet them
        ("error-no-basis", "clinician", _goto("/clinician/apps")),
        ("error-audit-query", "auditor", _goto("/console/audit?since=yesterday")),
        ("error-role", "resident", _goto("/console/users")),
    ]
    try:
        yield Tour(tabs, pages, {"person": person, "id_number": idno})
    finally:
        for ctx in contexts:
            ctx.close()


@pytest.fixture(scope="session")
def tour(ui: UiRegion, browser: Browser) -> Iterator[Tour]:
    # Each test module imports this fixture, which makes it one fixture per
    # module: the first builds the tour (and closes it at the session's end),
    # the others reuse it.
    if "tour" in ui.cache:
        yield ui.cache["tour"]
        return
    for t in build(ui, browser):
        ui.cache["tour"] = t
        yield t
