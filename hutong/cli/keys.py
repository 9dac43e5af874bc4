"""``hutong keys ...``: rotate the keys of encryption at rest.

    hutong keys status                    key source, master key ids, data keys, rows per data key (JSON)
    hutong keys rotate [--reencrypt]      new master key; every data key re-wrapped under it (no data
                                          rewritten, no downtime); a new data key for new writes.
                                          --reencrypt: also re-encrypt every row under the new data key,
                                          in small transactions, then retire data keys no row uses
    hutong keys reencrypt                 only the re-encryption (e.g. after an interrupted run, or to
                                          encrypt rows written before encryption at rest)
    hutong keys reindex                   replace clinical text an earlier release left in clear in the
                                          search index (codes' display text, result texts, document
                                          descriptions) by keyed digests; run once after upgrading
    hutong keys backup OUT [--passphrase-file F]
                                          the key set (master keys, audit and token-signing keys) into
                                          the new file OUT, encrypted under a passphrase (scrypt +
                                          AES-256-GCM, checksummed): asked on the terminal, or read
                                          from F or HUTONG_KEY_BACKUP_PASSPHRASE, never an argument
    hutong keys restore-backup FILE [--key-dir DIR] [--passphrase-file F]
                                          the key set of FILE into the database's key directory (or
                                          DIR), which must be empty or absent; checked against the
                                          database's data keys when it exists (removed again if they
                                          do not open)
    hutong keys retire-master ID          delete an old master key file once no data key is wrapped
                                          by it (after rotate); keep the key backup that holds it as
                                          long as database backups from before the rotation

Key material is never printed: only ids (hutong.security.keys).  Old master
key files are kept: remove one only when ``status`` shows no data key wrapped
by it.  A running server picks up the new data key within a minute.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from sqlalchemy.engine import make_url

from hutong.cli.context import print_json as _print
from hutong.cli.context import repository
from hutong.config import env
from hutong.errors import ConfigError
from hutong.security import keys_backup, keys_store
from hutong.security.blindindex import reseal_text
from hutong.security.crypto import AesCodec, key_id_of, ring_of
from hutong.security.keys import (
    DATA,
    FileKeySource,
    KeyRing,
    KeySource,
    default_key_dir,
    key_source_for,
    legacy_key_dir,
    unwrap,
)
from hutong.security.settings import SecuritySettings
from hutong.store.codec import ENCRYPTED, Codec
from hutong.store.database import open_database, resolve_url
from hutong.store.repository import Repository


@dataclass(frozen=True, slots=True)
class EncryptedColumn:
    """A column whose values went through the store codec with ``purpose``."""

    table: str
    keys: tuple[str, ...]  # primary key columns (keyset paging, row-exact updates)
    column: str
    purpose: str


# Table and column names in this module's SQL come only from this list (values are
# always bound).  Columns re-encrypted by ``rotate --reencrypt`` and counted by ``status``.  Other
# modules with codec-encoded columns add theirs with register_encrypted_column
# (only columns whose ciphertext nothing else depends on: not inside a hash chain).
ENCRYPTED_COLUMNS: list[EncryptedColumn] = [
    EncryptedColumn("resource", ("pk",), "body", "resource"),
    EncryptedColumn("resource_version", ("res_pk", "version"), "body", "resource"),
    EncryptedColumn("mpi_source", ("patient_id",), "features", "mpi-features"),
    EncryptedColumn("mpi_event", ("id",), "detail", "mpi-event"),
    EncryptedColumn("ingest_message", ("id",), "raw", "inbound-message"),
    # Sealed with the repository's codec (purpose "resource"): accounts' phone numbers and
    # TOTP secrets (hutong.security.accounts), sharing requests' bodies (hutong.security.sharing).
    # Not here: audit rows' details, whose ciphertext the hash chain covers (hutong.security.audit):
    # they stay under the data key they were written with, which stays in data_key.
    EncryptedColumn("account", ("id",), "phone", "resource"),
    EncryptedColumn("account", ("id",), "totp_secret", "resource"),
    EncryptedColumn("sharing_request", ("id",), "body", "resource"),
]


def register_encrypted_column(table: str, keys: tuple[str, ...], column: str, purpose: str = "resource") -> None:
    col = EncryptedColumn(table, keys, column, purpose)
    if col not in ENCRYPTED_COLUMNS:
        ENCRYPTED_COLUMNS.append(col)


def rows_per_key(repo: Repository) -> dict[str, dict[str, int]]:
    """Per column: how many values are plain (``plain``) or under each data key (``key <id>``)."""
    out: dict[str, dict[str, int]] = {}
    for c in ENCRYPTED_COLUMNS:
        if not keys_store.table_exists(repo, c.table):
            continue
        counts: dict[str, int] = {}
        for b, n in keys_store.values_per_prefix(repo, c.table, c.column, ENCRYPTED):
            name = f"key {int.from_bytes(b, 'big')}" if len(b) == 4 else "plain"
            counts[name] = counts.get(name, 0) + int(n)
        out[f"{c.table}.{c.column}"] = counts
    return out


def status(repo: Repository, ring: KeyRing) -> dict[str, Any]:
    current, _ = ring.current()
    masters = list(ring.source.master_keys())
    warnings = []
    src = ring.source
    if isinstance(src, FileKeySource):
        db_dir = Path(repo.db.url.split("///", 1)[-1]).absolute().parent if repo.db.dialect == "sqlite" else None
        if src.dir.absolute() == legacy_key_dir(repo.db.url) or (
                db_dir is not None and (db_dir == src.dir.absolute() or db_dir in src.dir.absolute().parents)):
            # Issue 12, finding 11: whoever copies the database directory gets the keys too.
            warnings.append(f"the key directory {src.dir} is inside the database's directory: move it elsewhere "
                            "(HUTONG_KEY_DIR) and back it up separately from the database")
        if src.dir.is_dir() and src.dir.stat().st_mode & 0o077:
            warnings.append(f"the key directory {src.dir} is accessible to other users: chmod 700 it")
    return {
        "key_source": ring.source.describe(),
        "master_keys": masters,
        "current_master_key": masters[-1] if masters else None,
        "data_keys": [{"id": k.id, "purpose": k.purpose, "wrapped_by": k.master_id, "created_ms": k.created,
                       "retired_ms": k.retired, "current": k.id == current} for k in ring.info()],
        "rows": rows_per_key(repo),
        "warnings": warnings,
    }


def reencrypt(repo: Repository, ring: KeyRing, *, batch: int = 500,
              progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Re-encrypt every registered column's values that are not under the current
    data key (plain ones included), ``batch`` rows per transaction so writers
    are never held up for long; then retire the data keys no value uses.

    A row changed by someone else between our read and our write keeps their
    value (the UPDATE compares the old value); their value is under the current
    key anyway.  Returns rows re-encrypted per column.
    """
    ring.reload()
    current, _ = ring.current()
    done: dict[str, int] = {}
    for c in ENCRYPTED_COLUMNS:
        if not keys_store.table_exists(repo, c.table):
            continue
        codec: Codec = AesCodec(ring, c.purpose)
        after: tuple[Any, ...] | None = None
        n = 0
        while True:
            rows = keys_store.column_page(repo, c.table, c.keys, c.column, after, batch)
            if not rows:
                break
            after = tuple(rows[-1][:len(c.keys)])
            stale = [r for r in rows if key_id_of(bytes(r[-1])) != current]
            if stale:
                with repo.write() as w:
                    for r in stale:
                        old = bytes(r[-1])
                        new = codec.encode(codec.decode(old))
                        keys_store.replace_value(w, c.table, c.keys, c.column, r[:len(c.keys)], old, new)
                n += len(stale)
                if progress:
                    progress(f"{c.table}.{c.column}", n)
        done[f"{c.table}.{c.column}"] = n
    used = {int(name.split()[1]) for counts in rows_per_key(repo).values() for name in counts
            if name.startswith("key ")}
    ring.retire(k.id for k in ring.info() if k.purpose == DATA and k.retired is None and k.id != current
                and k.id not in used)
    return done


