"""The commission console's 互认 dashboard and rule-management pages (issue 14, item 5).

- ``GET /console/recognition`` (COMMISSION, COMMITTEE): per ordering institution, item and month,
  orders checked, equivalents found, recognised, not recognised by reason (不互认理由),
  examinations avoided and the cost saved at the price table's prices
  (hutong.cds.recognition_stats; prices in hutong/cds/seed/prices.json or ``HUTONG_HR_PRICES``),
  with Chart.js charts like the institutions page and the same figures in a table.
- ``GET /console/rules`` (COMMISSION, COMMITTEE): every version of the 互认清单 and of the safety
  configuration with its state (草稿·待审核 / 已生效 / 已批准·未到生效日 / 已停用), effective dates,
  author and approver by name; ``/console/rules/new`` drafts one from pasted or uploaded JSON
  (COMMISSION, COMMITTEE: hutong.cds.versions.AUTHOR_ROLES); ``/console/rules/v/{id}`` shows a
  version and what it changes against the one before it in plain words (hutong.cds.rule_diff);
  ``/console/rules/diff?a=&b=`` any two versions of one kind.
- ``POST /console/rules/v/{id}/approve`` and ``.../retire``: committee accounts only (seed 004,
  国卫办医发〔2018〕20号: rules approved by the committee), never the author (four-eyes, enforced
  again by hutong.cds.versions and in its UPDATE).  The form names the version id and the SHA-256
  digest the reviewer saw; a POST whose id or digest is not the page's version is refused
  (HT-0573), so a forged form cannot approve a version other than the one reviewed.

Commission staff read no records here: the figures are counts from the audit trail's CDS rows.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import RedirectResponse, Response

from hutong.cds import recognition_stats as stats_mod
from hutong.cds import rule_diff
from hutong.cds.knowledge import KIND as RECOGNITION_KIND
from hutong.cds.recognition import OVERRIDE_REASONS
from hutong.cds.safety_config import SAFETY_KIND, SafetyVersions
from hutong.cds.versions import AUTHOR_ROLES, DECIDER_ROLES, KnowledgeVersions, Version, region_day
from hutong.errors import Conflict, Forbidden, HutongError, InvalidRequest, NotFound
from hutong.fhir import search as fsearch
from hutong.platform import Platform
from hutong.security.accounts import Accounts
from hutong.security.policy import Access
from hutong.security.principal import Role
from hutong.systems import ORGANIZATION, REGION_TZ
from hutong.web.ui import i18n
from hutong.web.ui.pages import Pages, access_of, form_of

DASHBOARD_ROLES = (Role.COMMISSION, Role.COMMITTEE)
RULES_ROLES = (Role.COMMISSION, Role.COMMITTEE)
DRAFT_ROLES = tuple(r for r in AUTHOR_ROLES if r != Role.PLATFORM)
KINDS = (RECOGNITION_KIND, SAFETY_KIND)
MONTHS = 12            # the dashboard reads the last twelve months of the audit trail
MAX_UPLOAD = 2 * 1024 * 1024

i18n.add({
    "con.nav.recognition": ("互认统计", "Recognition"),
    "con.nav.rules": ("规则管理", "Rules"),
    "hr.title": ("检查检验结果互认统计", "Mutual recognition of results"),
    "hr.intro": ("数据来自医生开单时决策支持服务的调用与反馈记录：核查医嘱数为开单时核对过的检查检验医嘱，"
                 "已互认为医生采纳了其他机构的结果并撤销开单（即避免的检查），不互认按医生选择的理由统计。"
                 "同一医嘱在选择和签署时各核对一次，只计一次。机构为开单机构。",
                 "From the decision-support service's calls and feedback at ordering time: orders checked, "
                 "results found elsewhere, recognised (the order withdrawn: an examination avoided) and not "
                 "recognised by reason. One order counts once. The institution is the ordering one."),
    "hr.month": ("月份", "Month"),
    "hr.all_months": ("近十二个月", "Last twelve months"),
    "hr.org": ("开单机构", "Ordering institution"),
    "hr.all_orgs": ("全部机构", "All institutions"),
    "hr.filter": ("查看", "Show"),
    "hr.item": ("项目", "Item"),
    "hr.checked": ("核查医嘱数", "Orders checked"),
    "hr.found": ("发现可互认结果", "Equivalents found"),
    "hr.recognised": ("已互认", "Recognised"),
    "hr.overridden": ("不互认", "Not recognised"),
    "hr.avoided": ("避免重复检查", "Examinations avoided"),
    "hr.saved": ("节省费用（元）", "Cost saved (yuan)"),
    "hr.rate": ("互认率", "Recognition rate"),
    "hr.reason.none": ("未说明理由（仅关闭提示）", "no reason (notice dismissed)"),
    "hr.by_reason": ("不互认理由", "Reasons for not recognising"),
    "hr.monthly_chart": ("每月核查与互认情况", "Orders checked and recognised per month"),
    "hr.reason_chart": ("不互认理由分布", "Reasons for not recognising"),
    "hr.chart_note": ("图表数据亦见下表。", "The charts' figures are also in the table below."),
    "hr.none": ("所选范围内尚无开单核查记录。医生开单时调用决策支持服务后，这里会显示统计。",
                "No orders checked in this range yet."),
    "hr.prices": ("费用按价格表估算：{title}（{source}）", "Costs at the price table: {title} ({source})"),
    "hr.unpriced": ("价格表中没有该项目", "not in the price table"),
    "hr.unknown_org": ("（未登记的机构）", "(unregistered institution)"),
    "hr.table": ("按机构、项目和月份", "By institution, item and month"),
    "hr.total": ("合计", "Total"),
    # rules
    "rules.title": ("决策支持规则管理", "Decision-support rules"),
    "rules.intro": ("规则以版本管理：起草后须由另一位专家委员会委员审核批准方可生效（双人审核，起草人不能批准自己起草的版本），"
                    "仅在生效日期内起作用；停用后立即不再起作用。每一步均记入审计日志。",
                    "Rules are versioned: a draft takes effect only once another committee member approves it "
                    "(four eyes), only within its dates; a retired version stops at once. Every step is audited."),
    "rules.kind.recognition": ("检查检验结果互认清单", "Mutual recognition list"),
    "rules.kind.safety": ("处方权限与药物过敏规则", "Privilege and allergy rules"),
    "rules.version": ("版本", "Version"),
    "rules.name": ("名称", "Title"),
    "rules.status": ("状态", "Status"),
    "rules.effective": ("生效日期", "Effective"),
    "rules.author": ("起草人", "Author"),
    "rules.approver": ("批准人", "Approver"),
    "rules.retired_by": ("停用人", "Retired by"),
    "rules.created": ("起草时间", "Drafted"),
    "rules.open": ("查看", "Open"),
    "rules.none": ("尚无版本。", "No versions yet."),
    "rules.status.draft": ("草稿·待审核", "draft, awaiting review"),
    "rules.status.active": ("已生效", "in force"),
    "rules.status.pending": ("已批准·未到生效日", "approved, not yet effective"),
    "rules.status.ended": ("已批准·已过生效期", "approved, period ended"),
    "rules.status.retired": ("已停用", "retired"),
    "rules.from_to": ("{start} 至 {end}", "{start} to {end}"),
    "rules.open_ended": ("{start} 起", "from {start}"),
    "rules.new": ("起草新版本", "Draft a new version"),
    "rules.new_intro": ("粘贴或上传规则文件。保存后为草稿，须由另一位委员会委员批准后才生效。",
                        "Paste or upload the rules (JSON). Saved as a draft; another committee member "
                        "approves it."),
    "rules.kind": ("规则类别", "Kind"),
    "rules.from": ("生效日期（起）", "Effective from"),
    "rules.to": ("生效日期（止，可不填）", "Effective to (optional)"),
    "rules.note": ("说明（可不填）", "Note (optional)"),
    "rules.json": ("规则内容", "Rules (JSON)"),
    "rules.file": ("或上传文件", "Or upload a file"),
    "rules.save": ("保存为草稿", "Save as draft"),
    "rules.seq": ("第 {seq} 版", "Version {seq}"),
    "rules.detail": ("第 {seq} 版 · {kind}", "Version {seq} · {kind}"),
    "rules.digest": ("内容校验值", "Content digest (SHA-256)"),
    "rules.changes": ("与第 {seq} 版相比的变化", "Changes against version {seq}"),
    "rules.first": ("这是该类规则的第一个版本，以下为其内容概要。", "The first version of this kind."),
    "rules.no_change": ("与上一版本相比没有变化。", "No changes against the previous version."),
    "rules.summary": ("内容概要", "Contents"),
    "rules.approve": ("审核通过并批准", "Approve"),
    "rules.retire": ("停用", "Retire"),
    "rules.approve_note": ("批准即表示您已审阅以上内容与变化。", "Approving says you reviewed the above."),
    "rules.own": ("您是该版本的起草人，须由另一位委员会委员批准。", "You drafted this version: another member approves it."),
    "rules.only_committee": ("只有专家委员会委员可以批准或停用规则。", "Only committee members approve or retire rules."),
    "rules.done.draft": ("已保存为草稿，等待另一位委员会委员审核批准。", "Saved as a draft."),
    "rules.done.approve": ("已批准。", "Approved."),
    "rules.done.retire": ("已停用。", "Retired."),
    "rules.compare": ("比较两个版本", "Compare two versions"),
    "rules.compare_a": ("旧版本", "Older"),
    "rules.compare_b": ("新版本", "Newer"),
    "rules.compare_go": ("比较", "Compare"),
    "rules.diff_title": ("第 {a} 版 → 第 {b} 版的变化", "Changes from version {a} to {b}"),
    "rules.sign.+": ("新增", "added"),
    "rules.sign.-": ("删除", "removed"),
    "rules.sign.~": ("修改", "changed"),
    "rules.count.items": ("互认项目 {n} 项（检验 {lab} 项，检查 {imaging} 项）", "{n} items"),
    "rules.count.regions": ("按地区的可互认时间 {n} 条", "{n} region windows"),
    "rules.count.negatives": ("负面清单 {n} 条", "{n} negative-list rows"),
    "rules.count.quality": ("机构质控 {n} 条（{orgs} 家机构）", "{n} QC rows"),
    "rules.count.local_codes": ("机构本地编码 {n} 条（{orgs} 家机构）", "{n} local codes"),
    "rules.count.conflicts": ("药物过敏规则 {n} 条", "{n} allergy rules"),
    "rules.count.tiers": ("抗菌药物分级 {n} 种药品", "{n} antibiotic tiers"),
    "rules.back": ("返回规则列表", "Back to the rules"),
    "error.HT-0571": ("规则内容不是有效的 JSON，请检查后重新粘贴或上传。", "The rules are not valid JSON."),
    "error.HT-0572": ("请粘贴规则内容或选择文件。", "Paste the rules or choose a file."),
    "error.HT-0573": ("提交的版本与页面上审阅的版本不一致，请重新打开该版本后再操作。",
                      "The form does not name the version reviewed; reopen it."),
    "error.HT-0574": ("未知的规则类别。", "Unknown kind of rules."),
})
for _c in OVERRIDE_REASONS:
    i18n.add({f"hr.reason.{_c.code}": (str(_c.display), _c.code)})


def month_labels(today: str, n: int = MONTHS) -> list[str]:
    """The last ``n`` months up to ``today``'s (YYYY-MM), oldest first."""
    y, m = int(today[:4]), int(today[5:7])
    out = []
    for _ in range(n):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
    return out[::-1]


