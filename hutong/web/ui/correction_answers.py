"""The resident's side of an answered correction request (纠偏权; issue 16, item 8).

The institution answers on the resident's own Task (hutong.web.ui.corrections_inbox,
rules in hutong.security.corrections).  Here the resident portal:

- tells the resident on their home page that an answer came (您的更正申请已有答复)
  until they have opened 申请更正 since: the newest answer's time is compared
  with the one the browser saw last (a cookie per person, HttpOnly, holding a
  time only; per browser, so a phone and a computer each show it once);
- lets them add what the institution asked for (on-hold -> requested, a note
  the write policy stamps with their Patient as author), under their own Access
  and audited like every write, with If-Match of the version they saw.

No SMS goes out for an answer: the platform's SMS path carries sign-in codes
and break-glass notices (hutong.web.access_ops), and an answer's words are
health data that do not belong in a text message.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import orjson

from hutong.errors import Conflict, HutongError, InvalidRequest, NotFound, PreconditionFailed
from hutong.fhir.service import FhirService
from hutong.fhir.validation import check_id

TASK_CODE = "https://fhir.hutong.dev/CodeSystem/task|correction-request"
# Statuses that carry an answer for the resident (task.html#statemachine).
ANSWERED = ("completed", "rejected", "on-hold")
MAX_TEXT = 2000


def seen_cookie(person: str) -> str:
    """The cookie holding when this person's answers were last seen (no id in its name)."""
    return "hutong_cor_" + hashlib.sha256(person.encode()).hexdigest()[:12]


def _ms(v: Any) -> int:
    try:
        return int(datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0


def newest_answer_ms(svc: FhirService, person: str) -> int:
    """When the newest answer to this person's correction requests came (0: none)."""
    bundle = orjson.loads(svc.search("Task", [
        ("patient", f"Patient/{person}"), ("code", TASK_CODE), ("status", ",".join(ANSWERED)),
        ("_sort", "-_lastUpdated"), ("_count", "1")], {}).body or b"{}")
    for e in bundle.get("entry") or []:
        res = e.get("resource") if isinstance(e, dict) else None
        if isinstance(res, dict) and res.get("resourceType") == "Task":
            return _ms((res.get("meta") or {}).get("lastUpdated"))
    return 0


def unseen(svc: FhirService, person: str, cookie: str | None) -> bool:
    try:
        seen = int(cookie or "0")
    except ValueError:
        seen = 0
    return newest_answer_ms(svc, person) > seen


def add_information(svc: FhirService, person: str, task_id: str, text: str, version: str, now: str) -> None:
    """The resident's reply to a question: one note, and the request back to requested."""
    text = text.strip()
    if not text or len(text) > MAX_TEXT:
        raise InvalidRequest("HT-0454", "请填写要补充的内容（最多2000字）。")
    try:
        check_id(task_id)
        task: dict[str, Any] = orjson.loads(svc.read("Task", task_id).body or b"{}")
    except HutongError as e:
        raise NotFound("HT-0455", "没有这条更正申请。") from e
    if str(((task.get("for") or {}).get("reference")) or "") != f"Patient/{person}":
        raise NotFound("HT-0455", "没有这条更正申请。")
    if task.get("status") != "on-hold" or str((task.get("meta") or {}).get("versionId")) != version:
        raise Conflict("HT-0453", "这条申请已有更新，请刷新页面后再补充。")
    new = {k: v for k, v in task.items() if k != "meta"}
    new["status"] = "requested"
    new["note"] = [*(task.get("note") or []), {"time": now, "text": text}]
    try:
        svc.update("Task", task_id, orjson.dumps(new), {"if-match": f'W/"{version}"'})
    except PreconditionFailed as e:
        raise Conflict("HT-0453", "这条申请已有更新，请刷新页面后再补充。") from e


__all__ = ["add_information", "newest_answer_ms", "seen_cookie", "unseen"]
