"""Issue 12, findings 3, 9 and 10: the identity index, golden demographics and
$everything's directory includes, attacked as an insider would, through the
real server (tests/security/region.py: hospitals A and B, resident R at both,
S at B; A treated R five days ago, B's last visit with R is 700 days old, so
B has R's registration but no basis for A's records).

- 3: golden (MPI) records are the platform's.  A clinic finds a resident only
  by an exact, complete person identifier (ID number, health card, ...), and
  gets its own registrations plus an index card (golden id, name, birth date,
  sex; no other institution's MRN, no phone, no address); ``$match`` needs an
  identity document number or name + full birth date (never a phone alone);
  ``$ihe-pix`` gives other domains' identifiers only with a basis;
  ``$access-basis`` on another institution's registration does not give away
  the golden id; the commission looks up no individual; every lookup is on
  the resident's access log (谁看了我的档案).
- 9: no institution can rewrite the golden phone by re-registering the
  resident, and the break-glass SMS goes to the phone of the resident's own
  account.
- 10: ``$everything`` brings along only the Organizations and Practitioners
  that rows the caller may see refer to.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from fhirapi import issue_code
from harness import Server
from region import R_ID, S_ID, Region, build

from hutong.security.principal import Role
from hutong.systems import ID_CARD, ORGANIZATION, mrn_system

GOLDEN_TAG = "https://fhir.hutong.dev/CodeSystem/mpi|golden"
PIX = "/Patient/$ihe-pix"


@pytest.fixture
def region(server: Server) -> Iterator[Region]:
    yield build(server)


def entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"]


def ids_of(bundle: dict[str, Any]) -> set[str]:
    return {r["id"] for r in entries(bundle)}


def without_links(bundle: dict[str, Any]) -> dict[str, Any]:
    """A Bundle without its links (they echo the query as sent)."""
    return {k: v for k, v in bundle.items() if k != "link"}


def code_a(region: Region) -> str:
    return region.ids["orgA_code"]


def third_clinic(region: Region) -> Any:
    """A clinician at clinic C, which has never seen R or S (no registration, no basis)."""
    c = region.server.client
    code = "12110000400000003C"
    org = c.post("/Organization", json={"resourceType": "Organization", "name": "丙社区卫生服务中心",
                                        "identifier": [{"system": ORGANIZATION, "value": code}]})
    assert org.status_code == 201, org.text
    prac = c.post("/Practitioner", json={"resourceType": "Practitioner", "name": [{"family": "医", "given": ["C"]}]})
    doc, _, _ = region.server.accounts.add_user("doctorc", role=Role.CLINICIAN, name="C院医生", organization=code,
                                                organization_id=org.json()["id"], practitioner_id=prac.json()["id"])
    return doc


def a_secrets(region: Region) -> list[str]:
    """What B (or C) may not learn of R from A: A's MRN and A's registration."""
    return ["A-1", mrn_system(code_a(region)), region.ids["pA"]]


def assert_index_card(card: dict[str, Any], region: Region, *, own: set[str]) -> None:
    """A golden record cut to the index card: who (name, sex, birth date), its
    golden id, links only to the caller's own registrations, nothing else."""
    assert card["id"] == region.ids["R"]
    assert card["birthDate"] == "1949-12-31" and card["gender"] == "female" and card["name"][0]["text"] == "王小红"
    assert "telecom" not in card and "address" not in card
    for ident in card.get("identifier", []):
        assert ident["system"] == ID_CARD, ident  # never an institution's MRN
    assert {ln["other"]["reference"] for ln in card.get("link", [])} <= {f"Patient/{p}" for p in own}
    assert any(t.get("code") == "SUBSETTED" for t in card["meta"].get("tag", []))
    text = orjson.dumps(card).decode()
    for secret in a_secrets(region):
        assert secret not in text, secret


def persons_seen(region: Region, account: Any) -> list[Any]:
    """R's access log rows made by ``account`` (what 谁看了我的档案 shows R)."""
    log = region.server.app.platform.audit.access_log([region.ids["R"]], limit=500)
    return [e for e in log if e.account_id == account.id]