# ------------------------------------------------------------------ CLI

def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("keys", help="encryption at rest: key status, rotation, re-encryption",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database", metavar="URL", help="sqlite:///path or postgresql://... "
                                                     "(default: $HUTONG_DATABASE_URL or sqlite:///var/hutong.db)")
    ops = p.add_subparsers(dest="keys_command", metavar="ACTION")
    ops.required = True
    ops.add_parser("status", help="key ids and rows per data key (JSON)").set_defaults(func=run, action=_status)
    r = ops.add_parser("rotate", help="new master key, data keys re-wrapped, new data key for new writes")
    r.add_argument("--reencrypt", action="store_true", help="also re-encrypt every row under the new data key")
    r.add_argument("--batch", type=int, default=500, help="rows per transaction when re-encrypting")
    r.set_defaults(func=run, action=_rotate)
    e = ops.add_parser("reencrypt", help="re-encrypt rows not under the current data key (plain ones too)")
    e.add_argument("--batch", type=int, default=500)
    e.set_defaults(func=run, action=_reencrypt)
    x = ops.add_parser("reindex", help="blind-index clinical text an earlier release indexed in clear")
    x.add_argument("--batch", type=int, default=500)
    x.set_defaults(func=run, action=_reindex)
    # allow_abbrev=False: `--passphrase SECRET` must not be taken for --passphrase-file and then
    # recorded, command line and all, by the CLI audit; argparse refuses it before anything runs.
    b = ops.add_parser("backup", help="the key set into a new passphrase-encrypted file", allow_abbrev=False)
    b.add_argument("out", metavar="OUT", help="the backup file to create (never overwritten)")
    b.add_argument("--passphrase-file", metavar="F", help="read the passphrase from F's first line")
    b.set_defaults(func=_run_backup)
    rb = ops.add_parser("restore-backup", help="a key backup into an empty key directory", allow_abbrev=False)
    rb.add_argument("file", metavar="FILE", help="a file written by hutong keys backup")
    rb.add_argument("--key-dir", metavar="DIR", help="where to restore (default: HUTONG_KEY_DIR, else the "
                                                      "database's default key directory)")
    rb.add_argument("--passphrase-file", metavar="F", help="read the passphrase from F's first line")
    # Audited by itself, after its check: the general CLI audit would open (and so
    # create) a database that is not there yet, or one the restored keys do not open.
    rb.set_defaults(func=_run_restore_backup, no_cli_audit=True)
    rm = ops.add_parser("retire-master", help="delete a master key file no data key is wrapped by")
    rm.add_argument("master_id", metavar="ID", help="the master key id (hutong keys status: master_keys)")
    rm.set_defaults(func=run, action=_retire_master)


