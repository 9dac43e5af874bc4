"""Under overload the MLLP listener applies back-pressure instead of queueing
without bound (issue 17, "Bad input and races"), on SQLite and PostgreSQL.

A real write transaction holds the store (on SQLite the database's write
lock; on PostgreSQL the messages' own locks, hutong.store.sql.SqlWriter.lock_key),
so every message handed to the pipeline stays in it; many connections send
meanwhile.  At most ``max_in_flight`` messages may be in the pipeline (the
other connections wait, reading nothing more); a sender that pipelines more
than it is acknowledged is slowed by TCP flow control; once the store is
free every message is acknowledged AA and every acknowledged one is stored.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fhirapi import NOT_GOLDEN
from harness import Server
from pgcluster import free_port

from hutong.fhir.service import FhirService
from hutong.ingest.envelope import Envelope, Receipt
from hutong.ingest.hl7v2.framing import FrameDecoder, frame
from hutong.ingest.hl7v2.listener import start_in_thread
from hutong.ingest.pipeline import Authority, Ingestor
from hutong.security.senders import mllp_authoriser
from hutong.security.settings import SecuritySettings
from hutong.store.repository import Writer
from hutong.systems import ORGANIZATION, mrn_system

HOSPITAL = "12110000400000056X"   # 统一社会信用代码 of the sending hospital (test data)
CONNECTIONS = 12
SLOTS = 2


class CountingIngestor(Ingestor):
    """The real ingestor, counting the messages inside it at once (the seam the listener is given)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.inside = 0
        self.entered = 0
        self.peak = 0
        self._count = threading.Lock()

    def receive(self, envelope: Envelope, authority: Authority) -> Receipt:
        with self._count:
            self.inside += 1
            self.entered += 1
            self.peak = max(self.peak, self.inside)
        try:
            return super().receive(envelope, authority)
        finally:
            with self._count:
                self.inside -= 1


@dataclass
class Mllp:
    port: int
    server: Server
    ingestor: CountingIngestor


@pytest.fixture
def mllp(monkeypatch: pytest.MonkeyPatch, server: Server) -> Iterator[Mllp]:
    monkeypatch.setenv("HUTONG_MLLP_DEV_LOOPBACK", "1")
    org = {"resourceType": "Organization", "name": "北京市背压测试医院",
           "identifier": [{"system": ORGANIZATION, "value": HOSPITAL}]}
    assert server.client.post("/Organization", content=json.dumps(org)).status_code == 201
    ingestor = CountingIngestor(FhirService(server.repo), authorise=mllp_authoriser(server.repo, SecuritySettings(
        mllp_dev_loopback=True)), audit=server.app.platform.audit.record)
    port = free_port()
    listener = start_in_thread(ingestor, "127.0.0.1", port, threads=8, max_in_flight=SLOTS)
    yield Mllp(port, server, ingestor)
    listener.stop()


