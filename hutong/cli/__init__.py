"""The ``hutong`` command (the ``hutong`` console script; ``python -m hutong.cli``).

Each sub-command is one module of this package with a ``register(subparsers)``
function listed in COMMAND_MODULES, so this file stays an index; what they
share (the database, JSON output) is :mod:`hutong.cli.context`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hutong import __version__
from hutong.errors import HutongError

COMMAND_MODULES: tuple[str, ...] = (
    "hutong.cli.serve",
    "hutong.cli.import_",
    "hutong.cli.demo",
    "hutong.cli.synth",
    "hutong.cli.mpi",
    # Moves here when its owner's ingestion-envelope work lands (issue 13, item 5).
    "hutong.ingest.ingest_cmd",
    "hutong.cli.audit",
    "hutong.cli.accounts",
    "hutong.cli.sharing",  # also `hutong export`
    "hutong.cli.keys",
    "hutong.cli.terminology",  # load operator-supplied code systems (issue 15, item 8)
    "hutong.cli.smart",  # SMART App Launch: register third-party apps (issue 15)
    "hutong.cli.simulate",  # the region's hospitals sending HL7 v2 and CDA (issue 16)
    # `hutong db` (schema migrations, issue 13 item 2) moves here once its owner is done.
    "hutong.store.db_cmd",
    "hutong.cli.backup",  # `hutong backup`, `hutong restore` (issue 18)
    "hutong.cli.cds",  # decision-support knowledge versions: load, approve, retire (issue 14)
    "hutong.cli.index",  # `hutong index rebuild`: the search index after an upgrade adds parameters
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hutong",
        description="Hutong (互通) regional health information platform.",
        epilog="Database: --database URL (sqlite:///path or postgresql://...) or HUTONG_DATABASE_URL.",
    )
    parser.add_argument("--version", action="version", version=f"hutong {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


# Commands that change stored data from the operator's own shell: each run
# leaves an audit row (the local operator acts as the platform; issue 6: every
# write is audited, whatever its path).  serve/demo audit each request
# themselves; audit, sharing and export write their own rows.
# A backup copies every resident's record: who took one, when, is audited like any
# bulk read.  (restore is not: its target is a new database, audited from then on.)
AUDITED_COMMANDS = frozenset({"import", "mpi", "ingest", "accounts", "keys", "terminology", "smart", "backup",
                              "index"})


def _audit_cli(args: argparse.Namespace, argv: Sequence[str], outcome: str, code: str | None) -> None:
    from hutong.platform import open_repository
    from hutong.security.audit import AuditLog
    from hutong.security.events import AuditRecord
    from hutong.security.principal import LOCAL_OPERATOR
    from hutong.store.database import resolve_url

    repo = open_repository(resolve_url(getattr(args, "database", None)))
    try:
        # The command line itself goes into the encrypted part of the row (it may
        # name an account's phone number).
        AuditLog(repo).record(AuditRecord(action=f"cli-{args.command}", outcome=outcome, principal=LOCAL_OPERATOR,
                                          interaction=("hutong " + " ".join(argv))[:500], code=code,
                                          purpose="platform"))
    finally:
        repo.db.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    audited = (args.command in AUDITED_COMMANDS and "-h" not in argv and "--help" not in argv
               and not getattr(args, "no_cli_audit", False))  # e.g. keys restore-backup audits itself
    try:
        if args.command != "serve":  # serve configures its own logs (JSON by default)
            from hutong.config import env

            if env("HUTONG_LOG_FORMAT"):
                from hutong import logs

                logs.configure("text")
        rc: int = args.func(args)
    except HutongError as e:
        print(f"hutong: error: {e.code}: {e.message}", file=sys.stderr)
        if audited:
            _try_audit(args, argv, "8", e.code)
        return 2
    except KeyboardInterrupt:
        return 130
    if audited:
        _try_audit(args, argv, "0" if rc == 0 else "8", None)
    return rc


def _try_audit(args: argparse.Namespace, argv: Sequence[str], outcome: str, code: str | None) -> None:
    try:
        _audit_cli(args, argv, outcome, code)
    except Exception as e:  # e.g. the database URL itself was the problem
        print(f"hutong: warning: this command was not audited ({getattr(e, 'code', type(e).__name__)})",
              file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
