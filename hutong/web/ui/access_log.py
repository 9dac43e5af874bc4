"""谁看了我的档案, grouped and said in plain words (issue 16, item 4).

The audit trail keeps one row per request (hutong.security.audit), so one
doctor reading a record page by page left 10-15 identical lines in the same
minute, and an outcome such as "未完成" was not explained.  Here the rows of a
resident's access log become *groups*: the same actor (a person, an
institution's system, the platform, the resident or their delegate), the same
institution, the same purpose (basis), the same outcome and the same sitting.

A sitting is one sign-in's accesses (the same access token, ``AccessEntry.session``)
or, across tokens and for callers that carry none (HL7 v2 over MLLP), accesses
no more than :data:`WINDOW_MS` apart: a page session's token is renewed every
few minutes, so a token change alone does not start a new group, while the
same token keeps a slow reader's accesses together.  A group never crosses a
Beijing calendar day, so its time span reads as one date.

Outcomes are the AuditEvent ones (auditevent.html#AuditEvent.outcome, value set
audit-event-outcome): 0 success, 4 minor failure (here: refused by the policy,
401/403), 8 serious failure (the request failed: a bad request, an unknown
record, a dead-lettered message), 12 major failure (a server fault).  Each is
worded for a resident together with what it means for their record: a refused
or failed request returned none of it, and nothing was changed (every write is
all-or-nothing).

Pure functions only: :func:`group_entries` (the grouping) and
:func:`describe` (the words, through the i18n table); the page renders the
views (hutong.web.ui.resident, templates/resident/access_log.html).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from hutong.security.audit import AccessEntry
from hutong.security.events import REFUSED, SUCCESS
from hutong.security.principal import Role
from hutong.systems import REGION_TZ
from hutong.web.ui import i18n

WINDOW_MS = 10 * 60_000         # accesses closer than this belong to one sitting
MAX_KINDS = 5                   # kinds of record named in a summary; more are "等 N 类"

# Directory entries read alongside a record (who wrote it, where) are not the resident's record.
DIRECTORY_TYPES = frozenset({"Organization", "Practitioner", "PractitionerRole", "Location", "Endpoint",
                             "HealthcareService", "OperationOutcome", "Bundle"})
READS = frozenset({"read", "vread", "search", "history"})
WRITES = frozenset({"create", "update", "delete", "patch", "transaction"})
MESSAGES = frozenset({"hl7", "cda"})     # hutong.ingest.audit: a message received from an institution
GLASS_CLAIM = "break-glass"               # hutong.web.gate: the claim itself, whichever door it came through
STAFF_ROLES = {Role.CLINICIAN.value: "alog.role.clinician", Role.COMMISSION.value: "alog.role.commission",
               Role.AUDITOR.value: "alog.role.auditor", Role.OPERATOR.value: "alog.role.operator"}

i18n.add({
    "alog.help": ("同一人员在同一次登录中的多次访问合并为一条，点开可以看到逐条记录。",
                  " Several accesses by the same person in one sitting are shown as one entry; open it to see "
                  "each one."),
    "alog.what": ("做了什么", "What was done"),
    # actors
    "alog.self": ("您本人", "You"),
    "alog.delegate": ("家属代办：{name}", "Your family delegate: {name}"),
    "alog.delegate_unnamed": ("家属代办人", "Your family delegate"),
    "alog.system": ("医院信息系统", "Hospital information system"),
    "alog.platform": ("区域健康信息平台（自动处理）", "The regional platform (automatic processing)"),
    "alog.unnamed": ("未登记姓名的工作人员", "A staff member without a recorded name"),
    "alog.role.clinician": ("医生", "Doctor"),
    "alog.role.commission": ("卫健委工作人员", "Health commission staff"),
    "alog.role.auditor": ("审计人员", "Auditor"),
    "alog.role.operator": ("平台运维人员", "Platform operator"),
    "alog.org_none": ("区域健康信息平台", "Regional health platform"),
    "alog.kind_system": ("机器自动访问（不是人在查看）", "A machine, not a person reading"),
    # what was done
    "alog.did.read": ("查看了 {n} 次", "looked {n} times"),
    "alog.did.read1": ("查看了 1 次", "looked once"),
    "alog.did.write": ("新增或修改了 {n} 次", "added or changed records {n} times"),
    "alog.did.write1": ("新增或修改了 1 次", "added or changed records once"),
    "alog.did.send": ("发送了 {n} 次数据", "sent data {n} times"),
    "alog.did.send1": ("发送了 1 次数据", "sent data once"),
    "alog.did.glass": ("申请紧急查看 {n} 次", "asked for emergency access {n} times"),
    "alog.did.glass1": ("申请紧急查看 1 次", "asked for emergency access once"),
    "alog.did.identity": ("核对身份 {n} 次", "checked your identity {n} times"),
    "alog.did.identity1": ("核对身份 1 次", "checked your identity once"),
    "alog.did.tried": ("尝试 {n} 次", "tried {n} times"),
    "alog.did.tried1": ("尝试 1 次", "tried once"),
    "alog.items": ("共 {n} 项记录", "{n} records in all"),
    "alog.whole": ("全部档案", "your whole record"),
    "alog.more_kinds": ("等 {n} 类", "and {n} more kinds"),
    "alog.sep": ("、", ", "),
    "alog.comma": ("，", ", "),
    "alog.colon": ("：", ": "),
    "alog.paren": ("（{x}）", " ({x})"),
    "alog.row.read": ("查看", "Looked at"),
    "alog.row.write": ("新增或修改", "Added or changed"),
    "alog.row.send": ("发送数据", "Sent data"),
    "alog.row.glass": ("申请紧急查看", "Asked for emergency access"),
    "alog.row.identity": ("核对身份", "Checked identity"),
    "alog.row.other": ("访问", "Accessed"),
    # outcomes
    "alog.ok": ("已查看", "Seen"),
    "alog.ok_sent": ("已存入您的档案", "Added to your record"),
    "alog.ok_identity": ("已完成", "Done"),
    "alog.refused": ("被拒绝", "Refused"),
    "alog.unfinished": ("未完成", "Not completed"),
    "alog.why.HT-0103": ("{actor}近期没有为您诊疗的记录，也没有您的授权（或您已拒绝该机构查看），"
                         "平台没有让其看到您的档案。",
                         "{actor} had not treated you recently and had no permission from you (or you refused "
                         "that institution), so the platform showed none of your record."),
    "alog.why.HT-0104": ("{actor}的身份不能查看居民档案，平台没有让其看到您的档案。",
                         "{actor} may not read residents' records in that role; none of your record was shown."),
    "alog.why.HT-0106": ("紧急查看必须写明理由，对方没有写明，平台没有让其看到您的档案。",
                         "Emergency access needs a written reason; none was given, so none of your record was shown."),
    "alog.why.HT-0170": ("敏感记录不向家属代办人开放，这部分没有显示。",
                         "Sensitive records are not open to family delegates; that part was not shown."),
    "alog.why.refused": ("{actor}没有查看您档案的权限，平台没有让其看到您的档案。",
                         "{actor} had no right to see your record; none of it was shown."),
    "alog.why.refused_send": ("该机构无权为您提交这份数据，数据没有存入您的档案。",
                              "That institution may not send this data for you; it was not added to your record."),
    "alog.why.unfinished": ("请求没有完成（例如请求有误或所查的记录不存在），对方没有得到您的档案内容，"
                            "您的档案也没有被更改。",
                            "The request did not complete (for example it was malformed or asked for a record that "
                            "does not exist): nothing of your record was returned and nothing was changed."),
    "alog.why.unfinished_send": ("该机构发送的数据有误，没有存入您的档案，需由该机构更正后重新发送。",
                                 "The data that institution sent had errors and was not added to your record; the "
                                 "institution has to correct and resend it."),
    "alog.why.unfinished_identity": ("核对身份的操作没有完成（例如该记录已由其他工作人员处理过），"
                                     "您的档案没有被更改。",
                                     "The identity check did not complete (for example another staff member had "
                                     "already handled it); your record was not changed."),
    "alog.why.error": ("平台出现故障，请求中断，对方没有得到您的档案内容，您的档案也没有被更改。",
                       "A fault on the platform interrupted the request: nothing of your record was returned and "
                       "nothing was changed."),
    "alog.no_basis": ("没有查看依据", "No basis to look"),
    "alog.actor_person": ("该人员", "This person"),
    "alog.actor_doctor": ("该医生", "This doctor"),
    "alog.actor_system": ("该机构", "This institution"),
    # purposes explained where the word alone is not enough
    "alog.purpose_note.identity": ("在全市居民索引中查找、核对您的身份（例如按身份证号），以便找到您在各医院的记录。",
                                   "Looked you up in the city's index of residents (for example by ID number) to "
                                   "find your records at the hospitals."),
    "alog.purpose_note.identity_staff": ("平台工作人员在核对不同医院的记录是否属于您本人，以便把它们正确归入您的档案。",
                                         "Platform staff checked whether records from different hospitals are "
                                         "yours, so that they are filed in your record correctly."),
    "alog.purpose_note.platform": ("平台在自动整理、归并您的档案，不是某个人在查看。",
                                   "The platform organised your record automatically; no person was reading it."),
    # break-glass
    "alog.glass": ("紧急查看", "Emergency access"),
    "alog.glass_note": ("医生在紧急情况下（例如昏迷急救）可以先查看您的档案；每一次紧急查看都会由平台审计人员复核。",
                        "In an emergency (for example when you are unconscious) a doctor may look at your record "
                        "first; every emergency access is reviewed by the platform's auditors."),
    "alog.glass_reason": ("医生填写的理由：", "Reason given by the doctor: "),
    # the rows
    "alog.rows": ("逐条查看（{n} 条）", "Every access ({n})"),
    "alog.span": ("{start} 至 {end}", "{start} to {end}"),
})

# Plain words for the kinds of record (FHIR R4 resource types, resourcelist.html).
KIND_WORDS: dict[str, tuple[str, str]] = {
    "Patient": ("基本信息", "personal details"),
    "Encounter": ("就诊记录", "visits"),
    "EpisodeOfCare": ("诊疗经过", "episodes of care"),
    "Condition": ("诊断", "diagnoses"),
    "Observation": ("检验检查结果", "test results"),
    "DiagnosticReport": ("检验检查报告", "test reports"),
    "MedicationRequest": ("用药", "medicines"),
    "MedicationStatement": ("用药", "medicines"),
    "MedicationDispense": ("用药", "medicines"),
    "MedicationAdministration": ("用药", "medicines"),
    "AllergyIntolerance": ("过敏", "allergies"),
    "Immunization": ("疫苗接种", "vaccinations"),
    "Procedure": ("手术和操作", "procedures"),
    "DocumentReference": ("病历文书", "clinical documents"),
    "Composition": ("病历文书", "clinical documents"),
    "Binary": ("病历文书", "clinical documents"),
    "ImagingStudy": ("影像检查", "imaging"),
    "ServiceRequest": ("检查申请", "test orders"),
    "CarePlan": ("诊疗计划", "care plans"),
    "FamilyMemberHistory": ("家族史", "family history"),
    "Consent": ("授权记录", "permissions"),
    "Task": ("更正申请", "correction requests"),
    "Provenance": ("记录来源", "record sources"),
    "Coverage": ("医保信息", "insurance"),
}
i18n.add({f"alog.kind.{k}": v for k, v in KIND_WORDS.items()})
i18n.add({"alog.kind.other": ("其他记录", "other records")})


class Actor(StrEnum):
    """Who acted, as the resident tells them apart."""

    PERSON = "person"        # a clinician or platform staff member reading
    SYSTEM = "system"        # an institution's HIS/LIS/PACS (machine access, hutong.security Role.INSTITUTION)
    PLATFORM = "platform"    # the platform's own engine and loaders
    SELF = "self"            # the resident
    DELEGATE = "delegate"    # a family delegate or guardian (家属代办)


def actor_of(e: AccessEntry) -> Actor:
    if e.relation == "self":
        return Actor.SELF
    if e.relation == "delegate" or e.role == Role.DELEGATE.value:
        return Actor.DELEGATE
    if e.role == Role.INSTITUTION.value:
        return Actor.SYSTEM
    if e.role == Role.PLATFORM.value or e.role is None:
        return Actor.PLATFORM
    return Actor.PERSON


def activity_of(e: AccessEntry) -> str:
    """read | write | send | glass | identity | other: what one row did, in the resident's terms."""
    if e.action == GLASS_CLAIM:
        return "glass"
    if e.purpose == "identity":
        return "identity"
    if e.action in MESSAGES:
        return "send"
    if e.action in WRITES:
        return "send" if e.role in (Role.INSTITUTION.value, Role.PLATFORM.value) else "write"
    if e.action in READS or e.interaction.startswith("GET "):
        return "read"
    return "other"


