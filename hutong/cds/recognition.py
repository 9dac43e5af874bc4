"""Mutual recognition of results at ordering time (检查检验结果互认; issue 14, item 3).

For each draft ServiceRequest of an ``order-select`` or ``order-sign`` call (CDS Hooks 2.0,
hooks order-select / order-sign: ``context.draftOrders``), :func:`find_equivalents` looks for a
result of the same standard item among the patient's results across every source patient the
MPI links to them, read only through the caller's Access (:class:`hutong.cds.cards.RecordSource`:
a clinician without a basis for another institution's records gets nothing from it, so no card
content either).  A result counts when:

- it is the same item: the order's code and the result's code resolve to one standard item
  (LOINC, the item code system, the exam's procedure code, or a local code through the
  institution's ConceptMap; imaging also by DICOM modality + SNOMED CT body site);
- its institution is in a region the item's scope mark covers, and the result is no older than
  that item's window for that region (可互认时间, in Beijing days);
- its institution passed the item's quality control (室间质评 / imaging QC) on the result's day;
- neither the item nor a situation of this order is on the 负面清单: the order's priority
  (stat / asap: 急诊), the encounter's class (EMER), a code in the order's reasonCode or in the
  patient's active Conditions (妊娠: ICD-10 O, Z33, Z34), or a situation named outright.

The record is read per ordered item, narrowed in SQL where the record source can
(:class:`SearchableRecords`: ``code`` = every code of the item, ``date``/``started`` >= its
longest window, and a report's ``issued`` for one without an effective date), so a long
record costs what the orders need: a patient with 2,000 results across five institutions, one
draft order, p50 28 ms / p99 62 ms in process on SQLite (159 / 860 ms reading every result).

The knowledge comes from the approved version in force today (hutong.cds.versions); with none,
the rule says nothing.  ``order-select`` answers one information card per order with an
equivalent (result, value, date, institution, scope mark, links to open it) and a suggestion that
deletes the draft order; ``order-sign`` a warning card whose override needs one of the fixed
不互认理由 (:data:`OVERRIDE_REASONS`; "其他" with the clinician's own words in the feedback's
userComment, CDS Hooks 2.0 "Feedback", overrideReason).  Accepting and overriding are recorded
by the service's feedback endpoint (hutong.cds.service).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from hutong.cds.cards import (
    ORDER_SELECT,
    ORDER_SIGN,
    Action,
    Card,
    Coding,
    HookRequest,
    Link,
    RecordSource,
    RuleContext,
    Source,
    Suggestion,
)
from hutong.cds.knowledge import ITEM_SYSTEM, SITUATION_SYSTEM, Item, ItemRegion, Knowledge, Quality
from hutong.cds.versions import KnowledgeVersions
from hutong.security.events import AuditRecord
from hutong.store.repository import Writer
from hutong.systems import EXT_BASE, ORGANIZATION, REGION_TZ

RULE_ID = "hutong-recognition"
REGION_EXT = EXT_BASE + "region-code"   # Organization: GB/T 2260 district (hutong.synth.institutions)
ACTIVE_CONDITION = ("active", "recurrence", "relapse")
FINAL = ("final", "amended", "corrected", "appended")

# 不互认理由: why a clinician orders again although a recognisable result exists.
OVERRIDE_REASONS = (
    Coding("condition-changed", display="病情变化"),
    Coding("result-doubtful", display="结果存疑"),
    Coding("quality-concern", display="质量问题"),
    Coding("patient-request", display="患者要求"),
    Coding("other", display="其他(需填写)"),
)


@dataclass(frozen=True, slots=True)
class Institution:
    org_id: str
    code: str                  # 机构代码
    name: str
    region: str                # GB/T 2260 province prefix ('' unknown)


@dataclass(frozen=True, slots=True)
class Equivalent:
    """A recognisable result for one draft order."""

    order_id: str
    item: Item
    resource_type: str
    resource_id: str
    when: str                  # the result's date-time as written
    day: str                   # YYYY-MM-DD
    age_days: int
    value: str
    institution: Institution
    rule: ItemRegion           # the window and scope mark that applied
    quality: Quality


@dataclass(frozen=True, slots=True)
class Candidate:
    item: Item
    resource: dict[str, Any]
    when: str
    day: str                   # the Beijing day of ``when`` ('' when unreadable)


def _candidate(item: Item, res: dict[str, Any], when: Any) -> Candidate:
    return Candidate(item, res, str(when or ""), region_day(str(when or "")))


def region_day(when: str) -> str:
    """The Beijing day of a FHIR dateTime (datatypes.html#dateTime): one with a zone is converted
    (23:30Z is the next morning in Beijing); a date, or a time without zone, is taken as written."""
    if len(when) < 10:
        return ""
    if len(when) > 10:
        try:
            t = datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError:
            return ""
        if t.tzinfo is not None:
            return t.astimezone(REGION_TZ).date().isoformat()
    try:
        return date.fromisoformat(when[:10]).isoformat()
    except ValueError:
        return ""


def result_when(res: dict[str, Any]) -> str:
    """When a result was made, as written: effective[x] (dateTime, instant or a period's start),
    an ImagingStudy's ``started``, else a report's ``issued``.  An Observation or report
    measured over a period (effectivePeriod) counts from its start."""
    for key in ("effectiveDateTime", "effectiveInstant", "started"):
        if isinstance(res.get(key), str) and res[key]:
            return str(res[key])
    period = res.get("effectivePeriod")
    if isinstance(period, dict) and isinstance(period.get("start") or period.get("end"), str):
        return str(period.get("start") or period.get("end"))
    return str(res.get("issued") or "") if isinstance(res.get("issued"), str) else ""


def _today(now: datetime) -> date:
    return (now if now.tzinfo else now.replace(tzinfo=UTC)).astimezone(REGION_TZ).date()


def _ref_id(ref: Any, type: str) -> str | None:
    if not isinstance(ref, dict) or not isinstance(ref.get("reference"), str):
        return None
    kind, _, rid = ref["reference"].split("/_history")[0].rstrip("/").rpartition("/")
    return rid if rid and kind.rsplit("/", 1)[-1] == type else None


def _codings(cc: Any) -> list[tuple[str, str]]:
    if not isinstance(cc, dict):
        return []
    return [(str(c.get("system") or ""), str(c["code"])) for c in cc.get("coding") or ()
            if isinstance(c, dict) and isinstance(c.get("code"), str)]


def _text(cc: Any) -> str:
    if not isinstance(cc, dict):
        return ""
    if isinstance(cc.get("text"), str) and cc["text"]:
        return str(cc["text"])
    for c in cc.get("coding") or ():
        if isinstance(c, dict) and (c.get("display") or c.get("code")):
            return str(c.get("display") or c.get("code"))
    return ""


def _number(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return ""
    return str(int(v)) if v == int(v) and abs(v) < 1e15 else f"{v:.10g}"


def _obs_value(o: dict[str, Any]) -> str:
    q = o.get("valueQuantity")
    if isinstance(q, dict) and _number(q.get("value")):
        return f"{q.get('comparator') or ''}{_number(q.get('value'))} {q.get('unit') or q.get('code') or ''}".strip()
    if isinstance(o.get("valueCodeableConcept"), dict):
        return _text(o["valueCodeableConcept"])
    if isinstance(o.get("valueString"), str):
        return str(o["valueString"])
    return ""


class _Situations:
    """The clinical situations of one order (negative list), from the knowledge's triggers."""

    def __init__(self, k: Knowledge, request: HookRequest, records: RecordSource) -> None:
        self.k = k
        self.records = records
        self.request = request
        self._conditions: list[tuple[str, str]] | None = None
        self._classes: dict[str, str] = {}

    def _code_hits(self, codes: list[tuple[str, str]]) -> set[str]:
        out = set()
        for t in self.k.triggers:
            for system, code in codes:
                if system != t.system:
                    continue
                if (t.kind == "code" and code == t.value) or (t.kind == "code_prefix" and code.startswith(t.value)):
                    out.add(t.situation)
        return out

    def _patient_conditions(self) -> list[tuple[str, str]]:
        if self._conditions is None:
            self._conditions = []
            if any(t.kind in ("code", "code_prefix") and t.system != SITUATION_SYSTEM for t in self.k.triggers):
                for c in self.records.resources("Condition"):
                    status = [code for _s, code in _codings(c.get("clinicalStatus"))]
                    if c.get("abatementDateTime") or (status and not set(status) & set(ACTIVE_CONDITION)):
                        continue
                    self._conditions += _codings(c.get("code"))
        return self._conditions

    def _encounter_class(self, enc_id: str | None) -> str:
        if not enc_id:
            return ""
        if enc_id not in self._classes:
            e = self.records.read("Encounter", enc_id)
            cls = (e or {}).get("class")
            self._classes[enc_id] = str(cls.get("code") or "") if isinstance(cls, dict) else ""
        return self._classes[enc_id]

    def of(self, order: dict[str, Any]) -> set[str]:
        out: set[str] = set()
        priority = order.get("priority")
        enc = _ref_id(order.get("encounter"), "Encounter") or self.request.encounter_id
        cls = self._encounter_class(enc) if any(t.kind == "encounter_class" for t in self.k.triggers) else ""
        for t in self.k.triggers:
            if (t.kind == "priority" and priority == t.value) or (t.kind == "encounter_class" and cls == t.value):
                out.add(t.situation)
        reasons: list[tuple[str, str]] = []
        for rc in order.get("reasonCode") or ():
            reasons += _codings(rc)
        out |= self._code_hits(reasons)
        out |= self._code_hits(self._patient_conditions())
        return out


class SearchableRecords(Protocol):
    """A record source that can also narrow a type's rows by FHIR search parameters, in SQL
    (hutong.cds.service.AccessRecords.search): the rule then reads only the rows of the ordered
    items within their windows instead of every result of a long record."""

    def search(self, type: str, params: Sequence[tuple[str, str]]) -> list[dict[str, Any]]: ...


class _Results:
    """The patient's results of each ordered item that the caller may see, and their institutions."""

    def __init__(self, k: Knowledge, records: RecordSource, today: date) -> None:
        self.k = k
        self.records = records
        self.today = today
        self._patients: dict[str, dict[str, Any] | None] = {}
        self._orgs: dict[str, Institution | None] = {}
        self._candidates: dict[str, list[Candidate]] = {}
        self._reports: dict[str, list[dict[str, Any]]] = {}

    def _rows(self, type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        search = getattr(self.records, "search", None)
        if search is not None:
            rows: list[dict[str, Any]] = search(type, params)
            return rows
        return self.records.resources(type)

    def candidates(self, item: Item) -> list[Candidate]:
        """The results of ``item`` no older than its longest window, newest first; on one day a
        report before a study before a single value."""
        if item.key not in self._candidates:
            cs = self._of_item(item)
            cs.sort(key=lambda c: (c.day, _RANK.get(str(c.resource.get("resourceType")), 0)), reverse=True)
            self._candidates[item.key] = cs
        return self._candidates[item.key]

    def _of_item(self, item: Item) -> list[Candidate]:
        k = self.k
        # One day's margin: the search compares instants, the window counts Beijing days.
        since = (self.today - timedelta(days=k.longest_window(item.key) + 1)).isoformat()
        codes = ",".join(f"{system}|{code}" for system, code in k.codes_of(item))
        out: list[Candidate] = []
        reports = self._rows("DiagnosticReport", [("code", codes), ("date", f"ge{since}")])
        # effective[x] is 0..1 in a DiagnosticReport: one with only ``issued`` (when it was
        # released) is not seen by ``date``; ``issued`` finds it.
        seen = {r.get("id") for r in reports}
        reports += [r for r in self._rows("DiagnosticReport", [("code", codes), ("issued", f"ge{since}")])
                    if r.get("id") not in seen]
        self._reports[item.key] = reports
        for dr in reports:
            m = k.item_of_concept(dr.get("code"))
            if m is not None and m.item.key == item.key and dr.get("status") in FINAL:
                out.append(_candidate(item, dr, result_when(dr)))
        if item.kind == "lab":
            for o in self._rows("Observation", [("code", codes), ("date", f"ge{since}")]):
                m = k.item_of_concept(o.get("code"))
                if m is not None and m.item.key == item.key and o.get("status") in FINAL:
                    out.append(_candidate(item, o, result_when(o)))
            return [c for c in out if c.day]
        params = [("started", f"ge{since}")] + ([("modality", item.modality)] if item.modality else [])
        for s in self._rows("ImagingStudy", params):
            if s.get("status") not in ("available", None):
                continue
            m = next((x for pc in s.get("procedureCode") or () if (x := k.item_of_concept(pc)) is not None), None)
            if m is None:
                mods = [c for _s, c in (_codings({"coding": s.get("modality") or []}))]
                sites = {c for se in s.get("series") or () if isinstance(se, dict)
                         for _s, c in _codings({"coding": [se.get("bodySite")]})}
                m = next((x for mod in mods for site in sorted(sites) if (x := k.item_of_site(mod, site))), None)
            if m is not None and m.item.key == item.key:
                out.append(_candidate(item, s, s.get("started")))
        return [c for c in out if c.day]

    def institution(self, res: dict[str, Any]) -> Institution | None:
        """The institution of a result: the Organization managing the source Patient whose record
        holds it, as the platform holds that Patient (the policy's rule).  Never the performer a
        result names: that is the writer's claim (a prefetched resource the caller made up could
        name any hospital), and QC eligibility must rest on facts the platform holds (issue 12)."""
        pid = _ref_id(res.get("subject"), "Patient")
        if not pid:
            return None
        if pid not in self._patients:
            self._patients[pid] = self.records.read("Patient", pid)
        org_id = _ref_id((self._patients[pid] or {}).get("managingOrganization"), "Organization")
        if org_id is None:
            return None
        if org_id not in self._orgs:
            self._orgs[org_id] = _institution(org_id, self.records.read("Organization", org_id))
        return self._orgs[org_id]

    def value(self, c: Candidate) -> str:
        """What the card shows as the result: a value, a report's conclusion or its first values."""
        r = c.resource
        kind = r.get("resourceType")
        if kind == "Observation":
            return _obs_value(r)
        if kind == "ImagingStudy":
            for dr in self._reports.get(c.item.key, ()):
                if any(_ref_id(x, "ImagingStudy") == r.get("id") for x in dr.get("imagingStudy") or ()):
                    if dr.get("conclusion"):
                        return str(dr["conclusion"])
            return str(r.get("description") or "")
        if r.get("conclusion"):
            return str(r["conclusion"])
        parts = []
        for x in (r.get("result") or ())[:8]:
            oid = _ref_id(x, "Observation")
            o = self.records.read("Observation", oid) if oid else None  # through the Access, one by one
            if o is not None and _obs_value(o):
                parts.append(f"{_text(o.get('code'))} {_obs_value(o)}")
        shown = "；".join(parts[:4])
        n = len(r.get("result") or ())
        return shown + (f" 等{n}项" if n > 4 and shown else "")


_RANK = {"DiagnosticReport": 2, "ImagingStudy": 1, "Observation": 0}


def _institution(org_id: str, org: dict[str, Any] | None) -> Institution | None:
    if org is None:
        return None
    code = next((str(i.get("value")) for i in org.get("identifier") or ()
                 if isinstance(i, dict) and i.get("system") == ORGANIZATION and i.get("value")), "")
    region = ""
    for e in org.get("extension") or ():
        v = e.get("valueCoding") if isinstance(e, dict) and e.get("url") == REGION_EXT else None
        if isinstance(v, dict) and isinstance(v.get("code"), str):
            region = v["code"][:2]
    if not region and len(code) == 18 and code[2:4].isdigit():
        region = code[2:4]  # GB 32100 统一社会信用代码: characters 3-8 are the registering region
    return Institution(org_id, code, str(org.get("name") or org_id), region)


def find_equivalents(k: Knowledge, request: HookRequest, records: RecordSource, now: datetime) -> list[Equivalent]:
    """For each selected draft ServiceRequest the newest recognisable result (the module docstring's rules)."""
    today = _today(now)
    results = _Results(k, records, today)
    situations = _Situations(k, request, records)
    out: list[Equivalent] = []
    for order in request.selected_orders():
        if order.get("resourceType") != "ServiceRequest" or not isinstance(order.get("id"), str):
            continue
        m = k.item_of_concept(order.get("code"))
        if m is None:
            continue
        cands = results.candidates(m.item)
        if not cands or k.excluded(m.item.key, situations.of(order)):
            continue
        for c in cands:
            day = c.day
            age = (today - date.fromisoformat(day)).days
            inst = results.institution(c.resource)
            if inst is None or age < 0:
                continue
            rule = k.rule_for(m.item.key, inst.region)
            if rule is None or age > rule.window_days:
                continue
            qc = k.qc_passed(inst.code, m.item, day)
            if qc is None:
                continue
            out.append(Equivalent(str(order["id"]), m.item, str(c.resource.get("resourceType")),
                                  str(c.resource.get("id")), c.when, day, age, results.value(c), inst, rule, qc))
            break
    return out


class RecognitionRule:
    """The :class:`hutong.cds.cards.Rule` of mutual recognition for order-select and order-sign."""

    id = RULE_ID
    hooks = frozenset({ORDER_SELECT, ORDER_SIGN})

    def evaluate(self, request: HookRequest, ctx: RuleContext) -> list[Card]:
        k = KnowledgeVersions(ctx.repo, _NO_AUDIT).in_force(_today(ctx.now).isoformat())
        if k is None:
            return []  # no approved knowledge in force: nothing is recognised
        for order in request.selected_orders():  # orders checked (the 互认 dashboard counts them)
            m = k.item_of_concept(order.get("code")) if order.get("resourceType") == "ServiceRequest" else None
            if m is not None and isinstance(order.get("id"), str):
                ctx.checked.append({"rule": RULE_ID, "item": m.item.key, "order": str(order["id"])})
        found = find_equivalents(k, request, ctx.records, ctx.now)
        site = ctx.base_url.removesuffix("/fhir").rstrip("/")
        return [self._card(request, k, e, ctx.base_url.rstrip("/"), site) for e in found]

    def _card(self, request: HookRequest, k: Knowledge, e: Equivalent, fhir: str, site: str) -> Card:
        own = request.principal.organization_id == e.institution.org_id
        where = e.institution.name + ("（本院）" if own else "")
        mark = e.rule.scope_mark
        summary = f"{e.item.name}：{where} {e.day} 已有结果，可互认（{mark}）"
        detail = (f"**{e.item.name}** 已于 {e.day}（{e.age_days} 天前）在 **{where}** 完成，"
                  f"在可互认时间 {e.rule.window_days} 天内，结果可互认（{mark}）。\n\n"
                  f"- 结果：{e.value or '见报告'}\n- 日期：{e.when[:16].replace('T', ' ')}\n"
                  f"- 机构：{where}（{e.quality.program}合格，有效期至 {e.quality.valid_to}）\n"
                  f"- 互认标识：{mark}")
        tab = "imaging" if e.item.kind == "imaging" else "labs"
        links = [Link("打开该结果", f"{fhir}/{e.resource_type}/{e.resource_id}")]
        patient = request.patient_id
        if site and patient:
            links.insert(0, Link("在互通查看病历", f"{site}/clinician/patient/{patient}/record?tab={tab}"))
        accept = Suggestion(f"采用{where}的结果，撤销本次{e.item.name}开单", actions=(
            Action("delete", f"撤销 {e.item.name} 开单（互认 {where} {e.day} 的结果）",
                   resource_id=f"ServiceRequest/{e.order_id}"),), is_recommended=True)
        source = Source(f"检查检验结果互认 · {k.title}",
                        topic=Coding(e.item.key, system=ITEM_SYSTEM, display=e.item.name))
        if request.hook == ORDER_SIGN:
            return Card(summary=f"{e.item.name} 重复开单：{where} {e.day} 的结果可互认（{mark}），如仍需检查请选择不互认理由",
                        indicator="warning", source=source, detail=detail, suggestions=(accept,),
                        override_reasons=OVERRIDE_REASONS, links=tuple(links), rule=RULE_ID,
                        about=(f"{e.resource_type}/{e.resource_id}",))
        return Card(summary=summary, indicator="info", source=source, detail=detail, suggestions=(accept,),
                    links=tuple(links), rule=RULE_ID, about=(f"{e.resource_type}/{e.resource_id}",))


class _NoAudit:
    """The rule only reads knowledge; a write through it would be a wiring error."""

    def record(self, rec: AuditRecord) -> int:
        raise RuntimeError("the recognition rule does not change knowledge")

    def record_in(self, w: Writer, rec: AuditRecord) -> int:
        raise RuntimeError("the recognition rule does not change knowledge")


_NO_AUDIT = _NoAudit()
