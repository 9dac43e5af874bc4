"""Lag-tolerant reads from a PostgreSQL hot standby (issue 18, item 2; hutong.store.standby,
hutong.web.read_routing).

Real components throughout: a primary and a streaming hot standby on loopback
(tests/ops/pgreplica.py: ``pg_basebackup -R`` from a ``wal_level = replica``
primary), two app nodes served over HTTP in front of them with
HUTONG_STANDBY_DATABASE_URL set, httpx as the browser.  The standby is made
to lag on purpose by pausing its replay (``pg_wal_replay_pause()``, PostgreSQL
docs 9.27.5), which is also how each test tells which database answered: a
row written meanwhile is on the primary only.

- Routing and read-your-writes: a resident's timeline comes from the standby
  (a visit written while replay is paused is not on it); after the resident
  writes on one node (a consent), the next timeline on the *other* node comes
  from the primary (the visit is there); once replay resumes and passes the
  write, the standby answers again.
- The attack: a consent revoked on the primary, and an account disabled there,
  take effect at once for the routed pages while the standby still holds the
  consent as active and the account as enabled.
- Lag bound, an unreachable standby, /readyz and /metrics: reads fall back to
  the primary and the probes say why.
- A standby of another cluster is never read; SQLite refuses the setting.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from harness import Server, serve_app
from pgcluster import free_port
from prometheus_client import REGISTRY

from hutong.config import Settings
from hutong.errors import ConfigError
from hutong.platform import build_platform, open_repository
from hutong.security.events import REFUSED, SUCCESS
from hutong.security.principal import Role
from hutong.store.database import open_database
from hutong.store.repository import Repository
from hutong.store.sql import SqlRepository
from hutong.store.standby import PRIMARY, STANDBY, STATE_TTL_S, Choice, Standby, open_standby, parse_lsn
from hutong.systems import ORGANIZATION

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ops"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "security"))
from pgreplica import Pair, primary_and_standby  # noqa: E402
from region import Region, build  # noqa: E402

AMB = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}
CSRF = "t0k3n-standby"


# ------------------------------------------------------------------ replication helpers
def lsn_of(node: Any, sql: Any) -> int:
    v = parse_lsn(str(node.scalar(sql)))
    assert v is not None
    return v


def wait_replayed(pair: Pair, timeout: float = 30) -> None:
    """Until the standby has replayed everything the primary has written so far, and
    every node's measurement of it (kept STATE_TTL_S) is from after that."""
    target = lsn_of(pair.primary, "SELECT pg_current_wal_lsn()::text")
    deadline = time.monotonic() + timeout
    while lsn_of(pair.standby, "SELECT pg_last_wal_replay_lsn()::text") < target:
        assert time.monotonic() < deadline, "the standby did not catch up"
        time.sleep(0.05)
    time.sleep(STATE_TTL_S + 0.05)


@contextmanager
def replay_paused(pair: Pair) -> Iterator[None]:
    """The standby receives WAL but does not apply it: it lags on purpose."""
    pair.standby.scalar("SELECT pg_wal_replay_pause()")
    deadline = time.monotonic() + 30
    while pair.standby.scalar("SELECT pg_get_wal_replay_pause_state()") != "paused":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    try:
        yield
    finally:
        pair.standby.scalar("SELECT pg_wal_replay_resume()")


def routed(database: str, reason: str) -> float:
    return REGISTRY.get_sample_value("hutong_standby_reads_total", {"database": database, "reason": reason}) or 0.0


