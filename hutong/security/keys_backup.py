"""A passphrase-encrypted backup of a deployment's key set (issue 18, item 4).

``hutong backup`` keeps the keys apart from the data (hutong.store.backup);
this is how the keys themselves are kept: one file, encrypted under a
passphrase an operator holds (on paper in a safe, in a password manager), so
it may lie beside other backups without opening them.

What it holds (the *key set*): every master key the key source has (ids and
32-byte keys, oldest first) and the other secrets of the key directory that a
restored deployment needs to be the same deployment: the audit chain key and
head-signing key (without them ``hutong audit verify`` fails on every
existing row: hutong.security.auditheads) and the token-signing key (without
it every issued token is void), and the published audit heads kept there.  Not the wrapped data keys: they are rows of
the database (``data_key``) and travel with its backup.

File format (``hutong-key-backup/1``), one JSON object::

    {"format": "hutong-key-backup/1",
     "kdf": {"name": "scrypt", "n": 131072, "r": 8, "p": 1, "salt": b64},
     "cipher": "AES-256-GCM", "nonce": b64, "ciphertext": b64,
     "sha256": hex}

- scrypt (RFC 7914) with n=2^17, r=8, p=1: OWASP's password-storage minimum
  for scrypt; about 128 MiB and a fraction of a second per try.
- AES-256-GCM (NIST SP 800-38D) under the derived key; the associated data is
  the canonical JSON of the header (format, kdf, cipher, nonce), so a header
  edited to weaker parameters does not decrypt.
- ``sha256`` covers the header and the ciphertext: it tells a corrupt or
  truncated file (HT-0602, checked before any passphrase is asked) from a
  wrong passphrase (HT-0603: the checksum holds, the tag does not).  Someone
  who can rewrite the file can recompute the checksum; they still cannot
  make the tag hold, so a tampered file is refused either way.

Restore writes into an empty (or absent) key directory only: the files are
written into a private directory beside it and moved into place last, so a
refused restore leaves nothing and a present key set is never overwritten.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from hutong.errors import ConfigError
from hutong.security.keys import _ID, KEY_BYTES, KeySource

FORMAT = "hutong-key-backup/1"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1
MIN_PASSPHRASE = 12
MAX_FILE = 1 << 20  # a key set is a few KB; anything larger is not one of ours
# The key directory's other secrets (hutong.security.auditheads, hutong.security.tokens)
# and its published audit heads (not secret; what ``hutong audit verify`` checks the
# chain's tail against): fixed names, so a backup can never write a path of its choosing.
OTHER_SECRETS = ("audit-chain.key", "audit-signing.key", "token-signing.pem", "audit-heads.ndjson")


@dataclass(frozen=True, slots=True)
class KeySet:
    masters: dict[str, bytes]      # id -> key, oldest first
    files: dict[str, bytes]        # one of OTHER_SECRETS -> content
    created_ms: int
    source: str                    # where the master keys came from (describe(): no key material)


def collect(source: KeySource, key_dir: Path) -> KeySet:
    masters = source.master_keys()
    if not masters:
        raise ConfigError("HT-0611", f"the key source ({source.describe()}) holds no master keys: nothing to back up")
    files = {name: (key_dir / name).read_bytes() for name in OTHER_SECRETS if (key_dir / name).is_file()}
    return KeySet(masters, files, time.time_ns() // 1_000_000, source.describe())


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def seal(keyset: KeySet, passphrase: str) -> bytes:
    """The backup file's bytes."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise ConfigError("HT-0601", f"the passphrase must have at least {MIN_PASSPHRASE} characters")
    salt, nonce = os.urandom(16), os.urandom(12)
    header = {"format": FORMAT, "cipher": "AES-256-GCM", "nonce": base64.b64encode(nonce).decode(),
              "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
                      "salt": base64.b64encode(salt).decode()}}
    plain = _canonical({"created_ms": keyset.created_ms, "source": keyset.source,
                        "master_keys": [[k, base64.b64encode(v).decode()] for k, v in keyset.masters.items()],
                        "files": {k: base64.b64encode(v).decode() for k, v in keyset.files.items()}})
    key = _derive(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    ct = AESGCM(key).encrypt(nonce, plain, _canonical(header))
    body = {**header, "ciphertext": base64.b64encode(ct).decode()}
    body["sha256"] = hashlib.sha256(_canonical(body)).hexdigest()
    return json.dumps(body, indent=1).encode() + b"\n"


def _corrupt(why: str) -> ConfigError:
    return ConfigError("HT-0602", f"not a Hutong key backup, or corrupt or truncated: {why}")


def check(data: bytes) -> dict[str, Any]:
    """The parsed file when its format and checksum hold (no passphrase needed)."""
    if len(data) > MAX_FILE:
        raise _corrupt("too large")
    try:
        body = json.loads(data)
    except ValueError:
        raise _corrupt("not JSON (truncated?)") from None
    if not isinstance(body, dict) or not isinstance(body.get("format"), str):
        raise _corrupt("no format field")
    if body["format"] != FORMAT:
        raise ConfigError("HT-0602", f"key backup format {body['format'][:40]!r} is not one this release reads "
                                     f"({FORMAT})")
    want = body.pop("sha256", None)
    if not isinstance(want, str) or hashlib.sha256(_canonical(body)).hexdigest() != want:
        raise _corrupt("its checksum does not match")
    kdf = body.get("kdf")
    if (not isinstance(kdf, dict) or kdf.get("name") != "scrypt" or body.get("cipher") != "AES-256-GCM"
            or not all(isinstance(kdf.get(x), int) for x in ("n", "r", "p"))):
        raise _corrupt("unknown key derivation or cipher")
    # Parameters come from the file: bound them, so a crafted file cannot make
    # restore spend gigabytes, nor one that a weak setting makes cheap to guess.
    if not (2**14 <= kdf["n"] <= 2**20 and 1 <= kdf["r"] <= 16 and 1 <= kdf["p"] <= 4):
        raise _corrupt("key derivation parameters out of range")
    return body


def open_sealed(data: bytes, passphrase: str) -> KeySet:
    body = check(data)
    kdf = body["kdf"]
    header = {k: body[k] for k in ("format", "cipher", "nonce", "kdf")}
    try:
        salt = base64.b64decode(kdf["salt"], validate=True)
        nonce = base64.b64decode(body["nonce"], validate=True)
        ct = base64.b64decode(body["ciphertext"], validate=True)
    except (ValueError, TypeError, KeyError):
        raise _corrupt("a field is not base64") from None
    key = _derive(passphrase, salt, kdf["n"], kdf["r"], kdf["p"])
    try:
        plain = AESGCM(key).decrypt(nonce, ct, _canonical(header))
    except (InvalidTag, ValueError):
        raise ConfigError("HT-0603", "wrong passphrase: the key backup does not decrypt with it "
                                     "(nothing was written)") from None
    inner = json.loads(plain)
    masters: dict[str, bytes] = {}
    for kid, b64 in inner["master_keys"]:
        key_bytes = base64.b64decode(b64)
        if not _ID.match(kid) or len(key_bytes) != KEY_BYTES:
            raise _corrupt("a master key entry is malformed")
        masters[kid] = key_bytes
    files = {name: base64.b64decode(v) for name, v in inner["files"].items() if name in OTHER_SECRETS}
    return KeySet(masters, files, int(inner["created_ms"]), str(inner["source"]))


def write_new(path: Path, data: bytes) -> None:
    """Create ``path`` (0600, never over an existing file)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError("HT-0604", f"{path} exists: a key backup is never written over a file") from None
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def restore_into(keyset: KeySet, target: Path) -> list[str]:
    """Write the key set into ``target``, which must be absent or empty.  Returns the file names."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError("HT-0604", f"the key directory {target} is not empty: nothing overwritten "
                                     "(restore into an empty directory, or set HUTONG_KEY_DIR)")
    target.parent.mkdir(parents=True, exist_ok=True)  # its mode is the operator's: not narrowed
    staging = target.parent / f".{target.name}.restoring-{os.getpid()}-{os.urandom(4).hex()}"
    staging.mkdir(mode=0o700)
    try:
        names: list[str] = []
        for kid, key in keyset.masters.items():
            names.append(f"master-{kid}.key")
            write_new(staging / names[-1], base64.b64encode(key) + b"\n")
        for name, content in keyset.files.items():
            names.append(name)
            write_new(staging / name, content)
        if target.exists():
            target.rmdir()  # empty (checked above); rename cannot replace a directory that has files
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return names
