"""Issue 12, findings 2 and 6: a Consent counts only when the platform knows its
author had the right to make it (hutong.security.consent_authors).

Through the real server on SQLite and PostgreSQL, in the two-hospital region
of tests/security/region.py: institutions and clinicians cannot forge a
resident's consent (a permit for another institution, a self-made opening of
sensitive categories, a deny that locks others out, an edit of the resident's
own Consent); a family delegate cannot open what is masked from delegates;
the legitimate paths still work (the resident; a delegate for the ordinary
record; an institution on the resident's documented instruction, for itself,
after the resident has been told by SMS); and a Consent that counts for
nothing is shown to the resident, who can revoke it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fhirapi import issue_code
from harness import Server
from region import R_ID, Region, build

from hutong.errors import Forbidden
from hutong.security.accounts import Delegation
from hutong.systems import ID_CARD, mrn_system

ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


@pytest.fixture
def region(server: Server) -> Iterator[Region]:
    yield build(server)


def consent(patient: str, actor: str | None, *, kind: str = "permit", labels: tuple[str, ...] = (),
            documented: bool = False) -> dict[str, Any]:
    prov: dict[str, Any] = {"type": kind, "period": {"start": "2020-01-01", "end": "2099-01-01"}}
    if actor:
        prov["actor"] = [{"role": {"coding": [{"code": "PRCP"}]}, "reference": {"reference": actor}}]
    if labels:
        prov["securityLabel"] = [{"system": ACT, "code": x} for x in labels]
    body: dict[str, Any] = {
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}], "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "patient": {"reference": f"Patient/{patient}"}, "provision": prov}
    if documented:
        # The paper form the resident signed at the desk, scanned.
        body["sourceAttachment"] = {"contentType": "application/pdf", "title": "患者授权书（签字扫描件）",
                                    "url": "https://his.example.cn/forms/consent-0001.pdf"}
    return body


def refused(r: httpx.Response, code: str) -> None:
    assert r.status_code == 403, r.text
    assert issue_code(r) == code, r.text


def status(c: httpx.Client, path: str) -> int:
    return c.get(path).status_code


def consents_stored(region: Region) -> list[dict[str, Any]]:
    found = region.server.client.get("/Consent", params={"_count": "100"}).json()
    return [e["resource"] for e in found.get("entry", [])]


def portal(region: Region, who: str) -> tuple[httpx.Client, str]:
    """A portal client for a resident or delegate (pages take the bearer token too)."""
    c = httpx.Client(base_url=region.server.root, timeout=30, cookies={"hutong_csrf": "t0k3n"},
                     headers={"authorization": f"Bearer {region.server.token(region.accounts[who])}"})
    r = c.get("/resident/consents")
    assert r.status_code == 200, r.text
    return c, r.text


def add_delegate(region: Region) -> None:
    """R's daughter, with a record (and so a golden person) of her own, acts for R."""
    ids, c = region.ids, region.server.client
    daughter_id = "110105197501010026"
    assert c.post("/Patient", json={
        "resourceType": "Patient", "identifier": [{"system": ID_CARD, "value": daughter_id}],
        "name": [{"family": "王", "given": ["女儿"]}], "birthDate": "1975-01-01", "gender": "female",
        "managingOrganization": {"reference": f"Organization/{ids['orgA']}"}}).status_code == 201
    golden = c.get("/Patient", params={"identifier": f"{ID_CARD}|{daughter_id}",
                                       "_tag": "https://fhir.hutong.dev/CodeSystem/mpi|golden"}).json()
    region.accounts["daughter"] = region.server.accounts.add_delegate(
        golden["entry"][0]["resource"]["id"], acts_for=[Delegation(ids["R"], "family", None)],
        phone="13800000001", name="家属")