# ------------------------------------------------------------------ finding 3: search
@pytest.mark.parametrize("who", ["docB", "sysB"])
def test_f3_identity_index_is_not_open_by_broad_identifier_searches(region: Region, who: str) -> None:
    ids = region.ids
    golden = {ids["R"], ids["S"]}
    broad = [
        {"identifier:missing": "false", "_count": "1000"},
        {"identifier": f"{ID_CARD}|", "_count": "1000"},
        {"identifier:not": "nothing|x", "_count": "1000"},
        {"identifier": R_ID},                                   # no system: not the exact lookup
        {"identifier": f"{ID_CARD}|{R_ID[:10]}"},               # partial
        {"identifier:text": "王"}, {"identifier:contains": "1101"},
        {"identifier": f"{ID_CARD}|{R_ID},{ID_CARD}|{S_ID}"},   # several at once
        {"identifier": f"{mrn_system(code_a(region))}|A-1"},    # another institution's MRN
        {"identifier": f"{ID_CARD}|{R_ID}", "_has:Condition:patient:code": "F32.1"},
        {"identifier": f"{ID_CARD}|{R_ID}", "_include": "Patient:link"},
        {"identifier": f"{ID_CARD}|{R_ID}", "_revinclude": "Patient:link"},
    ]
    with region.client(who) as b:
        for params in broad:
            r = b.get("/Patient", params=params)
            what = f"{who} {params}"
            assert r.status_code in (200, 400), (what, r.status_code, r.text[:300])
            if r.status_code != 200:
                continue
            body = r.json()
            matched = ids_of(body)
            assert not matched & golden, (what, matched)          # only the exact lookup finds a golden record
            assert not matched - {ids["pB"], ids["pS"]}, (what, matched)   # nothing of A's
            for e in body.get("entry", []):
                if e.get("resource", {}).get("id") in golden:   # an include of B's own link: the card only
                    assert "telecom" not in e["resource"] and "address" not in e["resource"], what
            text = orjson.dumps(without_links(body)).decode()   # links echo the query
            for secret in a_secrets(region):
                assert secret not in text, (what, secret)


def test_f3_exact_id_number_lookup_gives_own_registrations_and_an_index_card(region: Region) -> None:
    ids = region.ids
    with region.client("docB") as b:
        # An ordinary search finds registrations only; the golden record (the card)
        # comes when asked for with _tag (issue 15, item 1).
        r = b.get("/Patient", params={"identifier": f"{ID_CARD}|{R_ID}"})
        assert r.status_code == 200, r.text
        own = {e["id"]: e for e in entries(r.json())}
        assert set(own) == {ids["pB"]}
        assert own[ids["pB"]]["identifier"][1]["value"] == "B-1"  # B's own registration, whole
        r = b.get("/Patient", params={"identifier": f"{ID_CARD}|{R_ID}", "_tag": GOLDEN_TAG})
        assert r.status_code == 200, r.text
        found = {e["id"]: e for e in entries(r.json())}
        assert set(found) == {ids["R"]}
        assert_index_card(found[ids["R"]], region, own={ids["pB"]})
        assert found[ids["R"]]["link"] == [{"other": {"reference": f"Patient/{ids['pB']}"}, "type": "seealso"}]
        # The same card by id, by version and in history.
        assert_index_card(b.get(f"/Patient/{ids['R']}").json(), region, own={ids["pB"]})
        assert_index_card(b.get(f"/Patient/{ids['R']}/_history/1").json(), region, own={ids["pB"]})
        hist = b.get(f"/Patient/{ids['R']}/_history").json()
        for e in hist["entry"]:
            if "resource" in e:
                assert_index_card(e["resource"], region, own={ids["pB"]})
        # fhirpy-style: an institution finds its own registration by its own MRN.
    with region.client("sysB") as s:
        own = s.get("/Patient", params={"identifier": f"{mrn_system(ids['orgB_code'])}|B-1"}).json()
        assert ids_of(own) == {ids["pB"]}
    # A clinic that has never seen R: the card alone (yes, known to the region; the golden id to proceed).
    with region.client_for(third_clinic(region)) as c:
        r = c.get("/Patient", params={"identifier": f"{ID_CARD}|{R_ID}", "_tag": GOLDEN_TAG})
        (card,) = entries(r.json())
        assert_index_card(card, region, own=set())
        assert card["identifier"] == [{"use": "official", "type": card["identifier"][0]["type"],
                                       "system": ID_CARD, "value": R_ID}]  # the number it asked for
        assert_index_card(c.get(f"/Patient/{ids['R']}").json(), region, own=set())
        assert "identifier" not in c.get(f"/Patient/{ids['R']}").json()  # a bare read learns no ID number
    # With a basis (A treated R five days ago) the golden record is whole.
    with region.client("docA") as a:
        r = a.get("/Patient", params={"identifier": f"{ID_CARD}|{R_ID}", "_tag": GOLDEN_TAG})
        whole = next(e for e in entries(r.json()) if e["id"] == ids["R"])
        assert "B-1" in orjson.dumps(whole).decode() and whole["telecom"]


