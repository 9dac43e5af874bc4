"""Health probes for load balancers and orchestrators (issue 18, item 3).

``/healthz`` says the process answers (hutong.web.app); ``/readyz`` says it
can serve: the database answers, its schema is this release's (a node whose
schema another node upgraded, or a restored older database, must stop taking
traffic rather than write rows the schema does not expect:
hutong.store.migrations), and the keys open (the data keys unwrap with the
master keys the key source holds now: hutong.security.keys) and are the
deployment's (the token and audit keys are the ones the database records:
hutong.security.keycheck).  Both are public
(a load balancer has no token) and so say nothing a stranger may not know:
each check is ok or names its problem by a stable code and a kind, never a
host, a user, a path or a key.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from hutong.platform import Platform
from hutong.security.crypto import AesCodec
from hutong.security.keycheck import NodeKeys, mismatch
from hutong.store import health
from hutong.store.migrations import HEAD
from hutong.web import read_routing

NO_STORE = {"cache-control": "no-store"}


def readiness(p: Platform) -> dict[str, dict[str, str]]:
    """Each check: {"status": "ok"} or {"status": "fail", "code": ..., "problem": ...}."""
    checks: dict[str, dict[str, str]] = {}
    db = p.repo.db
    try:
        health.ping(db)
        checks["database"] = {"status": "ok"}
    except Exception as e:  # driver errors differ; the kind only (a message may name host and user)
        checks["database"] = _fail("HT-0420", f"the database does not answer ({type(e).__name__})")
    if checks["database"]["status"] == "ok":
        try:
            v = health.schema_version(db)
            checks["schema"] = {"status": "ok"} if v.at_head else _fail(
                "HT-0421", f"the database schema is at {v.revision or 'nothing'}, this release needs "
                           f"{HEAD}" + (" (run `hutong db upgrade`)" if not v.newer else
                                                          " (the database is newer than this release)"))
        except Exception as e:
            checks["schema"] = _fail("HT-0421", f"the schema version cannot be read ({type(e).__name__})")
    else:
        checks["schema"] = _fail("HT-0421", "not checked: the database does not answer")
    checks["keys"] = _keys(p)
    if checks["keys"]["status"] == "ok" and checks["database"]["status"] == "ok":
        checks["keys"] = _key_set(p)
    return checks


def _key_set(p: Platform) -> dict[str, str]:
    """The token and audit keys this node loaded at start (checked then against the
    database: hutong.security.keycheck) are still the ones the database records: a
    key file replaced under a running node changes nothing until it restarts (and is
    refused then), but the database can be replaced under it (a restore, a failover
    to another cluster)."""
    keys = p.audit.keys
    held = NodeKeys(p.auth.tokens.kid, keys.chain_key_id, keys.signing_key_id)
    try:
        found = mismatch(p.repo.db, held)
    except Exception as e:
        return _fail("HT-0420", f"the recorded key fingerprints cannot be read ({type(e).__name__})")
    return {"status": "ok"} if found is None else _fail(*found)


def _keys(p: Platform) -> dict[str, str]:
    codec = p.repo.codec
    if not isinstance(codec, AesCodec):
        return _fail("HT-0422", "no data keys: encryption at rest is off (a benchmark's baseline only)")
    try:
        codec.ring.current()  # re-reads the master keys from the key source every REFRESH_S
    except Exception as e:
        return _fail("HT-0422", f"the data keys do not open with the key source's master keys ({type(e).__name__})")
    return {"status": "ok"}


def _fail(code: str, problem: str) -> dict[str, str]:
    return {"status": "fail", "code": code, "problem": problem}


def register(app: FastAPI, p: Platform) -> None:
    @app.get("/readyz", tags=["operations"], summary="ready to serve: database, schema version, keys")
    async def readyz() -> JSONResponse:
        checks = await run_in_threadpool(readiness, p)
        failing = sorted(k for k, c in checks.items() if c["status"] != "ok")
        body: dict[str, Any] = {"status": "not ready" if failing else "ready", "checks": checks}
        if failing:
            body["not_ready"] = failing
        if p.standby is not None:  # reported, never failing readiness: the primary answers every read
            body["standby"] = await run_in_threadpool(read_routing.report, p.standby)
        return JSONResponse(body, status_code=503 if failing else 200, headers=NO_STORE)
