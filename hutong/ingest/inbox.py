"""The durable inbox of messages from hospital systems (HL7 v2, CDA).

Every message received is kept raw (through the store codec: encrypted at
rest once the security layer installs its key) with what became of it:

- ``ok``: mapped and stored; the raw row and the resources were committed in
  one transaction *before* the acknowledgement left (issue 5: "persists the
  raw message durably BEFORE acknowledging").
- ``dead``: could not be mapped (unknown sender, bad content, a rejected
  resource...): kept with the reason, listable, re-processable
  (``hutong ingest retry``), never dropped.
A resent message (same channel, sender and control id) finds its row and gets
the same acknowledgement again; nothing else changes.

Timeliness (次日归集): each row has the clinical event time and the receipt
time; ``ingest_daily`` keeps per institution and day (Beijing time) the
volume and a delay histogram, updated in the same transaction, so the
commission dashboard never scans messages.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
)

from hutong.store.repository import Repository, Writer
from hutong.store.schema import PK, metadata
from hutong.store.sql import sql_repository, sql_writer
from hutong.systems import REGION_TZ

RAW = "inbound-message"  # purpose bound into the raw column's ciphertexts (hutong.store.codec)

ingest_message = Table(
    "ingest_message",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("channel", String(8), nullable=False),        # hl7v2 | cda
    Column("sender", String(64), nullable=False),        # institution code, "" when unknown
    Column("control_id", String(200), nullable=False),   # MSH-10 / CDA document id, "" when unknown
    Column("kind", String(40), nullable=False),          # ADT^A01, ORU^R01, C0007 ...
    Column("received", BigInteger, nullable=False),      # epoch ms
    Column("event_time", BigInteger, nullable=True),     # epoch ms of the clinical event
    Column("status", String(8), nullable=False),         # ok | dead | retried
    Column("ack_code", String(2), nullable=False),       # AA | AE | AR (CDA: AA | AE)
    Column("reason", String(1000), nullable=True),
    Column("peer", String(100), nullable=True),
    Column("attempts", Integer, nullable=False, default=1),
    Column("raw", LargeBinary, nullable=False),
    Column("ack", LargeBinary, nullable=True),             # the ACK sent (rows before issue 13; now None)
    # Who sent it, as authenticated (hutong.ingest.acting.OnRecord, JSON): a
    # retry acts as this sender, never as trusted code (issue 13, item 5).
    Column("principal", String(1000), nullable=True),
    Index("ix_ingest_message_key", "channel", "sender", "control_id"),
    Index("ix_ingest_message_status", "status", "id"),
    Index("ix_ingest_message_sender", "sender", "received"),
)

# Delay buckets (hours) of the histogram: < 1, < 6, < 24, < 48, < 168, >= 168, unknown.
BUCKETS = (1, 6, 24, 48, 168)
BUCKET_NAMES = ("lt1h", "lt6h", "lt24h", "lt48h", "lt7d", "ge7d", "unknown")

ingest_daily = Table(
    "ingest_daily",
    metadata,
    Column("sender", String(64), nullable=False),
    Column("day", Integer, nullable=False),              # days since 1970-01-01, Beijing time
    Column("channel", String(8), nullable=False),
    Column("messages", Integer, nullable=False),
    Column("dead", Integer, nullable=False),
    *[Column(f"b_{n}", Integer, nullable=False) for n in BUCKET_NAMES],
    Column("last_received", BigInteger, nullable=False),
    PrimaryKeyConstraint("sender", "day", "channel", name="pk_ingest_daily"),
)

ingest_sender = Table(
    "ingest_sender",
    metadata,
    Column("sender", String(64), nullable=False),
    Column("channel", String(8), nullable=False),
    Column("last_received", BigInteger, nullable=False),
    Column("last_kind", String(40), nullable=False),
    Column("last_status", String(8), nullable=False),
    UniqueConstraint("sender", "channel", name="uq_ingest_sender"),
)



def beijing_day(ms: int) -> int:
    return (ms // 1000 + 8 * 3600) // 86400


def day_date(day: int) -> date:
    return date(1970, 1, 1) + timedelta(days=day)


def bucket(received: int, event: int | None) -> str:
    if event is None:
        return "unknown"
    hours = (received - event) / 3_600_000
    for limit, name in zip(BUCKETS, BUCKET_NAMES, strict=False):
        if hours < limit:
            return name
    return "ge7d"


def to_ms(fhir_time: str | None) -> int | None:
    """Epoch ms of a FHIR date/dateTime (a date means its Beijing midnight)."""
    if not fhir_time:
        return None
    try:
        if len(fhir_time) <= 10:
            parts = [int(x) for x in fhir_time.split("-")] + [1, 1]
            dt = datetime(parts[0], parts[1], parts[2], tzinfo=REGION_TZ)
        else:
            dt = datetime.fromisoformat(fhir_time.replace("Z", "+00:00"))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=REGION_TZ)
    except ValueError:
        return None
    return int(dt.astimezone(UTC).timestamp() * 1000)


@dataclass(slots=True)
class Row:
    id: int
    channel: str
    sender: str
    control_id: str
    kind: str
    received: int
    event_time: int | None
    status: str
    ack_code: str
    reason: str | None
    attempts: int
    raw: bytes
    ack: bytes | None
    principal: str | None = None  # the sender on record (JSON, hutong.ingest.acting.OnRecord)
    peer: str | None = None

    def summary(self) -> dict[str, Any]:
        """What a dead-letter listing shows (no message content: it holds resident data)."""
        return {"id": self.id, "channel": self.channel, "sender": self.sender, "control_id": self.control_id,
                "kind": self.kind, "received": self.received, "status": self.status, "ack": self.ack_code,
                "reason": self.reason, "attempts": self.attempts, "bytes": len(self.raw)}


COLS = ("id, channel, sender, control_id, kind, received, event_time, status, ack_code, reason, attempts, raw, ack, "
        "principal, peer")


def _row(repo: Repository, r: Sequence[Any]) -> Row:
    return Row(int(r[0]), r[1], r[2], r[3], r[4], int(r[5]), r[6], r[7], r[8], r[9], int(r[10]),
               repo.codec.with_purpose(RAW).decode(bytes(r[11])), bytes(r[12]) if r[12] is not None else None,
               r[13], r[14])


def find(repo: Repository, w: Writer | None, channel: str, sender: str, control_id: str) -> Row | None:
    sql = f"SELECT {COLS} FROM ingest_message WHERE channel = ? AND sender = ? AND control_id = ? AND status = 'ok'"
    args = (channel, sender, control_id)
    rows = sql_writer(w).execute(sql, args).fetchall() if w is not None else sql_repository(repo).query(sql, args)
    return _row(repo, rows[0]) if rows else None


def find_all(repo: Repository, w: Writer | None, channel: str, sender: str, control_id: str) -> list[Row]:
    """Every stored (``ok``) message of ``sender`` under ``control_id``, oldest first: a
    control id re-used for different content leaves more than one."""
    sql = (f"SELECT {COLS} FROM ingest_message WHERE channel = ? AND sender = ? AND control_id = ? "
           "AND status = 'ok' ORDER BY id")
    args = (channel, sender, control_id)
    rows = sql_writer(w).execute(sql, args).fetchall() if w is not None else sql_repository(repo).query(sql, args)
    return [_row(repo, r) for r in rows]


def get(repo: Repository, message_id: int) -> Row | None:
    rows = sql_repository(repo).query(f"SELECT {COLS} FROM ingest_message WHERE id = ?", (message_id,))
    return _row(repo, rows[0]) if rows else None


def record(w: Writer, *, channel: str, sender: str, control_id: str, kind: str, received: int,
           event_time: int | None, status: str, ack_code: str, reason: str | None, peer: str | None,
           raw: bytes, ack: bytes | None = None, attempts: int = 1, principal: str | None = None) -> int:
    """Insert one message row (and its timeliness roll-up); returns its id."""
    cur = sql_writer(w).execute("INSERT INTO ingest_message (channel, sender, control_id, kind, received, event_time, status, "
                    "ack_code, reason, peer, attempts, raw, ack, principal) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (channel, sender, control_id[:200], kind[:40], received, event_time, status, ack_code,
                     (reason or None) and reason[:1000], (peer or None) and peer[:100], attempts,
                     w.repo.codec.with_purpose(RAW).encode(raw), ack, (principal or None) and principal[:1000]))
    message_id = int(cur.fetchone()[0])
    _rollup(w, channel, sender, kind, received, event_time, status)
    return message_id


def _rollup(w: Writer, channel: str, sender: str, kind: str, received: int, event_time: int | None,
            status: str) -> None:
    day = beijing_day(received)
    b = f"b_{bucket(received, event_time)}" if status == "ok" else None
    dead = 1 if status == "dead" else 0
    ok = 1 if status == "ok" else 0
    # Upserts: two transactions recording a sender's first message of a day at
    # once (PostgreSQL, concurrent connections) must not both try to insert.
    values = {n: 0 for n in BUCKET_NAMES}
    if b:
        values[b[2:]] = 1
    cols = ", ".join("b_" + n for n in BUCKET_NAMES)
    adds = ", ".join(f"b_{n} = ingest_daily.b_{n} + excluded.b_{n}" for n in BUCKET_NAMES)
    sql_writer(w).execute(f"INSERT INTO ingest_daily (sender, day, channel, messages, dead, {cols}, last_received) "
              f"VALUES (?, ?, ?, ?, ?, {', '.join('?' * len(BUCKET_NAMES))}, ?) "
              "ON CONFLICT (sender, day, channel) DO UPDATE SET messages = ingest_daily.messages + excluded.messages, "
              f"dead = ingest_daily.dead + excluded.dead, {adds}, last_received = CASE WHEN "
              "ingest_daily.last_received > excluded.last_received THEN ingest_daily.last_received "
              "ELSE excluded.last_received END",
              (sender, day, channel, ok, dead, *[values[n] for n in BUCKET_NAMES], received))
    sql_writer(w).execute("INSERT INTO ingest_sender (sender, channel, last_received, last_kind, last_status) "
              "VALUES (?, ?, ?, ?, ?) ON CONFLICT (sender, channel) DO UPDATE SET "
              "last_received = excluded.last_received, last_kind = excluded.last_kind, "
              "last_status = excluded.last_status WHERE ingest_sender.last_received <= excluded.last_received",
              (sender, channel, received, kind[:40], status))


def failed_again(w: Writer, message_id: int, reason: str, ack_code: str) -> None:
    """A retry that failed too: the dead letter stays, with the new reason."""
    sql_writer(w).execute("UPDATE ingest_message SET attempts = attempts + 1, reason = ?, ack_code = ? WHERE id = ?",
              (reason[:1000], ack_code, message_id))


def retried(w: Writer, message_id: int) -> int:
    """A dead letter re-processed and stored: marked ``retried``; returns its attempts so far."""
    sql_writer(w).execute("UPDATE ingest_message SET status = 'retried' WHERE id = ?", (message_id,))
    rows = sql_writer(w).execute("SELECT attempts FROM ingest_message WHERE id = ?", (message_id,)).fetchall()
    return int(rows[0][0]) if rows else 0


def mark(w: Writer, message_id: int, status: str) -> None:
    sql_writer(w).execute("UPDATE ingest_message SET status = ? WHERE id = ?", (status, message_id))


def dead_letters(repo: Repository, *, limit: int = 100, after: int = 0, sender: str | None = None) -> list[Row]:
    sql = f"SELECT {COLS} FROM ingest_message WHERE status = 'dead' AND id > ?"
    args: list[Any] = [after]
    if sender is not None:
        sql += " AND sender = ?"
        args.append(sender)
    sql += " ORDER BY id LIMIT ?"
    args.append(limit)
    return [_row(repo, r) for r in sql_repository(repo).query(sql, args)]


def timeliness(repo: Repository, *, start: date, end: date, sender: str | None = None) -> dict[str, Any]:
    """Per institution and day: volume, delay distribution, share within 24 h
    (次日归集), plus each institution's last message seen."""
    epoch = date(1970, 1, 1)
    lo, hi = (start - epoch).days, (end - epoch).days
    sql = ("SELECT sender, day, channel, messages, dead, " + ", ".join("b_" + n for n in BUCKET_NAMES)
           + ", last_received FROM ingest_daily WHERE day >= ? AND day <= ?")
    args: list[Any] = [lo, hi]
    if sender is not None:
        sql += " AND sender = ?"
        args.append(sender)
    days = []
    for r in sql_repository(repo).query(sql + " ORDER BY sender, day, channel", args):
        hist = dict(zip(BUCKET_NAMES, (int(x) for x in r[5:5 + len(BUCKET_NAMES)]), strict=True))
        known = sum(v for k, v in hist.items() if k != "unknown")
        within = hist["lt1h"] + hist["lt6h"] + hist["lt24h"]
        days.append({"institution": r[0], "date": day_date(int(r[1])).isoformat(), "channel": r[2],
                     "messages": int(r[3]), "dead_letters": int(r[4]), "delay_hours": hist,
                     "within_24h": round(within / known, 4) if known else None})
    last: dict[str, dict[str, Any]] = {}
    for s, ch, t, kind, status in sql_repository(repo).query(
            "SELECT sender, channel, last_received, last_kind, last_status FROM ingest_sender", ()):
        if sender is None or s == sender:
            last.setdefault(s, {})[ch] = {"received": datetime.fromtimestamp(int(t) / 1000, REGION_TZ).isoformat(),
                                          "kind": kind, "status": status}
    return {"from": start.isoformat(), "to": end.isoformat(), "buckets": list(BUCKET_NAMES), "days": days,
            "last_seen": last}


