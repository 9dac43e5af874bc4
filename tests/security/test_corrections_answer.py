"""Answering residents' correction requests (纠偏权, PIPL Art. 46; issue 16, item 8), as attacks.

The region of tests/security/region.py: resident R has records at hospitals A
and B, resident S at B.  R asks B to correct a blood glucose result B holds.
Then, through the real server (FHIR API and the clinician workspace's pages,
SQLite and PostgreSQL):

- only B's designated post (PractitionerRole.code correction-officer) and B's
  own system answer; B's ordinary clinician is refused (HT-0450), A's officer
  too, and so is a B clinician whose account points at A's designated post;
- an answer cannot rewrite the request, and a final answer cannot change;
- R cannot answer their own request (nor file it already answered, nor about S's
  item, nor address it to an institution that does not hold the item); R's
  added information and the institution's notes carry their true author;
- A's officer cannot list, open or answer B's requests in the inbox pages
  (forged POST with B's request id); a stale or replayed form changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fhirapi import issue_code
from harness import Server
from region import Region, build

from hutong.security.principal import Role
from hutong.systems import CORRECTION_OFFICER, DUTY_SYSTEM

TASK = "https://fhir.hutong.dev/CodeSystem/task"


@pytest.fixture
def region(server: Server) -> Iterator[Region]:
    reg = build(server)
    c, ids, acc = server.client, reg.ids, server.accounts

    def post(org: str, officer: bool, name: str) -> None:
        pr = c.post("/Practitioner", json={"resourceType": "Practitioner", "name": [{"text": name}]}).json()["id"]
        role: dict[str, Any] = {"resourceType": "PractitionerRole", "active": True,
                                "practitioner": {"reference": f"Practitioner/{pr}"},
                                "organization": {"reference": f"Organization/{ids[org]}"}}
        if officer:
            role["code"] = [{"coding": [{"system": DUTY_SYSTEM, "code": CORRECTION_OFFICER, "display": "更正申请答复"}]}]
        made = c.post("/PractitionerRole", json=role)
        assert made.status_code == 201, made.text
        ids[name + "_role"], ids[name + "_pr"] = made.json()["id"], pr
        reg.accounts[name], _, _ = acc.add_user(
            name.lower(), role=Role.CLINICIAN, name=name, organization=ids[org + "_code"], organization_id=ids[org],
            practitioner_id=pr, practitioner_role_id=made.json()["id"])

    post("orgB", True, "officerB")
    post("orgB", False, "plainB")
    post("orgA", True, "officerA")
    # A B clinician whose account names A's designated post (a mis-set or forged account).
    reg.accounts["borrowed"], _, _ = acc.add_user(
        "borrowed", role=Role.CLINICIAN, name="借岗", organization=ids["orgB_code"], organization_id=ids["orgB"],
        practitioner_id=ids["officerA_pr"], practitioner_role_id=ids["officerA_role"])
    yield reg


def request_body(region: Region, item: str, owner: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Task", "status": "requested", "intent": "order",
            "code": {"coding": [{"system": TASK, "code": "correction-request"}]},
            "for": {"reference": f"Patient/{region.ids['R']}"}, "focus": {"reference": item},
            "owner": {"reference": f"Organization/{region.ids[owner]}"}, "description": "血糖结果不是我的",
            **extra}


def file(region: Region) -> dict[str, Any]:
    with region.client("R") as r:
        made = r.post("/Task", json=request_body(region, f"Observation/{region.ids['obsB']}", "orgB"))
    assert made.status_code == 201, made.text
    task: dict[str, Any] = made.json()
    task.pop("meta", None)
    return task


def refused(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert issue_code(r) == code, r.text


def stored(region: Region, task_id: str) -> dict[str, Any]:
    got: dict[str, Any] = region.server.client.get(f"/Task/{task_id}").json()
    return got


def test_only_the_designated_post_or_the_institution_answers(region: Region) -> None:
    task = file(region)
    done = {**task, "status": "completed", "output": [{"type": {"text": "更正内容"}, "valueString": "已删除"}]}
    owner = {"owner": f"Organization/{region.ids['orgB']}"}
    with region.client("plainB") as b:
        refused(b.put(f"/Task/{task['id']}", json=done), 403, "HT-0450")
        # nor read the institution's requests (minimum necessary: the officers' work)
        assert "entry" not in b.get("/Task", params=owner).json()
        assert b.get(f"/Task/{task['id']}").status_code == 403
    with region.client("officerA") as a:
        refused(a.put(f"/Task/{task['id']}", json=done), 403, "HT-0102")
    with region.client("borrowed") as x:
        refused(x.put(f"/Task/{task['id']}", json=done), 403, "HT-0450")
    assert stored(region, task["id"])["status"] == "requested"
    with region.client("officerB") as b:
        assert [e["resource"]["id"] for e in b.get("/Task", params=owner).json()["entry"]] == [task["id"]]
        refused(b.put(f"/Task/{task['id']}", json={**done, "description": "其实没问题"}), 403, "HT-0451")
        refused(b.put(f"/Task/{task['id']}", json={**done, "focus": {"reference": f"Observation/{region.ids['dxB']}"}}),
                403, "HT-0451")
        refused(b.put(f"/Task/{task['id']}", json={**task, "status": "cancelled"}), 403, "HT-0451")
        refused(b.put(f"/Task/{task['id']}", json={**task, "status": "rejected"}), 400, "HT-0454")
        ok = b.put(f"/Task/{task['id']}", json=done)
        assert ok.status_code == 200, ok.text
        # a final answer stays
        refused(b.put(f"/Task/{task['id']}", json={**done, "status": "rejected", "statusReason": {"text": "x"}}),
                403, "HT-0451")
    with region.client("sysB") as s:
        refused(s.put(f"/Task/{task['id']}", json={**done, "output": []}), 403, "HT-0451")
    assert stored(region, task["id"])["output"][0]["valueString"] == "已删除"


def test_the_institution_system_answers_and_notes_carry_their_true_author(region: Region) -> None:
    task = file(region)
    claim_resident = {"authorReference": {"reference": f"Patient/{region.ids['R']}"}, "text": "我同意不改了"}
    with region.client("sysB") as s:
        ok = s.put(f"/Task/{task['id']}", json={**task, "status": "on-hold", "note": [claim_resident]})
        assert ok.status_code == 200, ok.text
    asked = stored(region, task["id"])
    assert asked["note"][0]["authorReference"] == {"reference": f"Organization/{region.ids['orgB']}"}
    asked.pop("meta")
    claim_org = {"authorReference": {"reference": f"Organization/{region.ids['orgB']}"}, "text": "化验单在此"}
    with region.client("R") as r:
        # the resident may not rewrite the institution's note, nor answer
        refused(r.put(f"/Task/{task['id']}", json={**asked, "note": [claim_resident]}), 403, "HT-0451")
        refused(r.put(f"/Task/{task['id']}", json={**asked, "status": "completed"}), 403, "HT-0452")
        ok = r.put(f"/Task/{task['id']}", json={**asked, "status": "requested", "note": [*asked["note"], claim_org]})
        assert ok.status_code == 200, ok.text
    back = stored(region, task["id"])
    assert back["status"] == "requested"
    assert back["note"][1]["authorReference"] == {"reference": f"Patient/{region.ids['R']}"}
    assert back["note"][0]["authorReference"] == {"reference": f"Organization/{region.ids['orgB']}"}


def test_a_resident_cannot_answer_or_misaddress_a_request(region: Region) -> None:
    ids = region.ids
    with region.client("R") as r:
        refused(r.post("/Task", json=request_body(region, f"Observation/{ids['obsB']}", "orgB", status="completed")),
                403, "HT-0452")
        refused(r.post("/Task", json=request_body(region, f"Observation/{ids['obsB']}", "orgB",
                                                  output=[{"type": {"text": "x"}, "valueString": "已更正"}])),
                403, "HT-0452")
        # about S's item, or sent to A for an item B holds: it would land in the wrong inbox
        refused(r.post("/Task", json=request_body(region, f"Observation/{ids['obsS']}", "orgB")), 403, "HT-0456")
        refused(r.post("/Task", json=request_body(region, f"Observation/{ids['obsB']}", "orgA")), 403, "HT-0456")
    task = file(region)
    with region.client("R") as r:
        for change in ({"status": "completed"}, {"status": "rejected"},
                       {"businessStatus": {"text": "已更正"}}, {"statusReason": {"text": "x"}},
                       {"owner": {"reference": f"Organization/{ids['orgA']}"}}):
            r2 = r.put(f"/Task/{task['id']}", json={**task, **change})
            assert r2.status_code == 403, (change, r2.text)
        ok = r.put(f"/Task/{task['id']}", json={**task, "status": "cancelled"})
        assert ok.status_code == 200, ok.text
    with region.client("S") as s:
        assert s.get(f"/Task/{task['id']}").status_code == 403


# ------------------------------------------------------------------ the inbox pages
def page(region: Region, who: str) -> httpx.Client:
    return httpx.Client(base_url=region.server.root, timeout=30, cookies={"hutong_csrf": "t0k3n"},
                        headers={"authorization": f"Bearer {region.server.token(region.accounts[who])}"})


def test_inbox_pages_are_the_addressees_alone(region: Region) -> None:
    task = file(region)
    version = str(region.server.client.get(f"/Task/{task['id']}").json()["meta"]["versionId"])
    form = {"csrf": "t0k3n", "action": "reject", "text": "检验结果经复核无误", "version": version}
    with page(region, "officerA") as a:
        inbox = a.get("/clinician/corrections")
        assert inbox.status_code == 200, inbox.text
        assert task["id"] not in inbox.text and "血糖结果不是我的" not in inbox.text
        assert a.get(f"/clinician/corrections/{task['id']}").status_code == 404
        assert a.post(f"/clinician/corrections/{task['id']}", data=form).status_code == 404
    with page(region, "plainB") as p:
        assert p.get("/clinician/corrections").status_code == 403
        assert p.get(f"/clinician/corrections/{task['id']}").status_code == 403
        assert p.post(f"/clinician/corrections/{task['id']}", data=form).status_code == 403
        assert "/clinician/corrections" not in p.get("/clinician").text
    with page(region, "R") as r:
        assert r.get("/clinician/corrections").status_code == 403
        assert r.post(f"/clinician/corrections/{task['id']}", data=form).status_code == 403
    assert stored(region, task["id"])["status"] == "requested"

    with page(region, "officerB") as b:
        assert "更正申请（1 条待处理）" in b.get("/clinician").text
        inbox = b.get("/clinician/corrections")
        assert inbox.status_code == 200
        assert f'data-task="{task["id"]}"' in inbox.text and "血糖结果不是我的" in inbox.text
        assert "王小红" in inbox.text  # who asked, by name
        one = b.get(f"/clinician/corrections/{task['id']}")
        assert one.status_code == 200 and f'name="version" value="{version}"' in one.text
        # a refusal without its reason: refused, the form keeps nothing stale
        empty = b.post(f"/clinician/corrections/{task['id']}", data={**form, "text": "  "})
        assert empty.status_code == 400 and "请填写内容" in empty.text
        # a forged form without the CSRF token
        assert b.post(f"/clinician/corrections/{task['id']}", data={**form, "csrf": "x"}).status_code == 403
        assert stored(region, task["id"])["status"] == "requested"
        done = b.post(f"/clinician/corrections/{task['id']}", data=form, follow_redirects=False)
        assert done.status_code == 303, done.text
        # replayed: the version moved on, nothing changes
        again = b.post(f"/clinician/corrections/{task['id']}", data={**form, "text": "改主意了"})
        assert again.status_code == 409
        accept = b.post(f"/clinician/corrections/{task['id']}",
                        data={**form, "action": "accept", "version": str(int(version) + 1)})
        assert accept.status_code == 409
    answered = stored(region, task["id"])
    assert answered["status"] == "rejected" and answered["statusReason"]["text"] == "检验结果经复核无误"
    assert answered["meta"]["versionId"] == str(int(version) + 1)
    # the write was audited under the officer, not the platform
    audit = region.server.app.platform.audit
    rows = [e for e in audit.access_log([region.ids["R"]], limit=50)
            if e.account_id == region.accounts["officerB"].id]
    assert rows, "the officer's answer left no audit row the resident can see"
    with page(region, "R") as r:
        mine = r.get("/resident/corrections")
        assert re.search(r"未予更正|不予更正", mine.text) and "检验结果经复核无误" in mine.text


def test_the_resident_is_told_and_adds_what_was_asked(region: Region) -> None:
    task = file(region)
    version = str(region.server.client.get(f"/Task/{task['id']}").json()["meta"]["versionId"])
    notice = "您的更正申请已有答复"
    with page(region, "R") as r:
        assert notice not in r.get("/resident").text
    with page(region, "officerB") as b:
        asked = b.post(f"/clinician/corrections/{task['id']}", follow_redirects=False,
                       data={"csrf": "t0k3n", "action": "ask", "text": "请告知化验当天的就诊时间", "version": version})
        assert asked.status_code == 303, asked.text
    with page(region, "R") as r:
        home = r.get("/resident")
        assert notice in home.text
        mine = r.get("/resident/corrections")
        assert "需要您补充说明" in mine.text and "请告知化验当天的就诊时间" in mine.text
        assert notice not in r.get("/resident").text  # seen
        v = str(int(version) + 1)
        assert f'name="version" value="{v}"' in mine.text
        with page(region, "S") as s:  # another resident: not theirs to read or to answer
            assert "请告知化验当天的就诊时间" not in s.get("/resident/corrections").text
            forged = s.post(f"/resident/corrections/{task['id']}/reply",
                            data={"csrf": "t0k3n", "text": "不是我", "version": v})
            assert forged.status_code == 404
        sent = r.post(f"/resident/corrections/{task['id']}/reply", follow_redirects=False,
                      data={"csrf": "t0k3n", "text": "上午九点在乙医院抽血", "version": v})
        assert sent.status_code == 303, sent.text
        again = r.post(f"/resident/corrections/{task['id']}/reply",
                       data={"csrf": "t0k3n", "text": "再说一次", "version": v})
        assert again.status_code == 409
    back = stored(region, task["id"])
    assert back["status"] == "requested" and len(back["note"]) == 2
    assert back["note"][1] == {**back["note"][1], "text": "上午九点在乙医院抽血",
                               "authorReference": {"reference": f"Patient/{region.ids['R']}"}}
    with page(region, "officerB") as b:
        one = b.get(f"/clinician/corrections/{task['id']}")
        assert "上午九点在乙医院抽血" in one.text and "请告知化验当天的就诊时间" in one.text
