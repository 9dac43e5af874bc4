"""MLLP over TLS through a helper process (issue 17, ``hutong serve
--mllp-processes``): connections are handed over before the TLS handshake,
so the helper demands a client certificate of the operator's CA and knows
the sender by it exactly as the listener does (issue 12, finding 5), on
SQLite and PostgreSQL."""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path

import pytest
from pgcluster import free_port
from test_trust_hl7 import CODE_A, CODE_B, Pki, adt, send_plain, send_tls, tls_settings
from test_trust_hl7 import msa as tls_msa
from test_trust_hl7 import pid as tls_pid
from test_trust_hl7 import pki as pki  # noqa: F401 -- the certificates fixture of that module

from hutong.cli.serve import mllp_served
from hutong.fhir.assembly import open_repository
from hutong.fhir.service import FhirService
from hutong.ingest.hl7v2.processes import HelperProcess, start
from hutong.security.guard import as_operator
from hutong.systems import ORGANIZATION


def test_a_helper_process_does_the_tls_handshake_and_knows_the_sender(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pki: Pki) -> None:  # noqa: F811
    """Connections are handed over before the TLS handshake: the helper demands a
    certificate of the operator's CA and knows the sender by it, as the listener does."""
    monkeypatch.setenv("HUTONG_KEY_DIR", str(tmp_path / "keys"))
    repo = open_repository(db_url)
    for code in (CODE_A, CODE_B):
        org = {"resourceType": "Organization", "name": code, "identifier": [{"system": ORGANIZATION, "value": code}]}
        assert FhirService(as_operator(repo)).create("Organization", json.dumps(org).encode(), {}).status == 201
    repo.db.close()
    port = free_port()
    running = start(mllp_served, (db_url, tls_settings(pki)), "127.0.0.1", port, processes=2)
    try:
        helper = running.listener.helpers[0]
        assert isinstance(helper, HelperProcess)
        deadline = time.monotonic() + 60
        while not helper.ready:
            assert time.monotonic() < deadline, "the helper process did not start"
            time.sleep(0.1)
        own = adt("TLS1", CODE_A, "A04", tls_pid("A-7", CODE_A, "孙^七", "19770707", "M"))
        spoof = adt("TLS2", CODE_B, "A04", tls_pid("B-7", CODE_B, "孙^七", "19770707", "M"))
        results = []
        for n in range(4):  # dealt round robin: two connections to each process
            acks = send_tls(port, pki, pki.a, own.replace("TLS1", f"TLS1-{n}"), spoof.replace("TLS2", f"TLS2-{n}"))
            results.append([tls_msa(a)[1] for a in acks])
            with pytest.raises((ConnectionError, OSError)):
                send_plain(port, own)                           # TLS is required, in either process
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                send_tls(port, pki, pki.rogue_a, own)           # "hospital A" from another CA
        assert results == [["AA", "AR"]] * 4
    finally:
        running.stop()
        running.listener.ingestor.repo.db.close()  # built in this process by mllp_served
    assert not helper.proc.is_alive()  # stopped with the listener
