"""``hutong serve --mllp-processes 2`` (issue 17): the listener deals connections
to a helper process, both serve messages with every guarantee (AA only after
the commit, one audit row each), and the helper ends with the listener, even
when the listener is killed with SIGKILL -- the real server, real sockets, on
SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pgcluster import free_port
from test_mllp_pipeline import HOSPITAL, msa, oru

from hutong.fhir.assembly import open_repository
from hutong.fhir.service import FhirService
from hutong.ingest.hl7v2.framing import END, START
from hutong.security.guard import as_operator
from hutong.systems import ORGANIZATION

ROOT = Path(__file__).resolve().parents[2]
CONNECTIONS = 4
PER_CONNECTION = 5


def _sockets_of(pid: int) -> set[str]:
    """Socket inodes open in process ``pid``."""
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def _served_connections(port: int) -> set[str]:
    """Inodes of established TCP connections whose local port is ``port`` (the server's side)."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if int(f[1].rsplit(":", 1)[1], 16) == port and f[3] == "01":
                out.add(f[9])
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by anyone) is gone for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_helper_process_serves_connections_and_ends_with_a_killed_listener(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUTONG_KEY_DIR", str(tmp_path / "keys"))
    repo = open_repository(db_url)
    org = {"resourceType": "Organization", "name": "测试医院", "identifier": [{"system": ORGANIZATION,
                                                                            "value": HOSPITAL}]}
    assert FhirService(as_operator(repo)).create("Organization", json.dumps(org).encode(), {}).status == 201
    repo.db.close()
    port, mllp_port = free_port(), free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HUTONG_MLLP_DEV_LOOPBACK": "1", "HUTONG_LOG_LEVEL": "info"}
    log_path = tmp_path / "serve.log"
    log = log_path.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "hutong.cli", "serve", "--database", db_url, "--port", str(port),
                             "--mllp-port", str(mllp_port), "--workers", "1", "--mllp-processes", "2"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    acked: list[str] = []
    helper = 0
    try:
        deadline = time.monotonic() + 90
        while not helper:
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            m = re.search(r"MLLP helper process (\d+) serving", log_path.read_text(errors="replace"))
            helper = int(m.group(1)) if m else 0
            time.sleep(0.2)
        conns = [socket.create_connection(("127.0.0.1", mllp_port), timeout=30) for _ in range(CONNECTIONS)]
        # Dealt round robin: the helper holds some of them, the listener the others.
        deadline = time.monotonic() + 10
        while not (_sockets_of(helper) & _served_connections(mllp_port)):
            assert time.monotonic() < deadline, "no connection was handed to the helper process"
            time.sleep(0.05)
        assert _sockets_of(proc.pid) & _served_connections(mllp_port), "the listener kept no connection"
        lock = threading.Lock()
        failures: list[str] = []

        def send(k: int) -> None:
            buf = b""
            for i in range(PER_CONNECTION):
                control = f"P{k}-{i}"
                body = oru(control, mrn=f"MR-P{k}", obx=2).replace("F456", f"F{k}x{i}")
                conns[k].sendall(START + body.encode() + END)
                while END not in buf:
                    chunk = conns[k].recv(65536)
                    assert chunk, "closed"
                    buf += chunk
                frame, buf = buf.split(END, 1)
                fields = msa(frame.lstrip(START).decode())
                with lock:
                    if fields[1:3] == ["AA", control]:
                        acked.append(control)
                    else:
                        failures.append("|".join(fields))

        threads = [threading.Thread(target=send, args=(k,)) for k in range(CONNECTIONS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not failures and len(acked) == CONNECTIONS * PER_CONNECTION, failures
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        deadline = time.monotonic() + 20
        while _alive(helper):
            assert time.monotonic() < deadline, "the helper outlived the killed listener"
            time.sleep(0.1)
        for c in conns:
            c.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if helper and _alive(helper):
            os.kill(helper, signal.SIGKILL)
        log.close()
    repo = open_repository(db_url)
    try:
        stored = {r[0] for r in repo.query(
            "SELECT control_id FROM ingest_message WHERE status = 'ok' AND channel = 'hl7v2'", ())}
        assert stored == set(acked)
        n_obs = repo.query("SELECT COUNT(*) FROM resource WHERE type = 'Observation' AND deleted = 0", ())[0][0]
        assert n_obs == 2 * len(stored)
        # One audit row per message, whichever process stored it.
        n_audit = repo.query("SELECT COUNT(*) FROM audit_event WHERE action = 'hl7' AND outcome = '0'", ())[0][0]
        assert n_audit == len(acked)
    finally:
        repo.db.close()