# An accepted message's notes (its row's reason): "HT-0260 text; HT-0265 text", each
# note's stable code first (hutong.ingest.pipeline).
_NOTE_CODE = re.compile(r"(?:^|; )(HT-\d{4}) ")


def note_codes(reason: str | None) -> list[str]:
    """The codes of the notes an accepted message's row carries, in order."""
    return _NOTE_CODE.findall(reason) if reason else []


def flagged(repo: Repository, *, code: str | None = None, sender: str | None = None, after: int = 0,
            limit: int = 100) -> list[Row]:
    """Stored messages that carry a note (a warning in their ACK or HTTP answer: a value
    outside its table, a re-used MSH-10, CDA sections outside structuredBody ...), oldest
    first; ``code``: only those with that note."""
    sql = f"SELECT {COLS} FROM ingest_message WHERE status = 'ok' AND reason IS NOT NULL AND id > ?"
    args: list[Any] = [after]
    if sender is not None:
        sql += " AND sender = ?"
        args.append(sender)
    if code is not None:
        sql += " AND reason LIKE ?"
        args.append(f"%{code} %")
    sql += " ORDER BY id LIMIT ?"
    args.append(limit)
    rows = [_row(repo, r) for r in sql_repository(repo).query(sql, args)]
    return [r for r in rows if code is None or code in note_codes(r.reason)]


def note_counts(repo: Repository, *, start: date, end: date, sender: str | None = None) -> dict[str, dict[str, int]]:
    """Per institution: how many messages received from ``start`` to ``end`` (Beijing
    days, inclusive) were stored with each note code.  Reads the notes of stored rows
    in the period through the (sender, received) index: the rows with notes are few;
    a roll-up like ``ingest_daily`` is the step when they are not."""
    lo = int(datetime(start.year, start.month, start.day, tzinfo=REGION_TZ).timestamp() * 1000)
    nxt = end + timedelta(days=1)
    hi = int(datetime(nxt.year, nxt.month, nxt.day, tzinfo=REGION_TZ).timestamp() * 1000)
    sql = ("SELECT sender, reason FROM ingest_message WHERE status = 'ok' AND reason LIKE 'HT-%' "
           "AND received >= ? AND received < ?")
    args: list[Any] = [lo, hi]
    if sender is not None:
        sql += " AND sender = ?"
        args.append(sender)
    out: dict[str, dict[str, int]] = {}
    for s, reason in sql_repository(repo).query(sql, args):
        for c in note_codes(reason):
            per = out.setdefault(str(s), {})
            per[c] = per.get(c, 0) + 1
    return out
