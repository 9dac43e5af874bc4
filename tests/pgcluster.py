"""A throw-away PostgreSQL server for tests and benchmarks.

Uses Debian's postgresql binaries (``make test`` / ``make bench`` install the
package when missing); as root it runs them as the ``postgres`` user, since
initdb refuses to run as root.  Listens on loopback only.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: `make test` installs it (apt-get install postgresql)")
    return Path(found[-1]).parent


@contextmanager
def temporary_cluster(*, durable: bool = False) -> Iterator[str]:
    """Start a fresh cluster; yield its URL; stop and remove it afterwards.

    ``durable=False`` turns fsync off (tests); benchmarks pass True so the
    figures include real commit costs.
    """
    url = os.environ.get("HUTONG_TEST_PG_URL")
    if url:
        yield url
        return
    bindir = pg_bindir()
    root = os.geteuid() == 0
    data = Path(tempfile.mkdtemp(prefix="hutong-pg-"))
    port = free_port()
    as_pg: list[str] = ["runuser", "-u", "postgres", "--"] if root else []
    if root:
        shutil.chown(data, "postgres", "postgres")
    subprocess.run([*as_pg, str(bindir / "initdb"), "-D", str(data / "db"), "-U", "postgres", "--auth=trust",
                    "-E", "UTF8", "--no-locale"], check=True, capture_output=True)
    opts = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=1GB"
    if not durable:
        opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-o", opts, "-l",
                    str(data / "log"), "-w", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(data, ignore_errors=True)