# ------------------------------------------------------------------ finding 3: $match
def match(client: httpx.Client, patient: dict[str, Any]) -> httpx.Response:
    return client.post("/Patient/$match", json={"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": {"resourceType": "Patient", **patient}}]})


def test_f3_match_refuses_phone_only_reverse_lookup_and_returns_index_cards(region: Region) -> None:
    ids = region.ids
    with region.client("docB") as b, region.client("sysB") as s:
        for client in (b, s):
            for weak in ({"telecom": [{"system": "phone", "value": "13912345678"}]},
                         {"telecom": [{"system": "phone", "value": "13912345678"}], "gender": "female"},
                         {"address": [{"text": "北京市"}], "birthDate": "1949-12-31"},
                         {"name": [{"text": "王小红"}], "birthDate": "1949"},
                         {"identifier": [{"system": mrn_system(code_a(region)), "value": "A-1"}]},
                         {"name": [{"text": "王小红"}]}):
                r = match(client, weak)
                assert r.status_code == 400 and issue_code(r) == "HT-0181", (weak, r.status_code, r.text[:300])
            # A phone next to a name and birth date does not find anyone by the phone.
            r = match(client, {"name": [{"text": "张三"}], "birthDate": "1990-01-01",
                               "telecom": [{"system": "phone", "value": "13912345678"}]})
            assert r.status_code == 200 and ids["R"] not in r.text
            # Strong input: an index card, nothing of A.
            r = match(client, {"name": [{"text": "王小红"}], "birthDate": "1949-12-31", "gender": "female"})
            assert r.status_code == 200, r.text
            (card,) = entries(r.json())
            assert_index_card(card, region, own={ids["pB"]})
            r = match(client, {"identifier": [{"system": ID_CARD, "value": R_ID}]})
            (card,) = entries(r.json())
            assert_index_card(card, region, own={ids["pB"]})


def test_f3_commission_looks_up_no_individual(region: Region) -> None:
    with region.client("commission") as c:
        r = match(c, {"identifier": [{"system": ID_CARD, "value": R_ID}]})
        assert r.status_code == 403 and issue_code(r) == "HT-0180", r.text
        r = c.get(PIX, params={"sourceIdentifier": f"{ID_CARD}|{R_ID}"})
        assert r.status_code == 403 and issue_code(r) == "HT-0180", r.text
        assert R_ID not in r.text and region.ids["R"] not in r.text


# ------------------------------------------------------------------ finding 3: $ihe-pix
def pix(client: httpx.Client, source: str) -> httpx.Response:
    return client.get(PIX, params={"sourceIdentifier": source})


def pix_values(r: httpx.Response) -> tuple[set[str], set[str]]:
    params = r.json()["parameter"]
    return ({p["valueIdentifier"]["value"] for p in params if p["name"] == "targetIdentifier"},
            {p["valueReference"]["reference"] for p in params if p["name"] == "targetId"})