@dataclass(frozen=True, slots=True)
class GroupKey:
    actor: Actor
    account: str            # the account (or, lacking one, the recorded name): never shown
    organization: str       # institution code ("" when none)
    purpose: str            # the basis used ("" when none, e.g. a refused attempt)
    outcome: str            # AuditEvent outcome code
    break_glass: bool


def key_of(e: AccessEntry) -> GroupKey:
    return GroupKey(actor_of(e), e.account_id or e.who or "", e.organization or "", e.purpose or "",
                    e.outcome, e.break_glass)


@dataclass(frozen=True, slots=True)
class AccessGroup:
    """Accesses of one actor, institution, purpose and outcome in one sitting; rows newest first."""

    key: GroupKey
    rows: tuple[AccessEntry, ...]

    @property
    def first_ms(self) -> int:
        return self.rows[-1].time_ms

    @property
    def last_ms(self) -> int:
        return self.rows[0].time_ms

    @property
    def count(self) -> int:
        return len(self.rows)

    @property
    def reasons(self) -> tuple[str, ...]:
        """Break-glass reasons given (the claim's), oldest first, each once."""
        return tuple(dict.fromkeys(r.reason for r in reversed(self.rows) if r.reason))

    def activities(self) -> Counter[str]:
        return Counter(activity_of(r) for r in self.rows)

    def kinds(self) -> Counter[str]:
        """How many entities of each kind of record the group touched (directory entries left out)."""
        return Counter(k for r in self.rows for k in r.kinds if k not in DIRECTORY_TYPES)

    @property
    def whole_record(self) -> bool:
        return any("$everything" in r.interaction for r in self.rows)


