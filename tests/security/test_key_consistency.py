"""Every node's key directory is the same key set (issue 18, item 2; hutong.security.keycheck).

A node started with a key directory that is not a copy of a served node's used
to make keys of its own without a word: its tokens refused by every other node
(HT-0122), its audit rows hashed under another chain key.  Now the database
records the keys' fingerprints and such a node is refused at start.

The master keys come from ``HUTONG_MASTER_KEYS`` here (as from a KMS through
``HUTONG_KEY_COMMAND``): shared by every node, so a key directory can be
really empty and only the token and audit keys differ -- the case that went
unnoticed (with master key files, an empty directory is refused by the data
keys already, HT-0152).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc.jwk import ECKey
from pgcluster import free_port

from hutong.errors import ConfigError
from hutong.fhir.assembly import open_repository
from hutong.security.accounts import Accounts
from hutong.security.audit import AuditLog
from hutong.security.events import AuditRecord
from hutong.security.keycheck import (
    AUDIT_CHAIN,
    AUDIT_SIGNING,
    TOKEN_SIGNING,
    check_key_directory,
    load_signing_key,
)
from hutong.security.keycheck_store import recorded
from hutong.security.principal import LOCAL_OPERATOR
from hutong.security.settings import SecuritySettings
from hutong.security.tokens import TokenService
from hutong.store.database import open_database
from hutong.store.sql import SqlRepository

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def master_keys(monkeypatch: pytest.MonkeyPatch) -> str:
    value = "k1:" + base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("HUTONG_MASTER_KEYS", value)
    monkeypatch.delenv("HUTONG_KEY_DIR", raising=False)
    monkeypatch.delenv("HUTONG_KEY_COMMAND", raising=False)
    return value


@pytest.fixture
def repo(db_url: str, master_keys: str) -> Iterator[SqlRepository]:
    r = open_repository(db_url)
    yield r
    r.db.close()


def refused(code: str, fn: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as e:
        fn(*args, **kwargs)  # type: ignore[operator]
    assert e.value.code == code, e.value.message
    return e.value.message


def serve_first_node(repo: SqlRepository, key_dir: Path) -> TokenService:
    """What a first node does: the start-up check, then audited work and tokens."""
    check_key_directory(repo.db, key_dir)
    AuditLog(repo, settings=SecuritySettings(key_dir=key_dir)).record(
        AuditRecord(action="read", principal=LOCAL_OPERATOR, purpose="test"))
    return TokenService(repo, SecuritySettings(), key_dir)


# ------------------------------------------------------------------ the check, in process
def test_fresh_install_records_its_keys_and_an_empty_key_directory_is_refused(repo: SqlRepository,
                                                                            tmp_path: Path) -> None:
    a = tmp_path / "node-a"
    keys = check_key_directory(repo.db, a)   # a fresh database and no key directory at all: made and recorded
    assert {p.name for p in a.iterdir()} >= {"token-signing.pem", "audit-chain.key", "audit-signing.key"}
    assert keys.token_kid == load_signing_key(a).thumbprint()
    assert recorded(repo.db) == {TOKEN_SIGNING: keys.token_kid, AUDIT_CHAIN: keys.chain_key_id,
                                 AUDIT_SIGNING: keys.signing_key_id}
    assert check_key_directory(repo.db, a) == keys   # the same node again: nothing changes
    serve_first_node(repo, a)

    b = tmp_path / "node-b"
    b.mkdir(mode=0o700)
    message = refused("HT-0636", check_key_directory, repo.db, b)
    for name in ("token-signing.pem", "audit-chain.key", "audit-signing.key", str(b), "copy the key directory"):
        assert name in message, message
    # Every way in to the keys refuses it, and none makes a key there (that was the silent split).
    refused("HT-0636", TokenService, repo, SecuritySettings(), b)
    refused("HT-0636", AuditLog, repo, settings=SecuritySettings(key_dir=b))
    assert list(b.iterdir()) == []
    assert recorded(repo.db)[TOKEN_SIGNING] == keys.token_kid


def test_a_copied_key_directory_is_accepted_and_its_tokens_and_audit_rows_are_the_first_nodes(
        repo: SqlRepository, tmp_path: Path) -> None:
    a, c = tmp_path / "node-a", tmp_path / "node-c"
    first = serve_first_node(repo, a)
    shutil.copytree(a, c)
    assert check_key_directory(repo.db, c).token_kid == first.kid
    copy = TokenService(repo, SecuritySettings(), c)
    client, _ = Accounts(repo, SecuritySettings()).add_client("engine", organization=None, organization_id=None,
                                                              scopes_text="system/*.rs", platform=True)
    assert first.verify(copy.issue(client, "system/Patient.rs")["access_token"])["sub"] == client.id
    assert copy.verify(first.issue(client, "system/Patient.rs")["access_token"])["sub"] == client.id
    AuditLog(repo, settings=SecuritySettings(key_dir=c)).record(
        AuditRecord(action="read", principal=LOCAL_OPERATOR, purpose="test"))
    v = AuditLog(repo, settings=SecuritySettings(key_dir=a)).verify()
    assert v.ok, v


@pytest.mark.parametrize(("file", "code"), [("token-signing.pem", "HT-0637"), ("audit-chain.key", "HT-0638"),
                                            ("audit-signing.key", "HT-0639")])
def test_a_replaced_key_is_refused(repo: SqlRepository, tmp_path: Path, file: str, code: str) -> None:
    a, d = tmp_path / "node-a", tmp_path / "node-d"
    serve_first_node(repo, a)
    shutil.copytree(a, d)
    (d / file).unlink()
    if file == "token-signing.pem":
        (d / file).write_bytes(ECKey.generate_key("P-256", private=True).as_pem(private=True))
    elif file == "audit-chain.key":
        (d / file).write_bytes(base64.b64encode(os.urandom(32)) + b"\n")
    else:
        (d / file).write_bytes(Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (d / file).chmod(0o600)
    message = refused(code, check_key_directory, repo.db, d)
    assert str(d / file) in message and "copy the key directory" in message, message
    if code == "HT-0637":
        refused(code, TokenService, repo, SecuritySettings(), d)
    else:
        refused(code, AuditLog, repo, settings=SecuritySettings(key_dir=d))
    check_key_directory(repo.db, a)   # the first node still starts


def test_a_database_from_before_the_record_takes_the_first_nodes_keys(repo: SqlRepository, tmp_path: Path) -> None:
    """Upgraded from revision 0007: no platform_key rows, chains keyed already.  The
    first node to start records its keys; the chain key must be the chains' key."""
    a = tmp_path / "node-a"
    serve_first_node(repo, a)
    _sql(repo.db.url, "DELETE FROM platform_key")
    assert recorded(repo.db) == {}
    b = tmp_path / "node-b"
    b.mkdir(mode=0o700)
    shutil.copy(a / "token-signing.pem", b / "token-signing.pem")
    # The audit chains of the database are keyed: a directory without that chain key is refused.
    assert "audit-chain.key" in refused("HT-0636", check_key_directory, repo.db, b)
    (b / "audit-chain.key").write_bytes(base64.b64encode(os.urandom(32)) + b"\n")
    (b / "audit-chain.key").chmod(0o600)
    refused("HT-0638", check_key_directory, repo.db, b)
    keys = check_key_directory(repo.db, a)
    assert recorded(repo.db) == {TOKEN_SIGNING: keys.token_kid, AUDIT_CHAIN: keys.chain_key_id,
                                 AUDIT_SIGNING: keys.signing_key_id}


