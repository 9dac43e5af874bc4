"""Issue 14, item 5 (the commission console's side) over real HTTP, on SQLite and PostgreSQL:
the 互认 dashboard's figures from hook calls and feedback sent to /cds-services, and the
rule-management pages' four-eyes and role rules (attack tests).

The region is tests/cds/test_recognition_http.py's (A and B code 血常规 differently; B holds a
血常规 of 2 days ago, A a 糖化血红蛋白 of 10 days ago; the seed knowledge approved).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import orjson
import test_recognition_http as hr
from test_recognition_http import CODES, Region, body, cards, order

from hutong.cds import recognition_stats, safety_config
from hutong.cds.knowledge import LOCAL_CODE_PREFIX
from hutong.cds.versions import KnowledgeVersions, region_day
from hutong.cli.cds import SEED
from hutong.security.principal import Role

# The region's fixtures, shared with tests/cds/test_recognition_http.py.
server = hr.server
region = hr.region


def NOW() -> str:  # noqa: N802
    return datetime.now(UTC).isoformat()


def _page(region: Region, who: Any) -> httpx.Client:
    return httpx.Client(base_url=region.server.root, timeout=30, follow_redirects=False, headers={
        "authorization": f"Bearer {region.server.token(who)}"})


def _figures(html: str) -> dict[tuple[str, str], dict[str, str]]:
    """(org id, item) -> figures, from the dashboard's table rows."""
    out = {}
    for m in re.finditer(r'<tr data-month="([^"]+)" data-org="([^"]+)" data-item="([^"]+)">(.*?)</tr>', html, re.S):
        cells = dict(re.findall(r'data-k="(\w+)">([^<]*)', m.group(4)))
        cells["reasons"] = ",".join(f"{r}={n}" for r, n in re.findall(
            r'data-reason="([\w-]+)">[^<]*?(\d+)</li>', m.group(4)))
        out[(m.group(2), m.group(3))] = cells
    return out


def _feedback(region: Region, who: str, service: str, card: dict[str, Any], outcome: str,
              reason: str | None = None) -> None:
    item: dict[str, Any] = {"card": card["uuid"], "outcome": outcome, "outcomeTimestamp": NOW()}
    if outcome == "accepted":
        item["acceptedSuggestions"] = [{"id": card["suggestions"][0]["uuid"]}]
    if reason:
        item["overrideReason"] = {"reason": next(r for r in card["overrideReasons"] if r["code"] == reason)}
    r = region.feedback(who, service, [item])
    assert r.status_code == 200, r.text


def test_dashboard_counts_what_the_hooks_recorded(region: Region) -> None:
    ids = region.ids
    a, b = LOCAL_CODE_PREFIX + CODES["A"], LOCAL_CODE_PREFIX + CODES["B"]
    p = ids["pA"]
    # A's clinician selects 血常规 (B's result: card), 糖化血红蛋白 (A's own: card), TSH (none).
    orders = [order(p, a, "JY0001", "sr-1"), order(p, a, "JY0032", "sr-2"), order(p, a, "JY0041", "sr-3")]
    got = {c["suggestions"][0]["actions"][0]["resourceId"]: c for c in cards(region.call("docA", body(
        region, "docA", p, orders)))}
    assert set(got) == {"ServiceRequest/sr-1", "ServiceRequest/sr-2"}
    _feedback(region, "docA", "hutong-order-select", got["ServiceRequest/sr-1"], "accepted")   # recognised
    _feedback(region, "docA", "hutong-order-select", got["ServiceRequest/sr-2"], "overridden")  # dismissed
    # Signing what is left: 糖化血红蛋白 warned again, overridden at the patient's request (the last word).
    [w] = cards(region.call("docA", body(region, "docA", p, orders[1:], "order-sign"), "hutong-order-sign"))
    _feedback(region, "docA", "hutong-order-sign", w, "overridden", "patient-request")
    # An emergency 血常规: checked, never recognised (负面清单), no card.
    assert cards(region.call("docA", body(region, "docA", p, [order(p, a, "JY0001", "sr-4", priority="stat")]))) == []
    # B's clinician: B's own 血常规, accepted.
    [c] = cards(region.call("docB", body(region, "docB", ids["pB"], [order(ids["pB"], b, "L-CBC", "sr-9")])))
    _feedback(region, "docB", "hutong-order-select", c, "accepted")

    acc = region.server.accounts
    commission, _, _ = acc.add_user("weijian", role=Role.COMMISSION, name="卫健委统计员")
    with _page(region, commission) as cl:
        r = cl.get("/console/recognition")
    assert r.status_code == 200, r.text
    fig = _figures(r.text)
    orgA, orgB = ids["orgA"], ids["orgB"]
    assert fig[(orgA, "cbc")] == {"checked": "2", "found": "1", "recognised": "1", "overridden": "0",
                                  "avoided": "1", "saved": "20.00", "reasons": ""}
    assert fig[(orgA, "hba1c")] == {"checked": "1", "found": "1", "recognised": "0", "overridden": "1",
                                    "avoided": "0", "saved": "0.00", "reasons": "patient-request=1"}
    assert fig[(orgA, "tsh")]["checked"] == "1" and fig[(orgA, "tsh")]["found"] == "0"
    assert fig[(orgB, "cbc")] == {"checked": "1", "found": "1", "recognised": "1", "overridden": "0",
                                  "avoided": "1", "saved": "20.00", "reasons": ""}
    assert len(fig) == 4
    totals = dict(re.findall(r'<dd data-k="(\w+)">([^<]*)</dd>', r.text))
    assert totals == {"checked": "5", "found": "3", "recognised": "2", "overridden": "1", "avoided": "2",
                      "saved": "40.00"}
    assert "北京市怀柔中心医院" in r.text and "血常规" in r.text and "患者要求" in r.text
    # One institution only.
    with _page(region, commission) as cl:
        only_b = _figures(cl.get("/console/recognition", params={"org": orgB}).text)
    assert set(only_b) == {(orgB, "cbc")}
    # Configurable prices: the same figures at another price table.
    prices = recognition_stats.load_prices()
    assert prices.of("cbc") == Decimal(20)
    audit = region.server.app.platform.audit
    other = recognition_stats.Prices("CNY", "", "", "", {"cbc": Decimal("12.5")})
    st = recognition_stats.read(audit, other, since=None)
    assert st.total().saved == Decimal(25) and st.total(item="hba1c").priced is False


