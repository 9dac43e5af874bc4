"""The schema version and its ordered migrations (Alembic).

Every table is created and changed by a migration in ``versions/``, never by a
constructor.  The version is Alembic's ``alembic_version`` row.  Opening a
database (:func:`hutong.store.database.open_database`) calls :func:`check`:

- an empty database is brought to the head revision (so the first run, the
  demo and the tests need no extra step);
- a database at the head opens (one primary-key read: the common case);
- an older database -- including one of release bc329d5, which has tables but
  no version -- is refused with HT-0321 "run `hutong db upgrade`", unless
  ``HUTONG_AUTO_MIGRATE=1`` asks for the upgrade to run on open;
- a database newer than this code is refused with HT-0320 naming both
  versions: running old code on a newer schema would write rows the newer
  release does not expect, and migrations never go backwards.

An upgrade runs in one transaction under the schema lock (PostgreSQL advisory
lock; SQLite ``BEGIN IMMEDIATE`` plus the store's writer lock), so two
processes starting together upgrade once and a failed upgrade changes nothing.

Adding a migration: add ``versions/vNNNN_<what>.py`` (revision "NNNN",
``down_revision`` the previous head; copy ``script.py.mako``) and change the
Table definitions on :data:`hutong.store.schema.metadata` to match, in the same
commit;
tests/store/test_migrations.py fails when the migrated schema and the MetaData
differ.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hutong.errors import ConfigError, HutongError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from hutong.store.database import Database

SCRIPTS = Path(__file__).parent
_SCRIPT_NAME = re.compile(r"v(\d{4})_\w+\.py")

REVISIONS: tuple[str, ...] = tuple(sorted(m.group(1) for p in (SCRIPTS / "versions").iterdir()
                                          if (m := _SCRIPT_NAME.fullmatch(p.name))))
"""Every revision this code knows, oldest first: the ``vNNNN_*.py`` file names, read
without importing Alembic (opening a database at the head must stay one cheap read);
a test checks them against Alembic's own chain of ``down_revision``."""
HEAD = REVISIONS[-1]
VERSION_TABLE = "alembic_version"
AUTO_MIGRATE_ENV = "HUTONG_AUTO_MIGRATE"
LEGACY = "unversioned"
"""What :func:`current` calls a database of release bc329d5 or earlier (tables, no version)."""
PG_SCHEMA_LOCK = 7238001  # pg_advisory_xact_lock key: the one hutong.store.database used for create_all


@dataclass(frozen=True)
class Version:
    """Where a database stands: ``revision`` is a revision id, :data:`LEGACY` or None (empty)."""

    revision: str | None

    @property
    def empty(self) -> bool:
        return self.revision is None

    @property
    def at_head(self) -> bool:
        return self.revision == HEAD

    @property
    def newer(self) -> bool:
        return self.revision is not None and self.revision != LEGACY and self.revision not in REVISIONS

    def __str__(self) -> str:
        if self.revision is None:
            return "empty (no Hutong tables)"
        if self.revision == LEGACY:
            return f"{LEGACY} (a release before schema versions, e.g. bc329d5; upgrades from before {REVISIONS[0]})"
        return self.revision + (" (head)" if self.at_head else "")


def auto_migrate() -> bool:
    return os.environ.get(AUTO_MIGRATE_ENV, "").strip().lower() in ("1", "true", "yes")


def _version_of(conn: Connection) -> Version:
    """Read the version on ``conn`` (inside the caller's transaction)."""
    from sqlalchemy import inspect, text

    names = set(inspect(conn).get_table_names())
    if VERSION_TABLE in names:
        rows = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()  # noqa: S608
        if len(rows) > 1:
            raise ConfigError("HT-0323", f"the database's {VERSION_TABLE} holds several versions {sorted(rows)}: "
                              "branched migrations are not a Hutong schema")
        if rows:
            return Version(str(rows[0]))
    if "resource" not in names:
        # Empty, or only other applications' tables (a shared PostgreSQL schema;
        # issue 12's test of an old file's permissions): ours are created beside
        # them, as release bc329d5's create_all did.
        return Version(None)
    # Release bc329d5 and earlier always made the store's tables on open.
    return Version(LEGACY)


