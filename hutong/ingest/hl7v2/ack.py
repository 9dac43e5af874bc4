"""Acknowledgements (HL7 v2.5.1 ch. 2.9 original mode; MSA ch. 2.15.8, ERR ch. 2.15.5).

The ACK answers in the sender's terms: its version (MSH-12), its character
set (MSH-18, and the bytes encoded in it), its application and facility
swapped into the receiver fields.  Errors go in ERR as v2.5 lays it out
(ERR-2 location, ERR-3 HL7 table 0357 code, ERR-4 severity, ERR-8 user
message); a v2.3/v2.4 sender gets ERR-1 (segment^sequence^field^code&text&HL70357)
and the text in MSA-3, where those versions expect them.
When the message could not be parsed, whatever of MSH can be read from the
raw bytes is echoed (control id first of all), else a minimal ACK is sent.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from hutong.ingest.envelope import Outcome, Receipt
from hutong.ingest.hl7v2.message import (
    CHARSETS,
    ERROR_TEXT,
    Hl7Error,
    Hl7Message,
    _declared_charset,
    normalize_charset,
    raw_field,
)
from hutong.systems import REGION_TZ

_OLD_ERR = ("2.1", "2.2", "2.3", "2.3.1", "2.4")  # ERR-1 (ELD) instead of ERR-2..8
FALLBACK_VERSION = "2.5.1"


def _escape(text: str, seps: str, esc: str) -> str:
    """Escape our own text for a field (ch. 2.7.4).  Line breaks (the segment
    terminator) become spaces; every other character stays as it is, so a
    received value quoted in the text (``'A01 '``) reads back exactly."""
    out = text.replace(esc, f"{esc}E{esc}")
    for ch, code in zip(seps, "FSRT", strict=False):  # field, component, repetition, subcomponent
        out = out.replace(ch, f"{esc}{code}{esc}")
    return out.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")


def _control_id(now: datetime) -> str:
    # 20 characters (MSH-10 is ST(20) in v2.3-2.5): time to the second + 24 random bits.
    return f"HT{now:%y%m%d%H%M%S}{secrets.token_hex(3).upper()}"


class _Header:
    """The incoming MSH fields the ACK echoes, as sent (already escaped)."""

    def __init__(self) -> None:
        self.field_sep = "|"
        self.encoding = "^~\\&"
        self.fields: dict[int, str] = {}

    def get(self, n: int) -> str:
        return self.fields.get(n, "")


def _from_message(msg: Hl7Message) -> _Header:
    h = _Header()
    msh = msg.parsed[0]
    h.field_sep = raw_field(msh, 1) or "|"
    h.encoding = raw_field(msh, 2) or "^~\\&"
    for n in (3, 4, 5, 6, 10, 11, 12, 18):
        h.fields[n] = raw_field(msh, n)
    h.fields[9] = msg.trigger
    return h


def _salvage(raw: bytes) -> tuple[_Header, str]:
    """Best-effort MSH fields of a message that did not parse; (header, codec)."""
    h = _Header()
    start = raw.find(b"MSH")
    if start < 0 or len(raw) < start + 8:
        return h, "utf-8"
    data = raw[start:]
    sep = data[3:4]
    if sep.isalnum() or sep in b"\r\n \t":
        return h, "utf-8"
    cuts = [i for i in (data.find(b"\r"), data.find(b"\n")) if i >= 0]
    line = data[: min(cuts)] if cuts else data
    codec = CHARSETS.get(normalize_charset(_declared_charset(line, sep))) or "utf-8"
    parts = [p.decode(codec, "replace") for p in line.split(sep)]
    h.field_sep = sep.decode("latin-1")
    enc = parts[1] if len(parts) > 1 else ""
    if 2 <= len(enc) <= 5 and not any(c.isalnum() for c in enc):
        h.encoding = enc
    comp = h.encoding[0]
    for n in (3, 4, 5, 6, 10, 11, 12, 18):
        if n - 1 < len(parts):
            h.fields[n] = parts[n - 1]
    if len(parts) > 8:
        msg_type = parts[8].split(comp)
        h.fields[9] = msg_type[1].strip() if len(msg_type) > 1 else ""  # padded like MSH-9 is read
    if h.get(18) and normalize_charset(h.get(18).split(comp)[0]) not in CHARSETS:
        h.fields[18] = ""  # an unknown charset is not echoed: the ACK is UTF-8
    return h, codec


def build_ack(msg: Hl7Message | None, raw: bytes, code: str, error: Hl7Error | None = None, *,
              now: datetime | None = None, severity: str = "E", control_id: str | None = None) -> bytes:
    """The ACK payload (unframed, encoded in the incoming charset) for ``code`` AA/AE/AR.

    ``error`` fills ERR (and MSA-3 for v2.3/2.4); ``msg`` None means the message
    did not parse: MSH fields are salvaged from ``raw``.  ``severity`` is ERR-4
    (HL7 table 0516): E with AE/AR; W or I lets an AA carry a note (ch. 2.15.5.4:
    "transaction successful, but there may be issues"), e.g. a merge that was
    accepted but waits for review.
    """
    now = now or datetime.now(REGION_TZ)
    if now.tzinfo is None:
        now = now.replace(tzinfo=REGION_TZ)
    if msg is not None:
        h, codec = _from_message(msg), msg.codec
    else:
        h, codec = _salvage(raw)
    f, enc = h.field_sep, h.encoding
    comp, rep = enc[0], (enc[1] if len(enc) > 1 else "~")
    esc, sub = (enc[2] if len(enc) > 2 else "\\"), (enc[3] if len(enc) > 3 else "&")
    seps = f + comp + rep + sub
    version = h.get(12) or FALLBACK_VERSION
    trigger = _escape(h.get(9), seps, esc)
    msh = [
        "MSH", f,
        h.get(5), h.get(6),  # we answer as the application/facility it addressed
        h.get(3), h.get(4),
        now.strftime("%Y%m%d%H%M%S%z"), "",
        f"ACK{comp}{trigger}{comp}ACK" if trigger else "ACK",
        control_id or _control_id(now),
        h.get(11) or "P",
        version,
    ]
    if h.get(18):
        msh += [""] * 5 + [h.get(18)]  # MSH-13..17 empty, MSH-18
    segments = ["MSH" + f + enc + f + f.join(msh[2:])]
    old = version.split(comp)[0] in _OLD_ERR
    msa = ["MSA", code, h.get(10)]
    text = _escape(error.text, seps, esc) if error is not None else ""
    if error is not None and (code not in ("AA", "CA") or severity != "E"):
        if old:
            msa.append(text)
        segments.append(f.join(msa))
        label = _escape(ERROR_TEXT.get(error.code, ""), seps, esc)
        if old:
            eld = [error.segment or "", str(error.sequence) if error.segment else "",
                   str(error.field) if error.field else "", sub.join((error.code, label, "HL70357"))]
            segments.append(f.join(("ERR", comp.join(eld).rstrip(comp))))
        else:
            where = [error.segment or "", str(error.sequence) if error.segment else "",
                     str(error.field) if error.field else ""]
            segments.append(f.join((
                "ERR",
                "",  # ERR-1 (ELD) is for v2.4 and before
                comp.join(where).rstrip(comp),
                comp.join((error.code, label, "HL70357")),
                severity,
                "", "", "",
                text,  # ERR-8 user message
            )))
    else:
        segments.append(f.join(msa))
    body = "\r".join(segments) + "\r"
    return body.encode(codec, "replace")



def ack_code(receipt: Receipt) -> str:
    """MSA-1 of a receipt (HL7 v2.5.1 ch. 2.9.2.1, original mode): AA when the
    message was stored (or was already); AR when the sender is not accepted
    or the message must not be resent unchanged (type, version, charset,
    unknown sender, framing); AE otherwise (content or application errors)."""
    if receipt.accepted:
        return "AA"
    if receipt.outcome is Outcome.REFUSED or not receipt.resend:
        return "AR"
    return "AE"


def for_receipt(receipt: Receipt, *, now: datetime | None = None) -> bytes:
    """The ACK payload (unframed) answering ``receipt``'s envelope.

    An accepted message with a note (e.g. HT-0195, a merge waiting for review)
    gets AA with an ERR of severity W (table 0516, ch. 2.15.5.4); a refusal
    or dead letter an ERR with the condition (table 0357), where it is and the
    reason (ERR-8)."""
    code = ack_code(receipt)
    env = receipt.envelope
    # Dated when the message was received and numbered from it, so a resend
    # (whose receipt carries the first receipt's envelope) gets the same bytes.
    at = now or datetime.fromtimestamp(env.received / 1000, REGION_TZ)
    seed = f"{env.channel}|{env.sender}|{env.control_id}|{env.received}|{receipt.message_id}".encode()
    control = f"HT{at:%y%m%d%H%M%S}{hashlib.sha256(seed).hexdigest()[:6].upper()}"
    error = None
    if receipt.reason is not None and (not receipt.accepted or receipt.warning is not None):
        where = receipt.location
        error = Hl7Error(receipt.condition or ("0" if receipt.accepted else "207"), receipt.reason,
                         segment=where.segment if where else None, field=where.field if where else None,
                         sequence=where.sequence if where else 1, ack=code)
    return build_ack(None, env.raw, code, error, now=at, severity="W" if receipt.accepted else "E",
                     control_id=control)
