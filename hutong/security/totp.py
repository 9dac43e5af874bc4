"""Time-based one-time passwords, the second factor of staff sign-in (RFC 6238).

30-second steps, 6 digits, HMAC-SHA1 (RFC 6238 section 4, what every
authenticator app implements).  One step of clock drift either way is
accepted (RFC 6238 section 5.2).  A code is accepted once: the caller keeps
the last accepted time step per account and passes it in, and a code of that
step or an earlier one is refused as a replay (section 5.2: "the verifier
MUST NOT accept the second attempt of the OTP after the successful
validation has been issued for the first OTP").
"""

from __future__ import annotations

import pyotp

STEP_SECONDS = 30
DRIFT_STEPS = 1


def new_secret() -> str:
    """A fresh base32 secret (160 bits, RFC 4226 section 4 R6)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, account_name: str, issuer: str = "Hutong") -> str:
    """The otpauth:// URI an authenticator app enrols from (shown once, at enrolment)."""
    return pyotp.TOTP(secret).provisioning_uri(name=account_name, issuer_name=issuer)


def code_at(secret: str, now_ms: int) -> str:
    """The code for the step containing ``now_ms`` (what an authenticator app shows)."""
    return pyotp.TOTP(secret).at(now_ms // 1000)


def step_of(now_ms: int) -> int:
    return now_ms // 1000 // STEP_SECONDS


class Replayed(Exception):
    """The code was right but its step was already used."""


def verify(secret: str, code: str, now_ms: int, last_step: int | None) -> int | None:
    """The time step ``code`` belongs to, or None when it is wrong.

    Raises :class:`Replayed` when the code is right but not newer than
    ``last_step`` (the caller stores the returned step as the new last step)."""
    code = code.strip()
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    now_step = step_of(now_ms)
    for step in range(now_step - DRIFT_STEPS, now_step + DRIFT_STEPS + 1):
        if pyotp.utils.strings_equal(totp.at(step * STEP_SECONDS), code):
            if last_step is not None and step <= last_step:
                raise Replayed()
            return step
    return None