def charts(stats: stats_mod.Stats, months: list[str], t: Callable[..., str]) -> dict[str, Any]:
    """Chart.js configs: per month checked / found / recognised / not recognised; reasons as bars."""
    def series(f: Callable[[stats_mod.Cell], int]) -> list[int]:
        return [f(stats.total(month=m)) for m in months]

    monthly = {"type": "bar", "data": {"labels": months, "datasets": [
        {"label": t("hr.checked"), "data": series(lambda c: c.checked)},
        {"label": t("hr.found"), "data": series(lambda c: c.found)},
        {"label": t("hr.recognised"), "data": series(lambda c: c.recognised)},
        {"label": t("hr.overridden"), "data": series(lambda c: c.overridden_total)}]},
        "options": {"responsive": True, "maintainAspectRatio": False, "animation": False,
                    "scales": {"y": {"beginAtZero": True, "ticks": {"precision": 0}}}}}
    total = stats.total()
    codes = [*stats_mod.REASON_CODES, stats_mod.NO_REASON]
    reasons = {"type": "bar", "data": {"labels": [t(f"hr.reason.{c}") for c in codes], "datasets": [
        {"label": t("hr.overridden"), "data": [total.overridden.get(c, 0) for c in codes]}]},
        "options": {"responsive": True, "maintainAspectRatio": False, "animation": False, "indexAxis": "y",
                    "scales": {"x": {"beginAtZero": True, "ticks": {"precision": 0}}}}}
    return {"monthly": monthly, "reasons": reasons}


