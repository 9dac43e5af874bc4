"""The ordering panel of the clinician workspace (issue 14, item 5): pick lab and imaging items
and drugs, see what the platform's CDS Hooks 2.0 services answer, accept or override.

Pages (under the gate like every clinician page; plain forms, no script needed):

- ``GET /clinician/patient/{person}/order?reason=...``: the catalogue (the 互认项目清单 of the
  approved knowledge in force, hutong.cds.versions, and a small drug list) and the current draft.
- ``POST /clinician/patient/{person}/order`` (``step`` = ``select`` | ``sign``): the picked items
  become draft orders (FHIR ServiceRequest / MedicationRequest, status ``draft``) and the
  ``order-select`` or ``order-sign`` hook is called with them (CDS Hooks 2.0 "Calling a CDS
  Service"; hook definitions order-select and order-sign: ``draftOrders``, ``selections``).
- ``POST /clinician/patient/{person}/order/feedback``: the clinician accepts a card's suggestion
  (its draft order is dropped: 已采用外院结果) or overrides it with one of the card's
  ``overrideReasons`` (不互认理由; "其他" needs the clinician's words); sent as CDS Hooks 2.0
  "Feedback" (acceptedSuggestions / overrideReason with userComment), which the service
  records on the audit trail as it does for any EMR.

The hooks are called in process through :class:`hutong.cds.service.CdsHooks` with the page
request's own Access (the same ``call``/``feedback`` the HTTP routes in hutong.web.cds_routes
run, with the same rules): a card shows only what this clinician may see, and the feedback is
checked against the cards this clinician was given.  The record's access step comes first: the
panel opens only with the reason the server finds again (as the record page).

The platform stores no orders today (no ServiceRequest is written): the panel's orders stay a
draft carried by the forms; "签署" runs the order-sign check and says the draft may now be signed
in the institution's own system.  The recognition counts come from the recorded feedback.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request
from markupsafe import Markup, escape
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, Response

from hutong.cds import allergy_rule, privileges_rule, recognition
from hutong.cds.cards import OVERRIDE_REASON_SYSTEM
from hutong.cds.knowledge import ITEM_SYSTEM, LOINC, Item, Knowledge
from hutong.cds.privileges_rule import ATC_SYSTEM
from hutong.cds.service import CdsHooks
from hutong.cds.versions import KnowledgeVersions
from hutong.errors import Forbidden, HutongError, InvalidRequest
from hutong.fhir.service import FhirService
from hutong.platform import Platform
from hutong.record import demographics_of
from hutong.security.events import AuditRecord
from hutong.security.policy import Access
from hutong.store.repository import Repository, Writer
from hutong.web.cds_routes import default_rules
from hutong.web.ui import i18n
from hutong.web.ui.pages import Pages, form_of

if TYPE_CHECKING:  # clinician.register registers this panel: no import at run time
    from hutong.web.ui.clinician import ClinicianPortal

SELECT_SERVICE = "hutong-order-select"
SIGN_SERVICE = "hutong-order-sign"
SERVICES = {"select": SELECT_SERVICE, "sign": SIGN_SERVICE}
MAX_DRAFT = 20          # items in one draft (a form with more is refused: HT-0541)
MAX_COMMENT = 500       # the clinician's words on an override
DRAFT_PREFIX = "draft-"
_KEY = re.compile(r"^[A-Za-z0-9.\-]{1,60}$")
_TOKEN = re.compile(r"^[0-9a-f]{12}$")
_BOLD = re.compile(r"\*\*(.+?)\*\*")

i18n.add({
    "ord.title": ("开具检查检验与处方", "Orders"),
    "ord.open": ("开具检查检验与处方（互认核对）", "Place orders (with mutual recognition check)"),
    "ord.back": ("返回档案", "Back to the record"),
    "ord.intro": ("勾选检查检验项目或药品后点“核对所选医嘱”：区域平台按互认清单查找其他医院的可互认结果，"
                  "并核对处方权、抗菌药物分级与药物过敏。",
                  "Tick items or drugs and press check: the platform looks for recognisable results "
                  "elsewhere and checks privileges and drug allergies."),
    "ord.catalogue": ("选择项目", "Pick items"),
    "ord.labs": ("检验项目", "Lab tests"),
    "ord.imaging": ("检查（影像）项目", "Imaging"),
    "ord.drugs": ("药品", "Drugs"),
    "ord.no_knowledge": ("暂无已批准生效的互认项目清单，只能开具药品。", "No approved recognition list is in "
                         "force: drugs only."),
    "ord.check": ("核对所选医嘱", "Check the picked orders"),
    "ord.draft": ("医嘱草稿", "Draft orders"),
    "ord.draft_none": ("尚未选择任何项目。", "Nothing picked yet."),
    "ord.draft_note": ("本平台不保存医嘱：核对完成后，请在本院系统中签署提交。", "The platform stores no orders: "
                       "sign them in your institution's system once checked."),
    "ord.sign": ("签署前核对", "Check before signing"),
    "ord.cards": ("决策支持提示", "Decision support"),
    "ord.cards_none": ("没有提示：所选医嘱未发现可互认的结果或处方问题。", "No cards: nothing to recognise and "
                       "no prescribing problem."),
    "ord.signed_ok": ("签署前核对已完成，以下医嘱草稿可在本院系统中签署。", "The check before signing is "
                      "complete; these drafts may be signed in your institution's system."),
    "ord.ind.info": ("提示", "Info"),
    "ord.ind.warning": ("警告", "Warning"),
    "ord.ind.critical": ("禁止", "Hard stop"),
    "ord.source": ("来源：{label}", "Source: {label}"),
    "ord.accept": ("采用", "Accept"),
    "ord.override": ("不采用，仍然开单", "Override and keep the order"),
    "ord.override_reason": ("不采用的理由", "Override reason"),
    "ord.comment": ("补充说明（选择“其他”时必填）", "Comment (required for 'other')"),
    "ord.accepted": ("已采用外院结果：{name} 本次不再开单。", "Result from elsewhere accepted: {name} dropped."),
    "ord.accepted_other": ("已采用建议：{name} 已从草稿中撤下。", "Suggestion accepted: {name} removed from "
                           "the draft."),
    "ord.overridden": ("已记录不采用的理由：{reason}（{name}）。", "Override recorded: {reason} ({name})."),
    "ord.decided": ("已说明理由", "override recorded"),
    "ord.need_text": ("选择“其他”时，请填写具体理由。", "Write the reason when choosing 'other'."),
    "ord.need_reason": ("请选择不采用的理由。", "Choose an override reason."),
    "ord.kind.lab": ("检验", "Lab"),
    "ord.kind.imaging": ("检查", "Imaging"),
    "ord.kind.drug": ("药品", "Drug"),
    "ord.open_record": ("在互通查看该结果", "Open the result in the record"),
    "error.HT-0540": ("当前账号未关联执业医师信息，无法开具医嘱。", "This account is not linked to a practitioner: "
                      "it cannot place orders."),
    "error.HT-0541": ("医嘱草稿无效（未知项目或项目过多），请重新选择。", "The draft is not valid (unknown item or too "
                      "many items); pick again."),
    "error.HT-0542": ("提交的决策支持反馈无效，请重新核对医嘱。", "The feedback form is not valid; check the orders "
                      "again."),
})


@dataclass(frozen=True, slots=True)
class Drug:
    atc: str
    name: str


# A small drug list for the panel (WHO ATC codes, http://www.whocc.no/atc): antibiotics of the three
# tiers of the region's catalogue (hutong.cds.safety_config.DEFAULT_TIERS) and common chronic-care drugs.
DRUGS: tuple[Drug, ...] = (
    Drug("J01CA04", "阿莫西林胶囊"),
    Drug("J01DC02", "头孢呋辛酯片"),
    Drug("J01MA12", "左氧氟沙星片"),
    Drug("J01DD04", "注射用头孢曲松钠"),
    Drug("J01DH02", "注射用美罗培南"),
    Drug("A10BA02", "二甲双胍片"),
    Drug("C08CA01", "氨氯地平片"),
    Drug("B01AC06", "阿司匹林肠溶片"),
)
_DRUGS = {d.atc: d for d in DRUGS}
# The override reasons' words for the notice after an override (the rules' own fixed lists).
REASON_WORDS = {c.code: c.display for m in (allergy_rule, privileges_rule, recognition)
                for c in m.OVERRIDE_REASONS}
REASON_WORDS["other"] = "其他"


@dataclass
class Draft:
    """The picked items (the state the forms carry): item keys, drug ATC codes, and the
    orders whose card was overridden (they stay in the draft, no longer checked).  ``token``
    names this draft: an order's id is the token and its item, the same at order-select and
    order-sign (the 互认 dashboard counts one order once, hutong.cds.recognition_stats) and
    different for another draft (another patient, another day)."""

    items: list[str] = field(default_factory=list)
    drugs: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def order_id(self, code: str) -> str:
        return f"{DRAFT_PREFIX}{self.token}-{code}"

    def order_ids(self) -> list[str]:
        return [self.order_id(k) for k in self.items] + [self.order_id(a) for a in self.drugs]


@dataclass(frozen=True, slots=True)
class Line:
    """One draft order as the page lists it."""

    order_id: str
    kind: str       # lab | imaging | drug
    name: str
    decided: bool


@dataclass(frozen=True, slots=True)
class CardView:
    """A card of the hook's answer as the page shows it (CDS Hooks 2.0 "Card Attributes")."""

    uuid: str
    summary: str
    indicator: str
    source: str
    detail: Markup
    suggestions: tuple[tuple[str, str, str], ...]   # (uuid, label, draft order id it removes)
    reasons: tuple[tuple[str, str], ...]            # (code, display)
    links: tuple[tuple[str, str], ...]              # (label, url) within the workspace
    order_id: str
    recognition: bool = False                       # a 互认 card (its topic is a standard item)


