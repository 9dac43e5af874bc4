"""``hutong backup`` and ``hutong restore`` (issue 18, item 1; hutong.store.backup).

    hutong backup OUT [--database URL] [--keys-to DIR]
                      [--full-priority] [--max-rate MB_PER_S] [--step-mb MB]
        a consistent backup of the database into the new directory OUT, made
        while the server runs; with --keys-to, the database's key directory is
        copied to DIR as well (DIR must not be inside OUT: keep them apart);
        it runs behind the server (the idle I/O class, nice +10: hutong.cli.priority)
        unless --full-priority
    hutong restore SRC --database URL [--keys-from DIR]
        the backup in SRC into a new database at URL; with --keys-from, the keys
        copied at backup time are put where that database looks for them
        (HUTONG_KEY_DIR, else beside it); the restored database is opened with
        its keys before the command says it is done, and removed again when
        they do not open it

    hutong backup OUT --encrypt [--passphrase-file FILE]
        the same, the data file sealed with a passphrase (scrypt + AES-256-GCM);
        the passphrase comes from FILE, HUTONG_BACKUP_PASSPHRASE or a prompt,
        never from the command line; restore asks for it the same way
    hutong backup --physical OUT [--database URL]
        PostgreSQL: a base backup of the whole server (pg_basebackup) into OUT,
        for point-in-time recovery with the server's WAL archive
    hutong backup --archive-settings ARCHIVE_DIR
        prints the postgresql.conf lines that archive WAL into ARCHIVE_DIR
    hutong restore --physical SRC [--to-time ISO_TIME] TARGET_DATA_DIR
                   [--wal-archive DIR] [--owner postgres]
        a new PostgreSQL data directory from the base backup in SRC, set to
        replay the archived WAL up to ISO_TIME (with its UTC offset, e.g.
        2026-12-07T18:30:00+08:00; the end of the archive without it); start
        it with pg_ctl (README, "Operations": the steps)

A backup holds resident data: keep it as the database is kept (encrypted at
rest, in the region: 数据安全法).  Bodies and sealed columns stay encrypted in
it with the database's keys; without the keys it cannot be read, by a thief or
by you.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from hutong.cli import priority
from hutong.cli.context import print_json
from hutong.config import env
from hutong.errors import ConfigError
from hutong.security.keys import default_key_dir
from hutong.security.settings import SecuritySettings
from hutong.store import backup as store_backup
from hutong.store import pitr
from hutong.store.database import resolve_url

DB_HELP = "sqlite:///path or postgresql://... (default: $HUTONG_DATABASE_URL or sqlite:///var/hutong.db)"


def key_dir_of(url: str) -> Path:
    """Where the database at ``url`` reads its key files (HUTONG_KEY_DIR, else its default)."""
    return SecuritySettings.from_env().key_dir or default_key_dir(url)


def _inside(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents


PASSPHRASE_ENV = "HUTONG_BACKUP_PASSPHRASE"


def passphrase_of(args: argparse.Namespace, *, confirm: bool) -> str:
    """The operator's backup passphrase: --passphrase-file, else $HUTONG_BACKUP_PASSPHRASE, else a prompt
    on the terminal (twice when ``confirm``).  Never an argument (argv is visible to every user in ps)."""
    if args.passphrase_file:
        try:
            text = Path(args.passphrase_file).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError("HT-0620", f"--passphrase-file {args.passphrase_file} cannot be read") from e
        return text.rstrip("\r\n")
    given = env(PASSPHRASE_ENV)
    if given:
        return given
    if not sys.stdin.isatty():
        raise ConfigError("HT-0620", "no passphrase: give --passphrase-file FILE or set HUTONG_BACKUP_PASSPHRASE "
                                     "(no terminal to ask on)")
    import getpass

    first = getpass.getpass("backup passphrase: ")
    if confirm and getpass.getpass("again: ") != first:
        raise ConfigError("HT-0622", "the two passphrases differ")
    return first


def _backup(args: argparse.Namespace) -> int:
    if args.archive_settings:
        print(pitr.archive_settings(Path(args.archive_settings)), end="")
        return 0
    if not args.out:
        raise ConfigError("HT-0337", "name the backup directory: hutong backup OUT")
    url = resolve_url(args.database)
    out = Path(args.out)
    if args.physical:
        return _backup_physical(url, out)
    keys_to = Path(args.keys_to) if args.keys_to else None
    if keys_to is not None:
        if _inside(keys_to, out) or _inside(out, keys_to):
            raise ConfigError("HT-0334", "--keys-to must be outside the backup directory: a backup and the keys "
                                         "that open it are kept apart")
        if keys_to.exists() and any(keys_to.iterdir()):
            raise ConfigError("HT-0330", f"{keys_to} exists and is not empty: nothing written")
    if args.passphrase_file and not args.encrypt:
        raise ConfigError("HT-0337", "--passphrase-file goes with --encrypt")
    passphrase = passphrase_of(args, confirm=True) if args.encrypt else None
    if not args.full_priority:
        missed = priority.lower_priority()
        if missed:
            print(f"note: could not lower this backup's {' and '.join(missed)} priority; it competes with the "
                  "server on equal terms", file=sys.stderr)
    took: dict[str, float] = {}
    m = store_backup.backup(url, out, passphrase=passphrase,
                            step_bytes=int(args.step_mb * (1 << 20)) if args.step_mb else store_backup.STEP_BYTES,
                            max_bytes_per_s=args.max_rate * 1e6 if args.max_rate else None, seconds=took)
    copied = None
    if keys_to is not None and not env("HUTONG_MASTER_KEYS"):
        src = key_dir_of(url)
        shutil.copytree(src, keys_to, dirs_exist_ok=True)
        os.chmod(keys_to, 0o700)
        copied = str(keys_to)
    print_json({"backup": str(out), "schema": m.schema, "files": m.files, "encrypted": bool(m.encrypted),
                "keys_copied_to": copied, "seconds": took})
    if copied is None:
        print("hutong: warning: the backup does not hold the database's keys; without them it cannot be "
              f"restored to anything readable. They are in {key_dir_of(url)} (or HUTONG_MASTER_KEYS): back "
              "them up separately (hutong backup --keys-to DIR).", file=sys.stderr)
    return 0


def _backup_physical(url: str, out: Path) -> int:
    m, warnings = pitr.base_backup(url, out)
    print_json({"backup": str(out), "kind": "physical", "schema": m.schema, "server_version": m.server_version,
                "finished": m.finished, "wal_archive": m.wal_archive})
    for w in warnings:
        print(f"hutong: warning: {w}", file=sys.stderr)
    print("hutong: warning: the backup does not hold the database's keys; back them up separately "
          "(README, \"Keys\").", file=sys.stderr)
    return 0


def _restore_physical(args: argparse.Namespace) -> int:
    if args.database or args.keys_from:
        raise ConfigError("HT-0337", "--physical restores a data directory (TARGET_DATA_DIR), not into --database; the keys stay where they are")
    to_time = pitr.parse_target_time(args.to_time) if args.to_time else None
    target = Path(args.path)
    m, archive = pitr.restore(Path(args.physical), target, to_time=to_time,
                              wal_archive=Path(args.wal_archive) if args.wal_archive else None, owner=args.owner)
    print_json({"restored": str(target), "kind": "physical", "schema": m.schema, "base_backup_finished": m.finished,
                "to_time": to_time.isoformat() if to_time else "end of the WAL archive", "wal_archive": str(archive)})
    print(f"hutong: next: start it on a free port, e.g. `runuser -u postgres -- pg_ctl -D {target} -o '-p 5433' "
          "-l restore.log -w start`; it replays WAL to the target and opens (restore.log: 'recovery stopping "
          "before ...', 'archive recovery complete'); then `hutong audit verify --database URL` with "
          "HUTONG_KEY_DIR set to the primary's key directory.", file=sys.stderr)
    return 0


def _restore(args: argparse.Namespace) -> int:
    if args.physical:
        return _restore_physical(args)
    if args.to_time or args.wal_archive or args.owner:
        raise ConfigError("HT-0337", "--to-time, --wal-archive and --owner go with --physical SRC")
    if not args.database:
        raise ConfigError("HT-0337", "name the new database: hutong restore SRC --database URL")
    url = resolve_url(args.database)
    src = Path(args.path)
    manifest = store_backup.read_manifest(src)  # checksums and schema first: nothing is written for a bad backup
    passphrase = passphrase_of(args, confirm=False) if manifest.encrypted else None
    keys_from = Path(args.keys_from) if args.keys_from else None
    target_keys = key_dir_of(url)
    placed_keys = False
    if keys_from is not None:
        if not keys_from.is_dir():
            raise ConfigError("HT-0334", f"--keys-from {keys_from}: no such directory")
        if target_keys.exists() and any(target_keys.iterdir()):
            raise ConfigError("HT-0330", f"{target_keys} (the restored database's key directory) is not empty: "
                                         "nothing overwritten")
    m = store_backup.restore(src, url, passphrase=passphrase)
    try:
        if keys_from is not None:
            shutil.copytree(keys_from, target_keys, dirs_exist_ok=True)
            os.chmod(target_keys, 0o700)
            placed_keys = True
        from hutong.platform import open_repository

        repo = open_repository(url)  # the keys must open what was restored
        try:
            newest = repo.history(None, None, since=None, count=1)
        finally:
            repo.db.close()
    except ConfigError as e:
        store_backup.remove_restored(url)
        if placed_keys:
            shutil.rmtree(target_keys, ignore_errors=True)
        if e.code in ("HT-0320", "HT-0321"):  # the copy's own schema version (its manifest said otherwise)
            raise ConfigError(e.code, f"the restored database's schema is not this release's: removed again ({e})") from e
        raise ConfigError("HT-0334", f"the restored database does not open with these keys ({e.code}): "
                                     "removed again; restore with --keys-from the keys copied at backup time") from e
    print_json({"restored": url.split("@")[-1], "schema": m.schema, "created": m.created,
                "resources": bool(newest), "keys": str(target_keys)})
    return 0


def run(args: argparse.Namespace) -> int:
    rc: int = args.action(args)
    return rc


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    b = sub.add_parser("backup", help="a consistent backup of the database, made while it serves",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("out", metavar="OUT", nargs="?", help="a new (or empty) directory for the backup")
    b.add_argument("--encrypt", action="store_true",
                   help="seal the backup's data file with a passphrase (scrypt + AES-256-GCM)")
    b.add_argument("--passphrase-file", metavar="FILE",
                   help="read the passphrase from FILE (else $HUTONG_BACKUP_PASSPHRASE, else a prompt)")
    b.add_argument("--physical", action="store_true",
                   help="PostgreSQL: a base backup of the server (pg_basebackup) for point-in-time recovery")
    b.add_argument("--archive-settings", metavar="ARCHIVE_DIR",
                   help="print the postgresql.conf lines that archive WAL into ARCHIVE_DIR, and stop")
    b.add_argument("--database", metavar="URL", help=DB_HELP)
    b.add_argument("--keys-to", metavar="DIR", help="also copy the database's key directory to DIR (kept apart)")
    # Behind the server by default (issue 18): at 1M resources write p99 during/without a backup
    # 3.16x at full priority, 2.22x behind (bench_backup, same database, same session).
    b.add_argument("--full-priority", action="store_true",
                   help="compete with the server on equal terms instead of running behind it (by default the "
                        "command takes the idle I/O class and nice +10: hutong.cli.priority)")
    b.add_argument("--low-priority", action="store_true", help=argparse.SUPPRESS)  # the default; kept for scripts
    b.add_argument("--max-rate", metavar="MB_PER_S", type=float,
                   help="SQLite: copy at most this many megabytes a second, so that the server's commits "
                        "are not kept waiting behind the copy's writes")
    b.add_argument("--step-mb", metavar="MB", type=float,
                   help="SQLite: megabytes copied and flushed to disk at a time")
    b.set_defaults(func=run, action=_backup)
    r = sub.add_parser("restore", help="restore a backup into a new database",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("path", metavar="SRC | TARGET_DATA_DIR",
                   help="the backup directory (hutong backup OUT); with --physical, the new PostgreSQL data "
                        "directory (must not exist or be empty)")
    r.add_argument("--database", metavar="URL", help="the new database (must not exist / be empty)")
    r.add_argument("--keys-from", metavar="DIR", help="the key directory copied at backup time (--keys-to)")
    r.add_argument("--passphrase-file", metavar="FILE",
                   help="an encrypted backup's passphrase (else $HUTONG_BACKUP_PASSPHRASE, else a prompt)")
    r.add_argument("--physical", metavar="SRC", help="restore the base backup in SRC (hutong backup --physical) "
                                                     "into the new data directory TARGET_DATA_DIR")
    r.add_argument("--to-time", metavar="ISO_TIME",
                   help="--physical: recover to this time, with its UTC offset (2026-12-07T18:30:00+08:00)")
    r.add_argument("--wal-archive", metavar="DIR", help="--physical: the WAL archive (default: the one the "
                                                         "backup recorded)")
    r.add_argument("--owner", metavar="USER", help="--physical, as root: give the data directory to USER "
                                                   "(the server's user, e.g. postgres)")
    r.set_defaults(func=run, action=_restore)
