"""The audit chain's keys and its published, signed heads.

Issue 12, finding 7: with an unkeyed SHA-256 chain, whoever holds the
database files can edit a row and recompute every later hash, cut rows off
the end, delete the oldest rows and plant an anchor, or rebuild the table,
and the chain still verifies.  Two things held outside the database close
that:

- **The chain key** (``audit-chain.key``, 256 random bits): every row's hash
  is HMAC-SHA256 under it (RFC 2104), so a row cannot be re-hashed by someone
  without it.  It is never derived from the master keys (those rotate; the
  chain must verify for its whole retention period).
- **Signed heads** (``audit-signing.key``, Ed25519, RFC 8032): every
  ``audit_head_seconds`` (and on ``hutong audit heads --publish``) the
  current head (seq, hash) is signed and appended to an append-only NDJSON
  file outside the database (``<key dir>/audit-heads.ndjson`` or
  HUTONG_AUDIT_HEADS), which the operator ships elsewhere (syslog, WORM
  storage, another site).  ``hutong audit verify`` checks every published
  head against the chain: rows cut off the end, a rebuilt chain, or an edit
  re-hashed by someone who stole the chain key all contradict a head signed
  before the tampering.  Rows written after the last head can be cut
  unseen: the head interval bounds that window.

Both key files are 0600 in the key directory (0700), which by default is
not inside the database directory (:func:`hutong.security.keys.default_key_dir`).
Someone holding the key directory as well as the database can forge all of
this locally; the copy of the heads shipped elsewhere is then the evidence,
and ``hutong audit verify --heads <shipped copy>`` checks against it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hutong.errors import ConfigError
from hutong.security.keys import FileKeySource, default_key_dir, private_dir
from hutong.security.settings import SecuritySettings

CHAIN_KEY_FILE = "audit-chain.key"
SIGNING_KEY_FILE = "audit-signing.key"
HEADS_FILE = "audit-heads.ndjson"
KEY_BYTES = 32
HEAD_CONTEXT = b"hutong-audit-head-v1\n"   # domain separation: a head signature signs nothing else


def key_dir_of(repo: Any, settings: SecuritySettings | None = None) -> Path:
    """The key directory of an opened repository: where its master key files
    are (the encrypting codec's file source), else HUTONG_KEY_DIR, else the default."""
    from hutong.security.crypto import AesCodec

    codec = getattr(repo, "codec", None)
    if isinstance(codec, AesCodec) and isinstance(codec.ring.source, FileKeySource):
        return codec.ring.source.dir
    s = settings if settings is not None and settings.key_dir is not None else SecuritySettings.from_env()
    return s.key_dir or default_key_dir(repo.db.url)


def heads_path_of(key_dir: Path, settings: SecuritySettings | None = None) -> Path:
    s = settings if settings is not None and settings.audit_heads is not None else SecuritySettings.from_env()
    return s.audit_heads or key_dir / HEADS_FILE


def _create_exclusive(path: Path, data: bytes) -> None:
    """Write a new 0600 file atomically: a concurrent process sees the whole
    file or none (written under a temporary name, then hard-linked into place,
    which fails if the name exists)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process made it first: theirs stands
    finally:
        tmp.unlink()


def _read_private(path: Path) -> bytes:
    st = path.stat()
    if st.st_mode & 0o077:
        if st.st_uid != os.geteuid():
            raise ConfigError("HT-0156", f"{path} is readable by others (mode {st.st_mode & 0o777:o}); chmod 600 it")
        path.chmod(0o600)
    return path.read_bytes()


def fingerprint(material: bytes) -> str:
    """A public id of a key (never the key): 16 hex digits of SHA-256 over a
    label and the key, so ids can be printed, logged and compared."""
    return hashlib.sha256(b"hutong-key-id:" + material).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Head:
    """One published head: the chain had row ``seq`` with hash ``hash`` at ``time_ms``.

    ``chain``: the node's chain (issue 18, item 2), "" for the single chain; a
    node publishes its own chain's heads.  Heads of chain "" are signed and
    written exactly as before there were several chains (lines without a
    chain are chain ""), so every heads file published earlier still verifies;
    a node chain's head also signs its name and the row's position in it.
    """

    seq: int
    hash: str
    keyed_from: int
    time_ms: int
    key: str     # fingerprint of the signing public key
    sig: str     # base64 Ed25519 signature over HEAD_CONTEXT + the other fields (sorted-key JSON)
    chain: str = ""
    chain_seq: int | None = None

    def _fields(self) -> dict[str, Any]:
        d: dict[str, Any] = {"seq": self.seq, "hash": self.hash, "keyed_from": self.keyed_from,
                             "time_ms": self.time_ms, "key": self.key}
        if self.chain:
            d["chain"] = self.chain
            d["chain_seq"] = self.chain_seq
        return d

    def signed_bytes(self) -> bytes:
        return HEAD_CONTEXT + orjson.dumps(self._fields(), option=orjson.OPT_SORT_KEYS)

    def to_json(self) -> dict[str, Any]:
        return self._fields() | {"sig": self.sig}


class AuditKeys:
    """The chain key and the head-signing key of one key directory, made on first use."""

    def __init__(self, directory: Path, heads: Path | None = None) -> None:
        self.dir = directory
        self.heads = heads or directory / HEADS_FILE
        private_dir(directory)
        chain = directory / CHAIN_KEY_FILE
        if not chain.exists():
            _create_exclusive(chain, base64.b64encode(os.urandom(KEY_BYTES)) + b"\n")
        try:
            self.chain_key = base64.b64decode(_read_private(chain).strip(), validate=True)
        except ValueError as e:
            raise ConfigError("HT-0156", f"{chain} is not base64") from e
        if len(self.chain_key) != KEY_BYTES:
            raise ConfigError("HT-0156", f"{chain} is not a 256-bit key")
        self.chain_key_id = fingerprint(self.chain_key)
        signing = directory / SIGNING_KEY_FILE
        if not signing.exists():
            _create_exclusive(signing, Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        try:
            key = serialization.load_pem_private_key(_read_private(signing), password=None)
        except ValueError as e:
            raise ConfigError("HT-0156", f"{signing} is not a PEM private key") from e
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError("HT-0156", f"{signing} is not an Ed25519 key")
        self._signer = key
        self.public = key.public_key()
        self.public_pem = self.public.public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
        self.signing_key_id = fingerprint(self.public.public_bytes(serialization.Encoding.Raw,
                                                                   serialization.PublicFormat.Raw))

    # ------------------------------------------------------------ heads
    def sign(self, seq: int, hash: str, keyed_from: int, time_ms: int, *, chain: str = "",
             chain_seq: int | None = None) -> Head:
        cs = chain_seq if chain else None
        unsigned = Head(seq, hash, keyed_from, time_ms, self.signing_key_id, "", chain, cs)
        sig = base64.b64encode(self._signer.sign(unsigned.signed_bytes())).decode()
        return Head(seq, hash, keyed_from, time_ms, self.signing_key_id, sig, chain, cs)

    def publish(self, head: Head) -> None:
        """Append ``head`` as one line (O_APPEND, fsynced: the line is on disk
        before anyone relies on it; one write of a short line is not interleaved
        with another process's)."""
        self.heads.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.heads, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, orjson.dumps(head.to_json()) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)


def read_heads(path: Path) -> Iterator[tuple[int, Head | None]]:
    """(line number, head) for every line of a heads file; None for a malformed line."""
    if not path.exists():
        return
    try:
        lines = path.read_bytes().splitlines()
    except OSError as e:
        raise ConfigError("HT-0158", f"audit heads file {path} unreadable: {type(e).__name__}") from e
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = orjson.loads(line)
            chain = str(d.get("chain") or "")
            yield n, Head(int(d["seq"]), str(d["hash"]), int(d["keyed_from"]), int(d["time_ms"]), str(d["key"]),
                          str(d["sig"]), chain, int(d["chain_seq"]) if chain else None)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            yield n, None


def signature_ok(public: Ed25519PublicKey, head: Head) -> bool:
    try:
        public.verify(base64.b64decode(head.sig, validate=True), head.signed_bytes())
    except (InvalidSignature, ValueError):
        return False
    return True


def chain_mac(key: bytes) -> Any:
    """A fresh HMAC-SHA256 object under the chain key (hutong.security.audit.row_hash feeds it)."""
    return hmac.new(key, digestmod=hashlib.sha256)
