"""Accounts for the demo region, so ``make demo`` can be signed in to at once.

Creates (once; kept in ``var/demo/accounts.json``, mode 0600) a platform
client, one hospital's system and a clinician there with a treatment
relationship to the chosen resident, that hospital's 病案室 officer (answers
correction requests), a commission officer, an auditor, an
operator, and a resident account for a golden person with a phone.  The
people sign in exactly as in production (password + TOTP, or ID number + SMS
code through the outbox file); the file holds what a real operator would have
handed out on paper.  Everything here is synthetic.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from hutong.fhir import search as fsearch
from hutong.fhir.service import FhirService
from hutong.security.accounts import Accounts
from hutong.security.guard import as_operator
from hutong.security.principal import Role
from hutong.security.settings import SecuritySettings
from hutong.store.repository import Repository
from hutong.systems import CORRECTION_OFFICER, DUTY_SYSTEM, ID_CARD, ORGANIZATION


def _search(repo: Repository, type: str, items: list[tuple[str, str]]) -> list[dict[str, Any]]:
    parsed = fsearch.parse(type, items, base_url="", strict=True)
    return [orjson.loads(s.body) for s in repo.search(parsed.query).matches if s.body is not None]


def _pick(repo: Repository) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A golden person with a phone and an ID number, one of their source
    Patients' institutions, and a clinician's post there."""
    for person in _search(repo, "Patient", [("_tag", "https://fhir.hutong.dev/CodeSystem/mpi|golden"),
                                            ("_count", "200")]):
        idno = next((i["value"] for i in person.get("identifier", []) if i.get("system") == ID_CARD), None)
        phone = next((t["value"] for t in person.get("telecom", []) if t.get("system") == "phone"), None)
        sources = [ln["other"]["reference"].split("/")[1] for ln in person.get("link", [])
                   if ln.get("type") == "seealso"]
        if not (idno and phone) or len(sources) < 2:
            continue
        for sid in sources:
            src = repo.read("Patient", sid)
            if src is None or src.body is None:
                continue
            org_ref = (orjson.loads(src.body).get("managingOrganization") or {}).get("reference")
            if not org_ref:
                continue
            org = repo.read("Organization", org_ref.split("/")[1])
            roles = _search(repo, "PractitionerRole", [("organization", org_ref), ("_count", "1")])
            if org is not None and org.body is not None and roles:
                return person, orjson.loads(src.body), orjson.loads(org.body), roles[0]
    raise RuntimeError("the demo region has no resident with a phone, an ID number and two institutions")


def ensure(repo: Repository, path: Path) -> dict[str, Any]:
    """The demo accounts (created on the first run, read back afterwards)."""
    if path.exists():
        data: dict[str, Any] = orjson.loads(path.read_bytes())
        return data
    accounts = Accounts(repo, SecuritySettings.from_env())
    person, _source, org, role = _pick(repo)
    code = next(i["value"] for i in org.get("identifier", []) if i.get("system") == ORGANIZATION)
    out: dict[str, Any] = {"note": "synthetic demo accounts; people sign in with password + TOTP "
                                   "(add the otpauth URI to an authenticator app) or ID number + SMS code "
                                   "(codes appear in the SMS outbox file)"}
    platform, secret = accounts.add_client("demo integration engine", organization=None, organization_id=None,
                                           platform=True)
    out["platform_client"] = {"client_id": platform.client_id, "client_secret": secret}
    system, secret = accounts.add_client(f"HIS of {org.get('name', code)}", organization=code,
                                         organization_id=org["id"])
    out["institution_client"] = {"organization": org.get("name"), "client_id": system.client_id,
                                 "client_secret": secret}
    practitioner = role["practitioner"]["reference"].split("/")[1]
    for key, username, r, name, extra in (
            ("clinician", "demo-doctor", Role.CLINICIAN, "演示医生",
             {"organization": code, "organization_id": org["id"], "practitioner_id": practitioner,
              "practitioner_role_id": role["id"]}),
            ("commission", "demo-commission", Role.COMMISSION, "卫健委信息中心", {}),
            ("auditor", "demo-auditor", Role.AUDITOR, "审计员", {}),
            ("operator", "demo-operator", Role.OPERATOR, "运维", {})):
        acct, password, uri = accounts.add_user(username, role=r, name=name, **extra)
        out[key] = {"username": username, "password": password, "otpauth": uri, "account_id": acct.id}
    # The hospital's 病案室: a post it designates to answer residents' correction requests
    # (/clinician/corrections; hutong.security.corrections, issue 16 item 8).
    svc = FhirService(as_operator(repo))
    pr = orjson.loads(svc.create("Practitioner", orjson.dumps(
        {"resourceType": "Practitioner", "name": [{"text": "病案室演示员"}]}), {}).body or b"{}")
    post = orjson.loads(svc.create("PractitionerRole", orjson.dumps({
        "resourceType": "PractitionerRole", "active": True, "practitioner": {"reference": f"Practitioner/{pr['id']}"},
        "organization": {"reference": f"Organization/{org['id']}"},
        "code": [{"coding": [{"system": DUTY_SYSTEM, "code": CORRECTION_OFFICER, "display": "更正申请答复"}]}]}),
        {}).body or b"{}")
    acct, password, uri = accounts.add_user("demo-records", role=Role.CLINICIAN, name="病案室演示员", organization=code,
                                            organization_id=org["id"], practitioner_id=pr["id"],
                                            practitioner_role_id=post["id"])
    out["records_officer"] = {"username": "demo-records", "password": password, "otpauth": uri,
                              "account_id": acct.id}
    phone = next(t["value"] for t in person.get("telecom", []) if t.get("system") == "phone")
    resident = accounts.add_resident(person["id"], phone=phone)
    idno = next(i["value"] for i in person.get("identifier", []) if i.get("system") == ID_CARD)
    out["resident"] = {"id_number": idno, "person": person["id"], "account_id": resident.id}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, orjson.dumps(out, option=orjson.OPT_INDENT_2))
    finally:
        os.close(fd)
    return out
