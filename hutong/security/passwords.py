"""Passwords and other shared secrets: argon2id hashes and the password policy.

Hashing is Argon2id (RFC 9106) with the OWASP Password Storage Cheat Sheet
parameters (m = 19 MiB, t = 2, p = 1): about 50 ms on one core, so sign-in
and client-credential requests stay cheap for the platform while a stolen
hash costs an attacker the same per guess.  The same hashing guards client secrets and one-time
codes: a 6-digit code hashed with SHA-256 could be reversed in a second from
a stolen table, an argon2 hash of it not within its 5-minute life.

Policy (GB/T 22239-2019 level 3, 8.1.4.1 identity authentication, as issue 6
states it): at least ``password_min_length`` characters drawn from at least
``password_min_classes`` of lower case, upper case, digits and symbols.
"""

from __future__ import annotations

import secrets
import string

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from hutong.errors import InvalidRequest
from hutong.security.settings import SecuritySettings

_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, hash_len=32, salt_len=16,
                         type=Type.ID)

# Verified against when the account does not exist, so that an unknown username
# costs the same time as a wrong password (no account enumeration by timing).
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

SYMBOLS = "!#$%&*+-=?@^_~"


def hash_secret(secret: str) -> str:
    """argon2id hash (PHC string format, salt included) of a password, client secret or code."""
    return _hasher.hash(secret)


def verify_secret(stored: str | None, secret: str) -> bool:
    """True when ``secret`` matches ``stored``; a missing or corrupt hash never matches
    (and still costs one verification, see _DUMMY_HASH)."""
    try:
        return _hasher.verify(stored or _DUMMY_HASH, secret) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """True when ``stored`` was made with weaker parameters than today's."""
    try:
        return _hasher.check_needs_rehash(stored)
    except InvalidHashError:
        return True


def classes_of(password: str) -> int:
    """How many of the four character classes ``password`` uses."""
    return sum((
        any(c.islower() for c in password),
        any(c.isupper() for c in password),
        any(c.isdigit() for c in password),
        any(not c.isalnum() for c in password),
    ))


def check_policy(password: str, settings: SecuritySettings) -> None:
    """Raise InvalidRequest HT-0120 unless ``password`` meets the policy.

    The message says what is missing but never repeats the password."""
    problems = []
    if len(password) < settings.password_min_length:
        problems.append(f"at least {settings.password_min_length} characters")
    if classes_of(password) < settings.password_min_classes:
        problems.append(f"characters of at least {settings.password_min_classes} kinds "
                        "(lower case, upper case, digits, symbols)")
    if len(password) > 256:
        problems.append("at most 256 characters")
    if problems:
        raise InvalidRequest("HT-0120", "the password needs " + " and ".join(problems))


def generate_password(settings: SecuritySettings, length: int = 16) -> str:
    """A random password that meets the policy (initial and reset passwords)."""
    n = max(length, settings.password_min_length, 4)
    pools = (string.ascii_lowercase, string.ascii_uppercase, string.digits, SYMBOLS)
    while True:
        chars = [secrets.choice(p) for p in pools]
        alphabet = "".join(pools)
        chars += [secrets.choice(alphabet) for _ in range(n - len(chars))]
        # Fisher-Yates with a CSPRNG, so the class of each position is not predictable.
        for i in range(len(chars) - 1, 0, -1):
            j = secrets.randbelow(i + 1)
            chars[i], chars[j] = chars[j], chars[i]
        pw = "".join(chars)
        if classes_of(pw) >= min(4, settings.password_min_classes):
            return pw


def generate_secret() -> str:
    """A client secret: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)
