"""``hutong db ...``: the schema version of a database and its upgrade.

    hutong db current [--database URL]    the schema revision (e.g. ``0002 (head)``), then this
                                          release's head; changes nothing
    hutong db upgrade [--database URL]    apply the migrations from the database's revision to this
                                          release's head, in one transaction (nothing changes if one
                                          fails); a database of release bc329d5 (no version) too

Back the database up first (``pg_dump``; the SQLite file with its -wal).  A
database newer than this release is refused (HT-0320): migrations never go
backwards.  ``hutong serve`` and every other command refuse an older database
(HT-0321) unless HUTONG_AUTO_MIGRATE=1 asks them to upgrade it on open; an empty
one is created at the head.  hutong.store.migrations has the rules.
"""

from __future__ import annotations

import argparse

from hutong.store import migrations
from hutong.store.database import open_database, resolve_url


def _current(args: argparse.Namespace) -> int:
    db = open_database(resolve_url(args.database), create=False)
    try:
        v = migrations.current(db)
    finally:
        db.close()
    print(v)
    if v.newer:
        print(f"this release: {migrations.HEAD} (older than the database: HT-0320, it will refuse to open it)")
    elif not v.at_head:
        print(f"this release: {migrations.HEAD} (run `hutong db upgrade`)")
    return 0


def _upgrade(args: argparse.Namespace) -> int:
    db = open_database(resolve_url(args.database), create=False)
    try:
        before, after = migrations.upgrade(db)
    finally:
        db.close()
    if before.at_head:
        print(f"already at {after}")
    else:
        print(f"upgraded from {before} to {after}")
    return 0


def run(args: argparse.Namespace) -> int:
    rc: int = args.action(args)
    return rc


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("db", help="database schema: current version, upgrade",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    database_help = "sqlite:///path or postgresql://... (default: $HUTONG_DATABASE_URL or sqlite:///var/hutong.db)"
    p.add_argument("--database", metavar="URL", help=database_help)
    ops = p.add_subparsers(dest="db_command", metavar="ACTION")
    ops.required = True
    for name, action, text in (("current", _current, "the database's schema revision and this release's"),
                               ("upgrade", _upgrade, "apply the migrations up to this release's schema")):
        a = ops.add_parser(name, help=text)
        # Accepted after the action too (`hutong db upgrade --database URL`); SUPPRESS keeps
        # the value given before it when none is given here.
        a.add_argument("--database", metavar="URL", default=argparse.SUPPRESS, help=database_help)
        a.set_defaults(func=run, action=action)