def test_dashboard_roles(region: Region) -> None:
    """Clinicians, an institution's operator and a resident-free path: refused (403)."""
    acc = region.server.accounts
    operator, _, _ = acc.add_user("ops-a", role=Role.OPERATOR, name="A院运维", organization=CODES["A"],
                                  organization_id=region.ids["orgA"])
    for who in (region.accounts["docA"], operator):
        with _page(region, who) as cl:
            for path in ("/console/recognition", "/console/rules", "/console/rules/new"):
                assert cl.get(path).status_code == 403, (path, who.role)


def _csrf(cl: httpx.Client, path: str) -> tuple[str, str]:
    r = cl.get(path)
    assert r.status_code == 200, r.text
    return r.text, re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)  # type: ignore[union-attr]


def _draft(cl: httpx.Client, data: dict[str, Any]) -> str:
    _, csrf = _csrf(cl, "/console/rules/new")
    r = cl.post("/console/rules/new", data={"csrf": csrf, "kind": "recognition", "effective_from": "2025-01-01",
                                            "json": orjson.dumps(data).decode(), "note": "血常规缩短为5天"})
    assert r.status_code == 303, r.text
    return r.headers["location"].split("/")[-1].split("?")[0]


def test_four_eyes_and_role_attacks_on_rule_pages(region: Region) -> None:
    acc = region.server.accounts
    server = region.server
    wang = acc.by_username("wangwei")
    li = acc.by_username("lina")
    commission, _, _ = acc.add_user("weijian2", role=Role.COMMISSION, name="卫健委科员")
    versions = KnowledgeVersions(server.repo, server.app.platform.audit)
    [v1] = versions.list()
    seed = orjson.loads(SEED.read_bytes())
    for it in seed["items"]:
        if it["key"] == "cbc":
            it["window_days"] = 5
    seed["items"] = [i for i in seed["items"] if i["key"] != "esr"]
    # The author drafts from pasted JSON (another draft, by the commission, from an uploaded file).
    with _page(region, wang) as cl:
        v2 = _draft(cl, seed)
        page, csrf = _csrf(cl, f"/console/rules/v/{v2}")
        assert "可互认时间（天）由 7 改为 5" in page and "删除项目 红细胞沉降率" in page
        assert 'id="rule-approve"' not in page and 'id="rule-own"' in page
        # The author cannot approve their own version (four-eyes), even by a hand-made POST.
        digest = versions.get(v2).digest
        r = cl.post(f"/console/rules/v/{v2}/approve", data={"csrf": csrf, "version": v2, "digest": digest})
        assert r.status_code == 403 and "HT-0503" in r.text
    with _page(region, commission) as cl:
        _, csrf = _csrf(cl, "/console/rules/new")
        r = cl.post("/console/rules/new", data={"csrf": csrf, "kind": "recognition", "effective_from": "2025-02-01"},
                    files={"file": ("hr.json", SEED.read_bytes(), "application/json")})
        assert r.status_code == 303, r.text
        v3 = r.headers["location"].split("/")[-1].split("?")[0]
        # The commission drafts but does not decide.
        r = cl.post(f"/console/rules/v/{v2}/approve", data={"csrf": csrf, "version": v2, "digest": digest})
        assert r.status_code == 403
        # Bad JSON: a zh-CN message, nothing stored.
        r = cl.post("/console/rules/new", data={"csrf": csrf, "kind": "recognition", "effective_from": "2025-01-01",
                                                "json": "{not json"})
        assert r.status_code == 400 and "不是有效的 JSON" in r.text
    for who in (region.accounts["docA"],):
        with _page(region, who) as cl:
            r = cl.post(f"/console/rules/v/{v2}/approve", data={"version": v2, "digest": digest})
            assert r.status_code == 403
    assert versions.get(v2).status == "draft" and len(versions.list()) == 3
    with _page(region, li) as cl:
        page, csrf = _csrf(cl, f"/console/rules/v/{v2}")
        assert 'id="rule-approve"' in page
        # Forged: the form of v2 posted at v3, or naming v3 at v2, or v2 with v3's digest.
        d3 = versions.get(v3).digest
        for path, form in ((f"/console/rules/v/{v3}/approve", {"version": v2, "digest": digest}),
                           (f"/console/rules/v/{v2}/approve", {"version": v3, "digest": digest}),
                           (f"/console/rules/v/{v2}/approve", {"version": v2, "digest": d3}),
                           (f"/console/rules/v/{v2}/approve", {"version": v2, "digest": digest, "csrf": "x"})):
            r = cl.post(path, data={"csrf": csrf, **form})
            assert r.status_code in (403, 409), (path, form, r.status_code)
        assert versions.get(v2).status == "draft" and versions.get(v3).status == "draft"
        r = cl.post(f"/console/rules/v/{v2}/approve", data={"csrf": csrf, "version": v2, "digest": digest})
        assert r.status_code == 303, r.text
        lst = cl.get("/console/rules").text
        row = re.search(rf'<tr data-version="{v2}" data-status="(\w+)">(.*?)</tr>', lst, re.S)
        assert row is not None and row.group(1) == "active"
        assert "已生效" in row.group(2) and "wangwei" in row.group(2) and "lina" in row.group(2)
        assert wang.id not in lst and li.id not in lst  # names, not account ids
        diff = cl.get("/console/rules/diff", params={"a": v1.id, "b": v2}).text
        assert "血常规在北京的互认：可互认时间（天）由 7 改为 5" in diff or "可互认时间（天）由 7 改为 5" in diff
        r = cl.post(f"/console/rules/v/{v3}/retire", data={"csrf": csrf, "version": v3,
                                                            "digest": versions.get(v3).digest})
        assert r.status_code == 303
    assert versions.get(v2).approver == li.id and versions.get(v3).status == "retired"
    assert versions.in_force(region_day(server.app.platform.repo.clock())) is not None
    # The refusals are on the audit trail.
    refused = [e for e in server.app.platform.audit.search(action="cds-knowledge-approve", limit=50)
               if e.outcome != "0"]
    assert any(e.code == "HT-0503" for e in refused)


