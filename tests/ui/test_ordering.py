"""Issue 14, item 5 in a real browser: the clinician workspace's ordering panel and the
resident's 互认免做的检查 (hutong.web.ui.ordering, hutong.web.ui.avoided).

The region (added to the session's synthetic one): a resident registered at A 北京市怀柔中心医院,
B 北京市海淀区医院 and C 北京市房山区第二医院 (one person through the MPI).  A reported a 血常规
two days ago in A's own code (JY0001, mapped to the standard item by A's ConceptMap); B saw the
resident three days ago (B's clinicians have a treatment basis for the whole record); C's last
visit was 700 days ago (C's clinicians see C's own registration only).  The seed 互认 knowledge is
in force (drafted by one committee member, approved by another).

- B's clinician picks 血常规: an information card names A and the result's day; accepting it
  drops the draft ("已采用外院结果") and the feedback is recorded (rule, outcome, the result);
- 肝功能 accepted, picked again in the same draft and checked before signing: a warning with the
  不互认理由; "其他" without words is refused and records nothing; 病情变化 is recorded with the
  reason, for the same draft order (so the resident is not told that test was spared);
- attacks: C's clinician (no basis beyond C's own registration) gets no card and no word of A;
  a clinician of an institution that never saw the resident cannot open the panel; C's clinician
  cannot send feedback on B's card;
- the resident sees the spared test in plain words on the timeline; another resident never does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from conftest import UiRegion, shot, sign_in_resident, sign_in_staff
from playwright.sync_api import Page, expect
from test_zh_pages import findings

from hutong.cds.knowledge import LOCAL_CODE_PREFIX
from hutong.cds.recognition import RULE_ID
from hutong.cds.versions import KnowledgeVersions, account_principal
from hutong.cli.cds import SEED
from hutong.fhir.service import FhirService
from hutong.mpi.idnumber import check_char
from hutong.security.guard import as_operator
from hutong.security.principal import Role
from hutong.systems import ID_CARD, ORGANIZATION, REGION_TZ, mrn_system

GOLDEN = "https://fhir.hutong.dev/CodeSystem/mpi|golden"
CODES = {"A": "121101164000124574", "B": "12110108400826012G", "C": "12110111400192291J"}
NAMES = {"A": "北京市怀柔中心医院", "B": "北京市海淀区医院", "C": "北京市房山区第二医院"}


def _days_ago(n: int) -> str:
    return (datetime.now(UTC) - timedelta(days=n)).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _created(svc: FhirService, body: dict[str, Any]) -> str:
    r = svc.create(body["resourceType"], orjson.dumps(body), {})
    assert r.status == 201, r.body
    return str(orjson.loads(r.body or b"{}")["id"])


def _org(ui: UiRegion, svc: FhirService, key: str) -> str:
    found = ui.search("Organization", [("identifier", f"{ORGANIZATION}|{CODES[key]}")])
    if found:
        return str(found[0]["id"])
    return _created(svc, {"resourceType": "Organization", "name": NAMES[key], "active": True,
                          "identifier": [{"system": ORGANIZATION, "value": CODES[key]}]})


def _idno(body17: str) -> str:
    return body17 + check_char(body17)


def _resident(ui: UiRegion, svc: FhirService, orgs: dict[str, str], idno: str, phone: str, name: str,
              at: dict[str, int]) -> tuple[dict[str, Any], dict[str, str]]:
    """A person registered at the institutions of ``at`` (key -> days since their last visit)."""
    pids = {}
    for key, days in at.items():
        pids[key] = _created(svc, {
            "resourceType": "Patient", "managingOrganization": {"reference": f"Organization/{orgs[key]}"},
            "identifier": [{"system": ID_CARD, "value": idno},
                           {"system": mrn_system(CODES[key]), "value": f"ORD-{idno[-6:]}-{key}"}],
            "name": [{"text": name, "family": name[0], "given": [name[1:]]}], "gender": "female",
            "birthDate": f"{idno[6:10]}-{idno[10:12]}-{idno[12:14]}",
            "telecom": [{"system": "phone", "value": phone}]})
        _created(svc, {"resourceType": "Encounter", "status": "finished", "type": [{"text": "门诊"}],
                       "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                       "subject": {"reference": f"Patient/{pids[key]}"},
                       "serviceProvider": {"reference": f"Organization/{orgs[key]}"},
                       "period": {"start": _days_ago(days), "end": _days_ago(days)}})
    [person] = ui.search("Patient", [("identifier", f"{ID_CARD}|{idno}"), ("_tag", GOLDEN)])
    return person, pids


def _region(ui: UiRegion) -> dict[str, Any]:
    if "ordering" in ui.cache:
        return dict(ui.cache["ordering"])
    svc = FhirService(as_operator(ui.repo), ui.url + "/fhir")
    orgs = {k: _org(ui, svc, k) for k in CODES}
    idno = _idno("11010819580312416")
    person, pids = _resident(ui, svc, orgs, idno, "13911112222", "欧阳春兰", {"A": 3, "B": 3, "C": 700})
    when = _days_ago(2)
    wbc = _created(svc, {
        "resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{pids['A']}"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "6690-2"}], "text": "白细胞计数"},
        "effectiveDateTime": when, "valueQuantity": {"value": 5.8, "unit": "10*9/L"}})
    report = _created(svc, {
        "resourceType": "DiagnosticReport", "status": "final", "subject": {"reference": f"Patient/{pids['A']}"},
        "code": {"coding": [{"system": LOCAL_CODE_PREFIX + CODES["A"], "code": "JY0001"}], "text": "血常规五分类"},
        "effectiveDateTime": when, "result": [{"reference": f"Observation/{wbc}"}]})
    alt = _created(svc, {
        "resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{pids['A']}"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "1742-6"}], "text": "丙氨酸氨基转移酶"},
        "effectiveDateTime": when, "valueQuantity": {"value": 21, "unit": "U/L"}})
    _created(svc, {
        "resourceType": "DiagnosticReport", "status": "final", "subject": {"reference": f"Patient/{pids['A']}"},
        "code": {"coding": [{"system": LOCAL_CODE_PREFIX + CODES["A"], "code": "JY0012"}], "text": "肝功八项"},
        "effectiveDateTime": when, "result": [{"reference": f"Observation/{alt}"}]})
    other_idno = _idno("11010819620704522")
    other, _ = _resident(ui, svc, orgs, other_idno, "13911113333", "司马秋菊", {"B": 3})
    # Ours alone: other modules pick residents seen recently (tests/ui/test_clinician.py _treated)
    # and each resident gets one sign-in code a minute.
    ui.cache.setdefault("clinician-taken", set()).update({person["id"], other["id"]})
    # The seed knowledge in force: one committee member drafts, another approves (four-eyes).
    versions = KnowledgeVersions(ui.repo, ui.app.platform.audit)
    if versions.in_force() is None:
        author, approver = ui.staff(Role.COMMITTEE, name="委员王"), ui.staff(Role.COMMITTEE, name="委员李")
        v = versions.draft(account_principal(ui.repo, author.username), orjson.loads(SEED.read_bytes()),
                           effective_from="2025-01-01")
        versions.approve(v.id, account_principal(ui.repo, approver.username))
    out = {"orgs": orgs, "person": person, "pids": pids, "idno": idno, "report": report, "when": when,
           "other": other, "other_idno": other_idno}
    ui.cache["ordering"] = out
    return dict(out)


def _feedback(ui: UiRegion, person: str) -> list[Any]:
    return [e for e in ui.app.platform.audit.search(action="cds-feedback", person=person, limit=50)]


def _pick(page: Page, *names: str) -> None:
    form = page.locator("#ord-pick")
    for n in names:
        form.get_by_label(n, exact=True).check()
    page.locator("#ord-check").click()
    page.wait_for_load_state()


def _zh(ui: UiRegion, page: Page) -> None:
    codes = {next(i["value"] for i in o["identifier"] if i["system"] == ORGANIZATION)
             for o in ui.search("Organization", [("_count", "200")])}
    assert findings(page.content(), codes) == []


def _fits(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width


def test_ordering_panel_recognises_accepts_and_overrides(ui: UiRegion, new_page: Callable[..., Page]) -> None:
    reg = _region(ui)
    golden = reg["person"]["id"]
    doctor = ui.clinician(reg["orgs"]["B"], name="海淀区医院陈医生")
    result_day = datetime.fromisoformat(reg["when"]).astimezone(REGION_TZ).date().isoformat()
    before = len(_feedback(ui, golden))

    page = new_page()
    sign_in_staff(page, doctor)  # once: a TOTP code is refused the second time
    for phone in (False, True):
        page.set_viewport_size({"width": 390, "height": 844} if phone else {"width": 1366, "height": 900})
        page.goto(f"/clinician/patient/{golden}/record?reason=treatment")
        page.locator("#open-order").click()
        page.wait_for_load_state()
        expect(page.get_by_role("heading", name=re.compile("开具检查检验与处方"))).to_be_visible()
        if not phone:
            shot(page, "ordering-1366")
            _zh(ui, page)
        else:
            shot(page, "ordering-390")
            _fits(page)
        _pick(page, "血常规")
        card = page.locator(".cds-card[data-indicator='info']")
        expect(card).to_have_count(1)
        expect(card).to_contain_text(NAMES["A"])
        expect(card).to_contain_text(result_day)
        expect(card).to_contain_text("5.8")
        shot(page, "ordering-card-390" if phone else "ordering-card-1366")
        _zh(ui, page)
        if phone:
            _fits(page)
        card.locator("form.cds-accept button").click()
        page.wait_for_load_state()
        expect(page.locator(".ord-notice")).to_contain_text("已采用外院结果")
        expect(page.locator(".ord-notice")).to_contain_text("血常规")
        expect(page.locator("#ord-draft")).to_contain_text("尚未选择任何项目")
        if not phone:
            shot(page, "ordering-accepted-1366")

    rows = _feedback(ui, golden)  # newest first
    assert len(rows) == before + 2  # one acceptance at each width
    for e in rows[:2]:
        assert e.extra["rule"] == RULE_ID and e.extra["outcome"] == "accepted" and e.extra["item"] == "cbc"
        assert e.entities == (f"DiagnosticReport/{reg['report']}",)
        assert e.organization == CODES["B"]

    # Another pick (肝功能, also done at A two days ago): accepted at selection, then picked again in
    # the same draft and checked before signing: a warning that needs a 不互认理由.
    page.set_viewport_size({"width": 1366, "height": 900})
    page.goto(f"/clinician/patient/{golden}/order?reason=treatment")
    _pick(page, "肝功能")
    page.locator(".cds-card[data-indicator='info'] form.cds-accept button").click()
    page.wait_for_load_state()
    expect(page.locator(".ord-notice")).to_contain_text("已采用外院结果：肝功能")
    _pick(page, "肝功能", "尿常规")
    page.locator("#ord-sign").click()
    page.wait_for_load_state()
    warn = page.locator(".cds-card[data-indicator='warning']")
    expect(warn).to_have_count(1)
    expect(warn).to_contain_text(NAMES["A"])
    for word in ("病情变化", "结果存疑", "质量问题", "患者要求", "其他"):
        expect(warn.locator("fieldset")).to_contain_text(word)
    shot(page, "ordering-sign-1366")
    _zh(ui, page)
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "ordering-sign-390")
    _fits(page)
    page.set_viewport_size({"width": 1366, "height": 900})
    # 其他 without words: refused on the page, nothing recorded.
    n = len(_feedback(ui, golden))
    warn.get_by_role("radio", name=re.compile("其他")).check()
    warn.locator("form.cds-override button").click()
    page.wait_for_load_state()
    expect(page.locator("#ord-problem")).to_contain_text("请填写具体理由")
    assert len(_feedback(ui, golden)) == n
    warn = page.locator(".cds-card[data-indicator='warning']")
    warn.get_by_role("radio", name="病情变化").check()
    warn.locator("textarea").fill("发热加重，需复查")
    warn.locator("form.cds-override button").click()
    page.wait_for_load_state()
    expect(page.locator(".ord-notice")).to_contain_text("已记录不采用的理由：病情变化")
    expect(page.locator("#ord-no-cards")).to_contain_text("签署前核对已完成")
    expect(page.locator("#ord-draft")).to_contain_text("已说明理由")
    shot(page, "ordering-overridden-1366")
    [last] = _feedback(ui, golden)[:1]
    assert last.extra["outcome"] == "overridden" and last.extra["overrideReason"] == "condition-changed"
    assert last.extra["rule"] == RULE_ID and last.reason == "发热加重，需复查" and last.extra["item"] == "lft"
    # The same draft order as the acceptance before it (one order, its newest decision counts).
    [accepted_lft] = [e for e in _feedback(ui, golden) if e.extra.get("item") == "lft"
                      and e.extra["outcome"] == "accepted"]
    assert accepted_lft.extra["order"] == last.extra["order"]
    ui.cache["ordering-card-hook"] = True


def test_no_basis_no_card_content_and_no_forged_feedback(ui: UiRegion, new_page: Callable[..., Page]) -> None:
    """C's clinician sees only C's registration: no card, no word of A; a clinician whose
    institution never saw the resident cannot open the panel; C cannot answer B's card."""
    reg = _region(ui)
    golden = reg["person"]["id"]
    c_doctor = ui.clinician(reg["orgs"]["C"], name="房山区第二医院周医生")
    b_doctor = ui.clinician(reg["orgs"]["B"], name="海淀区医院宋医生")
    page = new_page()
    sign_in_staff(page, c_doctor)
    page.goto(f"/clinician/patient/{golden}/order?reason=own-institution")
    _pick(page, "血常规")
    expect(page.locator("#ord-cards")).to_be_visible()
    assert page.locator(".cds-card").count() == 0
    html = page.content()
    assert NAMES["A"] not in html and reg["report"] not in html and "5.8" not in html
    # The same page by a clinician of B: the card is there (the difference is the basis only).
    other = new_page()
    sign_in_staff(other, b_doctor)
    other.goto(f"/clinician/patient/{golden}/order?reason=treatment")
    _pick(other, "血常规")
    b_card = other.locator(".cds-card[data-indicator='info']")
    expect(b_card).to_contain_text(NAMES["A"])
    card_id = b_card.get_attribute("data-card")
    suggestion = b_card.locator("form.cds-accept input[name=suggestion]").get_attribute("value")
    # C forges an acceptance of B's card through C's own form: refused, nothing recorded.
    n = len(_feedback(ui, golden))
    page.evaluate("""([card, sug]) => {
        const f = document.createElement('form'); f.method = 'post';
        f.action = location.pathname + '/feedback';
        const add = (k, v) => { const i = document.createElement('input'); i.type = 'hidden'; i.name = k;
                                i.value = v; f.appendChild(i); };
        add('csrf', document.querySelector('input[name=csrf]').value); add('reason', 'own-institution');
        add('step', 'select'); add('card', card); add('outcome', 'accepted'); add('suggestion', sug);
        add('item', 'cbc'); add('drop', '');
        document.body.appendChild(f); f.submit(); }""", [card_id, suggestion])
    page.wait_for_load_state()
    expect(page.locator("body")).to_contain_text("HT-0542")
    assert len(_feedback(ui, golden)) == n
    # An institution that never saw the resident: no basis, the panel does not open.
    all_orgs = [o["id"] for o in ui.search("Organization", [("_count", "200")])]
    stranger_org = next(o for o in all_orgs if o not in reg["orgs"].values()
                        and o not in ui.institutions_of(reg["person"]))
    stranger = new_page()
    sign_in_staff(stranger, ui.clinician(stranger_org, name="外院郑医生"))
    r = stranger.goto(f"/clinician/patient/{golden}/order?reason=treatment")
    assert r is not None and r.status == 403
    assert NAMES["A"] not in stranger.content()


