"""From a received envelope to stored FHIR resources and a receipt.

One path for every channel (HL7 v2 over MLLP, CDA over HTTP or from a
folder): the adapter wraps what arrived in an envelope
(hutong.ingest.envelope) -> identify the sending institution from the
message -> the entry point's authority says who the writes run as
(hutong.ingest.acting: no "unset means trusted") -> parse -> map to a FHIR
transaction Bundle -> validate -> one store transaction holding the raw
message row, the resources (each Patient linked to its person by the MPI
hook, inside the same transaction) and the timeliness roll-up -> a
:class:`~hutong.ingest.envelope.Receipt`, audited by the one function every
channel uses (hutong.ingest.audit).  Anything that cannot be stored is kept
raw as a dead letter with the reason.  The acknowledgement is the channel's:
hutong.ingest.hl7v2.ack turns the receipt into an ACK, hutong.web into an
HTTP answer; both leave only after the commit (DESIGN "Trust model").

Framing (hutong.ingest.hl7v2.framing), parsing (message) and mapping
(mapping) are separate modules; this one only orchestrates.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

import orjson

from hutong.errors import Conflict, Forbidden, HutongError
from hutong.fhir import search as fsearch
from hutong.fhir.bundle import BundleProcessor
from hutong.fhir.service import FhirService
from hutong.ingest import inbox
from hutong.ingest.acting import (
    RETRY_ANY,
    Authorise,
    Authority,
    ByConnection,
    ByPrincipal,
    ByRetry,
    Institution,
    OnRecord,
    credential_of,
)
from hutong.ingest.audit import record_of
from hutong.ingest.cda import mapping as cdamap
from hutong.ingest.cda import parse as cdaparse
from hutong.ingest.cda.doctypes import BY_CODE
from hutong.ingest.envelope import CDA, HL7V2, Credential, Envelope, Location, Outcome, Receipt
from hutong.ingest.hl7v2 import ack as hl7ack
from hutong.ingest.hl7v2 import mapping as hl7map
from hutong.ingest.hl7v2 import message as hl7msg
from hutong.ingest.hl7v2.connection import Connection
from hutong.mpi.golden import GOLDEN_SYSTEM
from hutong.mpi.service import managing_org
from hutong.security import accounts
from hutong.security.events import AuditRecord
from hutong.security.policy import Access
from hutong.security.principal import LOCAL_OPERATOR, Principal
from hutong.security.settings import SecuritySettings
from hutong.store.repository import Writer
from hutong.systems import ORGANIZATION

__all__ = ["NOT_AUTHORISED", "Authorise", "Ingestor", "Institution"]  # Authorise, Institution: hutong.ingest.acting

# A registered institution is remembered this long (one indexed search per sender per
# interval, not per message); a deregistered one is refused within it on every node.
# An unknown one is never remembered: it was refused a minute long after the operator
# registered it, and on every node that had looked it up (README "Operations: several nodes").
SENDER_TTL_S = 10.0
# Dead letters of messages refused for who sent them start with this: never retried.
NOT_AUTHORISED = "sender not authorised"
log = logging.getLogger("hutong.ingest")
# Called with (channel, outcome) once per envelope received (hutong.web.metrics: ingest
# messages by channel and outcome; issue 18).
RECEIPT_OBSERVERS: list[Callable[[str, str], None]] = []


def _salvage_msh(raw: bytes) -> tuple[list[str], str, str]:
    """MSH-4 components, MSH-10 and MSH-9 of a message that did not parse (wrong
    charset, broken segments), read from the ASCII-compatible MSH bytes, so
    its dead letter can still be found by sender and control id."""
    line = raw.split(b"\r", 1)[0].split(b"\n", 1)[0]
    if not line.startswith(b"MSH") or len(line) < 8:
        return [], "", ""
    fields = line.split(line[3:4])
    def text(i: int) -> str:
        return fields[i].decode("ascii", "replace")[:200] if len(fields) > i else ""
    comp = line[4:5].decode("ascii", "replace") or "^"
    return [c for c in text(3).split(comp) if c], text(9), "^".join(text(8).split(comp)[:2])


class AuditTrail(Protocol):
    """The audit log as the ingestor uses it (hutong.security.audit.AuditLog)."""

    def record(self, rec: AuditRecord) -> int: ...

    def record_in(self, w: Writer, rec: AuditRecord) -> int: ...

    def publish_if_due(self) -> None: ...


class _Dead(Exception):
    """Internal: ends one message's processing with this receipt (dead or refused)."""

    def __init__(self, receipt: Receipt) -> None:
        super().__init__(receipt.reason)
        self.receipt = receipt


