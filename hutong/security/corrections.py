"""Residents' correction requests (纠偏权, 《个人信息保护法》第四十六条): who answers, and what each side may change.

A request is one FHIR Task (task.html R4) from filing to answer, never a
second resource: the resident files it (hutong.web.ui.resident) with ``code``
correction-request, ``status`` requested, ``for`` their golden Patient,
``focus`` the item, ``owner`` the Organization that manages the item's
registration and ``description`` what is wrong.  The institution answers on
the same Task, along R4's state machine (task.html#statemachine):

- corrected: ``status`` completed, ``businessStatus`` corrected, ``output``
  what was corrected (and a note if it likes);
- refused: ``status`` rejected, ``businessStatus`` not-corrected,
  ``statusReason`` the reason (required: PIPL Art. 46 and 50 — a refusal
  states its reason);
- more information asked: ``status`` on-hold, ``businessStatus``
  awaiting-information, a note with the question.

The resident may add information (a note: on-hold goes back to requested) or
withdraw the request (cancelled), and nothing else: they cannot answer their
own request.  Notes carry their author: whatever a writer claims, the policy
stamps an appended note with the side that wrote it (the resident's golden
Patient or the institution's Organization), so neither can speak for the other.

Who answers for the institution: its system account (HIS/EMR: the institution
itself), or a clinician whose post (PractitionerRole, registered by the
institution) carries the duty code ``correction-officer`` (hutong.systems
DUTY_SYSTEM; the 医务科/病案管理 staff).  Ordinary clinicians may not: a
correction is a decision about the institution's record, made by those it
charges with it (《医疗机构病历管理规定》第二十七条: 病历的修改由医疗机构指定部门负责).

These rules are pure; :class:`hutong.security.write_policy.WritePolicy` runs
them inside the write's transaction with what is stored.
"""

from __future__ import annotations

from typing import Any

from hutong.errors import Forbidden, InvalidRequest
from hutong.systems import CORRECTION_OFFICER, DUTY_SYSTEM

# The fields that make up the request: the answer never changes them.
REQUEST_FIELDS = ("for", "owner", "focus", "description", "code", "authoredOn", "intent", "requester")
# Fields only the institution writes.
ANSWER_FIELDS = ("businessStatus", "statusReason", "output")
# Statuses after which nothing changes (task.html#statemachine: terminal states).
FINAL = frozenset({"completed", "rejected", "cancelled", "failed", "entered-in-error"})
# Statuses the institution may set.
ANSWERS = frozenset({"received", "accepted", "ready", "in-progress", "on-hold", "completed", "rejected"})
# Task.businessStatus of an answer (our CodeSystem; R4 leaves businessStatus to the workflow).
BUSINESS_SYSTEM = "https://fhir.hutong.dev/CodeSystem/correction-status"
CORRECTED, NOT_CORRECTED, AWAITING = "corrected", "not-corrected", "awaiting-information"


def designated(role: dict[str, Any] | None, org: str, practitioner_id: str | None) -> bool:
    """Does this PractitionerRole (a clinician's post) answer correction requests
    for Organization ``org``?  Active, at that institution, the clinician's own
    post, with the duty code."""
    if not isinstance(role, dict) or role.get("active", True) is False:
        return False
    if _ref(role.get("organization")) != f"Organization/{org}":
        return False
    if practitioner_id and _ref(role.get("practitioner")) != f"Practitioner/{practitioner_id}":
        return False
    return any(isinstance(c, dict) and (c.get("system"), c.get("code")) == (DUTY_SYSTEM, CORRECTION_OFFICER)
               for cc in role.get("code") or [] if isinstance(cc, dict) for c in cc.get("coding") or [])


def check_answer(earlier: dict[str, Any], resource: dict[str, Any], org: str) -> bool:
    """An institution's new version of a correction request addressed to it.
    Returns True when it stamped the resource (appended notes' author)."""
    if earlier.get("status") in FINAL:
        raise Forbidden("HT-0451", "this correction request has its final answer; a new one is a new request")
    for k in REQUEST_FIELDS:
        if resource.get(k) != earlier.get(k):
            raise Forbidden("HT-0451", f"an answer may not change the request itself (Task.{k})")
    status = resource.get("status")
    if status != earlier.get("status") and status not in ANSWERS:
        raise Forbidden("HT-0451", f"an institution answers with one of {', '.join(sorted(ANSWERS))}, "
                                   f"not {status!r} (cancelling is the resident's)")
    if status == "rejected" and not (_words(resource.get("statusReason")) or _new_notes(earlier, resource)):
        raise InvalidRequest("HT-0454", "a refusal states its reason (Task.statusReason)")
    return _stamp_notes(earlier, resource, {"reference": f"Organization/{org}"})