@dataclass
class _Open:
    key: GroupKey
    day: str
    rows: list[AccessEntry] = field(default_factory=list)
    sessions: set[str] = field(default_factory=set)


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, REGION_TZ).strftime("%Y-%m-%d")


def group_entries(entries: Iterable[AccessEntry], *, window_ms: int = WINDOW_MS) -> list[AccessGroup]:
    """The access log's rows as groups, newest group first (by its newest row).

    A row joins the newest group of its :class:`GroupKey` on the same Beijing day
    when it carries one of that group's session tokens, or when it lies at most
    ``window_ms`` before the group's oldest row; else it starts a new group."""
    rows = sorted(entries, key=lambda e: (e.time_ms, e.seq), reverse=True)
    opened: list[_Open] = []
    latest: dict[GroupKey, _Open] = {}
    for e in rows:
        k = key_of(e)
        g = latest.get(k)
        joins = g is not None and g.day == _day(e.time_ms) and (
            (e.session is not None and e.session in g.sessions) or g.rows[-1].time_ms - e.time_ms <= window_ms)
        if g is None or not joins:
            g = _Open(k, _day(e.time_ms))
            opened.append(g)
            latest[k] = g
        g.rows.append(e)
        if e.session:
            g.sessions.add(e.session)
    return [AccessGroup(g.key, tuple(g.rows)) for g in opened]


