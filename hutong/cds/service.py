"""Hutong's CDS Hooks 2.0 service: discovery, hook calls and feedback, all under the caller's Access.

CDS Hooks 2.0 (https://cds-hooks.hl7.org/2.0/) sections implemented here:

- "Discovery": :meth:`CdsHooks.discovery` lists one service per hook (order-select,
  order-sign, patient-view) with its prefetch templates.
- "Calling a CDS Service" / "HTTP Request": :meth:`CdsHooks.call` validates the body
  (400 HT-0520/0523/0524/0536), checks ``fhirAuthorization`` (see below), the patient
  and the caller's basis for them (403 HT-0528), runs every rule registered for the
  hook and answers a "CDS Service Response" (``{"cards": [...]}``).
- "Providing FHIR Resources to a CDS Service" / "Prefetch": the prefetch a caller
  sends is never a way around the policy.  A prefetched resource that this platform
  stores is dropped and read again through the caller's Access (so a card shows it
  only if the caller may see it); one the platform does not store is the caller's
  own data (its EMR's) and is used as sent, about the hook's patient only.  When the
  platform does not know the patient and no prefetch describes them: 412 HT-0530.
- "FHIR Resource Access" / fhirAuthorization: this service reads only this platform's
  records, through the Access of the caller's bearer token (the platform's OAuth2/SMART
  tokens; the gate authenticated it: 401 without one).  A ``fhirAuthorization`` for
  this platform's FHIR base must hold a valid token (401 HT-0525) of the same account
  (403 HT-0526): a token in the body never widens what the caller may see.  One for
  another server (the caller's own EMR) is not used: the service never calls out.
- "Feedback": :meth:`CdsHooks.feedback` records each accepted suggestion and each
  override with its reason in the audit trail (AuditEvent, action ``cds-feedback``),
  only for cards this service gave this caller (HT-0533), with a reason the card
  offered (HT-0534); :func:`feedback_counts` counts them per rule.

A rule that raises gives no card: the operator sees a log line (rule id and exception
type, never personal data) and the observers in :data:`RULE_FAILURE_OBSERVERS` (the
web layer's metric ``hutong_cds_rule_failures``); the hook still answers.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from hutong.cds.cards import (
    HOOKS,
    ORDER_SELECT,
    ORDER_SIGN,
    PATIENT_VIEW,
    Card,
    FhirAuthorization,
    HookRequest,
    Rule,
    RuleContext,
    response_json,
)
from hutong.errors import Forbidden, HutongError, InvalidRequest, NotFound, PreconditionFailed, Unauthorized
from hutong.fhir import search as fsearch
from hutong.fhir.service import FhirService
from hutong.mpi.golden import PERSON_PREFIX
from hutong.security.audit import AuditEntry, AuditLog
from hutong.security.authn import Authenticator
from hutong.security.events import AuditRecord
from hutong.security.policy import Access
from hutong.security.principal import Principal, Role
from hutong.store.repository import Repository

log = logging.getLogger("hutong.cds")

# Called with a rule's id each time it fails to evaluate (the web layer counts them).
RULE_FAILURE_OBSERVERS: list[Callable[[str], None]] = []

CARDS_ACTION = "cds-cards"
FEEDBACK_ACTION = "cds-feedback"
CALLERS = (Role.CLINICIAN, Role.INSTITUTION)
# How far back feedback may refer to a card (the caller's own cards of this window are searched).
FEEDBACK_WINDOW_MS = 7 * 24 * 3600 * 1000
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_REF_KEYS = ("patient", "subject", "beneficiary")

# Prefetch templates ("Prefetch Template"): the patient and their allergies; the order
# hooks' encounter too (inpatient or not decides the special antibiotic tier).  Only
# context tokens are used.  The prescriber's post is never taken from a prefetch.
PREFETCH_PATIENT = {"patient": "Patient/{{context.patientId}}",
                    "allergies": "AllergyIntolerance?patient={{context.patientId}}"}
PREFETCH_ORDER = {**PREFETCH_PATIENT, "encounter": "Encounter/{{context.encounterId}}"}


@dataclass(frozen=True, slots=True)
class ServiceDef:
    """One entry of the discovery response ("Discovery": hook, title, description, id, prefetch)."""

    id: str
    hook: str
    title: str
    description: str
    prefetch: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"hook": self.hook, "title": self.title, "description": self.description,
                               "id": self.id}
        if self.prefetch:
            out["prefetch"] = dict(self.prefetch)
        out["usageRequirements"] = ("调用方须持有本平台签发的访问令牌（Bearer）；卡片只含调用方有权查看的数据 / "
                                    "a bearer token of this platform is required; cards hold only what the "
                                    "caller may see")
        return out


SERVICES: tuple[ServiceDef, ...] = (
    ServiceDef("hutong-order-select", ORDER_SELECT, "检查检验互认与处方安全（选择医嘱时）",
               "选择医嘱时：区域内可互认的近期结果、处方权与抗菌药物分级、手术分级、药物过敏 / "
               "at order selection: recognisable recent results, privileges, drug allergies",
               PREFETCH_ORDER),
    ServiceDef("hutong-order-sign", ORDER_SIGN, "检查检验互认与处方安全（签署医嘱时）",
               "签署医嘱前的最终核对：互认（不互认须说明理由）、权限与过敏 / "
               "before signing: recognition (override with a reason), privileges, drug allergies",
               PREFETCH_ORDER),
    ServiceDef("hutong-patient-view", PATIENT_VIEW, "区域健康档案提示（打开患者时）",
               "打开患者时：其他机构记录的过敏与可互认的近期结果 / "
               "on opening a patient: allergies and recent results recorded elsewhere",
               PREFETCH_PATIENT),
)


@dataclass(frozen=True, slots=True)
class IssuedCard:
    """What the audit trail keeps of a card it gave (for feedback): never its text."""

    uuid: str
    rule: str
    indicator: str
    suggestions: tuple[str, ...]
    reasons: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"uuid": self.uuid, "rule": self.rule, "indicator": self.indicator,
                "suggestions": list(self.suggestions), "reasons": list(self.reasons)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> IssuedCard:
        return cls(str(d["uuid"]), str(d.get("rule", "")), str(d.get("indicator", "")),
                   tuple(str(x) for x in d.get("suggestions", ())), tuple(str(x) for x in d.get("reasons", ())))


class CdsHooks:
    """The CDS Hooks service of one platform.  ``rules`` are every rule it runs
    (each answers the hooks it names); ``fhir_bases`` the URLs by which callers
    name this platform's FHIR API (a ``fhirServer`` among them brings its
    ``fhirAuthorization`` under check)."""

    def __init__(self, repo: Repository, authenticator: Authenticator, audit: AuditLog, rules: Sequence[Rule],
                 *, services: Sequence[ServiceDef] = SERVICES, clock: Callable[[], int] | None = None) -> None:
        self.repo = repo
        self.authn = authenticator
        self.audit = audit
        self.rules = list(rules)
        self.services = {s.id: s for s in services}
        self.clock = clock or (lambda: int(time.time() * 1000))

    # ------------------------------------------------------------------ discovery
    def discovery(self) -> dict[str, Any]:
        return {"services": [s.to_json() for s in self.services.values()]}

    def service(self, service_id: str) -> ServiceDef:
        s = self.services.get(service_id)
        if s is None:
            raise NotFound("HT-0521", f"no CDS service {service_id!r} here (GET /cds-services lists them)")
        return s

    # ------------------------------------------------------------------ a hook call
    def call(self, service_id: str, body: bytes, access: Access, *, fhir_bases: Iterable[str] = (),
             base_url: str = "", peer: str | None = None) -> dict[str, Any]:
        """One hook call ("HTTP Request" -> "CDS Service Response")."""
        svc = self.service(service_id)
        caller(access)
        raw = _json_object(body, "HT-0520", "the CDS Hooks request body")
        req = self._request(svc, raw, access, [b.rstrip("/") for b in fhir_bases if b])
        patient_id = req.patient_id
        assert patient_id is not None
        stored = self.repo.read("Patient", patient_id)
        known = stored is not None and not stored.deleted
        supplied = _supplied(req.prefetch, patient_id)
        if not known:
            if not any(r.get("resourceType") == "Patient" for r in supplied):
                raise PreconditionFailed("HT-0530", f"prefetch 'patient' missing and Patient/{patient_id} is not "
                                                    "known to this platform, so the service cannot fetch it")
        else:
            try:
                access.check_record(patient_id)
            except Forbidden as e:
                raise Forbidden("HT-0528", f"no access basis for Patient/{patient_id}: {e.message}") from e
        fhir = FhirService(self.repo, base_url, access=access)
        linked = _linked(access, patient_id) if known else []
        # The caller's own data, only where the platform does not hold it (else read through the Access).
        held = {(s.type, s.id) for s in self.repo.fetch(
            (str(r["resourceType"]), str(r["id"])) for r in supplied if isinstance(r.get("id"), str))}
        own = [r for r in supplied if (r.get("resourceType"), r.get("id")) not in held]
        records = AccessRecords(fhir, access, patient_id, linked, own)
        req = replace(req, user_role=self._user_role(req, records))
        ctx = RuleContext(records=records, repo=self.repo.acting_as(access),
                          now=datetime.fromtimestamp(self.clock() / 1000, UTC), base_url=base_url)
        cards: list[Card] = []
        for rule in self.rules:
            if svc.hook not in rule.hooks:
                continue
            try:
                got = rule.evaluate(req, ctx)
            except Exception as e:  # a broken rule never breaks the hook (issue 14, "Bad input")
                log.error("CDS rule %s failed to evaluate (HT-0535): %s", rule.id, type(e).__name__)
                for observe in RULE_FAILURE_OBSERVERS:
                    observe(rule.id)
                continue
            cards += [c if c.rule else replace(c, rule=rule.id) for c in got]
        if cards or ctx.checked:
            self._remember(svc, req, cards, access, peer, ctx.checked)
        return response_json(cards)

    def _request(self, svc: ServiceDef, raw: dict[str, Any], access: Access, bases: list[str]) -> HookRequest:
        hook = raw.get("hook")
        instance = raw.get("hookInstance")
        context = raw.get("context")
        if not isinstance(hook, str) or not hook:
            raise InvalidRequest("HT-0520", "'hook' (string) is required")
        if not isinstance(instance, str) or not _UUID.match(instance):
            raise InvalidRequest("HT-0520", "'hookInstance' must be a UUID (CDS Hooks 2.0, HTTP Request)")
        if not isinstance(context, dict):
            raise InvalidRequest("HT-0520", "'context' (object) is required")
        if hook not in HOOKS or hook != svc.hook:
            raise InvalidRequest("HT-0522", f"service {svc.id!r} answers the {svc.hook!r} hook, not {hook!r}")
        for key in ("userId", "patientId"):
            if not isinstance(context.get(key), str) or not context[key]:
                raise InvalidRequest("HT-0523", f"context.{key} (string) is required by the {hook} hook")
        if not fsearch_id_ok(context["patientId"]):
            raise InvalidRequest("HT-0523", "context.patientId is not a FHIR id")
        if hook in (ORDER_SELECT, ORDER_SIGN):
            d = context.get("draftOrders")
            if not isinstance(d, dict) or d.get("resourceType") != "Bundle" or not isinstance(
                    d.get("entry", []), list):
                raise InvalidRequest("HT-0523", f"context.draftOrders (a FHIR Bundle) is required by {hook}")
        if hook == ORDER_SELECT and not (isinstance(context.get("selections"), list)
                                         and all(isinstance(x, str) for x in context["selections"])):
            raise InvalidRequest("HT-0523", "context.selections (array of 'Type/id') is required by order-select")
        server = raw.get("fhirServer")
        if server is not None and not isinstance(server, str):
            raise InvalidRequest("HT-0520", "'fhirServer' must be a URL")
        prefetch = raw.get("prefetch", {})
        if prefetch is None:
            prefetch = {}
        if not isinstance(prefetch, dict):
            raise InvalidRequest("HT-0536", "'prefetch' must be an object of prefetch keys")
        auth = self._authorization(raw.get("fhirAuthorization"), server, access.principal, bases, context)
        user = context["userId"]
        self._check_user(user, access)
        return HookRequest(hook=hook, hook_instance=instance, context=context, principal=access.principal,
                           access=access, fhir_server=server, fhir_authorization=auth, prefetch=prefetch)

    def _authorization(self, raw: object, server: str | None, principal: Principal, bases: list[str],
                       context: dict[str, Any]) -> FhirAuthorization | None:
        """fhirAuthorization ("FHIR Resource Access"): checked when it is for this platform."""
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise InvalidRequest("HT-0524", "'fhirAuthorization' must be an object")
        token, ttype, scope, subject = (raw.get(k) for k in ("access_token", "token_type", "scope", "subject"))
        expires = raw.get("expires_in")
        if not (isinstance(token, str) and token and isinstance(scope, str) and isinstance(subject, str)
                and isinstance(expires, int) and not isinstance(expires, bool)):
            raise InvalidRequest("HT-0524", "fhirAuthorization needs access_token, token_type, expires_in, scope "
                                            "and subject (CDS Hooks 2.0, FHIR Resource Access)")
        if ttype != "Bearer":
            raise InvalidRequest("HT-0524", "fhirAuthorization.token_type must be 'Bearer'")
        if server is None:
            raise InvalidRequest("HT-0524", "fhirServer is required when fhirAuthorization is given")
        patient = raw.get("patient")
        if patient is not None and patient != context.get("patientId"):
            raise InvalidRequest("HT-0524", "fhirAuthorization.patient is not the hook's context.patientId")
        auth = FhirAuthorization(token, ttype, expires, scope, subject, patient if isinstance(patient, str) else None)
        if server.rstrip("/") not in bases:
            return auth  # another server's token (the caller's EMR): never used, never sent anywhere
        try:
            other = self.authn.authenticate(f"Bearer {token}", None)
        except HutongError as e:
            raise Unauthorized("HT-0525", "fhirAuthorization.access_token is not a valid token of this platform "
                                          "(unknown, expired or revoked)") from e
        if other.account_id != principal.account_id:
            raise Forbidden("HT-0526", "fhirAuthorization.access_token belongs to another account than the "
                                       "bearer token of this request")
        return auth

    def _check_user(self, user: str, access: Access) -> None:
        """context.userId must be the caller (a clinician) or a post of the caller's
        institution (an institution system calling for its clinician)."""
        p = access.principal
        kind, _, rid = user.partition("/")
        if kind not in ("Practitioner", "PractitionerRole") or not rid:
            raise InvalidRequest("HT-0523", "context.userId must be 'Practitioner/id' or 'PractitionerRole/id'")
        if p.role is Role.CLINICIAN:
            mine = {f"Practitioner/{p.practitioner_id}" if p.practitioner_id else "",
                    f"PractitionerRole/{p.practitioner_role_id}" if p.practitioner_role_id else ""} - {""}
            if user in mine:
                return
            if kind == "PractitionerRole" and p.practitioner_id:
                # Another post of the same clinician, at the caller's own institution only.
                role = self._body("PractitionerRole", rid)
                if role and _ref(role.get("practitioner")) == f"Practitioner/{p.practitioner_id}" \
                        and _ref(role.get("organization")) == f"Organization/{p.organization_id}":
                    return
            raise Forbidden("HT-0529", "context.userId names another user than the caller")
        # An institution system: a post (or practitioner) of its own institution.
        org = f"Organization/{p.organization_id}"
        if kind == "PractitionerRole":
            role = self._body("PractitionerRole", rid)
            if role is not None and _ref(role.get("organization")) == org:
                return
        elif self._roles_of(rid, p.organization_id):
            return
        raise Forbidden("HT-0529", "context.userId is not a post of the calling institution")

    def _user_role(self, req: HookRequest, records: AccessRecords) -> dict[str, Any] | None:
        """The stored PractitionerRole of context.userId (privileges come from it only)."""
        p = req.principal
        kind, _, rid = (req.user_id or "").partition("/")
        if kind == "PractitionerRole":
            return self._body("PractitionerRole", rid)
        if p.role is Role.CLINICIAN and p.practitioner_role_id:
            return self._body("PractitionerRole", p.practitioner_role_id)
        roles = self._roles_of(rid, p.organization_id)
        return roles[0] if roles else None

    def _roles_of(self, practitioner_id: str, org_id: str | None) -> list[dict[str, Any]]:
        """The active posts of a practitioner at an institution (PractitionerRole is directory data)."""
        if not org_id:
            return []
        parsed = fsearch.parse("PractitionerRole", [("practitioner", f"Practitioner/{practitioner_id}"),
                                                    ("organization", f"Organization/{org_id}")])
        out = []
        for s in self.repo.search(parsed.query).matches:
            body = orjson.loads(s.body) if s.body else None
            if isinstance(body, dict) and body.get("active", True) is not False:
                out.append(body)
        return out

    def _body(self, type: str, id: str) -> dict[str, Any] | None:
        s = self.repo.read(type, id)
        if s is None or s.deleted or s.body is None:
            return None
        body = orjson.loads(s.body)
        return body if isinstance(body, dict) else None

    def _remember(self, svc: ServiceDef, req: HookRequest, cards: list[Card], access: Access,
                  peer: str | None, checked: Sequence[dict[str, str]] = ()) -> None:
        """The cards given, on the audit trail (feedback is checked against it), each with the
        standard item it is about (its source topic) and the draft order its suggestion
        removes, and the orders the rules checked: what the 互认 dashboard counts
        (hutong.cds.recognition_stats).  A call with neither is not recorded here."""
        issued = [{**IssuedCard(c.uuid, c.rule, c.indicator, tuple(s.uuid for s in c.suggestions),
                                tuple(r.code for r in c.override_reasons)).to_json(), **_subject(c)}
                  for c in cards]
        person = access.person_of(req.patient_id or "") if req.patient_id else None
        self.audit.record(AuditRecord(
            action=CARDS_ACTION, principal=access.principal, persons=(person,) if person else (),
            interaction=f"POST /cds-services/{svc.id}", purpose=None, peer=peer,
            extra={"service": svc.id, "hook": svc.hook, "hookInstance": req.hook_instance,
                   "cards": orjson.dumps(issued).decode(),
                   **({"checked": orjson.dumps(list(checked)).decode()} if checked else {})}))

    # ------------------------------------------------------------------ feedback
    def feedback(self, service_id: str, body: bytes, access: Access, *, peer: str | None = None) -> int:
        """"Feedback": each item recorded as an AuditEvent (action cds-feedback); returns how many."""
        svc = self.service(service_id)
        caller(access)
        raw = _json_object(body, "HT-0532", "the feedback body")
        items = raw.get("feedback")
        if not isinstance(items, list) or not items:
            raise InvalidRequest("HT-0532", "'feedback' (a non-empty array) is required")
        checked: list[tuple[dict[str, Any], IssuedCard, AuditEntry]] = []
        for item in items:
            if not isinstance(item, dict):
                raise InvalidRequest("HT-0532", "each feedback item must be an object")
            card_id, outcome, when = item.get("card"), item.get("outcome"), item.get("outcomeTimestamp")
            if not isinstance(card_id, str) or outcome not in ("accepted", "overridden") or not isinstance(when, str):
                raise InvalidRequest("HT-0532", "feedback needs card (uuid), outcome (accepted|overridden) and "
                                                "outcomeTimestamp")
            try:
                datetime.fromisoformat(when.replace("Z", "+00:00"))
            except ValueError as e:
                raise InvalidRequest("HT-0532", "outcomeTimestamp is not an ISO 8601 instant") from e
            found = self._issued(svc, card_id, access.principal)
            if found is None:
                raise Forbidden("HT-0533", f"card {card_id} was not given to this caller by {svc.id}")
            card, entry = found
            _check_outcome(item, card)
            checked.append((item, card, entry))
        # All-or-nothing: every item checked before any is recorded.
        for item, card, entry in checked:
            reason = item.get("overrideReason") or {}
            code = ((reason.get("reason") or {}).get("code")) if isinstance(reason, dict) else None
            comment = reason.get("userComment") if isinstance(reason, dict) else None
            accepted = [str(s.get("id")) for s in item.get("acceptedSuggestions") or [] if isinstance(s, dict)]
            extra = {"service": svc.id, "card": card.uuid, "rule": card.rule, "outcome": str(item["outcome"]),
                     "outcomeTimestamp": str(item["outcomeTimestamp"])}
            if code:
                extra["overrideReason"] = str(code)
            if accepted:
                extra["acceptedSuggestions"] = ",".join(accepted)
            # The card's item and the resources it rested on (the recognised result) go with the
            # feedback: the resident's timeline names the test spared (hutong.web.ui.avoided).
            subject = _issued_subject(entry, card.uuid)
            for key in ("item", "order"):  # the order: a later decision on it replaces this one
                if key in subject:
                    extra[key] = subject[key]
            self.audit.record(AuditRecord(
                action=FEEDBACK_ACTION, principal=access.principal, persons=entry.persons,
                entities=tuple(x for x in subject.get("about", "").split(",") if x),
                interaction=f"POST /cds-services/{svc.id}/feedback", peer=peer,
                reason=comment if isinstance(comment, str) and comment.strip() else None, extra=extra))
        return len(checked)

    def _issued(self, svc: ServiceDef, card_id: str, principal: Principal) -> tuple[IssuedCard, AuditEntry] | None:
        since = self.clock() - FEEDBACK_WINDOW_MS
        after: int | None = None
        for _ in range(20):
            page = self.audit.search(account=principal.account_id, action=CARDS_ACTION, since=since, limit=200,
                                     after_seq=after)
            for e in page:
                if e.extra.get("service") != svc.id or card_id not in e.extra.get("cards", ""):
                    continue
                for c in orjson.loads(e.extra["cards"]):
                    if c.get("uuid") == card_id:
                        return IssuedCard.from_json(c), e
            if len(page) < 200:
                return None
            after = page[-1].seq
        return None


def _subject(c: Card) -> dict[str, str]:
    """The item (source.topic code) and draft order (the delete suggestion's resource) of a card."""
    out: dict[str, str] = {}
    topic = c.source.topic
    if topic is not None and topic.code:
        out["item"] = topic.code
    for s in c.suggestions:
        for a in s.actions:
            if a.type == "delete" and a.resource_id:
                out["order"] = a.resource_id.rpartition("/")[2]
    if c.about:
        out["about"] = ",".join(c.about)
    return out


def _issued_subject(entry: AuditEntry, card_id: str) -> dict[str, str]:
    """What the cds-cards row recorded of one card besides its IssuedCard: item, order, about."""
    for c in orjson.loads(entry.extra.get("cards", "[]")):
        if isinstance(c, dict) and c.get("uuid") == card_id:
            return {k: str(c[k]) for k in ("item", "order", "about") if isinstance(c.get(k), str) and c[k]}
    return {}


OTHER_REASON = "other"  # an override reason that is only the clinician's words (userComment required)


def _check_outcome(item: dict[str, Any], card: IssuedCard) -> None:
    if item["outcome"] == "accepted":
        acc = item.get("acceptedSuggestions")
        if not isinstance(acc, list) or not acc or not all(isinstance(s, dict) for s in acc):
            raise InvalidRequest("HT-0532", "an accepted card names its acceptedSuggestions ([{id}])")
        unknown = [s.get("id") for s in acc if s.get("id") not in card.suggestions]
        if unknown:
            raise InvalidRequest("HT-0532", "acceptedSuggestions names a suggestion the card did not hold")
        return
    if card.indicator == "critical" and not card.reasons:
        raise InvalidRequest("HT-0534", "this card is a hard stop: it cannot be overridden")
    reason = item.get("overrideReason")
    if reason is None:
        if card.reasons:
            raise InvalidRequest("HT-0534", "this card needs an overrideReason from its overrideReasons")
        return
    if not isinstance(reason, dict) or not isinstance(reason.get("reason"), dict):
        raise InvalidRequest("HT-0532", "overrideReason must be {reason: Coding, userComment?}")
    code = reason["reason"].get("code")
    if card.reasons and code not in card.reasons:
        raise InvalidRequest("HT-0534", f"override reason {code!r} is not one the card offered")
    comment = reason.get("userComment")
    if comment is not None and not isinstance(comment, str):
        raise InvalidRequest("HT-0532", "overrideReason.userComment must be a string")
    if code == OTHER_REASON and not (comment or "").strip():
        # 不互认理由 "其他(需填写)": the clinician's own words are the reason (国卫医发〔2022〕6号
        # asks that a repeat examination's reason be recorded), so "other" alone says nothing.
        raise InvalidRequest("HT-0534", "override reason 'other' needs userComment: the clinician's own words")


def feedback_counts(audit: AuditLog, *, since: int | None = None,
                    limit: int = 100_000) -> dict[str, dict[str, int]]:
    """Per rule: cards given (``issued``), ``accepted`` and ``overridden``, and per
    override reason (``reason:<code>``), from the audit trail."""
    out: dict[str, dict[str, int]] = {}
    for action in (CARDS_ACTION, FEEDBACK_ACTION):
        after: int | None = None
        seen = 0
        while seen < limit:
            page = audit.search(action=action, since=since, limit=500, after_seq=after)
            for e in page:
                if action == CARDS_ACTION:
                    for c in orjson.loads(e.extra.get("cards", "[]")):
                        n = out.setdefault(str(c.get("rule", "")), {})
                        n["issued"] = n.get("issued", 0) + 1
                else:
                    n = out.setdefault(e.extra.get("rule", ""), {})
                    o = e.extra.get("outcome", "")
                    n[o] = n.get(o, 0) + 1
                    if e.extra.get("overrideReason"):
                        k = "reason:" + e.extra["overrideReason"]
                        n[k] = n.get(k, 0) + 1
            seen += len(page)
            if len(page) < 500:
                break
            after = page[-1].seq
    return out


class AccessRecords:
    """:class:`hutong.cds.cards.RecordSource` over the caller's Access: the patient's
    resources from every linked source patient the caller may see (own institution's
    registrations always; others' only with a basis for the person), plus the
    caller's own prefetched resources the platform does not hold."""

    def __init__(self, fhir: FhirService, access: Access, patient_id: str, linked: list[str],
                 supplied: list[dict[str, Any]]) -> None:
        self.fhir = fhir
        self.access = access
        self.patient_id = patient_id
        self.linked = linked
        self.supplied = supplied
        self._cache: dict[tuple[str, tuple[tuple[str, str], ...]], list[dict[str, Any]]] = {}
        self._targets: list[str] | None = None

    def targets(self) -> list[str]:
        """The linked patients whose records the caller may see (a search naming
        others would be refused as a whole; these it is not)."""
        if self._targets is None:
            a = self.access
            org = a.principal.organization_id
            if a.unrestricted:
                self._targets = list(self.linked)
            else:
                own = [p for p in self.linked if org and a.managing_org(p) == org]
                golden = self.patient_id if self.patient_id.startswith(PERSON_PREFIX) else a.person_of(self.patient_id)
                basis = a.basis(golden) if golden else None
                self._targets = list(self.linked) if basis is not None and basis.purpose else own
        return self._targets

    def resources(self, type: str) -> list[dict[str, Any]]:
        return self.search(type, ())

    def search(self, type: str, params: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        """:meth:`resources` narrowed by FHIR search ``params`` (``code``, ``date`` ...) in SQL,
        so a rule that needs a few items of a long record reads only those
        (hutong.cds.recognition).  The caller's own prefetched resources of ``type`` come
        unfiltered (a rule checks what it uses)."""
        key = (type, tuple(params))
        if key in self._cache:
            return self._cache[key]
        out = [r for r in self.supplied if r.get("resourceType") == type]
        targets = self.targets()
        if targets and self.access.may("search", type):
            # FhirService.search's steps (scope compiled into SQL, then touched and
            # presented), without building and re-reading a Bundle, and without a total.
            items = [("patient", ",".join(targets)), *params]
            q = fsearch.parse(type, [*items, ("_count", str(fsearch.MAX_COUNT))]).query
            q.total = False
            q.scope = self.access.search_scope(type, items, None)
            for _ in range(50):  # pages: 50 000 resources of one type at most
                page = self.fhir.repo.search(q)
                self.access.touched(page.matches)
                out += [orjson.loads(s.body) for s in self.access.present(page.matches) if s.body is not None]
                if page.next_cursor is None:
                    break
                q.cursor = page.next_cursor
        self._cache[key] = out
        return out

    def read(self, type: str, id: str) -> dict[str, Any] | None:
        for r in self.supplied:
            if r.get("resourceType") == type and r.get("id") == id:
                return r
        if not self.access.may("read", type):
            return None
        s = self.fhir.repo.read(type, id)
        if s is None or s.deleted or s.body is None:
            return None
        try:
            self.access.check_read(s)
        except Forbidden:
            return None
        shown = self.access.present([s])[0]
        body = orjson.loads(shown.body) if shown.body else None
        return body if isinstance(body, dict) else None


def _linked(access: Access, patient_id: str) -> list[str]:
    """Every source patient the MPI links to the hook's patient (a source id or a golden person's)."""
    person = patient_id if patient_id.startswith(PERSON_PREFIX) else access.person_of(patient_id)
    if person is None:
        return [patient_id]
    out = access.patients_of(person)
    return out if patient_id in out else [patient_id, *out]


def caller(access: Access) -> None:
    """Clinicians and institution systems call CDS services (HT-0104, the platform's role refusal)."""
    access.require_role(*CALLERS, what="CDS Hooks calls (clinicians and institution systems only)")


def _json_object(body: bytes, code: str, what: str) -> dict[str, Any]:
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(code, f"{what} is not valid JSON") from e
    if not isinstance(raw, dict):
        raise InvalidRequest(code, f"{what} must be a JSON object")
    return raw


def fsearch_id_ok(v: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", v) is not None


def _ref(v: object) -> str | None:
    if isinstance(v, dict) and isinstance(v.get("reference"), str):
        return str(v["reference"])
    return None


def _supplied(prefetch: dict[str, Any], patient_id: str) -> list[dict[str, Any]]:
    """The prefetched resources ("Prefetch": a resource, a searchset Bundle, or null),
    each checked to be about the hook's patient (else 400 HT-0536)."""
    out: list[dict[str, Any]] = []
    for key, value in prefetch.items():
        if value is None:
            continue  # "null": the client could not or would not fetch it
        if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
            raise InvalidRequest("HT-0536", f"prefetch {key!r} is not a FHIR resource or Bundle")
        if value["resourceType"] == "Bundle":
            for e in value.get("entry") or []:
                r = e.get("resource") if isinstance(e, dict) else None
                if not isinstance(r, dict) or not isinstance(r.get("resourceType"), str):
                    raise InvalidRequest("HT-0536", f"prefetch {key!r} holds an entry that is not a resource")
                if r["resourceType"] != "OperationOutcome":
                    out.append(r)
        else:
            out.append(value)
    for r in out:
        if r["resourceType"] == "Patient":
            if r.get("id") != patient_id:
                raise InvalidRequest("HT-0536", "a prefetched Patient is not the hook's context.patientId")
            continue
        refs = [_ref(r.get(k)) for k in _REF_KEYS if k in r]
        if any(x is not None and x != f"Patient/{patient_id}" for x in refs):
            raise InvalidRequest("HT-0536", f"a prefetched {r['resourceType']} is about another patient than "
                                            "context.patientId")
    return out
