"""Every node's key directory holds the same keys (issue 18, item 2).

Each ``hutong serve`` node reads its keys from its own key directory
(``HUTONG_KEY_DIR``): the token-signing key (``token-signing.pem``), the audit
chain key (``audit-chain.key``) and the audit head-signing key
(``audit-signing.key``), each made on first use.  A node started with a key
directory that is not a copy of the others' -- forgotten, copied before the
first ``hutong serve`` wrote ``token-signing.pem``, or fresh files beside
master keys from ``HUTONG_KEY_COMMAND`` -- used to make keys of its own
without a word: every other node refused its tokens (HT-0122) and it theirs,
and it appended audit rows hashed under another chain key, so ``hutong audit
verify`` failed from its first row and ``hutong audit purge`` was refused
from then on.

So the database records the fingerprint of each of these keys (never the key:
``platform_key``; the audit chain key's id is also in ``audit_chain.key_id``,
one per chain) and a node checks its key directory against them before it
uses a key:

- nothing recorded (a fresh database, or one upgraded from before revision
  0008): the keys of this key directory (made now if absent) are recorded,
  once, under a lock -- of two nodes starting together on a fresh database
  with different directories, the second is refused;
- recorded, and the file is absent: refused (HT-0636), and nothing is made
  (making a key there is exactly the silent split);
- recorded, and the file holds another key: refused (HT-0637 token-signing,
  HT-0638 audit chain -- also when any ``audit_chain.key_id`` differs --,
  HT-0639 head-signing).

Where: ``hutong serve`` before any worker starts (one clear error, exit 2),
and wherever these keys are loaded (:class:`hutong.security.tokens.TokenService`,
so every command and worker that issues or checks tokens;
:class:`hutong.security.audit.AuditLog`, so every command that appends audit
rows).  A running node holds its keys in memory, so a key file replaced under
it changes nothing until it restarts, where this check refuses it; what can
change under a running node is the database (a restore, a failover to the
wrong cluster): ``/readyz`` compares the keys it holds with what the database
records (:func:`mismatch`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from joserfc.jwk import ECKey
from sqlalchemy import BigInteger, Column, String, Table

from hutong.errors import ConfigError
from hutong.security import keycheck_store
from hutong.security.auditheads import CHAIN_KEY_FILE, SIGNING_KEY_FILE, AuditKeys
from hutong.store.repository import DatabaseHandle
from hutong.store.schema import metadata

TOKEN_SIGNING, AUDIT_CHAIN, AUDIT_SIGNING = "token-signing", "audit-chain", "audit-signing"
KEY_FILE = "token-signing.pem"
FILES = {TOKEN_SIGNING: KEY_FILE, AUDIT_CHAIN: CHAIN_KEY_FILE, AUDIT_SIGNING: SIGNING_KEY_FILE}
CODES = {TOKEN_SIGNING: "HT-0637", AUDIT_CHAIN: "HT-0638", AUDIT_SIGNING: "HT-0639"}
_WHAT = {TOKEN_SIGNING: "token-signing key: the other nodes would refuse this node's tokens (HT-0122) and it theirs",
         AUDIT_CHAIN: "audit chain key: its audit rows would not verify (`hutong audit verify`, `hutong audit purge`)",
         AUDIT_SIGNING: "audit head-signing key: the heads it publishes would not verify"}

platform_key = Table(
    "platform_key",
    metadata,
    Column("name", String(32), primary_key=True),          # token-signing | audit-chain | audit-signing
    Column("fingerprint", String(128), nullable=False),    # JWK thumbprint (RFC 7638) or auditheads.fingerprint
    Column("created", BigInteger, nullable=False),         # epoch ms: when the first node recorded it
)


def _advice(key_dir: Path) -> str:
    return (f"copy the key directory of a node that has served this database (every file; directory mode 0700, "
            f"files 0600, owned by the service user) to {key_dir}, or set HUTONG_KEY_DIR to such a copy "
            "(README, 'Adding a node')")


def _now() -> int:
    return time.time_ns() // 1_000_000


# ------------------------------------------------------------------ the token-signing key's file
def load_signing_key(key_dir: Path) -> ECKey:
    """The platform's token-signing key, generated on first use (mode 0600).

    Only the file: :func:`token_signing_key` is what checks it against the database."""
    path = key_dir / KEY_FILE
    if not path.exists():
        key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ECKey.generate_key("P-256", private=True)
        pem = key.as_pem(private=True)
        try:
            # O_EXCL: of two processes starting together, one writes, the other reads its key.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            try:
                os.write(fd, pem)
            finally:
                os.close(fd)
    for _ in range(50):  # another process may still be writing it
        data = path.read_bytes()
        if data.strip().endswith(b"-----"):
            return ECKey.import_key(data)
        time.sleep(0.02)
    raise OSError(f"token signing key at {path} is unreadable")


# ------------------------------------------------------------------ checks
def require_files(handle: DatabaseHandle, key_dir: Path, names: tuple[str, ...] = tuple(FILES)) -> None:
    """HT-0636 when the database records one of ``names`` (or, for the audit chain
    key, has a keyed audit chain) and its file is not in ``key_dir``; all missing
    files in one message.  Nothing is made."""
    recorded = keycheck_store.recorded(handle)
    chained = AUDIT_CHAIN in names and bool(keycheck_store.chain_key_ids(handle))
    missing = [FILES[n] for n in names
               if (n in recorded or (n == AUDIT_CHAIN and chained)) and not (key_dir / FILES[n]).exists()]
    if missing:
        raise ConfigError("HT-0636", f"the key directory {key_dir} has no {', '.join(missing)}, but this database "
                                     "was served with such keys (another node's key directory); no key was made: "
                                     + _advice(key_dir))


def settle(handle: DatabaseHandle, key_dir: Path, local: dict[str, str], now: int | None = None) -> None:
    """Record each key of ``local`` (name -> fingerprint) the database does not
    record yet; refuse (HT-0637..0639) one that differs from the recorded one."""
    recorded = keycheck_store.recorded(handle)
    if any(n not in recorded for n in local):
        recorded |= keycheck_store.record_once(handle, local, _now() if now is None else now)
    for name, fp in local.items():
        if recorded[name] != fp:
            raise ConfigError(CODES[name], f"{key_dir / FILES[name]} holds another {_WHAT[name]} (key id {fp}; "
                                           f"this database's is {recorded[name]}): " + _advice(key_dir))


def token_signing_key(handle: DatabaseHandle, key_dir: Path, now: int | None = None) -> ECKey:
    """The token-signing key of ``key_dir``, the one the database records
    (recorded now when none is: the first node).  HT-0636 / HT-0637."""
    require_files(handle, key_dir, (TOKEN_SIGNING,))
    key = load_signing_key(key_dir)
    settle(handle, key_dir, {TOKEN_SIGNING: key.thumbprint()}, now)
    return key


def audit_keys(handle: DatabaseHandle, key_dir: Path, heads: Path | None = None, now: int | None = None) -> AuditKeys:
    """The audit keys of ``key_dir``, the ones the database records (recorded
    now when none are).  The chain key must also be the key of every chain in
    ``audit_chain`` (databases keyed before revision 0008 record it only there).
    HT-0636 / HT-0638 / HT-0639."""
    require_files(handle, key_dir, (AUDIT_CHAIN, AUDIT_SIGNING))
    keys = AuditKeys(key_dir, heads)
    other = sorted(keycheck_store.chain_key_ids(handle) - {keys.chain_key_id})
    if other:
        raise ConfigError("HT-0638", f"{key_dir / CHAIN_KEY_FILE} holds another {_WHAT[AUDIT_CHAIN]} (key id "
                                     f"{keys.chain_key_id}; the audit chains of this database are keyed with "
                                     f"{', '.join(other)}): " + _advice(key_dir))
    settle(handle, key_dir, {AUDIT_CHAIN: keys.chain_key_id, AUDIT_SIGNING: keys.signing_key_id}, now)
    return keys


@dataclass(frozen=True, slots=True)
class NodeKeys:
    """What :func:`check_key_directory` found: the fingerprints of the keys checked."""

    token_kid: str
    chain_key_id: str
    signing_key_id: str


def check_key_directory(handle: DatabaseHandle, key_dir: Path, heads: Path | None = None,
                        now: int | None = None) -> NodeKeys:
    """The start-up check of a node (``hutong serve``, before any worker starts):
    every missing file named at once (HT-0636), then each key compared with, or
    on a first install recorded in, the database."""
    require_files(handle, key_dir)
    token = token_signing_key(handle, key_dir, now)
    audit = audit_keys(handle, key_dir, heads, now)
    return NodeKeys(token.thumbprint(), audit.chain_key_id, audit.signing_key_id)


def mismatch(handle: DatabaseHandle, held: NodeKeys) -> tuple[str, str] | None:
    """(code, problem) when the keys a running node holds are not the ones the
    database records now (its database was replaced under it), else None.
    Names no path and no key id (``/readyz`` is public)."""
    recorded = keycheck_store.recorded(handle)
    mine = {TOKEN_SIGNING: held.token_kid, AUDIT_CHAIN: held.chain_key_id, AUDIT_SIGNING: held.signing_key_id}
    for name, fp in mine.items():
        if name in recorded and recorded[name] != fp:
            return CODES[name], f"this node's {name} key is not the one the database records"
    if keycheck_store.chain_key_ids(handle) - {held.chain_key_id}:
        return CODES[AUDIT_CHAIN], "this node's audit-chain key is not the key of the database's audit chains"
    return None
