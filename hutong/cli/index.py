"""``hutong index ...``: the search index of stored resources.

    hutong index rebuild [--type T ...] [--batch N] [--database URL]
        every current resource's search index and Patient-compartment
        memberships made again by this release's indexer (blind indexes
        included), in place: no new versions, each batch one transaction.
        Run it after an upgrade that adds search parameters (its notes say
        so): until then the new parameters find only resources written since.
        Safe to stop and run again.  Prints {"reindexed": N}.
"""

from __future__ import annotations

import argparse
import sys

from hutong.cli.context import print_json, repository
from hutong.fhir.registry import RESOURCE_TYPES
from hutong.store.reindex import rebuild


def _rebuild(args: argparse.Namespace) -> int:
    types = sorted(set(args.type or ()))
    unknown = [t for t in types if t not in RESOURCE_TYPES]
    if unknown:
        print(f"hutong index rebuild: not a FHIR R4 resource type: {', '.join(unknown)}", file=sys.stderr)
        return 2
    if args.batch < 1:
        print("hutong index rebuild: --batch must be at least 1", file=sys.stderr)
        return 2
    with repository(args.database) as repo:
        n = rebuild(repo, types=types or None, batch=args.batch,
                    progress=lambda k: print(f"re-indexed {k}", file=sys.stderr))
    return print_json({"reindexed": n, "types": types or "all"})


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("index", help="the search index: rebuild it after an upgrade that adds search parameters",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database", metavar="URL", help="sqlite:///path or postgresql://... "
                                                     "(default: $HUTONG_DATABASE_URL or sqlite:///var/hutong.db)")
    ops = p.add_subparsers(dest="index_command", metavar="ACTION")
    ops.required = True
    r = ops.add_parser("rebuild", help="every current resource's index rows made again, in place")
    r.add_argument("--type", action="append", metavar="TYPE", help="only this resource type (repeatable)")
    r.add_argument("--batch", type=int, default=500, help="resources per transaction (default 500)")
    r.set_defaults(func=_rebuild)
