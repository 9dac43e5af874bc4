"""Accounts on SQLite and PostgreSQL: creation rules, password + TOTP sign-in,
lockout, expiry, residents' SMS codes, delegates, nothing secret stored plain."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from hutong.errors import HutongError, InvalidRequest
from hutong.fhir.assembly import open_repository
from hutong.security import passwords, totp
from hutong.security.accounts import TABLES, Account, Accounts, Delegation
from hutong.security.principal import Role
from hutong.security.settings import SecuritySettings
from hutong.store.sql import SqlRepository

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MIN = 60_000
PW = "Tiananmen-1949"


class Clock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


class MarkingCodec:
    """A codec that visibly transforms bytes, to prove secrets go through repo.codec."""

    def encode(self, body: bytes) -> bytes:
        return b"X" + bytes(b ^ 0x5A for b in body)

    def decode(self, stored: bytes) -> bytes:
        assert stored[:1] == b"X"
        return bytes(b ^ 0x5A for b in stored[1:])


def clear(repo: SqlRepository) -> None:
    with repo.db.engine.begin() as conn:
        for t in TABLES:
            conn.execute(t.delete())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def accounts(db_url: str, clock: Clock) -> Iterator[Accounts]:
    repo = open_repository(db_url)
    repo.codec = MarkingCodec()
    clear(repo)
    yield Accounts(repo, SecuritySettings(), clock=clock)
    repo.db.close()


def staff(accounts: Accounts, role: Role = Role.COMMISSION, username: str = "staff.li") -> tuple[Account, str]:
    a, _pw, uri = accounts.add_user(username, role=role, name="李娜", password=PW)
    import pyotp

    return a, pyotp.parse_uri(uri).secret


def code(secret: str, clock: Clock) -> str:
    return totp.code_at(secret, clock.now)


def fails(code_: str, fn: object, *args: object, **kw: object) -> HutongError:
    with pytest.raises(HutongError) as e:
        fn(*args, **kw)  # type: ignore[operator]
    assert e.value.code == code_, e.value.message
    return e.value


# ------------------------------------------------------------------ creation
def test_client_secret_is_hashed_and_checked(accounts: Accounts) -> None:
    a, secret = accounts.add_client("北京协和医院 HIS", organization="400000001", organization_id="org-1")
    assert secret and a.client_id and a.client_id.startswith("hc-") and a.role == Role.INSTITUTION
    assert a.scopes == "system/*.cruds" and a.organization_id == "org-1"
    assert accounts.check_client_secret(a.client_id, secret).id == a.id
    fails("HT-0130", accounts.check_client_secret, a.client_id, secret + "x")
    fails("HT-0130", accounts.check_client_secret, "hc-unknown", secret)
    _, rotated = accounts.rotate_secret(a.id)
    fails("HT-0130", accounts.check_client_secret, a.client_id, secret)
    assert accounts.check_client_secret(a.client_id, rotated).id == a.id
    accounts.set_status(a.id, False)
    fails("HT-0126", accounts.check_client_secret, a.client_id, rotated)


def test_creation_rules(accounts: Accounts) -> None:
    fails("HT-0135", accounts.add_client, "no org", organization=None, organization_id=None)
    p, _ = accounts.add_client("region engine", organization=None, organization_id=None, platform=True)
    assert p.role == Role.PLATFORM
    fails("HT-0135", accounts.add_user, "dr.zhang", role=Role.CLINICIAN, name="张医生")   # no org/practitioner
    fails("HT-0135", accounts.add_user, "res", role=Role.RESIDENT, name="x")              # residents use SMS
    fails("HT-0120", accounts.add_user, "weak.pw", role=Role.AUDITOR, name="x", password="password")
    fails("HT-0132", accounts.add_client, "bad", organization="1", organization_id="o", scopes_text="system/*.sr")
    # A scope context that does not suit the role is refused (a resident may not hold system/*).
    fails("HT-0135", accounts.add_client, "bad", organization="1", organization_id="o", scopes_text="user/*.rs")
    r = accounts.add_resident("mpi-r1", phone="13800000001")
    fails("HT-0135", accounts.set_scopes, r.id, "system/*.rs")
    assert accounts.set_scopes(r.id, "patient/Observation.read").scopes == "patient/Observation.rs"
    a, pw, uri = accounts.add_user("dr.zhang", role=Role.CLINICIAN, name="张医生", organization="400000001",
                                   organization_id="org-1", practitioner_id="pr-1", practitioner_role_id="prr-1")
    passwords.check_policy(pw, accounts.settings)
    assert uri.startswith("otpauth://totp/") and a.has_totp and a.has_password
    assert a.scopes == "user/*.rs user/Consent.cruds user/ServiceRequest.cruds user/Task.u"
    fails("HT-0135", accounts.add_user, "dr.zhang", role=Role.AUDITOR, name="dup", password=PW)


def test_nothing_secret_is_stored_plain(accounts: Accounts, clock: Clock) -> None:
    c, secret = accounts.add_client("his", organization="1", organization_id="o1")
    u, pw, uri = accounts.add_user("op.wu", role=Role.OPERATOR, name="吴", password=PW)
    import pyotp

    totp_secret = pyotp.parse_uri(uri).secret
    r = accounts.add_resident("mpi-r9", phone="13912345678")
    otp = accounts.start_otp(r)
    assert otp is not None
    blob = b""
    for t in TABLES:
        for row in accounts.repo.query("SELECT * FROM " + t.name):  # noqa: S608  (table names of this module)
            blob += repr(row).encode()
    for plain in (secret, PW, totp_secret, "13912345678", otp):
        assert plain.encode() not in blob, plain
    assert accounts.phone_of(r.id) == "13912345678"   # read back through the codec


# ------------------------------------------------------------------ staff sign-in
def test_password_and_totp_sign_in(accounts: Accounts, clock: Clock) -> None:
    a, secret = staff(accounts)
    got = accounts.check_password("staff.li", PW, code(secret, clock))
    assert got.id == a.id and got.failed_count == 0
    clock.advance(30_000)
    wrong_pw = fails("HT-0127", accounts.check_password, "staff.li", "Wrong-pass-1", code(secret, clock))
    unknown = fails("HT-0127", accounts.check_password, "nobody", PW, code(secret, clock))
    assert wrong_pw.message == unknown.message       # no account enumeration
    fails("HT-0127", accounts.check_password, "staff.li", PW, None)          # second factor missing
    fails("HT-0127", accounts.check_password, "staff.li", PW, "000000" if code(secret, clock) != "000000"
          else "111111")


def test_totp_code_is_accepted_once(accounts: Accounts, clock: Clock) -> None:
    _, secret = staff(accounts)
    c = code(secret, clock)
    accounts.check_password("staff.li", PW, c)
    fails("HT-0139", accounts.check_password, "staff.li", PW, c)
    clock.advance(30_000)
    accounts.check_password("staff.li", PW, code(secret, clock))


def test_back_off_after_five_failures_per_address_never_locks_the_account(accounts: Accounts,
                                                                         clock: Clock) -> None:
    """Issue 12, finding 13: failures hold back (username, address) with a
    doubling wait (1 s, 2 s, 4 s ... at most lockout_minutes), never the
    account: its owner signs in from another address at once."""
    a, secret = staff(accounts)
    guess = "192.0.2.66"
    for _ in range(4):
        fails("HT-0127", accounts.check_password, "staff.li", "Guess-0000", None, peer=guess)
    wrong = fails("HT-0127", accounts.check_password, "staff.li", "Guess-0000", None, peer=guess)  # 5th: 1 s
    # Held back: the right password and code from that address get the same answer.
    held = fails("HT-0127", accounts.check_password, "staff.li", PW, code(secret, clock), peer=guess)
    assert held.message == wrong.message and getattr(held, "audit_code", None) == "HT-0140"
    # The owner, from its own address, is not held back; the account is not locked.
    assert accounts.check_password("staff.li", PW, code(secret, clock), peer="198.51.100.1").id == a.id
    assert accounts.require(a.id).status == "active" and a.id not in accounts.blocked(clock.now)
    clock.advance(1_001)
    fails("HT-0127", accounts.check_password, "staff.li", "Guess-0000", None, peer=guess)    # 6th: 2 s
    clock.advance(1_500)
    assert getattr(fails("HT-0127", accounts.check_password, "staff.li", PW, None, peer=guess),
                   "audit_code", None) == "HT-0140"
    # The waits double up to lockout_minutes (30) and no further.
    for _ in range(7, 30):
        clock.advance(31 * MIN)
        fails("HT-0127", accounts.check_password, "staff.li", "Guess-0000", None, peer=guess)
    clock.advance(29 * MIN)
    fails("HT-0127", accounts.check_password, "staff.li", "Guess-0000", None, peer=guess)   # still held
    clock.advance(MIN + 1)
    clock.advance(30_000)
    assert accounts.check_password("staff.li", PW, code(secret, clock), peer=guess).id == a.id
    # A success clears that address's count: four more failures are not held back.
    for _ in range(4):
        fails("HT-0127", accounts.check_password, "staff.li", "Guess-0000", None, peer=guess)
    clock.advance(30_000)
    accounts.check_password("staff.li", PW, code(secret, clock), peer=guess)


def test_unknown_usernames_are_held_back_alike(accounts: Accounts, clock: Clock) -> None:
    """No enumeration through the back-off either: names nobody has behave the same."""
    staff(accounts)
    for _ in range(5):
        fails("HT-0127", accounts.check_password, "nobody.here", "Guess-0000", None, peer="192.0.2.1")
    e = fails("HT-0127", accounts.check_password, "nobody.here", "Guess-0000", None, peer="192.0.2.1")
    assert getattr(e, "audit_code", None) == "HT-0140"


def test_operator_unlocks(accounts: Accounts, clock: Clock) -> None:
    a, secret = staff(accounts)
    s = SecuritySettings(lockout_failures=2, lockout_minutes=60)
    strict = Accounts(accounts.repo, s, clock=clock)
    fails("HT-0127", strict.check_password, "staff.li", "x", None)
    fails("HT-0127", strict.check_password, "staff.li", "x", None)      # held back from here on
    assert getattr(fails("HT-0127", strict.check_password, "staff.li", PW, code(secret, clock)),
                   "audit_code", None) == "HT-0140"
    strict.unlock(a.id)
    assert strict.check_password("staff.li", PW, code(secret, clock)).id == a.id


def test_password_expiry_and_change(accounts: Accounts, clock: Clock) -> None:
    _, secret = staff(accounts)
    rotating = Accounts(accounts.repo, SecuritySettings(password_max_age_days=90), clock=clock)
    clock.advance(91 * 86_400_000)
    fails("HT-0129", rotating.check_password, "staff.li", PW, code(secret, clock))
    clock.advance(30_000)
    fails("HT-0120", rotating.change_password, "staff.li", PW, PW, code(secret, clock))
    fails("HT-0120", rotating.change_password, "staff.li", PW, "short", code(secret, clock))
    rotating.change_password("staff.li", PW, "New-Passw0rd", code(secret, clock))
    clock.advance(30_000)
    fails("HT-0127", rotating.check_password, "staff.li", PW, code(secret, clock))
    clock.advance(30_000)
    rotating.check_password("staff.li", "New-Passw0rd", code(secret, clock))


def test_disabled_account_cannot_sign_in(accounts: Accounts, clock: Clock) -> None:
    a, secret = staff(accounts)
    accounts.set_status(a.id, False)
    fails("HT-0126", accounts.check_password, "staff.li", PW, code(secret, clock))
    assert a.id in accounts.blocked(clock.now)
    accounts.set_status(a.id, True)
    clock.advance(30_000)
    accounts.check_password("staff.li", PW, code(secret, clock))
    _, new_pw = accounts.reset_password(a.id)
    clock.advance(30_000)
    accounts.check_password("staff.li", new_pw, code(secret, clock))


# ------------------------------------------------------------------ residents: SMS one-time codes
def test_resident_one_time_code(accounts: Accounts, clock: Clock) -> None:
    r = accounts.add_resident("mpi-r1", phone="13800000001")
    assert accounts.by_person("mpi-r1") == r and r.persons(clock.now) == ("mpi-r1",)
    c = accounts.start_otp(r)
    assert c is not None and len(c) == 6 and c.isdigit()
    assert accounts.check_otp(r, c).id == r.id
    fails("HT-0134", accounts.check_otp, r, c)                  # used once
    fails("HT-0134", accounts.check_otp, None, c)               # no account: same answer


def test_one_time_code_burns_after_five_wrong(accounts: Accounts, clock: Clock) -> None:
    r = accounts.add_resident("mpi-r1", phone="13800000001")
    c = accounts.start_otp(r)
    assert c is not None
    wrong = f"{(int(c) + 1) % 1_000_000:06d}"
    for _ in range(5):
        fails("HT-0134", accounts.check_otp, r, wrong)
    fails("HT-0134", accounts.check_otp, r, c)                  # the right code is dead too


def test_one_time_code_expires_after_five_minutes(accounts: Accounts, clock: Clock) -> None:
    r = accounts.add_resident("mpi-r1", phone="13800000001")
    c = accounts.start_otp(r)
    assert c is not None
    clock.advance(5 * MIN)
    fails("HT-0134", accounts.check_otp, r, c)


def test_one_time_code_rate_limit(accounts: Accounts, clock: Clock) -> None:
    r = accounts.add_resident("mpi-r1", phone="13800000001")
    assert accounts.start_otp(r) is not None
    assert accounts.start_otp(r) is None                         # within 60 s
    clock.advance(59_000)
    assert accounts.start_otp(r) is None
    sent = 1
    for _ in range(20):
        clock.advance(61_000)
        if accounts.start_otp(r) is not None:
            sent += 1
    assert sent == 10                                            # at most 10 an hour
    clock.advance(3_600_000)
    assert accounts.start_otp(r) is not None


def test_delegates(accounts: Accounts, clock: Clock) -> None:
    # The child's golden record says born 2020-06-01: guardianship ends on 2034-06-01.
    accounts.repo.transact(lambda w: w.insert("Patient", "mpi-child", {
        "resourceType": "Patient", "birthDate": "2020-06-01"}, hooks=False))
    accounts.repo.transact(lambda w: w.insert("Patient", "mpi-old", {
        "resourceType": "Patient", "birthDate": "1950-01-01"}, hooks=False))
    fails("HT-0135", accounts.add_delegate, "mpi-parent", acts_for=[], phone="13800000002")
    fails("HT-0135", accounts.add_delegate, "mpi-parent", acts_for=[Delegation("mpi-old", "guardian", None)],
          phone="13800000002")
    fails("HT-0135", accounts.add_delegate, "mpi-parent", acts_for=[Delegation("mpi-child", "uncle", None)],
          phone="13800000002")
    d = accounts.add_delegate("mpi-parent", phone="13800000002", acts_for=[
        Delegation("mpi-child", "guardian", None), Delegation("mpi-old", "family", T0 + 10 * 86_400_000)])
    assert d.role == Role.DELEGATE and d.person_id == "mpi-parent"
    until = {x.person_id: x.expires for x in d.delegations}
    assert until["mpi-child"] is not None
    assert datetime.fromtimestamp(until["mpi-child"] / 1000, UTC).date().isoformat() == "2034-06-01"
    assert d.persons(clock.now) == ("mpi-child", "mpi-old")
    assert d.persons(T0 + 11 * 86_400_000) == ("mpi-child",)     # the family delegation ran out
    assert accounts.by_person("mpi-parent") == d
    with pytest.raises(InvalidRequest):
        accounts.add_resident("mpi-parent", phone="13800000003")   # one sign-in account per person


def test_unknown_account_operations(accounts: Accounts) -> None:
    for fn in (lambda: accounts.set_status("acct-nope", False), lambda: accounts.unlock("acct-nope"),
               lambda: accounts.reset_password("acct-nope"), lambda: accounts.rotate_secret("acct-nope")):
        with pytest.raises(HutongError) as e:
            fn()
        assert e.value.code == "HT-0135"
