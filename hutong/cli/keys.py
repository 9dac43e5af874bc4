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

Key material is never printed: only ids (hutong.security.keys).  Old master
key files are kept: remove one only when ``status`` shows no data key wrapped
by it.  A running server picks up the new data key within a minute.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hutong.cli.context import print_json as _print
from hutong.cli.context import repository
from hutong.security import keys_store
from hutong.security.blindindex import reseal_text
from hutong.security.crypto import AesCodec, key_id_of, ring_of
from hutong.security.keys import DATA, FileKeySource, KeyRing, legacy_key_dir
from hutong.store.codec import ENCRYPTED, Codec
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


def run(args: argparse.Namespace) -> int:

    with repository(args.database) as repo:
        rc: int = args.action(args, repo, ring_of(repo))
        return rc


def _status(args: argparse.Namespace, repo: Repository, ring: KeyRing) -> int:
    return _print(status(repo, ring))


def _rotate(args: argparse.Namespace, repo: Repository, ring: KeyRing) -> int:
    master, dek = ring.rotate()
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
