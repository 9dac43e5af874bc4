"""Passwords (argon2id, policy), TOTP (RFC 6238, replay) and the SMS outbox."""

from __future__ import annotations

import stat
from pathlib import Path

import pyotp
import pytest

from hutong.errors import InvalidRequest
from hutong.security import passwords, totp
from hutong.security.settings import SecuritySettings
from hutong.security.sms import OutboxGateway

S = SecuritySettings()


def test_hash_is_argon2id_salted_and_verifies() -> None:
    h1 = passwords.hash_secret("Correct-Horse-9")
    h2 = passwords.hash_secret("Correct-Horse-9")
    assert h1.startswith("$argon2id$") and h1 != h2  # a salt each time
    assert "Correct-Horse-9" not in h1
    assert passwords.verify_secret(h1, "Correct-Horse-9")
    assert not passwords.verify_secret(h1, "correct-horse-9")
    assert not passwords.verify_secret(h1, "")
    assert not passwords.needs_rehash(h1)


def test_missing_or_corrupt_hash_never_matches() -> None:
    assert not passwords.verify_secret(None, "anything")
    assert not passwords.verify_secret("$argon2id$garbage", "anything")
    assert not passwords.verify_secret("plain-text-password", "plain-text-password")
    assert passwords.needs_rehash("not a hash")


@pytest.mark.parametrize("pw, why", [
    ("Ab1!", "at least 8"),                # too short
    ("abcdefghij", "3 kinds"),             # one class
    ("abcdefgh12", "3 kinds"),             # two classes
    ("", "at least 8"),
])
def test_policy_refuses_weak_passwords_without_echoing_them(pw: str, why: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        passwords.check_policy(pw, S)
    assert e.value.code == "HT-0120"
    assert why in e.value.message
    if pw:
        assert pw not in e.value.message


@pytest.mark.parametrize("pw", ["abcdEFGH12", "abcdefg1!", "ABCDEFG1!", "密码Abc12345"])
def test_policy_accepts_three_classes_of_eight(pw: str) -> None:
    passwords.check_policy(pw, S)


def test_policy_is_configurable() -> None:
    strict = SecuritySettings(password_min_length=12, password_min_classes=4)
    with pytest.raises(InvalidRequest):
        passwords.check_policy("abcdEFGH12", strict)      # 10 chars, 3 classes
    passwords.check_policy("abcdEFGH12!x", strict)
    lax = SecuritySettings(password_min_length=4, password_min_classes=1)
    passwords.check_policy("abcd", lax)


def test_generated_passwords_meet_the_policy() -> None:
    seen = set()
    for _ in range(200):
        pw = passwords.generate_password(S)
        passwords.check_policy(pw, S)
        seen.add(pw)
    assert len(seen) == 200
    assert len(passwords.generate_password(SecuritySettings(password_min_length=20))) >= 20


# ------------------------------------------------------------------ TOTP (RFC 6238)
T0 = 1_700_000_000_000  # ms


def test_totp_accepts_the_current_code_once() -> None:
    secret = totp.new_secret()
    code = pyotp.TOTP(secret).at(T0 // 1000)          # what the authenticator app shows
    step = totp.verify(secret, code, T0, None)
    assert step == totp.step_of(T0)
    with pytest.raises(totp.Replayed):
        totp.verify(secret, code, T0, step)              # same code again: replay
    with pytest.raises(totp.Replayed):
        totp.verify(secret, code, T0 + 5_000, step)      # still within the same step
    later = T0 + 30_000
    assert totp.verify(secret, totp.code_at(secret, later), later, step) == step + 1


def test_totp_drift_window_is_one_step() -> None:
    secret = totp.new_secret()
    assert totp.verify(secret, totp.code_at(secret, T0 - 30_000), T0, None) is not None
    assert totp.verify(secret, totp.code_at(secret, T0 + 30_000), T0, None) is not None
    assert totp.verify(secret, totp.code_at(secret, T0 - 90_000), T0, None) is None
    assert totp.verify(secret, totp.code_at(secret, T0 + 90_000), T0, None) is None


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", "12 456", "１２３４５６"])
def test_totp_malformed_codes_are_wrong(code: str) -> None:
    assert totp.verify(totp.new_secret(), code, T0, None) is None


def test_totp_wrong_code_is_wrong() -> None:
    secret = totp.new_secret()
    right = totp.code_at(secret, T0)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    assert totp.verify(secret, wrong, T0, None) is None


def test_provisioning_uri() -> None:
    secret = totp.new_secret()
    uri = totp.provisioning_uri(secret, "dr.wang")
    assert uri.startswith("otpauth://totp/Hutong:dr.wang?") and f"secret={secret}" in uri
    assert pyotp.parse_uri(uri).secret == secret


# ------------------------------------------------------------------ SMS outbox
def test_outbox_gateway_writes_private_json_lines(tmp_path: Path) -> None:
    gw = OutboxGateway(tmp_path / "sms" / "outbox.jsonl")
    assert gw.messages() == []
    assert gw.send("+8613800000000", "code 123456") == "outbox"
    gw.send("13900000000", "second")
    msgs = gw.messages()
    assert [m["to"] for m in msgs] == ["+8613800000000", "13900000000"]
    assert msgs[0]["text"] == "code 123456" and msgs[0]["status"] == "outbox"
    mode = stat.S_IMODE((tmp_path / "sms" / "outbox.jsonl").stat().st_mode)
    assert mode == 0o600