def check_person_write(earlier: dict[str, Any] | None, resource: dict[str, Any]) -> bool:
    """A resident's (or delegate's) correction request, new or changed.  Returns
    True when it stamped the resource (appended notes' author)."""
    who = resource.get("for")
    author = {"reference": str(who.get("reference") or "") if isinstance(who, dict) else ""}
    if earlier is None:
        if resource.get("status") != "requested" or any(resource.get(k) for k in ANSWER_FIELDS):
            raise Forbidden("HT-0452", "a correction request is filed with status requested and no answer")
        return _stamp_notes({}, resource, author)
    before, after = earlier.get("status"), resource.get("status")
    if before in FINAL:
        raise Forbidden("HT-0452", "this correction request has its final answer")
    for k in set(earlier) | set(resource):
        if k not in ("status", "note", "meta", "id", "text", "lastModified") and earlier.get(k) != resource.get(k):
            raise Forbidden("HT-0452", f"a resident may add information to a correction request or withdraw it, "
                                       f"not change Task.{k}")
    if after != before and not (after == "cancelled" or (before == "on-hold" and after == "requested")):
        raise Forbidden("HT-0452", "a resident may withdraw a correction request (cancelled) or, when asked for "
                                   "more, send it back (requested); the institution answers it")
    return _stamp_notes(earlier, resource, author)


def answer_text(task: dict[str, Any]) -> str:
    """The institution's answer in the words it gave: what was corrected, why
    not, or (waiting for the resident) its latest question.  Notes the resident
    wrote are never part of it (their author is the resident's Patient)."""
    outs = [str(o["valueString"]) for o in task.get("output") or []
            if isinstance(o, dict) and isinstance(o.get("valueString"), str)]
    reason = _words(task.get("statusReason"))
    ours = [str(n["text"]) for n in task.get("note") or []
            if isinstance(n, dict) and isinstance(n.get("text"), str) and n["text"]
            and _ref(n.get("authorReference")).split("/")[-2:-1] != ["Patient"]]
    if task.get("status") == "on-hold" and ours:
        return ours[-1]
    if outs or reason:
        return " ".join([*outs, *([reason] if reason else [])])
    return " ".join(ours)


def _new_notes(earlier: dict[str, Any], resource: dict[str, Any]) -> list[Any]:
    old = earlier.get("note") or []
    new = resource.get("note") or []
    if not isinstance(new, list) or new[:len(old)] != old:
        raise Forbidden("HT-0451", "notes already on a correction request stay as written (append only)")
    return new[len(old):]


def _stamp_notes(earlier: dict[str, Any], resource: dict[str, Any], author: dict[str, str]) -> bool:
    stamped = False
    for n in _new_notes(earlier, resource):
        if not isinstance(n, dict):
            continue
        for k in ("authorString", "authorReference"):
            if k in n and n[k] != author:
                del n[k]
                stamped = True
        if n.get("authorReference") != author:
            n["authorReference"] = dict(author)
            stamped = True
    return stamped


def _words(cc: Any) -> str:
    if not isinstance(cc, dict):
        return ""
    if isinstance(cc.get("text"), str) and cc["text"].strip():
        return str(cc["text"]).strip()
    return next((str(c["display"]) for c in cc.get("coding") or []
                 if isinstance(c, dict) and isinstance(c.get("display"), str)), "")


def _ref(value: Any) -> str:
    ref = value.get("reference") if isinstance(value, dict) else None
    return ref.split("/_history")[0] if isinstance(ref, str) else ""


__all__ = ["AWAITING", "BUSINESS_SYSTEM", "CORRECTED", "FINAL", "NOT_CORRECTED", "answer_text", "check_answer",
           "check_person_write", "designated"]
