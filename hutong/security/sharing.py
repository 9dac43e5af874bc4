"""Sharing requests: no data leaves the platform without an approved, assessed request.

The 2018 national health big-data notice requires a security assessment
before health data are shared, and PIPL (arts. 28-29, 38-40) treats health
data as sensitive personal information whose provision to others needs a
legal basis and, across borders, an assessment.  A sharing request records
who asks, why (purpose and legal basis), for what (scope), for whom (recipient
and destination) and the requester's security assessment; a commission
officer other than the requester (four-eyes) approves or rejects it.  An
approved request is valid for ``valid_days`` (30) and for one export
(:mod:`hutong.security.export`), after which it is ``used``::

    draft --submit--> submitted --approve--> approved --export--> used
                                \\--reject--> rejected   \\--(time)--> expired

Every state change, and every refused attempt, is handed to the injected
audit callable (actions ``sharing-request``, ``sharing-approve``; the export
itself audits ``export``).  Free text that may carry personal data (purpose,
recipient, destination, assessment, decision note) is stored through the
store codec (encrypted at rest once keys are configured); the columns that
listings filter on (status, requester, organisation, basis, times) are not
personal data.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson
from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, String, Table, Text

from hutong.errors import ConfigError, Conflict, Forbidden, InvalidRequest, NotFound
from hutong.security import sharing_store
from hutong.security.events import REFUSED, SUCCESS, AuditRecord
from hutong.security.principal import Principal, Role
from hutong.security.residency import check_target
from hutong.security.settings import SecuritySettings
from hutong.store.repository import Repository, Writer
from hutong.store.schema import PK, metadata

# What the audit log accepts (AuditLog(repo).record returns the seq: any result is ignored).
Audit = Callable[[AuditRecord], object]

LEGAL_BASES = ("consent", "public-health", "research-deidentified", "treatment", "statutory")
RISKS = ("low", "medium", "high")
STATUSES = ("draft", "submitted", "approved", "rejected", "used", "expired")
DAY_MS = 86_400_000
DEFAULT_VALID_DAYS = 30

# Who may ask for data (issue 6): institutions, the commission, the platform
# itself; only commission officers decide (and never on their own request).
REQUESTER_ROLES = (Role.INSTITUTION, Role.COMMISSION, Role.PLATFORM)
APPROVER_ROLES = (Role.COMMISSION,)
# Who may read every request (the register of sharing is itself audited data).
OVERSIGHT_ROLES = (Role.COMMISSION, Role.AUDITOR, Role.PLATFORM)

sharing_metadata = metadata  # the one MetaData of every table (hutong.store.schema)

sharing_request = Table(
    "sharing_request",
    sharing_metadata,
    Column("id", String(40), primary_key=True),
    Column("status", String(12), nullable=False),
    Column("requester", String(128), nullable=False),       # account id
    Column("organisation", String(200), nullable=False),    # requesting organisation's name
    Column("basis", String(32), nullable=False),
    Column("scope", Text, nullable=False),                  # JSON: types, institutions, period, de-identified
    Column("body", LargeBinary, nullable=False),            # codec(JSON): purpose, recipient, destination,
                                                            # assessment, decision note
    Column("approver", String(128), nullable=True),
    Column("created", BigInteger, nullable=False),          # epoch ms
    Column("submitted", BigInteger, nullable=True),
    Column("decided", BigInteger, nullable=True),
    Column("expires", BigInteger, nullable=True),
    Column("used", BigInteger, nullable=True),
    Index("ix_sharing_request_status", "status", "created"),
    Index("ix_sharing_request_requester", "requester", "created"),
)

sharing_export = Table(
    "sharing_export",
    sharing_metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("request_id", String(40), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("started", BigInteger, nullable=False),
    Column("finished", BigInteger, nullable=True),
    Column("outcome", String(8), nullable=False),           # running | ok | failed
    Column("region", String(16), nullable=False),
    Column("deidentified", Integer, nullable=False),
    Column("counts", Text, nullable=True),                  # JSON: resource type -> lines written
    Index("ix_sharing_export_request", "request_id", "id"),
)



# ------------------------------------------------------------------ values
def _text(d: Mapping[str, Any], key: str, *, required: bool = True, limit: int = 2000) -> str:
    v = d.get(key)
    if v is None or (isinstance(v, str) and not v.strip()):
        if required:
            raise InvalidRequest("HT-0163", f"{key} is required")
        return ""
    if not isinstance(v, str):
        raise InvalidRequest("HT-0163", f"{key} must be text")
    if len(v) > limit:
        raise InvalidRequest("HT-0163", f"{key} is longer than {limit} characters")
    return v.strip()


def _date(d: Mapping[str, Any], key: str) -> str | None:
    v = d.get(key)
    if v in (None, ""):
        return None
    try:
        return date.fromisoformat(str(v)).isoformat()
    except ValueError:
        raise InvalidRequest("HT-0163", f"scope.{key} must be a date YYYY-MM-DD") from None


def _strings(v: Any, key: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        v = [x for x in v.split(",")]
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise InvalidRequest("HT-0163", f"{key} must be a list of text")
    return tuple(dict.fromkeys(x.strip() for x in v if x.strip()))


@dataclass(frozen=True, slots=True)
class Scope:
    """What may be exported: resource types, institutions (codes; none = every
    institution), a period on ``_lastUpdated`` (dates, Beijing time, both
    inclusive) and whether direct identifiers are removed."""

    types: tuple[str, ...]
    institutions: tuple[str, ...] = ()
    period_from: str | None = None
    period_to: str | None = None
    deidentified: bool = False

    @classmethod
    def from_json(cls, d: Any) -> Scope:
        if not isinstance(d, dict):
            raise InvalidRequest("HT-0163", "scope must be an object")
        from hutong.fhir.registry import params_by_type

        types = _strings(d.get("types"), "scope.types")
        if not types:
            raise InvalidRequest("HT-0163", "scope.types: name at least one resource type")
        known = params_by_type()
        for t in types:
            if t not in known:
                raise InvalidRequest("HT-0163", f"scope.types: unknown resource type {t[:40]!r}")
        lo, hi = _date(d, "from"), _date(d, "to")
        if lo and hi and lo > hi:
            raise InvalidRequest("HT-0163", "scope: from is after to")
        deid = d.get("deidentified", False)
        if not isinstance(deid, bool):
            raise InvalidRequest("HT-0163", "scope.deidentified must be true or false")
        return cls(types, _strings(d.get("institutions"), "scope.institutions"), lo, hi, deid)

    def to_json(self) -> dict[str, Any]:
        return {"types": list(self.types), "institutions": list(self.institutions), "from": self.period_from,
                "to": self.period_to, "deidentified": self.deidentified}


@dataclass(frozen=True, slots=True)
class Assessment:
    """The requester's security assessment (数据安全评估), a structured checklist."""

    data_classification: str          # e.g. "sensitive personal information / health"
    volume_estimate: str              # e.g. "about 20,000 records"
    recipient_security_level: int     # the recipient system's 等保 (MLPS) level, 1-5
    cross_border: bool
    risk: str                         # low | medium | high
    mitigations: tuple[str, ...]
    assessor: str
    notes: str = ""

    @classmethod
    def from_json(cls, d: Any) -> Assessment:
        if not isinstance(d, dict):
            raise InvalidRequest("HT-0163", "assessment must be an object")
        level = d.get("recipient_security_level")
        if not isinstance(level, int) or isinstance(level, bool) or not 1 <= level <= 5:
            raise InvalidRequest("HT-0163", "assessment.recipient_security_level must be the 等保 level 1-5")
        cb = d.get("cross_border")
        if not isinstance(cb, bool):
            raise InvalidRequest("HT-0163", "assessment.cross_border must be true or false")
        risk = d.get("risk")
        if risk not in RISKS:
            raise InvalidRequest("HT-0163", f"assessment.risk must be one of {', '.join(RISKS)}")
        volume = d.get("volume_estimate")
        if isinstance(volume, int) and not isinstance(volume, bool):
            volume = str(volume)
        mitigations = _strings(d.get("mitigations"), "assessment.mitigations")
        if risk != "low" and not mitigations:
            raise InvalidRequest("HT-0163", "assessment.mitigations: a medium or high risk needs mitigations")
        return cls(_text(d, "data_classification", limit=200), _text({"v": volume}, "v", limit=200),
                   level, cb, str(risk), mitigations, _text(d, "assessor", limit=200),
                   _text(d, "notes", required=False))

    def to_json(self) -> dict[str, Any]:
        return {"data_classification": self.data_classification, "volume_estimate": self.volume_estimate,
                "recipient_security_level": self.recipient_security_level, "cross_border": self.cross_border,
                "risk": self.risk, "mitigations": list(self.mitigations), "assessor": self.assessor,
                "notes": self.notes}