# ------------------------------------------------------------------ the deployment
@dataclass
class Deployment:
    pair: Pair
    node1: Server
    node2: Server
    region: Region

    def node(self, **settings: Any) -> AbstractContextManager[Server]:
        """One more app node on the same primary, with settings of its own."""
        return app_node(self.pair.primary.url, **settings)

    def visit(self, org: str, patient: str) -> str:
        """The institution's system writes a visit for ``patient`` (on the primary, as every write)."""
        with self.region.client("sys" + org[-1]) as c:
            r = c.post("/Encounter", json={
                "resourceType": "Encounter", "status": "finished", "class": AMB,
                "subject": {"reference": f"Patient/{patient}"},
                "serviceProvider": {"reference": f"Organization/{self.region.ids[org]}"},
                "period": {"start": datetime.now(UTC).isoformat(timespec="seconds")}})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def browser(self, who: str) -> httpx.Client:
        """A browser signed in as ``who``: one cookie jar for every node (cookies are per host, not port)."""
        token = self.node1.token(self.region.accounts[who])
        c = httpx.Client(timeout=30, follow_redirects=False, headers={"authorization": f"Bearer {token}"})
        c.cookies.set("hutong_csrf", CSRF)
        return c


@contextmanager
def app_node(url: str, **settings: Any) -> Iterator[Server]:
    """tests/harness.py's server, whose standby's pool is closed afterwards too (the harness closes
    the repository it opened, not the platform)."""
    with contextmanager(serve_app)(url, **settings) as server:
        try:
            yield server
        finally:
            if server.app.platform.standby is not None:
                server.app.platform.standby.close()


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    with primary_and_standby(synchronous=False) as pair:
        # A generous bound here: these tests pause replay for a few seconds on purpose.
        settings = {"standby_url": pair.standby.url, "standby_max_lag_s": 600.0}
        with app_node(pair.primary.url, **settings) as n1, app_node(pair.primary.url, **settings) as n2:
            yield Deployment(pair, n1, n2, build(n1))


# ------------------------------------------------------------------ routing and read-your-writes
@pytest.mark.postgres
@pytest.mark.slow
def test_timeline_from_standby_and_read_your_writes_on_any_node(deployment: Deployment) -> None:
    d, ids = deployment, deployment.region.ids
    wait_replayed(d.pair)
    with d.browser("R") as br:
        before = routed(STANDBY, STANDBY)
        r = br.get(d.node1.root + "/resident")
        assert r.status_code == 200, r.text
        assert routed(STANDBY, STANDBY) == before + 1  # the standby answered

        with replay_paused(d.pair):
            seen = d.visit("orgA", ids["pA"])  # on the primary only
            r = br.get(d.node1.root + "/resident")
            assert r.status_code == 200
            assert f'data-encounter="{seen}"' not in r.text  # the standby answered, and lags
            assert routed(STANDBY, STANDBY) == before + 2

            # The resident writes (a consent, through the portal on node 1) ...
            w = br.post(d.node1.root + "/resident/consents", data={
                "csrf": CSRF, "kind": "permit", "org": ids["orgB"], "days": "30"})
            assert w.status_code == 303, w.text
            assert int(br.cookies["hutong_wal"], 16) > 0  # the primary's WAL position after the write
            # ... and their next routed read, on node 2, comes from the primary: their consent
            # and everything before it (the visit) is there although the standby has neither.
            mine = routed(PRIMARY, "your-write")
            r = br.get(d.node2.root + "/resident")
            assert r.status_code == 200
            assert f'data-encounter="{seen}"' in r.text
            assert routed(PRIMARY, "your-write") == mine + 1
            consents = br.get(d.node2.root + "/resident/consents")  # never routed: the primary
            assert "乙医院" in consents.text

        wait_replayed(d.pair)  # replay resumed and passed the write: the standby answers again
        at = routed(STANDBY, STANDBY)
        r = br.get(d.node2.root + "/resident")
        assert f'data-encounter="{seen}"' in r.text
        assert routed(STANDBY, STANDBY) == at + 1

        with replay_paused(d.pair):  # and it is really the standby: a newer visit is not there yet
            newer = d.visit("orgA", ids["pA"])
            r = br.get(d.node2.root + "/resident/labs")
            assert r.status_code == 200
            r = br.get(d.node2.root + "/resident")
            assert f'data-encounter="{seen}"' in r.text
            assert f'data-encounter="{newer}"' not in r.text
        wait_replayed(d.pair)
        assert f'data-encounter="{newer}"' in br.get(d.node1.root + "/resident").text

        # Rows the standby holds in an older version are the primary's current ones on the page:
        # a visit deleted and a visit changed while replay is paused.
        with replay_paused(d.pair), d.region.client("sysA") as his:
            assert his.delete(f"/Encounter/{seen}").status_code in (200, 204)
            changed = his.get(f"/Encounter/{newer}").json()
            changed["period"] = {"start": "2025-03-04T09:00:00+08:00", "end": "2025-03-04T10:00:00+08:00"}
            assert his.put(f"/Encounter/{newer}", json=changed).status_code == 200
            held = d.pair.standby.scalar("SELECT deleted FROM resource WHERE type = 'Encounter' AND fhir_id = %s",
                                         (seen,))
            assert held == 0  # the standby still has the visit, undeleted
            at = routed(STANDBY, STANDBY)
            r = br.get(d.node2.root + "/resident")
            assert routed(STANDBY, STANDBY) == at + 1
            assert f'data-encounter="{seen}"' not in r.text
            assert f'data-encounter="{newer}"' in r.text and 'datetime="2025-03-04"' in r.text
        wait_replayed(d.pair)


