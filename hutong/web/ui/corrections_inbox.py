"""The institution's inbox of residents' correction requests (纠偏权, 《个人信息保护法》第四十六条; issue 16, item 8).

A resident asks for an item of their record to be corrected
(``/resident/corrections``): one FHIR Task addressed (``owner``) to the
institution that holds the item.  Here that institution answers it, in the
clinician workspace:

- ``GET /clinician/corrections``: the open requests addressed to the
  signed-in clinician's institution (oldest first: the law's clock runs), each
  with the item as people read it, who asked, their reason and when; below,
  the latest answers.
- ``GET /clinician/corrections/{task_id}``: one request, its history, and
  three answers: corrected (say what was corrected), not corrected (the reason,
  required) or more information needed (the question).
- ``POST /clinician/corrections/{task_id}``: the answer, as a new version of the
  same Task (task.html#statemachine; the model and its rules:
  :mod:`hutong.security.corrections`) written through the FHIR service under
  the caller's Access, so the write policy checks it and the gate audits it, in
  one transaction.  The form carries the version it was made from (If-Match,
  http.html#concurrency): a replayed or stale form changes nothing (HT-0453).

Who: clinicians whose post the institution designates (PractitionerRole.code
``correction-officer``: 医务科/病案管理).  Ordinary clinicians neither answer nor
see the inbox: the residents' reasons often carry health details beyond any
one visit, and minimum necessary use (PIPL Art. 6) keeps them with the staff
who decide (HT-0450).  On the FHIR API too the write policy refuses their
answers and the read policy leaves the requests out of what they see
(hutong.security.policy Access.answers_corrections).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse, Response

from hutong.errors import Conflict, Forbidden, HutongError, NotFound, PreconditionFailed
from hutong.fhir.service import FhirService
from hutong.fhir.validation import check_id
from hutong.platform import Platform
from hutong.record import demographics_of
from hutong.record.build import entry_label
from hutong.record.readers import clinical_date
from hutong.security import corrections
from hutong.security.policy import Access
from hutong.security.principal import Role
from hutong.systems import REGION_TZ
from hutong.web.ui import i18n
from hutong.web.ui.pages import Pages, access_of, form_of

TASK_CODE = "https://fhir.hutong.dev/CodeSystem/task|correction-request"
OPEN = ("requested", "received", "accepted", "in-progress", "on-hold")
ANSWERED = ("completed", "rejected", "cancelled")
MAX_OPEN = 200
MAX_ANSWERED = 20
MAX_TEXT = 2000
ACTIONS = ("accept", "reject", "ask")

i18n.add({
    "cinb.title": ("更正申请", "Correction requests"),
    "cinb.intro": ("居民依《个人信息保护法》第四十六条申请更正本机构持有的记录。请核实后答复：已更正、不予更正（须说明理由）或请居民补充说明。",
                   "Residents ask, under Art. 46 of the Personal Information Protection Law, for records your "
                   "institution holds to be corrected. Check and answer: corrected, not corrected (with the "
                   "reason), or ask the resident for more."),
    "cinb.open": ("待处理", "Open"),
    "cinb.none": ("没有待处理的更正申请。", "No open correction requests."),
    "cinb.answered": ("最近的答复", "Latest answers"),
    "cinb.none_answered": ("还没有答复过的申请。", "No answers yet."),
    "cinb.item": ("申请更正的记录", "Record concerned"),
    "cinb.resident": ("申请人", "Resident"),
    "cinb.reason": ("居民说明", "What the resident says"),
    "cinb.filed": ("提交时间", "Filed"),
    "cinb.waited": ("已等待 {n} 天", "waiting {n} days"),
    "cinb.status": ("状态", "Status"),
    "cinb.handle": ("处理", "Answer"),
    "cinb.answer": ("答复", "Answer given"),
    "cinb.back": ("返回更正申请列表", "Back to correction requests"),
    "cinb.history": ("往来记录", "History"),
    "cinb.from_resident": ("居民", "Resident"),
    "cinb.from_us": ("本机构", "Your institution"),
    "cinb.unreadable": ("（该记录已不在本机构名下或已删除）", "(no longer held by your institution, or deleted)"),
    "cinb.accept": ("已核实，已更正", "Checked and corrected"),
    "cinb.accept_text": ("更正了什么（居民会看到）", "What was corrected (the resident sees this)"),
    "cinb.accept_go": ("确认已更正", "Confirm corrected"),
    "cinb.reject": ("不予更正", "Not corrected"),
    "cinb.reject_text": ("不予更正的理由（必填，居民会看到）", "Why not (required; the resident sees this)"),
    "cinb.reject_go": ("不予更正", "Refuse"),
    "cinb.ask": ("请居民补充说明", "Ask the resident for more"),
    "cinb.ask_text": ("需要居民补充什么", "What the resident should add"),
    "cinb.ask_go": ("发送给居民", "Send to the resident"),
    "cinb.need_text": ("请填写内容（最多2000字）。", "Please write something (up to 2000 characters)."),
    "cinb.done": ("答复已保存，居民会在“申请更正”页看到。", "Answer saved; the resident sees it on their "
                  "corrections page."),
    "cinb.final": ("此申请已有最终答复。", "This request has its final answer."),
    "cinb.link": ("更正申请（{n} 条待处理）", "Correction requests ({n} open)"),
    "cinb.out.corrected": ("更正内容", "What was corrected"),
    "cinb.bs.corrected": ("已更正", "Corrected"),
    "cinb.bs.not-corrected": ("不予更正", "Not corrected"),
    "cinb.bs.awaiting-information": ("待居民补充说明", "Waiting for the resident"),
    "cinb.st.requested": ("待处理", "Open"),
    "cinb.st.received": ("已收到", "Received"),
    "cinb.st.accepted": ("已受理", "Accepted"),
    "cinb.st.in-progress": ("处理中", "In progress"),
    "cinb.st.on-hold": ("待居民补充说明", "Waiting for the resident"),
    "cinb.st.completed": ("已更正", "Corrected"),
    "cinb.st.rejected": ("不予更正", "Not corrected"),
    "cinb.st.cancelled": ("居民已撤回", "Withdrawn by the resident"),
    # the error page's words for this part's codes (hutong.web.ui.pages.error_words)
    "error.HT-0450": ("只有本机构指定的岗位（医务科/病案管理）可以处理居民的更正申请。",
                      "Only the posts your institution designates (medical affairs / medical records) answer "
                      "residents' correction requests."),
    "error.HT-0451": ("答复不能改动居民的申请内容，已有最终答复的申请也不能再改。",
                      "An answer may not change the request itself, nor a final answer."),
    "error.HT-0453": ("这条申请已被处理或已有更新，请刷新页面后再试。",
                      "This request was answered or changed meanwhile; reload the page and try again."),
    "error.HT-0454": ("请填写内容（最多2000字）。", "Please write something (up to 2000 characters)."),
    "error.HT-0455": ("没有这条更正申请，或它不是发给您所在机构的。",
                      "No such correction request, or it is not addressed to your institution."),
})


@dataclass
class Note:
    who: str          # "resident" | "institution"
    time: str
    text: str


@dataclass
class Request_:
    id: str
    version: str
    status: str
    item_type: str
    item: str
    resident: str
    reason: str
    filed: str
    waited: int
    answer: str = ""
    notes: list[Note] = field(default_factory=list)


def _now() -> datetime:
    return datetime.now(REGION_TZ)


def _minute(v: Any) -> str:
    return v[:16].replace("T", " ") if isinstance(v, str) else ""


def _ref(v: Any) -> str:
    ref = v.get("reference") if isinstance(v, dict) else None
    if not isinstance(ref, str):
        return ""
    return "/".join(ref.split("/_history")[0].rstrip("/").split("/")[-2:])


def _words(cc: Any) -> str:
    if not isinstance(cc, dict):
        return ""
    if isinstance(cc.get("text"), str) and cc["text"]:
        return str(cc["text"])
    return next((str(c["display"]) for c in cc.get("coding") or [] if isinstance(c, dict) and c.get("display")), "")


def _days_since(v: Any) -> int:
    try:
        t = datetime.fromisoformat(str(v))
    except ValueError:
        return 0
    if t.tzinfo is None:
        t = t.replace(tzinfo=REGION_TZ)
    return max(0, (_now() - t).days)


def may_answer(svc: FhirService, access: Access) -> bool:
    """Is the signed-in clinician's post designated to answer correction requests?"""
    p = access.principal
    if p.role is not Role.CLINICIAN or not p.organization_id or not p.practitioner_role_id:
        return False
    try:
        role = orjson.loads(svc.read("PractitionerRole", p.practitioner_role_id).body or b"{}")
    except HutongError:
        return False
    return corrections.designated(role, p.organization_id, p.practitioner_id)