def oru(control: str, mrn: str, pad: int = 0) -> bytes:
    segs = [f"MSH|^~\\&|HIS|{HOSPITAL}|HUTONG|REGION|20261120093000||ORU^R01^ORU_R01|{control}|P|2.5.1|||||CHN|"
            "UNICODE UTF-8",
            f"PID|1||{mrn}^^^{HOSPITAL}^MR||周^背压||19800517|M",
            f"OBR|1|P{control}|F{control}^LIS|24331-1^血脂四项^LN|||20261120080000||||||||||||||||20261120100000|||F",
            "OBX|1|NM|2093-3^总胆固醇^LN||5.9|mmol/L|3.1-5.7|H|||F|||20261120080000"]
    if pad:
        segs.append("NTE|1|L|" + "备注" * (pad // 6))
    return "\r".join(segs).encode()


class Held:
    """A write transaction that holds the store until released."""

    def __init__(self, server: Server, controls: list[str], mrns: list[str]) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

        def hold(w: Writer) -> None:
            for c in controls:  # the messages' own locks (PostgreSQL: advisory locks)
                w.lock_key(f"ingest:hl7v2:{HOSPITAL}:{c}")
            self.started.set()
            self.release.wait(60)

        self.thread = threading.Thread(target=lambda: server.repo.transact(hold))

    def __enter__(self) -> Held:
        self.thread.start()
        assert self.started.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(60)


def _acks(s: socket.socket, n: int) -> list[str]:
    decoder = FrameDecoder()
    out: list[str] = []
    s.settimeout(60)
    while len(out) < n:
        data = s.recv(65536)
        assert data, f"connection closed after {len(out)} of {n} ACKs"
        out += [bytes(getattr(f, "payload", b"")).decode("utf-8", "replace") for f in decoder.feed(data)]
    return out


def _msa(ack: str) -> list[str]:
    return next((s for s in ack.split("\r") if s.startswith("MSA|")), "MSA|?").split("|")


def _stored(server: Server, mrn: str) -> int:
    r = server.client.get("/Patient", params=[("identifier", f"{mrn_system(HOSPITAL)}|{mrn}"), NOT_GOLDEN])
    assert r.status_code == 200, r.text
    [patient] = [e["resource"] for e in r.json()["entry"]]
    r = server.client.get("/Observation", params={"subject": f"Patient/{patient['id']}", "_summary": "count"})
    return int(r.json()["total"])


def test_at_most_the_slots_are_in_the_pipeline_and_every_ack_is_stored(mllp: Mllp) -> None:
    per_connection = 3
    mrns = [f"BP{i:04d}" for i in range(CONNECTIONS)]
    controls = [f"BP{i:04d}-{k}" for i in range(CONNECTIONS) for k in range(per_connection)]
    socks = [socket.create_connection(("127.0.0.1", mllp.port), timeout=30) for _ in range(CONNECTIONS)]
    try:
        with Held(mllp.server, controls, mrns):
            for i, s in enumerate(socks):  # each connection sends all its messages ahead of their ACKs
                s.sendall(b"".join(frame(oru(f"BP{i:04d}-{k}", mrns[i])) for k in range(per_connection)))
            time.sleep(1.5)  # time enough for a listener without a bound to hand on every one
            assert mllp.ingestor.entered == SLOTS and mllp.ingestor.peak == SLOTS, (
                mllp.ingestor.entered, mllp.ingestor.peak)
        acks = [_acks(s, per_connection) for s in socks]
    finally:
        for s in socks:
            s.close()
    assert mllp.ingestor.peak <= SLOTS
    for i, mine in enumerate(acks):
        assert [_msa(a)[1:3] for a in mine] == [["AA", f"BP{i:04d}-{k}"] for k in range(per_connection)], mine
    # Every acknowledged message is stored: its Observation under its patient.
    assert [_stored(mllp.server, m) for m in mrns] == [per_connection] * CONNECTIONS


def test_a_sender_faster_than_the_store_is_slowed_by_flow_control(mllp: Mllp) -> None:
    """One connection pipelining 200 messages of ~60 KB without reading ACKs while the store
    is held: the listener stops reading, so the sender's writes block long before
    it has pushed them all (a listener reading without bound would take them all)."""
    n = 200
    payloads = [frame(oru(f"FC{k:04d}", "FC0001", pad=60_000)) for k in range(n)]
    total = sum(len(p) for p in payloads)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A small send buffer: what the sender gets rid of is what the listener's side takes.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
    s.settimeout(30)
    s.connect(("127.0.0.1", mllp.port))
    try:
        with Held(mllp.server, [f"FC{k:04d}" for k in range(n)], ["FC0001"]):
            s.setblocking(False)
            sent = 0
            blocked_since: float | None = None
            deadline = time.monotonic() + 10
            data = b"".join(payloads)
            while sent < total and time.monotonic() < deadline:
                try:
                    sent += s.send(data[sent:sent + 65536])
                    blocked_since = None
                except BlockingIOError:
                    blocked_since = blocked_since or time.monotonic()
                    if time.monotonic() - blocked_since > 1.0:
                        break  # the listener has stopped reading
                    time.sleep(0.01)
            # The kernel's receive buffer and asyncio's (reading pauses past 512 KB) hold the
            # rest: a few MB at most of the 12 MB.
            assert sent < total // 3, (sent, total)
            s.setblocking(True)
        # Released: the rest goes through, every message is acknowledged AA and stored.
        s.sendall(data[sent:])
        acks = _acks(s, n)
    finally:
        s.close()
    assert [_msa(a)[1] for a in acks] == ["AA"] * n
    assert _stored(mllp.server, "FC0001") == n
