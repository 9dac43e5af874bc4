"""The clinician workspace (issue 7): find a patient, state the access reason, read the record.

Pages (all under the gate: signed in, the request's Access, one audit row each):

- ``GET /clinician`` and ``POST /clinician/search``: find a resident by ID
  number or health card (``Patient?identifier=``; the policy lets clinicians
  find golden persons by identifier) or by name + birth date (IHE PDQm
  ``$match``, ITI-119), candidates shown with score, grade and the fields that
  agree.  The search is POSTed so ID numbers stay out of URLs and history.
- ``GET /clinician/patient/{person}``: the access step.  The basis the policy
  finds (``$access-basis``: own institution, treatment relationship, consent,
  break-glass, or none / refused by the resident) decides what is offered:
  open the record with that reason, or break the glass with a written reason
  (``POST /clinician/patient/{person}/break-glass``: at least 10 characters;
  flagged in the audit trail, the resident is told by SMS, auditors review).
- ``GET /clinician/patient/{person}/record?reason=...&tab=...``: the
  longitudinal record (hutong.record, the model both portals render; the
  "recent equivalent results elsewhere" panel is hutong.cds.equivalents).
  It opens only with a ``reason`` equal to the basis the server finds again
  at that moment, so a URL without the access step is refused (HT-0107) and
  one without any basis too (HT-0103).
- ``GET /clinician/document/{id}?reason=...``: one DocumentReference, its WS/T
  500 CDA rendered as HTML (hutong.web.ui.cda_render) or its plain text.

Every read goes through :class:`~hutong.fhir.service.FhirService` with the
request's Access: the page can show nothing the FHIR API would refuse.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse, Response

from hutong.cds.equivalents import IMAGING_WINDOW_DAYS, LAB_WINDOW_DAYS, recent_equivalents
from hutong.errors import Forbidden, InvalidRequest, NotFound
from hutong.fhir.identity import MATCH_GRADE, IdentityOperations
from hutong.fhir.service import FhirService
from hutong.mpi.golden import GOLDEN_SYSTEM, PERSON_PREFIX
from hutong.mpi.idnumber import parse_id_number
from hutong.mpi.normalize import normalize_name
from hutong.platform import Platform
from hutong.record import Demographics, Record, demographics_of, load_record
from hutong.security.policy import Access
from hutong.security.principal import Role
from hutong.systems import HEALTH_CARD, ID_CARD
from hutong.web import access_ops, read_routing
from hutong.web.ui import cda_render, corrections_inbox, i18n, ordering
from hutong.web.ui.pages import Pages, access_of, form_of
from hutong.web.ui.record import grouped_labs, trend_chart

# Bases under which the record opens (the reason the clinician states must be the one found).
OPENABLE = ("own-institution", "treatment", "consent", "break-glass")
TABS = ("summary", "timeline", "labs", "imaging", "documents")
MAX_LAB_ROWS = 500   # the labs table shows the newest results; trends cover every value
MAX_CHARTS = 12      # trend charts per page (most recently measured codes first)
MIN_REASON = 10      # break-glass reasons: the policy's own minimum (hutong.security.policy)

i18n.add({
    "clin.title": ("医生工作站", "Clinician workspace"),
    "clin.find": ("查找患者", "Find a patient"),
    "clin.by_id": ("按身份证号", "By ID number"),
    "clin.by_card": ("按居民健康卡号", "By health card number"),
    "clin.by_name": ("按姓名和出生日期", "By name and birth date"),
    "clin.id_number": ("身份证号", "Resident ID number"),
    "clin.card": ("居民健康卡号", "Health card number"),
    "clin.name": ("姓名", "Name"),
    "clin.birth_date": ("出生日期", "Birth date"),
    "clin.gender": ("性别（可选）", "Sex (optional)"),
    "clin.any": ("不限", "Any"),
    "clin.search": ("查找", "Search"),
    "clin.results": ("查找结果", "Results"),
    "clin.none_found": ("未找到符合条件的居民。", "No resident matches."),
    "clin.bad_id": ("身份证号格式或校验位不正确。", "The ID number is malformed or its check character is wrong."),
    "clin.need_card": ("请输入居民健康卡号。", "Enter a health card number."),
    "clin.need_name": ("请输入姓名和出生日期。", "Enter a name and a birth date."),
    "clin.score": ("匹配度", "Match score"),
    "clin.grade": ("匹配等级", "Match grade"),
    "clin.why": ("匹配依据", "Why it matches"),
    "clin.linked": ("关联机构记录数", "Linked institution records"),
    "clin.open": ("查看", "Open"),
    "clin.grade.certain": ("确定", "certain"),
    "clin.grade.probable": ("很可能", "probable"),
    "clin.grade.possible": ("可能", "possible"),
    "clin.why.id": ("身份证号一致", "ID number agrees"),
    "clin.why.card": ("居民健康卡号一致", "health card number agrees"),
    "clin.why.name": ("姓名一致", "name agrees"),
    "clin.why.family": ("姓氏一致", "family name agrees"),
    "clin.why.birth": ("出生日期一致", "birth date agrees"),
    "clin.why.birth_year": ("出生年份一致", "birth year agrees"),
    "clin.why.gender": ("性别一致", "sex agrees"),
    "clin.why.differs": ("不一致：", "differs: "),
    "clin.field.name": ("姓名", "name"),
    "clin.field.birth": ("出生日期", "birth date"),
    "clin.field.gender": ("性别", "sex"),
    "clin.male": ("男", "male"),
    "clin.female": ("女", "female"),
    "clin.unknown": ("未知", "unknown"),
    "clin.sex": ("性别", "Sex"),
    "clin.access": ("访问依据", "Access basis"),
    "clin.access_intro": ("打开其他机构的诊疗记录前，须说明访问依据。本次访问将记入审计日志，居民可在“谁看了我的档案”中查看。",
                          "Before another institution's records open, state why you are looking. The access is "
                          "audited and the resident can see it under \"who looked at my record\"."),
    "clin.basis.own-institution": ("本机构患者：仅可查看本机构的记录", "Your institution's patient: your own "
                                   "institution's records only"),
    "clin.basis.treatment": ("诊疗关系：近90天内在本机构就诊", "Treatment relationship: seen at your institution "
                             "in the last 90 days"),
    "clin.basis.consent": ("居民授权：居民已授权您或本机构查看", "Consent: the resident has authorised you or your "
                           "institution"),
    "clin.basis.break-glass": ("紧急授权：您已以紧急方式打开此档案", "Break-glass: you have opened this record "
                               "in an emergency"),
    "clin.basis.none": ("无访问依据：无诊疗关系，也无居民授权", "No basis: no treatment relationship and no "
                        "consent"),
    "clin.basis.denied": ("居民已拒绝您的访问，仅可紧急授权", "The resident has refused your access; break-glass "
                          "only"),
    "clin.open_as": ("打开档案（依据：{reason}）", "Open the record (reason: {reason})"),
    "clin.reason.own-institution": ("本机构", "own institution"),
    "clin.reason.treatment": ("诊疗关系", "treatment"),
    "clin.reason.consent": ("居民授权", "consent"),
    "clin.reason.break-glass": ("紧急授权", "break-glass"),
    "clin.bg.title": ("紧急授权（破窗）", "Emergency access (break the glass)"),
    "clin.bg.intro": ("仅限紧急情况。须填写理由（至少10个字）；本次访问将被标记，居民会收到短信通知，并由审计人员复核。",
                      "Emergencies only. A written reason (at least 10 characters) is required; the access is "
                      "flagged, the resident is told by SMS, and auditors review it."),
    "clin.bg.reason": ("紧急访问理由", "Reason for emergency access"),
    "clin.bg.submit": ("紧急授权并打开档案", "Break the glass and open the record"),
    "clin.bg.confirm": ("确认以紧急授权方式打开此档案？", "Open this record with emergency access?"),
    "clin.bg.short": ("理由至少需要10个字。", "The reason needs at least 10 characters."),
    "clin.record": ("健康档案", "Health record"),
    "clin.tab.summary": ("概要", "Summary"),
    "clin.tab.timeline": ("就诊时间线", "Timeline"),
    "clin.tab.labs": ("检验结果", "Lab results"),
    "clin.tab.imaging": ("影像检查", "Imaging"),
    "clin.tab.documents": ("文档", "Documents"),
    "clin.tabs": ("档案内容", "Record sections"),
    "clin.hidden_note": ("部分记录可能因居民的隐私设置而未显示。", "Some records may be hidden by the resident's "
                         "privacy choices."),
    "clin.reason_shown": ("访问依据：{reason}", "Access reason: {reason}"),
    "clin.sources": ("记录来源机构", "Institutions in this record"),
    "clin.source": ("来源", "Source"),
    "clin.allergies": ("过敏", "Allergies"),
    "clin.no_allergies": ("无过敏记录", "No allergies recorded"),
    "clin.problems": ("当前问题（ICD-10）", "Active problems (ICD-10)"),
    "clin.all_problems": ("全部诊断", "All diagnoses"),
    "clin.meds": ("当前用药", "Current medications"),
    "clin.all_meds": ("用药记录", "Medication history"),
    "clin.none": ("无", "None"),
    "clin.elsewhere": ("其他机构近期同类结果（互认参考）", "Recent equivalent results elsewhere (mutual recognition)"),
    "clin.elsewhere_intro": ("检验{lab}天内、影像{img}天内，来自其他机构的最新同类结果。",
                             "The newest result of the same kind from another institution: labs within {lab} "
                             "days, imaging within {img} days."),
    "clin.elsewhere_none": ("无其他机构的近期同类结果。", "No recent equivalent results from other institutions."),
    "clin.kind.lab": ("检验", "Lab"),
    "clin.kind.imaging": ("影像", "Imaging"),
    "clin.days_ago": ("{n}天前", "{n} days ago"),
    "clin.date": ("日期", "Date"),
    "clin.kind": ("类别", "Kind"),
    "clin.item": ("项目", "Item"),
    "clin.result": ("结果", "Result"),
    "clin.unit": ("单位", "Unit"),
    "clin.range": ("参考范围", "Reference range"),
    "clin.flag": ("提示", "Flag"),
    "clin.panel": ("检验组合", "Panel"),
    "clin.department": ("科室", "Department"),
    "clin.institution": ("机构", "Institution"),
    "clin.visit_kind": ("就诊类型", "Visit type"),
    "clin.diagnoses": ("诊断", "Diagnoses"),
    "clin.visits": ("就诊次数", "Visits"),
    "clin.all_institutions": ("全部机构", "All institutions"),
    "clin.filter": ("按机构筛选", "Filter by institution"),
    "clin.status": ("状态", "Status"),
    "clin.onset": ("发病", "Onset"),
    "clin.code": ("编码", "Code"),
    "clin.dosage": ("用法", "Dosage"),
    "clin.substance": ("过敏原", "Substance"),
    "clin.reaction": ("反应", "Reaction"),
    "clin.criticality": ("严重程度", "Criticality"),
    "clin.trends": ("趋势图", "Trends"),
    "clin.trend_of": ("{name} 趋势（{n} 次）", "{name} trend ({n} values)"),
    "clin.newest_of": ("显示最新 {shown} 条，共 {total} 条。", "Showing the newest {shown} of {total}."),
    "clin.lab_group": ("检验结果", "Lab results"),
    "clin.abnormal_n": ("{n} 项异常", "{n} abnormal"),
    "clin.modality": ("检查方式", "Modality"),
    "clin.description": ("检查项目", "Study"),
    "clin.images": ("序列/图像", "Series/images"),
    "clin.conclusion": ("报告结论", "Report conclusion"),
    "clin.doc_title": ("文档", "Document"),
    "clin.doc_type": ("类型", "Type"),
    "clin.view": ("查看", "View"),
    "clin.back_record": ("返回档案", "Back to the record"),
    "clin.patient": ("患者", "Patient"),
    "clin.author": ("作者", "Author"),
    "clin.custodian": ("保管机构", "Custodian"),
    "clin.effective": ("文档时间", "Document time"),
    "clin.empty_section": ("（无内容）", "(empty)"),
    "clin.doc_unreadable": ("该文档无法显示：", "This document cannot be shown: "),
    "clin.resources": ("共 {n} 条记录", "{n} resources"),
    "clin.birth": ("出生日期", "Born"),
    "clin.id_masked": ("身份证号", "ID number"),
    "clin.card_masked": ("健康卡号", "Health card"),
})


@dataclass
class Candidate:
    person: str
    demo: Demographics
    reasons: list[str] = field(default_factory=list)
    differs: list[str] = field(default_factory=list)
    score: float | None = None
    grade: str = ""


def _golden_entries(bundle: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(e["resource"], e.get("search") or {}) for e in bundle.get("entry") or ()
            if isinstance(e.get("resource"), dict) and str(e["resource"].get("id", "")).startswith(PERSON_PREFIX)]


def _name_of(p: dict[str, Any]) -> str:
    return demographics_of(p).name


def _why(query: dict[str, str], p: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Which fields of the query agree with the candidate (keys of clin.why.*), and which differ."""
    agree: list[str] = []
    differ: list[str] = []
    # Compared as the MPI compares names (hutong.mpi.normalize): 張穎 is 张颖, spaces
    # and the 间隔号 do not count (issue 16, item 7).
    name = normalize_name(query.get("name", ""))
    cand = normalize_name(_name_of(p))
    if name:
        if cand == name:
            agree.append("name")
        elif cand[:1] == name[:1]:
            agree.append("family")
            differ.append("name")
        else:
            differ.append("name")
    bd = query.get("birth_date", "")
    cbd = str(p.get("birthDate") or "")
    if bd:
        if cbd == bd:
            agree.append("birth")
        elif cbd[:4] == bd[:4]:
            agree.append("birth_year")
            differ.append("birth")
        else:
            differ.append("birth")
    g = query.get("gender", "")
    if g:
        (agree if p.get("gender") == g else differ).append("gender")
    return agree, differ


