"""Commands that change stored data from the operator's shell leave an audit row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HUTONG = [sys.executable, "-m", "hutong.cli"]


def run(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HUTONG, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HUTONG_DATABASE_URL": db})


def test_import_and_account_changes_are_audited_and_the_chain_verifies(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/h.db"
    (tmp_path / "Patient.ndjson").write_text('{"resourceType":"Patient","id":"p1","name":[{"text":"王小红"}]}\n')
    assert run("import", str(tmp_path / "Patient.ndjson"), "--quiet", db=db).returncode == 0
    r = run("accounts", "add-client", "lab system", "--platform", db=db)
    assert r.returncode == 0, r.stderr
    bad = run("accounts", "disable", "acct-nonexistent-zq9", db=db)
    assert bad.returncode == 2
    rows = [json.loads(line) for line in run("audit", "list", "--limit", "20", db=db).stdout.splitlines()]
    actions = [(x["action"], x["outcome"]) for x in rows]
    assert ("cli-import", "0") in actions and ("cli-accounts", "0") in actions and ("cli-accounts", "8") in actions
    assert all(x["account_id"] == "local-cli" for x in rows if x["action"].startswith("cli-"))
    v = run("audit", "verify", db=db)
    assert v.returncode == 0 and json.loads(v.stdout)["ok"] is True
    # the command line (which may name a phone number) is kept, but not in the file in clear
    assert any("acct-nonexistent-zq9" in x.get("interaction", "") for x in rows)
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("h.db*") if p.is_file())
    assert b"acct-nonexistent-zq9" not in raw and "王小红".encode() not in raw
