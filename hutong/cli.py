"""The ``hutong`` command.

Each sub-command lives in the module of the concept it drives and registers
itself through a ``register(subparsers)`` function listed in COMMAND_MODULES,
so this file stays an index.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hutong import __version__
from hutong.errors import HutongError

COMMAND_MODULES: tuple[str, ...] = (
    "hutong.web.serve_cmd",
    "hutong.ingest.import_cmd",
    "hutong.web.demo_cmd",
    "hutong.synth.cli",
    "hutong.web.mpi_cmd",
    "hutong.ingest.ingest_cmd",
    "hutong.security.audit_cmd",
    "hutong.security.accounts_cmd",
    "hutong.security.sharing_cmd",
    "hutong.security.keys_cmd",
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
    except HutongError as e:
        print(f"hutong: error: {e.code}: {e.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
