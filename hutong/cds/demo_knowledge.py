"""The synthetic region's 互认 knowledge for ``make demo`` (issue 14, item 6).

The example knowledge (hutong/cds/seed/recognition.json: the items, windows, scope marks and
负面清单) is given the demo region's own institutions: each institution's QC status
(室间质评 for labs, 影像质控 for imaging; every seventh institution's lab QC lapsed, so the
demo also shows an institution whose results are not recognised) and its own local codes
(``H<nn>-<item number>`` in ``urn:hutong:code:<机构代码>``, so orders in one hospital's codes match
results another hospital coded otherwise).  It is drafted by one demo committee member and
approved by another (the same four-eyes life cycle as in production, hutong.cds.versions), once.

:func:`try_it` then finds what to try: for the demo clinician and resident, an item whose
order gets a real card today (the rule's own :func:`hutong.cds.recognition.find_equivalents`
through the clinician's Access), so ``make demo`` can say which account, patient and item.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from hutong.cds.cards import ORDER_SELECT, HookRequest
from hutong.cds.knowledge import KIND, LOCAL_CODE_PREFIX, parse
from hutong.cds.recognition import find_equivalents
from hutong.cds.versions import AuditSink, KnowledgeVersions, Version, account_principal
from hutong.fhir.service import FhirService
from hutong.security.principal import Principal
from hutong.store.repository import Repository
from hutong.systems import ORGANIZATION

SEED_PATH = "seed/recognition.json"
VALID = ("2025-01-01", "2027-12-31")
LAPSED = ("2024-01-01", "2024-12-31")
COMMITTEE = (("demo-committee-1", "王委员"), ("demo-committee-2", "李委员"))


def _code(org: dict[str, Any]) -> str | None:
    return next((i.get("value") for i in org.get("identifier", []) if i.get("system") == ORGANIZATION), None)


def region_knowledge(seed: dict[str, Any], orgs: list[dict[str, Any]]) -> dict[str, Any]:
    """The seed knowledge with QC rows and local codes for each of ``orgs`` (Organization resources)."""
    codes = sorted({c for c in (_code(o) for o in orgs) if c})
    items = [i["key"] for i in seed["items"]]
    names = {i["key"]: i["name"] for i in seed["items"]}
    quality: list[dict[str, Any]] = []
    local: list[dict[str, Any]] = []
    for n, code in enumerate(codes, start=1):
        lab = LAPSED if n % 7 == 0 else VALID
        quality.append({"institution": code, "program": "室间质评", "items": ["*lab"], "valid_from": lab[0],
                        "valid_to": lab[1]})
        quality.append({"institution": code, "program": "影像质控", "items": ["*imaging"], "valid_from": VALID[0],
                        "valid_to": VALID[1]})
        local.append({"institution": code, "system": LOCAL_CODE_PREFIX + code, "codes": {
            f"H{n:02d}-{m:03d}": {"item": key, "display": names[key]} for m, key in enumerate(items, start=1)}})
    return {**seed, "title": seed["title"] + "（演示区域）", "quality": quality, "local_codes": local}


def local_code(data: dict[str, Any], institution: str, item: str) -> tuple[str, str] | None:
    """(system, code) of ``item`` in ``institution``'s local codes."""
    for lc in data.get("local_codes") or ():
        if lc.get("institution") == institution:
            for code, target in (lc.get("codes") or {}).items():
                if (target.get("item") if isinstance(target, dict) else target) == item:
                    return str(lc.get("system") or LOCAL_CODE_PREFIX + institution), str(code)
    return None


def ensure(repo: Repository, audit: AuditSink, seed: dict[str, Any], orgs: list[dict[str, Any]],
           committee: list[Principal], effective_from: str) -> Version | None:
    """Draft (by the first committee member) and approve (by the second) the region's knowledge,
    unless a 互认 version exists already; the new version, or None."""
    versions = KnowledgeVersions(repo, audit)
    if any(v.kind == KIND for v in versions.list()):
        return None
    data = region_knowledge(seed, orgs)
    parse(data)  # checked whole before anything is stored (HT-0501)
    v = versions.draft(committee[0], data, effective_from=effective_from,
                       note="演示区域：各机构质控状态与本地编码")
    return versions.approve(v.id, committee[1])


