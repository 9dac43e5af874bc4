"""What every ``hutong`` sub-command shares: its database, opened and closed
once, and JSON on standard output (the CLI's machine-readable answer)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from hutong.store.repository import Repository


def print_json(data: Any) -> int:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


@contextmanager
def repository(database: str | None) -> Iterator[Repository]:
    """The command's repository (encryption, policy hooks, residency check:
    hutong.platform), closed with its connection pools afterwards."""
    from hutong.platform import open_repository

    repo = open_repository(database)
    try:
        yield repo
    finally:
        repo.db.close()
