"""Issue 13, item 4: both portals render one record model (hutong.record), so
a clinician and a resident are told the same thing about the same data.

An institution sends, through the FHIR API under its own token: a visit a
year ago that recorded a Condition, a visit today whose Encounter.diagnosis
points to that earlier Condition (and no Condition points back to it), and a
glucose of 7.9 mmol/L (reference range 3.9-6.1) that the sender interpreted
as N.  Before the model, the clinician saw the value as normal and the
resident saw the visit without a diagnosis.  Now both pages show "偏高 ↑" with
the disagreement said in words, and the same diagnosis on the visit."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from conftest import UiRegion, shot, sign_in_resident, sign_in_staff
from playwright.sync_api import Locator, Page, expect

from hutong.systems import ID_CARD, ORGANIZATION

DIAGNOSIS = "原发性高血压（互认用例）"
DISAGREEMENT = "判读不一致（院方判读：正常；超出参考范围 3.9–6.1）"


def _person(ui: UiRegion) -> tuple[dict[str, Any], str, str]:
    """A person nobody else's test uses, with their source Patient at one institution."""
    used = ui.cache.setdefault("used", {ui.persons(min_institutions=1)[0]["id"]})
    taken = ui.cache.setdefault("clinician-taken", set())
    for p in ui.persons(min_institutions=1)[len(ui.persons(min_institutions=1)) // 2:]:
        if p["id"] in used or p["id"] in taken or ui.accounts.by_person(p["id"]) is not None:
            continue
        for ln in p.get("link", []):
            sid = ln["other"]["reference"].split("/")[1]
            src = ui.search("Patient", [("_id", sid)])
            org = ((src[0].get("managingOrganization") or {}).get("reference") or "").split("/")[-1] if src else ""
            if org:
                used.add(p["id"])
                taken.add(p["id"])
                return p, sid, org
    pytest.fail("no unused person left in the synthetic region")


def _send(ui: UiRegion, org: str, patient: str) -> dict[str, str]:
    """The institution's HIS writes the two visits, the Condition and the result through the FHIR API."""
    code = next(i["value"] for i in ui.search("Organization", [("_id", org)])[0]["identifier"]
                if i["system"] == ORGANIZATION)
    his, _secret = ui.accounts.add_client("互认用例HIS", organization=code, organization_id=org)
    token = ui.app.platform.authenticator.tokens.issue(his, his.scopes)["access_token"]
    now = datetime.now(UTC).astimezone()
    today, year_ago = now.isoformat(timespec="seconds"), (now - timedelta(days=365)).isoformat(timespec="seconds")
    subject = {"reference": f"Patient/{patient}"}
    provider = {"reference": f"Organization/{org}"}
    amb = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "门诊"}
    entries = [
        ("urn:uuid:0b8c2c4e-0001-4000-8000-000000000001", {
            "resourceType": "Encounter", "status": "finished", "class": amb, "subject": subject,
            "serviceProvider": provider, "period": {"start": year_ago, "end": year_ago}}),
        ("urn:uuid:0b8c2c4e-0001-4000-8000-000000000002", {
            "resourceType": "Condition", "subject": subject,
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10", "display": DIAGNOSIS}],
                     "text": DIAGNOSIS},
            "encounter": {"reference": "urn:uuid:0b8c2c4e-0001-4000-8000-000000000001"},
            "onsetDateTime": year_ago[:10], "recordedDate": year_ago[:10]}),
        ("urn:uuid:0b8c2c4e-0001-4000-8000-000000000003", {
            "resourceType": "Encounter", "status": "finished", "class": amb, "subject": subject,
            "serviceProvider": provider, "period": {"start": today, "end": today},
            "diagnosis": [{"condition": {"reference": "urn:uuid:0b8c2c4e-0001-4000-8000-000000000002"},
                           "rank": 1}]}),
        ("urn:uuid:0b8c2c4e-0001-4000-8000-000000000004", {
            "resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "1558-6", "display": "空腹血糖"}],
                     "text": "空腹血糖（互认用例）"},
            "subject": subject, "encounter": {"reference": "urn:uuid:0b8c2c4e-0001-4000-8000-000000000003"},
            "effectiveDateTime": today, "performer": [provider],
            "valueQuantity": {"value": 7.9, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                              "code": "mmol/L"},
            "interpretation": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "N"}]}],
            "referenceRange": [{"low": {"value": 3.9, "unit": "mmol/L"}, "high": {"value": 6.1, "unit": "mmol/L"}}]}),
        ("urn:uuid:0b8c2c4e-0001-4000-8000-000000000005", {
            "resourceType": "DiagnosticReport", "status": "final", "code": {"text": "血糖测定（互认用例）"},
            "subject": subject, "encounter": {"reference": "urn:uuid:0b8c2c4e-0001-4000-8000-000000000003"},
            "effectiveDateTime": today,
            "result": [{"reference": "urn:uuid:0b8c2c4e-0001-4000-8000-000000000004"}]}),
    ]
    # One create at a time (each reference the id the server gave), as an HIS interface would send them.
    ids: list[str] = []
    with httpx.Client(base_url=ui.url + "/fhir", headers={"Authorization": f"Bearer {token}"}) as c:
        for url, r in entries:
            body = orjson.dumps(r)
            for n, (earlier, _res) in enumerate(entries[:len(ids)]):
                body = body.replace(earlier.encode(), f"{entries[n][1]['resourceType']}/{ids[n]}".encode())
            resp = c.post(f"/{r['resourceType']}", content=body, headers={"Content-Type": "application/fhir+json"})
            assert resp.status_code == 201, (url, resp.text)
            ids.append(resp.json()["id"])
    return {"old_visit": ids[0], "condition": ids[1], "visit": ids[2], "glucose": ids[3], "report": ids[4]}


