"""The shared vocabulary of Hutong's CDS Hooks 2.0 service: cards, a hook call as the
platform sees it, and the :class:`Rule` every decision-support rule implements.

Shapes follow CDS Hooks 2.0 (https://cds-hooks.hl7.org/2.0/):

- a hook call, "HTTP Request" (hook, hookInstance, fhirServer, fhirAuthorization,
  context, prefetch): :class:`HookRequest`, which also carries the caller the
  platform authenticated (the bearer token's Principal and its request's Access);
- "CDS Service Response" / "Card Attributes": :class:`Card` (uuid, summary < 140
  characters, detail, indicator info|warning|critical, source, suggestions,
  selectionBehavior, overrideReasons, links); "Suggestion": :class:`Suggestion`;
  "Action": :class:`Action` (create|update|delete); "Link": :class:`Link`;
  overrideReasons are FHIR Codings (:class:`Coding`).

A rule never reads the store around the policy: it gets a :class:`RuleContext` whose
:class:`RecordSource` answers only with what the caller's Access admits (the prefetch
the caller sent is used only where the caller's token may read it; the service
fetches through the Access otherwise), and a repository bound to that Access.
Each rule is a plain object implementing :class:`Rule`; the service
(hutong.cds.service) runs every rule registered for the hook, and a rule that
raises produces no card (the operator sees a log line and a metric).

This module has no I/O: types and their JSON form only.
"""

from __future__ import annotations

import uuid as _uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from hutong.security.policy import Access
from hutong.security.principal import Principal
from hutong.store.repository import Repository

Indicator = Literal["info", "warning", "critical"]
SelectionBehavior = Literal["at-most-one", "any"]
ActionType = Literal["create", "update", "delete"]
LinkType = Literal["absolute", "smart"]

# The hooks this service answers (CDS Hooks 2.0 "Hooks"; hook definitions at
# cds-hooks.org/hooks/order-select, order-sign, patient-view).
ORDER_SELECT = "order-select"
ORDER_SIGN = "order-sign"
PATIENT_VIEW = "patient-view"
HOOKS = frozenset({ORDER_SELECT, ORDER_SIGN, PATIENT_VIEW})

SUMMARY_MAX = 139  # "Card Attributes": summary "SHOULD be less than 140 characters"

# The CodeSystem of Hutong's override reasons (不互认理由, 超权限/过敏 override reasons).
OVERRIDE_REASON_SYSTEM = "https://hutong.example.cn/fhir/CodeSystem/cds-override-reason"


def new_uuid() -> str:
    return str(_uuid.uuid4())


@dataclass(frozen=True, slots=True)
class Coding:
    """A FHIR Coding (CDS Hooks 2.0 "Coding"): overrideReasons and source.topic."""

    code: str
    system: str = OVERRIDE_REASON_SYSTEM
    display: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"system": self.system, "code": self.code}
        if self.display:
            out["display"] = self.display
        return out


# "Card Attributes": overrideReasons is an array of Coding; an override reason is a Coding.
OverrideReason = Coding


@dataclass(frozen=True, slots=True)
class Source:
    """"Source": who the guidance comes from (label required; url, topic optional)."""

    label: str
    url: str = ""
    topic: Coding | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label}
        if self.url:
            out["url"] = self.url
        if self.topic is not None:
            out["topic"] = self.topic.to_json()
        return out


@dataclass(frozen=True, slots=True)
class Action:
    """"Action": ``create`` and ``update`` carry a resource, ``delete`` names it by
    ``resourceId`` (a relative reference such as ``ServiceRequest/abc``)."""

    type: ActionType
    description: str
    resource: dict[str, Any] | None = None
    resource_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "description": self.description}
        if self.resource is not None:
            out["resource"] = self.resource
        if self.resource_id is not None:
            out["resourceId"] = self.resource_id
        return out


