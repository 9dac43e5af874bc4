"""``hutong accounts ...`` end to end: the real command line against SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from joserfc.jwk import ECKey

from hutong.cli import main
from hutong.fhir.assembly import open_repository
from hutong.security import totp
from hutong.security.accounts import TABLES, Accounts
from hutong.security.guard import as_operator
from hutong.security.settings import SecuritySettings
from hutong.store.sql import SqlRepository
from hutong.systems import ORGANIZATION


@pytest.fixture
def db(db_url: str) -> Iterator[tuple[str, SqlRepository]]:
    repo = open_repository(db_url)
    with repo.db.engine.begin() as conn:
        for t in TABLES:
            conn.execute(t.delete())
    as_operator(repo).transact(lambda w: w.insert("Organization", "org-pumch", {
        "resourceType": "Organization", "name": "北京协和医院",
        "identifier": [{"system": ORGANIZATION, "value": "400000001"}]}))
    repo.transact(lambda w: w.insert("Patient", "mpi-child", {
        "resourceType": "Patient", "birthDate": "2019-03-01"}, hooks=False))
    repo.transact(lambda w: w.insert("Patient", "mpi-mother", {
        "resourceType": "Patient", "birthDate": "1990-05-05"}, hooks=False))
    yield db_url, repo
    repo.db.close()


def cli(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, Any, str]:
    rc = main(["accounts", "--database", url, *args])
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if rc == 0 and out.strip() else out), err


def ok(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> Any:
    rc, out, err = cli(capsys, url, *args)
    assert rc == 0, err
    return out


def error(capsys: pytest.CaptureFixture[str], url: str, code: str, *args: str) -> str:
    rc, _out, err = cli(capsys, url, *args)
    assert rc == 2 and err.startswith(f"hutong: error: {code}: "), err
    return err


def test_help_documents_every_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["accounts", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for action in ("add-client", "add-user", "add-resident", "add-delegate", "list", "show", "disable",
                   "enable", "unlock", "reset-password", "rotate-secret", "set-scopes", "set-jwks"):
        assert action in text


def test_add_client_prints_its_secret_once(capsys: pytest.CaptureFixture[str], db: tuple[str, SqlRepository]) \
        -> None:
    url, repo = db
    out = ok(capsys, url, "add-client", "协和 HIS", "--organization", "400000001", "--scopes", "system/*.cruds")
    assert out["client_id"].startswith("hc-") and out["account_id"].startswith("acct-")
    assert out["organization_id"] == "org-pumch" and out["scopes"] == "system/*.cruds" and out["client_secret"]
    accounts = Accounts(repo, SecuritySettings())
    assert accounts.check_client_secret(out["client_id"], out["client_secret"]).id == out["account_id"]
    shown = ok(capsys, url, "show", out["client_id"])
    assert "client_secret" not in shown and shown["account_id"] == out["account_id"]
    listed = json.dumps(ok(capsys, url, "list"))
    assert out["client_secret"] not in listed and "argon2" not in listed
    rotated = ok(capsys, url, "rotate-secret", out["account_id"])
    assert rotated["client_secret"] != out["client_secret"]
    assert accounts.check_client_secret(out["client_id"], rotated["client_secret"]).id == out["account_id"]


def test_add_client_errors(capsys: pytest.CaptureFixture[str], db: tuple[str, SqlRepository],
                           tmp_path: Path) -> None:
    url, _ = db
    error(capsys, url, "HT-0136", "add-client", "x", "--organization", "999999999")
    error(capsys, url, "HT-0135", "add-client", "x")
    error(capsys, url, "HT-0132", "add-client", "x", "--organization", "400000001", "--scopes", "system/*.sr")
    error(capsys, url, "HT-0135", "add-client", "x", "--organization", "400000001", "--scopes", "patient/*.rs")
    bad = tmp_path / "bad.json"
    bad.write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}')
    error(capsys, url, "HT-0135", "add-client", "x", "--organization", "400000001", "--jwks", str(bad))
    private = tmp_path / "private.json"
    private.write_text(json.dumps({"keys": [ECKey.generate_key("P-384", private=True).as_dict(private=True)]}))
    error(capsys, url, "HT-0135", "add-client", "x", "--organization", "400000001", "--jwks", str(private))
    error(capsys, url, "HT-0135", "add-client", "x", "--organization", "400000001", "--jwks",
          str(tmp_path / "missing.json"))


def test_add_client_with_jwks_and_platform(capsys: pytest.CaptureFixture[str], db: tuple[str, SqlRepository],
                                           tmp_path: Path) -> None:
    url, _ = db
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [dict(ECKey.generate_key("P-384", private=True).as_dict(private=False),
                                              kid="k1")]}))
    out = ok(capsys, url, "add-client", "LIS", "--organization", "400000001", "--jwks", str(jwks), "--no-secret")
    assert out["auth"] == ["private_key_jwt"] and "client_secret" not in out
    plat = ok(capsys, url, "add-client", "region engine", "--platform")
    assert plat["role"] == "platform" and plat["client_secret"]
    again = ok(capsys, url, "set-jwks", out["client_id"], str(jwks))
    assert again["auth"] == ["private_key_jwt"]


def test_add_user_and_manage(capsys: pytest.CaptureFixture[str], db: tuple[str, SqlRepository]) -> None:
    url, repo = db
    out = ok(capsys, url, "add-user", "dr.qian", "--role", "clinician", "--name", "钱医生", "--organization",
             "400000001", "--practitioner", "pr-1", "--practitioner-role", "prr-1")
    assert out["role"] == "clinician" and out["practitioner_id"] == "pr-1" and out["organization_id"] == "org-pumch"
    assert out["otpauth_uri"].startswith("otpauth://totp/") and out["password"]
    secret = pyotp.parse_uri(out["otpauth_uri"]).secret
    clock = [1_767_225_600_000]
    accounts = Accounts(repo, SecuritySettings(), clock=lambda: clock[0])
    assert accounts.check_password("dr.qian", out["password"], totp.code_at(secret, clock[0])).id == out[
        "account_id"]
    # Failures hold this address back (never the account: issue 12, finding 13);
    # unlock from the command line clears the back-off at once.
    for _ in range(5):
        with pytest.raises(Exception):  # noqa: B017  (HT-0127; checked in test_accounts)
            accounts.check_password("dr.qian", "Wrong-1-pass", None)
    with pytest.raises(Exception, match="HT-0127"):  # held back: the right password is refused too
        accounts.check_password("dr.qian", out["password"], totp.code_at(secret, clock[0]))
    assert ok(capsys, url, "show", "dr.qian")["status"] == "active"
    assert ok(capsys, url, "unlock", "dr.qian")["locked_until"] is None
    clock[0] += 30_000
    assert accounts.check_password("dr.qian", out["password"], totp.code_at(secret, clock[0])).id == out[
        "account_id"]
    assert ok(capsys, url, "disable", out["account_id"])["status"] == "disabled"
    assert ok(capsys, url, "enable", out["account_id"])["status"] == "active"
    reset = ok(capsys, url, "reset-password", "dr.qian")
    clock[0] += 30_000
    assert accounts.check_password("dr.qian", reset["password"], totp.code_at(secret, clock[0]))
    assert ok(capsys, url, "set-scopes", "dr.qian", "user/Observation.read")["scopes"] == "user/Observation.rs"
    error(capsys, url, "HT-0135", "set-scopes", "dr.qian", "system/*.cruds")
    error(capsys, url, "HT-0135", "show", "nobody")
    error(capsys, url, "HT-0135", "add-user", "dr.li", "--role", "clinician", "--name", "x")
    error(capsys, url, "HT-0136", "add-user", "dr.li", "--role", "clinician", "--name", "x", "--organization",
          "123", "--practitioner", "p")
    listed = ok(capsys, url, "list", "--role", "clinician")
    assert [a["username"] for a in listed] == ["dr.qian"]


def test_password_stdin(capsys: pytest.CaptureFixture[str], db: tuple[str, SqlRepository],
                        monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = db
    monkeypatch.setattr("sys.stdin", io.StringIO("weak\n"))
    error(capsys, url, "HT-0120", "add-user", "aud.he", "--role", "auditor", "--name", "何", "--password-stdin")
    monkeypatch.setattr("sys.stdin", io.StringIO("Strong-Enough-1\n"))
    out = ok(capsys, url, "add-user", "aud.he", "--role", "auditor", "--name", "何", "--password-stdin")
    assert "password" not in out and out["scopes"] == "user/AuditEvent.rs"


def test_residents_and_delegates(capsys: pytest.CaptureFixture[str], db: tuple[str, SqlRepository]) -> None:
    url, _ = db
    r = ok(capsys, url, "add-resident", "--person", "mpi-mother", "--phone", "138 0013 8000")
    assert r["role"] == "resident" and r["person_id"] == "mpi-mother" and r["phone_registered"]
    assert "13800138000" not in json.dumps(r)
    error(capsys, url, "HT-0136", "add-resident", "--person", "mpi-nobody", "--phone", "13800138000")
    error(capsys, url, "HT-0135", "add-resident", "--person", "mpi-child", "--phone", "call me")
    error(capsys, url, "HT-0135", "add-delegate", "--person", "mpi-mother", "--for", "mpi-child",
          "--relationship", "guardian", "--phone", "13800138000")            # mother already has an account
    ok(capsys, url, "disable", r["account_id"])
    d = ok(capsys, url, "add-delegate", "--person", "mpi-child", "--for", "mpi-mother", "--relationship",
           "family", "--expires", "2030-12-31", "--phone", "13900000000")
    assert d["acts_for"] == [{"person_id": "mpi-mother", "relationship": "family",
                              "expires": "2030-12-31T16:00:00Z"}]
    error(capsys, url, "HT-0135", "add-delegate", "--person", "mpi-child", "--for", "mpi-mother", "--relationship",
          "family", "--expires", "31/12/2030", "--phone", "13900000000")
