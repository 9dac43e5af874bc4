"""The commission console (issue 7: "the information centre must see the region").

Pages under ``/console`` (server-rendered, hutong.web.ui.pages), each behind
its role check (:meth:`Access.require_role`; refused: HT-0104, shown as the
403 page):

- ``GET /console`` -- institutions (COMMISSION): every registered
  Organization (directory data) with its connection status from the
  ingestion inbox (hutong.ingest.inbox), daily volumes and next-day
  timeliness (次日归集率) as Chart.js charts, and counts of the records each
  institution holds (:func:`record_counts`).  Auditors and operators landing
  here are sent on to their own pages.
- ``GET /console/identity`` -- the MPI review queue side by side, link / not
  the same person, and unlink (COMMISSION: the identity stewards, as
  ``/mpi/review`` and ``Patient/$mpi-link`` in hutong.web.app).
- ``GET /console/audit`` -- audit search (AUDITOR).
- ``GET /console/break-glass`` -- break-glass accesses and their reviews
  (AUDITOR and COMMISSION view; AUDITOR reviews).
- ``GET /console/users`` -- accounts and roles (OPERATOR manages;
  COMMISSION views): disable, enable, unlock, add a staff user (issue 6:
  operators manage accounts "from the console as well as the command line").

Connection status (documented thresholds, :func:`status_of`): 在线 (online)
when the last message from the institution arrived within
:data:`ONLINE_HOURS`; 今日无数据 (no data today) when it arrived within
:data:`SILENT_HOURS` but not within ``ONLINE_HOURS``; 连接中断
(disconnected) when nothing arrived for ``SILENT_HOURS`` or never.  Each
status is an icon AND a word, never a colour alone.

Commission staff may not read residents' records (hutong.security.policy:
"Commission staff, auditors and operators read the directory, not
records"), so the per-institution record counts are a read of counts only
(:func:`record_counts`: numbers per Organization id, no resource body, no
resident identifier).  Status, timeliness and counts come from
hutong.quality (its store reads in hutong.quality.quality_store); this
module renders them.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from hutong.errors import Conflict, Forbidden, InvalidRequest, NotFound
from hutong.fhir import search as fsearch
from hutong.fhir.service import FhirService
from hutong.platform import Platform
from hutong.quality.connection import DOWN, ONLINE, ONLINE_HOURS, SILENT, SILENT_HOURS, status_of
from hutong.quality.institutions import (
    InstitutionRow,
    RecordCounts,
    institution_rows,
    record_counts,
    timeliness,
)
from hutong.security.accounts import USER_ROLES, Account, Accounts
from hutong.security.audit import VERDICTS, AuditEntry, AuditLog
from hutong.security.events import ERROR, FAILED, REFUSED, SUCCESS, AuditRecord
from hutong.security.policy import Access
from hutong.security.principal import Role
from hutong.systems import REGION_TZ
from hutong.web import read_routing
from hutong.web.ui import account_form, i18n, recognition_dashboard
from hutong.web.ui.enrolment import enrolment
from hutong.web.ui.pages import Pages, access_of, form_of

__all__ = ["DOWN", "ONLINE", "ONLINE_HOURS", "SILENT", "SILENT_HOURS", "InstitutionRow", "charts",
           "institution_rows", "mask_id_number", "mask_phone", "record_counts", "register", "status_of"]

STATUS_ICON = {ONLINE: "✔", SILENT: "⚠", DOWN: "✖"}
PERIODS = (7, 30)
COUNTS_TTL_S = 60.0  # record counts change slowly; the dashboard need not rescan on every load
PAGE = 50
# Roles that may open each console page.
INSTITUTIONS_ROLES = (Role.COMMISSION,)
IDENTITY_ROLES = (Role.COMMISSION,)
AUDIT_ROLES = (Role.AUDITOR,)
BREAK_GLASS_ROLES = (Role.AUDITOR, Role.COMMISSION)
USERS_VIEW_ROLES = (Role.OPERATOR, Role.COMMISSION)
USERS_MANAGE_ROLES = (Role.OPERATOR,)
OUTCOMES = {SUCCESS: "con.outcome.ok", REFUSED: "con.outcome.refused", FAILED: "con.outcome.failed",
            ERROR: "con.outcome.error"}

i18n.add({
    "con.title": ("卫健委管理台", "Commission console"),
    "con.more": ("更多", "More"),
    "con.nav.institutions": ("机构接入", "Institutions"),
    "con.nav.identity": ("身份复核", "Identity review"),
    "con.nav.audit": ("审计查询", "Audit search"),
    "con.nav.break_glass": ("紧急授权复核", "Break-glass review"),
    "con.nav.users": ("用户与角色", "Users and roles"),
    # institutions
    "con.inst.title": ("机构接入状态", "Institutions and their connections"),
    "con.inst.intro": ("状态依据最近一次收到消息的时间：{online}小时内为“在线”，{silent}小时内为“今日无数据”，"
                       "更久或从未收到为“连接中断”。",
                       "Status by the time of the last message received: within {online} hours \"online\", "
                       "within {silent} hours \"no data today\", longer or never \"disconnected\"."),
    "con.inst.name": ("机构", "Institution"),
    "con.inst.code": ("机构代码", "Code"),
    "con.inst.status": ("状态", "Status"),
    "con.inst.last": ("最近消息", "Last message"),
    "con.inst.last_kind": ("消息类型", "Message type"),
    "con.inst.messages": ("消息数（{days}天）", "Messages ({days} days)"),
    "con.inst.dead": ("死信", "Dead letters"),
    "con.inst.timely": ("次日归集率", "Next-day timeliness"),
    "con.inst.patients": ("患者数", "Patients"),
    "con.inst.records": ("记录数", "Records"),
    "con.inst.stored": ("最近入库", "Last stored"),
    "con.inst.never": ("从未收到", "never"),
    "con.inst.period": ("统计周期", "Period"),
    "con.inst.days": ("近{days}天", "Last {days} days"),
    "con.inst.volume_chart": ("每日消息量（按机构）", "Daily messages by institution"),
    "con.inst.timely_chart": ("次日归集率（%，24小时内到达的占比）",
                              "Next-day timeliness (% of messages within 24 hours)"),
    "con.inst.chart_note": ("图表数据亦见下表。", "The charts' figures are also in the table below."),
    "con.inst.no_messages": ("所选周期内尚未通过消息接口收到数据（数据可能由批量导入载入，见记录数）。",
                             "No messages through the interfaces in this period (data may have been bulk "
                             "loaded: see the record counts)."),
    "con.status.online": ("在线", "online"),
    "con.status.silent": ("今日无数据", "no data today"),
    "con.status.down": ("连接中断", "disconnected"),
    # identity
    "con.id.title": ("身份复核队列", "Identity review queue"),
    "con.id.intro": ("系统无法确定是否为同一人的记录在此复核。左侧为新登记记录，右侧为候选主索引人员。",
                     "Records the index could not decide on. Left: the new registration; right: the candidate "
                     "person in the master index."),
    "con.id.open": ("待复核", "Open"),
    "con.id.linked": ("已关联", "Linked"),
    "con.id.rejected": ("非同一人", "Not the same"),
    "con.id.item": ("复核项 #{id}", "Review item #{id}"),
    "con.id.reason": ("原因", "Reason"),
    "con.id.score": ("匹配权重", "Match weight"),
    "con.id.probability": ("同一人概率", "Probability of the same person"),
    "con.id.field": ("字段", "Field"),
    "con.id.source": ("新登记记录", "New registration"),
    "con.id.person": ("候选人员", "Candidate person"),
    "con.id.level": ("比对结果", "Comparison"),
    "con.id.weight": ("权重", "Weight"),
    "con.id.from": ("来源机构", "From"),
    "con.id.link": ("确认为同一人并关联", "Same person: link"),
    "con.id.reject": ("不是同一人", "Not the same person"),
    "con.id.unlink": ("解除关联", "Unlink"),
    "con.id.note": ("备注（可选）", "Note (optional)"),
    "con.id.empty": ("队列为空。", "The queue is empty."),
    "con.id.done.linked": ("已关联。", "Linked."),
    "con.id.done.rejected": ("已记录为不是同一人。", "Recorded as not the same person."),
    "con.id.done.unlinked": ("已解除关联，该记录成为一个新的人员。", "Unlinked: the record is now a person of its own."),
    "con.id.no_comparison": ("无法比对（记录已变化）。", "No comparison (the records have changed)."),
    "con.field.id_number": ("身份证号", "ID number"),
    "con.field.name": ("姓名", "Name"),
    "con.field.birth_date": ("出生日期", "Birth date"),
    "con.field.sex": ("性别", "Sex"),
    "con.field.phone": ("电话", "Phone"),
    "con.field.address": ("地址", "Address"),
    "con.field.health_card": ("健康卡号", "Health card"),
    "con.field.passport": ("护照号", "Passport"),
    "con.sex.male": ("男", "male"),
    "con.sex.female": ("女", "female"),
    "con.sex.other": ("其他", "other"),
    "con.sex.unknown": ("未知", "unknown"),
    "con.level.exact": ("一致", "same"),
    "con.level.pinyin": ("同音", "same pinyin"),
    "con.level.similar": ("相似", "similar"),
    "con.level.swapped": ("月日颠倒", "day and month swapped"),
    "con.level.close": ("接近", "close"),
    "con.level.else": ("不同", "different"),
    "con.level.none": ("缺失（不计）", "missing (no evidence)"),
    # audit
    "con.audit.title": ("审计查询", "Audit search"),
    "con.audit.account": ("账户ID", "Account id"),
    "con.audit.person": ("人员（主索引ID）", "Person (master index id)"),
    "con.audit.action": ("操作", "Action"),
    "con.audit.outcome": ("结果", "Outcome"),
    "con.audit.purpose": ("目的", "Purpose"),
    "con.audit.since": ("起始日期", "From date"),
    "con.audit.until": ("截止日期（不含）", "Until date (exclusive)"),
    "con.audit.search": ("查询", "Search"),
    "con.audit.any": ("全部", "Any"),
    "con.audit.time": ("时间", "Time"),
    "con.audit.who": ("操作者", "Who"),
    "con.audit.what": ("请求", "Request"),
    "con.audit.persons": ("涉及人员", "Persons"),
    "con.audit.code": ("代码", "Code"),
    "con.audit.older": ("更早的记录", "Older records"),
    "con.audit.none": ("没有符合条件的记录。", "No matching records."),
    "con.audit.bg": ("紧急授权", "break-glass"),
    "con.outcome.ok": ("成功", "success"),
    "con.outcome.refused": ("拒绝", "refused"),
    "con.outcome.failed": ("失败", "failed"),
    "con.outcome.error": ("错误", "error"),
    # break-glass
    "con.bg.title": ("紧急授权（破窗）访问复核", "Break-glass accesses"),
    "con.bg.intro": ("医生在紧急情况下越过授权查看档案时须写明原因；每次申请都应由审计员复核。",
                     "Clinicians who break the glass must state a reason; an auditor reviews each claim."),
    "con.bg.pending": ("待复核", "Awaiting review"),
    "con.bg.reviewed": ("已复核", "Reviewed"),
    "con.bg.all": ("全部", "All"),
    "con.bg.every": ("显示紧急授权下的每次访问", "Show every access made under break-glass"),
    "con.bg.claims": ("只显示紧急授权申请", "Show the claims only"),
    "con.bg.who": ("医生", "Clinician"),
    "con.bg.when": ("时间", "When"),
    "con.bg.person": ("人员", "Person"),
    "con.bg.reason": ("陈述的原因", "Stated reason"),
    "con.bg.status": ("复核", "Review"),
    "con.bg.verdict.justified": ("合理", "justified"),
    "con.bg.verdict.unjustified": ("不合理", "unjustified"),
    # ○, not ⏳: an emoji the CJK fonts lack, drawn as an empty box (issue 16, item 10)
    "con.bg.not_reviewed": ("○ 待复核", "○ awaiting review"),
    "con.bg.verdict": ("复核结论", "Verdict"),
    "con.bg.note": ("复核意见", "Note"),
    "con.bg.submit": ("提交复核", "Submit review"),
    "con.bg.by": ("复核人 {who}，{when}", "by {who}, {when}"),
    "con.bg.none": ("没有紧急授权访问。", "No break-glass accesses."),
    "con.bg.done": ("复核已记录。", "Review recorded."),
    "con.bg.access": ("访问", "access"),
    "con.bg.claim": ("申请", "claim"),
    # users
    "con.users.title": ("用户与角色", "Users and roles"),
    "con.users.role": ("角色", "Role"),
    "con.users.staff": ("工作人员与系统", "Staff and systems"),
    "con.users.username": ("用户名 / 客户端ID", "Username / client id"),
    "con.users.name": ("姓名", "Name"),
    "con.users.org": ("机构", "Institution"),
    "con.users.status": ("状态", "Status"),
    "con.users.totp": ("动态口令", "Authenticator"),
    "con.users.created": ("创建时间", "Created"),
    "con.users.actions": ("操作", "Actions"),
    "con.users.active": ("✔ 启用", "✔ active"),
    "con.users.disabled": ("✖ 停用", "✖ disabled"),
    "con.users.locked": ("⊘ 锁定至 {until}", "⊘ locked until {until}"),  # no emoji: see con.bg.not_reviewed
    "con.users.yes": ("已绑定", "enrolled"),
    "con.users.no": ("未绑定", "not enrolled"),
    "con.users.disable": ("停用", "Disable"),
    "con.users.enable": ("启用", "Enable"),
    "con.users.unlock": ("解锁", "Unlock"),
    "con.users.confirm_disable": ("确定停用该账户？其登录会话将全部结束。",
                                  "Disable this account? All its sessions end."),
    "con.users.add": ("添加用户", "Add a user"),
    "con.users.submit": ("添加", "Add"),
    "con.users.done.disabled": ("账户已停用。", "Account disabled."),
    "con.users.done.enabled": ("账户已启用。", "Account enabled."),
    "con.users.done.unlocked": ("账户已解锁。", "Account unlocked."),
    "con.users.view_only": ("您可查看账户；账户管理由运维人员进行。", "You may view accounts; operators manage them."),
    "con.users.filter": ("筛选", "Filter"),
    "role.clinician": ("医生", "clinician"),
    "role.commission": ("卫健委", "commission"),
    "role.auditor": ("审计员", "auditor"),
    "role.operator": ("运维", "operator"),
    "role.committee": ("委员会委员", "committee member"),
    "role.institution": ("机构系统", "institution system"),
    "role.platform": ("平台引擎", "platform engine"),
    "role.resident": ("居民", "resident"),
    "role.delegate": ("代办人", "delegate"),
    # audit words (stored as codes: hutong.security.events; shown as words, the code on hover)
    "con.action.read": ("查看", "read"),
    "con.action.search": ("查询", "search"),
    "con.action.create": ("新建", "create"),
    "con.action.update": ("修改", "update"),
    "con.action.delete": ("删除", "delete"),
    "con.action.operation": ("操作", "operation"),
    "con.action.login": ("登录", "sign-in"),
    "con.action.otp": ("短信验证码", "SMS code"),
    "con.action.token": ("令牌", "token"),
    "con.action.break-glass": ("紧急授权", "break-glass"),
    "con.action.break-glass-review": ("紧急授权复核", "break-glass review"),
    "con.action.refuse": ("拒绝", "refusal"),
    "con.action.hl7": ("HL7 消息", "HL7 message"),
    "con.action.cda": ("CDA 文档", "CDA document"),
    "con.action.account-admin": ("账户管理", "account administration"),
    "con.purpose.break-glass": ("紧急授权", "break-glass"),
    "con.purpose.consent": ("居民授权", "consent"),
    "con.purpose.treatment": ("诊疗", "treatment"),
    "con.purpose.delegate": ("家人代办", "delegate"),
    "con.purpose.own-record": ("本人查看", "own record"),
    "con.purpose.own-institution": ("本机构记录", "own institution"),
    "con.purpose.identity": ("身份核对", "identity"),
    "con.purpose.directory": ("机构目录", "directory"),
    "con.purpose.platform": ("平台处理", "platform"),
    "con.purpose.audit": ("审计", "audit"),
    "con.req.break_glass": ("申请紧急授权", "break-glass claim"),
    "con.req.everything": ("调取全部档案", "whole record"),
    "con.req.record": ("医生工作站：查看档案", "clinician workspace: record"),
    "con.req.patient": ("医生工作站：访问前确认", "clinician workspace: access step"),
    "con.req.search": ("医生工作站：查找患者", "clinician workspace: patient search"),
    "con.req.document": ("医生工作站：查看文档", "clinician workspace: document"),
    "con.req.resident": ("居民门户", "resident portal"),
    "con.req.console": ("管理台", "console"),
    "con.req.fhir_read": ("数据接口：读取", "FHIR API: read"),
    "con.req.fhir_write": ("数据接口：写入", "FHIR API: write"),
    "con.req.auth": ("登录与令牌", "sign-in and tokens"),
    "con.req.other": ("其他请求", "other request"),
    "con.id.why.below": ("匹配权重介于复核阈值与自动关联阈值之间", "weight between the review and auto-link thresholds"),
    "con.id.why.digits": ("身份证号相差一两位（可能为录入错误）", "ID numbers differ by one or two digits (a typing slip?)"),
    "con.id.why.barred": ("人口学信息一致，但身份证号不同（均有效）",
                          "demographics agree, but different valid ID numbers"),
    "con.id.why.also": ("也与此人相符，但身份证号不同（均有效）", "also matches, but different valid ID numbers"),
    "con.id.why.other": ("需人工复核", "needs a human look"),
    "con.id.source_record": ("{org}的登记记录", "registration at {org}"),
    "con.name.unknown": ("（未知）", "(unknown)"),
})


# --------------------------------------------------------------------------- pure helpers


def mask_id_number(v: str) -> str:
    """An ID number as review screens show it: the region (6) and the last 4 characters."""
    return v[:6] + "*" * max(0, len(v) - 10) + v[-4:] if len(v) > 10 else "*" * len(v)


def mask_phone(v: str) -> str:
    """A phone number with its middle four digits hidden (139****5678)."""
    return v[:3] + "****" + v[7:] if len(v) >= 11 else v[:2] + "*" * max(0, len(v) - 2)


def masked(field_name: str, values: list[str]) -> list[str]:
    if field_name in ("id_number", "health_card", "passport"):
        return [mask_id_number(v) for v in values]
    if field_name == "phone":
        return [mask_phone(v) for v in values]
    return values


def beijing(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, REGION_TZ).strftime("%Y-%m-%d %H:%M")


def charts(rows: list[InstitutionRow], report: dict[str, Any], start: date, end: date) -> dict[str, Any]:
    """Chart.js configs: stacked bars of daily volume, lines of next-day share (%)."""
    labels = [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
    index = {d: i for i, d in enumerate(labels)}
    names = {r.code: r.name for r in rows}
    volume: dict[str, list[int]] = {}
    within: dict[str, list[int]] = {}
    known: dict[str, list[int]] = {}
    for d in report["days"]:
        code = d["institution"]
        i = index.get(d["date"])
        if i is None:
            continue
        for table in (volume, within, known):
            table.setdefault(code, [0] * len(labels))
        volume[code][i] += d["messages"]
        hist = d["delay_hours"]
        known[code][i] += sum(v for k, v in hist.items() if k != "unknown")
        within[code][i] += hist["lt1h"] + hist["lt6h"] + hist["lt24h"]
    styles = ("circle", "rect", "triangle", "rectRot", "star", "cross", "crossRot", "dash")
    bar = {"type": "bar", "data": {"labels": labels, "datasets": [
        {"label": names.get(code, code or "?"), "data": vals} for code, vals in sorted(volume.items())]},
        "options": {"responsive": True, "maintainAspectRatio": False, "animation": False,
                    "scales": {"x": {"stacked": True}, "y": {"stacked": True, "beginAtZero": True,
                                                               "ticks": {"precision": 0}}}}}
    line = {"type": "line", "data": {"labels": labels, "datasets": [
        {"label": names.get(code, code or "?"), "spanGaps": True, "pointStyle": styles[n % len(styles)],
         "pointRadius": 4,
         "data": [round(100 * w / k, 1) if k else None for w, k in zip(within[code], known[code], strict=True)]}
        for n, code in enumerate(sorted(within))]},
        "options": {"responsive": True, "maintainAspectRatio": False, "animation": False,
                    "scales": {"y": {"min": 0, "max": 100}}}}
    return {"volume": bar, "timely": line}


def _clean(v: str | None, limit: int = 100) -> str | None:
    v = (v or "").strip()
    return v[:limit] if v else None


def _day_ms(v: str | None, name: str) -> int | None:
    """A YYYY-MM-DD form field as epoch ms of its Beijing midnight (HT-0145 otherwise)."""
    if not v:
        return None
    try:
        d = date.fromisoformat(v)
    except ValueError:
        raise InvalidRequest("HT-0145", f"{name} must be a date (YYYY-MM-DD)") from None
    return int(datetime(d.year, d.month, d.day, tzinfo=REGION_TZ).timestamp() * 1000)


def _int_param(v: str | None, name: str) -> int | None:
    if not v:
        return None
    if not v.isdigit() or len(v) > 18:
        raise InvalidRequest("HT-0145", f"{name} must be a positive integer")
    return int(v)


def _done(request: Request, allowed: tuple[str, ...]) -> str | None:
    """The outcome notice a redirect asked for (known words only)."""
    v = request.query_params.get("done")
    return v if v in allowed else None


# The last message's kind in words beside its code (HL7 v2.5 table 0076/0003 events; the
# WS/T 500 document types): an integration engineer reads the code, everyone else the words.
HL7_KINDS = {"ADT^A01": "入院登记", "ADT^A02": "转科", "ADT^A03": "出院", "ADT^A04": "门诊登记",
             "ADT^A08": "信息更新", "ADT^A40": "合并患者", "ORU^R01": "检验检查结果", "ORM^O01": "医嘱"}


def kind_label(kind: str | None) -> str:
    """A message kind ("ADT^A04", a WS/T 500 type code like "C0002") in words, "" when unknown."""
    if not kind:
        return ""
    from hutong.ingest.cda.doctypes import BY_CODE

    doc = BY_CODE.get(kind)
    return doc.title if doc is not None else HL7_KINDS.get(kind[:7], "")


def review_reason(reason: str | None) -> str:
    """The message key of an MPI review reason (hutong.mpi.matcher stores English sentences)."""
    r = reason or ""
    if r == "probable match below the auto-link threshold":
        return "con.id.why.below"
    if r.startswith("probable match; ID numbers differ"):
        return "con.id.why.digits"
    if r.startswith("demographics agree, but"):
        return "con.id.why.barred"
    if r.startswith("also matches, but"):
        return "con.id.why.also"
    return "con.id.why.other"


def request_words(interaction: str) -> str:
    """The message key saying in words what an audited request was (the request line stays beside it)."""
    method, _, path = interaction.partition(" ")
    for needle, key in (("$break-glass", "con.req.break_glass"), ("$everything", "con.req.everything"),
                        ("/clinician/patient/{person}/record", "con.req.record"),
                        ("/clinician/patient/", "con.req.patient"), ("/clinician/search", "con.req.search"),
                        ("/clinician/document/", "con.req.document"), ("/resident", "con.req.resident"),
                        ("/console", "con.req.console"), ("/auth/", "con.req.auth"), ("/signin", "con.req.auth")):
        if needle in path:
            return key
    if path.startswith("/fhir"):
        return "con.req.fhir_read" if method in ("GET", "HEAD") else "con.req.fhir_write"
    return "con.req.other"


def mask_name(name: str) -> str:
    """A person's name as lists show it: the family name, the rest hidden (张*明 -> 张**)."""
    return name[:1] + "*" * max(1, len(name) - 1) if name else ""


