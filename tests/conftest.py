"""Test harness: real databases and a real HTTP server.

- SQLite: a fresh file per test.
- PostgreSQL: the harness starts its own server (initdb + pg_ctl from Debian's
  postgresql package, which ``make test`` installs) on a free loopback port
  once per session, unless HUTONG_TEST_PG_URL points at one; tables are
  emptied between tests.
- ``server``: the whole ASGI app served by uvicorn on a free port in a thread,
  reached through httpx, so every test goes through real HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Server, serve_app
from pgcluster import temporary_cluster

from hutong.fhir.assembly import open_repository
from hutong.store.sql import SqlRepository


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    try:
        with temporary_cluster() as url:
            yield url
    except RuntimeError as e:
        pytest.fail(str(e))


def _truncate(url: str) -> None:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        # Every table in the schema, except the ids of search parameters and the
        # schema version (hutong.store.migrations: emptied, the next open would
        # take the tables for a database from before schema versions).
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "AND tablename NOT IN ('search_param', 'alembic_version')")]
        if tables:
            conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY")


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/hutong.db"
    url: str = request.getfixturevalue("pg_server")
    _truncate(url)
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/hutong.db"


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