def committee_accounts(repo: Repository, accounts: Any) -> tuple[list[Principal], dict[str, dict[str, str]]]:
    """The two demo committee members (created once): their principals, and the sign-in of new ones."""
    from hutong.security.principal import Role

    made: dict[str, dict[str, str]] = {}
    for username, name in COMMITTEE:
        if accounts.by_username(username) is None:
            _a, password, uri = accounts.add_user(username, role=Role.COMMITTEE, name=name)
            made[username] = {"name": name, "password": password, "totp_uri": uri}
    return [account_principal(repo, u) for u, _ in COMMITTEE], made


@dataclass(frozen=True, slots=True)
class Trial:
    patient: str         # the golden person whose record holds the result
    item: str            # item name, e.g. 胸部CT平扫
    code: str            # the order's code in the clinician's institution
    system: str
    institution: str     # where the recognisable result is from
    day: str             # its date
    window_days: int


def try_it(repo: Repository, access: Any, patients: list[str], data: dict[str, Any], clinician_org_code: str,
           now: datetime | None = None) -> Trial | None:
    """The first of ``patients`` (golden persons) for whom the demo clinician ordering some item gets a
    card today, and that item (a result of another institution preferred): the rule's own
    :func:`find_equivalents` through the clinician's Access, on items the patient has a result of
    within the item's longest window (the synthetic history ends before today)."""
    from hutong.cds.service import AccessRecords, _linked

    k = KnowledgeVersions(repo, _ReadOnly()).in_force()
    if k is None:
        return None
    now = now or datetime.now(UTC)
    since = (now - timedelta(days=max((k.longest_window(i) for i in k.items), default=0))).date().isoformat()
    own: Trial | None = None
    for patient_id in patients:
        records = AccessRecords(FhirService(repo, "", access=access), access, patient_id,
                                _linked(access, patient_id), [])
        items: list[Any] = []
        for r in records.search("DiagnosticReport", [("date", "ge" + since)]):
            m = k.item_of_concept(r.get("code"))
            if m is not None and m.item not in items:
                items.append(m.item)
        for r in records.search("ImagingStudy", [("started", "ge" + since)]):
            for pc in r.get("procedureCode") or ():
                m = k.item_of_concept(pc)
                if m is not None and m.item not in items:
                    items.append(m.item)
        for item in items:
            coded = local_code(data, clinician_org_code, item.key)
            if coded is None:
                continue
            system, code = coded
            order = {"resourceType": "ServiceRequest", "id": "demo-" + secrets.token_hex(4), "status": "draft",
                     "intent": "order", "subject": {"reference": f"Patient/{patient_id}"},
                     "code": {"coding": [{"system": system, "code": code}]}}
            req = HookRequest(hook=ORDER_SELECT, hook_instance="00000000-0000-4000-8000-000000000000",
                              context={"patientId": patient_id, "selections": [f"ServiceRequest/{order['id']}"],
                                       "draftOrders": {"resourceType": "Bundle", "type": "collection",
                                                       "entry": [{"resource": order}]}},
                              principal=access.principal, access=access)
            for e in find_equivalents(k, req, records, now):
                t = Trial(patient_id, item.name, code, system, e.institution.name, e.day, e.rule.window_days)
                if e.institution.org_id != access.principal.organization_id:
                    return t
                own = own or t
    return own


class _ReadOnly:
    def record(self, rec: Any) -> int:
        raise RuntimeError("reading knowledge writes nothing")

    def record_in(self, w: Any, rec: Any) -> int:
        raise RuntimeError("reading knowledge writes nothing")


def seed_json() -> dict[str, Any]:
    from pathlib import Path

    data: dict[str, Any] = orjson.loads((Path(__file__).resolve().parent / SEED_PATH).read_bytes())
    return data
