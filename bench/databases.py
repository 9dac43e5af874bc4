"""The databases benchmarks run against: a SQLite file under the cache that is
removed with its WAL, shared-memory, writer-lock files and key directory, and
a throw-away PostgreSQL cluster (the tests' own ``tests/pgcluster.py``) whose
key files live in a throw-away directory too.

Since issue 6 every database has key files (hutong.security.keys: master keys
that wrap the data and blind-index keys, the token signing key).  SQLite keeps
them beside the file (``<file>.keys/``); PostgreSQL by default under
``~/.hutong/keys/<host>-<port>-<db>/``, where a later cluster on the same free
port would meet an earlier run's keys, so the cluster's context points
HUTONG_KEY_DIR at its own directory (inherited by ``hutong`` child processes).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.data import CACHE

ROOT = Path(__file__).resolve().parents[1]


def remove_sqlite(path: Path) -> None:
    """A SQLite database file and everything SQLite and Hutong keep beside it."""
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}.lock")):
        p.unlink(missing_ok=True)
    shutil.rmtree(f"{path}.keys", ignore_errors=True)  # hutong.security.keys.default_key_dir


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
def key_dir(prefix: str) -> Iterator[Path]:
    """HUTONG_KEY_DIR set to a fresh directory under the cache for the block, then removed and restored."""
    CACHE.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix=prefix, dir=CACHE)).resolve()
    before = os.environ.get("HUTONG_KEY_DIR")
    os.environ["HUTONG_KEY_DIR"] = str(d)
    try:
        yield d
    finally:
        if before is None:
            os.environ.pop("HUTONG_KEY_DIR", None)
        else:
            os.environ["HUTONG_KEY_DIR"] = before
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """The URL of a throw-away PostgreSQL cluster (durable settings: fsync on), with its own key directory."""
    sys.path.insert(0, str(ROOT / "tests"))
    from pgcluster import temporary_cluster  # a plain module shared with the tests

    with key_dir("pg-keys-"), temporary_cluster(durable=True) as url:
        yield url


@contextlib.contextmanager
def kept_postgres_cluster(directory: Path) -> Iterator[tuple[str, bool]]:
    """A durable PostgreSQL cluster kept in ``directory`` between runs, with its key directory beside it:
    yields (URL, whether it existed already).  Created (initdb) the first time; started now, stopped (not
    removed) afterwards, so that a benchmark can load it once and measure on it again later."""
    sys.path.insert(0, str(ROOT / "tests"))
    from pgcluster import free_port, pg_bindir  # a plain module shared with the tests

    directory = directory.resolve()
    data = directory / "db"
    existed = (data / "PG_VERSION").exists()
    root = os.geteuid() == 0
    as_pg: list[str] = ["runuser", "-u", "postgres", "--"] if root else []
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "keys").mkdir(exist_ok=True)
    if root:
        shutil.chown(directory, "postgres", "postgres")
    bindir = pg_bindir()
    if not existed:
        subprocess.run([*as_pg, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E",
                        "UTF8", "--no-locale"], check=True, capture_output=True)
    port = free_port()
    opts = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=1GB"
    # BENCH_PG_OPTS: more server options for a profiling run, e.g.
    # "-c shared_preload_libraries=pg_stat_statements" (statements per request, bench_nodes).
    opts = f"{opts} {os.environ.get('BENCH_PG_OPTS', '')}".strip()
    subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(directory / "log"),
                    "-w", "start"], check=True, capture_output=True)
    before = os.environ.get("HUTONG_KEY_DIR")
    os.environ["HUTONG_KEY_DIR"] = str(directory / "keys")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", existed
    finally:
        if before is None:
            os.environ.pop("HUTONG_KEY_DIR", None)
        else:
            os.environ["HUTONG_KEY_DIR"] = before
        subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
