"""``hutong demo``'s 互认 knowledge (issue 14, item 6): loaded, approved and explained.

The demo region's knowledge (hutong.cds.demo_knowledge: the example list with each demo
institution's QC status and local codes) is drafted by one demo committee member and approved by
another, once; then the demo says how to see a real card: which clinician account, which patient
and which item to order.  The committee members' sign-in is written, like the other demo
accounts, to a 0600 file (``var/demo/committee.json``).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from hutong.cds import demo_knowledge
from hutong.cds.versions import KnowledgeVersions
from hutong.fhir import search as fsearch
from hutong.security.accounts import DEFAULT_SCOPES, Accounts
from hutong.security.audit import AuditLog
from hutong.security.policy import Access
from hutong.security.principal import Principal
from hutong.security.settings import SecuritySettings
from hutong.store.repository import Repository
from hutong.systems import ID_CARD, ORGANIZATION


def _organizations(repo: Repository) -> list[dict[str, Any]]:
    parsed = fsearch.parse("Organization", [("_count", "1000")], base_url="", strict=True)
    return [orjson.loads(s.body) for s in repo.search(parsed.query).matches if s.body is not None]


def _write_0600(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, orjson.dumps(data, option=orjson.OPT_INDENT_2))
    finally:
        os.close(fd)


def setup(repo: Repository, demo_accounts: dict[str, Any], committee_file: Path, host: str, port: int) -> list[str]:
    """Load and approve the knowledge (once); the lines ``make demo`` prints about it."""
    security = SecuritySettings.from_env()
    accounts = Accounts(repo, security)
    audit = AuditLog(repo)
    orgs = _organizations(repo)
    committee, made = demo_knowledge.committee_accounts(repo, accounts)
    if made:
        _write_0600(committee_file, {"note": "synthetic demo committee members (专家委员会); sign in with password + "
                                             "TOTP at /", **made})
    seed = demo_knowledge.seed_json()
    today = datetime.now(UTC).date().isoformat()
    v = demo_knowledge.ensure(repo, audit, seed, orgs, committee, effective_from="2025-01-01")
    versions = KnowledgeVersions(repo, audit)
    current = versions.in_force()
    lines = []
    if v is not None:
        lines.append(f"互认 knowledge: version {v.seq} drafted by {committee[0].display} and approved by "
                     f"{committee[1].display} (four-eyes), QC status and local codes for {len(orgs)} institutions")
    elif current is None:
        return ["互认 knowledge: no approved version in force today (see /console/rules)"]
    doctor = demo_accounts.get("clinician") or {}
    resident = demo_accounts.get("resident") or {}
    account = accounts.get(str(doctor.get("account_id"))) if doctor.get("account_id") else None
    person = resident.get("person")
    if account is None or not person:
        return lines
    principal = Principal(account_id=account.id, role=account.role, display=account.display,
                          organization=account.organization, organization_id=account.organization_id,
                          practitioner_id=account.practitioner_id,
                          practitioner_role_id=account.practitioner_role_id, peer="local",
                          scopes=tuple(DEFAULT_SCOPES[account.role].split()))  # what a sign-in grants
    data = orjson.loads(versions.body(current.version_id)) if current is not None else seed
    access = Access(repo, principal, security)
    trial = demo_knowledge.try_it(repo, access, _candidates(repo, access, str(person)), data,
                                  str(account.organization or _code_of(orgs, account.organization_id)))
    url = f"http://{host}:{port}"
    if trial is None:
        lines.append(f"互认: no recognisable result for the demo resident today ({today}); the rules are at "
                     f"{url}/console/rules")
        return lines
    lines += [
        "try 检查检验结果互认 (a real CDS card): sign in at " + url + " as clinician "
        f"{doctor.get('username')} (var/demo/accounts.json), search the patient by ID number "
        f"{_id_number(repo, trial.patient) or resident.get('id_number')}, open 开单 and order {trial.item} "
        f"(local code {trial.code}): "
        f"the card offers the result of {trial.institution} of {trial.day} (window {trial.window_days} days); "
        "accept it or give a reason",
        f"  then sign in as demo-commission for {url}/console/recognition, and as demo-committee-1 / "
        f"demo-committee-2 (var/demo/committee.json) for {url}/console/rules",
        f"  or from any EMR: POST {url}/cds-services/hutong-order-select (CDS Hooks 2.0) with the clinician's "
        "bearer token",
    ]
    return lines


def _code_of(orgs: list[dict[str, Any]], org_id: str | None) -> str:
    for o in orgs:
        if o.get("id") == org_id:
            return next((i["value"] for i in o.get("identifier", []) if i.get("system") == ORGANIZATION), "")
    return ""


def _candidates(repo: Repository, access: Access, resident: str, limit: int = 300) -> list[str]:
    """The demo resident first, then persons registered at the clinician's institution (its own
    patients: the clinician sees their records there, and elsewhere with a treatment basis)."""
    out = [resident]
    org = access.principal.organization_id
    if org:
        parsed = fsearch.parse("Patient", [("organization", f"Organization/{org}"), ("_count", str(limit))],
                               base_url="", strict=True)
        for s in repo.search(parsed.query).matches:
            person = access.person_of(s.id)
            if person and person not in out:
                out.append(person)
    return out


def _id_number(repo: Repository, person: str) -> str | None:
    s = repo.read("Patient", person)
    if s is None or s.body is None:
        return None
    body = orjson.loads(s.body)
    return next((i.get("value") for i in body.get("identifier", []) if i.get("system") == ID_CARD), None)