class ClinicianPortal:
    def __init__(self, pages: Pages, platform: Platform) -> None:
        self.pages = pages
        self.platform = platform
        self.repo = platform.repo

    # ------------------------------------------------------------ plumbing
    def service(self, request: Request) -> tuple[FhirService, Access]:
        access = access_of(request)
        access.require_role(Role.CLINICIAN, what="the clinician workspace")
        base = self.platform.settings.base_url or str(request.base_url).rstrip("/") + "/fhir"
        return FhirService(self.repo, base, access), access

    def notify(self) -> access_ops.Notify:
        return access_ops.sms_notifier(self.repo, self.platform.sms.send)

    # ------------------------------------------------------------ search
    def search(self, svc: FhirService, form: dict[str, str]) -> tuple[list[Candidate], str | None]:
        mode = form.get("mode", "id")
        if mode == "id":
            idn = parse_id_number(form.get("id_number", ""))
            if not idn.valid or idn.value is None:
                return [], "clin.bad_id"
            return self._by_identifier(svc, ID_CARD, idn.value, "id"), None
        if mode == "card":
            card = form.get("card", "").strip().upper()
            if not card or len(card) > 64:
                return [], "clin.need_card"
            return self._by_identifier(svc, HEALTH_CARD, card, "card"), None
        if mode == "name":
            name, bd = form.get("name", "").strip(), form.get("birth_date", "").strip()
            try:
                date.fromisoformat(bd)
            except ValueError:
                return [], "clin.need_name"
            if not name or len(name) > 60:
                return [], "clin.need_name"
            return self._by_match(svc, {"name": name, "birth_date": bd, "gender": form.get("gender", "")}), None
        raise InvalidRequest("HT-0021", "search mode must be id, card or name")

    def _by_identifier(self, svc: FhirService, system: str, value: str, why: str) -> list[Candidate]:
        # Golden records come only when asked for (issue 15, item 1: not in ordinary searches).
        r = svc.search("Patient", [("identifier", f"{system}|{value}"), ("_tag", f"{GOLDEN_SYSTEM}|golden"),
                                   ("_count", "20")], {})
        out = []
        for p, _s in _golden_entries(orjson.loads(r.body or b"{}")):
            out.append(Candidate(str(p["id"]), demographics_of(p), [why]))
        return out

    def _by_match(self, svc: FhirService, q: dict[str, str]) -> list[Candidate]:
        patient: dict[str, Any] = {"resourceType": "Patient", "name": [{"text": q["name"]}],
                                   "birthDate": q["birth_date"]}
        if q.get("gender") in ("male", "female"):
            patient["gender"] = q["gender"]
        body = orjson.dumps({"resourceType": "Parameters", "parameter": [
            {"name": "resource", "resource": patient}, {"name": "count", "valueInteger": 10}]})
        bundle = orjson.loads(IdentityOperations(svc).match(body).body or b"{}")
        out = []
        for p, s in _golden_entries(bundle):
            agree, differ = _why(q, p)
            grade = next((str(x.get("valueCode")) for x in s.get("extension") or ()
                          if x.get("url") == MATCH_GRADE), "")
            score = s.get("score")
            out.append(Candidate(str(p["id"]), demographics_of(p), agree, differ,
                                 float(score) if isinstance(score, int | float) else None, grade))
        return out

    # ------------------------------------------------------------ access step
    def basis(self, svc: FhirService, access: Access, person: str) -> tuple[str, str]:
        out = orjson.loads(access_ops.basis(svc, access, person).body or b"{}")
        params = {p.get("name"): p for p in out.get("parameter") or ()}
        purpose = str((params.get("basis") or {}).get("valueCode") or "none")
        detail = str((params.get("detail") or {}).get("valueString") or "")
        return purpose, detail

    def person_page(self, svc: FhirService, access: Access, person: str) -> dict[str, Any]:
        purpose, detail = self.basis(svc, access, person)
        demo = demographics_of(orjson.loads(svc.read("Patient", person).body or b"{}"))
        denied = "refused" in detail
        return {"person": person, "demo": demo, "basis": purpose, "denied": denied,
                "openable": purpose in OPENABLE}

    def check_reason(self, svc: FhirService, access: Access, person: str, reason: str | None) -> str:
        """The record opens only with the reason the server finds now (no URL shortcut)."""
        purpose, _detail = self.basis(svc, access, person)
        if purpose not in OPENABLE:
            raise Forbidden("HT-0103", "no access basis for this resident's record: open it from the access step "
                                       "(break-glass in an emergency)")
        if reason != purpose:
            raise Forbidden("HT-0107", "state the access reason first: open the record from its access step "
                                       f"(/clinician/patient/{person})")
        return purpose

    # ------------------------------------------------------------ document
    def document(self, svc: FhirService, access: Access, doc_id: str,
                 reason: str | None) -> tuple[dict[str, Any], str, cda_render.RenderedCda | None, str]:
        doc = orjson.loads(svc.read("DocumentReference", doc_id).body or b"{}")
        subject = str(((doc.get("subject") or {}).get("reference")) or "")
        patient = subject.rpartition("/")[2]
        person = access.person_of(patient) if patient else None
        if not person:
            raise NotFound("HT-0056", "the document's patient is not linked to a person")
        self.check_reason(svc, access, person, reason)
        att: dict[str, Any] = next((c["attachment"] for c in doc.get("content") or ()
                                    if isinstance(c, dict) and isinstance(c.get("attachment"), dict)), {})
        ctype = str(att.get("contentType") or "").split(";")[0].strip().lower()
        try:
            data = self._content(svc, access, att, subject)
        except binascii.Error:
            return doc, person, None, "attachment data is not valid base64"
        if data is None:
            return doc, person, None, "the document has no content"
        try:
            if ctype in cda_render.CDA_CONTENT_TYPES or b"<ClinicalDocument" in data[:4000]:
                return doc, person, cda_render.render(data), ""
            if ctype.startswith("text/"):
                return doc, person, cda_render.render_text(data), ""
        except cda_render.CdaError as e:
            return doc, person, None, e.text[:300]
        return doc, person, None, f"content type {ctype[:60] or '(none)'} is not shown inline"

    def _content(self, svc: FhirService, access: Access, att: dict[str, Any], subject: str) -> bytes | None:
        if isinstance(att.get("data"), str):
            return base64.b64decode(att["data"], validate=True)
        url = att.get("url")
        if not isinstance(url, str) or not url.startswith("Binary/"):
            return None
        bid = url[len("Binary/"):]
        # Binary.securityContext names its patient: the policy admits it like
        # that patient's other records (hutong.security.policy).
        binary = orjson.loads(svc.read("Binary", bid).body or b"{}")
        data = binary.get("data")
        return base64.b64decode(data, validate=True) if isinstance(data, str) else None