# --------------------------------------------------------------------------- words


@dataclass(frozen=True, slots=True)
class RowView:
    time: str           # HH:MM (the group's date is in its span)
    what: str           # "查看 · 检验检查报告、用药"
    outcome: str        # "已查看" / "被拒绝" / "未完成"


@dataclass(frozen=True, slots=True)
class GroupView:
    actor: str                  # Actor value (for the page's markup)
    who: str                    # the person's or system's name, or 您本人 / 家属代办：…
    role: str                   # 医生 / 卫健委工作人员 / 机器自动访问（不是人在查看） / ""
    organization: str           # institution name ("" when not known)
    purpose: str                # the basis in words
    purpose_note: str           # what an unfamiliar basis means ("" when plain)
    summary: str                # 查看了 3 次（共 12 项记录）：检验检查报告、用药
    outcome: str                # AuditEvent outcome code
    outcome_label: str          # 已查看 / 被拒绝 / 未完成
    outcome_note: str           # what a refused or unfinished attempt means ("" on success)
    span: str                   # 2026-12-07 14:03 至 14:12
    break_glass: bool
    reasons: tuple[str, ...]
    count: int
    rows: tuple[RowView, ...]


Translate = Callable[..., str]


def _hm(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, REGION_TZ).strftime("%H:%M")