@pytest.mark.postgres
@pytest.mark.slow
def test_the_commissions_statistics_come_from_the_standby(deployment: Deployment) -> None:
    d = deployment
    with d.node(standby_url=d.pair.standby.url, standby_max_lag_s=600.0) as node, d.browser("commission") as br:
        wait_replayed(d.pair)
        before = routed(STANDBY, STANDBY)
        r = br.get(node.root + "/console")
        assert r.status_code == 200, r.text
        assert "甲医院" in r.text
        # The inbox's timeliness rollup and the record counts (an aggregate over the compartment index).
        assert routed(STANDBY, STANDBY) == before + 2
        # Its role is checked on the primary: a resident is refused whatever the standby holds.
        with d.browser("R") as resident:
            assert resident.get(node.root + "/console").status_code == 403


# ------------------------------------------------------------------ the attack
@pytest.mark.postgres
@pytest.mark.slow
def test_revoked_consent_and_disabled_account_take_effect_at_once_while_the_standby_lags(
        deployment: Deployment) -> None:
    d, ids, server = deployment, deployment.region.ids, deployment.node1
    # Hospital C, with no record of R: only R's consent opens her record to its clinician.
    code = "12110000400000003C"
    org_c = server.client.post("/Organization", json={
        "resourceType": "Organization", "name": "丙医院",
        "identifier": [{"system": ORGANIZATION, "value": code}]}).json()["id"]
    practitioner = server.client.post("/Practitioner", json={
        "resourceType": "Practitioner", "name": [{"family": "医", "given": ["丙"]}]}).json()["id"]
    doctor, _, _ = server.accounts.add_user("doctorc", role=Role.CLINICIAN, name="丙院医生", organization=code,
                                            organization_id=org_c, practitioner_id=practitioner)
    d.region.accounts["docC"] = doctor
    record = f"/clinician/patient/{ids['R']}/record?reason=consent&tab=timeline"
    with d.browser("R") as resident, d.browser("docC") as doc:
        assert doc.get(d.node1.root + record).status_code == 403  # no basis yet
        w = resident.post(d.node1.root + "/resident/consents", data={
            "csrf": CSRF, "kind": "permit", "org": org_c, "days": "30"})
        assert w.status_code == 303, w.text
        consent = next(e["resource"] for e in server.client.get("/Consent", params={"_count": "100"}).json()["entry"]
                       if f"Organization/{org_c}" in orjson.dumps(e["resource"]).decode())
        assert consent["status"] == "active"
        wait_replayed(d.pair)
        before = routed(STANDBY, STANDBY)
        r = doc.get(d.node2.root + record)
        assert r.status_code == 200, r.text
        assert f'data-encounter="{ids["encA"]}"' in r.text  # R's visit at A, opened by her consent
        assert routed(STANDBY, STANDBY) == before + 1  # the record's rows came from the standby
        # ... and the read's audit row is on the primary, naming R and the rows shown, as for any read.
        read = server.app.platform.audit.search(account=doctor.id, limit=1)[0]
        assert "/record" in read.interaction and read.outcome == SUCCESS and ids["R"] in read.persons
        assert f"Encounter/{ids['encA']}" in read.entities

        with replay_paused(d.pair):
            # R revokes on the primary; the standby still holds the consent as active.
            w = resident.post(d.node1.root + f"/resident/consents/{consent['id']}/revoke", data={"csrf": CSRF})
            assert w.status_code == 303, w.text
            standby = d.node2.app.platform.standby
            assert standby is not None and standby.state(fresh=True).usable
            held = SqlRepository.read(standby.repository(), "Consent", consent["id"])  # the standby's own row
            assert held is not None and orjson.loads(held.body or b"{}")["status"] == "active"
            # The clinician's routed record page is refused at once, on both nodes.
            for node in (d.node1, d.node2):
                r = doc.get(node.root + record)
                assert r.status_code == 403, r.text
                assert "HT-0103" in r.text
                refusal = server.app.platform.audit.search(account=doctor.id, limit=1)[0]
                assert refusal.outcome == REFUSED and refusal.code == "HT-0103" and refusal.time_ms >= read.time_ms

            # Disabling the resident's account on the primary: her routed pages are refused at once too.
            assert resident.get(d.node2.root + "/resident").status_code == 200
            server.accounts.set_status(d.region.accounts["R"].id, False)
            for node in (d.node1, d.node2):
                for path in ("/resident", "/resident/labs"):
                    assert resident.get(node.root + path).status_code in (302, 303, 401, 403)
        server.accounts.set_status(d.region.accounts["R"].id, True)
        wait_replayed(d.pair)


