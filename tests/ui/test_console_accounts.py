"""The operator's account pages (issue 16, item 9): a doctor is picked from
the directory of the operator's own institution (no raw ids typed; works
without JavaScript), the server re-checks the pick (another institution's
post or a made-up id is refused and nothing is written), a form error keeps
what was typed and says beside the field what is wrong, and the enrolment
page shows a QR code drawn on the server from the account's otpauth URI and
the secret in groups, uncached and unlogged."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import lxml.html
import opencc
import orjson
import pyotp
import pytest
import segno
from conftest import Staff, UiRegion, sign_in_staff
from playwright.sync_api import Browser, BrowserContext, Page, expect

from hutong.errors import InvalidRequest
from hutong.fhir.service import FhirService
from hutong.mpi.normalize import name_initials, name_pinyin
from hutong.security.guard import as_operator
from hutong.security.principal import Role
from hutong.store.sql import SqlRepository
from hutong.systems import ORGANIZATION
from hutong.web.ui import doctor_directory as directory
from hutong.web.ui.enrolment import ERROR


def _orgs_with_doctors(ui: UiRegion) -> list[dict[str, Any]]:
    out = []
    for o in sorted(ui.search("Organization", [("_count", "100")]), key=lambda o: o["id"]):
        if len(directory.doctors(ui.repo, o["id"])) >= 3:
            out.append(o)
    assert len(out) >= 2, "the synthetic region has at least two institutions with doctors"
    return out


def _code(org: dict[str, Any]) -> str:
    return str(next(i["value"] for i in org["identifier"] if i["system"] == ORGANIZATION))


@pytest.fixture
def contexts(browser: Browser, ui: UiRegion) -> Iterator[list[BrowserContext]]:
    made: list[BrowserContext] = []
    yield made
    for c in made:
        c.close()


def _page(browser: Browser, ui: UiRegion, made: list[BrowserContext], *, phone: bool = True,
          js: bool = True) -> Page:
    ctx = browser.new_context(base_url=ui.url, locale="zh-CN", java_script_enabled=js,
                              viewport={"width": 390, "height": 844} if phone else {"width": 1366, "height": 900})
    ctx.set_default_timeout(15_000)
    made.append(ctx)
    return ctx.new_page()


def _operator_of(ui: UiRegion, org: dict[str, Any], name: str) -> Staff:
    return ui.staff(Role.OPERATOR, name=name, organization=_code(org), organization_id=org["id"])


def _csrf(page: Page) -> str:
    return str(page.locator("input[name=csrf]").first.get_attribute("value"))


def _post(page: Page, **form: str) -> tuple[int, str, dict[str, str]]:
    r = page.request.post("/console/users/add", form={"csrf": _csrf(page), **form})
    return r.status, r.text(), r.headers


def test_directory_search_by_name_pinyin_initials_and_department(ui: UiRegion) -> None:
    org = _orgs_with_doctors(ui)[0]
    found = directory.doctors(ui.repo, org["id"])
    posts = {r["id"] for r in ui.search("PractitionerRole", [("organization", f"Organization/{org['id']}"),
                                                             ("_count", "1000")])}
    assert {d.role_id for d in found} <= posts and all(d.organization_id == org["id"] for d in found)
    assert all(d.name and d.department and d.title for d in found)
    d = found[len(found) // 2]
    for query in (d.name, d.name[:1], name_pinyin(d.name), name_pinyin(d.name)[:3].upper(), name_initials(d.name)):
        assert d in directory.find(found, query), query
    assert all(x.name.startswith(d.name[:1]) or d.name[:1] in x.name for x in directory.find(found, d.name[:1]))
    traditional = opencc.OpenCC("s2t").convert(d.name)
    assert d in directory.find(found, traditional)  # 張 finds 张
    in_dept = directory.find(found, "", d.department)
    assert d in in_dept and all(x.department == d.department for x in in_dept)
    assert not directory.find(found, "无此人名字")


def test_the_pick_is_rechecked_against_the_institution(repo: SqlRepository) -> None:
    """Both databases: only an active post of the institution whose Practitioner exists is accepted."""
    svc = FhirService(as_operator(repo))

    def create(body: dict[str, Any]) -> str:
        r = svc.create(body["resourceType"], orjson.dumps(body), {})
        assert r.status == 201, r.body
        return str(orjson.loads(r.body or b"{}")["id"])

    a, b = (create({"resourceType": "Organization", "name": n, "identifier": [{"system": ORGANIZATION,
                                                                                "value": c}]})
            for n, c in (("甲医院", "12110000TESTA00001"), ("乙医院", "12110000TESTB00002")))

    def post(org: str, name: str, active: bool = True) -> tuple[str, str]:
        pid = create({"resourceType": "Practitioner", "name": [{"text": name}]})
        rid = create({"resourceType": "PractitionerRole", "active": active,
                      "practitioner": {"reference": f"Practitioner/{pid}"},
                      "organization": {"reference": f"Organization/{org}"},
                      "specialty": [{"text": "内科"}], "code": [{"text": "主治医师"}]})
        return pid, rid

    pid_a, role_a = post(a, "張偉")
    _pid_b, role_b = post(b, "李明")
    _pid_old, role_old = post(a, "王芳", active=False)
    got = directory.chosen(repo, a, role_a)
    assert (got.practitioner_id, got.organization_id, got.name, got.department, got.title) == (
        pid_a, a, "張偉", "内科", "主治医师")
    for forged in (role_b, role_old, pid_a, "no-such-role", "x/../y", ""):
        with pytest.raises(InvalidRequest) as e:
            directory.chosen(repo, a, forged)
        assert e.value.code == "HT-0465", forged
    listed = directory.doctors(repo, a)
    assert [d.role_id for d in listed] == [role_a]  # not b's post, not the one out of post
    assert directory.find(listed, "张") == listed and directory.find(listed, "zw") == listed


def test_operator_picks_a_doctor_of_their_institution_without_javascript(
        ui: UiRegion, browser: Browser, contexts: list[BrowserContext]) -> None:
    org, other = _orgs_with_doctors(ui)[:2]
    page = _page(browser, ui, contexts, js=False)
    sign_in_staff(page, _operator_of(ui, org, "机构运维孙工"))
    page.goto("/console/users")
    form = page.locator("#add-user")
    expect(form).to_contain_text(str(org["name"]))  # the institution is fixed: the operator's own
    expect(form.locator("select[name=organization]")).to_have_count(0)
    expect(form.get_by_label("角色").locator("option")).to_have_count(2)  # clinicians and operators only
    expect(page.locator("#add")).not_to_contain_text("Practitioner")
    target = directory.doctors(ui.repo, org["id"])[1]
    form.get_by_label("用户名").fill("dr-pick-1")
    form.get_by_label("姓名").fill(target.name)
    form.get_by_label("角色").select_option("clinician")
    form.get_by_label("按名字查找").fill(name_initials(target.name))
    form.get_by_label("科室").select_option(target.department)
    form.get_by_role("button", name="查找医生").click()
    listed = page.locator("#doctors li")
    expect(listed.first).to_be_visible()
    theirs = {d.role_id for d in directory.doctors(ui.repo, org["id"])}
    values = [str(b.get_attribute("value")) for b in page.locator("#doctors button[name=pick]").all()]
    assert target.role_id in values and set(values) <= theirs  # only the operator's institution's posts
    assert not set(values) & {d.role_id for d in directory.doctors(ui.repo, other["id"])}
    # what was typed before searching is still there
    expect(form.get_by_label("用户名")).to_have_value("dr-pick-1")
    expect(form.get_by_label("姓名")).to_have_value(target.name)
    page.get_by_role("button", name=f"选择 {target.name}").first.click()
    expect(page.locator("#chosen-doctor")).to_contain_text(target.name)
    expect(page.locator("#chosen-doctor")).to_contain_text(target.department)
    assert page.locator("input[type=hidden][name=practitioner_role]").get_attribute("value") == target.role_id
    page.get_by_role("button", name="添加", exact=True).click()
    expect(page.locator("#created")).to_contain_text("只显示这一次")
    made = ui.accounts.by_username("dr-pick-1")
    assert made is not None and made.role == Role.CLINICIAN
    assert (made.organization_id, made.organization) == (org["id"], _code(org))
    assert (made.practitioner_id, made.practitioner_role_id) == (target.practitioner_id, target.role_id)


def test_another_institutions_doctor_or_a_made_up_id_is_refused_and_nothing_written(
        ui: UiRegion, browser: Browser, contexts: list[BrowserContext]) -> None:
    org, other = _orgs_with_doctors(ui)[:2]
    page = _page(browser, ui, contexts)
    sign_in_staff(page, _operator_of(ui, org, "机构运维李工"))
    page.goto("/console/users")
    before = len(ui.accounts.list_accounts())
    audit_before = len(ui.app.platform.audit.search(action="account-admin", limit=1000))
    foreign = directory.doctors(ui.repo, other["id"])[0]
    mine = directory.doctors(ui.repo, org["id"])[0]
    base = {"username": "dr-forged", "name": "伪造医生", "role": "clinician", "action": "add"}
    for forged in (foreign.role_id, "role-9999-999", "../Organization/x", foreign.practitioner_id):
        status, html, _h = _post(page, **base, practitioner_role=forged)
        assert status == 400, (forged, status)
        assert "所选医生不是本机构目录中的医生" in html and "HT-0465" in html
        assert foreign.name not in html
    # choosing another institution's post is refused the same way (nothing is shown as chosen)
    status, html, _h = _post(page, **base, pick=foreign.role_id)
    assert status == 400 and "HT-0465" in html and 'id="chosen-doctor"' not in html
    # another institution named outright
    status, html, _h = _post(page, **base, organization=other["id"], practitioner_role=foreign.role_id)
    assert status == 400 and "HT-0466" in html
    # a forged practitioner beside a genuine post: the post decides, the field is not read
    status, html, _h = _post(page, **{**base, "username": "dr-genuine"}, practitioner_role=mine.role_id,
                             practitioner=foreign.practitioner_id)
    assert status == 200, html[:2000]
    made = ui.accounts.by_username("dr-genuine")
    assert made is not None and made.practitioner_id == mine.practitioner_id != foreign.practitioner_id
    # an institution's operator adds no regional roles
    status, html, _h = _post(page, **{**base, "role": "commission", "username": "comm-forged"})
    assert status == 400 and "HT-0463" in html
    assert ui.accounts.by_username("dr-forged") is None and ui.accounts.by_username("comm-forged") is None
    assert len(ui.accounts.list_accounts()) == before + 1
    assert len(ui.app.platform.audit.search(action="account-admin", limit=1000)) == audit_before + 1


def test_a_form_error_keeps_what_was_typed_and_says_what_is_wrong_beside_the_field(
        ui: UiRegion, browser: Browser, contexts: list[BrowserContext]) -> None:
    org = _orgs_with_doctors(ui)[0]
    page = _page(browser, ui, contexts)
    operator = ui.staff(Role.OPERATOR, name="平台运维钱工")  # the region's operator: chooses the institution
    sign_in_staff(page, operator)
    page.goto("/console/users")
    d = directory.doctors(ui.repo, org["id"])[0]
    typed = {"username": "a b", "name": "王小五", "role": "clinician", "organization": org["id"],
             "q": name_pinyin(d.name), "department": d.department, "action": "add"}
    status, html, _h = _post(page, **typed)
    assert status == 400
    doc = lxml.html.document_fromstring(html)
    form = doc.get_element_by_id("add-user")
    assert form.xpath(".//input[@name='username']/@value") == ["a b"]
    assert form.xpath(".//input[@name='name']/@value") == ["王小五"]
    assert form.xpath(".//input[@name='q']/@value") == [typed["q"]]
    assert form.xpath(".//select[@name='role']/option[@selected]/@value") == ["clinician"]
    assert form.xpath(".//select[@name='organization']/option[@selected]/@value") == [org["id"]]
    assert form.xpath(".//select[@name='department']/option[@selected]/@value") == [d.department]
    # each error stands beside its field, in Chinese, and the field points at it
    username = form.xpath(".//input[@name='username']")[0]
    assert username.get("aria-invalid") == "true" and username.get("aria-describedby") == "err-username"
    err = doc.get_element_by_id("err-username")
    assert err.getparent() is username.getparent() and "用户名须为" in err.text_content()
    assert "HT-0464" in doc.get_element_by_id("err-practitioner_role").text_content()
    assert "需要修改" in doc.xpath("//*[@role='alert']")[0].text_content()
    # a taken username, the doctor chosen: the choice is kept too
    status, html, _h = _post(page, **{**typed, "username": operator.username, "practitioner_role": d.role_id})
    assert status == 400 and "该用户名已被使用" in html and "HT-0461" in html
    doc = lxml.html.document_fromstring(html)
    assert doc.xpath("//input[@type='hidden'][@name='practitioner_role']/@value") == [d.role_id]
    assert d.name in doc.get_element_by_id("chosen-doctor").text_content()
    # and in the browser: the page after a failed add holds what was typed
    form_el = page.locator("#add-user")
    form_el.get_by_label("用户名").fill(operator.username)  # passes the browser's own checks; taken
    form_el.get_by_label("姓名").fill("赵六")
    form_el.get_by_label("角色").select_option("auditor")
    form_el.get_by_role("button", name="添加", exact=True).click()
    expect(page.locator("#err-username")).to_contain_text("该用户名已被使用")
    expect(page.locator("#new-username")).to_have_value(operator.username)
    expect(page.locator("#new-name")).to_have_value("赵六")
    expect(page.locator("#new-role")).to_have_value("auditor")


def _svg_matrix(svg: str, size: int) -> list[list[bool]]:
    """The dark modules of segno's SVG path (``M x y`` / ``m dx dy`` moves, ``h n`` runs along y + .5)."""
    grid = [[False] * size for _ in range(size)]
    m = re.search(r'<path stroke="#000" d="([^"]+)"', svg)  # the dark modules (the first path is the white ground)
    assert m is not None, svg[:200]
    d = m.group(1)
    x = y = 0.0
    for op, a, b in re.findall(r"([MmHh])(-?[\d.]+)(?:[ ,](-?[\d.]+))?", d):
        if op == "M":
            x, y = float(a), float(b)
        elif op == "m":
            x, y = x + float(a), y + float(b)
        else:
            n = int(float(a))
            for i in range(n):
                grid[int(y)][int(x) + i] = True
            x += n
    return grid


