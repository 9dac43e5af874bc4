"""``hutong backup`` and ``hutong restore`` (issue 18, item 1; hutong.store.backup).

    hutong backup OUT [--database URL] [--keys-to DIR]
        a consistent backup of the database into the new directory OUT, made
        while the server runs; with --keys-to, the database's key directory is
        copied to DIR as well (DIR must not be inside OUT: keep them apart)
    hutong restore SRC --database URL [--keys-from DIR]
        the backup in SRC into a new database at URL; with --keys-from, the keys
        copied at backup time are put where that database looks for them
        (HUTONG_KEY_DIR, else beside it); the restored database is opened with
        its keys before the command says it is done, and removed again when
        they do not open it

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

from hutong.cli.context import print_json
from hutong.errors import ConfigError
from hutong.security.keys import default_key_dir
from hutong.security.settings import SecuritySettings
from hutong.store import backup as store_backup
from hutong.store.database import resolve_url

DB_HELP = "sqlite:///path or postgresql://... (default: $HUTONG_DATABASE_URL or sqlite:///var/hutong.db)"


def key_dir_of(url: str) -> Path:
    """Where the database at ``url`` reads its key files (HUTONG_KEY_DIR, else its default)."""
    return SecuritySettings.from_env().key_dir or default_key_dir(url)


def _inside(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents


def _backup(args: argparse.Namespace) -> int:
    url = resolve_url(args.database)
    out = Path(args.out)
    keys_to = Path(args.keys_to) if args.keys_to else None
    if keys_to is not None:
        if _inside(keys_to, out) or _inside(out, keys_to):
            raise ConfigError("HT-0334", "--keys-to must be outside the backup directory: a backup and the keys "
                                         "that open it are kept apart")
        if keys_to.exists() and any(keys_to.iterdir()):
            raise ConfigError("HT-0330", f"{keys_to} exists and is not empty: nothing written")
    m = store_backup.backup(url, out)
    copied = None
    if keys_to is not None and not os.environ.get("HUTONG_MASTER_KEYS"):
        src = key_dir_of(url)
        shutil.copytree(src, keys_to, dirs_exist_ok=True)
        os.chmod(keys_to, 0o700)
        copied = str(keys_to)
    print_json({"backup": str(out), "schema": m.schema, "files": m.files, "keys_copied_to": copied})
    if copied is None:
        print("hutong: warning: the backup does not hold the database's keys; without them it cannot be "
              f"restored to anything readable. They are in {key_dir_of(url)} (or HUTONG_MASTER_KEYS): back "
              "them up separately (hutong backup --keys-to DIR).", file=sys.stderr)
    return 0


def _restore(args: argparse.Namespace) -> int:
    url = resolve_url(args.database)
    src = Path(args.src)
    store_backup.read_manifest(src)  # checksums and schema first: nothing is written for a bad backup
    keys_from = Path(args.keys_from) if args.keys_from else None
    target_keys = key_dir_of(url)
    placed_keys = False
    if keys_from is not None:
        if not keys_from.is_dir():
            raise ConfigError("HT-0334", f"--keys-from {keys_from}: no such directory")
        if target_keys.exists() and any(target_keys.iterdir()):
            raise ConfigError("HT-0330", f"{target_keys} (the restored database's key directory) is not empty: "
                                         "nothing overwritten")
    m = store_backup.restore(src, url)
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
    b.add_argument("out", metavar="OUT", help="a new (or empty) directory for the backup")
    b.add_argument("--database", metavar="URL", help=DB_HELP)
    b.add_argument("--keys-to", metavar="DIR", help="also copy the database's key directory to DIR (kept apart)")
    b.set_defaults(func=run, action=_backup)
    r = sub.add_parser("restore", help="restore a backup into a new database",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("src", metavar="SRC", help="the backup directory (hutong backup OUT)")
    r.add_argument("--database", metavar="URL", required=True, help="the new database (must not exist / be empty)")
    r.add_argument("--keys-from", metavar="DIR", help="the key directory copied at backup time (--keys-to)")
    r.set_defaults(func=run, action=_restore)
