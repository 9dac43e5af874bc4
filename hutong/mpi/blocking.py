"""Blocking: the few keys under which a record is filed, so that finding the
candidates for a new Patient reads a handful of rows, never everyone.

Each key is built to survive one of the kinds of noise real registrations
carry (and the synthetic region injects, hutong/synth/README.md):

=========  ==============================================  =====================================
prefix     key                                             survives
=========  ==============================================  =====================================
``i``      valid ID number (GB 11643, 15-digit converted)  every name/date/phone/address change
``b``      invalid ID number as written                    the same typo entered twice
``n``      name pinyin + birth date (month/day sorted)     homophones, traditional characters,
                                                           day/month swapped, missing ID
``d``      birth date (sorted) + sorted name initials      look-alike characters, swapped given
                                                           names (same initials, other order)
``p``      phone                                           name typos together with a wrong date
``h``      居民健康卡 number;  ``x`` passport               foreigners, missing ID
=========  ==============================================  =====================================

Keys are stored as a short keyed digest (``stored_key``), not as text: the
table then holds no ID numbers or phone numbers.  The key is the database's
secret blind-index key (a subkey of it, hutong.security.blindindex), handed
to ``Mpi`` by ``open_repository``; without one (a repository assembled by
hand, or encryption off) the public ``LEGACY_KEY`` is used, which hides
nothing from someone who has read this file.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hutong.mpi.features import Features

# Key of databases without a key ring (and of every database before encryption at rest).
LEGACY_KEY = b"hutong-mpi-blocking-v1"
# A key shared by more records than this (a clinic typing its own phone number
# for everyone) is not evidence of anything: lookups read at most this many.
MAX_BLOCK = 64


def stored_key(key: str, secret: bytes) -> str:
    return hashlib.blake2b(key.encode(), digest_size=12, key=secret).hexdigest()


def sorted_date(bd: str) -> str:
    """YYYY-MM-DD with month and day in ascending order: a swapped pair files together."""
    if len(bd) == 10:
        m, d = bd[5:7], bd[8:10]
        return bd[:5] + "-".join(sorted((m, d)))
    return bd


def keys_of(f: Features, secret: bytes) -> set[str]:
    """The stored (digested) keys of a record under the database's blocking key."""
    return {stored_key(k, secret) for k in raw_keys(f)}


def raw_keys(f: Features) -> set[str]:
    """The keys as text (in memory only: relink and training block with these)."""
    keys: set[str] = set()
    for i in f.ids:
        keys.add("i:" + i)
    for b in f.bad_ids:
        keys.add("b:" + b)
    dates = [sorted_date(d) for d in f.birth_dates] or [""]
    for d in dates:
        for py in f.pinyins:
            keys.add(f"n:{py}|{d}")
        if d:
            for ini in f.initials:
                keys.add(f"d:{d}|{''.join(sorted(ini))}")
    for p in f.phones:
        keys.add("p:" + p)
    for h in f.health_cards:
        keys.add("h:" + h)
    for x in f.passports:
        keys.add("x:" + x)
    return keys