def _same_flag(row: Locator) -> None:
    expect(row.locator("span.flag-high")).to_have_text(re.compile(r"偏高\s*↑"))
    expect(row.locator(".flag-disagree")).to_have_text(DISAGREEMENT)
    expect(row.locator(".flag-disagree")).to_have_attribute("data-sender", "N")
    assert row.locator(".flag-normal").count() == 0  # the verdict itself is never "normal"


def test_both_portals_show_the_same_flag_and_diagnosis(ui: UiRegion, new_page: Callable[..., Page]) -> None:
    person, patient, org = _person(ui)
    ids = _send(ui, org, patient)

    # ---- the clinician at the institution
    doctor = ui.clinician(org, name="互认用例医生")
    page = new_page()
    sign_in_staff(page, doctor)
    page.goto(f"/clinician/patient/{person['id']}")
    basis = page.locator(".basis").get_attribute("data-basis")
    assert basis in ("own-institution", "treatment"), basis
    record = f"/clinician/patient/{person['id']}/record?reason={basis}"
    page.goto(record + "&tab=labs")
    _same_flag(page.locator(f"tr[data-result='{ids['glucose']}']"))
    shot(page, "record-flag-disagreement-clinician")
    page.goto(record + "&tab=timeline")
    visit = page.locator(f"li.encounter[data-encounter='{ids['visit']}']")
    expect(visit.locator(".diagnoses")).to_have_text(DIAGNOSIS)  # named by Encounter.diagnosis only
    old = page.locator(f"li.encounter[data-encounter='{ids['old_visit']}']")
    expect(old.locator(".diagnoses")).to_have_text(DIAGNOSIS)  # named by Condition.encounter only

    # ---- the resident, on their phone
    _account, idno = ui.resident(person)
    assert idno == next(i["value"] for i in person["identifier"] if i.get("system") == ID_CARD)
    phone = new_page(phone=True)
    sign_in_resident(phone, ui, idno)
    phone.goto("/resident/labs")
    row = phone.locator(f"tr[data-result='{ids['glucose']}']")
    _same_flag(row)
    expect(row).to_have_class(re.compile("res-out"))
    expect(phone.locator(f"#report-{ids['report']}")).to_contain_text("1 项异常")
    shot(phone, "record-flag-disagreement-resident-phone")
    phone.goto("/resident")
    visit = phone.locator(f"li.res-visit[data-encounter='{ids['visit']}']")
    expect(visit.locator(".res-diagnoses")).to_have_text(DIAGNOSIS)
    expect(visit).to_contain_text("血糖测定（互认用例）")
    expect(visit).to_contain_text("1 项异常")
    # English: the same two readings, said in English
    phone.goto("/resident/labs?lang=en")
    expect(phone.locator(f"tr[data-result='{ids['glucose']}'] .flag-disagree")).to_have_text(
        "Readings disagree (the institution reported it normal; outside the reference range 3.9–6.1)")