def run(args: argparse.Namespace) -> int:

    with repository(args.database) as repo:
        rc: int = args.action(args, repo, ring_of(repo))
        return rc


def _status(args: argparse.Namespace, repo: Repository, ring: KeyRing) -> int:
    return _print(status(repo, ring))


def _rotate(args: argparse.Namespace, repo: Repository, ring: KeyRing) -> int:
    # Files: a new master key made here.  A KMS or HUTONG_MASTER_KEYS makes its keys
    # outside: the operator adds the new one (listed last) first; every data key is
    # re-wrapped under it.  Refused when nothing would change (no new key was added).
    own = isinstance(ring.source, FileKeySource)
    if not own:
        newest = list(ring.source.master_keys())[-1]
        if all(k.master_id == newest for k in ring.info()):
            raise ConfigError("HT-0154", f"every data key is already wrapped by {newest}, the newest master key "
                                         f"of {ring.source.describe()}: add a new master key there first")
    master, dek = ring.rotate(new_master=own)
    out: dict[str, Any] = {"master_key": master, "data_key": dek}
    if args.reencrypt:
        out["reencrypted"] = reencrypt(repo, ring, batch=args.batch)
    out["status"] = status(repo, ring)
    return _print(out)


def _reindex(args: argparse.Namespace, repo: Repository, ring: KeyRing) -> int:
    return _print({"reindexed": reseal_text(repo, batch=args.batch)})


def _reencrypt(args: argparse.Namespace, repo: Repository, ring: KeyRing) -> int:
    done = reencrypt(repo, ring, batch=args.batch)
    return _print({"reencrypted": done, "status": status(repo, ring)})


# ------------------------------------------------------------------ key backups (issue 18, item 4)

def passphrase(args: argparse.Namespace, *, confirm: bool) -> str:
    """From --passphrase-file, else HUTONG_KEY_BACKUP_PASSPHRASE, else the terminal;
    never from the command line (shell history, ps) and never printed."""
    if args.passphrase_file:
        try:
            return Path(args.passphrase_file).read_text(encoding="utf-8").split("\n", 1)[0].rstrip("\r")
        except OSError as e:
            raise ConfigError("HT-0600", f"--passphrase-file cannot be read ({type(e).__name__})") from None
    from_env = env("HUTONG_KEY_BACKUP_PASSPHRASE")
    if from_env:
        return from_env
    if not sys.stdin.isatty():
        raise ConfigError("HT-0600", "no passphrase: give --passphrase-file F or HUTONG_KEY_BACKUP_PASSPHRASE, "
                                     "or run on a terminal")
    first = getpass.getpass("key backup passphrase: ")
    if confirm and getpass.getpass("again: ") != first:
        raise ConfigError("HT-0601", "the two passphrases differ: nothing written")
    return first


def _key_dir(url: str, source: KeySource | None = None) -> Path:
    if isinstance(source, FileKeySource):
        return source.dir
    return SecuritySettings.from_env().key_dir or default_key_dir(url)