def _tasks(svc: FhirService, org: str, statuses: tuple[str, ...], count: int, sort: str) -> list[dict[str, Any]]:
    bundle = orjson.loads(svc.search("Task", [
        ("owner", f"Organization/{org}"), ("code", TASK_CODE), ("status", ",".join(statuses)),
        ("_sort", sort), ("_count", str(count))], {}).body or b"{}")
    return [e["resource"] for e in bundle.get("entry") or []
            if isinstance(e.get("resource"), dict) and e["resource"].get("resourceType") == "Task"
            and _ref(e["resource"].get("owner")) == f"Organization/{org}"]


def open_count(svc: FhirService, access: Access) -> int | None:
    """Open requests, for the workspace's link; None for clinicians who do not answer them."""
    org = access.principal.organization_id
    if org is None or not may_answer(svc, access):
        return None
    bundle = orjson.loads(svc.search("Task", [
        ("owner", f"Organization/{org}"), ("code", TASK_CODE), ("status", ",".join(OPEN)),
        ("_summary", "count")], {}).body or b"{}")
    total = bundle.get("total")
    return total if isinstance(total, int) else 0


class Inbox:
    def __init__(self, pages: Pages, platform: Platform) -> None:
        self.pages = pages
        self.platform = platform

    def service(self, request: Request) -> tuple[FhirService, Access]:
        access = access_of(request)
        access.require_role(Role.CLINICIAN, what="the correction requests inbox")
        base = self.platform.settings.base_url or str(request.base_url).rstrip("/") + "/fhir"
        return FhirService(self.platform.repo, base, access), access

    def require(self, svc: FhirService, access: Access) -> str:
        if not may_answer(svc, access):
            raise Forbidden("HT-0450", "只有本机构指定的岗位（医务科/病案管理）可以处理居民的更正申请。")
        assert access.principal.organization_id is not None
        return access.principal.organization_id

    # ------------------------------------------------------------ reading
    def _item(self, svc: FhirService, task: dict[str, Any], t: i18n.Translator) -> tuple[str, str, str]:
        """(type, the item in words, the resident's name at this institution)."""
        kind, _, rid = _ref(task.get("focus")).partition("/")
        shown = str((task.get("focus") or {}).get("display") or "")
        try:
            check_id(rid)
            res = orjson.loads(svc.read(kind, rid).body or b"{}")
        except HutongError:
            return kind, shown or t("cinb.unreadable"), ""
        words = [t("type." + kind) if ("type." + kind) in i18n.MESSAGES else "", entry_label(res)]
        q = res.get("valueQuantity")
        if isinstance(q, dict) and q.get("value") is not None:
            words.append(f"{q.get('value')} {q.get('unit') or ''}".strip())
        when = clinical_date(res)
        words.append(when[:10] if isinstance(when, str) else "")
        name = ""
        subject = _ref(res.get("subject") or res.get("patient"))
        if subject.startswith("Patient/"):
            try:
                name = demographics_of(orjson.loads(svc.read("Patient", subject[8:]).body or b"{}")).name
            except HutongError:
                name = ""
        return kind, " · ".join(w for w in words if w), name

    def row(self, svc: FhirService, task: dict[str, Any], t: i18n.Translator) -> Request_:
        kind, item, name = self._item(svc, task, t)
        notes = [Note("institution" if _ref(n.get("authorReference")).startswith("Organization/") else "resident",
                      _minute(n.get("time")), str(n.get("text") or ""))
                 for n in task.get("note") or [] if isinstance(n, dict) and n.get("text")]
        return Request_(str(task.get("id")), str((task.get("meta") or {}).get("versionId") or ""),
                        str(task.get("status") or ""), kind, item, name, str(task.get("description") or ""),
                        _minute(task.get("authoredOn")), _days_since(task.get("authoredOn")), corrections.answer_text(task),
                        notes)

    def inbox(self, svc: FhirService, org: str, t: i18n.Translator) -> dict[str, Any]:
        return {"open": [self.row(svc, x, t) for x in _tasks(svc, org, OPEN, MAX_OPEN, "authored-on")],
                "answered": [self.row(svc, x, t)
                             for x in _tasks(svc, org, ANSWERED, MAX_ANSWERED, "-_lastUpdated")]}

    def one(self, svc: FhirService, org: str, task_id: str) -> dict[str, Any]:
        """A correction request addressed to ``org``; any other Task, or one
        another institution holds (even one this clinician may read through a
        treatment basis), is not found here (HT-0455)."""
        try:
            check_id(task_id)
            task: dict[str, Any] = orjson.loads(svc.read("Task", task_id).body or b"{}")
        except HutongError as e:
            raise NotFound("HT-0455", "没有这条发给本机构的更正申请。") from e
        codes = {f"{c.get('system')}|{c.get('code')}" for c in (task.get("code") or {}).get("coding") or []
                 if isinstance(c, dict)}
        if TASK_CODE not in codes or _ref(task.get("owner")) != f"Organization/{org}":
            raise NotFound("HT-0455", "没有这条发给本机构的更正申请。")
        return task

    # ------------------------------------------------------------ answering
    def answer(self, svc: FhirService, org: str, task_id: str, action: str, text: str, version: str) -> None:
        task = self.one(svc, org, task_id)
        if task.get("status") not in OPEN or str((task.get("meta") or {}).get("versionId")) != version:
            raise Conflict("HT-0453", "这条申请已被处理或已有更新，请刷新页面后再答复。")
        now = _now().isoformat(timespec="seconds")
        new = {k: v for k, v in task.items() if k != "meta"}
        new["lastModified"] = now
        if action == "accept":
            new["status"] = "completed"
            new["businessStatus"] = _business(corrections.CORRECTED, "已更正")
            new["output"] = [*(task.get("output") or []),
                             {"type": {"text": i18n.MESSAGES["cinb.out.corrected"][0]}, "valueString": text}]
        elif action == "reject":
            new["status"] = "rejected"
            new["businessStatus"] = _business(corrections.NOT_CORRECTED, "不予更正")
            new["statusReason"] = {"text": text}
        else:
            new["status"] = "on-hold"
            new["businessStatus"] = _business(corrections.AWAITING, "待居民补充说明")
            new["note"] = [*(task.get("note") or []),
                           {"authorReference": {"reference": f"Organization/{org}"}, "time": now, "text": text}]
        try:
            # If-Match: the version the form was made from (a replay or a second answer
            # meanwhile is refused inside the transaction, not just here).
            svc.update("Task", task_id, orjson.dumps(new), {"if-match": f'W/"{version}"'})
        except PreconditionFailed as e:
            raise Conflict("HT-0453", "这条申请已被处理或已有更新，请刷新页面后再答复。") from e


