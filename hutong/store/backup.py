"""Backup and restore of a Hutong database (issue 18, item 1).

A backup is a directory::

    <out>/manifest.json     what it is: format, hutong version, schema revision,
                            when, of what, and the SHA-256 and size of each file
    <out>/hutong.db         SQLite: a consistent copy made online (the backup API)
    <out>/hutong.pgdump     PostgreSQL: a logical export (pg_dump, custom format)

The keys are not in it.  A database's keys live apart from it on purpose
(hutong.security.keys.default_key_dir: whoever copies the data directory must
not get the keys with it), and a backup keeps them apart as well: the caller
copies the key directory to a place of its own (``hutong backup --keys-to``),
and ``hutong restore --keys-from`` puts them where the restored database
looks for them.  A backup without its keys restores to a database nobody can
read: the command says so each time.

SQLite: ``sqlite3.Connection.backup`` copies the pages of one read snapshot
(https://sqlite.org/backup.html), step by step, flushing the copy to disk as it
grows (:func:`_sqlite_copy`); in WAL mode the server's writers go on
meanwhile, and the copy is the database as of one commit.  PostgreSQL:
``pg_dump`` reads one REPEATABLE READ snapshot
(https://www.postgresql.org/docs/current/app-pgdump.html); physical base
backups with WAL archiving and point-in-time recovery, the tool for a city's
primary, are hutong.store.pitr (``hutong backup --physical``).

``backup(..., passphrase=...)`` (``hutong backup --encrypt``) stores the data
file sealed with an operator's passphrase instead (``<name>.enc``,
hutong.store.backup_crypto); the manifest checksums the sealed file.

Restore refuses (nothing written where the database goes): a target that
exists and is not empty, a backup whose files do not match their checksums
(corrupt or truncated), a backup of a schema newer than this release, and keys
that do not open it.  Everything is written beside the target first and moved
into place last.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from hutong import __version__
from hutong.errors import ConfigError
from hutong.store import backup_crypto, migrations
from hutong.store.database import open_database

FORMAT = "hutong-backup/1"
MANIFEST = "manifest.json"
SQLITE_FILE = "hutong.db"
PG_FILE = "hutong.pgdump"
_CHUNK = 1 << 20
# Bytes of SQLite pages copied per backup step: the copy is flushed to disk after each
# step (see _sqlite_copy), so that no more than this is ever waiting to be written.
STEP_BYTES = 1 << 20


@dataclass(frozen=True)
class Manifest:
    format: str
    hutong: str
    dialect: str
    schema: str
    created: str
    files: dict[str, dict[str, Any]]
    encrypted: str | None = None  # the plain file's name when it is stored as <name>.enc (hutong.store.backup_crypto)

    def to_json(self) -> dict[str, Any]:
        out = {"format": self.format, "hutong": self.hutong, "dialect": self.dialect, "schema": self.schema,
               "created": self.created, "files": self.files,
               "keys": "not included: the database's keys are kept apart (see hutong.store.backup)"}
        if self.encrypted:
            out["encrypted"] = self.encrypted
            out["encryption"] = "AES-256-GCM, key from an operator's passphrase by scrypt (hutong.store.backup_crypto)"
        return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fdatasync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _sqlite_copy(source: Path, dest: Path, *, step_bytes: int = STEP_BYTES,
                 max_bytes_per_s: float | None = None) -> tuple[int, int]:
    """Copy the database at ``source`` into the new file ``dest`` online, as of one commit;
    returns (backup steps, restarts: 0 when the held snapshot works as it should).

    One read transaction is held on the source over every step of the backup API
    (https://sqlite.org/backup.html): in WAL mode each step then reads the same snapshot,
    and the server's writers, which go on meanwhile, never restart it (a step that begins a
    new read transaction after another connection wrote starts the copy again, which is why
    it used to be one step).  After each step of ``step_bytes`` the copy is flushed to
    disk, so that little of it is ever waiting to be written: a server's commit flushes the
    disk's cache (fdatasync), and waits for whatever the copy has in flight.  Measured
    (issue 18, 1M resources, bench.bench_backup on this project's virtual disk): copied
    in one step, a 4.3 GB database left gigabytes of dirty pages that the kernel then
    wrote back while the server's commits waited on their own fsyncs (write p99 169 ms
    against 6 ms); in 64 MiB steps write p99 was still ~10x the p99 without a backup;
    in 1 MiB steps 3.2x, and 2.2x with the command behind the server (hutong.cli.priority,
    the default).  An 8 KB write's fdatasync beside another
    process flushing 64 MiB at a time took p99 18 ms, beside 1 MiB at a time 1.3 ms
    (0.3 ms alone).  A read snapshot held as long as a backup, copying nothing, did not
    slow the writes (``bench_backup --control snapshot``).
    With ``max_bytes_per_s`` the steps are paced (a sleep after each) so that the copy
    never runs ahead of that rate.
    """
    src = sqlite3.connect(str(source), timeout=30, isolation_level=None)
    steps = restarts = 0
    left: int | None = None
    page_size = int(src.execute("PRAGMA page_size").fetchone()[0])
    t0 = time.monotonic()
    try:
        src.execute("BEGIN")
        src.execute("SELECT count(*) FROM sqlite_master").fetchall()  # the snapshot starts here
        dst = sqlite3.connect(str(dest), isolation_level=None)
        try:
            # The copy is synced step by step and once at the end; its own journal is no use.
            dst.execute("PRAGMA synchronous=OFF")

            def flushed(_status: int, remaining: int, total: int) -> None:
                nonlocal steps, restarts, left
                steps += 1
                if left is not None and remaining > left:
                    restarts += 1  # the copy began again: it saw another connection's commit
                left = remaining
                _fdatasync(dest)
                if max_bytes_per_s:
                    ahead = (total - remaining) * page_size / max_bytes_per_s - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)

            src.backup(dst, pages=max(1, step_bytes // page_size), progress=flushed)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        finally:
            dst.close()
        src.execute("COMMIT")
    finally:
        src.close()
    _fdatasync(dest)
    return steps, restarts


def _sqlite_path(url: str) -> Path:
    return Path(str(make_url(url).database)).absolute()


def _empty_dir(path: Path, what: str) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError("HT-0330", f"{what} {path} exists and is not an empty directory: nothing written")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def _schema_of(url: str) -> str:
    db = open_database(url, create=False)
    try:
        return str(migrations.current(db).revision)
    finally:
        db.close()


def _pg_tool(name: str) -> str:
    """pg_dump / pg_restore: on PATH, else the newest Debian PostgreSQL's."""
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True):
        if (d / name).exists():
            return str(d / name)
    raise ConfigError("HT-0333", f"{name} not found (install the postgresql-client package)")


