"""From a received message to stored FHIR resources and an acknowledgement.

One path for every channel (HL7 v2 over MLLP, CDA over HTTP or from a
folder): identify the sender -> parse -> map to a FHIR transaction Bundle ->
validate -> one store transaction holding the raw message row, the resources
(each Patient linked to its person by the MPI hook, inside the same
transaction) and the timeliness roll-up -> only then the acknowledgement.
Anything that cannot be mapped is kept raw as a dead letter with the reason.

Framing (hutong.ingest.hl7v2.framing), parsing (message) and mapping
(mapping) are separate modules; this one only orchestrates.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from hutong.errors import Conflict, Forbidden, HutongError, operation_outcome
from hutong.fhir import search as fsearch
from hutong.fhir.bundle import BundleProcessor
from hutong.fhir.response import FhirResponse
from hutong.fhir.service import FhirService, mpi_of
from hutong.ingest import inbox
from hutong.ingest.cda import mapping as cdamap
from hutong.ingest.cda import parse as cdaparse
from hutong.ingest.hl7v2 import ack as hl7ack
from hutong.ingest.hl7v2 import mapping as hl7map
from hutong.ingest.hl7v2 import message as hl7msg
from hutong.ingest.hl7v2.connection import Connection
from hutong.mpi.golden import GOLDEN_SYSTEM
from hutong.mpi.service import managing_org
from hutong.security import accounts
from hutong.security.events import FAILED, REFUSED, SUCCESS, AuditRecord
from hutong.security.guard import acting
from hutong.security.guard import current as current_access
from hutong.security.policy import Access
from hutong.security.principal import Role
from hutong.store.sql import SqlWriter
from hutong.systems import ORGANIZATION

SENDER_TTL_S = 60.0
# Dead letters of messages refused for who sent them start with this: never retried.
NOT_AUTHORISED = "sender not authorised"
log = logging.getLogger("hutong.ingest")


def _salvage_msh(raw: bytes) -> tuple[list[str], str]:
    """MSH-4 components and MSH-10 of a message that did not parse (wrong
    charset, broken segments), read from the ASCII-compatible MSH bytes, so
    its dead letter can still be found by sender and control id."""
    line = raw.split(b"\r", 1)[0].split(b"\n", 1)[0]
    if not line.startswith(b"MSH") or len(line) < 8:
        return [], ""
    fields = line.split(line[3:4])
    def text(i: int) -> str:
        return fields[i].decode("ascii", "replace")[:200] if len(fields) > i else ""
    comp = line[4:5].decode("ascii", "replace") or "^"
    return [c for c in text(3).split(comp) if c], text(9)


@dataclass(frozen=True, slots=True)
class Institution:
    code: str             # registered identifier value (统一社会信用代码)
    organization_id: str  # Organization resource id


# Who an MLLP sender is: the network entry point (hutong.security.senders, wired
# by hutong.web.serve_cmd) turns a registered institution and the connection it
# came on into that institution's Access, or refuses.
Authorise = Callable[[Institution, Connection], Access]


class Ingestor:
    """``authorise`` and ``audit`` come from the network entry point: every
    message is then written under its institution's policy (it may only write
    its own patients' records) and leaves one audit record.  Without them the
    caller is trusted local code (tests of the mapping, the CLI retry)."""

    def __init__(self, svc: FhirService, clock: Callable[[], int] | None = None, *,
                 authorise: Authorise | None = None, audit: Callable[[AuditRecord], Any] | None = None) -> None:
        self.authorise = authorise
        self.audit = audit
        self.svc = svc
        self.repo = svc.repo
        self.bundles = BundleProcessor(svc)
        self.clock = clock or svc.repo.clock
        inbox.create_tables(self.repo.db)
        accounts.create_tables(self.repo.db)  # the merge rule asks who signs in as a person
        self._senders: dict[str, tuple[Institution | None, float]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ senders
    def institution(self, code: str) -> Institution | None:
        """The registered institution with this identifier (cached briefly)."""
        now = time.monotonic()
        with self._lock:
            hit = self._senders.get(code)
        if hit is not None and now - hit[1] < SENDER_TTL_S:
            return hit[0]
        found = None
        if code and len(code) <= 64:
            parsed = fsearch.parse("Organization", [("identifier", f"{ORGANIZATION}|{code}"), ("_count", "2")],
                                   base_url="", strict=True)
            matches = self.repo.search(parsed.query).matches
            if len(matches) == 1:
                found = Institution(code, matches[0].id)
        with self._lock:
            self._senders[code] = (found, now)
        return found

    def sender_of(self, components: list[str]) -> Institution | None:
        for c in components:
            inst = self.institution(c.strip())
            if inst is not None:
                return inst
        return None

    def _claims_only(self, components: list[str], code: str) -> bool:
        """MSH-4 (HD: namespace^universal id^type) names ``code`` and no other
        registered institution."""
        claimed = [c.strip() for c in components if c.strip()]
        return code in claimed and all(c == code or self.institution(c) is None for c in claimed)

    # ------------------------------------------------------------ HL7 v2
    def hl7(self, raw: bytes, peer: str | None = None, *, retry_of: inbox.Row | None = None,
            conn: Connection | None = None) -> bytes:
        """Handle one HL7 v2 message; returns the ACK payload (unframed).
        Never raises for bad input: every problem becomes an AE/AR ACK and a dead letter.

        ``conn`` is who the listener authenticated the connection as: its
        institution, when known, is the sender, and MSH-4 must name it."""
        received = retry_of.received if retry_of else self.clock()
        conn = conn if conn is not None else Connection(peer)

        def refuse(err: hl7msg.Hl7Error, msg: hl7msg.Hl7Message | None, sender: str, control_id: str, kind: str,
                   reason: str, event: int | None = None) -> bytes:
            nak = hl7ack.build_ack(msg, raw, err.ack, err)
            self._dead("hl7v2", sender, control_id, kind, received, event, reason, err.ack, peer, raw, nak,
                       retry_of)
            return nak

        try:
            msg = hl7msg.parse(raw)
        except hl7msg.Hl7Error as e:
            facility, control = _salvage_msh(raw)
            inst = self.sender_of(facility)
            sender = conn.institution or (inst.code if inst else "")
            return refuse(e, None, sender, control, "unparsed", f"{e.code} {e.text}")
        kind = f"{msg.message_type}^{msg.trigger}"
        if conn.institution is not None:
            # The connection says who sends (TLS client certificate or an address
            # the operator mapped); MSH-4 is the message's claim and must agree
            # (issue 12, finding 5).  Refused with AR (HL7 v2.5.1 ch. 2.9.2.1:
            # the sender is not accepted) and audited with what it claimed.
            if not self._claims_only(msg.sending_facility, conn.institution):
                claimed = "^".join(c.strip() for c in msg.sending_facility)[:120]
                mismatch = Forbidden("HT-0190", f"MSH-4 ({claimed}) does not name {conn.institution}, the "
                                                f"institution this connection authenticated as ({conn.method})")
                self._audit("hl7", None, REFUSED, mismatch.code, peer, kind, claimed=claimed, conn=conn)
                denied = hl7msg.Hl7Error("207", f"{NOT_AUTHORISED} ({mismatch.code}): {mismatch.message}",
                                         segment="MSH", field=4, ack="AR")
                return refuse(denied, msg, conn.institution, msg.control_id, kind, denied.text)
            inst = self.institution(conn.institution)
        else:
            inst = self.sender_of(msg.sending_facility)
        if inst is None:
            unknown = hl7msg.Hl7Error("204", "unknown sending facility (MSH-4): no registered institution has "
                                             "this identifier", segment="MSH", field=4, ack="AR")
            return refuse(unknown, msg, "", msg.control_id, kind, unknown.text)
        access = None
        if self.authorise is not None and retry_of is None:
            try:
                access = self.authorise(inst, conn)
            except HutongError as e:
                denied = hl7msg.Hl7Error("207", f"{NOT_AUTHORISED} ({e.code}): {e.message}", segment="MSH",
                                         field=4, ack="AR")
                self._audit("hl7", None, REFUSED, e.code, peer, kind, claimed=inst.code, conn=conn)
                return refuse(denied, msg, inst.code, msg.control_id, kind, denied.text)
        if retry_of is None:
            done = inbox.find(self.repo, None, "hl7v2", inst.code, msg.control_id)
            if done is not None and done.ack is not None:
                return done.ack  # a resend: acknowledged again, nothing else changes
        try:
            mapped = hl7map.to_bundle(msg, hl7map.Sender(inst.code, inst.organization_id))
            entries = self.bundles.prepare(mapped.bundle.get("entry") or [])
        except hl7msg.Hl7Error as e:
            return refuse(e, msg, inst.code, msg.control_id, kind, f"{e.code} {e.text}")
        except HutongError as e:
            err = hl7msg.Hl7Error("207", f"mapped resource rejected: {e.code} {e.message}", ack="AE")
            return refuse(err, msg, inst.code, msg.control_id, kind, err.text)
        ok = hl7ack.build_ack(msg, raw, "AA")
        event = inbox.to_ms(mapped.event_time)
        queued: list[str] = []

        def run(w: SqlWriter) -> bytes:
            # Two connections delivering the same message at once: one waits.
            w.lock_key(f"ingest:hl7v2:{inst.code}:{msg.control_id}")
            again = inbox.find(self.repo, w, "hl7v2", inst.code, msg.control_id)
            if again is not None and again.ack is not None:
                return again.ack
            self.bundles.run_in(w, entries)
            ack, note = ok, None
            if mapped.merge is not None:
                note = self._merge(w, inst, mapped.merge, kind, msg.control_id)
            if note is not None:
                # Accepted, the merge waiting for a steward: AA with an ERR of
                # severity W (HL7 v2.5.1 ch. 2.15.5.4, table 0516), so the sender
                # neither resends nor believes the persons were merged.
                queued[:] = [note]
                ack = hl7ack.build_ack(msg, raw, "AA", hl7msg.Hl7Error("0", note, segment="MRG", field=1, ack="AA"),
                                       severity="W")
            self._stored(w, "hl7v2", inst, msg.control_id, kind, received, event, peer, raw, ack, retry_of, note)
            return ack

        try:
            if access is None:
                result: bytes = self.svc._retry(lambda: self.repo.transact(run))
                return result
            with acting(access):
                result = self.svc._retry(lambda: self.repo.transact(run))
            self._audit("hl7", access, SUCCESS, None, peer, kind, conn=conn, note=queued[0] if queued else None)
            return result
        except HutongError as e:
            err = hl7msg.Hl7Error("207", f"{e.code} {e.message}", ack="AE")
            if access is not None:
                self._audit("hl7", access, REFUSED if e.status == 403 else FAILED, e.code, peer, kind, conn=conn)
            return refuse(err, msg, inst.code, msg.control_id, kind, err.text, event)
        except Exception as e:
            # A database failure (connection lost, disk full): the sender gets AE and
            # will resend; nothing was acknowledged.  The type only is logged (the
            # message may carry resident data).
            log.error("HL7 message %s not stored: %s", msg.control_id[:40], type(e).__name__)
            err = hl7msg.Hl7Error("207", "application internal error: message not stored, resend later", ack="AE")
            try:
                return refuse(err, msg, inst.code, msg.control_id, kind, err.text, event)
            except Exception as e2:
                log.error("dead letter not stored either: %s", type(e2).__name__)
                return hl7ack.build_ack(msg, raw, "AE", err)

    def _audit(self, action: str, access: Access | None, outcome: str, code: str | None, peer: str | None,
               kind: str, *, claimed: str | None = None, conn: Connection | None = None,
               note: str | None = None) -> None:
        """``claimed``: the sender MSH-4 named, on a refusal; ``conn``: how the
        connection was authenticated (method, certificate or mapped network)."""
        if self.audit is None:
            return
        if access is not None:
            access.settle()
        extra: dict[str, str] = {}
        if conn is not None:
            extra["sender_auth"] = conn.method
            if conn.institution is not None:
                extra["authenticated_as"] = conn.institution
            if conn.credential is not None:
                extra["credential"] = conn.credential[:300]
        if note is not None:
            extra["note"] = note[:300]
        self.audit(AuditRecord(
            action=action, outcome=outcome, principal=access.principal if access else None, claimed=claimed,
            persons=tuple(sorted(access.persons)) if access else (),
            entities=tuple(access.entities[:200]) if access else (), interaction=f"{action} {kind}",
            purpose="own-institution" if access else None, code=code, peer=peer, extra=extra))

    def frame_error(self, raw: bytes, reason: str, peer: str | None) -> bytes:
        """A framing problem (bytes outside a frame, truncated or oversize frame):
        NAK (AR) with the reason, the bytes kept as a dead letter."""
        e = hl7msg.Hl7Error("100", f"MLLP framing: {reason}", ack="AR")
        nak = hl7ack.build_ack(None, raw, "AR", e)
        self._dead("hl7v2", "", "", "frame", self.clock(), None, e.text, "AR", peer, raw, nak, None)
        return nak

    def _merge(self, w: SqlWriter, inst: Institution, merge: tuple[dict[str, str], dict[str, str]], kind: str,
               control_id: str) -> str | None:
        """ADT^A40 (HL7 v2.5.1 ch. 3.3.40): the sender says its prior patient
        record (MRG-1) is the surviving one (PID-3).  Both must be registrations
        the sender manages (issue 12: a merge across institutions is never one
        sender's to make).  The prior source becomes inactive with
        ``replaced-by`` (the sender's own record), and the two persons become
        one -- at once when only the sender's registrations move and nobody
        signs in as the retired person, otherwise as a review item for an MPI
        steward (hutong.mpi.service.Mpi.merge_registrations_in).  Returns the
        note for the ACK when the merge waits for review."""
        prior_ident, survivor_ident = merge

        def one(ident: dict[str, str], what: str) -> str | None:
            parsed = fsearch.parse("Patient", [("identifier", f"{ident['system']}|{ident['value']}"),
                                               ("_tag:not", f"{GOLDEN_SYSTEM}|golden")], base_url="", strict=True)
            found = w.search_ids(parsed.query, 50)
            own = [m.id for m in found
                   if m.body is not None and managing_org(orjson.loads(m.body)) == inst.organization_id]
            if found and not own:
                raise Forbidden("HT-0194", f"ADT^A40: the {what} names a registration another institution "
                                           "manages; only your own registrations can be merged")
            return own[0] if len(own) == 1 else None

        prior, survivor = one(prior_ident, "prior patient (MRG-1)"), one(survivor_ident, "surviving patient (PID-3)")
        if prior is None or survivor is None or prior == survivor:
            if prior is None:
                # Nothing to merge: the prior record never reached the platform.
                return None
            if survivor is None:
                raise HutongError("HT-0057", "ADT^A40: the surviving patient (PID-3) is not known", status=422,
                                  issue_code="not-found")
            return None
        cur = w.read_current("Patient", prior, lock=True)
        if cur is not None and cur.body is not None:
            body: dict[str, Any] = orjson.loads(cur.body)
            body.pop("meta", None)
            body["active"] = False
            links = [ln for ln in body.get("link") or () if ln.get("type") != "replaced-by"]
            links.append({"other": {"reference": f"Patient/{survivor}"}, "type": "replaced-by"})
            body["link"] = links
            w.replace(cur, body)
        outcome = mpi_of(self.repo).merge_registrations_in(
            w, prior, survivor, institution=inst.organization_id,
            protected=lambda person: accounts.person_has_account(w, person), actor=f"hl7v2:{inst.code}",
            reason=f"{kind} {control_id}: prior record merged by the sender")
        if outcome.status != "queued":
            return None
        return ("HT-0195 the persons were not merged: the prior patient's person has other institutions' "
                "registrations or a resident account; the merge waits for review by an MPI steward")

    def _stored(self, w: SqlWriter, channel: str, inst: Institution, control_id: str, kind: str, received: int,
                event: int | None, peer: str | None, raw: bytes, ack: bytes | None,
                retry_of: inbox.Row | None, note: str | None = None) -> None:
        """The inbox row of a message whose resources this transaction wrote
        (and, for a retry, the dead letter it replaces); ``note``: what its AA warned of."""
        inbox.record(w, channel=channel, sender=inst.code, control_id=control_id, kind=kind, received=received,
                     event_time=event, status="ok", ack_code="AA", reason=note, peer=peer, raw=raw, ack=ack,
                     attempts=(retry_of.attempts + 1) if retry_of else 1)
        if retry_of is not None:
            inbox.mark(w, retry_of.id, "retried")

    # ------------------------------------------------------------ dead letters
    def _dead(self, channel: str, sender: str, control_id: str, kind: str, received: int, event: int | None,
              reason: str, ack_code: str, peer: str | None, raw: bytes, ack: bytes | None,
              retry_of: inbox.Row | None) -> None:
        def run(w: SqlWriter) -> None:
            if retry_of is not None:
                w.execute("UPDATE ingest_message SET attempts = attempts + 1, reason = ?, ack_code = ?, ack = ? "
                          "WHERE id = ?", (reason[:1000], ack_code, ack, retry_of.id))
                return
            inbox.record(w, channel=channel, sender=sender, control_id=control_id, kind=kind, received=received,
                         event_time=event, status="dead", ack_code=ack_code, reason=reason, peer=peer, raw=raw,
                         ack=ack)
        self.repo.transact(run)

    def retry(self, message_id: int) -> inbox.Row:
        """Re-process a dead letter (after the cause was fixed); returns its row as it is now."""
        row = inbox.get(self.repo, message_id)
        if row is None:
            raise HutongError("HT-0056", f"no inbox message {message_id}", status=404, issue_code="not-found")
        if row.status != "dead":
            raise HutongError("HT-0058", f"inbox message {message_id} is {row.status}, not a dead letter",
                              status=409, issue_code="conflict")
        if (row.reason or "").startswith(NOT_AUTHORISED):
            # A retry runs without the connection it came on: a message refused for
            # who sent it (spoofed MSH-4, unauthenticated) must never get in this way.
            raise Conflict("HT-0197", f"inbox message {message_id} was refused for its sender's authentication; "
                                      "the sender must send it again over its authenticated connection")
        with self._lock:
            self._senders.clear()  # the fix may have been registering the institution
        if row.channel == "hl7v2":
            self.hl7(row.raw, None, retry_of=row)
        else:
            self.cda(row.raw, None, retry_of=row)
        after = inbox.get(self.repo, message_id)
        assert after is not None
        return after

    # ------------------------------------------------------------ CDA
    def cda(self, xml: bytes, peer: str | None, *, retry_of: inbox.Row | None = None) -> dict[str, Any]:
        """Store one WS/T 500 document.  Returns {"status": "ok", "documentReference",
        "type", "resources"} or {"status": "dead", "reason", "code"}; never raises for bad input."""
        received = retry_of.received if retry_of else self.clock()

        def dead(code: str, reason: str, sender: str = "", doc_id: str = "", kind: str = "cda") -> dict[str, Any]:
            self._dead("cda", sender, doc_id, kind, received, None, f"{code}: {reason}", "AE", peer, xml, None,
                       retry_of)
            return {"status": "dead", "code": code, "reason": reason}

        try:
            header = cdaparse.read_header(cdaparse.parse_xml(xml))
        except cdaparse.CdaError as e:
            return dead(e.code, "; ".join(e.problems))
        inst = self.institution(header.custodian_id)
        if inst is None:
            return dead("cda-sender", f"the custodian {header.custodian_id[:64]!r} is not a registered institution")
        acting_now = current_access()
        if acting_now is not None and acting_now.principal.role is Role.INSTITUTION \
                and acting_now.principal.organization != inst.code:
            # Checked before anything is stored: a system sends its own institution's documents.
            raise Forbidden("HT-0102", "the document's custodian is not your institution")
        try:
            mapped = cdamap.to_bundle(xml, cdamap.Sender(inst.code, inst.organization_id))
            entries = self.bundles.prepare(mapped.bundle.get("entry") or [])
        except cdaparse.CdaError as e:
            return dead(e.code, "; ".join(e.problems), inst.code)
        except HutongError as e:
            return dead(e.code, f"mapped resource rejected: {e.message}", inst.code)
        kind = mapped.doc_type.code
        event = inbox.to_ms(mapped.event_time)

        def run(w: SqlWriter) -> list[tuple[str, str, int]]:
            w.lock_key(f"ingest:cda:{inst.code}:{mapped.document_id}")
            done = self.bundles.run_in(w, entries)
            self._stored(w, "cda", inst, mapped.document_id, kind, received, event, peer, xml, None, retry_of)
            return done

        try:
            done = self.svc._retry(lambda: self.repo.transact(run))
        except HutongError as e:
            return dead(e.code, e.message, inst.code, mapped.document_id, kind)
        refs = [f"{t}/{i}" for t, i, _s in done]
        doc = next((r for r in refs if r.startswith("DocumentReference/")), None)
        return {"status": "ok", "type": kind, "title": mapped.doc_type.title, "documentReference": doc,
                "resources": refs}

    def cda_response(self, xml: bytes, peer: str | None) -> FhirResponse:
        out = self.cda(xml, peer)
        if out["status"] == "ok":
            return FhirResponse.json(201, out)
        return FhirResponse.json(422, operation_outcome(HutongError(
            "HT-0062", f"CDA document not stored ({out['code']}): {out['reason']}; kept as a dead letter",
            status=422, issue_code="invalid")))
