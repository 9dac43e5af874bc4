"""Schema version and migrations (issue 13, item 2), on SQLite and PostgreSQL.

The upgrade test builds its database with the previous release's own code:
``git archive bc329d5`` into a temporary directory, then that tree's
``hutong`` (this virtualenv's packages) runs tests/store/legacy_release.py.
Then this code refuses it until ``hutong db upgrade``, upgrades it, and finds
every row of every table unchanged, every resource version readable, the
accounts, the MPI links and a verifying audit chain.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from harness import SYNTHEA

import hutong
from hutong.cli import main
from hutong.errors import ConfigError
from hutong.store import migrations, schema
from hutong.store.database import open_database

REPO_ROOT = Path(__file__).resolve().parents[2]
PREVIOUS_RELEASE = "bc329d5"
SUBSET = {"Patient.000.ndjson": None, "Organization.000.ndjson": None, "Practitioner.000.ndjson": None,
          "AllergyIntolerance.000.ndjson": None, "Encounter.000.ndjson": 40, "Condition.000.ndjson": 40}


def _engine_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1) if url.startswith("postgresql://") else url


@pytest.fixture(params=["sqlite", "postgres"])
def blank_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of its own (PostgreSQL: a new database on the harness's server)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/blank.db"
        return
    import psycopg

    server: str = request.getfixturevalue("pg_server")
    name = f"mig_{secrets.token_hex(4)}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _table_names(url: str) -> set[str]:
    engine = sa.create_engine(_engine_url(url), poolclass=sa.pool.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _all_table_modules() -> None:
    """Import every module of the package, so every Table is declared."""
    for m in pkgutil.walk_packages(hutong.__path__, "hutong."):
        if not m.name.endswith("__main__") and ".migrations.versions" not in m.name and \
                not m.name.endswith(".migrations.env"):
            importlib.import_module(m.name)


# --------------------------------------------------------------------------- the scripts and the MetaData


def test_revisions_are_the_scripts_in_order() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations.SCRIPTS))
    script = ScriptDirectory.from_config(cfg)
    walked = [s.revision for s in script.walk_revisions("base", "heads")]
    assert tuple(reversed(walked)) == migrations.REVISIONS
    assert script.get_heads() == [migrations.HEAD]


def test_every_table_is_on_the_one_metadata() -> None:
    _all_table_modules()
    stray = []
    for m in pkgutil.walk_packages(hutong.__path__, "hutong."):
        mod = sys.modules.get(m.name)
        for name, value in vars(mod).items() if mod is not None else ():
            if isinstance(value, sa.MetaData) and value is not schema.metadata and ".migrations" not in m.name:
                stray.append(f"{m.name}.{name}")
            if isinstance(value, sa.Table) and value.metadata is not schema.metadata and ".migrations" not in m.name:
                stray.append(f"{m.name}.{name}")
    assert stray == []


def test_migrations_create_exactly_the_metadata(db_url: str) -> None:
    """Head of the migrations == the Table definitions (types, nullability, indexes):
    a table or column added to the MetaData without a migration fails here."""
    open_database(db_url).close()
    _all_table_modules()
    engine = sa.create_engine(_engine_url(db_url), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), schema.metadata)
    finally:
        engine.dispose()
    assert diff == []


# --------------------------------------------------------------------------- opening by version


def test_empty_database_is_created_at_head(blank_url: str) -> None:
    db = open_database(blank_url)
    try:
        assert migrations.current(db).revision == migrations.HEAD
    finally:
        db.close()
    _all_table_modules()
    assert _table_names(blank_url) == set(schema.metadata.tables) | {migrations.VERSION_TABLE}
    db = open_database(blank_url)  # a second open changes nothing
    db.close()


def _stamp(url: str, revision: str) -> None:
    engine = sa.create_engine(_engine_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": revision})
    finally:
        engine.dispose()


def test_newer_database_is_refused_naming_both_versions(blank_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    open_database(blank_url).close()
    _stamp(blank_url, "0099")
    with pytest.raises(ConfigError) as e:
        open_database(blank_url)
    assert e.value.code == "HT-0320"
    assert "0099" in e.value.message and f"schema {migrations.HEAD}" in e.value.message
    assert main(["serve", "--database", blank_url, "--port", "18999"]) == 2
    assert main(["db", "upgrade", "--database", blank_url]) == 2
    err = capsys.readouterr().err
    assert err.count("HT-0320") == 2 and "0099" in err
    assert main(["db", "current", "--database", blank_url]) == 0
    out = capsys.readouterr().out
    assert out.startswith("0099") and f"this release: {migrations.HEAD}" in out
    # nothing was changed by the refusals
    db = open_database(blank_url, create=False)
    try:
        assert migrations.current(db).revision == "0099"
    finally:
        db.close()


def test_older_database_refused_then_upgraded_on_open_when_asked(blank_url: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A database at 0001 (stamped by Alembic itself, nothing of 0002 in it)."""
    from alembic import command

    engine = sa.create_engine(_engine_url(blank_url), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            cfg = Config()
            cfg.set_main_option("script_location", str(migrations.SCRIPTS))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")
    finally:
        engine.dispose()
    assert "consent_author" not in _table_names(blank_url)
    monkeypatch.delenv(migrations.AUTO_MIGRATE_ENV, raising=False)
    with pytest.raises(ConfigError) as e:
        open_database(blank_url)
    assert e.value.code == "HT-0321" and "hutong db upgrade" in e.value.message and "0001" in e.value.message
    assert "consent_author" not in _table_names(blank_url)
    monkeypatch.setenv(migrations.AUTO_MIGRATE_ENV, "1")
    db = open_database(blank_url)
    try:
        assert migrations.current(db).revision == migrations.HEAD
    finally:
        db.close()
    assert {"consent_author", "token_cutoff", "signin_throttle", "audit_chain"} <= _table_names(blank_url)


def test_other_applications_tables_are_left_alone(tmp_path: Path) -> None:
    """No version and none of Hutong's tables: the schema is created beside them."""
    import sqlite3

    path = tmp_path / "other.db"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
        c.execute("INSERT INTO invoices VALUES (7)")
    open_database(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT id FROM invoices").fetchall() == [(7,)]
        assert c.execute("SELECT version_num FROM alembic_version").fetchall() == [(migrations.HEAD,)]


def test_several_versions_are_refused(blank_url: str) -> None:
    open_database(blank_url).close()
    engine = sa.create_engine(_engine_url(blank_url), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO alembic_version (version_num) VALUES ('0001')"))
    finally:
        engine.dispose()
    with pytest.raises(ConfigError) as e:
        open_database(blank_url)
    assert e.value.code == "HT-0323"


# --------------------------------------------------------------------------- upgrading the previous release


def _export_release(dest: Path) -> Path:
    if shutil.which("git") is None or subprocess.run(
            ["git", "-C", str(REPO_ROOT), "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}"],
            capture_output=True).returncode != 0:
        pytest.skip(f"needs the git history of this repository (commit {PREVIOUS_RELEASE})")
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", PREVIOUS_RELEASE, "hutong"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def _subset(dest: Path) -> Path:
    dest.mkdir()
    for name, lines in SUBSET.items():
        text = (SYNTHEA / name).read_text(encoding="utf-8").splitlines(keepends=True)
        (dest / name).write_text("".join(text if lines is None else text[:lines]), encoding="utf-8")
    return dest


def _snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (ordered by all columns), bytes as they are stored."""
    engine = sa.create_engine(_engine_url(url), poolclass=sa.pool.NullPool)
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        out: dict[str, list[tuple[Any, ...]]] = {}
        with engine.connect() as conn:
            for name, t in meta.tables.items():
                if name == migrations.VERSION_TABLE:
                    continue
                rows = conn.execute(sa.select(t).order_by(*t.c)).all()
                out[name] = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]
        return out
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def legacy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """(url, environment) of a database written by release bc329d5's code."""
    source = _export_release(tmp_path / "release")
    data = _subset(tmp_path / "data")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUTONG_")}
    if request.param == "sqlite":
        # The release's own default key directory (<file>.keys beside the database),
        # which this release still finds (hutong.security.keys.legacy_key_dir).
        url = f"sqlite:///{tmp_path}/region/hutong.db"
        cleanup = None
    else:
        import psycopg

        server: str = request.getfixturevalue("pg_server")
        name = f"legacy_{secrets.token_hex(4)}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = server.rsplit("/", 1)[0] + "/" + name
        env["HUTONG_KEY_DIR"] = str(tmp_path / "keys")

        def cleanup() -> None:
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    run_env = {**env, "PYTHONPATH": str(source), "LEGACY_SOURCE": str(source)}
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("legacy_release.py")), url, str(data)],
                          cwd=source, env=run_env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    try:
        yield url, env
    finally:
        if cleanup is not None:
            cleanup()


def test_previous_release_upgrades_intact(legacy: tuple[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    url, env = legacy
    for k in [k for k in os.environ if k.startswith("HUTONG_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        if k.startswith("HUTONG_"):
            monkeypatch.setenv(k, v)
    before = _snapshot(url)
    # What the previous release wrote (so the checks below cannot pass on an empty database).
    patients = {json.loads(line)["id"] for line in (SYNTHEA / "Patient.000.ndjson").read_text().splitlines()}
    assert migrations.VERSION_TABLE not in _table_names(url)
    # Tables of features the region never used were never made (constructors made them lazily).
    assert "consent_author" not in before and "sharing_request" not in before and "access_grant" not in before
    assert len(before["mpi_source"]) == len(patients)
    assert len(before["account"]) == 2 and len(before["audit_event"]) == 4
    assert before["resource_version"], "the second import made earlier versions"

    # This release refuses it, and says how to upgrade; nothing is written.
    with pytest.raises(ConfigError) as e:
        open_database(url)
    assert e.value.code == "HT-0321" and "hutong db upgrade" in e.value.message
    assert main(["serve", "--database", url, "--port", "18998"]) == 2
    assert "HT-0321" in capsys.readouterr().err
    assert main(["db", "current", "--database", url]) == 0
    assert capsys.readouterr().out.startswith(migrations.LEGACY)
    assert _snapshot(url) == before and migrations.VERSION_TABLE not in _table_names(url)

    assert main(["db", "upgrade", "--database", url]) == 0
    assert f"to {migrations.HEAD} (head)" in capsys.readouterr().out
    assert main(["db", "current", "--database", url]) == 0
    assert capsys.readouterr().out.strip() == f"{migrations.HEAD} (head)"

    # Every row of every table of the previous release is as it was; only the new tables were added.
    after = _snapshot(url)
    # (0007 appends columns to the audit tables: the earlier columns are compared, the new ones below)
    assert {t: [r[:len(before[t][0])] for r in after[t]] if before[t] else after[t] for t in before} == before
    assert all(r[-2:] == ("", r[0]) for r in after["audit_event"])   # chain "", chain_seq = seq
    assert set(after) - set(before) == {"consent_author", "token_cutoff", "signin_throttle", "audit_chain",
                                        # 0005: 互认 knowledge (issue 14, item 2)
                                        "cds_knowledge_version", "cds_hr_item", "cds_hr_item_region",
                                        "cds_hr_negative", "cds_hr_trigger", "cds_hr_quality", "cds_hr_local_code",
                                        "sharing_request", "sharing_export", "access_grant",
                                        # 0004: SMART App Launch (issue 15)
                                        "smart_client", "smart_authorization", "smart_launch", "smart_grant",
                                        "smart_grant_token",
                                        # 0006: the identity review's decision history (issue 16, item 6)
                                        "mpi_review_decision",
                                        # 0007: one audit chain per node (issue 18, item 2)
                                        "audit_ledger",
                                        # 0008: the key fingerprints every node's key directory must match
                                        "platform_key"}

    # Read back through this release's code: every version of every resource decrypts ...
    from hutong.fhir.assembly import open_repository
    from hutong.security.accounts import Accounts
    from hutong.security.settings import SecuritySettings

    repo = open_repository(url)
    try:
        versions = 0
        for type_, fhir_id, version in repo.query("SELECT type, fhir_id, version FROM resource"):
            for v in range(1, int(version) + 1):
                got = repo.vread(type_, fhir_id, v)
                assert got is not None and got.body is not None, (type_, fhir_id, v)
                assert json.loads(got.body)["id"] == fhir_id
                versions += 1
        assert versions == len(before["resource"]) + len(before["resource_version"])
        # ... every source Patient is linked to a golden person that reads back ...
        links = repo.query("SELECT patient_id, person_id FROM mpi_source")
        assert {str(p) for p, _ in links} == patients
        for _patient, person in links:
            golden = repo.read("Patient", str(person))
            assert golden is not None and golden.body is not None
        # ... and the accounts are there.
        accounts = Accounts(repo, SecuritySettings.from_env())
        auditor = accounts.by_username("auditor.legacy")
        assert auditor is not None and str(auditor.role) == "auditor"
        assert {a.id for a in accounts.list_accounts()} == {str(r[0]) for r in before["account"]}
    finally:
        repo.db.close()

    # The audit chain verifies (this release keys the unkeyed chain on its first open).
    assert main(["audit", "--database", url, "verify"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["ok"] is True and report["rows"] >= len(before["audit_event"])
    assert main(["db", "upgrade", "--database", url]) == 0
    assert "already at" in capsys.readouterr().out
