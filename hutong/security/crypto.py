"""AES-256-GCM codec: the encrypting implementation of the store's codec seam.

Stored value (hutong.store.codec)::

    b"E" | data key id (4 bytes, big-endian) | nonce (12 random bytes) | ciphertext | tag (16)

AES-GCM (NIST SP 800-38D) with a random 96-bit nonce per value: §8.3 allows
2^32 encryptions per key with random nonces, and ``hutong keys rotate``
starts a new data key long before that at regional volumes.  The associated
data is a purpose string (``resource``, ``mpi-features``, ``hl7-raw``...),
so a ciphertext moved to another column does not authenticate.  ``J`` values
(written before encryption was on) are still read.
"""

from __future__ import annotations

import os
from typing import Protocol

from cryptography.exceptions import InvalidTag

from hutong.errors import ConfigError
from hutong.security.keys import KeyRing
from hutong.store.codec import ENCRYPTED, PLAIN, Codec

HEADER = 1 + 4 + 12


def key_id_of(stored: bytes) -> int | None:
    """The data key id of an encrypted value; None for a plain one."""
    if stored[:1] != ENCRYPTED or len(stored) < HEADER:
        return None
    return int.from_bytes(stored[1:5], "big")


class AesCodec:
    """Encrypts with the key ring's current data key; decrypts with any of its keys."""

    def __init__(self, ring: KeyRing, purpose: str = "resource") -> None:
        self.ring = ring
        self.purpose = purpose
        self._aad = b"hutong:" + purpose.encode()

    def with_purpose(self, purpose: str) -> Codec:
        return AesCodec(self.ring, purpose)

    def encode(self, body: bytes) -> bytes:
        kid, aes = self.ring.current()
        nonce = os.urandom(12)
        return ENCRYPTED + kid.to_bytes(4, "big") + nonce + aes.encrypt(nonce, body, self._aad)

    def decode(self, stored: bytes) -> bytes:
        fmt = stored[:1]
        if fmt == PLAIN:
            return stored[1:]
        if fmt != ENCRYPTED or len(stored) < HEADER + 16:
            raise ValueError(f"unknown stored value format {fmt!r}")
        kid = int.from_bytes(stored[1:5], "big")
        aes = self.ring.get(kid)
        if aes is None:
            raise ConfigError("HT-0153", f"stored value is encrypted under data key {kid}, which this "
                                         "database's key table does not hold")
        try:
            return aes.decrypt(stored[5:17], stored[17:], self._aad)
        except InvalidTag as e:
            # Wrong purpose (value moved between columns), tampering, or a damaged row.
            raise ConfigError("HT-0153", f"a stored {self.purpose} value failed authentication "
                                         f"under data key {kid}") from e


class _Coded(Protocol):
    """What :func:`ring_of` needs of a repository: its codec."""

    @property
    def codec(self) -> Codec: ...


def ring_of(repo: _Coded) -> KeyRing:
    """The key ring of a repository opened with encryption (hutong.fhir.assembly)."""
    if not isinstance(repo.codec, AesCodec):
        raise ConfigError("HT-0152", "this repository was opened without encryption at rest")
    return repo.codec.ring