def _business(code: str, words: str) -> dict[str, Any]:
    return {"coding": [{"system": corrections.BUSINESS_SYSTEM, "code": code, "display": words}], "text": words}


def register(app: FastAPI, pages: Pages, platform: Platform) -> Inbox:
    inbox = Inbox(pages, platform)

    @app.get("/clinician/corrections", response_class=HTMLResponse)
    async def corrections_inbox(request: Request) -> Response:
        svc, access = inbox.service(request)
        t = i18n.Translator(pages.lang(request))

        def work() -> dict[str, Any]:
            return inbox.inbox(svc, inbox.require(svc, access), t)

        ctx = await run_in_threadpool(work)
        return pages.render(request, "clinician/corrections.html", done=request.query_params.get("done"), **ctx)

    @app.get("/clinician/corrections/{task_id}", response_class=HTMLResponse)
    async def correction_request(task_id: str, request: Request) -> Response:
        svc, access = inbox.service(request)
        t = i18n.Translator(pages.lang(request))

        def work() -> dict[str, Any]:
            org = inbox.require(svc, access)
            return {"r": inbox.row(svc, inbox.one(svc, org, task_id), t)}

        ctx = await run_in_threadpool(work)
        return pages.render(request, "clinician/correction.html", problem=None, form={}, open=OPEN, **ctx)

    @app.post("/clinician/corrections/{task_id}")
    async def correction_answer(task_id: str, request: Request) -> Response:
        svc, access = inbox.service(request)
        form = await form_of(request)
        action = form.get("action", "")
        text = form.get("text", "").strip()
        t = i18n.Translator(pages.lang(request))
        if action not in ACTIONS or not text or len(text) > MAX_TEXT:
            def again() -> dict[str, Any]:
                org = inbox.require(svc, access)
                return {"r": inbox.row(svc, inbox.one(svc, org, task_id), t)}

            ctx = await run_in_threadpool(again)
            return pages.render(request, "clinician/correction.html", status=400, problem="cinb.need_text",
                                form={"action": action, "text": text[:MAX_TEXT]}, open=OPEN, **ctx)

        def go() -> None:
            inbox.answer(svc, inbox.require(svc, access), task_id, action, text, form.get("version", ""))

        await run_in_threadpool(go)
        return RedirectResponse("/clinician/corrections?done=1", status_code=303)

    return inbox


__all__ = ["Inbox", "may_answer", "open_count", "register"]