def _record_context(rec: Record, tab: str, inst: str | None, t: i18n.Translator,
                    own_org: str | None) -> dict[str, Any]:
    ctx: dict[str, Any] = {"rec": rec, "tab": tab, "lab_days": LAB_WINDOW_DAYS, "img_days": IMAGING_WINDOW_DAYS}
    if tab == "summary":
        ctx["equivalents"] = recent_equivalents(rec.labs, rec.imaging, own_org, datetime.now(UTC))
    if tab == "timeline":
        visits: dict[tuple[str, str], int] = {}
        for e in rec.encounters:
            visits[(e.source.name, e.department)] = visits.get((e.source.name, e.department), 0) + 1
        ctx["visit_counts"] = sorted(visits.items(), key=lambda kv: (kv[0][0], -kv[1]))
        ctx["encounters"] = [e for e in rec.encounters if not inst or e.source.org_id == inst]
        ctx["inst"] = inst or ""
    elif tab == "labs":
        ctx["lab_groups"], ctx["lab_shown"] = grouped_labs(rec.reports, MAX_LAB_ROWS)
        ctx["charts"] = [{"id": f"trend-{i}", "series": s, "config": trend_chart(s.points, t)}
                         for i, s in enumerate(rec.series[:MAX_CHARTS])]
    return ctx