class Names:
    """Names where the audit trail and the account table store ids: accounts by
    their display name, institutions (by code or Organization id) by name,
    golden persons by their masked name.  One per request; lookups cached."""

    def __init__(self, accounts: Accounts, repo: Any, orgs: list[dict[str, Any]]) -> None:
        self._accounts = accounts
        self._repo = repo
        self._orgs: dict[str, str] = {}
        for o in orgs:
            name = str(o.get("name") or "")
            self._orgs[o["id"]] = name
            for i in o.get("identifier") or ():
                if i.get("value"):
                    self._orgs[str(i["value"])] = name
        self._people: dict[str, str] = {}

    def account(self, account_id: str | None, display: str | None = None) -> str:
        if display:
            return display
        a = self._accounts.get(account_id) if account_id else None
        if a is None:
            return ""
        if not (a.display or a.username) and a.person_id:  # a resident: their (masked) name
            return self.person(a.person_id)
        return a.display or a.username or ""

    def org(self, key: str | None) -> str:
        return self._orgs.get(key or "", "") if key else ""

    def person(self, person_id: str) -> str:
        if person_id not in self._people:
            stored = self._repo.read("Patient", person_id)
            name = ""
            if stored is not None and stored.body is not None:
                names = orjson.loads(stored.body).get("name") or [{}]
                n = names[0]
                name = n.get("text") or (n.get("family") or "") + "".join(n.get("given") or [])
            self._people[person_id] = mask_name(name)
        return self._people[person_id]


