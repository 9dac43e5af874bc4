"""A second open of a SQLite database in a process that already has it open
must not drop the first one's locks (sqlite.org/howtocorrupt.html 2.2).

Found by the MLLP benchmark: the listener and the HTTP worker each open the
database in one process; when another process (a CLI command, the benchmark's
counter) then opened and closed the database, its close found no other reader
and deleted the live WAL, so commits acknowledged afterwards were lost.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from hutong.store.database import open_database


def test_second_open_in_one_process_keeps_commits_durable(tmp_path: Path) -> None:
    path = tmp_path / "hutong.db"
    url = f"sqlite:///{path}"
    first = open_database(url)
    with first.connection() as conn:
        conn.execute("CREATE TABLE t (v INTEGER)")
        conn.execute("INSERT INTO t (v) VALUES (0)")
    # Another component of the same process opens the same database.
    second = open_database(url)
    # Another process opens and closes it (a CLI command, a monitoring script).
    subprocess.run([sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                    "c.execute('SELECT COUNT(*) FROM t').fetchall(); c.close()", str(path)], check=True)
    with first.connection() as conn:
        for i in range(1, 51):
            conn.execute("INSERT INTO t (v) VALUES (?)", (i,))
    assert (tmp_path / "hutong.db-wal").exists(), "the live WAL was deleted under the open database"
    # What a fresh reader sees (a restart): every committed row.
    check = sqlite3.connect(path)
    try:
        assert check.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 51
    finally:
        check.close()
        second.close()
        first.close()