class _ReadOnly:
    """The knowledge is only read here; a write through it would be a wiring error."""

    def record(self, rec: AuditRecord) -> int:
        raise RuntimeError("the ordering panel does not change knowledge")

    def record_in(self, w: Writer, rec: AuditRecord) -> int:
        raise RuntimeError("the ordering panel does not change knowledge")


def knowledge_in_force(repo: Repository) -> Knowledge | None:
    """The 互认 knowledge of the approved version in force today (hutong.cds.versions), read only."""
    return KnowledgeVersions(repo, _ReadOnly()).in_force()


def detail_html(text: str) -> Markup:
    """A card's detail (CDS Hooks 2.0: GitHub Flavored Markdown) as safe HTML: paragraphs,
    ``- `` lists and ``**bold**``; everything else is escaped text."""
    out: list[str] = []
    in_list = False
    for raw in text.splitlines():
        line = raw.strip()
        body = _BOLD.sub(r"<strong>\1</strong>", str(escape(line[2:] if line.startswith("- ") else line)))
        if line.startswith("- "):
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{body}</li>")
            continue
        if in_list:
            out.append("</ul>")
            in_list = False
        if line:
            out.append(f"<p>{body}</p>")
    if in_list:
        out.append("</ul>")
    return Markup("".join(out))  # noqa: S704 - every piece above was escaped first


