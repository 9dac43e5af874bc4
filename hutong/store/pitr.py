"""PostgreSQL physical backups, WAL archiving and point-in-time recovery (issue 18, item 1).

Why PostgreSQL's own tools and not pgBackRest or Barman: ``pg_basebackup``,
``pg_verifybackup`` and the server's ``archive_command`` / ``restore_command``
/ ``recovery_target_time`` come with every PostgreSQL server package, always
at the server's own version, so nothing is added to ``make test`` or to a
deployment.  pgBackRest 2.45 is a Debian bookworm package and would work, but
it is one more daemon-less tool with its own configuration file, repository
layout and stanza to get right at 3 a.m., and a package the test machine
would have to install; what the issue asks of it here -- a base backup, an
archive of WAL, recovery to a time -- the server does itself
(https://www.postgresql.org/docs/15/continuous-archiving.html).  A city that
wants retention policies, parallel compression or backups to object storage
can put pgBackRest in front of the same server later: the archive settings
below are the only thing it would replace.

The pieces:

1. The primary archives every finished WAL segment into a directory
   (:func:`archive_settings`: ``archive_mode = on``, an ``archive_command``
   that never overwrites a file, ``archive_timeout`` so that a quiet server
   still closes a segment each minute).  Changing ``archive_mode`` needs a
   server restart.
2. ``hutong backup --physical OUT`` takes a base backup with
   ``pg_basebackup`` (plain format, the WAL needed to make it consistent
   streamed into it, a fast checkpoint) and writes ``OUT/manifest.json``
   beside PostgreSQL's own ``backup_manifest`` (a SHA-256 of every file).
3. ``hutong restore --physical SRC --to-time T TARGET`` checks the copy with
   ``pg_verifybackup`` (corrupt or truncated: refused), copies it to a new
   data directory, and writes the recovery settings into it
   (``recovery.signal``; ``restore_command`` reading the archive;
   ``recovery_target_time``; ``recovery_target_action = promote``).  Started
   with ``pg_ctl``, the server replays the archived WAL up to the last commit
   at or before T and opens for writes on a new timeline.  Archiving is off in
   the restored copy so that it cannot write into the primary's archive; the
   operator turns it on, towards a new archive, when the copy becomes the
   primary (README, "Operations").

Restore refuses, writing nothing: a target directory that exists and is not
empty (HT-0330), a backup that fails its checksums (HT-0331), a backup of a
schema newer than this release (HT-0320), a time without a UTC offset or
earlier than the end of the base backup (HT-0335), a missing WAL archive
(HT-0336).  WAL after the target time must reach the archive before the
restore starts (``SELECT pg_switch_wal()`` on the primary if it still runs, or
wait ``archive_timeout``): PostgreSQL stops with "recovery ended before
configured recovery target was reached" otherwise, and says so in its log.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from hutong import __version__
from hutong.errors import ConfigError
from hutong.store import migrations
from hutong.store.backup import MANIFEST, _pg_args, _pg_tool, _schema_of

FORMAT = "hutong-physical-backup/1"
BASE = "base"  # the data directory copy, inside the backup directory


@dataclass(frozen=True)
class PhysicalManifest:
    format: str
    hutong: str
    schema: str
    server_version: str
    started: str  # UTC, before pg_basebackup began
    finished: str  # UTC, after it returned: the earliest time one can recover to
    wal_archive: str | None  # the archive the server was writing to, as its archive_command names it

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "hutong": self.hutong, "schema": self.schema,
                "server_version": self.server_version, "started": self.started, "finished": self.finished,
                "wal_archive": self.wal_archive,
                "checksums": f"{BASE}/backup_manifest (PostgreSQL's; checked by pg_verifybackup on restore)",
                "keys": "not included: the database's keys are kept apart (see hutong.store.backup)"}


def archive_settings(archive: Path, *, timeout_s: int = 60) -> str:
    """The lines for the primary's postgresql.conf that archive its WAL into ``archive``.

    ``test ! -f`` keeps an archived segment from ever being overwritten (the
    example of https://www.postgresql.org/docs/15/continuous-archiving.html
    #BACKUP-ARCHIVING-WAL); the archive directory must be writable by the
    server's user and, in production, on other storage than the data."""
    a = str(archive.absolute())
    if "'" in a or "%" in a:
        raise ConfigError("HT-0336", "the WAL archive path may not contain ' or %")
    return (f"wal_level = replica\n"
            f"archive_mode = on\n"
            f"archive_command = 'test ! -f {a}/%f && cp %p {a}/%f'\n"
            f"archive_timeout = {int(timeout_s)}\n")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _server_facts(url: str) -> tuple[str, str, str]:
    """(server_version, archive_mode, archive_command) of the server at ``url``."""
    import psycopg

    u = make_url(url).set(drivername="postgresql")
    with psycopg.connect(u.render_as_string(hide_password=False), autocommit=True) as conn:
        got = [str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
               for name in ("server_version", "archive_mode", "archive_command")]
    return got[0], got[1], got[2]


def _archive_of(command: str) -> str | None:
    """The directory an ``archive_settings`` archive_command copies into (None for any other command)."""
    parts = command.split()
    if len(parts) >= 4 and parts[0] == "test" and parts[-1].endswith("/%f"):
        return parts[-1][: -len("/%f")]
    return None


def base_backup(url: str, out: Path) -> tuple[PhysicalManifest, list[str]]:
    """A base backup of the PostgreSQL server at ``url`` into the new directory ``out``.

    Returns the manifest and warnings for the operator (archiving off: this
    backup restores only to its own end, not to a later time)."""
    if make_url(url).get_backend_name() != "postgresql":
        raise ConfigError("HT-0332", "a physical backup is of a PostgreSQL server; back up SQLite with "
                                     "`hutong backup OUT`")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError("HT-0330", f"backup directory {out} exists and is not an empty directory: nothing written")
    schema = _schema_of(url)
    version, mode, command = _server_facts(url)
    warnings = []
    if mode not in ("on", "always"):
        warnings.append("archive_mode is off on this server: this base backup restores to the moment it ended, "
                        "not to a later time; turn WAL archiving on (hutong backup --archive-settings DIR)")
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    args, env = _pg_args(url)
    dbname_at = args.index("--dbname")
    conn_args = args[:dbname_at]  # a replication connection names no database
    started = _now()
    r = subprocess.run([_pg_tool("pg_basebackup"), *conn_args, "--no-password", "--pgdata", str(out / BASE),
                        "--format=plain", "--wal-method=stream", "--checkpoint=fast",
                        "--label", f"hutong {started}", "--manifest-checksums=SHA256"],
                       env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise ConfigError("HT-0333", f"pg_basebackup failed ({r.returncode}): {r.stderr.strip()[-300:]}")
    m = PhysicalManifest(FORMAT, __version__, schema, version, started, _now(),
                         _archive_of(command) if mode in ("on", "always") else None)
    (out / MANIFEST).write_text(json.dumps(m.to_json(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return m, warnings


def read_manifest(src: Path) -> PhysicalManifest:
    """The manifest of a physical backup, its files checked by ``pg_verifybackup`` (HT-0331 otherwise)."""
    try:
        raw = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
        m = PhysicalManifest(raw["format"], raw["hutong"], raw["schema"], raw["server_version"], raw["started"],
                             raw["finished"], raw.get("wal_archive"))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError("HT-0331", f"{src} is not a Hutong physical backup (manifest.json missing or "
                                     "unreadable)") from e
    if m.format != FORMAT:
        raise ConfigError("HT-0331", f"{src}: backup format {m.format!r}, this command reads {FORMAT!r}")
    if m.schema not in migrations.REVISIONS:
        raise ConfigError("HT-0320", f"the backup's schema {m.schema} is not one this release knows "
                                     f"(head {migrations.HEAD}): restore it with the release that made it")
    # pg_verifybackup: every file against backup_manifest's SHA-256, and the WAL the copy needs is there and parses.
    r = subprocess.run([_pg_tool("pg_verifybackup"), "--quiet", str(src / BASE)], capture_output=True, text=True)
    if r.returncode != 0:
        raise ConfigError("HT-0331", f"{src} fails pg_verifybackup (corrupt or truncated backup): nothing restored: "
                                     f"{r.stderr.strip()[-300:]}")
    return m


def parse_target_time(text: str) -> datetime:
    """An ISO 8601 time with its UTC offset ("2026-12-07T18:30:00+08:00"); a time without one is refused:
    which 18:30 is meant must not depend on the restoring machine's zone."""
    try:
        t = datetime.fromisoformat(text)
    except ValueError as e:
        raise ConfigError("HT-0335", f"--to-time {text!r} is not an ISO 8601 time "
                                     "(e.g. 2026-12-07T18:30:00+08:00)") from e
    if t.tzinfo is None or t.utcoffset() is None:
        raise ConfigError("HT-0335", f"--to-time {text!r} has no UTC offset: write it as e.g. "
                                     "2026-12-07T18:30:00+08:00")
    return t


def restore(src: Path, target: Path, *, to_time: datetime | None, wal_archive: Path | None,
            owner: str | None = None) -> tuple[PhysicalManifest, Path]:
    """A new data directory ``target`` from the base backup in ``src``, set to recover to ``to_time``
    (the end of the archive when None) from ``wal_archive`` (the manifest's archive when None).

    Returns the manifest and the archive used.  Nothing is written at ``target``
    unless every check passed; the copy is made beside it and renamed last."""
    m = read_manifest(src)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError("HT-0330", f"{target} exists and is not empty: restore only into a new data directory "
                                     "(nothing overwritten)")
    archive = wal_archive or (Path(m.wal_archive) if m.wal_archive else None)
    if archive is None or not archive.is_dir():
        raise ConfigError("HT-0336", f"WAL archive {archive or '(none recorded in the backup)'} is not a directory: "
                                     "give --wal-archive DIR (the directory the primary's archive_command copies "
                                     "into)")
    if to_time is not None:
        finished = datetime.fromisoformat(m.finished.replace("Z", "+00:00"))
        if to_time < finished:
            raise ConfigError("HT-0335", f"--to-time {to_time.isoformat()} is before this base backup ended "
                                         f"({m.finished}): restore from an older base backup")
    a = str(archive.absolute())
    if "'" in a or "%" in a:
        raise ConfigError("HT-0336", "the WAL archive path may not contain ' or %")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".restoring", dir=target.parent))
    try:
        data = tmp / "data"
        shutil.copytree(src / BASE, data, symlinks=True)
        (data / "backup_manifest").unlink(missing_ok=True)
        (data / "recovery.signal").write_text("", encoding="utf-8")
        lines = ["", "# hutong restore --physical (hutong.store.pitr): point-in-time recovery",
                 f"restore_command = 'cp {a}/%f %p'",
                 "# archiving off: the restored copy must not write into the primary's archive; turn it on,",
                 "# towards a NEW archive directory, once this copy becomes the primary (README, Operations)",
                 "archive_mode = off"]
        if to_time is not None:
            lines += [f"recovery_target_time = '{to_time.isoformat(sep=' ')}'", "recovery_target_inclusive = on"]
        lines += ["recovery_target_action = 'promote'", ""]
        with (data / "postgresql.auto.conf").open("a", encoding="utf-8") as f:
            f.write("\n".join(lines))
        os.chmod(data, 0o700)
        if owner:
            try:
                for p in [data, *data.rglob("*")]:
                    shutil.chown(p, owner, owner)
            except (LookupError, OSError) as e:  # no such user, or not root
                raise ConfigError("HT-0337", f"--owner {owner}: cannot give the data directory to that user "
                                             f"({type(e).__name__}; run as root, name an existing user): "
                                             "nothing written") from e
        if target.exists():
            target.rmdir()  # empty (checked above)
        os.replace(data, target)  # last: the data directory appears whole or not at all
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return m, archive
