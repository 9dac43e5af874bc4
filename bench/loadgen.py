"""A small closed-loop HTTP/1.1 load generator for loopback benchmarks.

N asyncio clients, each on one keep-alive connection, send requests back to
back until a request count or a deadline is reached, and record each
request's latency.  It is deliberately minimal (no TLS, no redirects,
Content-Length or chunked bodies): on a 2-core machine the load generator
shares the CPUs with the server, so every microsecond it spends is one the
server does not get.  uvloop is used when installed (it comes with
uvicorn[standard]).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Request = tuple[str, str, bytes | None]  # method, path (with query), body
Check = Callable[[int, bytes], str | None]  # (status, body) -> error text or None


Headers = dict[str, str]  # sent with every request of a run (e.g. Authorization: Bearer ...)


class HttpConnection:
    def __init__(self, host: str, port: int, headers: Headers | None = None) -> None:
        self.host = host
        self.port = port
        # Encoded once: the load generator shares the CPUs with the server.
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 22)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except Exception:
                pass
            self.writer = None

    async def request(self, method: str, path: str, body: bytes | None = None,
                      content_type: str = "application/fhir+json") -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAccept: application/fhir+json\r\n"
                + self.extra)
        if body is not None:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = None
        chunked = False
        close = False
        for h in lines[1:]:
            k, _, v = h.partition(b":")
            k = k.strip().lower()
            if k == b"content-length":
                length = int(v)
            elif k == b"transfer-encoding" and b"chunked" in v.lower():
                chunked = True
            elif k == b"connection" and v.strip().lower() == b"close":
                close = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            data = b"".join(parts)
        elif length is not None:
            data = await self.reader.readexactly(length) if length else b""
        else:
            data = await self.reader.read()
            close = True
        if close:
            await self.close()
        return status, data


@dataclass
class LoadResult:
    requests: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    concurrency: int = 1
    loadavg: float | None = None  # 1-minute load average at the end (other work on the machine shows here)
    cpu: dict[str, Any] = field(default_factory=dict)  # bench.cpuload: cores used by us and by others

    def add(self, other: LoadResult) -> None:
        """Fold one slice of an interleaved measurement into this phase's totals."""
        self.requests += other.requests
        self.seconds += other.seconds
        self.latencies += other.latencies
        self.statuses.update(other.statuses)
        self.errors += other.errors

    def summary(self, per_request: int = 1) -> dict[str, Any]:
        ok = len(self.latencies)
        out: dict[str, Any] = {
            "requests": self.requests,
            "ok": ok,
            "seconds": round(self.seconds, 2),
            "concurrency": self.concurrency,
            "req_per_s": round(ok / self.seconds, 1) if self.seconds else 0.0,
        }
        if per_request != 1:
            out["resources_per_s"] = round(ok * per_request / self.seconds, 1) if self.seconds else 0.0
        if self.latencies:
            lat = sorted(self.latencies)
            out["p50_ms"] = round(_pct(lat, 50) * 1000, 2)
            out["p90_ms"] = round(_pct(lat, 90) * 1000, 2)
            out["p99_ms"] = round(_pct(lat, 99) * 1000, 2)
            out["max_ms"] = round(lat[-1] * 1000, 2)
            out["mean_ms"] = round(statistics.fmean(lat) * 1000, 2)
        out["statuses"] = {str(k): v for k, v in sorted(self.statuses.items())}
        if self.loadavg is not None:
            out["loadavg_1m"] = self.loadavg
        if self.cpu:
            out["cpu"] = self.cpu
        if self.errors:
            out["errors"] = len(self.errors)
            out["first_errors"] = self.errors[:3]
        return out


def _pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


async def _run(host: str, port: int, make: Callable[[int], Request], *, concurrency: int, seconds: float,
               max_requests: int, check: Check | None, expect: tuple[int, ...],
               reconnect_every: int, headers: Headers | None) -> LoadResult:
    res = LoadResult(concurrency=concurrency)
    counter = [0]
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        conn = HttpConnection(host, port, headers)
        mine = 0
        try:
            while counter[0] < max_requests and time.perf_counter() < deadline:
                n = counter[0]
                counter[0] += 1
                mine += 1
                if reconnect_every and mine % reconnect_every == 0:
                    await conn.close()  # see run_load: spreads connections over server worker processes
                method, path, body = make(n)
                t0 = time.perf_counter()
                try:
                    status, data = await conn.request(method, path, body)
                except (OSError, asyncio.IncompleteReadError, ValueError) as e:
                    res.requests += 1
                    res.errors.append(f"{method} {path[:80]}: {type(e).__name__}: {e}")
                    await conn.close()
                    continue
                dt = time.perf_counter() - t0
                res.requests += 1
                res.statuses[status] += 1
                err = None if status in expect else f"{method} {path[:80]}: HTTP {status}: {data[:200]!r}"
                if err is None and check is not None:
                    err = check(status, data)
                if err is None:
                    res.latencies.append(dt)
                else:
                    res.errors.append(err)
        finally:
            await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    res.seconds = time.perf_counter() - t0
    return res


def run_load(host: str, port: int, make: Callable[[int], Request], *, concurrency: int, seconds: float,
             max_requests: int = 10**9, check: Check | None = None,
             expect: tuple[int, ...] = (200, 201), reconnect_every: int = 100,
             headers: Headers | None = None) -> LoadResult:
    """Closed loop: ``concurrency`` clients until ``max_requests`` are sent or ``seconds`` pass.

    Each client opens a new connection every ``reconnect_every`` requests: with
    ``--workers N`` the kernel hands each new connection to one worker process,
    and 16 connections opened at once split unevenly (11/5 was seen) and stay
    so for ever with keep-alive; reconnecting lets them drift to the less busy
    worker.  The cost, one loopback connect per 100 requests, is negligible.
    """
    coro = _run(host, port, make, concurrency=concurrency, seconds=seconds, max_requests=max_requests,
                check=check, expect=expect, reconnect_every=reconnect_every, headers=headers)
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def get(host: str, port: int, path: str, timeout: float = 60.0,
        headers: Headers | None = None) -> tuple[int, bytes]:
    async def go() -> tuple[int, bytes]:
        c = HttpConnection(host, port, headers)
        try:
            return await asyncio.wait_for(c.request("GET", path), timeout)
        finally:
            await c.close()

    return asyncio.run(go())
