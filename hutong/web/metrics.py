"""Prometheus metrics (issue 18, item 3), in the text exposition format
(prometheus.io/docs/instrumenting/exposition_formats) through prometheus_client.

What is counted, and what never is:

- HTTP requests by *route template* (``/fhir/{type}/{id}``), method and status,
  and their latency per route template.  Never the raw path or query: ids and
  search values name residents (DESIGN.md "Trust model"); a request no route
  matched is ``<unmatched>``, and an unknown method ``OTHER``, so a caller
  cannot grow the label sets either.
- audit append latency: from recording an audit row to its durable commit, as
  its caller waits it (hutong.security.audit.APPEND_OBSERVERS);
- ingest messages by channel and outcome (hutong.ingest.pipeline.RECEIPT_OBSERVERS);
- the database pool's idle and in-use connections, the MPI review queue's
  length (read at scrape time through hutong.mpi.state) and the build.

Several worker processes (``hutong serve --workers N``): ``hutong serve`` sets
``PROMETHEUS_MULTIPROC_DIR`` (a fresh directory) before any worker starts, so
every process writes its counters and histograms there and any one of them --
or the separate listener in the serving process -- exposes the sum over all of
them (prometheus_client's multiprocess mode).  The pool gauge is each live
process's own pool, summed; each worker refreshes its value every
POOL_SAMPLE_S.  Without that variable (tests, one process) the process's own
registry is exposed.

Who may read it: route volumes of a health platform are information (which
services are used how much, when), so ``/metrics`` is never public.  With
``HUTONG_METRICS_ADDRESS=host:port`` it is served only by a separate listener
on that address (bind it to loopback or a management network; the scraper
needs no token) and the public app has no ``/metrics``.  Without it, the app's
``/metrics`` is gated like every route and answers only operator and platform
principals (HT-0104 for anyone else).  Anonymous loopback callers are not let
in: behind a reverse proxy on the same host every caller is loopback, and the
trust model has no "unset means trusted".
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from fastapi import FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest as _generate
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hutong import __version__, logs
from hutong.errors import ConfigError, Forbidden
from hutong.ingest import pipeline
from hutong.mpi import state as mpi_state
from hutong.security import audit
from hutong.security.principal import Role
from hutong.store import health
from hutong.store.repository import Repository
from hutong.web.gate import access_of

access_log = logging.getLogger("hutong.access")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "<unmatched>"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
POOL_SAMPLE_S = 5.0
READERS = (Role.OPERATOR, Role.PLATFORM)

REQUESTS = Counter("hutong_http_requests", "HTTP requests by route template, method and status",
                   ["route", "method", "status"])
LATENCY = Histogram("hutong_http_request_duration_seconds", "HTTP request latency by route template",
                    ["route", "method"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
AUDIT_APPEND = Histogram("hutong_audit_append_seconds",
                         "time from recording an audit row to its durable commit, as its caller waits it",
                         buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
INGEST = Counter("hutong_ingest_messages", "messages received by channel and outcome (stored, duplicate, "
                 "dead, refused)", ["channel", "outcome"])
POOL = Gauge("hutong_db_pool_connections", "database connections of the pool by state (idle, in_use), "
             "summed over live processes", ["state"], multiprocess_mode="livesum")


def _observe_receipt(channel: str, outcome: str) -> None:
    INGEST.labels(channel, outcome).inc()


def install_hooks() -> None:
    """Count audit appends and ingest receipts of this process (idempotent)."""
    if AUDIT_APPEND.observe not in audit.APPEND_OBSERVERS:
        audit.APPEND_OBSERVERS.append(AUDIT_APPEND.observe)
    if _observe_receipt not in pipeline.RECEIPT_OBSERVERS:
        pipeline.RECEIPT_OBSERVERS.append(_observe_receipt)


install_hooks()


def route_of(scope: Scope, routes: Sequence[BaseRoute] = ()) -> str:
    """The route template a request matched, never its path.  A request the gate
    refused never reached the router: its template is looked up here."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    partial: str | None = None  # the path matched, the method did not (the router answers 405)
    for route in routes:
        match, _child = route.matches(scope)
        found = getattr(route, "path", None)
        if match is Match.FULL and isinstance(found, str):
            return found
        if match is Match.PARTIAL and partial is None and isinstance(found, str):
            partial = found
    return partial or UNMATCHED


