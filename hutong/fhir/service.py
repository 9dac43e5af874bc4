"""FHIR RESTful interactions (http.html) over a Repository, free of any web framework.

Each public method takes what an HTTP request carries (ids, query items,
headers, body) and returns a :class:`FhirResponse`.  Writes validate before the
write transaction opens, so no lock is held while a body is checked.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

import orjson

from hutong.errors import (
    Conflict,
    Forbidden,
    Gone,
    InvalidRequest,
    NotFound,
    PreconditionFailed,
    info_outcome,
)
from hutong.fhir import patch as fpatch
from hutong.fhir import search as fsearch
from hutong.fhir.references import reference_holders
from hutong.fhir.render import subset
from hutong.fhir.response import FhirResponse, etag, http_date, version_headers
from hutong.fhir.urls import criteria
from hutong.fhir.validation import check_id, check_type, validate
from hutong.mpi.golden import GOLDEN_SYSTEM
from hutong.security.guard import access_in
from hutong.security.policy import Access
from hutong.security.policy_store import mpi_of
from hutong.security.principal import Role
from hutong.store import exactjson
from hutong.store.query import Cursor, Query
from hutong.store.repository import Repository, Stored, Writer
from hutong.store.sql import instant

T = TypeVar("T")
IF_MATCH_RE = re.compile(r'^(?:W/)?"(\d+)"$')
EVERYTHING_DEFAULT_COUNT = 1000
# Resources referenced from a patient's records that $everything may bring
# along: shared directory data, never another patient's records.
SHARED_TYPES = frozenset({"Organization", "Practitioner", "PractitionerRole", "Location", "Medication",
                          "Substance", "HealthcareService", "Endpoint"})


def new_id() -> str:
    return str(uuid.uuid4())


# A JSON escape of a control character other than tab, LF and CR.
_CONTROL_ESCAPE = re.compile(rb"\\u00(?:0[0-8bBcCeEfF]|1[0-9a-fA-F])")


def _has_control(node: Any) -> bool:
    if isinstance(node, str):
        return any(ord(ch) < 32 and ch not in "\t\n\r" for ch in node)
    if isinstance(node, dict):
        return any(_has_control(k) or _has_control(v) for k, v in node.items())
    if isinstance(node, list):
        return any(_has_control(v) for v in node)
    return False


def parse_json(body: bytes, *, exact: bool = False) -> Any:
    """``exact``: a resource to store, whose decimals keep their text (hutong.store.exactjson)."""
    try:
        data = exactjson.loads(body) if exact else orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidRequest("HT-0001", f"request body is not valid JSON: {e}") from None
    # datatypes.html#string: no characters below U+0020 except tab, CR and LF
    # (PostgreSQL text cannot even hold NUL).  The byte scan keeps the walk off
    # the common path.
    if _CONTROL_ESCAPE.search(body) and _has_control(data):
        raise InvalidRequest("HT-0001", "request body contains control characters (FHIR strings exclude "
                                        "characters below U+0020 except tab, CR and LF)")
    return data


def parse_if_match(value: str | None) -> int | None:
    if value is None:
        return None
    m = IF_MATCH_RE.match(value.strip())
    if not m:
        raise InvalidRequest("HT-0014", f'If-Match must be W/"<version>", not {value[:40]!r}')
    return int(m.group(1))


def _prefer_return(headers: dict[str, str]) -> str:
    prefer = headers.get("prefer", "")
    for part in prefer.split(";"):
        k, _, v = part.strip().partition("=")
        if k.strip() == "return":
            return v.strip().strip('"')
    return "representation"


def asks_for_golden(items: list[tuple[str, str]]) -> bool:
    """A Patient search that names golden records: by ``_id``, or ``_tag`` with the golden code."""
    for k, v in items:
        name = k.split(":", 1)[0]
        if name == "_id":
            return True
        if k == "_tag" and any(fsearch.is_tag(x, GOLDEN_SYSTEM, "golden") for x in fsearch.split_values(v)):
            return True
    return False


def _shaped(s: Stored, summary: str | None, elements: list[str] | None) -> bytes | None:
    """A read's body cut to _summary/_elements (search.html#summary, #elements; also
    on read), tagged SUBSETTED; decimals keep their text (hutong.store.exactjson)."""
    if s.body is None or not (elements or summary in ("true", "text", "data")):
        return s.body
    return exactjson.dumps(subset(exactjson.loads(s.body), elements, summary))


def not_modified(headers: dict[str, str], s: Stored) -> bool:
    """Conditional read (http.html#cread; RFC 9110 section 13.1): If-None-Match
    (weak comparison, ``*``) decides when present, else If-Modified-Since at
    the one-second precision of Last-Modified; an unreadable date is ignored
    (RFC 9110 section 13.1.3)."""
    none_match = headers.get("if-none-match")
    if none_match is not None:
        tags = {t.strip() for t in none_match.split(",")}
        return "*" in tags or f'"{s.version}"' in {t.removeprefix("W/") for t in tags}
    since = headers.get("if-modified-since")
    if not since:
        return False
    try:
        when = parsedate_to_datetime(since)
    except (TypeError, ValueError, IndexError):
        return False
    if when.tzinfo is None:
        return False
    return s.last_updated // 1000 <= when.timestamp()


def prefer_strict(headers: dict[str, str]) -> bool:
    return "handling=strict" in headers.get("prefer", "").replace(" ", "")


class FhirService:
    """``access`` is the caller's policy (hutong.security.policy): every read,
    search, include and $everything row passes it, and every write acts for it
    (the service writes through ``repo.acting_as(access)``; the store's policy
    stage checks each write against it and refuses writes for nobody, HT-0350).
    Given a repository already bound to an Access
    (hutong.security.guard.as_operator), the service uses that one.  Without
    any, reads are unfiltered (internal code: the MPI, tests of the internals)
    and writes are refused."""

    def __init__(self, repo: Repository, base_url: str = "", access: Access | None = None) -> None:
        if access is None and isinstance(repo.actor, Access):
            access = repo.actor
        self.repo = repo.acting_as(access) if access is not None and repo.actor is not access else repo
        self.base_url = base_url.rstrip("/")
        self.mpi = mpi_of(repo)
        self._access = access

    @property
    def access(self) -> Access | None:
        """The caller's policy (None: internal code reading unfiltered; its writes are refused)."""
        return self._access

    def access_in(self, w: Writer) -> Access | None:
        """The policy a write in ``w`` acts under: the one the transaction was
        opened for (an entry point sharing one service binds each message's
        sender, hutong.ingest), else this service's."""
        return access_in(w) or self._access

    # ------------------------------------------------------------------ helpers
    def _retry(self, fn: Callable[[], T]) -> T:
        """Retry a write that lost a race on a unique key (PostgreSQL)."""
        for attempt in range(3):
            try:
                return fn()
            except Conflict as e:
                if e.code != "HT-0051" or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _write_response(self, s: Stored, status: int, headers: dict[str, str]) -> FhirResponse:
        h = version_headers(s, self.base_url)
        ret = _prefer_return(headers)
        if ret == "minimal":
            return FhirResponse(status, None, h)
        if ret == "OperationOutcome":
            return FhirResponse.json(status, info_outcome(f"{s.type}/{s.id} version {s.version} stored"), h)
        return FhirResponse(status, s.body, h)

    def _conditional(self, w: Writer, type: str, query: str, limit: int = 2) -> list[Stored]:
        """Matches of a conditional request's criteria (http.html#ccreate), under a lock."""
        items = parse_qsl(criteria(type, query, [self.base_url]), keep_blank_values=True)
        if not items:
            raise InvalidRequest("HT-0014", "conditional request without search criteria")
        # Same criteria -> same lock: concurrent identical conditional creates queue,
        # and the second one finds the first one's resource.
        w.lock_key(type + "?" + urlencode(sorted(items)))
        if type == "Patient":
            # A sender's criteria ("my patient with this ID number") are about its
            # own records, never the MPI's golden person that shares the number.
            items = [*items, ("_tag:not", f"{GOLDEN_SYSTEM}|golden")]
        parsed = fsearch.parse(type, items, base_url=self.base_url, strict=True)
        access = self.access_in(w)
        if access is not None:
            # Criteria match only what the caller may write: an institution's
            # "my patient with this ID number" never finds another's record.
            parsed.query.scope = access.write_scope(type)
        return w.search_ids(parsed.query, limit)

    # ------------------------------------------------------------------ create
    def create(self, type: str, body: bytes, headers: dict[str, str], query: str = "") -> FhirResponse:
        """POST [type] (http.html#create); ``If-None-Exist`` or criteria in the URL's
        query make it a conditional create (http.html#ccreate)."""
        check_type(type)
        resource = validate(parse_json(body, exact=True), type)
        if_none_exist = headers.get("if-none-exist")
        criteria = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in ("_format", "_pretty")]
        if criteria:
            # R4 names only the If-None-Exist header, yet clients (fhirpy's get_or_create,
            # Aidbox) send the criteria as POST [type]?criteria: ignoring them would make a
            # duplicate each time, so they are the same condition (issue 15, item 6).
            if if_none_exist is not None and sorted(parse_qsl(if_none_exist, keep_blank_values=True)) != \
                    sorted(criteria):
                raise InvalidRequest("HT-0201", "POST [type]?criteria and If-None-Exist name different "
                                                "conditions; send one (http.html#ccreate)")
            if_none_exist = urlencode(criteria)

        def run() -> tuple[Stored, int]:
            return self.repo.transact(lambda w: self.create_in(w, type, dict(resource), if_none_exist))

        s, status = self._retry(run)
        return self._write_response(s, status, headers)

    def create_in(self, w: Writer, type: str, resource: dict[str, Any], if_none_exist: str | None,
                  new: str | None = None) -> tuple[Stored, int]:
        if if_none_exist:
            found = self._conditional(w, type, if_none_exist)
            if len(found) > 1:
                raise PreconditionFailed("HT-0013", f"If-None-Exist matched {len(found)} resources")
            if found:
                return found[0], 200
        return w.insert(type, new or new_id(), resource, method="POST"), 201

    # ------------------------------------------------------------------ read
    def read(self, type: str, id: str, headers: dict[str, str] | None = None,
             params: list[tuple[str, str]] | None = None) -> FhirResponse:
        check_type(type)
        check_id(id)
        summary, elements = fsearch.render_params(params or [])
        if self.access is not None:
            self.access.require_scope(type, "read")
        s = self.repo.read(type, id)
        if s is None:
            raise NotFound("HT-0009", f"{type}/{id} not found")
        if s.deleted:
            raise Gone("HT-0010", f"{type}/{id} was deleted", )
        if self.access is not None:
            self.access.check_read(s)
            s = self.access.present([s])[0]  # a golden record: its index card without a basis
        h = {"ETag": etag(s.version), "Last-Modified": http_date(s.last_updated)}
        if headers and not_modified(headers, s):
            return FhirResponse(304, None, h)
        return FhirResponse(200, _shaped(s, summary, elements), h)

    def vread(self, type: str, id: str, version: str, params: list[tuple[str, str]] | None = None) -> FhirResponse:
        check_type(type)
        check_id(id)
        summary, elements = fsearch.render_params(params or [])
        if not version.isdigit():
            raise NotFound("HT-0011", f"version {version[:20]!r} of {type}/{id} not found")
        self._check_current(type, id)
        s = self.repo.vread(type, id, int(version))
        if s is None:
            raise NotFound("HT-0011", f"version {version} of {type}/{id} not found")
        if s.deleted:
            raise Gone("HT-0010", f"version {version} of {type}/{id} is a deletion")
        if self.access is not None:
            s = self.access.present([s])[0]
        return FhirResponse(200, _shaped(s, summary, elements),
                            {"ETag": etag(s.version), "Last-Modified": http_date(s.last_updated)})

    # ------------------------------------------------------------------ update
    def update(self, type: str, id: str, body: bytes, headers: dict[str, str]) -> FhirResponse:
        check_type(type)
        check_id(id)
        resource = validate(parse_json(body, exact=True), type)
        if resource.get("id") is None:
            raise InvalidRequest("HT-0007", "the resource in an update must carry its id (http.html#update)",
                                 expression=[f"{type}.id"])
        if resource["id"] != id:
            raise InvalidRequest("HT-0007", f"body id {resource['id']!r} does not match URL id {id!r}",
                                 expression=[f"{type}.id"])
        if_match = parse_if_match(headers.get("if-match"))

        def run() -> tuple[Stored, int]:
            return self.repo.transact(lambda w: self.update_in(w, type, id, dict(resource), if_match))

        s, status = self._retry(run)
        return self._write_response(s, status, headers)

    def update_in(self, w: Writer, type: str, id: str, resource: dict[str, Any],
                  if_match: int | None) -> tuple[Stored, int]:
        # Lock the id before reading, so concurrent update-as-create of one new id
        # queues instead of racing to the unique key (PostgreSQL; SQLite writers
        # are already serialised).
        w.lock_key(f"{type}/{id}")
        current = w.read_current(type, id, lock=True)
        if if_match is not None:
            if current is None or current.deleted:
                raise PreconditionFailed("HT-0012", f"If-Match on {type}/{id}, which does not exist")
            if current.version != if_match:
                raise PreconditionFailed(
                    "HT-0012", f"{type}/{id} is at version {current.version}, not {if_match} (If-Match)")
        if current is None:
            return w.insert(type, id, resource, method="PUT"), 201
        return w.replace(current, resource), (201 if current.deleted else 200)

    # ------------------------------------------------------------------ patch
    def patch(self, type: str, id: str, body: bytes, headers: dict[str, str]) -> FhirResponse:
        """PATCH [type]/[id] with a JSON Patch (http.html#patch, RFC 6902): the
        current version, patched, goes through the update path like a PUT of
        the result (validation, If-Match, a new version, the write hooks that
        keep ownership fixed, audit).  Without If-Match the patch applies to the
        version read; if another write lands first, it is applied again to the
        newer version (never silently to a version it was not checked on)."""
        check_type(type)
        check_id(id)
        fpatch.check_media_type(headers.get("content-type"))
        ops = fpatch.operations(parse_json(body, exact=True))  # decimals as written (issue 15, item 3)
        if_match = parse_if_match(headers.get("if-match"))
        for attempt in range(3):
            current = self._patch_base(type, id)
            if if_match is not None and current.version != if_match:
                raise PreconditionFailed(
                    "HT-0012", f"{type}/{id} is at version {current.version}, not {if_match} (If-Match)")
            resource = self._patched(ops, current)
            try:
                s, status = self._write_patched(type, id, resource, current.version)
            except PreconditionFailed as e:
                if if_match is not None or e.code != "HT-0012" or attempt == 2:
                    raise
                continue
            return self._write_response(s, status, headers)
        raise AssertionError("unreachable")

    def patch_in(self, w: Writer, type: str, id: str, ops: fpatch.Operations,
                 if_match: int | None) -> tuple[Stored, int]:
        """A JSON Patch inside an open write transaction (a PATCH entry of a
        transaction Bundle, http.html#transaction): the current version read
        under the lock, checked, patched and written as :meth:`patch` does."""
        w.lock_key(f"{type}/{id}")
        current = w.read_current(type, id, lock=True)
        if current is None:
            raise NotFound("HT-0009", f"{type}/{id} not found")
        if current.deleted:
            raise Gone("HT-0010", f"{type}/{id} was deleted")
        self._check_patch_base(self.access_in(w), current)
        if if_match is not None and current.version != if_match:
            raise PreconditionFailed(
                "HT-0012", f"{type}/{id} is at version {current.version}, not {if_match} (If-Match)")
        return self.update_in(w, type, id, self._patched(ops, current), current.version)

    def _patched(self, ops: fpatch.Operations, current: Stored) -> dict[str, Any]:
        """``current`` patched and validated as a PUT body; the id stays."""
        assert current.body is not None
        where = f"{current.type}/{current.id}"
        resource = validate(fpatch.apply(ops, parse_json(current.body, exact=True), where), current.type)
        if resource.get("id") != current.id:
            raise InvalidRequest("HT-0007", f"the patch changes the id of {where}",
                                 expression=[f"{current.type}.id"])
        return resource

    def _write_patched(self, type: str, id: str, resource: dict[str, Any], version: int) -> tuple[Stored, int]:
        return self._retry(lambda: self.repo.transact(lambda w: self.update_in(w, type, id, dict(resource), version)))

    def _patch_base(self, type: str, id: str) -> Stored:
        """The version a patch applies to: one the caller may read, and sees whole
        (a patch of what a caller is shown in part would write back the part)."""
        if self.access is not None:
            self.access.require_scope(type, "read")
        s = self.repo.read(type, id)
        if s is None:
            raise NotFound("HT-0009", f"{type}/{id} not found")
        if s.deleted:
            raise Gone("HT-0010", f"{type}/{id} was deleted")
        self._check_patch_base(self.access, s)
        return s

    @staticmethod
    def _check_patch_base(access: Access | None, s: Stored) -> None:
        if access is not None:
            access.require_scope(s.type, "read")
            access.check_read(s)
            if access.present([s])[0] is not s:
                raise Forbidden("HT-0224", f"{s.type}/{s.id} is shown to you only in part: it cannot be patched")

    def conditional_update(self, type: str, query: str, body: bytes, headers: dict[str, str]) -> FhirResponse:
        """PUT [type]?criteria (http.html#cond-update)."""
        check_type(type)
        resource = validate(parse_json(body, exact=True), type)

        def run() -> tuple[Stored, int]:
            return self.repo.transact(lambda w: self.conditional_update_in(w, type, query, dict(resource)))

        s, status = self._retry(run)
        return self._write_response(s, status, headers)

    def conditional_update_in(self, w: Writer, type: str, query: str,
                              resource: dict[str, Any]) -> tuple[Stored, int]:
        found = self._conditional(w, type, query)
        if len(found) > 1:
            raise PreconditionFailed("HT-0013", f"conditional update matched {len(found)} resources")
        if not found:
            rid = resource.get("id") or new_id()
            existing = w.read_current(type, rid)
            if existing is not None and not existing.deleted:
                raise InvalidRequest("HT-0007", f"{type}/{rid} exists but does not match the criteria")
            if existing is not None:
                return w.replace(existing, resource), 201
            return w.insert(type, rid, resource, method="PUT"), 201
        target = found[0]
        if resource.get("id") not in (None, target.id):
            raise InvalidRequest("HT-0007", f"body id {resource['id']!r} differs from the matched {target.id!r}")
        return w.replace(target, resource), 200

    # ------------------------------------------------------------------ delete
    def delete(self, type: str, id: str, headers: dict[str, str] | None = None) -> FhirResponse:
        check_type(type)
        check_id(id)
        if_match = parse_if_match((headers or {}).get("if-match"))
        self.repo.transact(lambda w: self.delete_in(w, type, id, if_match))
        return FhirResponse(204)

    def delete_in(self, w: Writer, type: str, id: str, if_match: int | None = None) -> Stored | None:
        current = w.read_current(type, id, lock=True)
        if if_match is not None:
            # http.html#concurrency: If-Match guards every write, a delete as much as an
            # update, so a client never deletes a version it has not seen (issue 15, item 4).
            if current is None or current.deleted:
                raise PreconditionFailed("HT-0012", f"If-Match on {type}/{id}, which does not exist")
            if current.version != if_match:
                raise PreconditionFailed(
                    "HT-0012", f"{type}/{id} is at version {current.version}, not {if_match} (If-Match)")
        if current is None or current.deleted:
            return None  # http.html#delete: deleting what is not there is not an error
        return w.delete(current)

    def conditional_delete(self, type: str, query: str) -> FhirResponse:
        check_type(type)
        self.repo.transact(lambda w: self.conditional_delete_in(w, type, query))
        return FhirResponse(204)

    def conditional_delete_in(self, w: Writer, type: str, query: str) -> None:
        found = self._conditional(w, type, query)
        if len(found) > 1:
            raise PreconditionFailed("HT-0013", f"conditional delete matched {len(found)} resources")
        for s in found:
            w.delete(s)

    # ------------------------------------------------------------------ history
    def history(self, type: str | None, id: str | None, items: list[tuple[str, str]]) -> FhirResponse:
        if type is not None:
            check_type(type)
        if id is not None:
            check_id(id)
            self._check_current(type or "", id)
        elif self.access is not None:
            # Type and system history list every institution's changes.
            self.access.require_role(Role.PLATFORM, what="type or system history")
        since = None
        count = 100
        before = None
        for k, v in items:
            if k == "_since":
                since = int(fsearch.parse_date_value("_since", v).lo)
            elif k == "_count":
                if not v.isdigit():
                    raise InvalidRequest("HT-0023", "_count must be a non-negative integer")
                count = max(1, min(int(v), fsearch.MAX_COUNT))
            elif k == "_cursor":
                c = fsearch.decode_cursor(v)
                if len(c.keys) != 2:
                    raise InvalidRequest("HT-0024", "invalid history cursor")
                before = (int(c.keys[0]), c.pk, int(c.keys[1]))  # type: ignore[call-overload]
        rows = self.repo.history(type, id, since=since, count=count + 1, before=before)
        if id is not None and not rows and before is None:
            raise NotFound("HT-0009", f"{type}/{id} not found")
        more = len(rows) > count
        rows = rows[:count]
        if self.access is not None:
            rows = self.access.present(rows)
        path = "/".join(p for p in (type, id) if p) + ("/_history" if type else "_history")
        links = [{"relation": "self", "url": self._url(path, [(k, v) for k, v in items if k != "_cursor"])}]
        if more:
            last = rows[-1]
            cur = fsearch.encode_cursor(Cursor((last.last_updated, last.version), last.pk))
            base_items = [(k, v) for k, v in items if k != "_cursor"]
            links.append({"relation": "next", "url": self._url(path, [*base_items, ("_cursor", cur)])})
        entries = []
        for s in rows:
            e: dict[str, Any] = {"fullUrl": f"{self.base_url}/{s.type}/{s.id}"}
            if s.body is not None:
                e["resource"] = orjson.Fragment(s.body)
            e["request"] = {"method": s.method,
                            "url": f"{s.type}/{s.id}" if s.method != "POST" else s.type}
            e["response"] = {"status": "201" if s.version == 1 else ("204" if s.deleted else "200"),
                             "etag": etag(s.version), "lastModified": instant(s.last_updated)}
            entries.append(e)
        # json.html: an array is never empty
        return FhirResponse.json(200, {"resourceType": "Bundle", "type": "history", "link": links,
                                       **({"entry": entries} if entries else {})})

    def _check_current(self, type: str, id: str) -> None:
        """Versions and history of a resource are visible when its current version is."""
        if self.access is None:
            return
        self.access.require_scope(type, "read")
        cur = self.repo.read(type, id)
        if cur is not None:
            self.access.check_read(cur)

    def _url(self, path: str, items: list[tuple[str, str]]) -> str:
        q = urlencode(items)
        return f"{self.base_url}/{path}" + (f"?{q}" if q else "")

    # ------------------------------------------------------------------ search
    def search(self, type: str, items: list[tuple[str, str]], headers: dict[str, str],
               compartment: tuple[str, str] | None = None) -> FhirResponse:
        check_type(type)
        if self.access is not None:
            self.access.require_scope(type, "search")
        parsed = fsearch.parse(type, items, base_url=self.base_url, strict=prefer_strict(headers))
        q = parsed.query
        path = type
        if compartment is not None:
            ctype, cid = compartment
            check_id(cid)
            if ctype != "Patient":
                raise InvalidRequest("HT-0040", "only the Patient compartment is supported")
            q.compartment_patient = cid
            path = f"Patient/{cid}/{type}"
        if self.access is not None:
            q.scope = self.access.search_scope(type, items, compartment[1] if compartment else None)
        if type == "Patient" and not asks_for_golden(items):
            # Golden person records (hutong.mpi.golden) are the MPI's, not a second copy of
            # a registration: an ordinary Patient search finds the registrations only, so
            # ``identifier=<MRN>`` finds one resource (issue 15, item 1).  They stay
            # reachable by id, _id, _tag=<GOLDEN_SYSTEM>|golden, $match, $ihe-pix, $everything.
            q.clauses.append(fsearch.without_tag(type, GOLDEN_SYSTEM, "golden"))
        bundle = self.search_bundle(q, parsed, path)
        return FhirResponse.json(200, bundle)

    def search_bundle(self, q: Query, parsed: fsearch.ParsedSearch, path: str) -> dict[str, Any]:
        summary_count = parsed.summary == "count"
        if summary_count:
            total = self.repo.count(q)
            return {"resourceType": "Bundle", "type": "searchset", "total": total,
                    "link": [{"relation": "self", "url": self._url(path, parsed.canonical)}]}
        page = self.repo.search(q)
        included = self.repo.include(page.matches, q.includes) if q.includes else []
        matches = page.matches
        if self.access is not None:
            # Matches are already scoped in SQL; included resources pass the same rule here.
            self.access.searched(matches)  # the matches and the persons whose records they are
            matches = self.access.present(matches)
            included = self.access.present(self.access.admit(included))
        links = [{"relation": "self", "url": self._url(path, parsed.canonical)}]
        if page.next_cursor is not None:
            links.append({"relation": "next", "url": self._url(
                path, [*parsed.canonical, ("_cursor", fsearch.encode_cursor(page.next_cursor))])})
        if page.prev_cursor is not None:
            links.append({"relation": "previous", "url": self._url(
                path, [*parsed.canonical, ("_cursor", fsearch.encode_cursor(page.prev_cursor))])})
        entries = [self._entry(s, "match", parsed) for s in matches]
        entries += [self._entry(s, "include", parsed) for s in included]
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
        if page.total is not None:
            bundle["total"] = page.total
        bundle["link"] = links
        if parsed.ignored:
            # search.html#errors: lenient handling says what it ignored (and the self
            # link leaves it out, parsed.canonical).
            entries.append({"resource": info_outcome(
                "ignored unknown search parameters: " + ", ".join(parsed.ignored), "not-supported"),
                "search": {"mode": "outcome"}})
        if entries:  # json.html: an array is never empty; no match, no entry
            bundle["entry"] = entries
        return bundle

    def _entry(self, s: Stored, mode: str, parsed: fsearch.ParsedSearch | None) -> dict[str, Any]:
        assert s.body is not None
        res: Any = orjson.Fragment(s.body)
        if parsed is not None and (parsed.elements or parsed.summary in ("true", "text", "data")):
            res = subset(exactjson.loads(s.body), parsed.elements, parsed.summary)
        return {"fullUrl": f"{self.base_url}/{s.type}/{s.id}", "resource": res, "search": {"mode": mode}}

    # ------------------------------------------------------------------ $everything
    def everything(self, id: str, items: list[tuple[str, str]]) -> FhirResponse:
        """Patient/[id]/$everything (operation-patient-everything.html): the whole
        compartment, paged by ``_count`` with next links; never truncated."""
        check_id(id)
        if self.access is not None:
            self.access.require_scope("Patient", "read")
        patient = self.repo.read("Patient", id)
        if patient is None:
            raise NotFound("HT-0009", f"Patient/{id} not found")
        if patient.deleted:
            raise Gone("HT-0010", f"Patient/{id} was deleted")
        if self.access is not None:
            self.access.check_record(id)
        since = None
        types: tuple[str, ...] | None = None
        count = EVERYTHING_DEFAULT_COUNT
        after = 0
        for k, v in items:
            if k == "_since":
                since = int(fsearch.parse_date_value("_since", v).lo)
            elif k == "_type":
                types = tuple(t.strip() for t in v.split(",") if t.strip())
                for t in types:
                    check_type(t)
            elif k == "_count":
                if not v.isdigit() or int(v) < 1:
                    raise InvalidRequest("HT-0041", "_count must be a positive integer")
                count = min(int(v), fsearch.MAX_COUNT)
            elif k == "_cursor":
                after = fsearch.decode_cursor(v).pk
            elif k in ("_format", "_pretty"):
                continue  # http.html#parameters: for every interaction (the format is checked by the web layer)
            elif k in ("start", "end", "_elements", "_summary"):
                raise InvalidRequest("HT-0041", f"$everything parameter {k} is not supported")
            else:
                raise InvalidRequest("HT-0041", f"unknown $everything parameter {k!r}")
        rows, more = self.repo.everything(self.patient_ids(id), types=types, since=since, after_pk=after,
                                          count=count)
        # The next page starts after the last row read, even when the policy
        # hides every row of this one.
        last_pk = rows[-1].pk if rows else after
        if self.access is not None:
            rows = self.access.present(self.access.admit([s for s in rows if self.access.may("read", s.type)]))
        # Directory entries come along only for the rows the caller was given: a
        # masked psychiatric visit must not bring its hospital and psychiatrist
        # (issue 12, finding 10).
        have = {(s.type, s.id) for s in rows}
        refs: set[tuple[str, str]] = set()
        for s in rows:
            assert s.body is not None
            for holder in reference_holders(orjson.loads(s.body)):
                parts = holder["reference"].split("/")
                if len(parts) == 2 and parts[0] in SHARED_TYPES and (parts[0], parts[1]) not in have:
                    refs.add((parts[0], parts[1]))
        extra = self.repo.fetch(refs) if refs else []
        if self.access is not None:
            extra = self.access.admit(extra)
        base_items = [(k, v) for k, v in items if k != "_cursor"]
        path = f"Patient/{id}/$everything"
        links = [{"relation": "self", "url": self._url(path, items)}]
        if more:
            links.append({"relation": "next", "url": self._url(
                path, [*base_items, ("_cursor", fsearch.encode_cursor(Cursor((), last_pk)))])})
        entries = [self._entry(s, "match", None) for s in rows] + [self._entry(s, "include", None) for s in extra]
        return FhirResponse.json(200, {"resourceType": "Bundle", "type": "searchset", "link": links,
                                       **({"entry": entries} if entries else {})})  # json.html: never []

    def patient_ids(self, id: str) -> list[str]:
        """The source patients whose compartments make up this patient's record:
        a golden person's is every linked source's (hutong.mpi)."""
        return self.mpi.patient_ids(id)
