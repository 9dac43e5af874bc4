"""``hutong audit ...``: check and read the audit trail from the command line.

    hutong audit verify [--checkpoint SEQ:HASH [--from-checkpoint]]
                                                  recompute the hash chain; exit 0 if intact, 1 if not
    hutong audit list [--person mpi-..] [--account ID] [--action A] [--since T] [--until T] [--limit N]
                                                  records, newest first, one JSON object per line
    hutong audit purge [--dry-run]                delete records older than the retention
                                                  (HUTONG_AUDIT_RETENTION_DAYS, at least 180); the chain
                                                  stays verifiable from an anchor
    hutong audit break-glass [--unreviewed]       break-glass accesses and their reviews (JSON lines)

``verify`` prints ``{"ok": true, "rows": N, "head_seq": .., "head_hash": ..}``;
note the head somewhere else and pass it later as ``--checkpoint`` to detect
records cut off the end.  ``list`` leaves out search criteria (they may name a
resident) unless ``--with-query``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from hutong.errors import ConfigError, InvalidRequest
from hutong.fhir.assembly import open_repository
from hutong.ingest.inbox import to_ms
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
    v.add_argument("--checkpoint", metavar="SEQ:HASH", help="a head noted earlier that must still be in the chain")
    v.add_argument("--from-checkpoint", action="store_true",
                   help="check only the records after --checkpoint (e.g. a daily run from the last head)")
    v.set_defaults(func=run, action=_verify)
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
    res = audit.verify(checkpoint, from_checkpoint=args.from_checkpoint)
    _line(res.to_json())
    return 0 if res.ok else 1


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
