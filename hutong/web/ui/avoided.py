"""Tests a resident was spared because an earlier result was recognised (issue 14, item 5).

Read from the audit trail: each accepted suggestion of the recognition rule's card is a
``cds-feedback`` row (hutong.cds.service, CDS Hooks 2.0 "Feedback") about the resident's golden
person, naming the card's item and, as its entity, the result the card recognised.  Only the rows
of the person the page is about are read (``AuditLog.search(person=...)``; the portal's ``me``
decides that person: the resident's own, or one a delegate acts for), and the recognised result
is read through the resident's own Access, like every other record on their pages.  One draft order
counts once, by its newest decision (an acceptance later overridden for the same order spared
nothing), as hutong.cds.recognition_stats counts it.

The words (zh-CN): "12月7日 在 北京市海淀区医院 开检查时，采用了 北京市怀柔中心医院 12月5日 的
血常规 结果，免做一次检查".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from hutong.cds.knowledge import Knowledge
from hutong.cds.recognition import RULE_ID, region_day, result_when
from hutong.cds.service import FEEDBACK_ACTION
from hutong.errors import HutongError
from hutong.fhir.service import FhirService
from hutong.record import readers
from hutong.security.audit import AuditLog
from hutong.security.events import SUCCESS
from hutong.store.repository import Repository
from hutong.systems import ORGANIZATION, REGION_TZ
from hutong.web.ui import i18n
from hutong.web.ui.ordering import knowledge_in_force

MAX_ROWS = 200     # feedback rows read for one page (newest first)
MAX_SHOWN = 20     # spared tests listed

i18n.add({
    "res.avoided": ("互认免做的检查", "Tests spared by mutual recognition"),
    "res.avoided_intro": ("医生开检查时，区域平台找到了您近期在其他医院做过的同类结果，医生采用了该结果，您免做了一次检查。",
                          "When a doctor ordered a test, the platform found a recent equal result from another "
                          "hospital; the doctor used it and you were spared the test."),
    "res.avoided_line": ("{when} 在 {where} 开检查时，采用了 {source} {source_day} 的 {item} 结果，免做一次检查",
                         "{when} at {where}: the {item} result of {source} from {source_day} was used; one "
                         "test spared"),
    "res.avoided_line_short": ("{when} 在 {where} 开检查时，采用了您此前的 {item} 结果，免做一次检查",
                               "{when} at {where}: your earlier {item} result was used; one test spared"),
    "res.avoided_item": ("检查检验", "test"),
    "res.avoided_somewhere": ("医疗机构", "a hospital"),
    "res.month_day": ("{m}月{d}日", "{m}/{d}"),
})


@dataclass(frozen=True, slots=True)
class Avoided:
    """One spared test, in words."""

    time_ms: int
    text: str


def _month_day(day: str, t: i18n.Translator) -> str:
    """YYYY-MM-DD as 12月7日."""
    if len(day) < 10:
        return day
    return t("res.month_day", m=int(day[5:7]), d=int(day[8:10]))


def _read(svc: FhirService, type: str, id: str) -> dict[str, Any] | None:
    try:
        body = orjson.loads(svc.read(type, id).body or b"{}")
    except HutongError:
        return None  # not the resident's to see (or gone): the line names no source
    return body if isinstance(body, dict) else None


class _Names:
    """Institution names as the resident's Access reads them (Organization is directory data)."""

    def __init__(self, svc: FhirService) -> None:
        self.svc = svc
        self.by_code: dict[str, str] = {}
        self.by_id: dict[str, str] = {}

    def of_code(self, code: str | None) -> str:
        if not code:
            return ""
        if code not in self.by_code:
            name = ""
            try:
                bundle = orjson.loads(self.svc.search("Organization", [("identifier", f"{ORGANIZATION}|{code}")],
                                                      {}).body or b"{}")
                for e in bundle.get("entry") or ():
                    r = e.get("resource") if isinstance(e, dict) else None
                    if isinstance(r, dict) and r.get("resourceType") == "Organization" and r.get("name"):
                        name = str(r["name"])
                        break
            except HutongError:
                pass
            self.by_code[code] = name
        return self.by_code[code]

    def of_id(self, org_id: str) -> str:
        if org_id not in self.by_id:
            org = _read(self.svc, "Organization", org_id)
            self.by_id[org_id] = str((org or {}).get("name") or "")
        return self.by_id[org_id]


def spared_tests(audit: AuditLog, repo: Repository, svc: FhirService, person: str,
                 t: i18n.Translator) -> list[Avoided]:
    """The tests ``person`` was spared, newest first (accepted recognition cards, one per card);
    ``repo`` is bound to the page's Access (the knowledge in force names the items)."""
    names = _Names(svc)
    k: Knowledge | None = None
    out: list[Avoided] = []
    seen: set[str] = set()
    for e in audit.search(person=person, action=FEEDBACK_ACTION, limit=MAX_ROWS):
        if person not in e.persons or e.outcome != SUCCESS:
            continue
        x = e.extra
        if x.get("rule") != RULE_ID:
            continue
        # One order, one decision: the newest (rows come newest first) -- accepted, then ordered
        # again and overridden, spared nothing (the 互认 dashboard counts it so too).
        key = f"{e.account_id}|{x.get('order') or x.get('card', '')}"
        if key in seen:
            continue
        seen.add(key)
        if x.get("outcome") != "accepted":
            continue
        where = names.of_code(e.organization) or t("res.avoided_somewhere")
        when = _month_day(datetime.fromtimestamp(e.time_ms / 1000, REGION_TZ).date().isoformat(), t)
        item_key = x.get("item", "")
        if k is None and item_key:
            k = knowledge_in_force(repo)
        item = k.items[item_key].name if k is not None and item_key in k.items else ""
        res = None
        if e.entities and "/" in e.entities[0]:
            kind, _, rid = e.entities[0].partition("/")
            res = _read(svc, kind, rid)
        source = ""
        if res is not None:
            item = (item or readers.text(res.get("code"), code_fallback=False)
                    or readers.text(res.get("procedureCode"), code_fallback=False))
            subject = str((res.get("subject") or {}).get("reference") or "")
            patient = _read(svc, "Patient", subject.rpartition("/")[2]) if subject.startswith("Patient/") else None
            org = str(((patient or {}).get("managingOrganization") or {}).get("reference") or "")
            source = names.of_id(org.rpartition("/")[2]) if org.startswith("Organization/") else ""
        item = item or t("res.avoided_item")
        if res is not None and source:
            text = t("res.avoided_line", when=when, where=where, source=source,
                     source_day=_month_day(region_day(result_when(res)), t), item=item)
        else:
            text = t("res.avoided_line_short", when=when, where=where, item=item)
        out.append(Avoided(e.time_ms, text))
        if len(out) >= MAX_SHOWN:
            break
    return out


__all__ = ["Avoided", "spared_tests"]
