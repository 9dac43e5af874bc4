"""Passphrase encryption of a backup's data file (issue 18, item 1: "optionally encrypted").

The database's own encryption (bodies and sealed columns, hutong.security)
stays in a backup, but the rest of the file -- the tables' plain columns,
indexes, the audit chain's shape -- is readable by whoever holds the copy.
``hutong backup --encrypt`` seals the whole data file with a key derived from
an operator's passphrase, so a backup on a tape or in another building is
unreadable without it, independently of the key directory (kept apart as
before: the passphrase does not replace the keys).

Format (one file, ``<name>.enc``)::

    b"HUTONG-BACKUP-ENC/1\\n"
    header: one line of JSON, e.g.
      {"kdf": {"name": "scrypt", "n": 131072, "r": 8, "p": 1, "salt": b64},
       "cipher": "AES-256-GCM", "chunk": 1048576, "nonce_prefix": b64 (7 bytes)}
    chunks: AES-256-GCM of each CHUNK bytes of the plain file (the last one
      shorter, possibly empty), each followed by its 16-byte tag

- scrypt (RFC 7914) n=2^17, r=8, p=1: OWASP's minimum for scrypt
  (https://cheatsheetseries.owasp.org/cheatsheets/Password_Storage_Cheat_Sheet.html),
  about 128 MiB and a fraction of a second: one guess costs as much.
- The file is encrypted in chunks so that a database of any size streams
  through in bounded memory.  Each chunk's nonce is the random prefix, the
  chunk's number and a last-chunk flag, and the header is every chunk's
  associated data: the STREAM construction (Hoang, Reyhanitabar, Rogaway,
  Vizár, "Online Authenticated-Encryption and its Nonce-Reuse
  Misuse-Resistance", CRYPTO 2015), so chunks cannot be dropped, reordered,
  or cut off at the end without the tags failing; a changed header (the salt,
  the scrypt cost) fails every tag too.
- A wrong passphrase and an altered file both fail the first tag they reach
  (HT-0621); the backup's manifest checksums the ``.enc`` file, so a file
  damaged by accident is told apart before any passphrase is asked (HT-0331).
"""

from __future__ import annotations

import base64
import json
import os
import struct
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from hutong.errors import ConfigError

MAGIC = b"HUTONG-BACKUP-ENC/1\n"
SUFFIX = ".enc"
CHUNK = 1 << 20
TAG = 16
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 17, 8, 1
MIN_PASSPHRASE = 12
_MAX_HEADER = 4096


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", index, 1 if last else 0)  # 7 + 4 + 1 = 12 bytes


def check_passphrase(passphrase: str) -> None:
    if len(passphrase) < MIN_PASSPHRASE:
        raise ConfigError("HT-0622", f"the backup passphrase must have at least {MIN_PASSPHRASE} characters")


def encrypt_file(src: Path, dest: Path, passphrase: str) -> None:
    """``dest`` (new, mode 0600) := ``src`` sealed with ``passphrase`` (the format above)."""
    check_passphrase(passphrase)
    salt, prefix = os.urandom(16), os.urandom(7)
    header: dict[str, Any] = {"kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
                                      "salt": base64.b64encode(salt).decode()},
                              "cipher": "AES-256-GCM", "chunk": CHUNK,
                              "nonce_prefix": base64.b64encode(prefix).decode()}
    head = MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n"
    aead = AESGCM(_derive(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P))
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out, src.open("rb") as f:
        out.write(head)
        index = 0
        chunk = f.read(CHUNK)
        while True:
            following = f.read(CHUNK)
            last = not following
            out.write(aead.encrypt(_nonce(prefix, index, last), chunk, head))
            if last:
                break
            chunk, index = following, index + 1
        out.flush()
        os.fsync(out.fileno())


def _read_header(f: BinaryIO) -> tuple[bytes, dict[str, Any]]:
    magic = f.read(len(MAGIC))
    line = f.readline(_MAX_HEADER)
    try:
        if magic != MAGIC or not line.endswith(b"\n"):
            raise ValueError("not an encrypted Hutong backup")
        header = json.loads(line)
        kdf = header["kdf"]
        if kdf["name"] != "scrypt" or header["cipher"] != "AES-256-GCM":
            raise ValueError("unknown cipher or key derivation")
        if not (1 << 14 <= int(kdf["n"]) <= 1 << 20 and 1 <= int(kdf["r"]) <= 32 and 1 <= int(kdf["p"]) <= 16
                and 1 <= int(header["chunk"]) <= 1 << 26 and len(base64.b64decode(header["nonce_prefix"])) == 7):
            raise ValueError("parameters out of range")  # a forged header must not make scrypt eat the machine
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError("HT-0621", f"the encrypted backup's header is not valid ({e}): nothing restored") from e
    return magic + line, header


def decrypt_file(src: Path, dest: Path, passphrase: str) -> None:
    """``dest`` (new, mode 0600) := the plain file sealed in ``src``; HT-0621 on a wrong passphrase or any
    change to ``src``, and then ``dest`` is removed again (the caller writes it beside its target)."""
    created = False
    try:
        with src.open("rb") as f:
            head, header = _read_header(f)
            kdf = header["kdf"]
            aead = AESGCM(_derive(passphrase, base64.b64decode(kdf["salt"]), int(kdf["n"]), int(kdf["r"]),
                                  int(kdf["p"])))
            prefix, size = base64.b64decode(header["nonce_prefix"]), int(header["chunk"]) + TAG
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            created = True
            with os.fdopen(fd, "wb") as out:
                index = 0
                sealed = f.read(size)
                while True:
                    following = f.read(size)
                    last = not following
                    try:
                        out.write(aead.decrypt(_nonce(prefix, index, last), sealed, head))
                    except InvalidTag as e:
                        raise ConfigError("HT-0621", "the passphrase is wrong, or the encrypted backup was altered "
                                                     "or cut short: nothing restored") from e
                    if last:
                        break
                    sealed, index = following, index + 1
    except BaseException:
        if created:
            dest.unlink(missing_ok=True)
        raise
