"""``hutong audit ...``: check and read the audit trail from the command line.

    hutong audit verify [--heads FILE] [--checkpoint SEQ:HASH [--from-checkpoint]]
                                                  recompute the keyed hash chain and check it against
                                                  every published head; exit 0 if intact, 1 if not
    hutong audit heads [--publish] [--public-key]
                                                  the published signed heads (JSON lines); --publish
                                                  signs the current head and appends it first
    hutong audit list [--person mpi-..] [--account ID] [--action A] [--since T] [--until T] [--limit N]
                                                  records, newest first, one JSON object per line
    hutong audit purge [--dry-run]                delete records older than the retention
                                                  (HUTONG_AUDIT_RETENTION_DAYS, at least 180); the chain
                                                  stays verifiable from an anchor
    hutong audit break-glass [--unreviewed]       break-glass accesses and their reviews (JSON lines)

``verify`` prints ``{"ok": true, "rows": N, "head_seq": .., "head_hash": .., "heads": N}``.
Each row is hashed with HMAC-SHA256 under the chain key (``audit-chain.key`` in
the key directory, HUTONG_KEY_DIR), and the server signs the current head
with ``audit-signing.key`` (Ed25519) every HUTONG_AUDIT_HEAD_SECONDS (300) into
``<key dir>/audit-heads.ndjson`` (or HUTONG_AUDIT_HEADS).  Ship that file
elsewhere as it grows (it is append-only; syslog or WORM storage): ``verify``
then detects edited rows, rows cut off the end, a rebuilt chain and a planted
anchor on its own; ``--heads`` checks against the shipped copy.  ``list``
leaves out search criteria (they may name a resident) unless ``--with-query``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from hutong.errors import ConfigError, InvalidRequest
from hutong.ingest.inbox import to_ms
from hutong.platform import open_repository
from hutong.security.audit import MIN_RETENTION_DAYS, AuditLog
from hutong.security.settings import SecuritySettings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("audit", help="audit trail: verify the hash chain, list, purge, break-glass review list",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database", metavar="URL", help="sqlite:///path or postgresql://... "
                                                     "(default: $HUTONG_DATABASE_URL or sqlite:///var/hutong.db)")
    ops = p.add_subparsers(dest="audit_command", metavar="ACTION")
    ops.required = True
    v = ops.add_parser("verify", help="recompute the hash chain (exit 1 at the first bad record)")
    v.add_argument("--heads", metavar="FILE", help="published heads to check against (default: the configured "
                                                   "file, <key dir>/audit-heads.ndjson or $HUTONG_AUDIT_HEADS)")
    v.add_argument("--checkpoint", metavar="SEQ:HASH", help="a head noted earlier that must still be in the chain")
    v.add_argument("--from-checkpoint", action="store_true",
                   help="check only the records after --checkpoint (e.g. a daily run from the last head)")
    v.set_defaults(func=run, action=_verify)
    hd = ops.add_parser("heads", help="published signed heads of the chain (JSON lines)")
    hd.add_argument("--publish", action="store_true", help="sign the current head and append it first")
    hd.add_argument("--public-key", action="store_true",
                    help="print the PEM public key that verifies the heads (ship it with them)")
    hd.set_defaults(func=run, action=_heads)
    ls = ops.add_parser("list", help="records, newest first (JSON lines)")
    ls.add_argument("--person", help="golden person id (mpi-...)")
    ls.add_argument("--account", help="account id")
    ls.add_argument("--action", dest="event_action", help="read, search, create, login, break-glass ...")
    ls.add_argument("--since", help="date, dateTime or epoch ms (inclusive)")
    ls.add_argument("--until", help="date, dateTime or epoch ms (exclusive)")
    ls.add_argument("--limit", type=int, default=100)
    ls.add_argument("--with-query", action="store_true", help="include search criteria")
    ls.set_defaults(func=run, action=_list)
    pg = ops.add_parser("purge", help="delete records older than the retention period")
    pg.add_argument("--dry-run", action="store_true", help="count what would be purged, change nothing")
    pg.set_defaults(func=run, action=_purge)
    bg = ops.add_parser("break-glass", help="break-glass accesses with their reviews (JSON lines)")
    bg.add_argument("--unreviewed", action="store_true", help="only those awaiting review")
    bg.add_argument("--limit", type=int, default=100)
    bg.set_defaults(func=run, action=_break_glass)


def run(args: argparse.Namespace) -> int:
    """Open the database, run the action on its audit log, close it."""
    settings = SecuritySettings.from_env()
    if settings.audit_retention_days < MIN_RETENTION_DAYS:
        # Tests build SecuritySettings directly; a deployment may not go below 180 days.
        raise ConfigError("HT-0147", f"HUTONG_AUDIT_RETENTION_DAYS={settings.audit_retention_days} is below "
                                     f"the minimum of {MIN_RETENTION_DAYS} days")
    repo = open_repository(args.database)
    try:
        rc: int = args.action(args, AuditLog(repo, settings=settings))
        return rc
    finally:
        repo.db.close()


def _line(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data).decode() + "\n")


def _time(v: str | None, name: str) -> int | None:
    if v is None:
        return None
    ms = int(v) if v.isdigit() else to_ms(v)
    if ms is None:
        raise InvalidRequest("HT-0145", f"--{name} must be a date, a dateTime or epoch milliseconds")
    return ms


def _verify(args: argparse.Namespace, audit: AuditLog) -> int:
    checkpoint = None
    if args.checkpoint:
        seq, _, h = args.checkpoint.partition(":")
        if not seq.isdigit() or len(h) != 64:
            raise InvalidRequest("HT-0145", "--checkpoint must be SEQ:HASH (64 hex digits)")
        checkpoint = (int(seq), h.lower())
    if args.from_checkpoint and checkpoint is None:
        raise InvalidRequest("HT-0145", "--from-checkpoint needs --checkpoint SEQ:HASH")
    res = audit.verify(checkpoint, from_checkpoint=args.from_checkpoint,
                       heads=Path(args.heads) if args.heads else None)
    _line(res.to_json())
    return 0 if res.ok else 1


def _heads(args: argparse.Namespace, audit: AuditLog) -> int:
    if args.public_key:
        sys.stdout.write(audit.keys.public_pem.decode())
        return 0
    if args.publish:
        audit.publish_head()
    for h in audit.heads():
        _line(h.to_json() if h is not None else {"malformed": True})
    return 0


def _list(args: argparse.Namespace, audit: AuditLog) -> int:
    for e in audit.search(account=args.account, person=args.person, action=args.event_action,
                          since=_time(args.since, "since"), until=_time(args.until, "until"), limit=args.limit):
        _line(e.to_json(with_query=args.with_query))
    return 0


def _purge(args: argparse.Namespace, audit: AuditLog) -> int:
    _line(audit.purge(dry_run=args.dry_run).to_json())
    return 0


def _break_glass(args: argparse.Namespace, audit: AuditLog) -> int:
    for item in audit.break_glass_list(False if args.unreviewed else None, limit=args.limit):
        d = item.entry.to_json(with_query=False)
        d["review"] = item.review.to_json() if item.review else None
        _line(d)
    return 0