@dataclass(frozen=True, slots=True)
class Suggestion:
    """"Suggestion": a label, a uuid (for feedback's acceptedSuggestions), actions."""

    label: str
    actions: tuple[Action, ...] = ()
    uuid: str = field(default_factory=new_uuid)
    is_recommended: bool | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "uuid": self.uuid}
        if self.is_recommended is not None:
            out["isRecommended"] = self.is_recommended
        if self.actions:
            out["actions"] = [a.to_json() for a in self.actions]
        return out


@dataclass(frozen=True, slots=True)
class Link:
    """"Link": ``absolute`` opens a page, ``smart`` launches a SMART app."""

    label: str
    url: str
    type: LinkType = "absolute"
    app_context: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "url": self.url, "type": self.type}
        if self.app_context is not None:
            out["appContext"] = self.app_context
        return out


@dataclass(frozen=True, slots=True)
class Card:
    """"Card Attributes" (CDS Hooks 2.0).  ``rule`` names the Hutong rule that made
    the card (not sent; the service records it with the card's uuid so feedback
    counts per rule).  A hard stop is a ``critical`` card without overrideReasons:
    it cannot be overridden (its only suggestion, if any, removes the draft order)."""

    summary: str
    indicator: Indicator
    source: Source
    detail: str = ""
    suggestions: tuple[Suggestion, ...] = ()
    selection_behavior: SelectionBehavior | None = None
    override_reasons: tuple[Coding, ...] = ()
    links: tuple[Link, ...] = ()
    uuid: str = field(default_factory=new_uuid)
    rule: str = ""
    # The resources the card rests on ("Type/id", e.g. the recognised result): not sent; the
    # service records them with the card and its feedback (AuditEvent entities), so the resident
    # can be shown which earlier result spared them a test (hutong.web.ui.avoided).
    about: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.summary) > SUMMARY_MAX:
            object.__setattr__(self, "summary", self.summary[:SUMMARY_MAX - 1] + "…")
        if self.suggestions and self.selection_behavior is None:
            # "selectionBehavior ... MUST be included if suggestions are present"
            object.__setattr__(self, "selection_behavior", "at-most-one")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"uuid": self.uuid, "summary": self.summary, "indicator": self.indicator,
                               "source": self.source.to_json()}
        if self.detail:
            out["detail"] = self.detail
        if self.suggestions:
            out["suggestions"] = [s.to_json() for s in self.suggestions]
            out["selectionBehavior"] = self.selection_behavior
        if self.override_reasons:
            out["overrideReasons"] = [r.to_json() for r in self.override_reasons]
        if self.links:
            out["links"] = [link.to_json() for link in self.links]
        return out


def response_json(cards: Sequence[Card]) -> dict[str, Any]:
    """"CDS Service Response": ``cards`` is REQUIRED (empty when nothing to say)."""
    return {"cards": [c.to_json() for c in cards]}


@dataclass(frozen=True, slots=True)
class FhirAuthorization:
    """"fhirAuthorization" of a hook request, as the caller sent it.  The service
    accepts it only when ``access_token`` is the caller's own bearer token
    (hutong.cds.service): a token in the body never widens what the caller may see."""

    access_token: str
    token_type: str
    expires_in: int
    scope: str
    subject: str
    patient: str | None = None


