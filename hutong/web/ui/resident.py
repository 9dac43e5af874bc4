"""The resident portal, 健康档案随身带 (issue 7; seeds 001 and 003).

A resident (or a family delegate / guardian acting for them) sees their own
record across every institution in plain words, keeps control of who else
may see it, sees who looked, and asks for corrections:

- ``GET /resident``: the record timeline (visits by date with institution and
  department, diagnoses, medicines, lab reports, allergies).
- ``GET /resident/labs``: lab reports; a value outside its reference range
  says so in words and with an arrow (偏高 ↑ / 偏低 ↓), never by colour alone.

Both record pages render :mod:`hutong.record`, the model the clinician
workspace renders too (one flag rule, one Encounter–Condition resolution).
- ``GET /resident/consents``; ``POST /resident/consents`` (grant to an
  institution or one doctor, or deny an institution) and
  ``POST /resident/consents/{id}/revoke``: FHIR Consent resources read by the
  policy (hutong.security.consent; consent.html R4).  Revoking sets the
  Consent's status to ``inactive`` (consent.html#status: no longer in force).
- ``GET /resident/delegates``: who acts for me, and whom I act for
  (hutong.security.accounts Delegation; issue 6: guardians of children under 14).
- ``GET /resident/access-log``: "谁看了我的档案" from the audit trail
  (hutong.security.audit.AuditLog.access_log), break-glass flagged with its reason.
- ``GET/POST /resident/corrections``: the right to have an item corrected
  (纠偏权, PIPL Art. 46) as a FHIR Task (task.html R4) owned by the institution
  that holds the item.

Every read and write goes through :class:`~hutong.fhir.service.FhirService`
with the request's own :class:`~hutong.security.policy.Access`, so the pages
see exactly what the resident's API token would, and every request is
audited by the gate like any other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse, Response

from hutong.errors import Forbidden, HutongError, InvalidRequest, NotFound
from hutong.fhir.service import FhirService
from hutong.fhir.validation import check_id
from hutong.platform import Platform
from hutong.record import LabReport, Record, load_record
from hutong.record.build import entry_label
from hutong.record.readers import clinical_date as _when
from hutong.record.readers import text as _text
from hutong.security import consent_authors
from hutong.security import corrections as correction_rules
from hutong.security.accounts import Account
from hutong.security.audit import AccessEntry, AuditLog
from hutong.security.policy import Access
from hutong.security.principal import Role
from hutong.store.repository import Repository
from hutong.systems import REGION_TZ
from hutong.web import read_routing
from hutong.web.ui import access_log as alog
from hutong.web.ui import avoided, correction_answers, i18n
from hutong.web.ui.pages import Pages, access_of, form_of
from hutong.web.ui.record import trend_chart

T = TypeVar("T")

TASK_SYSTEM = "https://fhir.hutong.dev/CodeSystem/task"
CORRECTION = "correction-request"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
# Sensitive categories a resident may open to someone specifically (hutong.security.sensitivity labels).
CATEGORIES = ("PSY", "HIV", "SEX")
DEFAULT_DAYS = 30
MAX_DAYS = 3650
LOG_PAGE = 240    # access-log rows a page shows, grouped (hutong.web.ui.access_log)
LOG_BATCH = 120   # rows read per audit query (own and family looks are skipped unless asked for)
VISIT_PAGE = 40
# Items a correction may be asked for, in the order the picker lists them.
CORRECTABLE = ("Condition", "AllergyIntolerance", "MedicationRequest", "DiagnosticReport", "Observation",
               "Encounter", "Immunization", "Procedure")

i18n.add({
    "res.title": ("我的健康档案", "My health record"),
    "res.nav": ("档案导航", "Record sections"),
    "res.nav.timeline": ("就诊记录", "Visits"),
    "res.nav.labs": ("检验报告", "Lab reports"),
    "res.nav.consents": ("授权管理", "Who may see my record"),
    "res.nav.delegates": ("家人代办", "Family and guardians"),
    "res.nav.log": ("谁看了我的档案", "Who looked at my record"),
    "res.nav.corrections": ("申请更正", "Ask for a correction"),
    "res.viewing": ("正在查看：", "Viewing the record of: "),
    "res.pick_person": ("查看谁的档案", "Whose record"),
    "res.show": ("查看", "Show"),
    "res.self": ("本人", "me"),
    "res.nothing": ("暂无记录。", "Nothing recorded yet."),
    "res.more": ("更早的记录", "Earlier records"),
    "res.newer": ("较新的记录", "Newer records"),
    "res.institution": ("医院/机构", "Hospital or clinic"),
    "res.department": ("科室", "Department"),
    "res.date": ("日期", "Date"),
    "res.visit": ("就诊", "Visit"),
    "res.diagnoses": ("诊断", "Diagnoses"),
    "res.medicines": ("用药", "Medicines"),
    "res.reports": ("检验检查", "Tests"),
    "res.allergies": ("过敏", "Allergies"),
    "res.no_allergies": ("没有过敏记录。", "No allergies recorded."),
    "res.abnormal_count": ("{n} 项异常", "{n} out of range"),
    "res.all_normal": ("全部正常", "all in range"),
    "res.visits_total": ("共 {n} 次就诊，来自 {m} 家医院/机构。", "{n} visits at {m} hospitals or clinics."),
    "res.masked": ("部分敏感记录（如精神心理、传染病、生殖健康）对代办人不显示。",
                   "Some sensitive records (mental health, infections, reproductive health) are not shown to "
                   "family delegates."),
    # labs
    "labs.title": ("检验报告", "Lab reports"),
    "labs.item": ("项目", "Test"),
    "labs.result": ("结果", "Result"),
    "labs.range": ("参考范围", "Normal range"),
    "labs.verdict": ("判断", "Reading"),
    "labs.only_abnormal": ("只看异常项目", "Only out-of-range results"),
    "labs.help": ("结果超出参考范围时，会标出“偏高 ↑”或“偏低 ↓”。如有疑问请咨询医生。",
                  "Results outside the normal range are marked “High ↑” or “Low ↓”. Ask your doctor "
                  "if anything worries you."),
    "labs.trend": ("变化趋势", "Trend"),
    "labs.trend_of": ("{name} 的变化趋势", "Trend of {name}"),
    "labs.back": ("返回全部报告", "Back to all reports"),
    "labs.reported": ("报告时间", "Reported"),
    # consents
    "consent.title": ("授权管理", "Who may see my record"),
    "con.help": ("您看病的医院可以查看您在本院的记录；其他医院的医生在为您诊疗的 90 天内也可查看。"
                 "您可以在这里额外授权某家医院或某位医生查看您的档案，或拒绝某家医院查看。",
                 "The hospital that treats you sees its own records of you; doctors at another hospital "
                 "that treated you in the last 90 days may see the rest. Here you can also allow one "
                 "hospital or one doctor to see your record, or refuse a hospital."),
    "con.list": ("我的授权", "My permissions"),
    "con.none": ("您还没有设置任何授权。", "You have not given or refused any permission yet."),
    "con.who": ("对象", "Who"),
    "con.what": ("内容", "What"),
    "con.period": ("有效期", "Valid"),
    "con.status": ("状态", "Status"),
    "con.active": ("生效中", "In force"),
    "con.inactive": ("已撤销", "Revoked"),
    "con.expired": ("已过期", "Expired"),
    "con.permit": ("允许查看", "May see"),
    "con.deny": ("拒绝查看", "Refused"),
    "con.ordinary": ("普通记录", "ordinary records"),
    "con.revoke": ("撤销", "Revoke"),
    "con.revoke_confirm": ("确定撤销这项授权吗？", "Revoke this permission?"),
    "con.revoked": ("授权已撤销。", "The permission was revoked."),
    "con.granted": ("已保存。", "Saved."),
    "con.new": ("新增授权", "Give or refuse a permission"),
    "con.step1": ("第一步：选择医院/机构", "Step 1: choose the hospital or clinic"),
    "con.choose_org": ("选择", "Choose"),
    "con.step2": ("第二步：授权内容", "Step 2: the permission"),
    "con.org": ("医院/机构", "Hospital or clinic"),
    "con.doctor": ("医生（可选：不选则为整个医院）", "Doctor (optional: leave empty for the whole hospital)"),
    "con.whole_org": ("整个医院/机构", "The whole hospital or clinic"),
    "con.kind": ("允许还是拒绝", "Allow or refuse"),
    "con.kind_permit": ("允许查看我的档案", "Allow them to see my record"),
    "con.kind_deny": ("拒绝该医院查看我的档案（急救除外）", "Refuse this hospital (except in an emergency)"),
    "con.days": ("有效天数", "For how many days"),
    "con.cats": ("同时允许查看以下敏感记录（默认不包含）", "Also allow these sensitive records (not included unless ticked)"),
    "con.cat.PSY": ("精神心理（心理咨询、精神科诊疗）", "Mental health (psychiatry, counselling)"),
    "con.cat.HIV": ("艾滋病及相关检测", "HIV and related tests"),
    "con.cat.SEX": ("生殖与性健康", "Reproductive and sexual health"),
    "con.save": ("保存", "Save"),
    "con.until": ("至", "until"),
    "con.open_ended": ("长期", "no end date"),
    # who set a permission, and whether it is in force (issue 12: hutong.security.consent_authors)
    "conauth.by": ("设置人", "Set by"),
    "conauth.resident": ("本人", "you"),
    "conauth.delegate": ("家人/监护人代办", "a family member or guardian, for you"),
    "conauth.institution_doc": ("{org}（凭您签署的书面授权登记）", "{org}, on your signed written instruction"),
    "conauth.institution": ("{org}代为登记", "{org}, on your behalf"),
    "conauth.platform": ("区域平台导入", "the regional platform (imported)"),
    "conauth.unknown": ("来源不明", "unknown"),
    "conauth.not_in_force": ("未生效", "Not in force"),
    "conauth.why.unknown-author": ("无法确认这项授权是您本人或您的代办人设置的，因此不起作用。如您不认识它，请撤销；"
                                   "如确有需要，请在本页自己设置。",
                                   "Nobody can confirm that you or your delegate set this, so it has no effect. "
                                   "Revoke it if you do not recognise it; set your own below if you want it."),
    "conauth.why.undocumented": ("没有附上您签署的书面授权，因此不起作用。如您不认识它，请撤销。",
                                 "Your signed written instruction is not attached, so it has no effect. Revoke it "
                                 "if you do not recognise it."),
    "conauth.why.not-notified": ("还没有短信通知到您，因此不起作用。如您不认识它，请撤销。",
                                 "You have not been told of it by SMS yet, so it has no effect. Revoke it if you "
                                 "do not recognise it."),
    "conauth.why.other-actor": ("医院/机构只能为其自身登记授权，这项授权涉及其他医院/机构，因此不起作用。"
                                "请撤销，或在本页自己设置。",
                                "A hospital may only record permissions about itself; this one is about others, so "
                                "it has no effect. Revoke it, or set your own below."),
    "conauth.delegate_no_cats": ("敏感类别（如精神心理、艾滋病、生殖健康）对代办人不显示，也只有本人才能授权。",
                                 "Sensitive categories (mental health, HIV, reproductive health) are hidden from "
                                 "delegates and can only be opened by the resident."),
    "conauth.narrowed": ("其中的敏感类别（如精神心理、艾滋病、生殖健康）只有您本人才能授权，这一部分不起作用。",
                         "Sensitive categories (mental health, HIV, reproductive health) can only be opened by you; "
                         "that part has no effect."),
    # delegates
    "del.title": ("家人代办", "Family and guardians"),
    "del.help": ("家人或监护人可以代您查看档案（14 岁以下儿童由监护人代办）。代办人看不到精神心理、传染病、生殖健康等敏感记录。",
                 "A family member or guardian may see your record for you (a guardian for children under 14). "
                 "Delegates do not see sensitive records such as mental health, infections or reproductive health."),
    "del.for_me": ("谁可以代我查看", "Who may act for me"),
    "del.i_act_for": ("我可以代谁查看", "Whom I act for"),
    "del.none_for_me": ("没有人代您办理。", "Nobody acts for you."),
    "del.none_i_act": ("您没有代办任何人的档案。", "You do not act for anyone."),
    "del.name": ("姓名", "Name"),
    "del.relationship": ("关系", "Relationship"),
    "del.until": ("到期", "Until"),
    "del.family": ("家人", "Family member"),
    "del.guardian": ("监护人（14 岁以下）", "Guardian (child under 14)"),
    "del.no_end": ("长期（直至撤销）", "Until ended"),
    "del.end": ("结束代办", "End this delegation"),
    "del.end_confirm": ("确定结束此人的代办权限吗？", "End this person's delegation?"),
    "del.ended": ("已结束代办，对方将无法再查看您的档案。", "Delegation ended: they can no longer see your record."),
    "del.open": ("查看档案", "Open record"),
    "del.end_note": ("结束代办后，对方立即不能再查看您的档案；如需新增代办人，请联系平台服务台办理。",
                     "Once ended, they can no longer see your record at once; to add a delegate, contact the "
                     "platform's service desk."),
    # access log
    "log.title": ("谁看了我的档案", "Who looked at my record"),
    "log.help": ("每一次查看都会被记录，包括时间、医院、人员和理由。", "Every look is recorded: when, where, who and why."),
    "log.time": ("时间", "When"),
    "log.org": ("医院/机构", "Hospital or body"),
    "log.who": ("人员", "Who"),
    "log.why": ("理由", "Why"),
    "log.result": ("结果", "Result"),
    "log.ok": ("已查看", "Seen"),
    "log.refused": ("被拒绝", "Refused"),
    "log.failed": ("未完成", "Not completed"),
    "log.include_mine": ("包括我自己和家人的查看", "Include my own and my family's looks"),
    "log.filter": ("筛选", "Filter"),
    "log.glass": ("紧急授权（破窗）", "Emergency access (break-glass)"),
    "log.glass_reason": ("医生填写的理由：", "Reason given by the doctor: "),
    "log.older": ("更早的记录", "Older entries"),
    "log.first": ("最新记录", "Newest entries"),
    "log.empty": ("暂无其他人查看您的档案。", "Nobody else has looked at your record."),
    "purpose.own-record": ("本人查看", "You"),
    "purpose.delegate": ("家人代办", "Your family delegate"),
    "purpose.own-institution": ("在本院就诊", "You were treated there"),
    "purpose.treatment": ("正在为您诊疗", "Treating you"),
    "purpose.consent": ("您的授权", "Your permission"),
    "purpose.break-glass": ("紧急授权（破窗）", "Emergency access (break-glass)"),
    "purpose.identity": ("核对身份", "Checking your identity"),
    "purpose.platform": ("平台数据处理", "Platform processing"),
    "purpose.directory": ("查询机构目录", "Directory lookup"),
    "purpose.none": ("—", "—"),
    "action.read": ("查看", "read"),
    "action.search": ("查询", "search"),
    "action.operation": ("查看全部档案", "whole record"),
    "action.create": ("新建", "create"),
    "action.update": ("修改", "update"),
    "action.refuse": ("被拒绝", "refused"),
    "action.break-glass": ("紧急授权", "break-glass"),
    # corrections
    "cor.title": ("申请更正", "Ask for a correction"),
    "cor.help": ("如果档案中的某项记录有误，您可以申请更正，记录所在的医院会答复您（《个人信息保护法》第四十六条）。",
                 "If something in your record is wrong you can ask for it to be corrected; the hospital that "
                 "holds it will answer you (Personal Information Protection Law, Art. 46)."),
    "cor.item": ("哪一项有误", "Which item is wrong"),
    "cor.pick": ("请选择", "Please choose"),
    "cor.text": ("哪里不对，应该是什么", "What is wrong, and what it should be"),
    "cor.submit": ("提交申请", "Send the request"),
    "cor.sent": ("申请已提交，医院答复后会显示在下方。", "Sent. The hospital's answer will appear below."),
    "cor.mine": ("我的更正申请", "My correction requests"),
    "cor.none": ("您还没有提交过更正申请。", "You have not asked for any correction."),
    "cor.submitted": ("提交时间", "Sent"),
    "cor.answer": ("医院答复", "Answer"),
    "cor.waiting": ("等待答复", "Waiting for an answer"),
    "cor.status.requested": ("已提交", "Sent"),
    "cor.status.received": ("医院已收到", "Received"),
    "cor.status.accepted": ("已受理", "Accepted"),
    "cor.status.in-progress": ("处理中", "In progress"),
    "cor.status.completed": ("已更正", "Corrected"),
    "cor.status.rejected": ("未予更正", "Not corrected"),
    "cor.status.cancelled": ("已取消", "Cancelled"),
    "cor.status.ready": ("已受理", "Accepted"),
    "cor.status.on-hold": ("需要您补充说明", "The hospital asks you for more"),
    "cor.status.failed": ("处理失败", "Failed"),
    "cor.status.draft": ("草稿", "Draft"),
    "cor.status.entered-in-error": ("已作废", "Withdrawn"),
    "cor.unavailable": ("暂时无法提交更正申请：", "Correction requests cannot be sent right now: "),
    "cor.notice": ("您的更正申请已有答复。", "Your correction request has an answer."),
    "cor.notice_go": ("查看答复", "See the answer"),
    "cor.asked": ("医院的问题", "The hospital asks"),
    "cor.reply": ("补充说明", "Add information"),
    "cor.reply_go": ("提交补充说明", "Send"),
    "cor.replied": ("补充说明已提交，医院会继续处理。", "Sent; the hospital continues with your request."),
    "cor.my_note": ("我的补充", "I added"),
    "type.Condition": ("诊断", "Diagnosis"),
    "type.AllergyIntolerance": ("过敏", "Allergy"),
    "type.MedicationRequest": ("用药", "Medicine"),
    "type.MedicationStatement": ("用药", "Medicine"),
    "type.DiagnosticReport": ("检验报告", "Lab report"),
    "type.Observation": ("检验结果", "Lab result"),
    "type.Encounter": ("就诊", "Visit"),
    "type.Immunization": ("疫苗接种", "Vaccination"),
    "type.Procedure": ("手术/操作", "Procedure"),
})


# --------------------------------------------------------------------------- small readers
# (CodeableConcept words and clinical dates: hutong.record.readers, imported as _text and _when)
def _code(cc: Any) -> str:
    if isinstance(cc, dict):
        for c in cc.get("coding") or []:
            if isinstance(c, dict) and c.get("code"):
                return f"{c.get('system', '')}|{c['code']}"
    return ""


def _ref(v: Any) -> str:
    """"Type/id" of a Reference (absolute or relative)."""
    ref = v.get("reference") if isinstance(v, dict) else None
    if not isinstance(ref, str):
        return ""
    parts = ref.split("/_history")[0].rstrip("/").split("/")
    return "/".join(parts[-2:])


def _day(v: Any) -> str:
    return v[:10] if isinstance(v, str) else ""


def _minute(v: Any) -> str:
    return v[:16].replace("T", " ") if isinstance(v, str) else ""


def _search(svc: FhirService, type: str, items: list[tuple[str, str]]) -> list[dict[str, Any]]:
    bundle = orjson.loads(svc.search(type, items, {}).body or b"{}")
    return [e["resource"] for e in bundle.get("entry") or []
            if isinstance(e.get("resource"), dict) and (e.get("search") or {}).get("mode") != "outcome"]


# --------------------------------------------------------------------------- consents
@dataclass
class ConsentRow:
    id: str
    kind: str                   # permit | deny
    who: str                    # display name
    who_type: str               # Organization | Practitioner | PractitionerRole | ""
    start: str
    end: str
    categories: list[str]
    status: str                 # active | inactive | expired | ...
    # who set it and whether it counts (hutong.security.consent_authors; issue 12)
    author: str = "unknown"     # resident | delegate | institution | institution_doc | platform | unknown
    author_org: str = ""
    in_force: bool = False
    why: str = ""               # consent_authors reason when an active one counts for nothing
    narrowed: bool = False      # categories its author may not open were left out


def consent_rows(consents: list[dict[str, Any]], today: str,
                 standings: dict[str, consent_authors.Standing] | None = None,
                 org_names: dict[str, str] | None = None) -> list[ConsentRow]:
    """Rows of the 授权管理 page; ``standings`` (by Consent id) says who set each
    one and whether it counts, so that forged or unconfirmed ones are shown as
    not in force, with a revoke button, instead of being hidden."""
    out = []
    for c in consents:
        prov = c.get("provision") if isinstance(c.get("provision"), dict) else {}
        assert isinstance(prov, dict)
        actors = [a.get("reference") or {} for a in prov.get("actor") or [] if isinstance(a, dict)]
        who = ", ".join(str(a.get("display") or _ref(a)) for a in actors if isinstance(a, dict))
        who_type = _ref(actors[0]).split("/")[0] if actors and isinstance(actors[0], dict) else ""
        period = prov.get("period") or {}
        end = _day(period.get("end"))
        status = str(c.get("status") or "")
        if status == "active" and end and end < today:
            status = "expired"
        cats = [str(x.get("code")).upper() for x in prov.get("securityLabel") or [] if isinstance(x, dict)]
        row = ConsentRow(str(c.get("id")), str(prov.get("type") or ""), who, who_type,
                         _day(period.get("start")), end, cats, status)
        st = (standings or {}).get(row.id)
        if st is not None:
            a = st.author
            row.author = "unknown" if a is None else \
                ("institution_doc" if a.documented else "institution") if a.kind == consent_authors.INSTITUTION \
                else a.kind
            row.author_org = (org_names or {}).get(a.organization_id or "", "") if a is not None else ""
            row.in_force = st.rule is not None
            row.why = st.why or ""
            row.narrowed = st.narrowed
        out.append(row)
    out.sort(key=lambda r: (r.status != "active", r.start), reverse=False)
    return out


# Consent.policyRule (R4 ppc-1): the resident's own opt-in (v3 ActCode OPTIN; PIPL Art. 29 separate consent).
OPT_IN = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]}


def new_consent(person: str, kind: str, actor_ref: str, actor_name: str, start: str, end: str,
                categories: list[str]) -> dict[str, Any]:
    """A Consent in the shape the policy reads (hutong.security.consent): the
    golden person as patient, one provision with actor, period and labels."""
    prov: dict[str, Any] = {
        "type": kind, "period": {"start": start, "end": end},
        "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                        "code": "PRCP"}]},
                   "reference": {"reference": actor_ref, "display": actor_name}}],
    }
    if categories:
        prov["securityLabel"] = [{"system": ACT_CODE, "code": c} for c in categories]
    return {"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "policyRule": OPT_IN,  # ppc-1: a Consent names its policy (the resident's opt-in, PIPL Art. 29)
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{person}"},
            "dateTime": datetime.now(REGION_TZ).isoformat(timespec="seconds"),
            "provision": prov}


# --------------------------------------------------------------------------- corrections
@dataclass
class CorrectionRow:
    id: str
    item: str
    item_type: str
    institution: str
    text: str
    status: str
    authored: str
    answer: str
    version: str = ""
    mine: tuple[tuple[str, str], ...] = ()  # what the resident added: (time, text)


def correction_task(person: str, item_ref: str, item_label: str, owner_ref: str, owner_name: str,
                    text: str) -> dict[str, Any]:
    return {"resourceType": "Task", "status": "requested", "intent": "order",
            "code": {"coding": [{"system": TASK_SYSTEM, "code": CORRECTION, "display": "更正申请"}],
                     "text": "更正申请"},
            "for": {"reference": f"Patient/{person}"},
            "focus": {"reference": item_ref, "display": item_label[:200]},
            "owner": {"reference": owner_ref, "display": owner_name},
            "description": text,
            "authoredOn": datetime.now(REGION_TZ).isoformat(timespec="seconds")}


def correction_rows(tasks: list[dict[str, Any]], org_names: dict[str, str]) -> list[CorrectionRow]:
    out = []
    for t in tasks:
        if _code(t.get("code")) != f"{TASK_SYSTEM}|{CORRECTION}":
            continue
        # The institution's words only (hutong.security.corrections): the resident's own notes are theirs.
        mine = tuple((_minute(n.get("time")), str(n["text"])) for n in t.get("note") or []
                     if isinstance(n, dict) and isinstance(n.get("text"), str)
                     and _ref(n.get("authorReference")).startswith("Patient/"))
        focus = t.get("focus") or {}
        owner = t.get("owner") or {}
        out.append(CorrectionRow(
            str(t.get("id")), str(focus.get("display") or _ref(focus)), _ref(focus).split("/")[0],
            str(owner.get("display") or org_names.get(_ref(owner).split("/")[-1], "")),
            str(t.get("description") or ""), str(t.get("status") or ""), _minute(t.get("authoredOn")),
            correction_rules.answer_text(t), str((t.get("meta") or {}).get("versionId") or ""), mine))
    out.sort(key=lambda r: r.authored, reverse=True)
    return out


# --------------------------------------------------------------------------- delegations
@dataclass
class DelegateRow:
    name: str
    relationship: str
    until: str
    person: str
    account_id: str = ""  # the delegate's account (for the resident's "end" button)


def _until(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, REGION_TZ).strftime("%Y-%m-%d") if ms is not None else ""


def delegates_for(accounts: list[Account], person: str, now: int) -> list[DelegateRow]:
    """Delegate accounts currently acting for ``person``."""
    out = []
    for a in accounts:
        if a.role is not Role.DELEGATE or a.status != "active":
            continue
        for d in a.delegations:
            if d.person_id == person and (d.expires is None or d.expires > now):
                out.append(DelegateRow(a.display or "—", d.relationship, _until(d.expires), person, a.id))
    return out


# --------------------------------------------------------------------------- routes
def register(app: FastAPI, pages: Pages, platform: Platform) -> None:
    """The resident portal's routes (``/resident...``), under the gate like every page."""
    repo, settings = platform.repo, platform.settings

    def service(request: Request, on: Repository | None = None) -> FhirService:
        base = settings.base_url or str(request.base_url).rstrip("/") + "/fhir"
        return FhirService(repo if on is None else on, base, access_of(request))

    def routed_record(request: Request, person: str) -> Record:
        """The record's rows from a hot standby when one may answer (hutong.web.read_routing);
        who may see them is decided on the primary all the same."""
        return read_routing.read(request, platform, lambda r: load_record(service(request, r), person))

    def me(request: Request) -> tuple[Access, str]:
        """The caller's access and whose record this page is about: a resident's
        own golden person; a delegate picks one of those they act for (?person=)."""
        access = access_of(request)
        access.require_role(Role.RESIDENT, Role.DELEGATE, what="the resident portal")
        persons = access.principal.persons
        if not persons:
            raise Forbidden("HT-0146", "this account acts for nobody at the moment (the delegation may have ended)")
        asked = request.query_params.get("person")
        if asked is None:
            return access, persons[0]
        if asked not in persons:
            raise Forbidden("HT-0146", "you may only see your own record or the records of those you act for")
        return access, asked

    async def run(fn: Callable[[], T]) -> T:
        return await run_in_threadpool(fn)

    def names_of(svc: FhirService, persons: tuple[str, ...]) -> dict[str, str]:
        out = {}
        for p in persons:
            try:
                body = orjson.loads(svc.read("Patient", p).body or b"{}")
            except HutongError:
                continue
            n = (body.get("name") or [{}])[0]
            out[p] = str(n.get("text") or (n.get("family", "") + "".join(n.get("given") or [])))
        return out

    def render(request: Request, template: str, access: Access, person: str, svc: FhirService,
               **ctx: Any) -> HTMLResponse:
        persons = access.principal.persons
        # A resident's own name heads the page (their account has no display name; issue 16, item 3).
        names = names_of(svc, persons if access.role is Role.DELEGATE else persons[:1])
        q = f"?person={person}" if access.role is Role.DELEGATE else ""
        who = names.get(persons[0]) if access.role is Role.RESIDENT else None
        return pages.render(request, template, person=person, persons=persons,
                            person_names=names if access.role is Role.DELEGATE else {}, pq=q,
                            is_delegate=access.role is Role.DELEGATE, who=who, **ctx)

    def organizations(svc: FhirService) -> list[dict[str, Any]]:
        orgs = _search(svc, "Organization", [("_count", "1000"), ("_sort", "name")])
        return [o for o in orgs if o.get("active", True)]

    # ------------------------------------------------------------ timeline
    @app.get("/resident", response_class=HTMLResponse)
    async def timeline(request: Request) -> Response:
        access, person = me(request)
        svc = service(request)
        page = _int(request.query_params.get("page"), 0)
        rec = await run(lambda: routed_record(request, person))
        start = page * VISIT_PAGE
        # An answer to a correction request the resident has not seen yet (hutong.web.ui.correction_answers).
        answered = await run(lambda: correction_answers.unseen(
            svc, person, request.cookies.get(correction_answers.seen_cookie(person))))
        # Tests spared by mutual recognition (issue 14, item 5; hutong.web.ui.avoided): this person's only.
        spared = await run(lambda: avoided.spared_tests(
            platform.audit, repo.acting_as(access), svc, person, i18n.Translator(pages.lang(request)))
        ) if page == 0 else []
        return await run(lambda: render(
            request, "resident/timeline.html", access, person, svc, rec=rec, correction_answered=answered,
            spared=spared,
            visits=rec.encounters[start:start + VISIT_PAGE], page=page,
            more=len(rec.encounters) > start + VISIT_PAGE,
            institutions=len({e.source.org_id for e in rec.encounters if e.source.org_id}), tab="timeline"))

    # ------------------------------------------------------------ labs
    @app.get("/resident/labs", response_class=HTMLResponse)
    async def labs(request: Request) -> Response:
        access, person = me(request)
        svc = service(request)
        rec = await run(lambda: routed_record(request, person))
        only = request.query_params.get("abnormal") == "1"
        trend_code = request.query_params.get("trend")
        trend = None
        chart = None
        if trend_code:
            points = sorted((x for x in rec.labs if x.code == trend_code and x.number is not None),
                            key=lambda x: x.date)
            if points:
                trend = points
                chart = trend_chart(points, i18n.Translator(pages.lang(request)))
        reports = [LabReport(r.id, r.name, r.date, r.source, [x for x in r.results if x.flag.abnormal],
                             r.encounter_id) for r in rec.reports] if only else rec.reports
        reports = [r for r in reports if r.results]
        return await run(lambda: render(request, "resident/labs.html", access, person, svc, reports=reports,
                                        only=only, trend=trend, chart=chart, tab="labs"))

    # ------------------------------------------------------------ consents
    @app.get("/resident/consents", response_class=HTMLResponse)
    async def consents(request: Request) -> Response:
        access, person = me(request)
        svc = service(request)
        org_id = request.query_params.get("org") or ""

        def load() -> dict[str, Any]:
            # Every Consent about any of the person's registrations, not only those naming
            # the golden person: one an institution filed on its own registration of
            # them must be seen here to be revoked (issue 12, finding 2).
            mine = ",".join(f"Patient/{p}" for p in access.patients_of(person))
            cons = _search(svc, "Consent", [("patient", mine), ("_count", "200")])
            orgs = organizations(svc)
            authors = consent_authors.authors_of(repo, {
                str(c.get("id")): int((c.get("meta") or {}).get("versionId") or 0) for c in cons})
            sensitive = platform.security.sensitive_labels
            standings = {str(c.get("id")): consent_authors.standing(c, authors.get(str(c.get("id"))), sensitive)
                         for c in cons}
            doctors: list[tuple[str, str]] = []
            org_name = ""
            if org_id:
                check_id(org_id)
                org_name = next((str(o.get("name")) for o in orgs if o.get("id") == org_id), "")
                if not org_name:
                    raise InvalidRequest("HT-0041", "no such hospital or clinic")
                roles = _search(svc, "PractitionerRole", [("organization", f"Organization/{org_id}"),
                                                          ("_count", "1000")])
                seen: set[str] = set()
                for r in roles:
                    pref = _ref(r.get("practitioner"))
                    if not pref.startswith("Practitioner/") or pref in seen:
                        continue
                    seen.add(pref)
                    spec = _text((r.get("specialty") or [None])[0])
                    title = _text((r.get("code") or [None])[0])
                    name = str((r.get("practitioner") or {}).get("display") or pref)
                    doctors.append((pref.split("/")[1], " · ".join(x for x in (name, spec, title) if x)))
                doctors.sort(key=lambda d: d[1])
            today = datetime.now(REGION_TZ).date().isoformat()
            return {"rows": consent_rows(cons, today, standings, {str(o.get("id")): str(o.get("name") or "")
                                                                  for o in orgs}), "orgs": [(o["id"], o.get("name", "")) for o in orgs],
                    "org_id": org_id, "org_name": org_name, "doctors": doctors}

        data = await run(load)
        return await run(lambda: render(
            request, "resident/consents.html", access, person, svc, categories=CATEGORIES, default_days=DEFAULT_DAYS,
            done=request.query_params.get("done"), tab="consents", **data))

    @app.post("/resident/consents")
    async def grant(request: Request) -> Response:
        access, person = me(request)
        form = await form_of(request)
        svc = service(request)
        kind = form.get("kind", "permit")
        if kind not in ("permit", "deny"):
            raise InvalidRequest("HT-0041", "choose allow or refuse")
        org_id = form.get("org", "")
        doctor = form.get("doctor", "")
        days = _int(form.get("days"), DEFAULT_DAYS)
        if not 1 <= days <= MAX_DAYS:
            raise InvalidRequest("HT-0041", f"the number of days must be between 1 and {MAX_DAYS}")
        cats = [c for c in CATEGORIES if form.get(f"cat_{c}") == "on"]
        if kind == "deny" and (doctor or cats):
            raise InvalidRequest("HT-0041", "a refusal is for a whole hospital or clinic, without categories")

        def go() -> None:
            check_id(org_id)
            org = orjson.loads(svc.read("Organization", org_id).body or b"{}")
            actor, name = f"Organization/{org_id}", str(org.get("name") or org_id)
            if doctor:
                check_id(doctor)
                roles = _search(svc, "PractitionerRole", [("organization", f"Organization/{org_id}"),
                                                          ("practitioner", f"Practitioner/{doctor}")])
                if not roles:
                    raise InvalidRequest("HT-0041", "this doctor does not work at the chosen hospital")
                pname = str((roles[0].get("practitioner") or {}).get("display") or doctor)
                actor, name = f"Practitioner/{doctor}", f"{pname}（{name}）"
            today = datetime.now(REGION_TZ).date()
            c = new_consent(person, kind, actor, name, today.isoformat(),
                            (today + timedelta(days=days)).isoformat(), cats)
            svc.create("Consent", orjson.dumps(c), {})

        await run(go)
        return RedirectResponse(_back(request, access, person, "/resident/consents", "done=granted"), status_code=303)

    @app.post("/resident/consents/{consent_id}/revoke")
    async def revoke(consent_id: str, request: Request) -> Response:
        access, person = me(request)
        await form_of(request)
        svc = service(request)

        def go() -> None:
            check_id(consent_id)
            c = orjson.loads(svc.read("Consent", consent_id).body or b"{}")
            if _ref(c.get("patient")) not in {f"Patient/{p}" for p in access.patients_of(person)}:
                raise Forbidden("HT-0103", "this permission is about someone else's record")
            c["status"] = "inactive"
            c.pop("meta", None)
            if not c.get("policy") and not c.get("policyRule"):
                c["policyRule"] = OPT_IN  # made before ppc-1 was checked: revocable all the same
            svc.update("Consent", consent_id, orjson.dumps(c), {})

        await run(go)
        return RedirectResponse(_back(request, access, person, "/resident/consents", "done=revoked"), status_code=303)

    # ------------------------------------------------------------ delegates
    @app.get("/resident/delegates", response_class=HTMLResponse)
    async def delegates(request: Request) -> Response:
        access, person = me(request)
        svc = service(request)
        accounts = platform.authenticator.tokens.accounts

        def load() -> dict[str, Any]:
            now = int(datetime.now(UTC).timestamp() * 1000)
            for_me = delegates_for(accounts.list_accounts(Role.DELEGATE), person, now) \
                if access.role is Role.RESIDENT else []
            i_act: list[DelegateRow] = []
            if access.role is Role.DELEGATE:
                mine = accounts.get(access.principal.account_id)
                names = names_of(svc, access.principal.persons)
                for d in mine.delegations if mine else ():
                    if d.person_id in access.principal.persons:
                        i_act.append(DelegateRow(names.get(d.person_id, "—"), d.relationship, _until(d.expires),
                                                 d.person_id))
            return {"for_me": for_me, "i_act": i_act}

        data = await run(load)
        return await run(lambda: render(request, "resident/delegates.html", access, person, svc, tab="delegates",
                                        done=request.query_params.get("done"), **data))

    @app.post("/resident/delegates/{account_id}/end")
    async def end_delegation(account_id: str, request: Request) -> Response:
        """The resident ends a family member's or guardian's delegation for them."""
        await form_of(request)
        access, person = me(request)
        if access.role is not Role.RESIDENT:
            raise Forbidden("HT-0104", "only the resident can end a delegation for their record")
        tokens = platform.authenticator.tokens
        ended = await run(lambda: tokens.accounts.end_delegation(account_id[:64], person))
        if not ended:
            raise NotFound("HT-0135", "no such delegation for your record")
        access.persons.add(person)
        return RedirectResponse("/resident/delegates?done=ended", status_code=303)

    # ------------------------------------------------------------ access log
    @app.get("/resident/access-log", response_class=HTMLResponse)
    async def access_log(request: Request) -> Response:
        access, person = me(request)
        svc = service(request)
        audit: AuditLog = platform.audit
        after = request.query_params.get("after")
        after_seq = _int(after, 0) or None
        include_mine = request.query_params.get("mine") == "1"

        def load() -> dict[str, Any]:
            entries: list[AccessEntry] = []
            cursor = after_seq
            # Own and family looks are skipped unless asked for: scan further batches until a page is full.
            for _ in range(20):
                batch = audit.access_log([person], limit=LOG_BATCH, after_seq=cursor)
                if not batch:
                    cursor = None
                    break
                for e in batch:
                    cursor = e.seq
                    if not include_mine and (e.relation in ("self", "delegate")
                                             or e.role in (Role.RESIDENT, Role.DELEGATE)):
                        continue
                    if e.purpose == "directory":
                        continue
                    entries.append(e)
                    if len(entries) == LOG_PAGE:
                        break
                if len(entries) == LOG_PAGE:
                    break
                if len(batch) < LOG_BATCH:
                    cursor = None
                    break
            orgs = {}
            for o in organizations(svc):
                for i in o.get("identifier") or []:
                    if isinstance(i, dict) and i.get("value"):
                        orgs[str(i["value"])] = str(o.get("name") or "")
            # A delegate by the name on their account (the 家人代办 page shows it too).
            accounts = platform.authenticator.tokens.accounts
            delegates = {}
            for a in {e.account_id for e in entries if e.role == Role.DELEGATE and e.account_id}:
                acct = accounts.get(a)
                if acct is not None and acct.display:
                    delegates[a] = acct.display
            t = i18n.Translator(pages.lang(request))
            groups = [alog.describe(g, t, orgs, delegates) for g in alog.group_entries(entries)]
            more = cursor is not None and len(entries) == LOG_PAGE
            return {"groups": groups, "next_after": cursor if more else None}

        data = await run(load)
        return await run(lambda: render(request, "resident/access_log.html", access, person, svc, tab="log",
                                        include_mine=include_mine, after=after_seq, **data))

    # ------------------------------------------------------------ corrections
    @app.get("/resident/corrections", response_class=HTMLResponse)
    async def corrections(request: Request) -> Response:
        access, person = me(request)
        svc = service(request)

        def load() -> dict[str, Any]:
            rec = load_record(svc, person)
            rows: list[CorrectionRow] = []
            unavailable = None
            try:
                tasks = _search(svc, "Task", [("patient", f"Patient/{person}"),
                                              ("code", f"{TASK_SYSTEM}|{CORRECTION}"), ("_count", "200")])
                rows = correction_rows(tasks, rec.organizations)
            except HutongError as e:
                unavailable = e.message
            order = {t: i for i, t in enumerate(CORRECTABLE)}
            items = sorted((e for e in rec.entries if e.type in order), key=lambda e: order[e.type])
            return {"items": items, "rows": rows, "unavailable": unavailable}

        # Seen (read before the page, so an answer landing meanwhile still counts as new):
        # the home page's notice stays away until a newer answer comes.
        newest = await run(lambda: correction_answers.newest_answer_ms(svc, person))
        data = await run(load)
        resp = await run(lambda: render(request, "resident/corrections.html", access, person, svc, tab="corrections",
                                        done=request.query_params.get("done"), **data))
        resp.set_cookie(correction_answers.seen_cookie(person), str(newest), max_age=400 * 86400, httponly=True,
                        samesite="strict", path="/resident", secure=request.url.scheme == "https")
        return resp

    @app.post("/resident/corrections/{task_id}/reply")
    async def correction_reply(task_id: str, request: Request) -> Response:
        access, person = me(request)
        form = await form_of(request)
        svc = service(request)
        now = datetime.now(REGION_TZ).isoformat(timespec="seconds")
        await run(lambda: correction_answers.add_information(svc, person, task_id, form.get("text", ""),
                                                             form.get("version", ""), now))
        return RedirectResponse(_back(request, access, person, "/resident/corrections", "done=replied"),
                                status_code=303)

    @app.post("/resident/corrections")
    async def correct(request: Request) -> Response:
        access, person = me(request)
        form = await form_of(request)
        svc = service(request)
        item = form.get("item", "")
        text = form.get("text", "").strip()
        if not text or len(text) > 2000:
            raise InvalidRequest("HT-0041", "describe what is wrong (up to 2000 characters)")
        kind, _, rid = item.partition("/")
        if kind not in CORRECTABLE or not rid:
            raise InvalidRequest("HT-0041", "choose the item to correct")

        def go() -> None:
            check_id(rid)
            # Read through the policy: the item must be in the record this caller may see.
            res = orjson.loads(svc.read(kind, rid).body or b"{}")
            subject = next((_ref(res.get(k)) for k in ("subject", "patient") if _ref(res.get(k))), "")
            if not subject.startswith("Patient/") or access.person_of(subject.split("/")[1]) != person:
                raise Forbidden("HT-0103", "this item is not in your record")
            src = orjson.loads(svc.read("Patient", subject.split("/")[1]).body or b"{}")
            owner = _ref(src.get("managingOrganization"))
            if not owner.startswith("Organization/"):
                raise InvalidRequest("HT-0041", "the institution holding this item is not known")
            org = orjson.loads(svc.read("Organization", owner.split("/")[1]).body or b"{}")
            label = f"{i18n.MESSAGES['type.' + kind][0]} · {entry_label(res)} · {_day(_when(res))}".strip(" ·")
            task = correction_task(person, f"{kind}/{rid}", label, owner, str(org.get("name") or ""), text)
            svc.create("Task", orjson.dumps(task), {})

        await run(go)
        return RedirectResponse(_back(request, access, person, "/resident/corrections", "done=sent"),
                                status_code=303)


def _int(v: str | None, default: int) -> int:
    try:
        return int(v) if v is not None and v.strip() else default
    except ValueError:
        return default


def _back(request: Request, access: Access, person: str, path: str, extra: str) -> str:
    q = [extra]
    if access.role is Role.DELEGATE:
        q.append(f"person={person}")
    return path + "?" + "&".join(q)
