"""Operations (issue 18, item 3): /readyz, /metrics and their access rule,
through the running server on SQLite and PostgreSQL."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa
from harness import Server, free_port, serve_app
from prometheus_client.parser import text_string_to_metric_families

import hutong
from hutong.errors import ConfigError
from hutong.security.principal import Role
from hutong.store import migrations
from hutong.web import metrics


def _engine_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1) if url.startswith("postgresql://") else url


def _stamp(url: str, revision: str) -> None:
    """Set the stored schema version (as a restore of an older database, or another
    node's upgrade to a newer release, would leave it under a running node)."""
    engine = sa.create_engine(_engine_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": revision})
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- /readyz


def test_readyz_is_503_naming_the_schema_when_it_is_behind_or_ahead(server: Server, db_url: str) -> None:
    with httpx.Client(base_url=server.root) as anonymous:  # a load balancer has no token
        r = anonymous.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "ready", "checks": {
            "database": {"status": "ok"}, "schema": {"status": "ok"}, "keys": {"status": "ok"}}}
        assert r.headers["cache-control"] == "no-store"
        older = migrations.REVISIONS[-2]
        _stamp(db_url, older)
        r = anonymous.get("/readyz")
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["status"] == "not ready" and body["not_ready"] == ["schema"], body
        assert body["checks"]["schema"]["code"] == "HT-0421"
        assert older in body["checks"]["schema"]["problem"] and "hutong db upgrade" in body["checks"]["schema"]["problem"]
        assert body["checks"]["database"] == {"status": "ok"} and body["checks"]["keys"] == {"status": "ok"}
        _stamp(db_url, "0099")  # a newer release's schema (another node upgraded): not ready either
        r = anonymous.get("/readyz")
        assert r.status_code == 503 and "newer" in r.json()["checks"]["schema"]["problem"], r.text
        _stamp(db_url, migrations.HEAD)
        assert anonymous.get("/readyz").status_code == 200
        # nothing of the database's address or credentials in the public answer
        assert "127.0.0.1" not in r.text and "postgres" not in r.text.lower() and "sqlite" not in r.text.lower()
        assert anonymous.get("/healthz").status_code == 200


# --------------------------------------------------------------------------- /metrics

ID_CARD = "urn:oid:2.16.156.10011.1.3"


def _scrape(client: httpx.Client, url: str) -> str:
    r = client.get(url)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain"), r.headers
    return r.text


def _value(text: str, name: str, **labels: str) -> float:
    """The sample ``name{labels}`` of a Prometheus text exposition (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def _platform(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.root, headers={"authorization": server.client.headers["authorization"]})


def test_metrics_count_real_requests_by_route_template_never_the_id(server: Server) -> None:
    c = server.client
    made = c.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "欧阳", "given": ["春花"]}],
                                    "identifier": [{"system": ID_CARD, "value": "11010519880307002X"}],
                                    "telecom": [{"system": "phone", "value": "13700001234"}]})
    assert made.status_code == 201, made.text
    pid = made.json()["id"]
    with _platform(server) as platform:
        before = _scrape(platform, "/metrics")
        for _ in range(3):
            assert c.get(f"/Patient/{pid}").status_code == 200
        assert c.get("/Patient/no-such-patient").status_code == 404
        assert c.get("/Patient", params={"identifier": f"{ID_CARD}|11010519880307002X"}).status_code == 200
        # a CDA document that is not one: a dead letter, counted by channel and outcome
        r = platform.post("/ingest/cda", content=b"<ClinicalDocument xmlns='urn:hl7-org:v3'/>",
                          headers={"content-type": "application/hl7-cda+xml"})
        assert r.status_code == 422, r.text
        after = _scrape(platform, "/metrics")
    route = "/fhir/{type}/{id}"
    assert _value(after, "hutong_http_requests_total", route=route, method="GET", status="200") - \
        _value(before, "hutong_http_requests_total", route=route, method="GET", status="200") == 3
    assert _value(after, "hutong_http_requests_total", route=route, method="GET", status="404") - \
        _value(before, "hutong_http_requests_total", route=route, method="GET", status="404") == 1
    assert _value(after, "hutong_http_request_duration_seconds_count", route=route, method="GET") - \
        _value(before, "hutong_http_request_duration_seconds_count", route=route, method="GET") == 4
    assert _value(after, "hutong_http_requests_total", route="/fhir/{type}", method="GET", status="200") >= 1
    assert _value(after, "hutong_ingest_messages_total", channel="cda", outcome="dead") - \
        _value(before, "hutong_ingest_messages_total", channel="cda", outcome="dead") == 1
    # every answered request appended an audit row first: at least these 6 (5 + the first scrape)
    assert _value(after, "hutong_audit_append_seconds_count") - _value(before, "hutong_audit_append_seconds_count") >= 6
    assert _value(after, "hutong_db_pool_connections", state="idle") >= 1
    assert _value(after, "hutong_mpi_review_queue") >= 0 and "hutong_mpi_review_queue " in after
    assert _value(after, "hutong_build_info", version=hutong.__version__) == 1
    # no id, identifier, name or phone in any label or value
    for secret in (pid, "no-such-patient", "11010519880307002X", "欧阳", "13700001234"):
        assert secret not in after, secret


def test_metrics_on_the_app_are_for_operators_and_the_platform_only(server: Server) -> None:
    """Attack: a clinician, a resident and an anonymous caller (from any address,
    loopback included) cannot read /metrics; an operator and the platform can."""
    c = server.client
    made = c.post("/Patient", json={"resourceType": "Patient",
                                    "identifier": [{"system": ID_CARD, "value": "110105199001011237"}]})
    assert made.status_code == 201, made.text
    person = server.app.platform.mpi.person_of(made.json()["id"])
    with _platform(server) as platform:
        before = _scrape(platform, "/metrics")
    accounts = server.accounts
    resident = accounts.add_resident(person, phone="13912340000")
    org = c.post("/Organization", json={"resourceType": "Organization", "name": "第九医院",
                                        "identifier": [{"system": "urn:oid:2.16.156.10011.1.5", "value": "H0909"}]})
    doc = c.post("/Practitioner", json={"resourceType": "Practitioner", "name": [{"text": "王医生"}]})
    assert org.status_code == 201 and doc.status_code == 201, (org.text, doc.text)
    clinician, _, _ = accounts.add_user("metricsdoc", role=Role.CLINICIAN, name="王医生", organization="H0909",
                                        organization_id=org.json()["id"], practitioner_id=doc.json()["id"])
    commission, _, _ = accounts.add_user("metricsofficer", role=Role.COMMISSION, name="卫健委")
    operator, _, _ = accounts.add_user("metricsop", role=Role.OPERATOR, name="运维")
    for who, status in ((resident, 403), (clinician, 403), (commission, 403), (operator, 200)):
        r = httpx.get(server.root + "/metrics", headers={"authorization": f"Bearer {server.token(who)}"})
        assert r.status_code == status, (who.role, r.text)
        if status == 403:
            assert "HT-0104" in r.text and "hutong_http_requests" not in r.text
    r = httpx.get(server.root + "/metrics")
    assert r.status_code == 401 and "hutong_" not in r.text
    assert "Bearer" in r.headers["www-authenticate"]
    assert httpx.get(server.url + "/Patient/someone").status_code == 401
    # refusals are counted under the template too (the gate answered before the router)
    with _platform(server) as platform:
        text = _scrape(platform, "/metrics")

    def moved(**labels: str) -> float:
        return _value(text, "hutong_http_requests_total", **labels) - _value(before, "hutong_http_requests_total",
                                                                             **labels)

    assert moved(route="/fhir/{type}/{id}", method="GET", status="401") == 1
    assert moved(route="/metrics", method="GET", status="403") == 3
    assert moved(route="/metrics", method="GET", status="401") == 1
    # the refusals were audited like any request
    assert any(e.code == "HT-0104" and e.interaction == "GET /metrics" for e in server.app.platform.audit.search(limit=20))


def test_separate_metrics_listener_and_no_metrics_on_the_app(db_url: str) -> None:
    """HUTONG_METRICS_ADDRESS: /metrics only on its own (loopback) listener."""
    port = free_port()
    for server in serve_app(db_url, metrics_address=f"127.0.0.1:{port}"):
        with _platform(server) as platform:
            assert platform.get("/metrics").status_code == 404  # not served by the public app at all
        listener = metrics.listen(f"127.0.0.1:{port}", server.repo)
        try:
            assert server.client.get("/Patient/nobody").status_code == 404
            text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            assert _value(text, "hutong_http_requests_total", route="/fhir/{type}/{id}", status="404") >= 1
            assert "nobody" not in text
        finally:
            listener.shutdown()
            listener.server_close()


@pytest.mark.parametrize("bad", ["9100", "localhost:", ":9100", "host:99999", "host:port"])
def test_bad_metrics_address_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError) as e:
        metrics.parse_address(bad)
    assert e.value.code == "HT-0423"
