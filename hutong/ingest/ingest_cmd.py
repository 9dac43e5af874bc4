"""``hutong ingest ...``: the inbox of hospital messages from the command line.

    hutong ingest cda DIR|FILE            store WS/T 500 CDA documents (*.xml), each like POST /ingest/cda
    hutong ingest dead-letters            list messages that could not be mapped (no content shown)
    hutong ingest retry ID... | --all     re-process dead letters after the cause was fixed
    hutong ingest timeliness [--from D] [--to D] [--institution CODE]
                                          volumes and delays per institution and day (次日归集)
    hutong ingest flagged [--code HT-0265] [--institution CODE]
                                          stored messages accepted with a warning (a code outside its
                                          table, a re-used MSH-10, CDA sections outside structuredBody)
    hutong ingest quality [--from D] [--to D]
                                          data-quality warnings per institution and code
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from hutong.errors import HutongError
from hutong.systems import REGION_TZ


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("ingest", help="CDA folder import, dead letters, retry, timeliness",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database", metavar="URL", help="sqlite:///path or postgresql://... "
                                                     "(default: $HUTONG_DATABASE_URL or sqlite:///var/hutong.db)")
    ops = p.add_subparsers(dest="ingest_command", metavar="ACTION")
    ops.required = True
    c = ops.add_parser("cda", help="store the CDA documents of a folder (or one file)")
    c.add_argument("path", type=Path)
    c.set_defaults(func=_cda)
    d = ops.add_parser("dead-letters", help="list dead letters")
    d.add_argument("--limit", type=int, default=100)
    d.add_argument("--institution")
    d.set_defaults(func=_dead)
    r = ops.add_parser("retry", help="re-process dead letters")
    r.add_argument("ids", nargs="*", type=int)
    r.add_argument("--all", action="store_true", help="every dead letter")
    r.set_defaults(func=_retry)
    t = ops.add_parser("timeliness", help="per institution and day: volume, delays, share within 24 h")
    t.add_argument("--from", dest="start", type=date.fromisoformat)
    t.add_argument("--to", dest="end", type=date.fromisoformat)
    t.add_argument("--institution")
    t.set_defaults(func=_timeliness)
    f = ops.add_parser("flagged", help="stored messages accepted with a warning (no content shown)")
    f.add_argument("--code", help="only this warning, e.g. HT-0265 (a re-used MSH-10)")
    f.add_argument("--institution")
    f.add_argument("--limit", type=int, default=100)
    f.set_defaults(func=_flagged)
    q = ops.add_parser("quality", help="data-quality warnings per institution and code")
    q.add_argument("--from", dest="start", type=date.fromisoformat)
    q.add_argument("--to", dest="end", type=date.fromisoformat)
    q.set_defaults(func=_quality)


@contextmanager
def _ingestor(args: argparse.Namespace) -> Iterator[Any]:
    from hutong.fhir.assembly import open_repository
    from hutong.fhir.service import FhirService
    from hutong.ingest.pipeline import Ingestor
    from hutong.security.audit import AuditLog
    from hutong.security.senders import mllp_authoriser
    from hutong.security.settings import SecuritySettings
    repo = open_repository(args.database)
    try:
        # The command acts as the local operator (LOCAL_OPERATOR): a folder import
        # is written as the platform engine for each document's institution, a
        # retry as the message's sender on record; every message is audited.
        security = SecuritySettings.from_env()
        yield Ingestor(FhirService(repo), authorise=mllp_authoriser(repo, security), audit=AuditLog(repo).record,
                       settings=security)
    finally:
        repo.db.close()


def _print(data: Any) -> int:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def _cda(args: argparse.Namespace) -> int:
    path: Path = args.path
    if not path.exists():
        print(f"hutong ingest cda: {path} does not exist", file=sys.stderr)
        return 2
    files = sorted(path.glob("*.xml")) if path.is_dir() else [path]
    if not files:
        print(f"hutong ingest cda: no *.xml files in {path}", file=sys.stderr)
        return 2
    results = []
    failed = 0
    with _ingestor(args) as ing:
        for f in files:
            out = ing.cda(f.read_bytes(), f"file:{f.name}")
            failed += out["status"] != "ok"
            results.append({"file": f.name, **out})
    _print(results)
    return 1 if failed else 0


def _dead(args: argparse.Namespace) -> int:
    from hutong.ingest import inbox
    with _ingestor(args) as ing:
        rows = inbox.dead_letters(ing.repo, limit=args.limit, sender=args.institution)
    return _print([r.summary() for r in rows])


def _retry(args: argparse.Namespace) -> int:
    from hutong.ingest import inbox
    ids: list[int] = list(args.ids)
    out = []
    failed = 0
    with _ingestor(args) as ing:
        if args.all:
            ids += [r.id for r in inbox.dead_letters(ing.repo, limit=1_000_000)]
        if not ids:
            print("hutong ingest retry: give message ids or --all", file=sys.stderr)
            return 2
        for i in ids:
            try:
                row, _receipt = ing.retry(i)
            except HutongError as e:
                out.append({"id": i, "error": f"{e.code}: {e.message}"})
                failed += 1
                continue
            failed += row.status != "retried"
            out.append(row.summary())
    _print(out)
    return 1 if failed else 0


def _timeliness(args: argparse.Namespace) -> int:
    from hutong.ingest import inbox
    end = args.end or datetime.now(REGION_TZ).date()
    start = args.start or end - timedelta(days=6)
    with _ingestor(args) as ing:
        data = inbox.timeliness(ing.repo, start=start, end=end, sender=args.institution)
    return _print(data)


def _flagged(args: argparse.Namespace) -> int:
    from hutong.ingest import inbox
    with _ingestor(args) as ing:
        rows = inbox.flagged(ing.repo, code=args.code, sender=args.institution, limit=args.limit)
    return _print([r.summary() for r in rows])


def _quality(args: argparse.Namespace) -> int:
    from hutong.quality.data_quality import data_quality
    end = args.end or datetime.now(REGION_TZ).date()
    start = args.start or end - timedelta(days=6)
    with _ingestor(args) as ing:
        counts = data_quality(ing.repo, start=start, end=end)
    return _print([{"institution": c.institution, "code": c.code, "label": c.label, "messages": c.messages}
                   for c in counts])