def test_resident_sees_the_spared_test_only_their_own(ui: UiRegion, new_page: Callable[..., Page]) -> None:
    reg = _region(ui)
    golden = reg["person"]["id"]
    if not any(e.extra.get("outcome") == "accepted" for e in _feedback(ui, golden)):
        pytest.skip("needs test_ordering_panel_recognises_accepts_and_overrides first")  # same module, runs first
    ui.resident(reg["person"])
    ui.resident(reg["other"])
    today = datetime.now(REGION_TZ).date()
    result_day = datetime.fromisoformat(reg["when"]).astimezone(REGION_TZ).date()
    words = (f"{today.month}月{today.day}日 在 {NAMES['B']} 开检查时，采用了 {NAMES['A']} "
             f"{result_day.month}月{result_day.day}日 的 血常规 结果，免做一次检查")
    page = new_page(phone=True)
    sign_in_resident(page, ui, reg["idno"])
    page.goto("/resident")
    spared = page.locator("#spared")
    expect(spared).to_be_visible()
    expect(spared.locator(".res-spared-item").first).to_have_text(words)
    # 肝功能 was accepted, then ordered again with a reason: no test spared.
    expect(spared).not_to_contain_text("肝功能")
    shot(page, "resident-spared-390")
    _fits(page)
    _zh(ui, page)
    page.set_viewport_size({"width": 1366, "height": 900})
    shot(page, "resident-spared-1366")
    # Another resident: none of this person's spared tests, and no way to ask for them.
    page2 = new_page(phone=True)
    sign_in_resident(page2, ui, reg["other_idno"])
    page2.goto("/resident")
    expect(page2.get_by_role("heading", name="就诊记录")).to_be_visible()
    assert page2.locator("#spared").count() == 0
    assert NAMES["A"] not in page2.content()
    r = page2.goto(f"/resident?person={golden}")
    assert r is not None and r.status == 403
    assert "免做一次检查" not in page2.content()