@dataclass(frozen=True, slots=True)
class ExportRow:
    id: int
    actor: str
    started: int
    finished: int | None
    outcome: str
    region: str
    deidentified: bool
    counts: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "actor": self.actor, "started": self.started, "finished": self.finished,
                "outcome": self.outcome, "region": self.region, "deidentified": self.deidentified,
                "counts": self.counts}


@dataclass(frozen=True, slots=True)
class SharingRequest:
    id: str
    status: str                 # as stored; see effective_status
    requester: str
    organisation: str
    purpose: str
    basis: str
    scope: Scope
    recipient: str
    destination: str
    assessment: Assessment
    created: int
    approver: str | None = None
    note: str | None = None
    submitted: int | None = None
    decided: int | None = None
    expires: int | None = None
    used: int | None = None
    exports: tuple[ExportRow, ...] = field(default=())

    def effective_status(self, now: int) -> str:
        """``expired`` once an approved request is past its expiry (nothing has to run for that)."""
        if self.status == "approved" and self.expires is not None and now >= self.expires:
            return "expired"
        return self.status

    def to_json(self, now: int) -> dict[str, Any]:
        return {"id": self.id, "status": self.effective_status(now), "requester": self.requester,
                "organisation": self.organisation, "purpose": self.purpose, "basis": self.basis,
                "scope": self.scope.to_json(), "recipient": self.recipient, "destination": self.destination,
                "assessment": self.assessment.to_json(), "approver": self.approver, "note": self.note,
                "created": self.created, "submitted": self.submitted, "decided": self.decided,
                "expires": self.expires, "used": self.used, "exports": [e.to_json() for e in self.exports]}