def _from_hl7(env: Envelope, e: hl7msg.Hl7Error, code: str, outcome: Outcome = Outcome.DEAD, *,
              forbidden: bool = False) -> Receipt:
    return Receipt(outcome, env, code=e.ht or code, reason=e.text, condition=e.code,
                   location=Location(e.segment, e.field, e.sequence) if e.segment else None,
                   resend=e.ack != "AR", forbidden=forbidden)


class Ingestor:
    """Receives envelopes (:meth:`receive`) from every channel.

    ``authorise`` (hutong.security.senders) authenticates MLLP senders: the
    listener's messages and retries of MLLP dead letters whose sender was
    never authorised are written under what it returns.  ``audit`` receives
    one AuditRecord per envelope (hutong.ingest.audit).

    ``audit_log`` instead (issue 17): the audit row of a stored message (or a
    resend answered from the inbox) is appended inside the transaction that
    stores it, so the message costs one commit, not two (on SQLite another
    turn of the one write lock and another fsync); every other receipt
    (dead letters, refusals) is recorded through ``audit_log.record``.  Either
    way one row per envelope, committed before the answer leaves."""

    def __init__(self, svc: FhirService, clock: Callable[[], int] | None = None, *,
                 authorise: Authorise | None = None, audit: Callable[[AuditRecord], Any] | None = None,
                 settings: SecuritySettings | None = None, audit_log: AuditTrail | None = None) -> None:
        self.authorise = authorise
        self.audit_log = audit_log
        self.audit = audit if audit is not None or audit_log is None else audit_log.record
        self.settings = settings or SecuritySettings()
        self.svc = svc
        self.repo = svc.repo
        self.bundles = BundleProcessor(svc)
        self.clock = clock or svc.repo.clock
        self._senders: dict[str, tuple[Institution, float]] = {}
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
        if found is not None:
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

    # ------------------------------------------------------------ the envelope
    def receive(self, envelope: Envelope, authority: Authority) -> Receipt:
        """Store one message as ``authority`` says; never raises for bad input or
        a refused sender: every problem is a dead or refused receipt, kept raw."""
        state: dict[str, Any] = {}
        try:
            if envelope.channel == HL7V2:
                receipt = self._hl7(envelope, authority, state)
            elif envelope.channel == CDA:
                receipt = self._cda(envelope, authority, state)
            else:
                raise ValueError(f"unknown channel {envelope.channel!r}")
        except _Dead as d:
            receipt = self._dead(d.receipt, authority, state.get("access"))
        access = state.get("access")
        if not state.get("audited"):
            self._audit(authority, access, receipt)
        for observe in RECEIPT_OBSERVERS:
            observe(envelope.channel, receipt.outcome.value)
        return receipt

    def _authorised(self, env: Envelope, authority: Authority, inst: Institution,
                    state: dict[str, Any]) -> Access:
        try:
            access = authority.access(inst)
        except HutongError as e:
            raise _Dead(Receipt(Outcome.REFUSED, env, code=e.code, reason=f"{NOT_AUTHORISED} ({e.code}): "
                                f"{e.message}", condition="207", location=Location("MSH", 4), resend=False,
                                forbidden=True)) from None
        state["access"] = access
        return access

    def _audit(self, authority: Authority, access: Access | None, receipt: Receipt) -> None:
        if self.audit is None:
            return
        if access is not None:
            access.settle()
        principal = access.principal if access is not None else authority.principal
        self.audit(record_of(principal, receipt.envelope, receipt, access))

    # ------------------------------------------------------------ HL7 v2
    def _hl7(self, env: Envelope, authority: Authority, state: dict[str, Any]) -> Receipt:
        raw = env.raw
        cred = env.credential
        try:
            msg = hl7msg.parse(raw)
        except hl7msg.Hl7Error as e:
            facility, control, kind = _salvage_msh(raw)
            inst = self.sender_of(facility)
            env = replace(env, sender=cred.institution or (inst.code if inst else ""), control_id=control,
                          kind="unparsed")
            raise _Dead(_from_hl7(env, e, "HT-0310")) from None
        env = replace(env, control_id=msg.control_id, kind=f"{msg.message_type}^{msg.trigger}")
        if cred.institution is not None:
            # The connection says who sends (TLS client certificate or an address
            # the operator mapped); MSH-4 is the message's claim and must agree
            # (issue 12, finding 5).  Refused with AR (HL7 v2.5.1 ch. 2.9.2.1:
            # the sender is not accepted) and audited with what it claimed.
            env = replace(env, sender=cred.institution)
            if not self._claims_only(msg.sending_facility, cred.institution):
                claimed = "^".join(c.strip() for c in msg.sending_facility)[:120]
                mismatch = Forbidden("HT-0190", f"MSH-4 ({claimed}) does not name {cred.institution}, the "
                                                f"institution this connection authenticated as ({cred.method})")
                raise _Dead(Receipt(Outcome.REFUSED, replace(env, claimed=claimed), code=mismatch.code,
                                    reason=f"{NOT_AUTHORISED} ({mismatch.code}): {mismatch.message}",
                                    condition="207", location=Location("MSH", 4), resend=False, forbidden=True))
            inst = self.institution(cred.institution)
        else:
            inst = self.sender_of(msg.sending_facility)
        if inst is None:
            unknown = hl7msg.Hl7Error("204", "unknown sending facility (MSH-4): no registered institution has "
                                             "this identifier", segment="MSH", field=4, ack="AR")
            raise _Dead(_from_hl7(env, unknown, "HT-0311"))
        env = replace(env, sender=inst.code)
        if cred.institution is None:
            env = replace(env, claimed=inst.code)
        access = self._authorised(env, authority, inst, state)
        if env.claimed is not None and cred.institution is None:
            env = replace(env, claimed=None)  # accepted: the claim is the sender
        content = hl7msg.content_key(raw)
        if env.retry_of is None:
            done = _same_content(inbox.find_all(self.repo, None, HL7V2, inst.code, msg.control_id), content)
            if done is not None:
                # A resend: acknowledged again (with the note its first ACK carried), nothing else changes.
                return _duplicate(env, done)
        try:
            mapped = hl7map.to_bundle(msg, hl7map.Sender(inst.code, inst.organization_id))
            entries = self.bundles.prepare(mapped.bundle.get("entry") or [])
        except hl7msg.Hl7Error as e:
            raise _Dead(_from_hl7(env, e, "HT-0312")) from None
        except HutongError as e:
            err = hl7msg.Hl7Error("207", f"mapped resource rejected: {e.code} {e.message}", ack="AE")
            raise _Dead(_from_hl7(env, err, e.code)) from None
        env = replace(env, event_time=inbox.to_ms(mapped.event_time))
        kind = env.kind
        warnings = list(mapped.warnings)

        def run(w: Any) -> Receipt:
            # Two connections delivering the same message at once: one waits.
            w.lock_key(f"ingest:hl7v2:{inst.code}:{msg.control_id}")
            notes = list(warnings)
            if env.retry_of is None:
                earlier = inbox.find_all(self.repo, w, HL7V2, inst.code, msg.control_id)
                again = _same_content(earlier, content)
                if again is not None:
                    return _duplicate(env, again)
                if earlier:
                    notes.append(_reused(msg.control_id, earlier[0]))
            done = self.bundles.run_in(w, entries)
            if mapped.merge is not None:
                merge_note = self._merge(w, inst, mapped.merge, kind, msg.control_id)
                if merge_note is not None:
                    # Accepted, the merge waiting for a steward: AA with an ERR of
                    # severity W (HL7 v2.5.1 ch. 2.15.5.4, table 0516), so the sender
                    # neither resends nor believes the persons were merged.
                    notes.insert(0, hl7map.MappingWarning("HT-0195", "0", merge_note.removeprefix("HT-0195 "),
                                                          "MRG", 1))
            note = _note_text(notes)
            message_id = self._stored(w, env, access, note)
            refs = tuple(f"{t}/{i}" for t, i, _s in done)
            if notes:
                first = notes[0]
                return Receipt(Outcome.STORED, env, code=first.code, reason=note, references=refs,
                               message_id=message_id, condition=first.condition,
                               location=Location(first.segment, first.field))
            return Receipt(Outcome.STORED, env, references=refs, message_id=message_id)

        return self._commit(env, access, run, state)

    def _commit(self, env: Envelope, access: Access, run: Callable[[Any], Receipt],
                state: dict[str, Any]) -> Receipt:
        trail = self.audit_log
        mpi = self.svc.mpi

        def audited(w: Any) -> Receipt:
            receipt = run(w)
            if trail is not None:
                # The persons written, read through this transaction (its MPI links
                # are not visible outside it yet), then the row, last: on PostgreSQL
                # it holds the chain's lock until the commit.
                access.trace.settle(lambda patient: mpi.person_of_in(w, patient))
                trail.record_in(w, record_of(access.principal, receipt.envelope, receipt, access))
            return receipt

        try:
            # The message's writes act as its sender: the Access travels with the
            # transaction (hutong.store.sql.WriteContext), never in ambient state.
            bound = self.repo.acting_as(access)
            result: Receipt = self.svc._retry(lambda: bound.transact(audited))
            if trail is not None:
                state["audited"] = True  # committed with the message
                trail.publish_if_due()
            return result
        except HutongError as e:
            # 409: the message conflicts with one stored (HL7 table 0357: 205 duplicate key identifier).
            raise _Dead(Receipt(Outcome.DEAD, env, code=e.code, reason=f"{e.code} {e.message}",
                                condition="205" if e.status == 409 else "207", forbidden=e.status == 403)) from None
        except Exception as e:
            # A database failure (connection lost, disk full): the sender is told to
            # resend; nothing was acknowledged.  The type only is logged (the
            # message may carry resident data).
            log.error("%s message %s not stored: %s", env.channel, env.control_id[:40], type(e).__name__)
            raise _Dead(Receipt(Outcome.DEAD, env, code="HT-0314", reason="application internal error: message "
                                "not stored, resend later", condition="207")) from None

    def connection_authority(self, conn: Connection) -> Authority:
        """Who the messages of an MLLP connection are written as: the connection's
        authentication (``authorise``); without that seam, the local operator
        (tests and tools that call the ingestor directly)."""
        if self.authorise is not None:
            return ByConnection(self.authorise, conn)
        return ByPrincipal(self.repo, LOCAL_OPERATOR, self.settings)

    def frame_error(self, raw: bytes, reason: str, peer: str | None,
                    conn: Connection | None = None) -> Receipt:
        """A framing problem (bytes outside a frame, truncated or oversize frame):
        a dead letter with the reason (the listener NAKs it with AR)."""
        conn = conn if conn is not None else Connection(peer)
        cred = conn.as_credential()
        env = Envelope(HL7V2, raw, self.clock(), peer, cred, sender=cred.institution or "", kind="frame")
        e = hl7msg.Hl7Error("100", f"MLLP framing: {reason}", ack="AR")
        authority = self.connection_authority(conn)
        receipt = self._dead(_from_hl7(env, e, "HT-0315"), authority, None)
        self._audit(authority, None, receipt)
        return receipt

    def _merge(self, w: Any, inst: Institution, merge: tuple[dict[str, str], dict[str, str]], kind: str,
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
        outcome = self.svc.mpi.merge_registrations_in(
            w, prior, survivor, institution=inst.organization_id,
            protected=lambda person: accounts.person_has_account(w, person), actor=f"hl7v2:{inst.code}",
            reason=f"{kind} {control_id}: prior record merged by the sender")
        if outcome.status != "queued":
            return None
        return ("HT-0195 the persons were not merged: the prior patient's person has other institutions' "
                "registrations or a resident account; the merge waits for review by an MPI steward")

    def _stored(self, w: Any, env: Envelope, access: Access, note: str | None = None) -> int:
        """The inbox row of a message whose resources this transaction wrote
        (and, for a retry, the dead letter it replaces); ``note``: what its acceptance warned of."""
        attempts = inbox.retried(w, env.retry_of) + 1 if env.retry_of is not None else 1
        return inbox.record(w, channel=env.channel, sender=env.sender, control_id=env.control_id, kind=env.kind,
                            received=env.received, event_time=env.event_time, status="ok", ack_code="AA",
                            reason=note, peer=env.peer, raw=env.raw, attempts=attempts,
                            principal=OnRecord(access.principal, env.credential).dumps())

    # ------------------------------------------------------------ dead letters
    def _dead(self, receipt: Receipt, authority: Authority, access: Access | None) -> Receipt:
        """Keep the message raw with the reason (a failed retry updates its dead
        letter); returns the receipt with the row's id.  When even that fails,
        the receipt still goes back (the sender resends)."""
        env = receipt.envelope
        ack_code = "AE" if receipt.resend and receipt.outcome is not Outcome.REFUSED else "AR"
        reason = receipt.reason or receipt.code or "not stored"
        principal = access.principal if access is not None else authority.principal

        def run(w: Any) -> int:
            if env.retry_of is not None:
                inbox.failed_again(w, env.retry_of, reason, ack_code)
                return env.retry_of
            return inbox.record(w, channel=env.channel, sender=env.sender, control_id=env.control_id,
                                kind=env.kind or env.channel, received=env.received, event_time=env.event_time,
                                status="dead", ack_code=ack_code, reason=reason, peer=env.peer, raw=env.raw,
                                principal=OnRecord(principal, env.credential).dumps())
        try:
            return replace(receipt, message_id=self.repo.transact(run))
        except Exception as e:
            log.error("dead letter not stored either: %s", type(e).__name__)
            return receipt

    def retry(self, message_id: int, operator: Principal = LOCAL_OPERATOR) -> tuple[inbox.Row, Receipt]:
        """Re-process a dead letter (after the cause was fixed) as the sender on
        record, narrowed by ``operator``'s authority (hutong.ingest.acting.ByRetry);
        returns its row as it is now and the receipt."""
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
        if operator.role not in RETRY_ANY:
            # Checked first: an operator without the authority must not change the dead letter.
            raise Forbidden("HT-0316", f"a {operator.role.value} account may not re-process dead letters")
        with self._lock:
            self._senders.clear()  # the fix may have been registering the institution
        record = OnRecord.loads(row.principal)
        cred = record.credential if record is not None else Credential()
        env = Envelope(row.channel, row.raw, row.received, row.peer, cred, retry_of=row.id,
                       retried_by=operator.account_id)
        authority = ByRetry(self.repo, operator, record, self.authorise if row.channel == HL7V2 else None,
                            row.peer, self.settings)
        receipt = self.receive(env, authority)
        after = inbox.get(self.repo, message_id)
        assert after is not None
        return after, receipt

    # ------------------------------------------------------------ CDA
    def _cda(self, env: Envelope, authority: Authority, state: dict[str, Any]) -> Receipt:
        """One WS/T 500 document; never raises for bad input."""
        xml = env.raw

        def dead(code: str, problem: str, reason: str, at: Envelope) -> _Dead:
            return _Dead(Receipt(Outcome.DEAD, at, code=code, reason=f"{problem}: {reason}"))

        env = replace(env, kind="cda")
        try:
            header = cdaparse.read_header(cdaparse.parse_xml(xml))
        except cdaparse.CdaError as e:
            raise dead("HT-0310", e.code, "; ".join(e.problems), env) from None
        inst = self.institution(header.custodian_id)
        if inst is None:
            raise dead("HT-0311", "cda-sender", f"the custodian {header.custodian_id[:64]!r} is not a registered "
                                                "institution", env)
        env = replace(env, sender=inst.code)
        # Checked before anything is stored: a system sends its own institution's documents.
        access = self._authorised(env, authority, inst, state)
        try:
            mapped = cdamap.to_bundle(xml, cdamap.Sender(inst.code, inst.organization_id))
            entries = self.bundles.prepare(mapped.bundle.get("entry") or [])
        except cdaparse.CdaError as e:
            raise dead("HT-0312", e.code, "; ".join(e.problems), env) from None
        except HutongError as e:
            raise dead(e.code, e.code, f"mapped resource rejected: {e.message}", env) from None
        env = replace(env, control_id=mapped.document_id, kind=mapped.doc_type.code,
                      event_time=inbox.to_ms(mapped.event_time))

        def run(w: Any) -> Receipt:
            w.lock_key(f"ingest:cda:{inst.code}:{mapped.document_id}")
            self._same_document(w, inst.code, mapped, xml)
            done = self.bundles.run_in(w, entries)
            note = "; ".join(f"{code} {text}" for code, text in mapped.warnings) or None
            message_id = self._stored(w, env, access, note)
            refs = tuple(f"{t}/{i}" for t, i, _s in done)
            if mapped.warnings:
                return Receipt(Outcome.STORED, env, code=mapped.warnings[0][0], reason=note, references=refs,
                               message_id=message_id)
            return Receipt(Outcome.STORED, env, references=refs, message_id=message_id)

        return self._commit(env, access, run, state)

    def _same_document(self, w: Any, sender: str, mapped: cdamap.CdaMapped, raw: bytes) -> None:
        """A document id names one document of its institution (CDA R2 §4.2.1.1
        ClinicalDocument.id: "uniquely identifies the document").  The same document sent
        again is a resend (its conditional creates change nothing); another document under
        an id already stored -- another type, other content -- is refused with 409 (HT-0263):
        every write of it would match the earlier document's keys, so acknowledging it
        would say it was stored when it was not.  A corrected document takes a new id
        (and relatedDocument RPLC with the same setId, CDA R2 §4.2.3.1)."""
        earlier = inbox.find_all(self.repo, w, CDA, sender, mapped.document_id)
        if not earlier or any(r.raw == raw for r in earlier) or any(
                self._cda_content(r.raw) == mapped.content for r in earlier):
            return
        first = earlier[0]
        was = BY_CODE.get(first.kind)
        what = f"a {first.kind} {was.title}" if was is not None else f"a {first.kind}"
        now = "another type" if first.kind != mapped.doc_type.code else "other content"
        raise Conflict("HT-0263", f"document id {hl7msg.shown(mapped.document_id, 60)} already names {what} "
                                  f"(inbox message {first.id}); this {mapped.doc_type.code} has {now} and was not "
                                  "stored: a new or corrected document takes a new id")

    @staticmethod
    def _cda_content(raw: bytes) -> bytes:
        try:
            return cdaparse.content_key(cdaparse.parse_xml(raw))
        except cdaparse.CdaError:
            return b""

    # ------------------------------------------------------------ entry points kept for callers
    def hl7(self, raw: bytes, peer: str | None = None, *, conn: Connection | None = None) -> bytes:
        """One HL7 v2 message from ``conn`` (the listener's authenticated
        connection) -> its ACK payload (unframed).  Without an ``authorise`` seam
        the message is written as the local operator (tests, tools)."""
        conn = conn if conn is not None else Connection(peer)
        env = Envelope(HL7V2, raw, self.clock(), peer, conn.as_credential())
        return hl7ack.for_receipt(self.receive(env, self.connection_authority(conn)))

    def cda(self, xml: bytes, peer: str | None, principal: Principal = LOCAL_OPERATOR) -> dict[str, Any]:
        """One CDA document sent by ``principal`` -> the receipt's summary."""
        env = Envelope(CDA, xml, self.clock(), peer, credential_of(principal))
        return self.receive(env, ByPrincipal(self.repo, principal, self.settings)).summary()


def _duplicate(env: Envelope, first: inbox.Row) -> Receipt:
    """A resend of a stored message: answered as the first time (its receipt
    time, its note: e.g. a merge still waiting for review)."""
    note = first.reason
    where = _NOTE_LOCATION.get(_note_code(note) or "", Location("MRG", 1)) if note else None
    return Receipt(Outcome.DUPLICATE, replace(env, received=first.received, event_time=first.event_time),
                   code=_note_code(note), reason=note, message_id=first.id,
                   condition=_NOTE_CONDITION.get(_note_code(note) or "", "0") if note else None, location=where)


# Where the note of a stored message points, and its HL7 table 0357 condition, when a
# resend is answered from the inbox row (which keeps the note's text, code first).
_NOTE_LOCATION = {"HT-0260": Location("PID", 8), "HT-0265": Location("MSH", 10)}
_NOTE_CONDITION = {"HT-0260": "103", "HT-0265": "205"}


def _same_content(rows: list[inbox.Row], content: bytes) -> inbox.Row | None:
    """The stored row whose message is this one again (hutong.ingest.hl7v2.message.content_key)."""
    return next((r for r in rows if hl7msg.content_key(r.raw) == content), None)


def _reused(control_id: str, first: inbox.Row) -> hl7map.MappingWarning:
    """MSH-10 "uniquely identifies the message" (HL7 v2.5.1 ch. 2.15.9.10): a second message
    under a used control id is a sender error.  It is stored (its results are not lost, and
    every write converges by its own keys) and flagged: AA with an ERR of severity W,
    condition 205 (duplicate key identifier), HT-0265 on its inbox row for the console and
    the data-quality counts.  A true resend (same content) stays a plain duplicate."""
    return hl7map.MappingWarning("HT-0265", "205", f"MSH-10 {hl7msg.shown(control_id)} was already used by "
                                                   f"inbox message {first.id} with different content; stored as a "
                                                   "new message: the sender must not re-use control ids",
                                 "MSH", 10)


def _note_text(notes: list[hl7map.MappingWarning]) -> str | None:
    """The inbox row's reason for an accepted message: each note, its code first, "; " between."""
    return "; ".join(f"{n.code} {n.text}" for n in notes) or None


def _note_code(note: str | None) -> str | None:
    """The HT code an accepted message's note starts with (e.g. HT-0195)."""
    return note.split(" ", 1)[0] if note and note.startswith("HT-") else None