def register(app: FastAPI, pages: Pages, platform: Platform) -> ClinicianPortal:
    portal = ClinicianPortal(pages, platform)

    @app.get("/clinician", response_class=HTMLResponse)
    async def clinician_home(request: Request) -> Response:
        svc, access = portal.service(request)  # role check
        # The correction requests inbox, for the posts that answer them (hutong.web.ui.corrections_inbox).
        inbox = await run_in_threadpool(corrections_inbox.open_count, svc, access)
        return pages.render(request, "clinician/search.html", form={"mode": "id"}, results=None, problem=None,
                            corrections=inbox)

    @app.post("/clinician/search", response_class=HTMLResponse)
    async def clinician_search(request: Request) -> Response:
        svc, _access = portal.service(request)
        form = await form_of(request)
        results, problem = await run_in_threadpool(portal.search, svc, form)
        form.pop("csrf", None)
        return pages.render(request, "clinician/search.html", form=form, results=results, problem=problem,
                            status=400 if problem else 200)

    @app.get("/clinician/patient/{person}", response_class=HTMLResponse)
    async def clinician_person(person: str, request: Request) -> Response:
        svc, access = portal.service(request)
        ctx = await run_in_threadpool(portal.person_page, svc, access, person)
        return pages.render(request, "clinician/access.html", bg_error=None, **ctx)

    @app.post("/clinician/patient/{person}/break-glass")
    async def clinician_break_glass(person: str, request: Request) -> Response:
        svc, access = portal.service(request)
        form = await form_of(request)
        reason = form.get("reason", "").strip()
        if len(reason) < MIN_REASON:
            ctx = await run_in_threadpool(portal.person_page, svc, access, person)
            return pages.render(request, "clinician/access.html", status=400, bg_error="clin.bg.short",
                                reason=reason, **ctx)
        body = orjson.dumps({"reason": reason})
        await run_in_threadpool(access_ops.break_glass, svc, access, person, body, portal.notify())
        return RedirectResponse(f"/clinician/patient/{person}/record?reason=break-glass", status_code=303)

    @app.get("/clinician/patient/{person}/record", response_class=HTMLResponse)
    async def clinician_record(person: str, request: Request) -> Response:
        svc, access = portal.service(request)
        reason = request.query_params.get("reason")
        tab = request.query_params.get("tab", "summary")
        if tab not in TABS:
            tab = "summary"

        def work() -> dict[str, Any]:
            purpose = portal.check_reason(svc, access, person, reason)  # on the primary
            # The record's rows from a hot standby when one may answer (hutong.web.read_routing);
            # every row still passes this request's Access, whose facts are the primary's.
            rec = read_routing.read(request, portal.platform, lambda r: load_record(
                FhirService(r, svc.base_url, access), person))
            t = i18n.Translator(pages.lang(request))
            return {"person": person, "reason": purpose,
                    **_record_context(rec, tab, request.query_params.get("inst"), t,
                                      access.principal.organization_id)}

        ctx = await run_in_threadpool(work)
        return pages.render(request, "clinician/record.html", tabs=TABS, **ctx)

    @app.get("/clinician/document/{doc_id}", response_class=HTMLResponse)
    async def clinician_document(doc_id: str, request: Request) -> Response:
        svc, access = portal.service(request)
        reason = request.query_params.get("reason")
        doc, person, rendered, problem = await run_in_threadpool(portal.document, svc, access, doc_id, reason)
        return pages.render(request, "clinician/document.html", doc=doc, person=person, reason=reason,
                            cda=rendered, problem=problem)

    # The ordering panel (issue 14, item 5): hutong.web.ui.ordering, behind the same access step.
    ordering.register(app, pages, platform, portal)
    return portal


__all__ = ["OPENABLE", "Candidate", "ClinicianPortal", "register"]