# ------------------------------------------------------------------ falling back, and saying so
@pytest.mark.postgres
@pytest.mark.slow
def test_lagging_or_unreachable_standby_falls_back_and_readyz_and_metrics_say_so(deployment: Deployment) -> None:
    d, ids = deployment, deployment.region.ids
    with d.node(standby_url=d.pair.standby.url, standby_max_lag_s=1.0) as strict, d.browser("R") as br:
        wait_replayed(d.pair)  # the node's own start-up writes too
        ready = httpx.get(strict.root + "/readyz").json()
        assert ready["status"] == "ready" and ready["standby"]["status"] == "ok", ready
        with replay_paused(d.pair):
            seen = d.visit("orgA", ids["pA"])
            time.sleep(1.6)  # past the bound: the last transaction the standby replayed is older
            ready = httpx.get(strict.root + "/readyz")
            assert ready.status_code == 200  # reads still have the primary: the node stays ready
            assert ready.json()["standby"]["code"] == "HT-0634", ready.text
            before = routed(PRIMARY, "lagging")
            r = br.get(strict.root + "/resident")
            assert f'data-encounter="{seen}"' in r.text  # the primary answered
            assert routed(PRIMARY, "lagging") == before + 1
            metrics = strict.client.get(strict.root + "/metrics").text
            assert "hutong_standby_usable 0.0" in metrics
            lag = next(float(ln.split()[1]) for ln in metrics.splitlines()
                       if ln.startswith("hutong_standby_lag_seconds "))
            assert lag > 1.0
        wait_replayed(d.pair)

    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    with d.node(standby_url=dead) as orphan, d.browser("R") as br:
        ready = httpx.get(orphan.root + "/readyz")
        assert ready.status_code == 200 and ready.json()["standby"]["code"] == "HT-0632", ready.text
        assert "127.0.0.1" not in ready.text  # a code and a kind, never a host
        before = routed(PRIMARY, "unavailable")
        r = br.get(orphan.root + "/resident")
        assert r.status_code == 200 and f'data-encounter="{seen}"' in r.text
        assert routed(PRIMARY, "unavailable") == before + 1


