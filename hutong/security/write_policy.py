"""Who may write what: the write half of the policy, run by the store's write hook.

:class:`~hutong.security.policy.Access` (the caller's policy) hands every
insert, replace and delete to its :class:`WritePolicy` inside the transaction
(hutong.security.guard).  The role rules are pure
(:func:`hutong.security.decision.decide_write_role` and friends); what is
stored comes from :mod:`hutong.security.policy_store`; what a transaction
creates or moves is kept in its typed context
(:class:`hutong.store.sql.WriteContext`: ``pending_owners``, ``transfers``).

Ownership (issue 12, finding 1): which institution manages a source Patient
is fixed by its first version and moves only by its owner's audited
``$transfer``; what a write claims never moves it.  The policy also stamps
what it accepts: a registration's owner when left out, ``entered-by|clinician``
on a clinician's Encounter (no treatment basis, finding 8), the registrar of
an institution's Practitioner (finding 14).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hutong.errors import Forbidden
from hutong.security import consent as consent_rules
from hutong.security import corrections
from hutong.security.decision import (
    DIRECTORY_TYPES,
    ENTERED_BY,
    ORG_ROLES,
    PERSON_ROLES,
    decide_org_write,
    decide_person_write,
    decide_write_role,
)
from hutong.security.policy_store import body_of, security_context
from hutong.security.principal import Role
from hutong.store.repository import Stored, Writer

if TYPE_CHECKING:
    from hutong.security.policy import Access

# Directory types an institution may write, when the resource names it as organization.
INSTITUTION_DIRECTORY = frozenset({"PractitionerRole", "Location", "HealthcareService", "Endpoint", "Practitioner"})
# Residents' correction requests (纠偏权, PIPL Art. 46): a Task they may create
# about their own record, which the owner institution answers.
CORRECTION = ("https://fhir.hutong.dev/CodeSystem/task", "correction-request")
# Marks the write hook puts on what it accepts (issue 12, findings 8 and 14):
# an Encounter a clinician entered (no treatment basis), and the institution
# that registered a Practitioner (only it changes it).  Whatever a writer puts
# in these systems is replaced on every write an institution or clinician makes.
REGISTRAR = "https://fhir.hutong.dev/CodeSystem/registrar"


class WritePolicy:
    """The write rules of one caller's :class:`~hutong.security.policy.Access`."""

    def __init__(self, access: Access) -> None:
        self.access = access

    def check_write(self, w: Writer, type: str, id: str, resource: dict[str, Any] | None,
                    current: Stored | None, patients: set[str]) -> bool:
        """Called by the store's write hook inside the transaction; returns True
        when it stamped the resource (an institution's Patient without
        managingOrganization gets its owner, a clinician's Encounter its
        ``entered-by`` tag, an institution's Practitioner its registrar).

        Ownership (issue 12 finding 1): which institution manages a source Patient
        is fixed by its first version; what a write claims never moves it.  The
        owner of an existing registration is read from what is stored (a deleted
        one: its last version before deletion, so re-creating a deleted id is the
        last owner's alone); the pending owner of a registration this transaction
        creates counts only while no stored one exists (:meth:`expect_patients`).
        managingOrganization changes only through :meth:`transfer`, for every
        principal, the platform engine included.  The same holds for every other
        record: re-creating a deleted id is for the institution (or resident) the
        record belonged to, since its earlier versions become readable through it.
        """
        if type == "Patient" and resource is not None and self.access.unrestricted and current is not None:
            return self._keep_owner(w, id, resource, self._registration_owner(w, current))
        if self.access.unrestricted:
            return False
        if type in DIRECTORY_TYPES:
            return self._check_directory_write(w, type, resource, current)
        if type == "Binary":
            # A Binary belongs to the patient its securityContext names (the CDA
            # documents of hutong.ingest.cda), for writes as for reads.
            patients = patients or _security_context(resource) | _security_context(_body(current))
        gate = decide_write_role(self.access.role, type, correction=resource is None or _is_correction(resource),
                                 has_org=bool(self.access.principal.organization_id))
        if not gate.allowed:
            raise gate.refusal()
        if self.access.role in PERSON_ROLES:
            d = decide_person_write(patients, self._stored_patients(w, current), set(self.access.my_patients()))
            if not d.allowed:
                raise d.refusal()
            self.access.persons.update(self.access.my_persons())
            return self._check_person_task(w, resource, current) if type == "Task" and resource is not None \
                else False
        org = self.access.principal.organization_id
        assert org is not None
        if type == "Task":
            answered = self._check_task_write(w, org, resource, current)
            if answered is not None:
                return answered
        stamped = False
        if type == "Patient" and resource is not None:
            if current is not None:
                was = self._registration_owner(w, current)
                if was != org:
                    raise Forbidden("HT-0102", f"Patient/{id} is another institution's registration")
                stamped = self._keep_owner(w, id, resource, was)
            else:
                ref = _ref(resource.get("managingOrganization"))
                if not ref:
                    resource["managingOrganization"] = {"reference": f"Organization/{org}"}
                    stamped = True
                elif ref != f"Organization/{org}":
                    raise Forbidden("HT-0102", "a Patient sent by an institution must be managed by that "
                                               f"institution (managingOrganization Organization/{org})")
            if current is None or current.deleted:
                # Created (or re-created by its owner) here: records later in this
                # transaction may be filed under it before its row is visible.
                w.ctx.pending_owners[id] = org
            self.access.facts.know_owner(id, w.ctx.transfers.get(id, org))
        elif resource is not None:
            d = decide_org_write(type, {p: self._managed_in(w, p) for p in patients}, org)
            if not d.allowed:
                raise d.refusal()
            if type == "Encounter" and self.access.role is Role.CLINICIAN:
                # A visit a clinician types in is no treatment basis (_treated_here);
                # the mark goes on every version a clinician writes.
                stamped = _set_tag(resource, ENTERED_BY[0], ENTERED_BY[1])
        if current is not None and type != "Patient":
            for p in self._stored_patients(w, current):
                if self._managed_in(w, p) != org:
                    raise Forbidden("HT-0102", f"{type}/{id} is another institution's record")
        elif current is not None and resource is None and self._registration_owner(w, current) != org:
            raise Forbidden("HT-0102", f"Patient/{id} is another institution's registration")
        self.access.written.update({id} if type == "Patient" else patients)
        return stamped

    def _check_task_write(self, w: Writer, org: str, resource: dict[str, Any] | None,
                          current: Stored | None) -> bool | None:
        """Tasks an institution writes (issue 12 finding 14).  Correction requests
        (纠偏权) are made by residents only; the institution they are addressed to
        answers them (an answer needs no registration of its own: the result is
        whether the answer was stamped), and may neither delete, readdress nor
        re-purpose them; among its clinicians only a designated post answers, and
        an answer leaves the request as the resident wrote it
        (hutong.security.corrections, issue 16 item 8).  Any other Task is the
        institution's own work item (None: checked as a record of its patients):
        it may not be addressed to another institution (``owner`` Organization:
        that would put it in their queue) nor be turned into a correction
        request, and its ``for`` and ``owner`` stay as created."""
        own = f"Organization/{org}"
        earlier = _body(current) if current is not None and not current.deleted else None
        if earlier is not None and _is_correction(earlier) and _owner_of(None, current) == own:
            if resource is None:
                raise Forbidden("HT-0102", "a correction request is answered (status, note), not deleted")
            if resource.get("for") != earlier.get("for") or resource.get("owner") != earlier.get("owner"):
                raise Forbidden("HT-0102", "an answer may not change whose request it is or whom it is to")
            if not _is_correction(resource):
                raise Forbidden("HT-0102", "only correction requests are answered this way")
            if self.access.role is Role.CLINICIAN:
                post = self.access.principal.practitioner_role_id
                stored = w.read_current("PractitionerRole", post) if post else None
                if not corrections.designated(_body(stored) if stored is not None and not stored.deleted else None,
                                              org, self.access.principal.practitioner_id):
                    raise Forbidden("HT-0450", "only the posts your institution designates (医务科/病案管理) "
                                               "answer correction requests")
            return corrections.check_answer(earlier, resource, org)
        if resource is None:
            return None
        if _is_correction(resource):
            raise Forbidden("HT-0102", "correction requests are made by residents; institutions answer them")
        addressee = _owner_of(resource, None)
        if addressee and addressee.startswith("Organization/") and addressee != own:
            raise Forbidden("HT-0102", "a Task may not be addressed to another institution")
        if earlier is not None and (resource.get("for") != earlier.get("for")
                                    or resource.get("owner") != earlier.get("owner")):
            raise Forbidden("HT-0102", "a Task's for and owner stay as created")
        return None

    def _check_person_task(self, w: Writer, resource: dict[str, Any], current: Stored | None) -> bool:
        """A resident's correction request (hutong.security.corrections): filed
        about an item of their own record and addressed to the institution that
        manages it (so it reaches that institution's inbox and no other); later
        versions only add information or withdraw it."""
        earlier = _body(current) if current is not None and not current.deleted else None
        if earlier is None:
            kind, _, rid = _ref(resource.get("focus")).partition("/")
            item = w.read_current(kind, rid) if kind and rid and kind not in DIRECTORY_TYPES else None
            patients = self._stored_patients(w, item) if item is not None and not item.deleted else set()
            mine = set(self.access.my_patients())
            owners = {f"Organization/{self._managed_in(w, p)}" for p in patients}
            if not patients or not patients <= mine or _owner_of(resource, None) not in owners:
                raise Forbidden("HT-0456", "a correction request is about an item of your own record (Task.focus) "
                                           "and addressed to the institution holding it (Task.owner)")
        return corrections.check_person_write(earlier, resource)

    def _keep_owner(self, w: Writer, id: str, resource: dict[str, Any], was: str | None) -> bool:
        """A later version of a registration names its stored owner (stamped when
        left out); naming another one is refused unless :meth:`transfer` allowed it."""
        ref = _ref(resource.get("managingOrganization"))
        moving = w.ctx.transfers.get(id)
        if not ref:
            if was is None:
                return False
            resource["managingOrganization"] = {"reference": f"Organization/{was}"}
            return True
        if ref == f"Organization/{was}" or (moving is not None and ref == f"Organization/{moving}"):
            return False
        raise Forbidden("HT-0108", f"Patient/{id} is managed by Organization/{was}: managingOrganization is "
                                   "fixed when a registration is created; its owner moves it with "
                                   "POST Patient/[id]/$transfer")

    def transfer(self, w: Writer, current: Stored, to_org: str) -> str | None:
        """May this caller move the registration ``current`` to Organization ``to_org``?
        Its owner's institution system (or the platform engine) may; the next
        write of it in ``w`` may then name the new owner (:meth:`_keep_owner`).
        Returns the owner it is moved from (hutong.web.transfer_ops writes the
        version and the audit record)."""
        self.access.require_role(Role.INSTITUTION, Role.PLATFORM, what="registration transfers ($transfer)")
        was = self._registration_owner(w, current)
        if not self.access.unrestricted and (was is None or was != self.access.principal.organization_id):
            raise Forbidden("HT-0102", f"Patient/{current.id} is not your institution's registration: only its "
                                       "owner transfers it")
        w.ctx.transfers[current.id] = to_org
        self.access.facts.forget_owner(current.id)
        return was

    def expect_patients(self, w: Writer, patients: list[tuple[str, dict[str, Any]]]) -> None:
        """Patients a transaction is about to create as this institution's own
        (each is still checked when written: this only orders the checks).  Only
        ids with no stored registration, or a deleted one this institution owned,
        are pending: an existing registration keeps its stored owner whatever
        the bundle says (issue 12 finding 1)."""
        org = self.access.principal.organization_id
        if self.access.unrestricted or self.access.role not in ORG_ROLES or not org or not patients:
            return
        pending = w.ctx.pending_owners
        wanted = {pid for pid, res in patients
                  if _ref(res.get("managingOrganization")) in ("", f"Organization/{org}")}
        existing = self.access.facts.existing_patients(w, sorted(wanted))
        for pid in wanted:
            if pid in existing:
                current = w.read_current("Patient", pid)
                if current is None or not current.deleted or self._registration_owner(w, current) != org:
                    continue
            pending[pid] = org

    def _managed_in(self, w: Writer, patient_id: str) -> str | None:
        return self.access.facts.managed_in(w, patient_id)

    def _registration_owner(self, w: Writer, current: Stored) -> str | None:
        """The stored owner of an existing registration (a deleted one: of its
        last version before deletion)."""
        ref = _ref((self._last_live(w, current) or {}).get("managingOrganization"))
        return ref.split("/", 1)[1] if ref.startswith("Organization/") else None

    def _last_live(self, w: Writer, current: Stored) -> dict[str, Any] | None:
        return self.access.facts.last_live(w, current)

    def _stored_patients(self, w: Writer, current: Stored | None) -> set[str]:
        return self.access.facts.stored_patients(w, current)

    def _check_directory_write(self, w: Writer, type: str, resource: dict[str, Any] | None,
                               current: Stored | None) -> bool:
        if self.access.role is not Role.INSTITUTION or type not in INSTITUTION_DIRECTORY:
            raise Forbidden("HT-0104", f"a {self.access.role.value} account may not write {type} (directory data is "
                                       "kept by the platform)")
        org = f"Organization/{self.access.principal.organization_id}"
        if type == "Practitioner":
            # A Practitioner names no institution, so the platform records which one
            # registered it (issue 12 finding 14): the registrar tag, set here on
            # every version an institution writes, whatever the body claimed.  Only
            # that institution changes or deletes it; the platform's own entries
            # (no registrar) only the platform.
            before = self._last_live(w, current) if current is not None else None
            if before is not None and _tag_code(before, REGISTRAR) != org:
                raise Forbidden("HT-0102", f"Practitioner/{current.id if current else ''} was registered by "
                                           "another institution (or the platform): only it may change it")
            return resource is not None and _set_tag(resource, REGISTRAR, org)
        for res in (resource, self._last_live(w, current) if current is not None else None):
            if res is None:
                continue
            key = "managingOrganization" if type == "Location" else \
                "providedBy" if type == "HealthcareService" else \
                "managingOrganization" if type == "Endpoint" else "organization"
            if consent_rules.ref_key(((res.get(key) or {}).get("reference")) or "") != org:
                raise Forbidden("HT-0102", f"a {type} written by an institution must name it as {key}")
        return False