def test_hook_without_known_item_records_nothing(region: Region) -> None:
    """A draft order of no known item is not 'checked' (no audit row for a call without cards)."""
    before = len(region.server.app.platform.audit.search(action="cds-cards", limit=100))
    p = region.ids["pA"]
    r = region.call("docA", body(region, "docA", p, [order(p, "http://example.org/x", "nothing", "sr-x")]))
    assert r.status_code == 200 and cards(r) == []
    assert len(region.server.app.platform.audit.search(action="cds-cards", limit=100)) == before


def test_safety_configuration_versions_on_the_rule_pages(region: Region) -> None:
    """The safety configuration (hutong.cds.safety_config) goes through the same pages: drafted,
    approved by another committee member, and a second version's changes said in words."""
    acc = region.server.accounts
    wang, li = acc.by_username("wangwei"), acc.by_username("lina")
    first = safety_config.to_json(safety_config.builtin(), "处方与过敏规则（第一版）")
    second = orjson.loads(orjson.dumps(first))
    second["title"] = "处方与过敏规则（第二版）"
    second["privileges"]["prescribing"] = "warning"
    second["privileges"]["tiers"]["J01MA12"] = 3
    ids = []
    with _page(region, wang) as cl:
        for data in (first, second):
            _, csrf = _csrf(cl, "/console/rules/new?kind=safety")
            r = cl.post("/console/rules/new", data={"csrf": csrf, "kind": "safety", "effective_from": "2025-01-01",
                                                    "json": orjson.dumps(data).decode()})
            assert r.status_code == 303, r.text
            ids.append(r.headers["location"].split("/")[-1].split("?")[0])
    with _page(region, li) as cl:
        page, csrf = _csrf(cl, f"/console/rules/v/{ids[1]}")
        assert "处方权不符时由禁止（不可越过）改为警示（可说明理由后继续）" in page
        assert "药品 J01MA12 由限制使用级改为特殊使用级" in page
        digest = re.search(r'name="digest" value="([0-9a-f]{64})"', page).group(1)  # type: ignore[union-attr]
        r = cl.post(f"/console/rules/v/{ids[1]}/approve", data={"csrf": csrf, "version": ids[1], "digest": digest})
        assert r.status_code == 303
        lst = cl.get("/console/rules").text
    row = re.search(rf'<tr data-version="{ids[1]}" data-status="(\w+)">(.*?)</tr>', lst, re.S)
    assert row is not None and row.group(1) == "active" and "wangwei" in row.group(2) and "lina" in row.group(2)
    cfg = safety_config.in_force(region.server.repo, region_day(region.server.repo.clock()))
    assert cfg.approved and cfg.privileges.prescribing == "warning"