def _full(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, REGION_TZ).strftime("%Y-%m-%d %H:%M")


def span_of(g: AccessGroup, t: Translate) -> str:
    """First to last access (one Beijing day: a group never crosses one)."""
    if g.first_ms // 60_000 == g.last_ms // 60_000:
        return _full(g.first_ms)
    return t("alog.span", start=_full(g.first_ms), end=_hm(g.last_ms))


def kinds_words(kinds: Counter[str], whole: bool, t: Translate) -> str:
    if whole:   # $everything: the kinds it held add nothing to "the whole record"
        return t("alog.whole")
    words: list[str] = []
    for k, _n in kinds.most_common():
        w = t(f"alog.kind.{k}") if f"alog.kind.{k}" in i18n.MESSAGES else t("alog.kind.other")
        if w not in words:
            words.append(w)
    shown = words[:MAX_KINDS]
    text = t("alog.sep").join(shown)
    if len(words) > MAX_KINDS:
        text += t("alog.more_kinds", n=len(words))
    return text


def _did(activity: str, n: int, t: Translate, *, succeeded: bool) -> str:
    if not succeeded and activity == "read":
        activity = "tried"
    base = f"alog.did.{activity}"
    return t(base + "1") if n == 1 else t(base, n=n)


def summary_of(g: AccessGroup, t: Translate) -> str:
    """What the group did, how often, and to which kinds of record."""
    acts = g.activities()
    ok = g.key.outcome == SUCCESS
    order = ("glass", "identity", "read", "write", "send")
    acts["read"] += acts.pop("other", 0)
    head = t("alog.comma").join(_did(a, acts[a], t, succeeded=ok) for a in order if acts[a])
    kinds = g.kinds()
    n_items = sum(kinds.values())
    if ok and n_items > g.count:
        head += t("alog.paren", x=t("alog.items", n=n_items))
    what = kinds_words(kinds, g.whole_record, t)
    return head + t("alog.colon") + what if what else head


def _actor_word(g: AccessGroup, t: Translate) -> str:
    if g.key.actor is Actor.SYSTEM:
        return t("alog.actor_system")
    role = g.rows[0].role
    return t("alog.actor_doctor") if role == Role.CLINICIAN.value else t("alog.actor_person")


def outcome_words(g: AccessGroup, t: Translate) -> tuple[str, str]:
    """(label, note) of the group's outcome."""
    acts = g.activities()
    sending = acts["send"] > 0 and acts["send"] >= acts["read"]
    identity = acts["identity"] > 0 and acts["identity"] >= acts["read"]
    if g.key.outcome == SUCCESS:
        return (t("alog.ok_sent") if sending else t("alog.ok_identity") if identity else t("alog.ok")), ""
    if g.key.outcome == REFUSED:
        if sending:
            return t("alog.refused"), t("alog.why.refused_send")
        code = next((r.code for r in g.rows if r.code), None)
        key = f"alog.why.{code}" if code and f"alog.why.{code}" in i18n.MESSAGES else "alog.why.refused"
        return t("alog.refused"), t(key, actor=_actor_word(g, t))
    if g.key.outcome == "8":
        note = ("alog.why.unfinished_send" if sending else
                "alog.why.unfinished_identity" if identity else "alog.why.unfinished")
        return t("alog.unfinished"), t(note)
    return t("alog.unfinished"), t("alog.why.error")