_body = body_of
_security_context = security_context


def _owner_of(resource: dict[str, Any] | None, current: Stored | None) -> str | None:
    for res in (resource, _body(current)):
        if res is not None:
            ref = ((res.get("owner") or {}).get("reference")) if isinstance(res.get("owner"), dict) else None
            return consent_rules.ref_key(ref) if isinstance(ref, str) else None
    return None


def _is_correction(resource: dict[str, Any]) -> bool:
    codings = ((resource.get("code") or {}).get("coding")) or []
    return any(isinstance(c, dict) and (c.get("system"), c.get("code")) == CORRECTION for c in codings)


def _ref(value: Any) -> str:
    """"Type/id" of a Reference (empty when it is not one)."""
    ref = value.get("reference") if isinstance(value, dict) else None
    return consent_rules.ref_key(ref) if isinstance(ref, str) and ref else ""


def _tags(resource: dict[str, Any]) -> list[Any]:
    meta = resource.get("meta")
    tags = meta.get("tag") if isinstance(meta, dict) else None
    return tags if isinstance(tags, list) else []


def _tag_code(resource: dict[str, Any], system: str) -> str | None:
    codes = [t.get("code") for t in _tags(resource) if isinstance(t, dict) and t.get("system") == system]
    return str(codes[0]) if len(codes) == 1 and isinstance(codes[0], str) else None


def _set_tag(resource: dict[str, Any], system: str, code: str) -> bool:
    """Leave exactly one tag of ``system``, with ``code``; True when that changed the resource."""
    tags = _tags(resource)
    if [t for t in tags if isinstance(t, dict) and t.get("system") == system] == [{"system": system, "code": code}]:
        return False
    meta = resource.get("meta")
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta["tag"] = [t for t in tags if not (isinstance(t, dict) and t.get("system") == system)] + [
        {"system": system, "code": code}]
    resource["meta"] = meta
    return True