def test_f3_pix_gives_other_domains_only_with_a_basis(region: Region) -> None:
    ids = region.ids
    for who in ("docB", "sysB"):
        with region.client(who) as b:
            # By R's ID number: B's own domain only (B-1, B's registration, the golden id to proceed).
            r = pix(b, f"{ID_CARD}|{R_ID}")
            assert r.status_code == 200, r.text
            values, refs = pix_values(r)
            assert values == {"B-1"} and refs == {f"Patient/{ids['pB']}", f"Patient/{ids['R']}"}, (who, r.text)
            for secret in a_secrets(region):
                assert secret not in r.text, (who, secret)
            # By its own MRN: the same.
            values, refs = pix_values(pix(b, f"{mrn_system(ids['orgB_code'])}|B-1"))
            assert "A-1" not in values and f"Patient/{ids['pA']}" not in refs
            # By A's MRN: as if unknown (no oracle for another institution's numbers).
            r = pix(b, f"{mrn_system(code_a(region))}|A-1")
            assert r.status_code == 404 and issue_code(r) == "HT-0056", r.text
            assert ids["R"] not in r.text and ids["pB"] not in r.text
    # A treats R: the whole cross-reference.
    with region.client("docA") as a:
        values, refs = pix_values(pix(a, f"{ID_CARD}|{R_ID}"))
        assert {"A-1", "B-1"} <= values and f"Patient/{ids['pB']}" in refs


# ------------------------------------------------------------------ finding 3: $access-basis
def test_f3_access_basis_on_another_institutions_registration_reveals_no_golden_id(region: Region) -> None:
    ids = region.ids
    with region.client("docB") as b:
        r = b.get(f"/Patient/{ids['pA']}/$access-basis")
        assert r.status_code == 403 and issue_code(r) == "HT-0182", r.text
        assert ids["R"] not in r.text
        # Its own registration and the golden id (already known) still answer.
        own = b.get(f"/Patient/{ids['pB']}/$access-basis").json()
        assert {"name": "person", "valueReference": {"reference": f"Patient/{ids['R']}"}} in own["parameter"]
        assert b.get(f"/Patient/{ids['R']}/$access-basis").status_code == 200
    with region.client("docA") as a:  # a basis: it may see B's registration anyway
        assert a.get(f"/Patient/{ids['pB']}/$access-basis").status_code == 200


# ------------------------------------------------------------------ finding 3: the resident sees every lookup
def test_f3_every_lookup_is_on_the_residents_access_log(region: Region) -> None:
    ids = region.ids
    docc = third_clinic(region)
    with region.client_for(docc) as c:
        steps = [
            lambda: c.get("/Patient", params={"identifier": f"{ID_CARD}|{R_ID}", "_tag": GOLDEN_TAG}),
            lambda: match(c, {"name": [{"text": "王小红"}], "birthDate": "1949-12-31", "gender": "female"}),
            lambda: pix(c, f"{ID_CARD}|{R_ID}"),
            lambda: c.get(f"/Patient/{ids['R']}/$access-basis"),
            lambda: c.get(f"/Patient/{ids['R']}"),
        ]
        for i, step in enumerate(steps):
            before = len(persons_seen(region, docc))
            r = step()
            assert r.status_code == 200, (i, r.text)
            rows = persons_seen(region, docc)
            assert len(rows) == before + 1, (i, rows)
            assert rows[0].purpose == "identity", (i, rows[0])
    with region.client("docB") as b:
        b.get(f"/Patient/{ids['pA']}/$access-basis")   # refused, and still on R's log
        b.get(PIX, params={"sourceIdentifier": f"{mrn_system(code_a(region))}|A-1"})
    assert len(persons_seen(region, region.accounts["docB"])) == 2
    # R's portal page shows the looks by C in Chinese.
    with region.client("R") as r:
        page = httpx.get(region.server.root + "/resident/access-log", timeout=30,
                         headers={"authorization": r.headers["authorization"]})
    assert page.status_code == 200
    assert "C院医生" in page.text and "核对身份" in page.text