@pytest.mark.postgres
@pytest.mark.slow
def test_a_copy_of_another_cluster_is_never_read(deployment: Deployment, pg_server: str) -> None:
    """The suite's own PostgreSQL is another cluster: same schema, other rows under the same keys."""
    primary = open_repository(deployment.pair.primary.url)
    try:
        other = open_standby(primary, pg_server, max_lag_s=600)
        st = other.state(fresh=True)
        assert not st.usable and st.code == "HT-0631"
        choice = other.choose(None)
        assert choice.database == PRIMARY and choice.repo is primary
        other.close()
        # The real standby, same primary: used.
        real = open_standby(primary, deployment.pair.standby.url, max_lag_s=600)
        wait_replayed(deployment.pair)
        assert real.choose(None).database == STANDBY
        # A write through the standby's repository fails there (read-only), it never reaches the primary.
        with pytest.raises(Exception, match="read-only"):
            real.repository().transact(lambda w: w.execute("DELETE FROM search_param WHERE id < 0"))
        real.close()
    finally:
        primary.db.close()


# ------------------------------------------------------------------ SQLite and settings
def test_sqlite_refuses_a_standby(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path}/hutong.db"
    repo = open_repository(url)
    try:
        with pytest.raises(ConfigError) as e:
            build_platform(Settings(database_url=url, standby_url="postgresql://u@127.0.0.1:5/x"), repo=repo)
        assert e.value.code == "HT-0630" and "SQLite" in str(e.value)
    finally:
        repo.db.close()
    # `hutong serve` says so before any worker starts, and exits.
    env = {**os.environ, "HUTONG_DATABASE_URL": url, "HUTONG_STANDBY_DATABASE_URL": "postgresql://u@127.0.0.1:5/x",
           "HUTONG_KEY_DIR": str(tmp_path / "keys")}
    run = subprocess.run([sys.executable, "-m", "hutong.cli", "serve", "--port", str(free_port())], env=env,
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 2 and "HT-0630" in run.stderr and "SQLite" in run.stderr, run.stderr[-500:]
    monkeypatch.setenv("HUTONG_STANDBY_DATABASE_URL", "postgresql://u@127.0.0.1:5/x")
    monkeypatch.setenv("HUTONG_STANDBY_MAX_LAG_SECONDS", "0")
    with pytest.raises(ConfigError) as e:
        Settings.from_env(url)
    assert e.value.code == "HT-0635"
    monkeypatch.setenv("HUTONG_STANDBY_MAX_LAG_SECONDS", "2.5")
    s = Settings.from_env(url)
    assert s.standby_url == "postgresql://u@127.0.0.1:5/x" and s.standby_max_lag_s == 2.5


@pytest.mark.postgres
@pytest.mark.slow
def test_a_read_failing_on_the_standby_is_answered_by_the_primary(deployment: Deployment) -> None:
    """The standby stops between its last measurement and a read (a clock that stands still keeps the
    measurement): the read fails there and is answered by the primary; the next measurement says why."""
    d, ids = deployment, deployment.region.ids
    primary = open_repository(d.pair.primary.url)
    standby = Standby(primary, open_database(d.pair.standby.url, create=False), max_lag_s=600, clock=lambda: 0.0)
    seen: list[str] = []
    down = False

    def chosen(c: Choice) -> None:
        seen.append(c.database)

    def patient(r: Repository) -> bytes | None:
        s = r.read("Patient", ids["pA"])
        return s.body if s is not None else None

    try:
        wait_replayed(d.pair)
        assert standby.read(None, patient, chosen) is not None and seen == [STANDBY]
        d.pair.standby.stop("immediate")
        down = True
        assert standby.read(None, patient, chosen) is not None and seen == [STANDBY, PRIMARY]
        st = standby.state()
        assert not st.usable and st.code == "HT-0632"
        assert standby.choose(None).database == PRIMARY
        d.pair.standby.start()
        down = False
        d.pair.wait_streaming()
        assert standby.state(fresh=True).usable  # back: measured again, it may answer
    finally:
        if down:
            d.pair.standby.start()
        standby.close()
        primary.db.close()
