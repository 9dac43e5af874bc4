"""Access operations on a resident's record: $break-glass and $access-basis.

``POST Patient/[id]/$break-glass`` (Parameters with a ``reason`` string, or
``{"reason": ...}``): a clinician claims emergency access to the person's whole
record for ``break_glass_hours``; the grant is stored with its reason
(encrypted), the request's audit record is flagged (purpose break-glass), and
the resident is told by SMS.  ``GET Patient/[id]/$access-basis`` answers what
basis the caller has (own institution, treatment relationship, consent,
break-glass, or none) without opening the record, so a user interface can ask
for the reason first.  It is an identity lookup too (issue 12, finding 3): on
another institution's registration it answers only a caller with a basis for
that person, so it cannot turn a source id into the golden id; every answer
and refusal names the person on the audit row (the resident's 谁看了我的档案).

The resident is told by SMS at the phone of their own resident account (which
only they and the platform set), never at a phone an institution registered
(issue 12, finding 9); a person without an account falls back to the golden
record's phone, chosen by the stable survivorship of hutong.mpi.golden.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from hutong.errors import Forbidden, InvalidRequest, NotFound
from hutong.fhir import search as fsearch
from hutong.fhir.response import FhirResponse
from hutong.fhir.service import FhirService, parse_json
from hutong.fhir.validation import check_id
from hutong.mpi.golden import PERSON_PREFIX
from hutong.mpi.idnumber import parse_id_number
from hutong.security.accounts import Accounts
from hutong.security.policy import IDENTITY, OWN_INSTITUTION, Access
from hutong.security.principal import Role
from hutong.security.settings import SecuritySettings
from hutong.store.repository import Repository
from hutong.systems import ID_CARD, REGION_TZ

Notify = Callable[[str, str], None]
# Residents read times in Beijing time whatever the server's own zone (issue 12, finding 18).


def find_person(repo: Repository, id_number: str) -> str | None:
    """The golden person holding this resident ID number (sign-in by ID number)."""
    idn = parse_id_number(id_number)
    if not idn.valid or idn.value is None:
        return None
    value = idn.value
    parsed = fsearch.parse("Patient", [("identifier", f"{ID_CARD}|{value}"), ("_count", "50")], base_url="",
                           strict=True)
    persons = {s.id for s in repo.search(parsed.query).matches if s.id.startswith(PERSON_PREFIX)}
    return persons.pop() if len(persons) == 1 else None


def _person(svc: FhirService, access: Access, patient_id: str) -> str:
    check_id(patient_id)
    s = svc.repo.read("Patient", patient_id)
    if s is None or s.deleted:
        raise NotFound("HT-0009", f"Patient/{patient_id} not found")
    person = access.person_of(patient_id)
    if person is None:
        raise NotFound("HT-0056", f"Patient/{patient_id} is not linked to a person yet")
    return person


def _reason(body: bytes) -> str:
    data: Any = parse_json(body) if body else {}
    if isinstance(data, dict) and data.get("resourceType") == "Parameters":
        for p in data.get("parameter") or []:
            if isinstance(p, dict) and p.get("name") == "reason" and isinstance(p.get("valueString"), str):
                return str(p["valueString"])
        raise InvalidRequest("HT-0106", "break-glass needs a 'reason' parameter (valueString)")
    if isinstance(data, dict) and isinstance(data.get("reason"), str):
        return str(data["reason"])
    raise InvalidRequest("HT-0106", "break-glass needs a reason: Parameters with reason, or {\"reason\": ...}")


def break_glass(svc: FhirService, access: Access, patient_id: str, body: bytes, notify: Notify) -> FhirResponse:
    reason = _reason(body)
    if len(reason) > 2000:
        raise InvalidRequest("HT-0106", "the reason is limited to 2000 characters")
    person = _person(svc, access, patient_id)
    grant = svc.repo.transact(lambda w: access.break_glass(w, person, reason))
    when = datetime.fromtimestamp(grant.created_ms / 1000, REGION_TZ).strftime("%Y-%m-%d %H:%M")
    who = access.principal.display or "a clinician"
    # The resident is told at once; the text names who and when, never the reason
    # (an SMS is not a private channel).
    notify(person, f"【互通】北京时间{when}，{who} 以紧急授权方式查看了您的健康档案。如有疑问，请在“谁看了我的档案”中查看或联系卫生健康委。")
    return FhirResponse.json(200, {"resourceType": "Parameters", "parameter": [
        {"name": "grant", "valueString": grant.id},
        {"name": "person", "valueReference": {"reference": f"Patient/{person}"}},
        {"name": "expires", "valueInstant": datetime.fromtimestamp(grant.expires_ms / 1000, UTC)
         .isoformat().replace("+00:00", "Z")}]})


def basis(svc: FhirService, access: Access, patient_id: str) -> FhirResponse:
    if access.role not in (Role.PLATFORM, Role.RESIDENT, Role.DELEGATE, Role.INSTITUTION, Role.CLINICIAN):
        raise Forbidden("HT-0104", f"a {access.role.value} account does not read residents' records")
    person = _person(svc, access, patient_id)
    org = access.principal.organization_id
    access.purposes.add(IDENTITY)
    if access.unrestricted:
        purpose: str | None = "platform"
        detail = ""
    elif access.role.value in ("resident", "delegate"):
        if person not in access.my_persons():
            raise Forbidden("HT-0103", "you may only see your own record (or the records of those you act for)")
        purpose, detail = access.role.value, ""
    elif access.role.value in ("institution", "clinician"):
        b = access.basis(person)
        if b.purpose is None and patient_id != person and access.managing_org(patient_id) != org:
            # Another institution's registration, and no basis: answering would map
            # its id to the golden person (a lookup the caller may not make).
            access.attempted(person)
            raise Forbidden("HT-0182", f"Patient/{patient_id} is another institution's registration and you have "
                                       "no basis for it; find the resident by an exact identifier "
                                       "(Patient?identifier=system|value) to ask about their record")
        purpose, detail = b.purpose, b.detail
        if purpose is None and org and any(access.managing_org(p) == org for p in access.patients_of(person)):
            purpose, detail = OWN_INSTITUTION, "only your institution's own records"
        if b.denied:
            detail = "the resident has refused access (Consent); break-glass only"
    else:
        raise Forbidden("HT-0104", f"a {access.role.value} account does not read residents' records")
    access.persons.add(person)
    out: dict[str, Any] = {"resourceType": "Parameters", "parameter": [
        {"name": "person", "valueReference": {"reference": f"Patient/{person}"}},
        {"name": "basis", "valueCode": purpose or "none"}]}
    if detail:
        out["parameter"].append({"name": "detail", "valueString": detail})
    return FhirResponse(200, orjson.dumps(out))


def sms_notifier(repo: Repository, send: Callable[[str, str], Any], accounts: Accounts | None = None) -> Notify:
    """Tell a resident something by SMS: at the phone of their resident account
    (a fact the platform holds for them), else at their golden record's phone."""
    held: list[Accounts] = [accounts] if accounts is not None else []

    def notify(person_id: str, text: str) -> None:
        if not held:
            held.append(Accounts(repo, SecuritySettings()))
        account = held[0].by_person(person_id)
        phone = held[0].phone_of(account.id) if account is not None else None
        if phone:
            send(phone, text)
            return
        s = repo.read("Patient", person_id)
        if s is None or s.body is None:
            return
        for t in orjson.loads(s.body).get("telecom") or []:
            if isinstance(t, dict) and t.get("system") in ("phone", "sms") and isinstance(t.get("value"), str):
                send(t["value"], text)
                return

    return notify