# ------------------------------------------------------------------ finding 9: golden demographics
def test_f9_another_institution_cannot_rewrite_the_golden_phone_nor_redirect_the_sms(region: Region) -> None:
    ids = region.ids
    server = region.server
    with region.client("sysB") as b:
        pb = b.get(f"/Patient/{ids['pB']}").json()
        pb["telecom"] = [{"system": "phone", "value": "13800138000", "use": "mobile"}]
        pb["address"] = [{"use": "home", "text": "乙医院对面"}]
        assert b.put(f"/Patient/{ids['pB']}", json=pb).status_code == 200
    golden = server.client.get(f"/Patient/{ids['R']}").json()
    assert golden["telecom"][0]["value"] == "13912345678", golden["telecom"]
    # Twice, from two registrations of its own: still one institution's word.
    with region.client("sysB") as b:
        twin = {k: v for k, v in pb.items() if k not in ("id", "meta", "link")}
        twin["identifier"] = [{"system": ID_CARD, "value": R_ID}, {"system": mrn_system(ids["orgB_code"]),
                                                                   "value": "B-9"}]
        assert b.post("/Patient", json=twin).status_code == 201
    golden = server.client.get(f"/Patient/{ids['R']}").json()
    assert golden["telecom"][0]["value"] == "13912345678", golden["telecom"]
    # The break-glass SMS goes to the phone R gave the platform (R's account), not to a registration's.
    server.accounts.set_phone(region.accounts["R"].id, "13700000001")
    # Only this test's messages: on PostgreSQL the outbox sits in the key directory
    # every test of the session shares (the default one of the test cluster's database).
    earlier = len(server.app.platform.sms.messages())
    with region.client("docB") as d:
        r = d.post(f"/Patient/{ids['R']}/$break-glass", json={"reason": "急诊昏迷，需查看既往病史"})
        assert r.status_code == 200, r.text
    sent = [m for m in server.app.platform.sms.messages()[earlier:] if "紧急授权" in str(m["text"])]
    assert [m["to"] for m in sent] == ["13700000001"]


# ------------------------------------------------------------------ finding 10: $everything's directory includes
def test_f10_everything_brings_no_directory_entry_of_rows_the_caller_may_not_see(region: Region) -> None:
    ids = region.ids
    c = region.server.client
    psych = c.post("/Organization", json={"resourceType": "Organization", "name": "北京安定医院",
                                          "identifier": [{"system": ORGANIZATION, "value": "12110000400000009P"}]})
    psychiatrist = c.post("/Practitioner", json={"resourceType": "Practitioner",
                                                 "name": [{"family": "精神科", "given": ["主任"]}]})
    org_psy, prac_psy = psych.json()["id"], psychiatrist.json()["id"]
    # A psychiatric visit and diagnosis of R's at A, naming the psychiatric hospital and the psychiatrist.
    enc = c.post("/Encounter", json={
        "resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
        "subject": {"reference": f"Patient/{ids['pA']}"}, "serviceProvider": {"reference": f"Organization/{org_psy}"},
        "participant": [{"individual": {"reference": f"Practitioner/{prac_psy}"}}],
        "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "F20.0"}]}],
        "period": {"start": "2024-01-01T08:00:00+08:00", "end": "2024-01-01T09:00:00+08:00"}})
    assert enc.status_code == 201, enc.text
    cond = c.post("/Condition", json={
        "resourceType": "Condition", "subject": {"reference": f"Patient/{ids['pA']}"},
        "asserter": {"reference": f"Practitioner/{prac_psy}"},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "F20.0"}]}})
    assert cond.status_code == 201, cond.text
    # R lets B's doctor see the record, without the psychiatric category.
    with region.client("R") as r:
        made = r.post("/Consent", json={
            "resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}], "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
            "patient": {"reference": f"Patient/{ids['R']}"},
            "provision": {"type": "permit", "period": {"start": "2020-01-01", "end": "2099-01-01"},
                          "actor": [{"role": {"coding": [{"code": "PRCP"}]},
                                     "reference": {"reference": f"Practitioner/{ids['docB']}"}}]}})
        assert made.status_code == 201, made.text
    with region.client("docB") as b:
        everything = b.get(f"/Patient/{ids['R']}/$everything").json()
    got = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in everything["entry"]}
    assert ("Observation", ids["obsA"]) in got            # the consent opens A's ordinary records ...
    assert ("Organization", ids["orgA"]) in got           # ... and the directory entries they name
    assert ("Encounter", enc.json()["id"]) not in got and ("Condition", cond.json()["id"]) not in got
    assert ("Organization", org_psy) not in got, "the psychiatric hospital of a masked visit"
    assert ("Practitioner", prac_psy) not in got, "the psychiatrist of a masked diagnosis"
    # A itself sees its own visit with both.
    with region.client("docA") as a:
        mine = a.get(f"/Patient/{ids['pA']}/$everything").json()
    got = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in mine["entry"]}
    assert {("Organization", org_psy), ("Practitioner", prac_psy)} <= got
