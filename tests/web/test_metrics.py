"""Operations (issue 18, item 3): /readyz, /metrics and their access rule,
through the running server on SQLite and PostgreSQL."""

from __future__ import annotations

import httpx
import sqlalchemy as sa
from harness import Server

from hutong.store import migrations


def _engine_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1) if url.startswith("postgresql://") else url


def _stamp(url: str, revision: str) -> None:
    """Set the stored schema version (as a restore of an older database, or another
    node's upgrade to a newer release, would leave it under a running node)."""
    engine = sa.create_engine(_engine_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": revision})
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- /readyz


def test_readyz_is_503_naming_the_schema_when_it_is_behind_or_ahead(server: Server, db_url: str) -> None:
    with httpx.Client(base_url=server.root) as anonymous:  # a load balancer has no token
        r = anonymous.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "ready", "checks": {
            "database": {"status": "ok"}, "schema": {"status": "ok"}, "keys": {"status": "ok"}}}
        assert r.headers["cache-control"] == "no-store"
        older = migrations.REVISIONS[-2]
        _stamp(db_url, older)
        r = anonymous.get("/readyz")
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["status"] == "not ready" and body["not_ready"] == ["schema"], body
        assert body["checks"]["schema"]["code"] == "HT-0421"
        assert older in body["checks"]["schema"]["problem"] and "hutong db upgrade" in body["checks"]["schema"]["problem"]
        assert body["checks"]["database"] == {"status": "ok"} and body["checks"]["keys"] == {"status": "ok"}
        _stamp(db_url, "0099")  # a newer release's schema (another node upgraded): not ready either
        r = anonymous.get("/readyz")
        assert r.status_code == 503 and "newer" in r.json()["checks"]["schema"]["problem"], r.text
        _stamp(db_url, migrations.HEAD)
        assert anonymous.get("/readyz").status_code == 200
        # nothing of the database's address or credentials in the public answer
        assert "127.0.0.1" not in r.text and "postgres" not in r.text.lower() and "sqlite" not in r.text.lower()
        assert anonymous.get("/healthz").status_code == 200
