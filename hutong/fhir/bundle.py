"""transaction and batch Bundles (http.html#transaction, bundle.html#transaction).

A transaction runs in ONE write transaction: every entry succeeds or nothing
is stored.  Entries are processed in the spec's order (DELETE, POST, PUT and
PATCH, GET; a PATCH entry's JSON Patch travels in a Binary), ``urn:uuid`` fullUrls are given server ids before any resource is
written, and conditional references (``Patient?identifier=...``) are resolved
to exactly one resource or the whole transaction fails.  A batch processes
each entry on its own and reports each entry's status.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson

from hutong.errors import HutongError, InvalidRequest, NotFound, operation_outcome
from hutong.fhir import patch as fpatch
from hutong.fhir.registry import params_for
from hutong.fhir.response import FhirResponse, etag
from hutong.fhir.service import FhirService, new_id, parse_if_match, parse_json
from hutong.fhir.urls import criteria, relative_url
from hutong.fhir.validation import check_id, check_type, validate
from hutong.mpi.golden import GOLDEN_SYSTEM
from hutong.store import exactjson
from hutong.store.repository import Stored, Writer
from hutong.store.sql import instant

ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content", 304: "304 Not Modified"}


class _Entry:
    def __init__(self, index: int, raw: dict[str, Any], bases: Sequence[str]) -> None:
        self.index = index
        req = raw.get("request")
        if not isinstance(req, dict) or not isinstance(req.get("method"), str) or not isinstance(req.get("url"), str):
            raise self.error("HT-0033", "entry.request with method and url is required")
        self.method: str = req["method"].upper()
        if self.method not in ORDER:
            raise self.error("HT-0033", f"unsupported request method {self.method!r}")
        url = relative_url(req["url"], bases)
        if url is None:
            raise self.error("HT-0226", f"request.url {req['url'][:100]!r} names another server than this one "
                                        f"({bases[0] if bases else 'relative URLs only'})", at="request.url")
        self.url = url
        parts = urlsplit(self.url)
        self.path = [p for p in parts.path.split("/") if p]
        self.query = parts.query
        operation = next((p for p in self.path if p.startswith("$")), None)
        if operation is not None and not (self.method == "GET" and len(self.path) == 3
                                          and self.path[0] == "Patient" and self.path[2] == "$everything"):
            # Operations have their own endpoints (and their own authorisation and
            # audit); only GET Patient/[id]/$everything is read here.
            raise self.error("HT-0225", f"operation {operation[:40]} is not supported inside a transaction or "
                                        f"batch; call it on its own ({self.method} [base]/{self.url[:80]})",
                             at="request.url")
        self.if_none_exist: str | None = req.get("ifNoneExist")
        if isinstance(self.if_none_exist, str) and self.path:
            try:
                self.if_none_exist = criteria(self.path[0], self.if_none_exist, bases)
            except HutongError as err:
                raise self.error(err.code, err.message, at="request.ifNoneExist") from None
        self.if_match: str | None = req.get("ifMatch")
        self.full_url: str | None = raw.get("fullUrl")
        self.resource: dict[str, Any] | None = raw.get("resource")
        # PATCH: the JSON Patch the entry's Binary carries (http.html#transaction).
        self.patch: tuple[str, bytes] | None = None
        self.patch_ops: fpatch.Operations | None = None
        if self.method == "PATCH":
            try:
                self.patch = fpatch.from_binary(raw.get("resource"))
            except HutongError as err:
                err.message = f"Bundle.entry[{index}].resource: {err.message}"
                err.expression = [f"Bundle.entry[{index}].resource"]
                raise
        self.result: Stored | None = None
        self.status = 200
        self.response: FhirResponse | None = None
        if not self.path:
            raise self.error("HT-0033", f"entry.request.url {req['url'][:100]!r} names no resource type")

    def error(self, code: str, msg: str, at: str = "") -> InvalidRequest:
        where = f"Bundle.entry[{self.index}]"
        return InvalidRequest(code, f"{where}: {msg}", expression=[f"{where}.{at}" if at else where])

    @property
    def type(self) -> str:
        return self.path[0]


def _rewrite(node: Any, mapping: dict[str, str], unresolved: list[str]) -> list[dict[str, Any]]:
    """Replace references to transaction fullUrls with the assigned Type/id:
    Reference.reference, and elements of type uri/url holding a urn:uuid
    fullUrl, e.g. Attachment.url pointing at a Binary (http.html#trules).
    Returns the conditional references (``Type?criteria``) left to resolve.
    One walk of the resource, in reference_holders' order."""
    conditional: list[dict[str, Any]] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            ref = n.get("reference")
            if isinstance(ref, str):
                if ref in mapping:
                    n["reference"] = mapping[ref]
                elif ref.startswith("urn:uuid:") or ref.startswith("urn:oid:"):
                    unresolved.append(ref)
                elif "?" in ref and not ref.startswith("#"):
                    conditional.append(n)
            for k, v in n.items():
                if isinstance(v, str):
                    if k != "reference" and v.startswith("urn:uuid:") and v in mapping:
                        n[k] = mapping[v]
                elif isinstance(v, dict | list):
                    stack.append(v)
        elif isinstance(n, list):
            for i, v in enumerate(n):
                if isinstance(v, str):
                    if v.startswith("urn:uuid:") and v in mapping:
                        n[i] = mapping[v]
                elif isinstance(v, dict | list):
                    stack.append(v)
    return conditional


def _identifier_criteria(type: str, query: str) -> tuple[list[tuple[str, str]], str, str] | None:
    """``identifier=system|value`` and nothing else (what HL7 and CDA mapping
    send): (parsed items, system, value); None for any other criteria, which
    go through the search path.  No escapes, commas or modifiers, so the
    search would read it as exactly one token match on system and code."""
    items = parse_qsl(query, keep_blank_values=True)
    if len(items) != 1 or items[0][0] != "identifier":
        return None
    raw = items[0][1]
    if "\\" in raw or "," in raw or raw.count("|") != 1:
        return None
    system, _, value = raw.partition("|")
    sp = params_for(type).get("identifier")
    if not system or not value or sp is None or sp.type != "token":
        return None
    return items, system, value


class BundleProcessor:
    def __init__(self, service: FhirService) -> None:
        self.service = service
        self.base_url = service.base_url
        # The bases an absolute request.url may start with: the server's, and the
        # one the client reached it by (its Host header, set in process()).
        self.bases = [self.base_url] if self.base_url else []

    def process(self, body: bytes, headers: dict[str, str]) -> FhirResponse:
        host = headers.get("host")
        if host and self.base_url:
            b = urlsplit(self.base_url)
            self.bases = [self.base_url, f"{b.scheme}://{host}{b.path}"]
        bundle = parse_json(body, exact=True)
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise InvalidRequest("HT-0030", "POST to the base URL needs a Bundle of type transaction or batch")
        btype = bundle.get("type")
        entries = bundle.get("entry") or []
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise InvalidRequest("HT-0033", "Bundle.entry must be a list of objects", expression=["Bundle.entry"])
        if btype == "transaction":
            return self.transaction(entries, headers)
        if btype == "batch":
            return self.batch(entries, headers)
        raise InvalidRequest("HT-0030", f"Bundle.type must be transaction or batch, not {btype!r}",
                             expression=["Bundle.type"])

    # ------------------------------------------------------------------ transaction
    def _prepare(self, entries: list[dict[str, Any]]) -> list[_Entry]:
        out = []
        seen_full: set[str] = set()
        for i, raw in enumerate(entries):
            e = _Entry(i, raw, self.bases)
            check_type(e.type)
            if e.full_url:
                if e.full_url in seen_full:
                    raise e.error("HT-0034", f"duplicate fullUrl {e.full_url[:100]!r}")
                seen_full.add(e.full_url)
            if e.method == "PATCH":
                if len(e.path) != 2 or e.query:
                    raise e.error("HT-0033", "PATCH needs Type/id", at="request.url")
                check_id(e.path[1])
                assert e.patch is not None
                try:
                    e.patch_ops = fpatch.operations(parse_json(e.patch[1], exact=True))
                except HutongError as err:
                    err.message = f"Bundle.entry[{i}].resource: {err.message}"
                    err.expression = [f"Bundle.entry[{i}].resource"]
                    raise
            if e.method in ("POST", "PUT"):
                if not isinstance(e.resource, dict):
                    raise e.error("HT-0033", f"{e.method} entry without a resource")
                try:
                    validate(e.resource, e.type)
                except HutongError as err:
                    err.message = f"Bundle.entry[{i}].resource: {err.message}"
                    err.expression = [f"Bundle.entry[{i}].resource" + x[len(e.type):] for x in err.expression] or [
                        f"Bundle.entry[{i}]"]
                    raise
                if e.method == "PUT" and len(e.path) >= 2:
                    check_id(e.path[1])
                    rid = e.resource.get("id")
                    if rid is not None and rid != e.path[1]:
                        raise e.error("HT-0007", f"resource id {rid!r} does not match {e.url!r}")
            out.append(e)
        return out

    def transaction(self, raw_entries: list[dict[str, Any]], headers: dict[str, str]) -> FhirResponse:
        entries = self._prepare(raw_entries)
        svc = self.service

        def run() -> None:
            svc.repo.transact(lambda w: self._run_transaction(w, entries))

        svc._retry(run)
        ret = headers.get("prefer", "")
        out = []
        for e in entries:
            out.append(self._response_entry(e, minimal="return=minimal" in ret))
        return FhirResponse.json(200, {"resourceType": "Bundle", "type": "transaction-response", "entry": out})

    def prepare(self, raw_entries: list[dict[str, Any]]) -> list[_Entry]:
        """Validate transaction entries (outside any write lock)."""
        return self._prepare(raw_entries)

    def run_in(self, w: Writer, entries: list[_Entry]) -> list[tuple[str, str, int]]:
        """Execute prepared transaction entries inside an open write transaction
        (ingestion stores a message row in the same one); returns
        (type, id, status) per entry."""
        self._run_transaction(w, entries)
        return [(e.result.type, e.result.id, e.status) for e in entries if e.result is not None]

    def _by_identifier(self, w: Writer, entries: list[_Entry]) -> dict[int, list[Stored]]:
        """The matches of every ``identifier=system|value`` condition of the
        transaction (ifNoneExist, conditional PUT), one query per type and
        system instead of one search per entry; the same result as
        FhirService._conditional (same locks, in entry order; current
        resources of the type holding that identifier; Patients without the
        MPI's golden records), ordered by pk; the statement is the store's
        (Writer.current_by_identifier, hutong.store.identifiers)."""
        groups: dict[tuple[str, str], dict[str, list[int]]] = {}
        for e in entries:
            crit = e.if_none_exist if e.method == "POST" else (e.query if e.method == "PUT" and len(e.path) < 2
                                                                   else None)
            if not crit:
                continue
            parsed = _identifier_criteria(e.type, crit)
            if parsed is None:
                continue
            items, system, value = parsed
            w.lock_key(e.type + "?" + urlencode(sorted(items)))
            groups.setdefault((e.type, system), {}).setdefault(value, []).append(e.index)
        out: dict[int, list[Stored]] = {}
        for (rtype, system), by_value in groups.items():
            # Patients without the MPI's golden records (as the search path does).
            by_id = w.current_by_identifier(rtype, system, list(by_value),
                                            without_tag=(GOLDEN_SYSTEM, "golden") if rtype == "Patient" else None)
            for v, matches in by_id.items():
                access = self.service.access_in(w)
                if access is not None:
                    matches = access.write_visible(w, matches)
                for i in by_value[v]:
                    out[i] = matches
        return out

    def _run_transaction(self, w: Writer, entries: list[_Entry]) -> None:
        svc = self.service
        mapping: dict[str, str] = {}
        new_ids: dict[int, str] = {}
        known = self._by_identifier(w, entries)
        put_creates: list[_Entry] = []
        # Types whose hooks must see each write before the next (the MPI); hooks
        # marked batchable (policy, labelling) are as right inside insert_many.
        hooked = {t for h in svc.repo.hooks if not getattr(h, "batchable", False) for t in h.types}
        # 1. identities first, so every reference can be rewritten before any write
        for e in entries:
            try:
                if e.method == "POST":
                    assert e.resource is not None
                    if e.if_none_exist:
                        found = known[e.index] if e.index in known else svc._conditional(w, e.type, e.if_none_exist)
                        if len(found) > 1:
                            raise e.error("HT-0013", f"ifNoneExist matched {len(found)} resources")
                        if found:
                            e.result, e.status = found[0], 200
                            if e.full_url:
                                mapping[e.full_url] = f"{e.type}/{found[0].id}"
                            continue
                    new_ids[e.index] = new_id()
                    if e.full_url:
                        mapping[e.full_url] = f"{e.type}/{new_ids[e.index]}"
                elif e.method == "PUT":
                    if len(e.path) >= 2:
                        if e.full_url:
                            mapping[e.full_url] = f"{e.type}/{e.path[1]}"
                    elif e.query:
                        found = known[e.index] if e.index in known else svc._conditional(w, e.type, e.query)
                        if len(found) > 1:
                            raise e.error("HT-0013", f"conditional update matched {len(found)} resources")
                        assert e.resource is not None
                        rid = found[0].id if found else (e.resource.get("id") or new_id())
                        e.path = [e.type, rid]
                        if not found and rid not in (e.resource.get("id"), None) and e.if_match is None \
                                and e.type not in hooked:
                            # A create under an id nobody else knows yet: written
                            # with the other such creates in one batch (step 3).
                            put_creates.append(e)
                        if e.full_url:
                            mapping[e.full_url] = f"{e.type}/{rid}"
                    else:
                        raise e.error("HT-0033", "PUT needs Type/id or Type?criteria")
                elif e.method == "PATCH" and e.full_url:
                    mapping[e.full_url] = f"{e.type}/{e.path[1]}"
            except HutongError as err:
                if not err.message.startswith("Bundle.entry"):
                    err.message = f"Bundle.entry[{e.index}]: {err.message}"
                    err.expression = [f"Bundle.entry[{e.index}]"]
                raise
        # 2. rewrite references (http.html#trules)
        for e in entries:
            if e.resource is None or e.method not in ("POST", "PUT"):
                continue
            unresolved: list[str] = []
            conditional = _rewrite(e.resource, mapping, unresolved)
            if unresolved:
                raise e.error("HT-0032", f"reference {unresolved[0]!r} is not the fullUrl of any entry")
            for ref in conditional:
                rtype, _, rq = ref["reference"].partition("?")
                check_type(rtype)
                found = svc._conditional(w, rtype, rq)
                if len(found) != 1:
                    raise e.error("HT-0032", f"conditional reference {ref['reference'][:100]!r} matched "
                                             f"{len(found)} resources (exactly one is required)")
                ref["reference"] = f"{rtype}/{found[0].id}"
        access = svc.access_in(w)
        if access is not None:
            # The policy checks each write against the patient it belongs to; the
            # spec's order may write an Encounter before its Patient (both PUT),
            # so tell it now which patients this transaction brings.
            access.expect_patients(w, [
                (pid, e.resource) for e in entries if e.type == "Patient" and e.resource is not None
                for pid in [new_ids.get(e.index) if e.method == "POST" else
                            e.path[1] if e.method == "PUT" and len(e.path) > 1 else None] if pid])
        # 3. execute in the spec's order; the plain creates go in one batch
        # (one statement per table instead of one per entry and table), and so
        # do conditional updates that matched nothing (creates with new ids: no
        # current version to read or lock, as FhirService.update_in would).
        creates = [e for e in entries if e.method == "POST" and e.result is None]
        done_creates = False
        for e in sorted(entries, key=lambda x: (ORDER[x.method], x.index)):
            if e.method == "POST" and not done_creates and creates:
                assert all(c.resource is not None for c in creates)
                stored = w.insert_many([(c.type, new_ids[c.index], c.resource) for c in creates  # type: ignore[misc]
                                        ], method="POST")
                for c, st in zip(creates, stored, strict=True):
                    c.result, c.status = st, 201
                done_creates = True
            if e.method == "PUT" and put_creates:
                stored = w.insert_many([(c.type, c.path[1], c.resource) for c in put_creates  # type: ignore[misc]
                                        ], method="PUT")
                for c, st in zip(put_creates, stored, strict=True):
                    c.result, c.status = st, 201
                put_creates = []
            if e.result is not None and e.method == "PUT":
                continue
            try:
                self._execute(w, e, new_ids)
            except HutongError as err:
                if not err.message.startswith("Bundle.entry"):
                    err.message = f"Bundle.entry[{e.index}]: {err.message}"
                    err.expression = [f"Bundle.entry[{e.index}]"]
                raise

    def _execute(self, w: Writer, e: _Entry, new_ids: dict[int, str]) -> None:
        svc = self.service
        if e.method == "DELETE":
            if len(e.path) >= 2:
                check_id(e.path[1])
                svc.delete_in(w, e.type, e.path[1], parse_if_match(e.if_match))
            elif e.query:
                svc.conditional_delete_in(w, e.type, e.query)
            else:
                raise e.error("HT-0033", "DELETE needs Type/id or Type?criteria")
            e.status = 204
        elif e.method == "POST":
            if e.result is not None:  # ifNoneExist matched
                return
            assert e.resource is not None
            e.result = w.insert(e.type, new_ids[e.index], e.resource, method="POST")
            e.status = 201
        elif e.method == "PATCH":
            assert e.patch_ops is not None
            e.result, e.status = svc.patch_in(w, e.type, e.path[1], e.patch_ops, parse_if_match(e.if_match))
        elif e.method == "PUT":
            assert e.resource is not None
            e.resource["id"] = e.path[1]
            e.result, e.status = svc.update_in(w, e.type, e.path[1], e.resource, parse_if_match(e.if_match))
        else:
            e.response = self._read(e, FhirService(svc.repo.view(w), svc.base_url, svc.access_in(w)))

    def _read(self, e: _Entry, svc: FhirService | None = None) -> FhirResponse:
        svc = svc or self.service
        p = e.path
        items = parse_qsl(e.query, keep_blank_values=True)
        if len(p) == 1:
            return svc.search(p[0], items, {})
        if len(p) == 2 and p[1] == "_history":
            return svc.history(p[0], None, items)
        if len(p) == 2:
            return svc.read(p[0], p[1])
        if len(p) == 3 and p[2] == "$everything" and p[0] == "Patient":
            return svc.everything(p[1], items)
        if len(p) == 3 and p[2] == "_history":
            return svc.history(p[0], p[1], items)
        if len(p) == 4 and p[2] == "_history":
            return svc.vread(p[0], p[1], p[3])
        raise NotFound("HT-0033", f"cannot GET {e.url[:100]!r} in a bundle")

    def _response_entry(self, e: _Entry, minimal: bool = False) -> dict[str, Any]:
        if e.response is not None:
            r = e.response
            out: dict[str, Any] = {"response": {"status": STATUS_TEXT.get(r.status, str(r.status))}}
            if r.body is not None:
                out["resource"] = orjson.Fragment(r.body)
            if "ETag" in r.headers:
                out["response"]["etag"] = r.headers["ETag"]
            return out
        if e.result is None:
            return {"response": {"status": STATUS_TEXT.get(e.status, str(e.status))}}
        s = e.result
        out = {"fullUrl": f"{self.base_url}/{s.type}/{s.id}",
               "response": {"status": STATUS_TEXT.get(e.status, str(e.status)),
                            "location": f"{s.type}/{s.id}/_history/{s.version}",
                            "etag": etag(s.version), "lastModified": instant(s.last_updated)}}
        if not minimal and s.body is not None:
            out["resource"] = orjson.Fragment(s.body)
        return out

    # ------------------------------------------------------------------ batch
    def batch(self, raw_entries: list[dict[str, Any]], headers: dict[str, str]) -> FhirResponse:
        out = []
        for i, raw in enumerate(raw_entries):
            try:
                e = _Entry(i, raw, self.bases)
                out.append(self._batch_entry(e))
            except HutongError as err:
                out.append({"response": {"status": str(err.status), "outcome": operation_outcome(err)}})
        return FhirResponse.json(200, {"resourceType": "Bundle", "type": "batch-response", "entry": out})

    def _batch_entry(self, e: _Entry) -> dict[str, Any]:
        svc = self.service
        body = exactjson.dumps(e.resource) if e.resource is not None else b""
        hdrs: dict[str, str] = {}
        if e.if_none_exist:
            hdrs["if-none-exist"] = e.if_none_exist
        if e.if_match:
            hdrs["if-match"] = e.if_match
        if e.method == "POST":
            r = svc.create(e.type, body, hdrs)
        elif e.method == "PUT":
            if len(e.path) >= 2:
                r = svc.update(e.type, e.path[1], body, hdrs)
            elif e.query:
                r = svc.conditional_update(e.type, e.query, body, hdrs)
            else:
                raise e.error("HT-0033", "PUT needs Type/id or Type?criteria")
        elif e.method == "PATCH":
            if len(e.path) != 2 or e.query or e.patch is None:
                raise e.error("HT-0033", "PATCH needs Type/id", at="request.url")
            r = svc.patch(e.type, e.path[1], e.patch[1], hdrs | {"content-type": e.patch[0]})
        elif e.method == "DELETE":
            if len(e.path) >= 2:
                r = svc.delete(e.type, e.path[1], hdrs)
            elif e.query:
                r = svc.conditional_delete(e.type, e.query)
            else:
                raise e.error("HT-0033", "DELETE needs Type/id or Type?criteria")
        else:
            r = self._read(e)
        entry: dict[str, Any] = {"response": {"status": STATUS_TEXT.get(r.status, str(r.status))}}
        if "Location" in r.headers:
            entry["response"]["location"] = r.headers["Location"].removeprefix(self.base_url + "/")
        if "ETag" in r.headers:
            entry["response"]["etag"] = r.headers["ETag"]
        if r.body is not None:
            entry["resource"] = orjson.Fragment(r.body)
        return entry


