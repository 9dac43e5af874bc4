"""Export under an approved sharing request, as FHIR Bulk Data NDJSON.

An export runs only when every condition holds (else it is refused, audited,
and nothing is written):

1. the request exists, is ``approved``, not expired and not used: one
   request, one export (:mod:`hutong.security.sharing`);
2. the actor is the requester, or the platform operator acting for them;
3. the destination is exactly the approved destination;
4. the destination passes the residency check (:func:`check_target`) under
   today's configuration: a configuration that changed since approval wins.
   Cross-border transfer is refused outright; a destination region that has
   passed the CAC security assessment (PIPL art. 38-40) is admitted only by
   adding it to ``allowed_regions``, never by a request's own assessment;
5. the destination is a local directory (``file:///dir``); object stores and
   HTTPS push are not supported yet (HT-0169).

Output (Bulk Data IG, export.html#file-format): ``<dir>/<request id>/`` holds
one ``<Type>.ndjson`` per resource type with at least one resource, and a
``manifest.json`` shaped like the Bulk Data completion response.  Files are
written in a hidden temporary directory that is renamed into place when
complete, with mode 0600 (the directory 0700): a reader never sees half an
export, and a failed export leaves nothing and makes the request usable again.

Scope: the request's resource types; its institutions (Organization
identifier values or ids) select the patients they manage
(``Patient.managingOrganization``) and, for other types, those patients'
compartments; its period bounds ``_lastUpdated`` (Beijing dates, inclusive).
Golden person records (the MPI's) are never exported: they duplicate the
institutions' records.

De-identification (``scope.deidentified``) removes direct identifiers
(PIPL art. 73: information that alone identifies a person): from Patient,
RelatedPerson, Person and Practitioner ``name identifier telecom address
photo contact link``, birthDate cut to the year; from every resource
``identifier text note contained`` and the ``display`` of references.  Every
resource id and every relative reference is replaced by a keyed pseudonym
HMAC-SHA256(key, "Type/id"), so references inside the export still join.
The key comes from the injected ``pseudonym_key`` callable (stable
pseudonyms across exports to one recipient); without one a random 32-byte
key is drawn per export and discarded, so pseudonyms cannot be linked across
exports or reversed by anyone.  This is pseudonymisation of direct
identifiers, not anonymisation: quasi-identifiers in clinical content stay,
which is why the approval and the assessment still apply.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from hutong.errors import ConfigError, Conflict, Forbidden, HutongError, NotFound, NotSupported
from hutong.mpi.golden import is_golden
from hutong.security.events import ERROR, REFUSED, SUCCESS, AuditRecord
from hutong.security.principal import Principal, Role
from hutong.security.residency import check_target, redact
from hutong.security.settings import SecuritySettings
from hutong.security.sharing import Audit, Scope, SharingRequest, SharingRequests, _NotUsable
from hutong.store.query import Clause, ParamRef, Query, RangeMatch, RefMatch, TokenMatch
from hutong.store.repository import Repository, Stored
from hutong.systems import REGION_TZ

PAGE = 500
PERSON_TYPES = ("Patient", "RelatedPerson", "Person", "Practitioner")
PERSON_FIELDS = ("name", "identifier", "telecom", "address", "photo", "contact", "link")
ANY_FIELDS = ("identifier", "text", "note", "contained")
_RELATIVE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]{1,64})?$")


@dataclass(frozen=True, slots=True)
class ExportResult:
    request_id: str
    export_id: int
    directory: Path                 # <destination>/<request id>
    region: str
    counts: dict[str, int]          # resource type -> resources written
    files: dict[str, str]           # resource type -> file name
    deidentified: bool

    def to_json(self) -> dict[str, Any]:
        return {"request": self.request_id, "export": self.export_id, "directory": str(self.directory),
                "region": self.region, "counts": self.counts, "files": self.files,
                "deidentified": self.deidentified}


def export(repo: Repository, request_id: str, destination: str, actor: Principal, audit: Audit, *,
           settings: SecuritySettings | None = None, region_map: dict[str, str] | None = None,
           clock: Callable[[], int] | None = None,
           pseudonym_key: Callable[[], bytes] | None = None) -> ExportResult:
    """Export the scope of approved request ``request_id`` to ``destination`` (see module doc)."""
    s = settings or SecuritySettings.from_env()
    register = SharingRequests(repo, audit, settings=s, region_map=region_map, clock=clock)
    now = register.clock

    def refuse(e: HutongError) -> HutongError:
        audit(AuditRecord(action="export", outcome=REFUSED, principal=actor, code=e.code, peer=actor.peer,
                          entities=(f"SharingRequest/{request_id[:40]}",), time_ms=now()))
        return e

    try:
        req = register.get(request_id)
    except NotFound as e:
        raise refuse(e) from None
    if actor.account_id != req.requester and actor.role != Role.PLATFORM:
        raise refuse(Forbidden("HT-0104", "only the requester (or the platform operator) may run an export"))
    status = req.effective_status(now())
    if status == "expired" and req.status == "approved":
        register.mark_expired(req.id)
    if status != "approved":
        raise refuse(Forbidden("HT-0167", f"sharing request is {status}: an export needs an approved, "
                                          "unexpired request that has not been used"))
    if destination.strip() != req.destination.strip():
        raise refuse(Forbidden("HT-0168", f"destination {redact(destination)} is not the approved destination "
                                          f"{redact(req.destination)}"))
    try:
        region = check_target(destination, s, "export", region_map=region_map)
    except ConfigError as ce:
        raise refuse(Forbidden(ce.code, ce.message)) from None
    parts = urlsplit(destination.strip())
    if parts.scheme.lower() != "file" or (parts.hostname or "localhost") != "localhost" or not parts.path:
        raise refuse(NotSupported("HT-0169", f"export to {redact(destination)} is not supported: "
                                             "give a local directory as file:///path"))
    base = Path(unquote(parts.path))
    final = base / req.id
    if final.exists():
        raise refuse(Conflict("HT-0165", f"{final} already exists: an export of this request was written there"))

    try:
        req, export_id = register.claim_for_export(req.id, actor, region)
    except _NotUsable as nu:
        raise refuse(Forbidden("HT-0167", f"sharing request is {nu.status}: cannot export")) from None

    key = pseudonym_key() if pseudonym_key is not None else secrets.token_bytes(32)
    tmp = base / f".{req.id}.partial-{secrets.token_hex(4)}"
    try:
        counts = _write(repo, req, tmp, key, now())
        os.rename(tmp, final)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        register.finish_export(req.id, export_id, None)
        audit(AuditRecord(action="export", outcome=ERROR, principal=actor, peer=actor.peer, time_ms=now(),
                          entities=(f"SharingRequest/{req.id}",), purpose=req.basis,
                          code=e.code if isinstance(e, HutongError) else "HT-0099",
                          extra={"request": req.id, "export": str(export_id), "error": type(e).__name__}))
        raise
    register.finish_export(req.id, export_id, counts)
    audit(AuditRecord(action="export", outcome=SUCCESS, principal=actor, peer=actor.peer, time_ms=now(),
                      entities=(f"SharingRequest/{req.id}",), purpose=req.basis,
                      extra={"request": req.id, "export": str(export_id), "region": region,
                             "deidentified": str(req.scope.deidentified).lower(),
                             "counts": ",".join(f"{t}={n}" for t, n in sorted(counts.items())),
                             "organisation": req.organisation, "basis": req.basis}))
    return ExportResult(req.id, export_id, final, region, counts, {t: f"{t}.ndjson" for t in counts},
                        req.scope.deidentified)


# ------------------------------------------------------------------ writing
def _write(repo: Repository, req: SharingRequest, tmp: Path, key: bytes, now_ms: int) -> dict[str, int]:
    tmp.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp.mkdir(mode=0o700)
    counts: dict[str, int] = {}
    files: dict[str, Any] = {}
    pseudo = Pseudonyms(key)
    try:
        for st in select(repo, req.scope):
            if st.body is None:
                continue
            res = orjson.loads(st.body)
            if req.scope.deidentified:
                res = deidentify(res, pseudo)
            f = files.get(st.type)
            if f is None:
                path = tmp / f"{st.type}.ndjson"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                f = files[st.type] = os.fdopen(fd, "wb")
            f.write(orjson.dumps(res) + b"\n")
            counts[st.type] = counts.get(st.type, 0) + 1
    finally:
        for f in files.values():
            f.close()
    manifest = {
        # Bulk Data IG export.html#response---complete-status
        "transactionTime": datetime.fromtimestamp(now_ms / 1000, REGION_TZ).isoformat(),
        "request": f"SharingRequest/{req.id}",
        "requiresAccessToken": False,
        "output": [{"type": t, "url": f"{t}.ndjson", "count": n} for t, n in sorted(counts.items())],
        "error": [],
        "extension": {"deidentified": req.scope.deidentified, "basis": req.basis},
    }
    fd = os.open(tmp / "manifest.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as mf:
        mf.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return counts


def _day_ms(iso: str, *, next_day: bool = False) -> int:
    d = date.fromisoformat(iso) + timedelta(days=1 if next_day else 0)
    return int(datetime(d.year, d.month, d.day, tzinfo=REGION_TZ).timestamp() * 1000)


def select(repo: Repository, scope: Scope) -> Iterator[Stored]:
    """Every current resource in ``scope``, read through the repository, each once."""
    lo = _day_ms(scope.period_from) if scope.period_from else None
    hi = _day_ms(scope.period_to, next_day=True) if scope.period_to else None

    def in_period(st: Stored) -> bool:
        return (lo is None or st.last_updated >= lo) and (hi is None or st.last_updated < hi)

    if not scope.institutions:
        bounds: tuple[RangeMatch, ...] = ()
        if lo is not None:
            bounds += (RangeMatch("sa", lo, lo, lo),)  # last_updated >= lo
        if hi is not None:
            bounds += (RangeMatch("lt", hi, hi, hi),)  # last_updated < hi
        for t in scope.types:
            for st in _pages(repo, Query(type=t, last_updated=bounds)):
                if not (t == "Patient" and st.body is not None and is_golden(orjson.loads(st.body))):
                    yield st
        return
    patients = [p for p in _pages(repo, _managed_patients(repo, scope.institutions))
                if p.body is not None and not is_golden(orjson.loads(p.body))]
    if "Patient" in scope.types:
        yield from (p for p in patients if in_period(p))
    others = tuple(t for t in scope.types if t != "Patient")
    if not others or not patients:
        return
    ids = sorted({p.id for p in patients})
    seen: set[int] = set()  # a resource can sit in several patients' compartments
    for k in range(0, len(ids), PAGE):
        chunk = ids[k:k + PAGE]
        after = 0
        while True:
            page, more = repo.everything(chunk, types=others, since=lo, after_pk=after, count=PAGE)
            for st in page:
                if st.pk not in seen and in_period(st):
                    seen.add(st.pk)
                    yield st
            if not more or not page:
                break
            after = page[-1].pk


def _pages(repo: Repository, q: Query) -> Iterator[Stored]:
    q.count, q.total = PAGE, False
    while True:
        page = repo.search(q)
        yield from page.matches
        if page.next_cursor is None:
            return
        q.cursor = page.next_cursor


def _managed_patients(repo: Repository, institutions: tuple[str, ...]) -> Query:
    """Patients whose managingOrganization is one of the institutions (identifier value or id)."""
    orgs = set(institutions)
    ident = Query(type="Organization", clauses=[
        Clause(ParamRef("Organization", "identifier", "token"), tuple(TokenMatch(None, c) for c in institutions))])
    orgs |= {st.id for st in _pages(repo, ident)}
    return Query(type="Patient", clauses=[
        Clause(ParamRef("Patient", "organization", "reference"), tuple(RefMatch("Organization", o) for o in sorted(orgs)))])


# ------------------------------------------------------------------ de-identification
class Pseudonyms:
    """Keyed pseudonyms for resource ids: HMAC-SHA256(key, "Type/id"), 32 hex digits
    (a valid FHIR id; collisions need 2^64 resources)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ConfigError("HT-0070", "pseudonym key must be at least 16 bytes")
        self._key = key

    def __call__(self, type: str, id: str) -> str:
        return hmac.new(self._key, f"{type}/{id}".encode(), hashlib.sha256).hexdigest()[:32]