class Observe:
    """Plain ASGI middleware: counts and times every request by route template,
    and gives it its request id (``X-Request-Id`` on the answer, in every log line)."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500  # an answer that never started (the server closed it)
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        rid = logs.request_id(given.decode("latin-1") if given is not None else None)
        token = logs.REQUEST_ID.set(rid)  # every log line of this request names it (hutong.logs)

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            route, method = route_of(scope, self.routes), scope["method"] if scope["method"] in METHODS else "OTHER"
            elapsed = time.perf_counter() - t0
            REQUESTS.labels(route, method, str(status)).inc()
            LATENCY.labels(route, method).observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                # the route template, never the path or query (ids and search values are personal data)
                access_log.info("request", extra={"method": method, "route": route, "status": status,
                                                  "ms": round(elapsed * 1000, 2)})
            logs.REQUEST_ID.reset(token)


class _Scraped:
    """Values read when scraped: this process's pool, the MPI review queue, the build."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    def collect(self) -> Iterator[Metric]:
        _sample_pool(self.repo)  # before the process/multiprocess collector reads it (registered after)
        build = GaugeMetricFamily("hutong_build_info", "the running release (value 1)", labels=["version", "database"])
        build.add_metric([__version__, self.repo.db.dialect], 1)
        yield build
        try:
            queue = mpi_state.open_review_count(mpi_state.repo_reader(self.repo))
        except Exception:  # the database is down: the other metrics still say so (readyz too)
            return
        yield GaugeMetricFamily("hutong_mpi_review_queue", "open MPI review items (possible matches a reviewer "
                                "must decide)", value=queue)


class _ThisProcess:
    """The process's own metrics (one process: no multiprocess directory)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def _sample_pool(repo: Repository) -> None:
    idle, in_use = health.pool_stats(repo.db)
    POOL.labels("idle").set(idle)
    POOL.labels("in_use").set(in_use)


def multiprocess() -> bool:
    """This process's metrics live in the multiprocess directory: PROMETHEUS_MULTIPROC_DIR
    was set before prometheus_client was first imported here (``hutong demo`` imports
    it before ``hutong serve``'s code sets the variable, and then serves in one process)."""
    from prometheus_client import values

    return bool(os.environ.get(MULTIPROC_ENV)) and values.ValueClass is not values.MutexValue


def registry_for(repo: Repository) -> CollectorRegistry:
    """What a scrape returns: every process's metrics plus the values read now."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Scraped(repo))
    if multiprocess():
        from prometheus_client import multiprocess as mp

        mp.MultiProcessCollector(reg)  # type: ignore[no-untyped-call]
    else:
        reg.register(_ThisProcess())
    return reg


def exposition(reg: CollectorRegistry) -> bytes:
    return _generate(reg)


def parse_address(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9100`` for IPv6) of the separate metrics listener."""
    host, sep, port = value.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("HT-0423", f"HUTONG_METRICS_ADDRESS must be host:port (e.g. 127.0.0.1:9100), "
                                     f"not {value[:60]!r}")
    return host, int(port)


def listen(address: str, repo: Repository) -> Any:
    """Serve the metrics on their own listener (HUTONG_METRICS_ADDRESS); returns the server."""
    from prometheus_client import start_http_server

    host, port = parse_address(address)
    server, _thread = start_http_server(port, host, registry=registry_for(repo))
    return server


def _pool_sampler(repo: Repository) -> None:
    """Several workers: each refreshes its own pool's value, which any worker's scrape sums."""
    while True:
        time.sleep(POOL_SAMPLE_S)
        try:
            _sample_pool(repo)
        except Exception:
            return


def register(app: FastAPI, repo: Repository, *, address: str | None) -> None:
    """Count the app's requests; serve ``/metrics`` on the app unless a separate
    listener (``address``, started by ``hutong serve``) serves them."""
    if multiprocess():
        threading.Thread(target=_pool_sampler, args=(repo,), name="metrics-pool", daemon=True).start()
    if address is not None:
        return
    reg = registry_for(repo)

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def metrics(request: Request) -> Response:
        if access_of(request).principal.role not in READERS:
            raise Forbidden("HT-0104", "/metrics is for operator and platform accounts; or set "
                                       "HUTONG_METRICS_ADDRESS to serve it on a separate, non-public address")
        body = await run_in_threadpool(exposition, reg)
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"cache-control": "no-store"})