def yuan(d: Decimal) -> str:
    return f"{d:,.2f}"


def status_key(v: Version, today: str) -> str:
    if v.status == "active":
        if v.effective_from > today:
            return "pending"
        if v.effective_to is not None and v.effective_to < today:
            return "ended"
    return v.status


def summary(kind: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """What a version holds, counted (for the first version of a kind, and beside every diff)."""
    if kind == SAFETY_KIND:
        return [("rules.count.conflicts", {"n": len((body.get("allergy") or {}).get("conflicts") or [])}),
                ("rules.count.tiers", {"n": len((body.get("privileges") or {}).get("tiers") or {})})]
    items = body.get("items") or []
    quality = body.get("quality") or []
    local = body.get("local_codes") or []
    return [("rules.count.items", {"n": len(items), "lab": sum(1 for i in items if i.get("kind") == "lab"),
                                   "imaging": sum(1 for i in items if i.get("kind") == "imaging")}),
            ("rules.count.negatives", {"n": sum(len(n.get("items") or []) for n in body.get("negative_list") or [])}),
            ("rules.count.quality", {"n": len(quality), "orgs": len({q.get("institution") for q in quality})}),
            ("rules.count.local_codes", {"n": sum(len(c.get("codes") or {}) for c in local),
                                         "orgs": len({c.get("institution") for c in local})})]


def register(app: FastAPI, pages: Pages, platform: Platform,
             render: Callable[..., Response]) -> None:
    """Add the pages; ``render`` is the console's (its navigation)."""
    repo = platform.repo

    def directory() -> list[dict[str, Any]]:
        """The registered Organizations, read as the platform, as the console's ``names`` does: institution
        names are directory data every signed-in caller may see, and committee accounts hold no FHIR
        scope at all (they read no records)."""
        parsed = fsearch.parse("Organization", [("_count", "1000")], base_url="", strict=True)
        return [orjson.loads(s.body) for s in repo.search(parsed.query).matches if s.body is not None]

    def accounts() -> Accounts:
        a: Accounts = platform.authenticator.tokens.accounts
        return a

    def versions(kind: str) -> KnowledgeVersions:
        if kind == SAFETY_KIND:
            return SafetyVersions(repo, platform.audit)
        if kind == RECOGNITION_KIND:
            return KnowledgeVersions(repo, platform.audit)
        raise NotFound("HT-0574", f"no kind of rules {kind[:40]!r}")

    def find(vid: str) -> tuple[KnowledgeVersions, Version]:
        for kind in KINDS:
            vs = versions(kind)
            try:
                return vs, vs.get(vid)
            except NotFound:
                continue
        raise NotFound("HT-0502", f"no knowledge version {vid[:40]!r}")

    def person(account_id: str | None) -> str:
        if not account_id:
            return ""
        a = accounts().get(account_id)
        if a is None:
            return "（已删除的账号）"
        return a.display or a.username or "（未命名账号）"

    def today(access: Access) -> str:
        return region_day(access.clock())

    # ------------------------------------------------------------ dashboard
    @app.get("/console/recognition")
    async def dashboard(request: Request) -> Response:
        access = access_of(request)
        access.require_role(*DASHBOARD_ROLES, what="the mutual recognition dashboard")
        now = access.clock()
        months = month_labels(region_day(now)[:7])
        month = request.query_params.get("month")
        month = month if month in months else None
        org = request.query_params.get("org") or None

        def load() -> tuple[stats_mod.Stats, stats_mod.Prices, list[dict[str, Any]]]:
            prices = stats_mod.load_prices()
            since = int(datetime.fromisoformat(months[0] + "-01T00:00:00+08:00").timestamp() * 1000)
            st = stats_mod.read(platform.audit, prices, since=since, month=month)
            return st, prices, directory()

        st, prices, orgs = await run_in_threadpool(load)
        names = {o["id"]: o.get("name") or "" for o in orgs}
        if org is not None and org not in names:
            org = None
        if org is not None:
            st = stats_mod.Stats({k: c for k, c in st.cells.items() if k[1] == org})
        item_names = _item_names(repo, platform, region_day(now))
        t = i18n.Translator(pages.lang(request))
        shown = [m for m in months if month is None or m == month]
        return render(request, "console/recognition.html", stats=st, total=st.total(), months=months,
                      month=month, org=org, orgs=sorted(names.items(), key=lambda kv: kv[1]), names=names,
                      item_names=item_names, charts=charts(st, shown, t), prices=prices, yuan=yuan,
                      reasons=[*stats_mod.REASON_CODES, stats_mod.NO_REASON])

    # ------------------------------------------------------------ rules
    def rule_list(access: Access) -> list[dict[str, Any]]:
        day = today(access)
        out = []
        for kind in KINDS:
            rows = [{"v": v, "status": status_key(v, day), "author": person(v.author),
                     "approver": person(v.approver), "retired_by": person(v.retired_by)}
                    for v in versions(kind).list()]
            out.append({"kind": kind, "rows": rows})
        return out

    @app.get("/console/rules")
    async def rules(request: Request) -> Response:
        access = access_of(request)
        access.require_role(*RULES_ROLES, what="the decision-support rules")
        kinds = await run_in_threadpool(rule_list, access)
        done = request.query_params.get("done")
        return render(request, "console/rules.html", kinds=kinds, beijing=_beijing,
                      may_draft=access.role in DRAFT_ROLES,
                      done=done if done in ("draft", "approve", "retire") else None)

    def new_page(request: Request, status: int = 200, error: str | None = None, **form: str) -> Response:
        return render(request, "console/rule_new.html", status=status, error=error, kinds=KINDS, form=form)

    @app.get("/console/rules/new")
    async def rules_new(request: Request) -> Response:
        access = access_of(request)
        access.require_role(*DRAFT_ROLES, what="drafting decision-support rules")
        return new_page(request, kind=request.query_params.get("kind") or RECOGNITION_KIND,
                        effective_from=today(access))

    @app.post("/console/rules/new")
    async def rules_new_post(request: Request) -> Response:
        access = access_of(request)
        access.require_role(*DRAFT_ROLES, what="drafting decision-support rules")
        form = await form_of(request)
        upload = (await request.form()).get("file")
        text = form.get("json", "").strip()
        if isinstance(upload, UploadFile):
            try:
                raw = await upload.read(MAX_UPLOAD + 1) if upload.filename else b""
            finally:
                await upload.close()
            if len(raw) > MAX_UPLOAD:
                return new_page(request, 413, "规则文件过大（不超过 2 MB）。", **form)
            if raw:
                text = raw.decode("utf-8", errors="replace").strip()
        kind = form.get("kind", "")
        try:
            if kind not in KINDS:
                raise InvalidRequest("HT-0574", "unknown kind of rules")
            if not text:
                raise InvalidRequest("HT-0572", "no rules given")
            try:
                data = orjson.loads(text)
            except orjson.JSONDecodeError as e:
                raise InvalidRequest("HT-0571", "the rules are not valid JSON") from e
            vs = versions(kind)
            v = await run_in_threadpool(lambda: vs.draft(access.principal, data,
                                                         effective_from=form.get("effective_from", ""),
                                                         effective_to=form.get("effective_to") or None,
                                                         note=form.get("note") or None))
        except Forbidden:
            raise
        except HutongError as e:
            return new_page(request, 400, _words(e, pages.lang(request)), **{**form, "json": text})
        return RedirectResponse(f"/console/rules/v/{v.id}?done=draft", status_code=303)

    def detail(access: Access, vid: str, institutions: dict[str, str]) -> dict[str, Any]:
        vs, v = find(vid)
        body = orjson.loads(vs.body(v.id))
        older = [x for x in vs.list() if x.seq < v.seq]
        prev = older[0] if older else None
        changes = _changes(vs, prev, v, institutions) if prev is not None else []
        return {"v": v, "rule_status": status_key(v, today(access)), "author": person(v.author),
                "approver": person(v.approver), "retired_by": person(v.retired_by), "prev": prev,
                "changes": changes, "summary": summary(v.kind, body), "all": vs.list()}

    @app.get("/console/rules/v/{vid}")
    async def rule_version(vid: str, request: Request) -> Response:
        access = access_of(request)
        access.require_role(*RULES_ROLES, what="the decision-support rules")
        d = await run_in_threadpool(lambda: detail(access, vid, _by_code(directory())))
        done = request.query_params.get("done")
        return render(request, "console/rule_version.html", **d, beijing=_beijing,
                      may_decide=access.role in DECIDER_ROLES, own=d["v"].author == access.principal.account_id,
                      done=done if done in ("draft", "approve", "retire") else None)

    @app.get("/console/rules/diff")
    async def rule_diff_page(request: Request) -> Response:
        access = access_of(request)
        access.require_role(*RULES_ROLES, what="the decision-support rules")
        a, b = request.query_params.get("a", ""), request.query_params.get("b", "")

        def load() -> dict[str, Any]:
            vs, va = find(a)
            vs_b, vb = find(b)
            if va.kind != vb.kind:
                raise InvalidRequest("HT-0574", "two versions of one kind of rules are compared")
            if va.seq > vb.seq:
                va, vb = vb, va
            return {"a": va, "b": vb, "changes": _changes(vs, va, vb, _by_code(directory()))}

        d = await run_in_threadpool(load)
        return render(request, "console/rule_diff.html", **d)

    async def decide(vid: str, request: Request, action: str) -> Response:
        access = access_of(request)
        # The role is checked before the form is read (and again by hutong.cds.versions, audited).
        access.require_role(*DECIDER_ROLES, what=f"{action} decision-support rules (committee members only)")
        form = await form_of(request)

        def go() -> None:
            vs, v = find(vid)
            if form.get("version") != v.id or form.get("digest") != v.digest:
                raise Conflict("HT-0573", "the form does not name the version and content reviewed on this page")
            if action == "approve":
                vs.approve(v.id, access.principal)
            else:
                vs.retire(v.id, access.principal)

        await run_in_threadpool(go)
        return RedirectResponse(f"/console/rules/v/{vid}?done={action}", status_code=303)

    @app.post("/console/rules/v/{vid}/approve")
    async def rule_approve(vid: str, request: Request) -> Response:
        return await decide(vid, request, "approve")

    @app.post("/console/rules/v/{vid}/retire")
    async def rule_retire(vid: str, request: Request) -> Response:
        return await decide(vid, request, "retire")


def _changes(vs: KnowledgeVersions, a: Version, b: Version, institutions: dict[str, str]) -> list[rule_diff.Change]:
    if a.kind == SAFETY_KIND:
        return rule_diff.safety(orjson.loads(vs.body(a.id)), orjson.loads(vs.body(b.id)))
    return rule_diff.recognition(vs.rows(a.id), vs.rows(b.id), institutions)


def _by_code(orgs: list[dict[str, Any]]) -> dict[str, str]:
    """机构代码 -> name (the knowledge names institutions by code)."""
    out = {}
    for o in orgs:
        for i in o.get("identifier") or ():
            if i.get("system") == ORGANIZATION and i.get("value") and o.get("name"):
                out[str(i["value"])] = str(o["name"])
    return out


def _item_names(repo: Any, platform: Platform, day: str) -> dict[str, str]:
    """Item key -> name from every 互认 version (a retired item keeps its name on old months)."""
    vs = KnowledgeVersions(repo, platform.audit)
    out: dict[str, str] = {}
    for v in sorted(vs.list(), key=lambda v: v.seq):
        for i in orjson.loads(vs.body(v.id)).get("items") or []:
            if isinstance(i, dict) and i.get("key"):
                out[str(i["key"])] = str(i.get("name") or i["key"])
    return out


def _words(e: HutongError, lang: str) -> str:
    from hutong.web.ui.pages import error_words

    words = error_words(e, lang)
    if words == i18n.Translator(lang)("error.generic") and lang != "en":
        # A checking error names the field in English (HT-0501/0537): keep the field, say it in Chinese.
        return f"规则内容有误：{e.message}"
    return words


def _beijing(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, REGION_TZ).strftime("%Y-%m-%d %H:%M")