# ---------------------------------------------------------------- finding 2: consent forgery
def test_f2_clinician_consent_on_own_registration_does_not_open_another_institutions_record(region: Region) -> None:
    ids = region.ids
    with region.client("docA") as a, region.client("docB") as b:
        assert status(b, f"/Condition/{ids['psyA']}") == 403
        # A's clinician "consents" for the resident, on A's own registration of her.
        refused(a.post("/Consent", json=consent(ids["pA"], f"Organization/{ids['orgB']}", labels=("PSY",))),
                "HT-0172")
        refused(a.post("/Consent", json=consent(ids["pA"], f"Organization/{ids['orgB']}", labels=("PSY",),
                                                documented=True)), "HT-0172")
        # ... or opens the other hospital's psychiatric and HIV records to itself.
        refused(a.post("/Consent", json=consent(ids["pA"], f"Organization/{ids['orgA']}", labels=("PSY", "HIV"),
                                                documented=True)), "HT-0173")
        refused(a.post("/Consent", json=consent(ids["pA"], f"Practitioner/{ids['docA']}", labels=("HIV",),
                                                documented=True)), "HT-0173")
        assert status(b, f"/Condition/{ids['psyA']}") == 403
        assert status(b, f"/Observation/{ids['obsA']}") == 403
        assert status(a, f"/Condition/{ids['psyB']}") == 403
        assert status(a, f"/Observation/{ids['hivB']}") == 403
    assert consents_stored(region) == []


def test_f2_institution_cannot_register_a_resident_and_consent_for_her(region: Region) -> None:
    ids = region.ids
    with region.client("sysB") as sb, region.client("docA") as a, region.client("docB") as b:
        # B registers R again (linked to her by ID number) ...
        made = sb.post("/Patient", json={
            "resourceType": "Patient", "managingOrganization": {"reference": f"Organization/{ids['orgB']}"},
            "identifier": [{"system": ID_CARD, "value": R_ID}, {"system": mrn_system(ids["orgB_code"]),
                                                                "value": "B-FAKE-9"}],
            "name": [{"family": "王", "given": ["小红"]}], "birthDate": "1949-12-31", "gender": "female"})
        assert made.status_code == 201, made.text
        fake = made.json()["id"]
        # ... then posts a deny that would lock every other institution out ...
        refused(sb.post("/Consent", json=consent(fake, None, kind="deny")), "HT-0172")
        refused(sb.post("/Consent", json=consent(fake, None, kind="deny", documented=True)), "HT-0172")
        refused(sb.post("/Consent", json=consent(fake, f"Organization/{ids['orgA']}", kind="deny",
                                                 documented=True)), "HT-0172")
        # ... or a permit for itself with no instruction from her.
        refused(sb.post("/Consent", json=consent(fake, f"Organization/{ids['orgB']}")), "HT-0171")
        # A's treatment relationship is untouched; B has no basis.
        assert status(a, f"/Observation/{ids['obsB']}") == 200
        basis = a.get(f"/Patient/{ids['R']}/$access-basis").json()
        assert {"name": "basis", "valueCode": "treatment"} in basis["parameter"]
        assert status(b, f"/Observation/{ids['obsA']}") == 403
    assert consents_stored(region) == []


def test_f2_institution_cannot_change_or_withdraw_the_residents_own_consent(region: Region) -> None:
    ids = region.ids
    with region.client("R") as r, region.client("sysA") as sa, region.client("docA") as a:
        # R refuses A, on A's registration of her (the API allows any of her own patients).
        made = r.post("/Consent", json=consent(ids["pA"], f"Organization/{ids['orgA']}", kind="deny"))
        assert made.status_code == 201, made.text
        assert status(a, f"/Observation/{ids['obsB']}") == 403
        withdrawn = {**made.json(), "status": "inactive"}
        refused(sa.put(f"/Consent/{withdrawn['id']}", json=withdrawn), "HT-0175")
        refused(sa.delete(f"/Consent/{withdrawn['id']}"), "HT-0175")
        assert status(a, f"/Observation/{ids['obsB']}") == 403
        assert r.get(f"/Consent/{withdrawn['id']}").json()["status"] == "active"