def deidentify(resource: dict[str, Any], pseudo: Pseudonyms) -> dict[str, Any]:
    """The resource without direct identifiers, ids pseudonymised (see module doc)."""
    rtype = str(resource.get("resourceType", ""))
    out = {k: v for k, v in resource.items() if k not in ANY_FIELDS}
    if rtype in PERSON_TYPES:
        for k in PERSON_FIELDS:
            out.pop(k, None)
        bd = out.get("birthDate")
        if isinstance(bd, str) and len(bd) >= 4:
            out["birthDate"] = bd[:4]
    if isinstance(out.get("id"), str):
        out["id"] = pseudo(rtype, out["id"])
    meta = out.get("meta")
    if isinstance(meta, dict):
        # meta.source may name the sending system and its message id.
        out["meta"] = {k: v for k, v in meta.items() if k in ("versionId", "lastUpdated", "profile", "tag",
                                                              "security")}
    result = _scrub(out, pseudo)
    assert isinstance(result, dict)
    return result


def _scrub(node: Any, pseudo: Pseudonyms) -> Any:
    if isinstance(node, list):
        return [_scrub(x, pseudo) for x in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    is_ref = "reference" in node and isinstance(node.get("reference"), str)
    for k, v in node.items():
        if is_ref and k == "display":
            continue  # a reference's display is often the person's name
        if is_ref and k == "reference":
            m = _RELATIVE.match(v)
            if m:
                out[k] = f"{m.group(1)}/{pseudo(m.group(1), m.group(2))}"
            # absolute and logical references (urn:uuid, other servers) are dropped: they may embed ids
            continue
        if k in ("identifier", "note", "contained"):
            continue  # nested too (Reference.identifier, an element's note); CodeableConcept.text stays
        out[k] = _scrub(v, pseudo)
    return out