def _newer_error(v: Version) -> ConfigError:
    return ConfigError("HT-0320", f"the database schema is at revision {v.revision}, newer than this release of "
                       f"hutong (schema {HEAD}): run the release that wrote it or a later one; migrations "
                       "never go backwards (restore a backup taken before the upgrade to go back)")


def _older_error(v: Version) -> ConfigError:
    return ConfigError("HT-0321", f"the database schema is at {v}, older than this release of hutong "
                       f"(schema {HEAD}): back it up, then run `hutong db upgrade` (with the same --database "
                       f"or HUTONG_DATABASE_URL), or set {AUTO_MIGRATE_ENV}=1 to upgrade on open")


def _fast_revision(db: Database) -> str | None:
    """The stored revision by one primary-key read, or None when that read fails
    (no version table yet: the slow path looks properly, under the lock)."""
    try:
        with db.connection() as conn:
            cur = conn.cursor()
            try:
                cur.execute(f"SELECT version_num FROM {VERSION_TABLE}")  # noqa: S608
                rows = cur.fetchall()
            finally:
                cur.close()
    except Exception:  # no such table (sqlite3 / psycopg error classes differ); decided under the lock
        return None
    return str(rows[0][0]) if len(rows) == 1 else None


def current(db: Database) -> Version:
    """The database's schema version (changes nothing)."""
    with db.engine.connect() as conn:
        return _version_of(conn)


def check(db: Database, *, upgrade_older: bool | None = None) -> Version:
    """Make sure ``db`` is at the head revision before anything uses it.

    Creates the schema of an empty database; refuses a newer one (HT-0320) and
    an older one (HT-0321) unless ``upgrade_older`` (default: HUTONG_AUTO_MIGRATE).
    Returns the version found before any change.
    """
    rev = _fast_revision(db)
    if rev == HEAD:
        return Version(rev)
    if rev is not None and rev not in REVISIONS:
        raise _newer_error(Version(rev))
    allow = auto_migrate() if upgrade_older is None else upgrade_older
    return _migrate(db, allow_older=allow)


def upgrade(db: Database) -> tuple[Version, Version]:
    """``hutong db upgrade``: bring ``db`` to the head revision; (before, after)."""
    before = _migrate(db, allow_older=True)
    return before, Version(HEAD)


def _migrate(db: Database, *, allow_older: bool) -> Version:
    """Under the schema lock and in one transaction: read the version again and
    run the migrations from there to the head when allowed."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    with db.write_lock(), db.engine.connect() as conn:
        try:
            # Our own BEGIN: both engines run DBAPI connections in autocommit
            # mode (hutong.store.database), so SQLAlchemy's implicit begin would
            # not open a transaction and a failed migration would leave half a
            # schema.  PostgreSQL and SQLite both have transactional DDL.
            conn.exec_driver_sql(db.begin_sql())
            if db.dialect == "postgresql":
                # Serialise schema changes between processes starting together.
                conn.execute(text(f"SELECT pg_advisory_xact_lock({PG_SCHEMA_LOCK})"))
            before = _version_of(conn)
            if before.at_head:
                conn.exec_driver_sql("COMMIT")
                return before
            if before.newer:
                raise _newer_error(before)
            if not before.empty and not allow_older:
                raise _older_error(before)
            cfg = Config()
            cfg.set_main_option("script_location", str(SCRIPTS))
            cfg.attributes["connection"] = conn
            # A legacy database has no version: upgrading it starts from the
            # base, and revision 0001 creates only the tables it lacks.
            command.upgrade(cfg, "head")
            conn.exec_driver_sql("COMMIT")
            conn.commit()  # SQLAlchemy's own view of the (already ended) transaction
            return before
        except HutongError:
            _rollback(conn)
            raise
        except Exception as e:  # a driver error (full disk, lost connection) or a failed DDL statement
            _rollback(conn)
            raise ConfigError("HT-0322", f"schema upgrade to {HEAD} failed, nothing was changed: "
                              f"{type(e).__name__}: {e}") from e


def _rollback(conn: Any) -> None:
    try:
        conn.exec_driver_sql("ROLLBACK")
    except Exception:  # no transaction left (the failure ended it): nothing to undo
        pass
    try:
        conn.rollback()
    except Exception:
        pass
