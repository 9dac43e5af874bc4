"""A throw-away PostgreSQL primary with a streaming hot standby, on loopback (issue 18, item 2).

As tests/pgcluster.py: Debian's binaries, run as the ``postgres`` user when
we are root (initdb refuses root), trust authentication on loopback only, a
temporary directory removed afterwards.  Unlike the suite's cluster this one
is durable (fsync on): the failover test is about what survives.

- The primary: ``wal_level = replica``, ``max_wal_senders``, and a physical
  replication slot made by ``pg_basebackup -C -S`` (the primary keeps every
  WAL segment the standby has not received, so a standby that falls behind
  catches up instead of needing a new base backup;
  https://www.postgresql.org/docs/15/warm-standby.html#STREAMING-REPLICATION-SLOTS).
- The standby: ``pg_basebackup -R`` (``standby.signal`` and
  ``primary_conninfo`` written into the copy), ``hot_standby = on`` so it
  answers read-only queries while it replays
  (https://www.postgresql.org/docs/15/hot-standby.html).
- ``synchronous=True`` (the default) names the standby in the primary's
  ``synchronous_standby_names`` with ``synchronous_commit = on``: a commit
  returns only once the standby has flushed its WAL to disk
  (https://www.postgresql.org/docs/15/warm-standby.html#SYNCHRONOUS-REPLICATION),
  so every commit the app acknowledged is on the standby when it is promoted.
  Asynchronous replication loses the commits the standby had not yet
  received when the primary died.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import LiteralString

from pgcluster import free_port, pg_bindir

AS_PG: list[str] = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
STANDBY_NAME = "standby1"  # application_name of its WAL receiver, slot name and synchronous_standby_names entry


@dataclass
class Node:
    """One PostgreSQL server of the pair."""

    name: str
    data: Path
    port: int
    log: Path
    sock: Path

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*AS_PG, str(pg_bindir() / "pg_ctl"), "-D", str(self.data), *args],
                              capture_output=True, text=True, timeout=timeout)

    def start(self) -> None:
        r = self.pg_ctl("-o", f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1", "-l", str(self.log),
                        "-w", "-t", "90", "start")
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl start {self.name} failed: {r.stdout}{r.stderr}"
                               f"{self.log.read_text() if self.log.exists() else ''}")

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self.pg_ctl("-m", mode, "-w", "stop")

    def promote(self) -> None:
        """``pg_ctl promote``: the standby leaves recovery and opens for writes (-w waits until it has)."""
        r = self.pg_ctl("-w", "-t", "60", "promote")
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl promote {self.name} failed: {r.stdout}{r.stderr}")

    def scalar(self, sql: LiteralString, params: tuple[object, ...] = ()) -> object:
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            cur = conn.execute(sql, params)
            row = cur.fetchone() if cur.description else None
            return row[0] if row else None


@dataclass
class Pair:
    primary: Node
    standby: Node
    synchronous: bool

    def wait_streaming(self, timeout: float = 60) -> str:
        """Wait until the primary sees the standby streaming; returns its sync_state ('sync' or 'async')."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.primary.scalar(
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = %s AND state = 'streaming'",
                (STANDBY_NAME,))
            want = "sync" if self.synchronous else "async"
            if state == want:
                return str(state)
            if time.monotonic() > deadline:
                raise RuntimeError(f"standby not streaming ({state!r}); see {self.standby.log}")
            time.sleep(0.2)


def _append(conf: Path, text: str) -> None:
    with conf.open("a", encoding="utf-8") as f:
        f.write(text)


@contextmanager
def primary_and_standby(*, synchronous: bool = True) -> Iterator[Pair]:
    """Start a durable primary and a hot standby streaming from it; stop and remove both afterwards."""
    bindir = pg_bindir()
    root = Path(tempfile.mkdtemp(prefix="hutong-replica-"))
    if AS_PG:
        shutil.chown(root, "postgres", "postgres")
    primary = Node("primary", root / "primary", free_port(), root / "primary.log", root)
    standby = Node("standby", root / "standby", free_port(), root / "standby.log", root)
    try:
        subprocess.run([*AS_PG, str(bindir / "initdb"), "-D", str(primary.data), "-U", "postgres", "--auth=trust",
                        "-E", "UTF8", "--no-locale"], check=True, capture_output=True)
        # initdb's pg_hba.conf with --auth=trust already lets loopback connect for replication
        # ("host replication all 127.0.0.1/32 trust"); listen_addresses keeps everything on loopback.
        _append(primary.data / "postgresql.conf", "\n# tests/ops/pgreplica.py\n"
                "fsync = on\nsynchronous_commit = on\nfull_page_writes = on\n"
                "wal_level = replica\nmax_wal_senders = 5\nmax_replication_slots = 5\n"
                "hot_standby = on\nmax_connections = 200\nshared_buffers = 128MB\n"
                + (f"synchronous_standby_names = '{STANDBY_NAME}'\n" if synchronous else ""))
        primary.start()
        r = subprocess.run([*AS_PG, str(bindir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port),
                            "-U", "postgres", "--no-password", "-D", str(standby.data), "-R", "-X", "stream",
                            "-C", "-S", STANDBY_NAME, "--checkpoint=fast"],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"pg_basebackup failed: {r.stderr[-500:]}")
        # -R wrote primary_conninfo without an application_name; a later line in postgresql.auto.conf wins, and
        # the name is what synchronous_standby_names matches.  The standby names no synchronous standby of its
        # own: once promoted it must not wait for one that does not exist (a promoted standby would otherwise
        # hang every commit until the operator added one).
        _append(standby.data / "postgresql.auto.conf",
                f"\n# tests/ops/pgreplica.py\nprimary_conninfo = 'host=127.0.0.1 port={primary.port} user=postgres "
                f"application_name={STANDBY_NAME}'\nprimary_slot_name = '{STANDBY_NAME}'\n"
                "synchronous_standby_names = ''\nhot_standby = on\n")
        standby.start()
        pair = Pair(primary, standby, synchronous)
        pair.wait_streaming()
        yield pair
    finally:
        for n in (standby, primary):
            try:
                n.stop("immediate")
            except (OSError, subprocess.SubprocessError):
                pass
        shutil.rmtree(root, ignore_errors=True)
