"""Killing the server (SIGKILL) in the middle of a burst loses no acknowledged
message: the real ``hutong serve --mllp-port`` process, a real socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from pgcluster import free_port
from test_mllp_pipeline import HOSPITAL, msa, oru

from hutong.fhir.assembly import open_repository
from hutong.fhir.service import FhirService
from hutong.ingest.hl7v2.framing import END, START
from hutong.security.guard import as_operator
from hutong.systems import ORGANIZATION


def test_sigkill_mid_burst_loses_no_acknowledged_message(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/crash.db"
    repo = open_repository(db)
    org = {"resourceType": "Organization", "name": "测试医院", "identifier": [{"system": ORGANIZATION,
                                                                            "value": HOSPITAL}]}
    assert FhirService(as_operator(repo)).create("Organization", json.dumps(org).encode(), {}).status == 201
    repo.db.close()
    port, mllp_port = free_port(), free_port()
    # Development mode: unauthenticated loopback senders (TLS: tests/security/test_trust_hl7.py).
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HUTONG_MLLP_DEV_LOOPBACK": "1"}
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "hutong.cli", "serve", "--database", db, "--port", str(port),
                             "--mllp-port", str(mllp_port), "--workers", "1"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    acked: list[str] = []
    try:
        deadline = time.time() + 60
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", mllp_port), timeout=10)
                break
            except OSError:
                assert time.time() < deadline and proc.poll() is None, "listener did not start"
                time.sleep(0.2)
        stop = threading.Event()

        def killer() -> None:
            while len(acked) < 25 and not stop.is_set():
                time.sleep(0.001)
            proc.send_signal(signal.SIGKILL)

        k = threading.Thread(target=killer)
        k.start()
        buf = b""
        try:
            for i in range(5000):
                control = f"K{i}"
                body = oru(control, mrn=f"MR-{i % 7}", obx=2).replace("F456", f"F{i}")
                sock.sendall(START + body.encode() + END)
                while END not in buf:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed")
                    buf += chunk
                frame, buf = buf.split(END, 1)
                fields = msa(frame.lstrip(START).decode())
                assert fields[1] == "AA" and fields[2] == control
                acked.append(control)
        except (ConnectionError, OSError):
            pass
        finally:
            stop.set()
            k.join()
            sock.close()
        assert proc.wait(timeout=30) == -signal.SIGKILL
        assert len(acked) >= 25
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    repo = open_repository(db)
    stored = {r[0] for r in repo.query(
        "SELECT control_id FROM ingest_message WHERE status = 'ok' AND channel = 'hl7v2'", ())}
    assert set(acked) <= stored, sorted(set(acked) - stored)[:5]
    # ... and each one's resources with it (2 results per message)
    n_obs = repo.query("SELECT COUNT(*) FROM resource WHERE type = 'Observation' AND deleted = 0", ())[0][0]
    assert n_obs == 2 * len(stored)
    repo.db.close()