def draft_of(form: Any) -> Draft:
    """The draft the form carries (``item``, ``drug``, ``done`` repeated), checked for shape."""
    def many(key: str) -> list[str]:
        vals = [str(v) for v in form.getlist(key)] if hasattr(form, "getlist") else []
        out = list(dict.fromkeys(v for v in vals if v))
        if any(not _KEY.match(v) for v in out):
            raise InvalidRequest("HT-0541", f"form field {key!r} holds a value that is not a code")
        return out
    token = form.get("draft") if hasattr(form, "get") else None
    d = Draft(many("item"), many("drug"), many("done"))
    if isinstance(token, str) and _TOKEN.match(token):
        d.token = token
    if len(d.items) + len(d.drugs) > MAX_DRAFT:
        raise InvalidRequest("HT-0541", f"at most {MAX_DRAFT} items in one draft")
    if any(a not in _DRUGS for a in d.drugs):
        raise InvalidRequest("HT-0541", "a drug not on the panel's list")
    d.done = [x for x in d.done if x in d.order_ids()]
    return d


class OrderingPanel:
    def __init__(self, pages: Pages, platform: Platform) -> None:
        self.pages = pages
        self.platform = platform
        # The service the HTTP routes run (hutong.web.cds_routes), with the same rules.
        self.hooks = CdsHooks(platform.repo, platform.authenticator, platform.audit, default_rules())

    # ------------------------------------------------------------ knowledge and drafts
    def knowledge(self, access: Access) -> Knowledge | None:
        return knowledge_in_force(self.platform.repo.acting_as(access))

    def catalogue(self, k: Knowledge | None) -> tuple[list[Item], list[Item]]:
        items = list(k.items.values()) if k is not None else []
        return [i for i in items if i.kind == "lab"], [i for i in items if i.kind == "imaging"]

    def check_items(self, k: Knowledge | None, d: Draft) -> None:
        if d.items and (k is None or any(key not in k.items for key in d.items)):
            raise InvalidRequest("HT-0541", "an item not on the recognition list in force")

    def lines(self, k: Knowledge | None, d: Draft) -> list[Line]:
        out = [Line(d.order_id(key), k.items[key].kind, k.items[key].name, d.order_id(key) in d.done)
               for key in d.items if k is not None and key in k.items]
        out += [Line(d.order_id(a), "drug", _DRUGS[a].name, d.order_id(a) in d.done) for a in d.drugs]
        return out

    def orders(self, k: Knowledge | None, d: Draft, person: str, user: str) -> list[dict[str, Any]]:
        """The draft as FHIR resources (status ``draft``, the hooks' ``draftOrders``)."""
        subject = {"reference": f"Patient/{person}"}
        requester = {"reference": user}
        out: list[dict[str, Any]] = []
        for key in d.items:
            if k is None or key not in k.items:
                continue
            it = k.items[key]
            codings = [{"system": ITEM_SYSTEM, "code": it.key, "display": it.name}]
            if it.loinc:
                codings.append({"system": LOINC, "code": it.loinc})
            if it.proc_system and it.proc_code:
                codings.append({"system": it.proc_system, "code": it.proc_code})
            out.append({"resourceType": "ServiceRequest", "id": d.order_id(key), "status": "draft",
                        "intent": "order", "subject": subject, "requester": requester,
                        "code": {"coding": codings, "text": it.name}})
        for a in d.drugs:
            out.append({"resourceType": "MedicationRequest", "id": d.order_id(a), "status": "draft",
                        "intent": "order", "subject": subject, "requester": requester,
                        "medicationCodeableConcept": {"coding": [{"system": ATC_SYSTEM, "code": a,
                                                                  "display": _DRUGS[a].name}],
                                                      "text": _DRUGS[a].name}})
        return out

    @staticmethod
    def user_of(access: Access) -> str:
        """context.userId: the clinician's post (privileges are read from it), else the practitioner."""
        p = access.principal
        if p.practitioner_role_id:
            return f"PractitionerRole/{p.practitioner_role_id}"
        if p.practitioner_id:
            return f"Practitioner/{p.practitioner_id}"
        raise Forbidden("HT-0540", "this clinician account is not linked to a Practitioner: no orders")

    # ------------------------------------------------------------ the hooks
    def call(self, access: Access, step: str, person: str, k: Knowledge | None, d: Draft, base: str,
             peer: str | None) -> list[CardView]:
        """One hook call over the draft's undecided orders (nothing to check: no call)."""
        user = self.user_of(access)
        orders = [o for o in self.orders(k, d, person, user) if o["id"] not in d.done]
        if not orders:
            return []
        hook = "order-select" if step == "select" else "order-sign"
        context: dict[str, Any] = {"userId": user, "patientId": person, "draftOrders": {
            "resourceType": "Bundle", "type": "collection", "entry": [{"resource": o} for o in orders]}}
        if step == "select":
            context["selections"] = [f"{o['resourceType']}/{o['id']}" for o in orders]
        body = orjson.dumps({"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context})
        out = self.hooks.call(SERVICES[step], body, access, base_url=base, peer=peer)
        site = base.removesuffix("/fhir").rstrip("/")
        return [self.view(c, site) for c in out.get("cards") or ()]

    @staticmethod
    def view(c: dict[str, Any], site: str) -> CardView:
        suggestions = []
        order_id = ""
        for s in c.get("suggestions") or ():
            drop = next((str(a.get("resourceId", "")).rpartition("/")[2] for a in s.get("actions") or ()
                         if a.get("type") == "delete"), "")
            order_id = order_id or drop
            suggestions.append((str(s.get("uuid", "")), str(s.get("label", "")), drop))
        reasons = tuple((str(r.get("code", "")), str(r.get("display") or r.get("code", "")))
                        for r in c.get("overrideReasons") or ())
        links = []
        for ln in c.get("links") or ():
            url = str(ln.get("url", ""))
            # Only the workspace's own pages (a FHIR URL answers JSON, not a page).
            if site and url.startswith(site + "/clinician/"):
                links.append((str(ln.get("label", "")), url[len(site):]))
        source = c.get("source") or {}
        return CardView(str(c.get("uuid", "")), str(c.get("summary", "")), str(c.get("indicator", "info")),
                        str(source.get("label", "")), detail_html(str(c.get("detail", ""))),
                        tuple(suggestions), reasons, tuple(links), order_id,
                        (source.get("topic") or {}).get("system") == ITEM_SYSTEM)

    def feedback(self, access: Access, step: str, card: str, outcome: str, suggestion: str, reason: str,
                 comment: str, peer: str | None) -> None:
        """CDS Hooks 2.0 "Feedback" for one card, checked and recorded by the service."""
        item: dict[str, Any] = {"card": card, "outcome": outcome,
                                "outcomeTimestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z")}
        if outcome == "accepted":
            item["acceptedSuggestions"] = [{"id": suggestion}]
        elif reason:
            over: dict[str, Any] = {"reason": {"system": OVERRIDE_REASON_SYSTEM, "code": reason}}
            if comment:
                over["userComment"] = comment
            item["overrideReason"] = over
        self.hooks.feedback(SERVICES[step], orjson.dumps({"feedback": [item]}), access, peer=peer)


def _with_reason(links: Sequence[tuple[str, str]], reason: str) -> list[tuple[str, str]]:
    return [(label, url + ("&" if "?" in url else "?") + f"reason={reason}") for label, url in links]


def register(app: FastAPI, pages: Pages, platform: Platform, portal: ClinicianPortal) -> OrderingPanel:
    """The panel's routes; ``portal`` is the workspace's ClinicianPortal (role check, access step)."""
    panel = OrderingPanel(pages, platform)

    def base_of(request: Request) -> str:
        return platform.settings.base_url or str(request.base_url).rstrip("/") + "/fhir"

    def page(request: Request, svc: FhirService, access: Access, person: str, reason: str, d: Draft,
             cards: list[CardView] | None, step: str, notices: list[str], problem: str | None,
             status: int = 200) -> Response:
        def load() -> dict[str, Any]:
            k = panel.knowledge(access)
            labs, imaging = panel.catalogue(k)
            demo = demographics_of(orjson.loads(svc.read("Patient", person).body or b"{}"))
            return {"k": k, "labs": labs, "imaging": imaging, "lines": panel.lines(k, d), "demo": demo}
        return pages.render(request, "clinician/order.html", status=status, person=person, reason=reason,
                            draft=d, drugs=DRUGS, cards=cards, step=step, notices=notices, problem=problem,
                            cards_links={c.uuid: _with_reason(c.links, reason) for c in cards or ()},
                            **load())

    @app.get("/clinician/patient/{person}/order", response_class=HTMLResponse)
    async def order_panel(person: str, request: Request) -> Response:
        svc, access = portal.service(request)
        reason = await run_in_threadpool(portal.check_reason, svc, access, person,
                                         request.query_params.get("reason"))
        return await run_in_threadpool(page, request, svc, access, person, reason, Draft(), None, "", [], None)

    @app.post("/clinician/patient/{person}/order", response_class=HTMLResponse)
    async def order_check(person: str, request: Request) -> Response:
        svc, access = portal.service(request)
        form = await form_of(request)
        raw = await request.form()  # cached by Starlette: the repeated fields
        step = form.get("step", "select")
        if step not in SERVICES:
            raise InvalidRequest("HT-0541", "step must be select or sign")
        peer = request.client.host if request.client else None

        def work() -> Response:
            reason = portal.check_reason(svc, access, person, form.get("reason"))
            d = draft_of(raw)
            if step == "select":
                d.done = []  # a new pick is checked afresh
            k = panel.knowledge(access)
            panel.check_items(k, d)
            cards = panel.call(access, step, person, k, d, base_of(request), peer)
            return page(request, svc, access, person, reason, d, cards, step, [], None)
        return await run_in_threadpool(work)

    @app.post("/clinician/patient/{person}/order/feedback", response_class=HTMLResponse)
    async def order_feedback(person: str, request: Request) -> Response:
        svc, access = portal.service(request)
        form = await form_of(request)
        raw = await request.form()
        step = form.get("step", "")
        outcome = form.get("outcome", "")
        if step not in SERVICES or outcome not in ("accepted", "overridden"):
            raise InvalidRequest("HT-0542", "step (select|sign) and outcome (accepted|overridden) are required")
        card, suggestion, drop = form.get("card", ""), form.get("suggestion", ""), form.get("drop", "")
        code = form.get("reason_code", "")
        comment = form.get("comment", "").strip()[:MAX_COMMENT]
        peer = request.client.host if request.client else None

        def work() -> Response:
            reason = portal.check_reason(svc, access, person, form.get("reason"))
            d = draft_of(raw)
            k = panel.knowledge(access)
            panel.check_items(k, d)
            names = {ln.order_id: ln.name for ln in panel.lines(k, d)}
            notices: list[str] = []
            problem = None
            t = i18n.Translator(pages.lang(request))
            if outcome == "overridden" and not code:
                problem = "ord.need_reason"
            elif outcome == "overridden" and code == "other" and not comment:
                problem = "ord.need_text"
            if problem is None:
                try:
                    panel.feedback(access, step, card, outcome, suggestion, code, comment, peer)
                except HutongError as e:
                    if e.code not in ("HT-0532", "HT-0533", "HT-0534"):
                        raise
                    raise InvalidRequest("HT-0542", f"feedback refused ({e.code}): {e.message}") from e
                name = names.get(drop, "")
                if outcome == "accepted":
                    recognised = form.get("rule") == "recognition"
                    notices.append(t("ord.accepted" if recognised else "ord.accepted_other", name=name))
                    d.items = [x for x in d.items if d.order_id(x) != drop]
                    d.drugs = [x for x in d.drugs if d.order_id(x) != drop]
                else:
                    notices.append(t("ord.overridden", reason=REASON_WORDS.get(code, code), name=name))
                    if drop and drop not in d.done:
                        d.done.append(drop)
            cards = panel.call(access, step, person, k, d, base_of(request), peer)
            return page(request, svc, access, person, reason, d, cards, step, notices, problem,
                        status=400 if problem else 200)
        return await run_in_threadpool(work)

    return panel


__all__ = ["DRUGS", "CardView", "Draft", "OrderingPanel", "detail_html", "draft_of", "register"]