# ------------------------------------------------------------------ service
class SharingRequests:
    """The sharing-request register over one repository (tables created on first use)."""

    def __init__(self, repo: Repository, audit: Audit, *, settings: SecuritySettings | None = None,
                 region_map: Mapping[str, str] | None = None, clock: Callable[[], int] | None = None,
                 valid_days: int = DEFAULT_VALID_DAYS) -> None:
        self.repo = repo
        self.audit = audit
        self.settings = settings or SecuritySettings.from_env()
        self.region_map = region_map  # None: HUTONG_REGION_MAP (see hutong.security.residency)
        self.clock = clock or repo.clock
        self.valid_days = valid_days

    # -------------------------------------------------------------- reads
    def _row(self, r: Sequence[Any], exports: tuple[ExportRow, ...] = ()) -> SharingRequest:
        body = orjson.loads(self.repo.codec.decode(bytes(r[6])))
        return SharingRequest(
            id=r[0], status=r[1], requester=r[2], organisation=r[3], purpose=body["purpose"], basis=r[4],
            scope=_scope(orjson.loads(r[5])), recipient=body["recipient"],
            destination=body["destination"], assessment=_assessment(body["assessment"]),
            created=int(r[8]), approver=r[7], note=body.get("note"),
            submitted=_int(r[9]), decided=_int(r[10]), expires=_int(r[11]), used=_int(r[12]), exports=exports)

    def get(self, request_id: str, w: Writer | None = None) -> SharingRequest:
        row = sharing_store.request_row(self.repo, request_id, w)
        if row is None:
            raise NotFound("HT-0164", f"no sharing request {request_id[:40]!r}")
        return self._row(row, self.exports_of(request_id, w))

    def exports_of(self, request_id: str, w: Writer | None = None) -> tuple[ExportRow, ...]:
        rows = sharing_store.export_rows(self.repo, request_id, w)
        return tuple(ExportRow(int(r[0]), r[1], int(r[2]), _int(r[3]), r[4], r[5], bool(r[6]),
                               orjson.loads(r[7]) if r[7] else {}) for r in rows)

    def list(self, *, status: str | None = None, requester: str | None = None,
             limit: int = 100) -> list[SharingRequest]:
        """Newest first.  ``status="expired"`` finds approved requests past their expiry."""
        n = max(1, min(limit, 1000))
        if status is not None and status not in STATUSES:
            raise InvalidRequest("HT-0163", f"status must be one of {', '.join(STATUSES)}")
        rows = sharing_store.list_rows(self.repo, status, requester, n, self.clock())
        return [self._row(r) for r in rows]

    # -------------------------------------------------------------- changes
    def _refuse(self, action: str, actor: Principal, request_id: str | None, code: str) -> None:
        self.audit(AuditRecord(action=action, outcome=REFUSED, principal=actor, code=code,
                               entities=(f"SharingRequest/{request_id}",) if request_id else (),
                               peer=actor.peer, time_ms=self.clock()))

    def _done(self, action: str, actor: Principal, req: SharingRequest, **extra: str) -> None:
        self.audit(AuditRecord(action=action, outcome=SUCCESS, principal=actor, purpose=req.basis,
                               entities=(f"SharingRequest/{req.id}",), peer=actor.peer, time_ms=self.clock(),
                               extra={"request": req.id, "status": req.status, **extra}))

    def create(self, actor: Principal, data: Mapping[str, Any]) -> SharingRequest:
        """A new request in ``draft`` from its JSON form (see :meth:`SharingRequest.to_json`)."""
        if actor.role not in REQUESTER_ROLES:
            e = Forbidden("HT-0104", f"role {actor.role} may not request data sharing "
                                     "(institutions, the commission and the platform may)")
            self._refuse("sharing-request", actor, None, e.code)
            raise e
        if not isinstance(data, Mapping):
            raise InvalidRequest("HT-0163", "a sharing request is a JSON object")
        basis = data.get("basis")
        if basis not in LEGAL_BASES:
            raise InvalidRequest("HT-0163", f"basis must be one of {', '.join(LEGAL_BASES)}")
        scope = Scope.from_json(data.get("scope"))
        if basis == "research-deidentified" and not scope.deidentified:
            raise InvalidRequest("HT-0163", "basis research-deidentified needs scope.deidentified = true")
        destination = _text(data, "destination", limit=1000)
        _check_destination_syntax(destination)
        assessment = Assessment.from_json(data.get("assessment"))
        organisation = _text(data, "organisation", required=False, limit=200) or (actor.organization or "")
        if not organisation:
            raise InvalidRequest("HT-0163", "organisation is required")
        body = {"purpose": _text(data, "purpose"), "recipient": _text(data, "recipient", limit=200),
                "destination": destination, "assessment": assessment.to_json(), "note": None}
        rid = "sr-" + secrets.token_hex(8)
        now = self.clock()
        with self.repo.write() as w:
            sharing_store.insert(w, rid, actor.account_id, organisation, str(basis),
                                 orjson.dumps(scope.to_json()).decode(), self.repo.codec.encode(orjson.dumps(body)), now)
            req = self.get(rid, w)
        self._done("sharing-request", actor, req)
        return req

    def submit(self, request_id: str, actor: Principal) -> SharingRequest:
        """draft -> submitted (only the requester, or the platform acting for them)."""
        req = self.get(request_id)
        if actor.account_id != req.requester and actor.role != Role.PLATFORM:
            e = Forbidden("HT-0104", "only the requester may submit a sharing request")
            self._refuse("sharing-request", actor, request_id, e.code)
            raise e
        return self._transition(request_id, actor, "sharing-request", "draft", "submitted",
                                (self.clock(),))

    def approve(self, request_id: str, actor: Principal, note: str | None = None) -> SharingRequest:
        """submitted -> approved, valid ``valid_days`` from now.  The residency check
        runs on the destination first: a request to send data outside the allowed
        regions cannot be approved (cross-border transfer is refused outright here;
        a region that has passed the CAC assessment is added to allowed_regions)."""
        req = self._decider_check(request_id, actor)
        try:
            check_target(req.destination, self.settings, "export", region_map=self.region_map)
        except ConfigError as ce:
            e = Forbidden(ce.code, ce.message)
            self._refuse("sharing-approve", actor, request_id, e.code)
            raise e from None
        now = self.clock()
        return self._transition(request_id, actor, "sharing-approve", "submitted", "approved",
                                (actor.account_id, now, now + self.valid_days * DAY_MS), note=note, with_body=True)

    def reject(self, request_id: str, actor: Principal, note: str) -> SharingRequest:
        """submitted -> rejected, with the reason."""
        if not note or not note.strip():
            raise InvalidRequest("HT-0163", "a rejection needs a note saying why")
        self._decider_check(request_id, actor)
        return self._transition(request_id, actor, "sharing-approve", "submitted", "rejected",
                                (actor.account_id, self.clock()), note=note, with_body=True)

    def _decider_check(self, request_id: str, actor: Principal) -> SharingRequest:
        req = self.get(request_id)
        e: Forbidden | None = None
        if actor.role not in APPROVER_ROLES:
            e = Forbidden("HT-0104", f"role {actor.role} may not decide on sharing requests "
                                     "(commission officers only)")
        elif actor.account_id == req.requester:
            e = Forbidden("HT-0166", "the requester may not decide on their own sharing request (four-eyes)")
        if e is not None:
            self._refuse("sharing-approve", actor, request_id, e.code)
            raise e
        return req

    def _transition(self, request_id: str, actor: Principal, action: str, frm: str, to: str,
                    args: tuple[Any, ...], *, note: str | None = None, with_body: bool = False) -> SharingRequest:
        e: Conflict | None = None
        with self.repo.write() as w:
            current = self.get(request_id, w)
            if current.status != frm:
                e = Conflict("HT-0165", f"sharing request is {current.effective_status(self.clock())}, "
                                        f"not {frm}: cannot make it {to}")
            else:
                if with_body:
                    body = orjson.loads(self.repo.codec.decode(sharing_store.body_of(w, request_id)))
                    body["note"] = (note or "").strip()[:2000] or None
                    args = (*args, self.repo.codec.encode(orjson.dumps(body)))
                # The status guard makes concurrent decisions safe: one wins, the other sees 0 rows.
                if not sharing_store.transition(w, to, args, request_id):
                    e = Conflict("HT-0165", f"sharing request changed meanwhile: cannot make it {to}")
            req = self.get(request_id, w)
        if e is not None:
            self._refuse(action, actor, request_id, e.code)
            raise e
        self._done(action, actor, req, **({"decision": to} if action == "sharing-approve" else {}))
        return req

    # -------------------------------------------------------------- export bookkeeping
    def claim_for_export(self, request_id: str, actor: Principal, region: str) -> tuple[SharingRequest, int]:
        """Take an approved, unexpired request for one export (approved -> used) and
        open its export row, atomically: two exports racing on one request cannot both win."""
        now = self.clock()
        export_id: int | None = None
        with self.repo.write() as w:
            req = self.get(request_id, w)
            status = req.effective_status(now)
            if status == "approved":
                export_id = sharing_store.claim(w, request_id, actor.account_id, now, region,
                                                req.scope.deidentified)
                if export_id is None:
                    status = "changed meanwhile"
            # Refusals leave the block normally: raising inside it would roll back.
        if export_id is None:
            if status == "expired":
                self.mark_expired(request_id)
            raise _NotUsable(status)
        return self.get(request_id), export_id

    def mark_expired(self, request_id: str) -> None:
        """Record that an approved request has passed its expiry (listings and
        ``effective_status`` already say so; this makes the row say it too)."""
        with self.repo.write() as w:
            sharing_store.mark_expired(w, request_id, self.clock())

    def finish_export(self, request_id: str, export_id: int, counts: Mapping[str, int] | None) -> None:
        """Close the export row: ``counts`` on success; None = failed, and the request
        becomes usable again (nothing left the platform)."""
        with self.repo.write() as w:
            sharing_store.finish_export(w, request_id, export_id, counts, self.clock())


class _NotUsable(Exception):
    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def _scope(d: dict[str, Any]) -> Scope:
    """A stored scope as it was approved (not re-validated: rules may tighten later)."""
    return Scope(tuple(d["types"]), tuple(d.get("institutions") or ()), d.get("from"), d.get("to"),
                 bool(d.get("deidentified")))


def _assessment(d: dict[str, Any]) -> Assessment:
    return Assessment(d["data_classification"], d["volume_estimate"], int(d["recipient_security_level"]),
                      bool(d["cross_border"]), d["risk"], tuple(d.get("mitigations") or ()), d["assessor"],
                      d.get("notes") or "")


def _int(v: Any) -> int | None:
    return int(v) if v is not None else None


def _check_destination_syntax(destination: str) -> None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(destination)
    except ValueError:
        raise InvalidRequest("HT-0163", "destination is not a valid URL") from None
    if not parts.scheme or len(parts.scheme) == 1:
        raise InvalidRequest("HT-0163", "destination must be a URL such as file:///srv/exports/request-1")
