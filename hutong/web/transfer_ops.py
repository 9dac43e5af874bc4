"""Moving a registration to another institution: ``POST Patient/[id]/$transfer``.

Which institution manages a source Patient is fixed when the registration is
created; no PUT, bundle or conditional write changes ``managingOrganization``
(DESIGN.md trust model; :meth:`hutong.security.policy.Access.check_write`).
This operation is the one way it moves: the current owner's institution system
(or the platform engine, e.g. carrying out a commission decision) names the new
owner and a reason::

    {"resourceType": "Parameters", "parameter": [
        {"name": "organization", "valueReference": {"reference": "Organization/<id>"}},
        {"name": "reason", "valueString": "..."}]}

It writes the registration's next version naming the new owner (every record
in its compartment goes with it: a record belongs to the institution managing
its patient's registration) and, in the same transaction, an audit record
(action ``transfer``, from and to, the reason, the resident) that the resident
sees in their access log; the request's own audit row follows as for every
request.  The answer is the new version of the Patient (200).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from hutong.errors import Gone, InvalidRequest, NotFound
from hutong.fhir.response import FHIR_JSON, etag, http_date
from hutong.fhir.service import parse_json
from hutong.fhir.validation import check_id
from hutong.mpi.golden import PERSON_PREFIX
from hutong.security.audit import AuditLog
from hutong.security.events import AuditRecord
from hutong.security.policy import OWN_INSTITUTION, PLATFORM, Access
from hutong.security.principal import Role
from hutong.store.repository import Repository, Stored, Writer
from hutong.web import gate
from hutong.web.fhir_http import body_of

ROUTE = "/fhir/Patient/{id}/$transfer"
MAX_BODY = 64 * 1024


def parameters(data: Any) -> tuple[str, str]:
    """(new owner's Organization id, reason) from the operation's Parameters."""
    if not isinstance(data, dict) or data.get("resourceType") != "Parameters":
        raise InvalidRequest("HT-0109", "$transfer takes a Parameters resource (organization, reason)")
    org = reason = None
    for p in data.get("parameter") or []:
        if not isinstance(p, dict):
            continue
        if p.get("name") == "organization" and isinstance(p.get("valueReference"), dict):
            ref = p["valueReference"].get("reference")
            if isinstance(ref, str):
                kind, _, rid = ref.split("/_history")[0].rstrip("/").rpartition("/")
                org = rid if kind.rsplit("/", 1)[-1] == "Organization" else ""
        elif p.get("name") == "reason" and isinstance(p.get("valueString"), str):
            reason = p["valueString"].strip()
    if not org:
        raise InvalidRequest("HT-0109", "$transfer needs 'organization': a reference to Organization/[id]")
    check_id(org)
    if not reason or len(reason) > 2000:
        raise InvalidRequest("HT-0109", "$transfer needs a 'reason' (valueString, 1 to 2000 characters)")
    return org, reason


def transfer(repo: Repository, audit: AuditLog, access: Access, patient_id: str,
             body: bytes) -> tuple[Stored, str | None]:
    """Move the registration; returns its new version and the owner it left."""
    access.require_role(Role.INSTITUTION, Role.PLATFORM, what="registration transfers ($transfer)")
    check_id(patient_id)
    to_org, reason = parameters(parse_json(body) if body.strip() else None)
    if patient_id.startswith(PERSON_PREFIX):
        raise InvalidRequest("HT-0109", "golden person records belong to the platform: transfer a source "
                                        "registration (Patient managed by an institution)")

    def run(w: Writer) -> tuple[Stored, str | None]:
        w.lock_key(f"Patient/{patient_id}")
        current = w.read_current("Patient", patient_id, lock=True)
        if current is None:
            raise NotFound("HT-0009", f"Patient/{patient_id} not found")
        if current.deleted or current.body is None:
            raise Gone("HT-0010", f"Patient/{patient_id} was deleted")
        was = access.transfer(w, current, to_org)
        if was == to_org:
            raise InvalidRequest("HT-0109", f"Patient/{patient_id} is already managed by Organization/{to_org}")
        target = w.read_current("Organization", to_org)
        if target is None or target.deleted:
            raise InvalidRequest("HT-0109", f"Organization/{to_org} is not an institution of the region")
        resource: dict[str, Any] = parse_json(current.body)
        resource["managingOrganization"] = {"reference": f"Organization/{to_org}"}
        moved = w.replace(current, resource)
        person = access.person_of(patient_id)
        if person is not None:
            access.persons.add(person)
        came_from = f"Organization/{was}" if was else "(unmanaged)"
        audit.record_in(w, AuditRecord(
            action="transfer", principal=access.principal, persons=(person,) if person else (),
            entities=(f"Patient/{patient_id}", came_from, f"Organization/{to_org}"),
            interaction=f"POST {ROUTE}", purpose=PLATFORM if access.unrestricted else OWN_INSTITUTION,
            reason=reason, extra={"from": came_from, "to": f"Organization/{to_org}"}))
        return moved, was

    result: tuple[Stored, str | None] = repo.acting_as(access).transact(run)
    access.purposes.add(PLATFORM if access.unrestricted else OWN_INSTITUTION)
    access.reason = reason
    return result


def register(app: FastAPI, repo: Repository, audit: AuditLog) -> None:
    app.include_router(router(repo, audit))


def router(repo: Repository, audit: AuditLog) -> APIRouter:
    r = APIRouter(tags=["access"])

    @r.post(ROUTE, summary="move a registration to another institution (audited)")
    async def transfer_registration(id: str, request: Request) -> Response:
        """Move a registration to another institution (its owner, or the platform; audited)."""
        access = gate.access_of(request)
        # Refused by role before the body is read: only systems move registrations.
        access.require_role(Role.INSTITUTION, Role.PLATFORM, what="registration transfers ($transfer)")
        body = await body_of(request, MAX_BODY)
        moved, _was = await run_in_threadpool(transfer, repo, audit, access, id, body)
        return Response(content=moved.body, status_code=200, media_type=FHIR_JSON,
                        headers={"ETag": etag(moved.version), "Last-Modified": http_date(moved.last_updated)})

    return r