def _pg_args(url: str) -> tuple[list[str], dict[str, str]]:
    """Connection options for the PostgreSQL tools, the password by environment (never argv)."""
    u = make_url(url)
    args = ["--host", str(u.host or "localhost"), "--port", str(u.port or 5432), "--username", str(u.username or ""),
            "--dbname", str(u.database or "")]
    env = {**os.environ}
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    q = dict(u.query)
    if "host" in q:  # a Unix socket directory given as ?host=
        args[1] = str(q["host"])
    return args, env


def backup(url: str, out: Path, *, passphrase: str | None = None, step_bytes: int = STEP_BYTES,
           max_bytes_per_s: float | None = None, seconds: dict[str, float] | None = None) -> Manifest:
    """Back up the database at ``url`` into the new directory ``out`` (see the module docstring);
    with ``passphrase``, its data file is stored encrypted (hutong.store.backup_crypto) and the plain
    copy is removed as soon as it is sealed.  ``seconds``, when given, receives how long the copy
    (``copy``: the snapshot was held that long), the sealing and the checksum took."""
    took = seconds if seconds is not None else {}
    t = time.monotonic()
    if passphrase is not None:
        backup_crypto.check_passphrase(passphrase)
    backend = make_url(url).get_backend_name()
    _empty_dir(out, "backup directory")
    schema = _schema_of(url)
    if backend == "sqlite":
        dest = out / SQLITE_FILE
        _sqlite_copy(_sqlite_path(url), dest, step_bytes=step_bytes, max_bytes_per_s=max_bytes_per_s)
        os.chmod(dest, 0o600)
        name = SQLITE_FILE
    elif backend == "postgresql":
        args, env = _pg_args(url)
        dest = out / PG_FILE
        r = subprocess.run([_pg_tool("pg_dump"), *args, "--format=custom", "--no-owner", "--file", str(dest)],
                           env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise ConfigError("HT-0333", f"pg_dump failed ({r.returncode}): {r.stderr.strip()[-300:]}")
        os.chmod(dest, 0o600)
        name = PG_FILE
    else:
        raise ConfigError("HT-0070", f"cannot back up a {backend} database; use sqlite:///path or postgresql://...")
    took["copy"] = round(time.monotonic() - t, 2)
    t = time.monotonic()
    encrypted = None
    if passphrase is not None:
        sealed = out / (name + backup_crypto.SUFFIX)
        try:
            backup_crypto.encrypt_file(dest, sealed, passphrase)
        finally:
            dest.unlink()  # the plain copy lived only while it was being sealed
        encrypted, name, dest = name, sealed.name, sealed
        took["seal"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
    digest = _sha256(dest)
    took["checksum"] = round(time.monotonic() - t, 2)
    m = Manifest(FORMAT, __version__, backend, schema, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 {name: {"sha256": digest, "bytes": dest.stat().st_size}}, encrypted)
    (out / MANIFEST).write_text(json.dumps(m.to_json(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return m


def read_manifest(src: Path) -> Manifest:
    """The backup's manifest, every file checked against its size and SHA-256 (HT-0331 otherwise)."""
    try:
        raw = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
        m = Manifest(raw["format"], raw["hutong"], raw["dialect"], raw["schema"], raw["created"], raw["files"],
                     raw.get("encrypted"))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError("HT-0331", f"{src} is not a Hutong backup (manifest.json missing or unreadable)") from e
    if m.format != FORMAT:
        raise ConfigError("HT-0331", f"{src}: backup format {m.format!r}, this release reads {FORMAT!r}")
    for name, meta in m.files.items():
        f = src / name
        if not f.is_file() or f.stat().st_size != meta.get("bytes") or _sha256(f) != meta.get("sha256"):
            raise ConfigError("HT-0331", f"{src}/{name} does not match its checksum (corrupt or truncated backup): "
                                         "nothing restored")
    if m.schema not in migrations.REVISIONS:
        raise ConfigError("HT-0320", f"the backup's schema {m.schema} is not one this release knows "
                                     f"(head {migrations.HEAD}): restore it with the release that made it")
    return m


def restore(src: Path, url: str, *, passphrase: str | None = None) -> Manifest:
    """Restore the backup in ``src`` to the new database ``url`` (refusals: the module docstring).

    An encrypted backup needs its ``passphrase`` (HT-0620 without, HT-0621
    when wrong); it is decrypted beside the target, never in place.  The
    caller opens the result with its keys (``hutong restore`` does, and
    removes it again when they do not open it)."""
    m = read_manifest(src)
    backend = make_url(url).get_backend_name()
    if backend != m.dialect:
        raise ConfigError("HT-0332", f"the backup is of a {m.dialect} database; restore it to a {m.dialect} URL")
    if m.encrypted and passphrase is None:
        raise ConfigError("HT-0620", "this backup is encrypted: give its passphrase (--passphrase-file, "
                                     "HUTONG_BACKUP_PASSPHRASE or the prompt)")
    if backend == "sqlite":
        target = _sqlite_path(url)
        if any(Path(str(target) + sfx).exists() for sfx in ("", "-wal", "-shm", "-journal")):
            raise ConfigError("HT-0330", f"{target} exists: restore only into a new location (nothing overwritten)")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".restoring", dir=target.parent)
        os.close(fd)
        try:
            if m.encrypted:
                Path(tmp).unlink()
                backup_crypto.decrypt_file(src / (SQLITE_FILE + backup_crypto.SUFFIX), Path(tmp), str(passphrase))
            else:
                shutil.copyfile(src / SQLITE_FILE, tmp)
            os.chmod(tmp, 0o600)
            check = sqlite3.connect(tmp)
            try:
                ok = check.execute("PRAGMA integrity_check").fetchone()
            finally:
                check.close()
            if not ok or ok[0] != "ok":
                raise ConfigError("HT-0331", "the backup's database fails SQLite's integrity check: nothing restored")
            os.replace(tmp, target)  # last: the target appears whole or not at all
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    elif backend == "postgresql":
        if _pg_relations(url):  # no table, view or sequence at all: a failed restore can then remove all it made
            raise ConfigError("HT-0330", "the target database is not empty: restore only into a new, empty "
                                         "database (nothing overwritten)")
        args, env = _pg_args(url)
        with tempfile.TemporaryDirectory(prefix="hutong-restore-") as plain_dir:
            dump = src / PG_FILE
            if m.encrypted:
                dump = Path(plain_dir) / PG_FILE
                backup_crypto.decrypt_file(src / (PG_FILE + backup_crypto.SUFFIX), dump, str(passphrase))
            r = subprocess.run([_pg_tool("pg_restore"), *args, "--no-owner", "--exit-on-error",
                                "--single-transaction", str(dump)], env=env, capture_output=True, text=True)
        if r.returncode != 0:  # --single-transaction: nothing of it stays
            raise ConfigError("HT-0333", f"pg_restore failed ({r.returncode}): {r.stderr.strip()[-300:]}")
    else:
        raise ConfigError("HT-0070", f"cannot restore to a {backend} database")
    return m


def _pg_conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _pg_relations(url: str) -> list[tuple[str, str]]:
    """The tables, views and sequences in the target's schema (what a restore would collide with)."""
    import psycopg

    with psycopg.connect(_pg_conninfo(url), autocommit=True) as conn:
        rows = conn.execute("SELECT c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n "
                            "ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
                            "AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')").fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def remove_restored(url: str) -> None:
    """Undo a restore whose keys turned out not to open it: the SQLite file, or (PostgreSQL) every table,
    view and sequence in the target's schema -- restore() refused a target that had any, so all of them
    are the restore's (the Hutong schema has no functions or types of its own)."""
    if make_url(url).get_backend_name() == "sqlite":
        target = _sqlite_path(url)
        for sfx in ("", "-wal", "-shm"):
            Path(str(target) + sfx).unlink(missing_ok=True)
        return
    import psycopg
    from psycopg import sql

    kinds = {"v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE", "f": "FOREIGN TABLE"}
    with psycopg.connect(_pg_conninfo(url)) as conn:  # one transaction: all of it goes, or none
        for name, kind in _pg_relations(url):
            conn.execute(sql.SQL("DROP {} IF EXISTS {} CASCADE").format(sql.SQL(kinds.get(kind, "TABLE")),
                                                                       sql.Identifier(name)))