def test_f2_the_residents_own_consent_still_opens_a_category(region: Region) -> None:
    ids = region.ids
    with region.client("R") as r, region.client("docB") as b:
        assert status(b, f"/Condition/{ids['psyA']}") == 403
        made = r.post("/Consent", json=consent(ids["R"], f"Organization/{ids['orgB']}", labels=("PSY",)))
        assert made.status_code == 201, made.text
        assert status(b, f"/Condition/{ids['psyA']}") == 200
        assert status(b, f"/Observation/{ids['obsA']}") == 200
        assert status(b, f"/Observation/{ids['hivB']}") == 200           # B's own record
        basis = b.get(f"/Patient/{ids['R']}/$access-basis").json()
        assert {"name": "basis", "valueCode": "consent"} in basis["parameter"]


def test_f2_institution_consent_on_the_residents_documented_instruction_counts_for_itself(region: Region) -> None:
    ids = region.ids
    sms = region.server.app.platform.sms
    before = len(sms.messages())
    with region.client("sysB") as sb, region.client("docB") as b, region.client("docA") as a:
        assert status(b, f"/Observation/{ids['obsA']}") == 403
        made = sb.post("/Consent", json=consent(ids["pB"], f"Organization/{ids['orgB']}", documented=True))
        assert made.status_code == 201, made.text
        # the resident was told, at the phone on her golden record, who registered what
        told = sms.messages()[before:]
        assert [m["to"] for m in told] == ["13912345678"], told
        assert "乙医院" in str(told[0]["text"]) and "撤销" in str(told[0]["text"])
        # B now sees A's ordinary records of R, never the sensitive ones
        assert status(b, f"/Observation/{ids['obsA']}") == 200
        assert status(b, f"/Condition/{ids['psyA']}") == 403
        # nobody else gained anything from it
        assert status(a, f"/Condition/{ids['psyB']}") == 403
        # a resident who cannot be told (no phone on record) gets no institution-recorded Consent
        quiet = sb.post("/Patient", json={
            "resourceType": "Patient", "managingOrganization": {"reference": f"Organization/{ids['orgB']}"},
            "identifier": [{"system": ID_CARD, "value": "110105198001010038"},
                           {"system": mrn_system(ids["orgB_code"]), "value": "B-3"}],
            "name": [{"family": "赵", "given": ["六"]}], "birthDate": "1980-01-01", "gender": "male"})
        assert quiet.status_code == 201, quiet.text
        r = sb.post("/Consent", json=consent(quiet.json()["id"], f"Organization/{ids['orgB']}", documented=True))
        assert r.status_code == 422 and issue_code(r) == "HT-0174", r.text
        assert len(sms.messages()) == before + 1
    # and the resident sees it in her portal, marked as registered by B on her written instruction
    c, html = portal(region, "R")
    c.close()
    item = _item(html, made.json()["id"])
    assert 'data-in-force="yes"' in item
    assert "乙医院" in item and "书面授权" in item


