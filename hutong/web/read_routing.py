"""Which database answers a page's lag-tolerant read: the hot standby or the
primary (issue 18, item 2; hutong.store.standby decides and explains the trust
rules: only the record's clinical rows come from the standby, everything the
policy and the audit judge by is read and written on the primary).

Routed reads (each calls :func:`read` for its record rows only): the
resident's timeline and labs (``GET /resident``, ``/resident/labs``), the
clinician's record page (``GET /clinician/patient/{person}/record``) and the
commission's institutions dashboard (``GET /console``: the inbox's timeliness
rollup and the record counts).  Everything else reads the primary.

Read-your-writes across nodes: after a page request that may have written
(any method but GET, HEAD and OPTIONS), :class:`RememberWrites` asks the
primary for its WAL position -- the write has committed by then -- and keeps
it in the browser's ``hutong_wal`` cookie (HttpOnly, SameSite=Strict, like the
session's).  A routed read uses the standby only once it has replayed that
position (:meth:`~hutong.store.standby.Standby.choose`), whichever node
answers: the position is the cluster's.  The cookie decides nothing about
access: an altered one can only send its own reads to an older copy of the
same rows or to the primary, each still admitted by the primary's policy.
Writes made outside this browser session (an institution's FHIR API, MLLP)
are not the caller's own and follow the lag bound only.

Metrics: ``hutong_standby_reads`` (routed reads by database and reason) and
``hutong_standby_lag_seconds`` / ``hutong_standby_usable`` as last measured;
``/readyz`` reports the standby beside its checks without failing readiness
(the primary still answers every read).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client import Counter, Gauge
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hutong.platform import Platform
from hutong.store.repository import Repository
from hutong.store.standby import Choice, Standby, StandbyState
from hutong.web.ui import session

T = TypeVar("T")
WAL_COOKIE = "hutong_wal"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
UNKNOWN = (1 << 64) - 1  # a position no standby has replayed: the primary answers

ROUTED = Counter("hutong_standby_reads", "lag-tolerant reads by the database that answered (standby, primary) "
                 "and why (standby, your-write, lagging, unavailable)", ["database", "reason"])
LAG = Gauge("hutong_standby_lag_seconds", "the hot standby's replay lag as last measured (-1: not measurable)",
            multiprocess_mode="livemax")
USABLE = Gauge("hutong_standby_usable", "1 when the hot standby may answer lag-tolerant reads, else 0",
               multiprocess_mode="livemin")


def _observe(state: StandbyState) -> None:
    lag = state.lag_s
    LAG.set(lag if lag is not None and not math.isinf(lag) else -1)
    USABLE.set(1 if state.usable else 0)


def _count(choice: Choice) -> None:
    ROUTED.labels(choice.database, choice.reason).inc()
    _observe(choice.state)


def written_by(request: Request) -> int | None:
    """The WAL position of this browser's last write (None: none remembered)."""
    v = request.cookies.get(WAL_COOKIE) or ""
    return int(v, 16) if 0 < len(v) <= 16 and all(c in "0123456789abcdef" for c in v) else None


def cookie_value(lsn: int) -> str:
    """A WAL position as the cookie holds it: hexadecimal digits (PostgreSQL's ``X/Y``
    would be quoted in a cookie)."""
    return f"{lsn:x}"


def read(request: Request, platform: Platform, fn: Callable[[Repository], T]) -> T:
    """``fn`` with the repository a lag-tolerant read of ``request`` uses (the
    primary's when no standby is configured).  Call it in a worker thread."""
    standby = platform.standby
    if standby is None:
        return fn(platform.repo)
    return standby.read(written_by(request), fn, chosen=_count)


def report(standby: Standby) -> dict[str, Any]:
    """The standby as ``/readyz`` shows it (a code and words, never a host)."""
    st = standby.state(fresh=True)
    _observe(st)
    if st.usable:
        return {"status": "ok", "lag_seconds": round(st.lag_s or 0.0, 3)}
    out: dict[str, Any] = {"status": "not used: reads go to the primary", "code": st.code, "problem": st.problem}
    if st.lag_s is not None and not math.isinf(st.lag_s):
        out["lag_seconds"] = round(st.lag_s, 3)
    return out


class RememberWrites:
    """Plain ASGI middleware: a page request that may have written leaves the
    primary's WAL position after it in the ``hutong_wal`` cookie."""

    def __init__(self, app: ASGIApp, standby: Standby | None) -> None:
        self.app = app
        self.standby = standby

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        standby = self.standby
        if (standby is None or scope["type"] != "http" or scope["method"] in SAFE_METHODS
                or not session.is_page(scope["path"])):
            await self.app(scope, receive, send)
            return

        async def stamp(message: Message) -> None:
            if message["type"] == "http.response.start":
                max_age: int | None = None
                try:
                    value = cookie_value(await run_in_threadpool(standby.primary_position))
                except Exception:
                    # The position is unknown: this browser's routed reads go to the primary
                    # for a while.  A write older than the lag bound is on any standby the
                    # bound lets answer (its lag is at least the age of the oldest commit it
                    # has not replayed), so twice the bound and a minute is long enough.
                    value, max_age = cookie_value(UNKNOWN), int(standby.max_lag_s * 2) + 60
                cookie = Response()
                cookie.set_cookie(WAL_COOKIE, value, max_age=max_age, httponly=True, samesite="strict",
                                  secure=scope.get("scheme") == "https", path="/")
                extra = [(k, v) for k, v in cookie.raw_headers if k == b"set-cookie"]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, stamp)


def install(app: Any, platform: Platform) -> None:
    app.add_middleware(RememberWrites, standby=platform.standby)