def who_of(g: AccessGroup, t: Translate, delegates: Mapping[str, str]) -> tuple[str, str]:
    """(name, role word).  People by the name the platform records for them (a
    staff account's display name, as their signed tokens carry it); a delegate
    by the name on their delegate account (the resident's own 家人代办 page shows
    it too); systems by kind, never by a raw account id."""
    first = g.rows[0]
    actor = g.key.actor
    if actor is Actor.SELF:
        return t("alog.self"), ""
    if actor is Actor.DELEGATE:
        name = delegates.get(first.account_id or "")
        return (t("alog.delegate", name=name) if name else t("alog.delegate_unnamed")), ""
    if actor is Actor.SYSTEM:
        return t("alog.system"), t("alog.kind_system")
    if actor is Actor.PLATFORM:
        return t("alog.platform"), t("alog.kind_system")
    named = first.who and first.who != first.account_id and first.who != "(unknown)"
    role_key = STAFF_ROLES.get(first.role or "")
    return (first.who if named else t("alog.unnamed")), (t(role_key) if role_key else "")


def purpose_words(purpose: str, t: Translate, role: str | None = None) -> tuple[str, str]:
    """The basis in words, and what an unfamiliar one means (an identity check is the
    platform staff's review of a link when they do it, a look-up in the index otherwise)."""
    words = t(f"purpose.{purpose or 'none'}")
    staff = role in (Role.COMMISSION.value, Role.AUDITOR.value, Role.OPERATOR.value)
    note_key = f"alog.purpose_note.{purpose}" + ("_staff" if purpose == "identity" and staff else "")
    return (words if not words.startswith("purpose.") else t("purpose.none")), (
        t(note_key) if note_key in i18n.MESSAGES else "")


def row_view(e: AccessEntry, t: Translate, label: str) -> RowView:
    act = activity_of(e)
    kinds = Counter(k for k in e.kinds if k not in DIRECTORY_TYPES)
    what = kinds_words(kinds, "$everything" in e.interaction, t)
    head = t(f"alog.row.{act}")
    return RowView(_hm(e.time_ms), f"{head} · {what}" if what else head, label)


def describe(g: AccessGroup, t: Translate, organizations: Mapping[str, str],
             delegates: Mapping[str, str]) -> GroupView:
    """The words of one group.  ``organizations``: institution code to name;
    ``delegates``: delegate account to the name on it."""
    who, role = who_of(g, t, delegates)
    code = g.key.organization
    # An unknown institution code is not shown (a raw code means nothing to a resident).
    org = organizations.get(code, "") if code else ""
    if not code and g.key.actor in (Actor.PERSON, Actor.PLATFORM):
        org = t("alog.org_none")
    purpose, note = purpose_words(g.key.purpose, t, g.rows[0].role)
    if not g.key.purpose:
        if g.key.outcome == REFUSED:
            purpose = t("alog.no_basis")
        elif g.key.actor is Actor.SYSTEM:
            # An institution's system writes only its own patients' records (hutong.security.write_policy);
            # the API's writes carry no basis of their own, the HL7/CDA channels say own-institution.
            purpose = t("purpose.own-institution")
    label, why = outcome_words(g, t)
    return GroupView(
        actor=g.key.actor.value, who=who, role=role, organization=org, purpose=purpose, purpose_note=note,
        summary=summary_of(g, t), outcome=g.key.outcome, outcome_label=label, outcome_note=why,
        span=span_of(g, t), break_glass=g.key.break_glass, reasons=g.reasons, count=g.count,
        rows=tuple(row_view(r, t, label) for r in g.rows))