def test_enrolment_shows_a_local_qr_code_of_the_uri_and_the_secret_that_signs_in(
        ui: UiRegion, browser: Browser, contexts: list[BrowserContext], caplog: pytest.LogCaptureFixture) -> None:
    page = _page(browser, ui, contexts)
    sign_in_staff(page, ui.staff(Role.OPERATOR, name="平台运维赵工"))
    page.goto("/console/users")
    caplog.set_level(logging.DEBUG)
    # and the package's own loggers: a CLI run earlier in the same process (hutong.logs.configure)
    # leaves 'hutong' at the default WARNING, which would drop the request lines before capture
    caplog.set_level(logging.DEBUG, logger="hutong")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    form = page.locator("#add-user")
    form.get_by_label("用户名").fill("auditor-enrol")
    form.get_by_label("姓名").fill("审计员卫")
    form.get_by_label("角色").select_option("auditor")
    with page.expect_response(lambda r: r.url.endswith("/console/users/add")) as got:
        form.get_by_role("button", name="添加", exact=True).click()
    assert got.value.headers.get("cache-control") == "no-store"
    expect(page.locator("#created")).to_contain_text("只显示这一次")
    assert all(u.startswith(ui.url) for u in requests)  # nothing fetched from elsewhere to draw the code
    grouped = page.locator("#created-secret").inner_text()
    assert re.fullmatch(r"([A-Z2-7]{4} )+[A-Z2-7]{1,4}", grouped), grouped
    secret = grouped.replace(" ", "")
    password = page.locator("#created-password").inner_text()
    # the QR code is the otpauth URI of this secret and username (decoded module by module)
    expected = pyotp.TOTP(secret).provisioning_uri(name="auditor-enrol", issuer_name="Hutong")
    svg = page.locator("#created-qr svg").evaluate("e => e.outerHTML")
    want = segno.make(expected, error=ERROR, micro=False, boost_error=False)
    assert _svg_matrix(svg, want.symbol_size(scale=1, border=4)[0]) == [[bool(v) for v in row] for row in want.matrix_iter(scale=1, border=4)]
    assert page.locator("#created-otpauth").text_content() == expected
    page.screenshot(path=str(_shots() / "console-enrol-test-390.png"), full_page=True)
    # a code from the shown secret signs in
    account = ui.accounts.by_username("auditor-enrol")
    fresh = _page(browser, ui, contexts, phone=False)
    sign_in_staff(fresh, Staff(account, "auditor-enrol", password, secret))
    assert fresh.url.endswith("/console/break-glass")
    # the secret is in no log line and no audit record
    assert caplog.records  # the server's request log lines were captured
    assert secret not in caplog.text and grouped not in caplog.text
    assert not [r for r in caplog.records if secret in repr(vars(r))]  # nor in a record's structured fields
    for e in ui.app.platform.audit.search(action="account-admin", limit=50):
        assert secret not in orjson.dumps(e.extra).decode()


def _shots() -> Any:
    from conftest import SCREENSHOTS

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
