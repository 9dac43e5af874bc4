"""The databases benchmarks run against: a SQLite file under the cache that is
removed with its WAL, shared-memory and writer-lock files, and a throw-away
PostgreSQL cluster (the tests' own ``tests/pgcluster.py``)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from bench.data import CACHE

ROOT = Path(__file__).resolve().parents[1]


def remove_sqlite(path: Path) -> None:
    """A SQLite database file and everything SQLite and Hutong keep beside it."""
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}.lock")):
        p.unlink(missing_ok=True)


@contextlib.contextmanager
def sqlite_database(name: str, *, keep: bool = False) -> Iterator[str]:
    """The URL of a fresh SQLite file ``<cache>/<name>``, removed afterwards unless ``keep``."""
    path = (CACHE / name).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_sqlite(path)
    try:
        yield f"sqlite:///{path}"
    finally:
        if not keep:
            remove_sqlite(path)


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """The URL of a throw-away PostgreSQL cluster (durable settings: fsync on)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from pgcluster import temporary_cluster  # a plain module shared with the tests

    with temporary_cluster(durable=True) as url:
        yield url
