"""``hutong serve``: the HTTP API (FHIR at /fhir)."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

import uvicorn

if TYPE_CHECKING:
    from hutong.ingest.hl7v2.processes import Served
    from hutong.security.settings import SecuritySettings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="serve the FHIR API over HTTP",
                       description="Serve Hutong: FHIR R4 at http://HOST:PORT/fhir.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--database", metavar="URL", help="sqlite:///path or postgresql://...")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="worker processes (default: number of cores, at most 2)")
    p.add_argument("--mllp-port", type=int, default=None,
                   help="also listen for HL7 v2 messages over MLLP on this port; senders are authenticated per "
                        "connection: TLS client certificates (--mllp-tls-*), addresses in HUTONG_MLLP_SENDERS, "
                        "or, for development only, loopback with HUTONG_MLLP_DEV_LOOPBACK=1")
    p.add_argument("--mllp-host", default=None, help="address of the MLLP listener (default: --host)")
    p.add_argument("--mllp-tls-cert", metavar="PEM", default=None,
                   help="MLLP over TLS: the listener's certificate chain (or HUTONG_MLLP_TLS_CERT)")
    p.add_argument("--mllp-tls-key", metavar="PEM", default=None,
                   help="its private key (or HUTONG_MLLP_TLS_KEY)")
    p.add_argument("--mllp-tls-ca", metavar="PEM", default=None,
                   help="CA that issued the institutions' client certificates (or HUTONG_MLLP_TLS_CA); "
                        "senders are then known by their certificate and MSH-4 must name that institution")
    p.add_argument("--mllp-processes", type=int, default=1, metavar="N",
                   help="processes serving MLLP connections: one listener accepts and deals connections round "
                        "robin to itself and the others (default 1; more pay where the listener's one core is "
                        "the limit, e.g. PostgreSQL on another host; SQLite's writes all queue on one lock)")
    p.set_defaults(func=run)


def _metrics_directory() -> None:
    """Several workers' metrics add up through prometheus_client's multiprocess
    directory (hutong.web.metrics): a fresh one per start, or the operator's
    PROMETHEUS_MULTIPROC_DIR emptied (its files from a previous run would count twice)."""
    import glob
    import tempfile

    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not given:
        import atexit
        import shutil

        made = tempfile.mkdtemp(prefix="hutong-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = made
        atexit.register(shutil.rmtree, made, True)
        return
    os.makedirs(given, exist_ok=True)
    for f in glob.glob(os.path.join(given, "*.db")):
        os.remove(f)


def run(args: argparse.Namespace) -> int:
    # The multiprocess directory is this run's only: a caller in the same process
    # (tests, `hutong demo`) must not find it set afterwards, since a second run would
    # empty it under the first one's open metric files (their counts then vanish).
    before = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    try:
        return _run(args)
    finally:
        if before is None:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        else:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = before


def _run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise SystemExit(f"hutong serve: invalid port {args.port}")
    if args.database:
        os.environ["HUTONG_DATABASE_URL"] = args.database
    if args.workers > 1:  # one process needs no shared directory (and counts cheaper without it)
        _metrics_directory()  # before any process imports prometheus_client (the workers inherit it)
    from hutong import logs
    from hutong.config import Settings
    from hutong.errors import ConfigError as _BadSetting

    try:  # JSON lines with request ids, nothing personal (hutong.logs); every worker applies the same
        log_config = logs.configure("json")
    except _BadSetting as e:
        raise SystemExit(f"hutong serve: {e.message}") from None
    from hutong.security.residency import check_target
    from hutong.security.settings import SecuritySettings
    from hutong.store.database import open_database

    security = SecuritySettings.from_env()
    # Data stays in the allowed regions (issue 6; 数据安全法): refuse to start on
    # a database outside them before anything is written there.
    check_target(Settings.from_env().database_url, security, "storage")
    serving = Settings.from_env()
    if serving.standby_url:  # a hot standby on SQLite, or a bad lag bound: one clear error before any worker
        from hutong.store.standby import check_setting

        check_setting(serving.database_url, serving.standby_url, serving.standby_max_lag_s)
    db = open_database(Settings.from_env().database_url)  # fail fast on a bad URL, create schema once
    try:
        from hutong.security.keys import KeyRing, key_source_for

        # The keys open before any worker starts (a failing KMS command, a missing or
        # exposed key file): one clear error, not workers dying one after another.
        KeyRing(db, key_source_for(db.url, security))  # a ConfigError: `hutong: error: HT-...`, exit 2
        from hutong.security.auditheads import heads_path_of
        from hutong.security.keycheck import check_key_directory
        from hutong.security.keys import default_key_dir

        # Every node's key directory is the same key set (issue 18, item 2): one that is not a copy
        # of a served node's is refused here (HT-0636..0639) before any worker makes keys of its own;
        # on a first install (nothing recorded) the keys are made and recorded now.
        key_dir = security.key_dir or default_key_dir(db.url)
        check_key_directory(db, key_dir, heads_path_of(key_dir, security))
    finally:
        db.close()
    mllp_port = getattr(args, "mllp_port", None)
    if mllp_port is not None:
        if not 0 < mllp_port < 65536 or mllp_port == args.port:
            raise SystemExit(f"hutong serve: invalid --mllp-port {mllp_port}")
        from dataclasses import replace
        from pathlib import Path

        from hutong.errors import ConfigError
        from hutong.ingest.hl7v2.processes import start as start_listeners
        from hutong.security.senders import require_sender_authentication

        def given(name: str, default: Path | None) -> Path | None:
            value = getattr(args, name, None)
            return Path(value) if value else default

        security = replace(security, mllp_tls_cert=given("mllp_tls_cert", security.mllp_tls_cert),
                           mllp_tls_key=given("mllp_tls_key", security.mllp_tls_key),
                           mllp_tls_ca=given("mllp_tls_ca", security.mllp_tls_ca))
        try:
            # Senders are authenticated per connection (hutong.security.senders):
            # with nothing configured every message would be refused, so say so now.
            how = require_sender_authentication(security)
        except ConfigError as e:
            raise SystemExit(f"hutong serve: {e.message}") from None
        # One listener in this (supervisor) process, and helper processes it deals
        # connections to (hutong.ingest.hl7v2.processes); uvicorn's workers serve HTTP.
        # Each message is written under its sending institution's policy and audited.
        mllp_host = getattr(args, "mllp_host", None) or args.host
        url = Settings.from_env().database_url
        # One process unless asked (issue 17, 8 connections, this 2-core machine shared with the
        # database): SQLite runs every write under one lock and each process group-commits only
        # its own messages (2 processes 45-53 ORU^R01/s against 65-68); PostgreSQL's backends need
        # the second core as much (2 processes 39.9 against 50.5 with 1, at 378d51b).
        processes = getattr(args, "mllp_processes", None) or 1
        try:
            start_listeners(mllp_served, (url, security), mllp_host, mllp_port, processes=max(1, processes))
        except ConfigError as e:  # the TLS files (hutong.security.senders.server_tls)
            raise SystemExit(f"hutong serve: {e.message}") from None
        print(f"Hutong receiving HL7 v2 over MLLP at {mllp_host}:{mllp_port} ({how})", flush=True)
    from hutong.web import metrics  # this process's MLLP receipts and audit appends are counted too

    metrics_address = Settings.from_env().metrics_address
    if metrics_address:
        from hutong.errors import ConfigError as _ConfigError
        from hutong.platform import open_repository as _open

        # The separate listener (not public: bind it to loopback or a management network)
        # exposes every worker's metrics; the app then serves no /metrics (hutong.web.metrics).
        try:
            metrics.listen(metrics_address, _open(Settings.from_env().database_url))
        except (_ConfigError, OSError) as e:
            raise SystemExit(f"hutong serve: metrics listener: {getattr(e, 'message', None) or e}") from None
        print(f"Hutong metrics at http://{metrics_address}/metrics", flush=True)
    print(f"Hutong serving FHIR R4 at http://{args.host}:{args.port}/fhir", flush=True)
    # uvicorn's access log stays off: it writes raw paths and queries (ids, search values);
    # hutong.access writes route templates instead (HUTONG_LOG_LEVEL=info).
    uvicorn.run("hutong.web.app:app_from_env", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=log_config["root"]["level"].lower(), access_log=False,
                log_config=log_config)
    return 0


def mllp_served(url: str, security: SecuritySettings) -> Served:
    """What one MLLP listener process serves with (this process and each helper,
    hutong.ingest.hl7v2.processes): its own repository, ingestor and audit log.
    Each message is written under its sending institution's policy; its audit
    row commits with it."""
    from hutong.fhir.service import FhirService
    from hutong.ingest.hl7v2.processes import Served
    from hutong.ingest.pipeline import Ingestor
    from hutong.platform import open_repository
    from hutong.security.audit import AuditLog
    from hutong.security.senders import connection_identifier, mllp_authoriser, server_tls

    repo = open_repository(url)
    ingestor = Ingestor(FhirService(repo), authorise=mllp_authoriser(repo, security), audit_log=AuditLog(repo))
    return Served(ingestor, server_tls(security), connection_identifier(security))
