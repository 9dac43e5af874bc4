"""``hutong simulate`` against a running platform (issue 16, "a living demo"): the
simulated hospitals send HL7 v2 over a real MLLP socket and WS/T 500 documents
over HTTP for a short compressed period, and the commission's figures (the
console's data: /ingest/timeliness, /ingest/dead-letters and the dashboard's
institution rows) must agree with what the simulator says it sent and was
answered, institution by institution."""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import Server
from lxml import etree
from pgcluster import free_port

from hutong.cli import simulate
from hutong.fhir.service import FhirService
from hutong.ingest.bulk import import_ndjson
from hutong.ingest.hl7v2.listener import start_in_thread
from hutong.ingest.pipeline import Ingestor
from hutong.quality.connection import DOWN, ONLINE
from hutong.quality.institutions import institution_rows
from hutong.security.guard import as_operator
from hutong.security.senders import mllp_authoriser
from hutong.security.settings import SecuritySettings
from hutong.sim import LATE, ON_TIME, SILENT, Report, Simulator
from hutong.synth import SynthConfig, generate
from hutong.systems import ORGANIZATION


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("simregion") / "r"
    generate(out, SynthConfig(residents=150, institutions=8, seed=5, clinical=False))
    return out


@dataclass
class Platform:
    server: Server
    mllp_port: int
    credentials: Path