def check_against_database(url: str, masters: dict[str, bytes]) -> str:
    """Whether ``masters`` open every data key of the database at ``url``:
    "ok", or "not checked: ..." when there is no such database (yet).  Raises
    HT-0605 naming the master key ids it lacks (ids only)."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite" and not Path(str(u.database)).is_file():
        return "not checked: no database there yet"
    try:
        db = open_database(url, create=False)
    except Exception as e:  # unreachable or not a database of ours: nothing to compare with
        return f"not checked: the database cannot be opened ({type(e).__name__})"
    try:
        try:
            rows = keys_store.key_rows(db)
        except Exception as e:
            return f"not checked: no data keys there ({type(e).__name__})"
    finally:
        db.close()
    missing, bad = set(), []
    for kid, purpose, wrapped, master_id, _c, _r in rows:
        master = masters.get(master_id)
        if master is None:
            missing.add(master_id)
            continue
        try:
            unwrap(master, int(kid), purpose, bytes(wrapped))
        except InvalidTag:
            bad.append(master_id)
    if missing or bad:
        raise ConfigError("HT-0605", "these master keys do not open the database's data keys: "
                                     + (f"it needs master key(s) {sorted(missing)}, which the key set lacks "
                                        "(a key backup from before a rotation: use the one taken after it)"
                                        if missing else f"master key(s) {sorted(set(bad))} are not the same keys"))
    return "ok"


def _run_backup(args: argparse.Namespace) -> int:
    url = resolve_url(args.database)
    source = key_source_for(url)
    keyset = keys_backup.collect(source, _key_dir(url, source))
    checked = check_against_database(url, keyset.masters)  # a backup that cannot open the data is no backup
    out = Path(args.out)
    if out.exists():
        raise ConfigError("HT-0604", f"{out} exists: a key backup is never written over a file")
    data = keys_backup.seal(keyset, passphrase(args, confirm=True))
    keys_backup.write_new(out, data)
    return _print({"key_backup": str(out), "format": keys_backup.FORMAT, "master_keys": list(keyset.masters),
                   "other_keys": sorted(keyset.files), "key_source": keyset.source, "database_check": checked,
                   "warning": "keep this file and its passphrase apart from the database backups"})


def _run_restore_backup(args: argparse.Namespace) -> int:
    url = resolve_url(args.database)
    path = Path(args.file)
    try:
        if path.stat().st_size > keys_backup.MAX_FILE:  # not read into memory
            raise ConfigError("HT-0602", f"{path} is too large to be a Hutong key backup")
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError("HT-0602", f"{path} cannot be read ({type(e).__name__})") from None
    keys_backup.check(data)  # corrupt or truncated: refused before a passphrase is asked
    target = Path(args.key_dir) if args.key_dir else _key_dir(url)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError("HT-0604", f"the key directory {target} is not empty: nothing overwritten "
                                     "(restore into an empty directory, or set HUTONG_KEY_DIR)")
    keyset = keys_backup.open_sealed(data, passphrase(args, confirm=False))
    try:
        checked = check_against_database(url, keyset.masters)
    except ConfigError:
        raise  # nothing written yet
    names = keys_backup.restore_into(keyset, target)
    if checked == "ok":
        _audit_restore(url, args)
    return _print({"restored_into": str(target), "files": names, "master_keys": list(keyset.masters),
                   "backup_created_ms": keyset.created_ms, "database_check": checked})


def _audit_restore(url: str, args: argparse.Namespace) -> None:
    from hutong.security.audit import AuditLog
    from hutong.security.events import AuditRecord
    from hutong.security.principal import LOCAL_OPERATOR

    try:
        with repository(url) as repo:
            AuditLog(repo).record(AuditRecord(action="cli-keys", outcome="0", principal=LOCAL_OPERATOR,
                                              interaction=f"hutong keys restore-backup {Path(args.file).name}",
                                              code=None, purpose="platform"))
    except Exception as e:
        print(f"hutong: warning: this command was not audited ({getattr(e, 'code', type(e).__name__)})",
              file=sys.stderr)


def _retire_master(args: argparse.Namespace, repo: Repository, ring: KeyRing) -> int:
    source = ring.source
    if not isinstance(source, FileKeySource):
        raise ConfigError("HT-0606", f"master keys of {source.describe()} are removed where they are kept "
                                     "(the KMS or the variable), once hutong keys status shows none in use")
    masters = list(source.master_keys())
    kid = args.master_id
    if masters and kid == masters[-1]:
        raise ConfigError("HT-0606", f"master key {kid} is the current one: rotate first")
    users = sorted(k.id for k in ring.info() if k.master_id == kid)
    if users:
        raise ConfigError("HT-0606", f"data keys {users} are wrapped by master key {kid}: run hutong keys rotate "
                                     "first")
    source.retire_master_key(kid)
    return _print({"retired_master_key": kid, "master_keys": list(source.master_keys())})