@dataclass(frozen=True, slots=True)
class HookRequest:
    """One hook call ("HTTP Request"), validated, with the caller the platform
    authenticated.  ``prefetch`` holds only the entries the service trusts for
    this caller (the rest are absent, and rules read through
    :class:`RuleContext.records` anyway)."""

    hook: str
    hook_instance: str
    context: dict[str, Any]
    principal: Principal
    access: Access
    fhir_server: str | None = None
    fhir_authorization: FhirAuthorization | None = None
    prefetch: dict[str, Any] = field(default_factory=dict)
    # The PractitionerRole of context.userId as stored (the caller's own post, or,
    # for an institution system, a post of that institution): privileges are read
    # from it, never from anything the request carries.  None: no post on record.
    user_role: dict[str, Any] | None = None

    @property
    def patient_id(self) -> str | None:
        v = self.context.get("patientId")
        return v if isinstance(v, str) and v else None

    @property
    def user_id(self) -> str | None:
        """context.userId: ``Practitioner/x`` or ``PractitionerRole/x`` (order hooks)."""
        v = self.context.get("userId")
        return v if isinstance(v, str) and v else None

    @property
    def encounter_id(self) -> str | None:
        v = self.context.get("encounterId")
        return v if isinstance(v, str) and v else None

    def draft_orders(self) -> list[dict[str, Any]]:
        """context.draftOrders (a FHIR Bundle) as its resources (order-select, order-sign)."""
        bundle = self.context.get("draftOrders")
        if not isinstance(bundle, dict):
            return []
        out = []
        for e in bundle.get("entry") or []:
            r = e.get("resource") if isinstance(e, dict) else None
            if isinstance(r, dict) and isinstance(r.get("resourceType"), str):
                out.append(r)
        return out

    def selected_orders(self) -> list[dict[str, Any]]:
        """order-select: the draft orders named in context.selections
        (``ServiceRequest/id``); order-sign: every draft order."""
        drafts = self.draft_orders()
        sel = self.context.get("selections")
        if self.hook != ORDER_SELECT or not isinstance(sel, list):
            return drafts
        want = {s for s in sel if isinstance(s, str)}
        return [r for r in drafts if f"{r.get('resourceType')}/{r.get('id')}" in want]


class RecordSource(Protocol):
    """The hook's patient's record as the caller may see it: every call goes
    through the caller's Access (hutong.security.policy), across all source
    patients the MPI links to the same person."""

    def resources(self, type: str) -> list[dict[str, Any]]:
        """The patient's resources of ``type`` the caller may see, from every
        linked institution (trusted prefetch first, else read through the Access)."""
        ...

    def read(self, type: str, id: str) -> dict[str, Any] | None:
        """One resource by id (directory types such as PractitionerRole, or a
        record of this patient) if it exists and the caller may see it, else None."""
        ...


@dataclass(frozen=True, slots=True)
class RuleContext:
    """What a rule may use besides the request: the patient's record through the
    caller's Access, a repository bound to that Access (for rule knowledge such
    as hutong.cds.knowledge_store, or writes the caller makes), and now."""

    records: RecordSource
    repo: Repository
    now: datetime
    base_url: str = ""
    # What rules checked besides the cards they gave ({"rule", "item", "order"} per draft order a
    # rule knew), recorded with the call (hutong.cds.service) so the 互认 dashboard counts orders
    # checked, not only cards (hutong.cds.recognition_stats).
    checked: list[dict[str, str]] = field(default_factory=list)


class Rule(Protocol):
    """A decision-support rule.  ``id`` is stable (it names the rule in cards'
    records, logs and metrics); ``hooks`` the hooks it answers.  ``evaluate``
    returns cards (none when it has nothing to say) and may raise: the service
    then drops that rule's cards and reports the failure to the operator."""

    @property
    def id(self) -> str: ...

    @property
    def hooks(self) -> frozenset[str]: ...

    def evaluate(self, request: HookRequest, ctx: RuleContext) -> list[Card]: ...


def remove_order(order: dict[str, Any], label: str = "撤销此医嘱") -> Suggestion:
    """The suggestion that removes a draft order ("Action" type delete, resourceId
    ``Type/id`` of the draft in context.draftOrders)."""
    ref = f"{order.get('resourceType')}/{order.get('id')}"
    return Suggestion(label=label, actions=(Action("delete", label, resource_id=ref),), is_recommended=True)


def order_name(order: dict[str, Any]) -> str:
    """A draft order's name for a card: the drug, test or procedure as coded (text first)."""
    for key in ("medicationCodeableConcept", "code"):
        cc = order.get(key)
        if isinstance(cc, dict):
            if isinstance(cc.get("text"), str) and cc["text"]:
                return str(cc["text"])
            for c in cc.get("coding") or []:
                if isinstance(c, dict) and (c.get("display") or c.get("code")):
                    return str(c.get("display") or c.get("code"))
    return f"{order.get('resourceType')}/{order.get('id')}"
