"""Test harness: real databases and a real HTTP server.

- SQLite: a fresh file per test, a copy of one made by the migrations once
  per session (the same file the first open would make, without running the
  Alembic upgrade again for every test; tests/store/test_migrations.py runs
  the migrations on empty databases of its own).
- PostgreSQL: the harness starts its own server (initdb + pg_ctl from Debian's
  postgresql package, which ``make test`` installs) on a free loopback port
  once per session, unless HUTONG_TEST_PG_URL points at one; tables are
  emptied between tests.
- ``server``: the whole ASGI app served by uvicorn on a free port in a thread,
  reached through httpx, so every test goes through real HTTP.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Server, serve_app
from pgcluster import temporary_cluster

from hutong.fhir.assembly import open_repository
from hutong.store.database import open_database
from hutong.store.sql import SqlRepository


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    try:
        with temporary_cluster() as url:
            yield url
    except RuntimeError as e:
        pytest.fail(str(e))


# Tables whose own sequences (serial columns: pg_depend 'a', identity: 'i') have been
# used since their last RESTART: an empty table can still hold a used sequence (a
# rolled-back insert).
_USED_SEQUENCES = """
SELECT DISTINCT t.relname FROM pg_sequences s
JOIN pg_class sc ON sc.relname = s.sequencename AND sc.relnamespace = s.schemaname::regnamespace
JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = sc.oid AND d.deptype IN ('a', 'i')
JOIN pg_class t ON t.oid = d.refobjid
WHERE s.schemaname = current_schema() AND s.last_value IS NOT NULL"""


def _truncate(url: str) -> None:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        # Every table in the schema, except the ids of search parameters and the
        # schema version (hutong.store.migrations: emptied, the next open would
        # take the tables for a database from before schema versions).
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "AND tablename NOT IN ('search_param', 'alembic_version')")]
        if not tables:
            return
        # Only the tables a test wrote (rows, or a used sequence) are truncated: a
        # TRUNCATE gives every table and index of the list new files, which cost
        # more than the one query that finds the few a test touched.  The result is
        # the same as truncating them all: every table empty, every table's sequence
        # restarted (audit_seq, owned by no table, was never restarted either).
        with_rows = conn.execute(" UNION ALL ".join(
            f"SELECT '{t}' WHERE EXISTS (SELECT 1 FROM \"{t}\")" for t in tables)).fetchall()  # noqa: S608
        used = conn.execute(_USED_SEQUENCES).fetchall()
        dirty = sorted(({r[0] for r in with_rows} | {r[0] for r in used}) & set(tables))
        if dirty:
            conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in dirty) + " RESTART IDENTITY")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty database at the head revision, made by open_database (the migrations) once."""
    path = tmp_path_factory.mktemp("sqlite-template") / "hutong.db"
    open_database(f"sqlite:///{path}").close()
    # The last close checkpoints and removes the WAL: the file alone is the database.
    assert not Path(str(path) + "-wal").exists(), "the template's WAL was not checkpointed"
    return path


def _fresh_sqlite(tmp_path: Path, template: Path) -> str:
    path = tmp_path / "hutong.db"
    # Private from the start, as hutong.store.database._private_files creates it.
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return _fresh_sqlite(tmp_path, request.getfixturevalue("sqlite_template"))
    url: str = request.getfixturevalue("pg_server")
    _truncate(url)
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    return _fresh_sqlite(tmp_path, sqlite_template)


@pytest.fixture
def repo(db_url: str) -> Iterator[SqlRepository]:
    r = open_repository(db_url)
    yield r
    r.db.close()



@pytest.fixture
def server(db_url: str) -> Iterator[Server]:
    yield from _serve(db_url)


def _serve(db_url: str, **settings: object) -> Iterator[Server]:
    yield from serve_app(db_url, **settings)


@pytest.fixture
def small_body_server(sqlite_url: str) -> Iterator[Server]:
    yield from _serve(sqlite_url, max_body_bytes=2048)