@pytest.fixture
def platform(region: Path, server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    """The region's institutions registered, each with its HIS's system client, and
    an MLLP listener as ``hutong serve --mllp-port`` runs it in development mode."""
    monkeypatch.setenv("HUTONG_MLLP_DEV_LOOPBACK", "1")
    assert import_ndjson(as_operator(server.repo), region / "Organization.ndjson", workers=1).errors == []
    creds: dict[str, dict[str, str]] = {}
    for line in (region / "Organization.ndjson").read_bytes().splitlines():
        org = json.loads(line)
        code = next(i["value"] for i in org["identifier"] if i["system"] == ORGANIZATION)
        client, secret = server.accounts.add_client(f"HIS of {code}", organization=code, organization_id=org["id"])
        assert secret is not None
        creds[code] = {"client_id": client.client_id, "client_secret": secret}
    path = tmp_path / "clients.json"
    path.write_text(json.dumps(creds))
    ingestor = Ingestor(FhirService(server.repo), authorise=mllp_authoriser(server.repo, SecuritySettings(
        mllp_dev_loopback=True)), audit=server.app.platform.audit.record)
    port = free_port()
    listener = start_in_thread(ingestor, "127.0.0.1", port)
    yield Platform(server, port, path)
    listener.stop()


def args(region: Path, p: Platform, **kw: Any) -> argparse.Namespace:
    base = dict(region=region, url=p.server.root, mllp=f"127.0.0.1:{p.mllp_port}", credentials=p.credentials,
                rate=200.0, speed=3600.0, start_hour=8.0, faulty=0.08, late=2, silent=2, seed=3, duration=None, messages=120,
                no_cda=False, report=None, quiet=True)
    base.update(kw)
    return argparse.Namespace(**base)


def test_the_console_counts_what_the_hospitals_sent(region: Path, platform: Platform) -> None:
    sim: Simulator = simulate.simulator(args(region, platform))
    t0 = time.monotonic()
    report: Report = sim.run()
    took = time.monotonic() - t0
    summary = report.as_dict()
    total = summary["total"]
    assert total["sent"] == 120 and total["failed"] == 0 and total["refused"] == 0, summary
    # Faulty messages (and only they) become dead letters; the rest is stored.
    dl = platform.server.client.get(platform.server.root + "/ingest/dead-letters").json()["items"]
    assert total["dead"] == total["faulty"] > 0, "\n".join(f"{x['kind']}: {x['reason']}" for x in dl)
    assert total["stored"] == total["sent"] - total["faulty"], summary
    kinds = {k for t in report.tallies.values() for k in t.sent}
    assert {"ADT^A04", "ORU^R01", "ORM^O01", "C0002"} <= kinds, kinds
    roles = {t.code: t.role for t in report.tallies.values()}
    assert sorted(roles.values()).count(SILENT) == 2 and sorted(roles.values()).count(LATE) == 2

    client = platform.server.client
    timeliness = client.get(platform.server.root + "/ingest/timeliness").json()
    dead = client.get(platform.server.root + "/ingest/dead-letters", params={"_count": "1000"}).json()["items"]
    per: dict[str, dict[str, int]] = {}
    for d in timeliness["days"]:
        p = per.setdefault(d["institution"], {"messages": 0, "dead": 0, "timely": 0, "known": 0})
        p["messages"] += d["messages"]
        p["dead"] += d["dead_letters"]
        hist = d["delay_hours"]
        p["timely"] += hist["lt1h"] + hist["lt6h"] + hist["lt24h"]
        p["known"] += sum(v for k, v in hist.items() if k != "unknown")
    for t in report.tallies.values():
        got = per.get(t.code, {"messages": 0, "dead": 0, "timely": 0, "known": 0})
        assert (got["messages"], got["dead"]) == (t.stored, t.dead), (t.as_dict(), got)
        assert sum(1 for x in dead if x["sender"] == t.code) == t.dead, t.code
        if t.role == LATE and t.stored:
            assert got["timely"] == 0, (t.code, got)  # uploaded days after the event: not 次日归集
        if t.role == ON_TIME and t.stored:
            # Sent as it happens; only discharge documents count from the admission
            # (a CDA's event time is its encounter's start, hutong.ingest.cda.mapping).
            assert got["timely"] >= 0.6 * got["known"] > 0, (t.code, got)
        if t.role == SILENT:
            assert sum(t.sent.values()) == 0 and t.code not in timeliness["last_seen"]

    # The dashboard's rows (hutong.quality.institutions, as the console computes them).
    orgs = [e["resource"] for e in client.get("/Organization", params={"_count": "100"}).json()["entry"]]
    rows = {r.code: r for r in institution_rows(orgs, timeliness, {}, int(time.time() * 1000))}
    for t in report.tallies.values():
        row = rows[t.code]
        sent = sum(t.sent.values())
        assert row.status == (DOWN if t.role == SILENT or not sent else ONLINE), (t.code, row.status)
        assert (row.messages, row.dead) == (t.stored, t.dead)
    assert took < 25, took


def test_documents_are_filled_and_dated_coherently(region: Path, platform: Platform) -> None:
    """The CDA documents the hospitals send are the real thing: a 西药处方 lists its
    drugs, an 出院小结's admission comes before its discharge, a CBC adds up."""
    sim: Simulator = simulate.simulator(args(region, platform, faulty=0.0, messages=0))
    ns = {"v3": "urn:hl7-org:v3"}
    seen: dict[str, int] = {}
    for d in sim.deliveries():
        if sum(seen.values()) > 400:
            break
        seen[d.kind] = seen.get(d.kind, 0) + 1
        if d.kind == "C0004":
            doc = etree.fromstring(d.payload)
            drugs = doc.findall(".//v3:manufacturedLabeledDrug/v3:name", ns)
            assert drugs and all(x.text for x in drugs)
            assert doc.find(".//v3:doseQuantity", ns) is not None
        if d.kind == "C0053":
            doc = etree.fromstring(d.payload)
            low = doc.find(".//v3:encompassingEncounter/v3:effectiveTime/v3:low", ns).get("value")
            high = doc.find(".//v3:encompassingEncounter/v3:effectiveTime/v3:high", ns).get("value")
            assert low < high == doc.find("v3:effectiveTime", ns).get("value")
            meds = doc.xpath(".//v3:section[v3:code/@code='10183-2']//v3:manufacturedLabeledDrug/v3:name",
                             namespaces=ns)
            orders = doc.xpath(".//v3:section[v3:code/@code='46209-3']", namespaces=ns)
            assert (not orders) == (not meds)  # 出院带药 as entries whenever the orders name drugs
            assert all(x.text for x in meds)
        if d.kind == "ORU^R01" and b"58410-2" in d.payload:
            values = {}
            for seg in d.payload.decode().split("\r"):
                if seg.startswith("OBX|"):
                    f = seg.split("|")
                    values[f[3].split("^")[0]] = float(f[5])
            hb, hct, mchc = values["718-7"], values["4544-3"], values["786-4"]
            rbc, mcv = values["789-8"], values["787-2"]
            assert abs(hb / hct * 100 - mchc) <= 2, values  # MCHC = Hb / Hct
            assert abs(rbc * mcv / 10 - hct) <= 0.2, values  # Hct = RBC x MCV
    assert {"C0002", "C0004", "C0006", "C0007", "C0034", "C0053", "C0032"} <= set(seen), seen


def test_the_command_writes_its_report(region: Path, platform: Platform, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    stop = threading.Event()
    assert simulate.run(args(region, platform, messages=15, report=out, no_cda=True), stop) == 0
    data = json.loads(out.read_text())
    assert data["total"]["sent"] == 15
    assert all(k.startswith(("ADT", "ORU", "ORM")) for r in data["institutions"] for k in r["kinds"])
