"""The KMS seam (issue 18, item 4): master keys from an operator's program
(HUTONG_KEY_COMMAND, hutong.security.keys.CommandKeySource).

A small fake KMS written for the test plays the operator's program (a Vault or
cloud-KMS CLI in production): it prints ``id:base64`` lines, or fails, or
prints garbage, or hangs (in a shell child, so the kill must reach the whole
process group).  The server runs on keys it never stores; a failing KMS stops
``hutong serve`` at start with a clear error and turns ``/readyz`` to 503
while serving; nothing the program prints reaches an error, a log or an answer.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fhirapi import patient
from harness import Server, serve_app

from hutong.cli import main
from hutong.errors import ConfigError
from hutong.fhir.assembly import open_repository
from hutong.mpi.idnumber import check_char
from hutong.security import keys as keys_mod
from hutong.security.keys import CommandKeySource

ROOT = Path(__file__).resolve().parents[2]
K1, K2 = os.urandom(32), os.urandom(32)
LEAK = "s.VAULTTOKEN-SHOULD-NEVER-BE-SHOWN"

FAKE_KMS = f'''
import sys, time, pathlib
state = pathlib.Path(sys.argv[1])
mode = (state / "mode").read_text().strip()
if mode == "fail":
    sys.stderr.write("permission denied for token {LEAK}\\n")
    sys.exit(3)
if mode == "garbage":
    print("{LEAK}")
    print("k1:" + "QUFBQQ==")
    sys.exit(0)
if mode == "slow":
    time.sleep(30)
sys.stdout.write((state / "keys").read_text())
'''


@pytest.fixture
def kms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake KMS's state directory; HUTONG_KEY_COMMAND points at it."""
    state = tmp_path / "kms"
    state.mkdir()
    (state / "fake_kms.py").write_text(FAKE_KMS)
    (state / "mode").write_text("ok")
    (state / "keys").write_text(f"2026a:{base64.b64encode(K1).decode()}\n")
    monkeypatch.delenv("HUTONG_MASTER_KEYS", raising=False)
    monkeypatch.setenv("HUTONG_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("HUTONG_KEY_COMMAND", f"{sys.executable} {state / 'fake_kms.py'} {state}")
    monkeypatch.setenv("HUTONG_KEY_COMMAND_TIMEOUT", "2")
    return state


def _idno(n: int) -> str:
    first17 = f"11010519491231{n + 41:03d}"
    return first17 + check_char(first17)


@contextlib.contextmanager
def served(url: str) -> Iterator[Server]:
    yield from serve_app(url)


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def test_the_server_runs_on_kms_keys_and_readyz_follows_the_kms(db_url: str, kms: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with served(db_url) as server:
        r = server.client.post("/Patient", json=patient(family="司马", given="光", idno=_idno(0)))
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        found = server.client.get("/Patient", params={"family": "司马"}).json()
        assert [e["resource"]["id"] for e in found["entry"]] == [pid]
        ready = server.client.get(server.root + "/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["keys"] == {"status": "ok"}
        # The master key stays in the KMS: no key file was made here.
        assert not list((tmp_path / "keys").glob("master-*.key"))
        rc, out, err = _cli("keys", "--database", db_url, "status")
        assert rc == 0 and "command:" in out and base64.b64encode(K1).decode() not in out + err

        # The KMS starts refusing (token revoked): at the next key reload /readyz says not ready.
        (kms / "mode").write_text("fail")
        monkeypatch.setattr(keys_mod, "REFRESH_S", 0.0)
        ready = server.client.get(server.root + "/readyz")
        body = ready.json()
        assert ready.status_code == 503 and body["checks"]["keys"]["code"] == "HT-0422", body
        assert LEAK not in ready.text
        # ... and back when it answers again.
        (kms / "mode").write_text("ok")
        assert server.client.get(server.root + "/readyz").status_code == 200
        assert server.client.get(f"/Patient/{pid}").json()["name"][0]["family"] == "司马"

        # Rotation with a KMS: Hutong cannot make the key; the operator adds it, then rotates.
        rc, _, err = _cli("keys", "--database", db_url, "rotate")
        assert rc == 2 and "HT-0154" in err
        (kms / "keys").write_text(f"2026a:{base64.b64encode(K1).decode()}\n2027a:{base64.b64encode(K2).decode()}\n")
        rc, out, err = _cli("keys", "--database", db_url, "rotate", "--reencrypt")
        assert rc == 0, err
        rc, out, err = _cli("keys", "--database", db_url, "status")
        st = json.loads(out)
        assert st["current_master_key"] == "2027a" and {k["wrapped_by"] for k in st["data_keys"]} == {"2027a"}
        assert server.client.get(f"/Patient/{pid}").json()["name"][0]["family"] == "司马"
        # The old key removed from the KMS: everything still opens (all re-wrapped under 2027a).
        (kms / "keys").write_text(f"2027a:{base64.b64encode(K2).decode()}\n")
        assert server.client.get(server.root + "/readyz").status_code == 200
        found = server.client.get("/Patient", params={"family": "司马"}).json()
        assert [e["resource"]["id"] for e in found["entry"]] == [pid]


@pytest.mark.parametrize("mode, code", [("fail", "HT-0607"), ("garbage", "HT-0609"), ("slow", "HT-0608")])
def test_a_failing_kms_is_a_clear_error_that_shows_nothing_it_printed(sqlite_url: str, kms: Path, mode: str,
                                                                     code: str) -> None:
    open_repository(sqlite_url).db.close()  # a database whose keys came from the KMS
    (kms / "mode").write_text(mode)
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as e:
        open_repository(sqlite_url)
    took = time.monotonic() - t0
    assert e.value.code == code, e.value.message
    assert LEAK not in e.value.message and "QUFBQQ" not in e.value.message
    if mode == "slow":
        assert 1.9 < took < 6  # HUTONG_KEY_COMMAND_TIMEOUT=2, then killed


def test_a_hanging_shell_script_is_killed_with_its_children(tmp_path: Path) -> None:
    script = tmp_path / "kms.sh"
    script.write_text("#!/bin/sh\nsleep 30\necho never\n")  # the sleep child holds stdout open
    src = CommandKeySource(f"sh {script}", timeout=1)
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as e:
        src.master_keys()
    assert e.value.code == "HT-0608" and time.monotonic() - t0 < 4
    with pytest.raises(ConfigError) as e:
        CommandKeySource(str(tmp_path / "no-such-kms")).master_keys()
    assert e.value.code == "HT-0607"
    with pytest.raises(ConfigError) as e:
        CommandKeySource(f"vault kv get -field=keys 'secret/hutong --token={LEAK}")
    assert e.value.code == "HT-0607" and LEAK not in e.value.message
    # A key of the wrong length, an id with a path in it, nothing at all: refused.
    for out in (f"a:{base64.b64encode(os.urandom(16)).decode()}", f"../x:{base64.b64encode(K1).decode()}", ""):
        p = tmp_path / "print.sh"
        p.write_text(f"#!/bin/sh\necho '{out}'\n")
        with pytest.raises(ConfigError) as e:
            CommandKeySource(f"sh {p}").master_keys()
        assert e.value.code == "HT-0609" and (not out or out.split(":")[1] not in e.value.message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_hutong_serve_refuses_to_start_when_the_kms_fails(sqlite_url: str, kms: Path) -> None:
    open_repository(sqlite_url).db.close()
    (kms / "mode").write_text("fail")
    p = subprocess.run([sys.executable, "-m", "hutong.cli", "serve", "--database", sqlite_url, "--workers", "2",
                        "--port", str(_free_port())], capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 2
    assert "HT-0607" in p.stderr and "HUTONG_KEY_COMMAND" in p.stderr, p.stderr
    assert LEAK not in p.stderr + p.stdout and "serving FHIR" not in p.stdout


def test_a_master_key_file_others_may_read_is_refused(sqlite_url: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUTONG_MASTER_KEYS", raising=False)
    monkeypatch.delenv("HUTONG_KEY_COMMAND", raising=False)
    monkeypatch.setenv("HUTONG_KEY_DIR", str(tmp_path / "keys"))
    open_repository(sqlite_url).db.close()
    key = next((tmp_path / "keys").glob("master-*.key"))
    for mode in (0o640, 0o604, 0o620):
        key.chmod(mode)
        with pytest.raises(ConfigError) as e:
            open_repository(sqlite_url)
        assert e.value.code == "HT-0610" and key.read_text().strip() not in e.value.message
        assert key.stat().st_mode & 0o777 == mode  # refused, not quietly narrowed: the operator decides
    key.chmod(0o600)
    open_repository(sqlite_url).db.close()


def test_threads_reloading_together_run_the_program_once(tmp_path: Path) -> None:
    """All writer threads reach REFRESH_S together: those waiting on a run share its answer."""
    runs = tmp_path / "runs"
    script = tmp_path / "kms.sh"
    script.write_text(f"#!/bin/sh\necho run >> {runs}\nsleep 0.3\necho 'a:{base64.b64encode(K1).decode()}'\n")
    src = CommandKeySource(f"sh {script}", timeout=5)
    import threading

    got: list[dict[str, bytes]] = []
    threads = [threading.Thread(target=lambda: got.append(src.master_keys())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert got == [{"a": K1}] * 8
    n = len(runs.read_text().split())
    assert n <= 2  # one run, or two if a thread asked after the first began (not eight)
    assert src.master_keys() == {"a": K1} and len(runs.read_text().split()) == n + 1  # a later caller: a fresh run