def is_claim(e: AuditEntry) -> bool:
    """The break-glass claim itself (with its written reason), not a later read under it."""
    return "$break-glass" in e.interaction or (e.action == "break-glass")


# --------------------------------------------------------------------------- routes


def register(app: FastAPI, pages: Pages, platform: Platform) -> None:
    """Add the console's routes to ``app`` (wired in hutong.web.app.create_app)."""
    from hutong.web.ui import identity_review  # the review screens' words (i18n) and helpers

    repo = platform.repo

    def audit_log() -> AuditLog:
        a: AuditLog = platform.audit
        return a

    def accounts() -> Accounts:
        a: Accounts = platform.authenticator.tokens.accounts
        return a

    def service(request: Request) -> FhirService:
        base = platform.settings.base_url or str(request.base_url).rstrip("/") + "/fhir"
        return FhirService(repo, base, access_of(request))

    def nav(access: Access) -> list[tuple[str, str]]:
        role = access.role
        items = []
        if role in INSTITUTIONS_ROLES:
            items.append(("/console", "con.nav.institutions"))
        if role in IDENTITY_ROLES:
            items.append(("/console/identity", "con.nav.identity"))
        if role in AUDIT_ROLES:
            items.append(("/console/audit", "con.nav.audit"))
        if role in BREAK_GLASS_ROLES:
            items.append(("/console/break-glass", "con.nav.break_glass"))
        if role in USERS_VIEW_ROLES:
            items.append(("/console/users", "con.nav.users"))
        if role in recognition_dashboard.DASHBOARD_ROLES:
            items.append(("/console/recognition", "con.nav.recognition"))
        if role in recognition_dashboard.RULES_ROLES:
            items.append(("/console/rules", "con.nav.rules"))
        return items

    def render(request: Request, template: str, **ctx: Any) -> Response:
        return pages.render(request, template, nav=nav(access_of(request)), **ctx)

    def names(request: Request) -> Names:
        """Names for the ids this page shows.  The directory is read as the
        platform (auditors' and operators' tokens hold no Organization scope;
        institution names are directory data every signed-in caller may see)
        and golden persons only for their name, of persons the audit rows on
        the page already name."""
        parsed = fsearch.parse("Organization", [("_count", "1000")], base_url="", strict=True)
        orgs = [orjson.loads(s.body) for s in repo.search(parsed.query).matches if s.body is not None]
        return Names(accounts(), repo, orgs)

    async def render_named(request: Request, template: str, **ctx: Any) -> Response:
        """Render with ``names`` (ids to names, read while rendering: off the event loop)."""
        return await run_in_threadpool(lambda: render(request, template, names=names(request),
                                                      request_words=request_words, **ctx))

    def organizations(request: Request) -> list[dict[str, Any]]:
        """The registered Organizations, through the FHIR service (directory
        data; one page of up to 1,000: a region has hundreds of institutions)."""
        bundle = orjson.loads(service(request).search("Organization", [("_count", "1000")], {}).body or b"{}")
        return [e["resource"] for e in bundle.get("entry") or () if "resource" in e]

    counts_cache: list[tuple[float, RecordCounts]] = []

    def cached_counts(request: Request) -> RecordCounts:
        """:func:`record_counts`, recomputed at most every :data:`COUNTS_TTL_S`
        (about 0.6 s on the 110k-resource demo region, SQLite).  A statistic that
        tolerates lag: a hot standby may compute it (hutong.web.read_routing)."""
        now = time.monotonic()
        if not counts_cache or now - counts_cache[0][0] >= COUNTS_TTL_S:
            counts_cache[:] = [(now, read_routing.read(request, platform, record_counts))]
        return counts_cache[0][1]

    # 互认 dashboard and rule management (issue 14, item 5): hutong.web.ui.recognition_dashboard
    recognition_dashboard.register(app, pages, platform, render)

    # ------------------------------------------------------------ institutions
    @app.get("/console")
    async def institutions(request: Request) -> Response:
        access = access_of(request)
        if access.role in AUDIT_ROLES:
            return RedirectResponse("/console/break-glass", status_code=303)
        if access.role in USERS_MANAGE_ROLES:
            return RedirectResponse("/console/users", status_code=303)
        if access.role == Role.COMMITTEE:  # the committee's pages: the rules (issue 14, item 5)
            return RedirectResponse("/console/rules", status_code=303)
        access.require_role(*INSTITUTIONS_ROLES, what="the institutions dashboard")
        days = 30 if request.query_params.get("days") == "30" else 7
        now_ms = access.clock()
        end = datetime.fromtimestamp(now_ms / 1000, REGION_TZ).date()
        start = end - timedelta(days=days - 1)

        def load() -> tuple[list[InstitutionRow], dict[str, Any], bool]:
            orgs = organizations(request)
            # The inbox's rollup, lag-tolerant too (hutong.web.read_routing); the role was checked above.
            report = read_routing.read(request, platform, lambda r: timeliness(r, start=start, end=end))
            rows = institution_rows(orgs, report, cached_counts(request), now_ms)
            return rows, charts(rows, report, start, end), bool(report["days"])

        rows, chart_specs, any_messages = await run_in_threadpool(load)
        return render(request, "console/institutions.html", rows=rows, charts=chart_specs, days=days,
                      periods=PERIODS, any_messages=any_messages, icons=STATUS_ICON, beijing=beijing,
                      online_hours=ONLINE_HOURS, silent_hours=SILENT_HOURS, kind_label=kind_label)

    # ------------------------------------------------------------ identity review
    def org_names(request: Request) -> dict[str, str]:
        return {o["id"]: o.get("name") or o["id"] for o in organizations(request)}

    @app.get("/console/identity")
    async def identity(request: Request) -> Response:
        access = access_of(request)
        access.require_role(*IDENTITY_ROLES, what="the identity review queue")
        status = request.query_params.get("status", "open")
        if status not in identity_review.LISTS:
            raise InvalidRequest("HT-0041", "status must be open, linked, rejected or unlinked")
        after = _int_param(request.query_params.get("after"), "after") or 0
        svc = service(request)

        def load() -> list[dict[str, Any]]:
            return review_view(request, access, svc.mpi.review_items(status=status, limit=PAGE, after=after))

        items = await run_in_threadpool(load)
        return render(request, "console/identity.html", items=items, queue=status, page=PAGE, review_reason=review_reason,
                      done=_done(request, ("linked", "rejected", "unlinked")), beijing=beijing,
                      **identity_review.helpers())

    @app.get("/console/identity/{review_id}")
    async def identity_item(review_id: int, request: Request) -> Response:
        """One review item with its whole decision history (issue 16, item 6)."""
        access = access_of(request)
        access.require_role(*IDENTITY_ROLES, what="the identity review queue")
        svc = service(request)

        def load() -> dict[str, Any]:
            item = svc.mpi.review_item(review_id)
            if item is None:
                raise NotFound("HT-0442", f"review item {review_id} not found")
            return review_view(request, access, [item])[0]

        item = await run_in_threadpool(load)
        return render(request, "console/identity_item.html", it=item, review_reason=review_reason, beijing=beijing,
                      **identity_review.helpers())

    def review_view(request: Request, access: Access, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Review items as the pages show them: institutions by name, identifiers masked,
        deciders by their account's name; each item an identity read of both persons."""
        names = org_names(request)
        people = Names(accounts(), repo, [])
        unknown = i18n.Translator(pages.lang(request))("con.id.who_unknown")
        for it in items:
            # Reviewing a pair is an identity read of both: the audit row names them.
            for pid in (it["patient"], it["person"]):
                person = access.person_of(pid)
                if person:
                    access.persons.add(person)
            it["source_org"] = names.get(access.managing_org(it["patient"]) or "", "")
            it["person_orgs"] = sorted({names.get(access.managing_org(p) or "", "")
                                        for p in access.patients_of(it["person"]) if p != it["patient"]}
                                       - {""})
            it["now_person"] = access.person_of(it["patient"])
            comp = it.get("comparison")
            if comp:
                for f in comp["fields"]:
                    f["source"] = masked(f["field"], list(f["source"]))
                    f["person"] = masked(f["field"], list(f["person"]))
            for h in it["history"]:
                h["who"] = people.account(h["actor"]) or unknown
        access.purposes.add("identity")
        return items

    def _open_item(svc: FhirService, review_id: int) -> dict[str, Any]:
        """The open review item ``review_id`` (HT-0056 when there is none, HT-0058 when decided)."""
        items = svc.mpi.review_items(status="open", limit=1, after=review_id - 1)
        if not items or items[0]["id"] != review_id:
            raise Conflict("HT-0058", f"review item {review_id} is not open (decided already, or unknown)")
        return items[0]

    @app.post("/console/identity/{review_id}/link")
    async def identity_link(review_id: int, request: Request) -> Response:
        access = access_of(request)
        access.require_role(*IDENTITY_ROLES, what="identity stewardship (link)")
        form = await form_of(request)
        svc = service(request)

        def go() -> None:
            item = _open_item(svc, review_id)
            access.persons.update(p for p in (access.person_of(item["patient"]), item["person"]) if p)
            svc.mpi.link(item["patient"], item["person"], actor=access.principal.account_id,
                         reason=_clean(form.get("note"), 500))
            access.purposes.add("identity")

        await run_in_threadpool(go)
        return RedirectResponse("/console/identity?done=linked", status_code=303)

    @app.post("/console/identity/{review_id}/reject")
    async def identity_reject(review_id: int, request: Request) -> Response:
        access = access_of(request)
        access.require_role(*IDENTITY_ROLES, what="identity stewardship (reject)")
        form = await form_of(request)
        note = identity_review.required_note(form)
        svc = service(request)

        def go() -> None:
            item = _open_item(svc, review_id)
            access.persons.update(p for p in (access.person_of(item["patient"]), item["person"]) if p)
            svc.mpi.reject(review_id, actor=access.principal.account_id, reason=note)
            access.purposes.add("identity")

        await run_in_threadpool(go)
        return RedirectResponse("/console/identity?done=rejected", status_code=303)

    @app.post("/console/identity/{review_id}/unlink")
    async def identity_unlink(review_id: int, request: Request) -> Response:
        """Undo a linked item: its record becomes a person of its own, the item moves to
        已解除关联 with who, when and why (a note is required: HT-0440).  Only an item that
        is linked and whose record is with its person now (HT-0441 otherwise)."""
        access = access_of(request)
        access.require_role(*IDENTITY_ROLES, what="identity stewardship (unlink)")
        form = await form_of(request)
        note = identity_review.required_note(form)
        svc = service(request)

        def go() -> None:
            item = svc.mpi.review_item(review_id)
            if item is None or item["status"] != "linked":
                raise Conflict("HT-0441", f"review item {review_id} is not linked")
            patient, person = item["patient"], item["person"]
            access.persons.add(person)
            svc.mpi.unlink(patient, actor=access.principal.account_id, reason=note, from_person=person)
            after = svc.mpi.person_of(patient)
            if after:
                access.persons.add(after)
            access.purposes.add("identity")

        await run_in_threadpool(go)
        return RedirectResponse("/console/identity?status=unlinked&done=unlinked", status_code=303)

    # ------------------------------------------------------------ audit search
    @app.get("/console/audit")
    async def audit_search(request: Request) -> Response:
        access = access_of(request)
        access.require_role(*AUDIT_ROLES, what="audit search")
        q = request.query_params
        outcome = q.get("outcome") or None
        if outcome is not None and outcome not in OUTCOMES:
            raise InvalidRequest("HT-0145", "outcome must be 0, 4, 8 or 12 (audit-event-outcome)")
        f = {"account": _clean(q.get("account")), "person": _clean(q.get("person"), 64),
             "action": _clean(q.get("action"), 32), "outcome": outcome, "purpose": _clean(q.get("purpose"), 32),
             "since": q.get("since") or "", "until": q.get("until") or ""}
        since, until = _day_ms(f["since"], "since"), _day_ms(f["until"], "until")
        after = _int_param(q.get("after"), "after")
        entries = await run_in_threadpool(lambda: audit_log().search(
            account=f["account"], person=f["person"], action=f["action"], outcome=f["outcome"],
            purpose=f["purpose"], since=since, until=until, limit=PAGE, after_seq=after))
        older = None
        if len(entries) == PAGE:
            older = "/console/audit?" + urlencode([(k, v) for k, v in q.multi_items() if k != "after"]
                                                  + [("after", str(entries[-1].seq))])
        return await render_named(request, "console/audit.html", entries=entries, f=f, older=older,
                                  outcomes=OUTCOMES, beijing=beijing)

    # ------------------------------------------------------------ break-glass review
    @app.get("/console/break-glass")
    async def break_glass(request: Request) -> Response:
        access = access_of(request)
        access.require_role(*BREAK_GLASS_ROLES, what="the break-glass review list")
        q = request.query_params
        show = q.get("show", "pending" if access.role in AUDIT_ROLES else "all")
        if show not in ("pending", "reviewed", "all"):
            raise InvalidRequest("HT-0145", "show must be pending, reviewed or all")
        every = q.get("every") == "1"
        after = _int_param(q.get("after"), "after")
        reviewed = {"pending": False, "reviewed": True, "all": None}[show]
        # Claims are a few among the accesses they opened: read wider, keep a page.
        batch = 500

        def load() -> tuple[list[Any], int | None]:
            out: list[Any] = []
            cursor = after
            for _ in range(20):
                got = audit_log().break_glass_list(reviewed, limit=batch, after_seq=cursor)
                for item in got:
                    if every or is_claim(item.entry):
                        out.append(item)
                        if len(out) == PAGE:
                            return out, item.entry.seq
                if len(got) < batch:
                    return out, None
                cursor = got[-1].entry.seq
            return out, cursor

        items, last = await run_in_threadpool(load)
        older = None
        if last is not None:
            older = "/console/break-glass?" + urlencode([(k, v) for k, v in q.multi_items() if k != "after"]
                                                        + [("after", str(last))])
        return await render_named(request, "console/break_glass.html", items=items, show=show, every=every,
                                  older=older, may_review=access.role in AUDIT_ROLES, verdicts=VERDICTS,
                                  beijing=beijing, is_claim=is_claim, done=_done(request, ("1",)))

    @app.post("/console/break-glass/{seq}/review")
    async def break_glass_review(seq: int, request: Request) -> Response:
        access = access_of(request)
        access.require_role(*AUDIT_ROLES, what="reviewing break-glass accesses")
        form = await form_of(request)
        verdict = form.get("verdict", "")
        note = (form.get("note") or "").strip()
        await run_in_threadpool(audit_log().review_break_glass, seq, access.principal, verdict, note)
        return RedirectResponse("/console/break-glass?done=1", status_code=303)

    # ------------------------------------------------------------ users and roles
    def list_users(role: str) -> list[Account]:
        if role == "staff":
            return [a for a in accounts().list_accounts() if a.role not in (Role.RESIDENT, Role.DELEGATE)]
        return accounts().list_accounts(Role(role))

    def user_roles() -> list[str]:
        return sorted(str(r) for r in USER_ROLES)

    def users_page(request: Request, access: Access, role: str, form: account_form.AccountForm | None = None,
                   status: int = 200) -> Response:
        users = list_users(role)
        may_manage = access.role in USERS_MANAGE_ROLES
        if may_manage and form is None:
            form = account_form.blank(repo, access.principal)
        return pages.render(request, "console/users.html", status=status, nav=nav(access), users=users,
                            names=names(request),
                            role=role, roles=["staff", *[str(r) for r in Role if r != Role.PLATFORM]],
                            user_roles=user_roles(), may_manage=may_manage,
                            now=access.clock(), f=form,
                            done=_done(request, ("disabled", "enabled", "unlocked")),
                            beijing=beijing, me=access.principal.account_id)

    @app.get("/console/users")
    async def users(request: Request) -> Response:
        access = access_of(request)
        access.require_role(*USERS_VIEW_ROLES, what="the account list")
        role = request.query_params.get("role", "staff")
        if role != "staff" and role not in {str(r) for r in Role}:
            raise InvalidRequest("HT-0135", "unknown role")
        return await run_in_threadpool(users_page, request, access, role)

    @app.post("/console/users/add")
    async def users_add(request: Request) -> Response:
        access = access_of(request)
        access.require_role(*USERS_MANAGE_ROLES, what="adding accounts")
        form = await form_of(request)

        def go() -> Response:
            # Searching, choosing a doctor and every mistake re-render the form with what was
            # typed (hutong.web.ui.account_form); only a form without errors adds the account.
            f = account_form.read(repo, accounts(), access.principal, form)
            if f.errors or f.action != "add":
                return users_page(request, access, "staff", form=f, status=400 if f.errors else 200)
            role = Role(f.values["role"])
            org = account_form.organization_of(f)
            doctor = f.doctor if role == Role.CLINICIAN else None
            try:
                account, password, uri = accounts().add_user(
                    f.values["username"], role=role, name=f.values["name"],
                    organization=org.code if org else None, organization_id=org.id if org else None,
                    practitioner_id=doctor.practitioner_id if doctor else None,
                    practitioner_role_id=doctor.role_id if doctor else None)
            except InvalidRequest as e:
                if e.code != "HT-0135":
                    raise
                f.errors["username"] = "HT-0461"  # taken meanwhile, by another operator
                return users_page(request, access, "staff", form=f, status=400)
            changed(access, account.id, f"added ({account.role})")
            # Rendered, not redirected: the secrets appear once, stay out of URLs and are not cached.
            return pages.render(request, "console/enrol.html", nav=nav(access), account=account,
                                password=password, enrol=enrolment(uri, i18n.Translator(pages.lang(request))(
                                    "con.enrol.qr")), names=names(request))

        return await run_in_threadpool(go)

    def _target(account_id: str) -> Account:
        a = accounts().get(account_id)
        if a is None:
            raise NotFound("HT-0135", "no such account")
        return a

    def changed(access: Access, account_id: str, change: str) -> None:
        """An audit record naming the account changed (the request's own record
        carries the route template only, not which account)."""
        audit_log().record(AuditRecord(action="account-admin", principal=access.principal,
                                       interaction="console", extra={"account": account_id, "change": change}))

    @app.post("/console/users/{account_id}/status")
    async def users_status(account_id: str, request: Request) -> Response:
        access = access_of(request)
        access.require_role(*USERS_MANAGE_ROLES, what="disabling or enabling accounts")
        form = await form_of(request)
        active = form.get("active") == "1"

        def go() -> None:
            a = _target(account_id)
            if not active and a.id == access.principal.account_id:
                raise Forbidden("HT-0104", "you may not disable your own account")
            accounts().set_status(a.id, active)
            # This process refuses the account's tokens at once (others within the 2 s cache).
            platform.authenticator.tokens.invalidate()
            changed(access, a.id, "enabled" if active else "disabled")

        await run_in_threadpool(go)
        return RedirectResponse(f"/console/users?done={'enabled' if active else 'disabled'}", status_code=303)

    @app.post("/console/users/{account_id}/unlock")
    async def users_unlock(account_id: str, request: Request) -> Response:
        access = access_of(request)
        access.require_role(*USERS_MANAGE_ROLES, what="unlocking accounts")
        await form_of(request)

        def go() -> None:
            accounts().unlock(_target(account_id).id)
            changed(access, account_id, "unlocked")

        await run_in_threadpool(go)
        return RedirectResponse("/console/users?done=unlocked", status_code=303)