# ------------------------------------------------------------------ `hutong serve`, as processes
def _start(db_url: str, key_dir: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hutong.cli", "serve", "--host", "127.0.0.1", "--port",
                                 str(port), "--workers", "1", "--database", db_url],
                                cwd=ROOT, env={**env, "HUTONG_KEY_DIR": str(key_dir)}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def _ready(proc: subprocess.Popen[bytes], root: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, f"exited {proc.returncode}: {log.read_text()[-2000:]}"
        try:
            if httpx.get(root + "/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=30)


def test_serve_refuses_a_second_node_with_another_key_directory(db_url: str, master_keys: str,
                                                                 tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUTONG_")}
    env.update({"PYTHONPATH": str(ROOT), "HUTONG_MASTER_KEYS": master_keys, "HUTONG_LOG_LEVEL": "warning"})
    a, b, c = tmp_path / "node-a", tmp_path / "node-b", tmp_path / "node-c"
    b.mkdir(mode=0o700)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # A fresh install: the first node makes its keys and records them.
        first, root_a = _start(db_url, a, env, tmp_path / "a.log")
        procs.append(first)
        _ready(first, root_a, tmp_path / "a.log")
        assert (a / "token-signing.pem").exists()
        # A second node with an empty key directory: exit 2 before serving, nothing made.
        second = subprocess.run([sys.executable, "-m", "hutong.cli", "serve", "--port", str(free_port()),
                                 "--workers", "1", "--database", db_url], cwd=ROOT, capture_output=True,
                                text=True, env={**env, "HUTONG_KEY_DIR": str(b)}, timeout=60)
        assert second.returncode == 2, second.stdout + second.stderr
        assert "HT-0636" in second.stderr and "token-signing.pem" in second.stderr, second.stderr
        assert list(b.iterdir()) == []
        # A node with a copy of the first one's directory starts, and the two accept each other's tokens.
        shutil.copytree(a, c)
        third, root_c = _start(db_url, c, env, tmp_path / "c.log")
        procs.append(third)
        repo = open_repository(db_url)
        try:
            client, secret = Accounts(repo, SecuritySettings()).add_client(
                "engine", organization=None, organization_id=None, scopes_text="system/Patient.rs", platform=True)
        finally:
            repo.db.close()
        assert client.client_id and secret
        _ready(third, root_c, tmp_path / "c.log")
        for issuer, reader in ((root_c, root_a), (root_a, root_c)):
            r = httpx.post(issuer + "/auth/token", data={"grant_type": "client_credentials"},
                           auth=(client.client_id, secret), timeout=30)
            assert r.status_code == 200, r.text
            got = httpx.get(reader + "/fhir/Patient", timeout=30,
                            headers={"authorization": f"Bearer {r.json()['access_token']}"})
            assert got.status_code == 200, got.text
        # The database replaced under a running node (here: its record rewritten): not ready.
        db = open_database(db_url)
        try:
            before = recorded(db)[TOKEN_SIGNING]
        finally:
            db.close()
        update = "UPDATE platform_key SET fingerprint = :f WHERE name = 'token-signing'"
        _sql(db_url, update, f="x" * 43)
        body = httpx.get(root_a + "/readyz", timeout=30)
        assert body.status_code == 503 and body.json()["checks"]["keys"]["code"] == "HT-0637", body.text
        assert str(a) not in body.text and before not in body.text
        _sql(db_url, update, f=before)
        assert httpx.get(root_a + "/readyz", timeout=30).status_code == 200
    finally:
        for p in procs:
            _stop(p)


def _sql(db_url: str, statement: str, **params: str) -> None:
    import sqlalchemy as sa

    url = db_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(statement), params)
    finally:
        engine.dispose()
