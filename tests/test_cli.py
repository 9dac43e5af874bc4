"""The `hutong` command: help, argument errors, import and serve as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from fhirapi import NOT_GOLDEN
from harness import SYNTHEA
from pgcluster import free_port

HUTONG = [sys.executable, "-m", "hutong.cli"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HUTONG, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_help_everywhere() -> None:
    r = run("--help")
    assert r.returncode == 0 and "serve" in r.stdout and "import" in r.stdout and "demo" in r.stdout
    for cmd in ("serve", "import", "demo"):
        r = run(cmd, "--help")
        assert r.returncode == 0, cmd
        assert "--database" in r.stdout or cmd == "demo"


def test_wrong_arguments_are_named(tmp_path: Path) -> None:
    r = run("frobnicate")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    r = run("import", str(tmp_path / "missing"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = run("import", str(tmp_path))
    assert r.returncode == 2 and "no <ResourceType>.ndjson" in r.stderr
    r = run("import", str(SYNTHEA), "--database", "mysql://x/y")
    assert r.returncode == 2 and "HT-0070" in r.stderr and "unsupported database" in r.stderr
    r = run("serve", "--port", "notaport")
    assert r.returncode == 2 and "--port" in r.stderr


def test_import_then_serve_real_process(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/h.db"
    bad = tmp_path / "Patient.ndjson"
    bad.write_text('{"resourceType":"Patient","id":"ok-1"}\n{"resourceType":"Patient","bogus":true}\nnot json\n')
    r = run("import", str(bad), "--database", db, "--quiet")
    assert r.returncode == 1 and "Patient.ndjson:2" in r.stderr and "Patient.ndjson:3" in r.stderr
    assert "loaded 1 resources" in r.stdout
    r = run("import", str(SYNTHEA), "--quiet", env={"HUTONG_DATABASE_URL": db})
    assert r.returncode == 0, r.stderr
    assert "loaded 7160 resources" in r.stdout
    # The operator registers the integration engine; it signs in with client
    # credentials (RFC 6749 section 4.4) like any system would.
    r = run("accounts", "add-client", "integration engine", "--platform", env={"HUTONG_DATABASE_URL": db})
    assert r.returncode == 0, r.stderr
    client = json.loads(r.stdout)
    port = free_port()
    p = subprocess.Popen([*HUTONG, "serve", "--port", str(port), "--database", db],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                anonymous = httpx.get(f"http://127.0.0.1:{port}/fhir/Patient", params=[("_summary", "count")])
                break
            except httpx.ConnectError:
                assert time.time() < deadline and p.poll() is None, "server did not start"
                time.sleep(0.2)
        assert anonymous.status_code == 401
        tok = httpx.post(f"http://127.0.0.1:{port}/auth/token", data={"grant_type": "client_credentials"},
                         auth=(client["client_id"], client["client_secret"]))
        assert tok.status_code == 200, tok.text
        r2 = httpx.get(f"http://127.0.0.1:{port}/fhir/Patient", params=[("_summary", "count"), NOT_GOLDEN],
                       headers={"authorization": f"Bearer {tok.json()['access_token']}"})
        assert r2.json()["total"] == 14
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(20)