def test_f2_consents_without_an_entitled_author_count_for_nothing_and_the_resident_sees_and_revokes_them(
        region: Region) -> None:
    ids = region.ids
    platform = region.server.client
    # The region's own engine wrote one without any instruction from her (e.g. a bulk
    # load), and one was stored by a path with no principal at all (a legacy row: an
    # earlier release's; such a write is refused today, HT-0350, so it is put in
    # with the write stages off, as that release left it).
    made = platform.post("/Consent", json=consent(ids["pA"], f"Organization/{ids['orgB']}", labels=("PSY",)))
    assert made.status_code == 201, made.text
    forged = made.json()["id"]
    legacy = consent(ids["pB"], f"Organization/{ids['orgB']}", labels=("PSY",))
    with pytest.raises(Forbidden) as nobody:
        region.server.repo.transact(lambda w: w.insert("Consent", "legacy-consent-1", dict(legacy)))
    assert nobody.value.code == "HT-0350"
    legacy_id = region.server.repo.transact(lambda w: w.insert("Consent", "legacy-consent-1", legacy,
                                                               hooks=False)).id
    with region.client("docB") as b:
        assert status(b, f"/Condition/{ids['psyA']}") == 403
        assert status(b, f"/Observation/{ids['obsA']}") == 403
        basis = b.get(f"/Patient/{ids['R']}/$access-basis").json()
        assert {"name": "basis", "valueCode": "own-institution"} in basis["parameter"]  # B's records only
    c, html = portal(region, "R")
    try:
        for cid in (forged, legacy_id):
            item = _item(html, cid)
            assert 'data-status="active"' in item and 'data-in-force="no"' in item
            assert "未生效" in item
        assert "区域平台" in _item(html, forged)
        assert "来源不明" in _item(html, legacy_id)
        # she revokes the forged one from the page
        r = c.post(f"/resident/consents/{forged}/revoke", data={"csrf": "t0k3n"}, follow_redirects=False)
        assert r.status_code == 303, r.text
    finally:
        c.close()
    assert platform.get(f"/Consent/{forged}").json()["status"] == "inactive"


# ---------------------------------------------------------------- finding 6: delegates
def test_f6_delegate_cannot_permit_a_category_hidden_from_delegates(region: Region) -> None:
    ids = region.ids
    add_delegate(region)
    with region.client("daughter") as d, region.client("docA") as a, region.client("docB") as b, \
            region.client("R") as r:
        assert status(d, f"/Observation/{ids['hivB']}") == 403           # masked for her
        refused(d.post("/Consent", json=consent(ids["R"], f"Organization/{ids['orgA']}", labels=("HIV",))),
                "HT-0170")
        refused(d.post("/Consent", json=consent(ids["pB"], f"Organization/{ids['orgA']}", labels=("HIV",))),
                "HT-0170")
        assert status(a, f"/Observation/{ids['hivB']}") == 403
        # nor by editing the resident's own category consent
        own = r.post("/Consent", json=consent(ids["R"], f"Organization/{ids['orgB']}", labels=("PSY",))).json()
        assert status(b, f"/Condition/{ids['psyA']}") == 200
        widened = {**own, "provision": {**own["provision"], "actor": [
            {"role": {"coding": [{"code": "PRCP"}]}, "reference": {"reference": f"Organization/{ids['orgA']}"}}]}}
        refused(d.put(f"/Consent/{own['id']}", json=widened), "HT-0170")
        assert status(a, f"/Observation/{ids['hivB']}") == 403
        # withdrawing it on the resident's behalf is within her right
        assert d.put(f"/Consent/{own['id']}", json={**own, "status": "inactive"}).status_code == 200
        assert status(b, f"/Condition/{ids['psyA']}") == 403
        # and she may still open the ordinary record for the resident
        made = d.post("/Consent", json=consent(ids["R"], f"Organization/{ids['orgB']}"))
        assert made.status_code == 201, made.text
        assert status(b, f"/Observation/{ids['obsA']}") == 200
        assert status(b, f"/Condition/{ids['psyA']}") == 403
    # her portal does not offer the categories at all; the resident's does
    for who, offered in (("daughter", False), ("R", True)):
        c, _ = portal(region, who)
        try:
            page = c.get("/resident/consents", params={"person": ids["R"], "org": ids["orgA"]})
            assert page.status_code == 200, page.text
            assert ('name="cat_HIV"' in page.text) is offered
        finally:
            c.close()


def _item(html: str, consent_id: str) -> str:
    """The <li> of one consent on the portal page."""
    m = re.search(r'<li class="res-consent"[^>]*data-consent="' + re.escape(consent_id) + r'".*?</li>', html,
                  re.S)
    assert m is not None, f"consent {consent_id} not on the page"
    return m.group(0)
