"""Shared pieces of the test harness, importable by test modules (conftest is not)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from pgcluster import free_port

from hutong.config import Settings
from hutong.fhir.assembly import open_repository
from hutong.store.sql import SqlRepository
from hutong.web.app import create_app

# One TLS context for every client the harness makes: httpx builds one per Client
# otherwise, loading certifi's CA bundle each time (~40 ms a client; these clients
# speak plain HTTP to loopback, and would verify a certificate the same way).
TLS = httpx.create_ssl_context()

# ../shared beside the checkout (as CI lays it out), or HUTONG_SHARED_DIR.
SHARED = Path(os.environ.get("HUTONG_SHARED_DIR") or Path(__file__).resolve().parents[1].parent / "shared")
SYNTHEA = SHARED / "data" / "synthea-10"


@dataclass
class Server:
    url: str  # base of the FHIR API, e.g. http://127.0.0.1:PORT/fhir
    root: str
    client: httpx.Client  # signed in as the platform's integration engine (system/*.cruds)
    repo: SqlRepository
    app: Any = None  # the HutongApp (app.platform: its authenticator, audit log, SMS outbox, ...)

    def token(self, account: Any, scopes: str | None = None) -> str:
        """A real access token for an account (hutong.security.tokens), as the
        token endpoint would issue it after sign-in."""
        tokens = self.app.platform.authenticator.tokens
        return str(tokens.issue(account, scopes if scopes is not None else account.scopes)["access_token"])

    def as_(self, account: Any, scopes: str | None = None) -> httpx.Client:
        """A client acting as ``account`` (close it, or use it in a with block)."""
        return httpx.Client(base_url=self.url, timeout=30, verify=TLS, headers={
            "content-type": "application/fhir+json", "accept": "application/fhir+json",
            "authorization": f"Bearer {self.token(account, scopes)}"})

    @property
    def accounts(self) -> Any:
        return self.app.platform.auth.accounts


class _TestServer(uvicorn.Server):
    """uvicorn's server, stopped on request instead of after fixed waits.

    uvicorn notices ``should_exit`` at its next 0.1 s tick, then sleeps 0.1 s
    after asking the connections to close and polls every 0.1 s until they
    have: ~160 ms for every served test.  Here :meth:`stop` wakes the tick, and
    the shutdown polls for the same conditions (no connection, no task left)
    every 5 ms; nothing else changes (requests are served by uvicorn as before).
    """

    _wake: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)  # uvicorn: asyncio.sleep(0.1)
            should_exit = await self.on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        while self.server_state.connections or self.server_state.tasks:
            await asyncio.sleep(0.005)
        for server in self.servers:
            await server.wait_closed()
        await self.lifespan.shutdown()

    def stop(self) -> None:
        self.should_exit = True
        if self._loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                self._loop.call_soon_threadsafe(self._wake.set)


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port in a thread;
    yields its root URL and stops it afterwards (every test goes through real HTTP)."""
    port = free_port()
    srv = _TestServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                                     lifespan="off"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline or not th.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.stop()
        th.join(10)


def serve_app(db_url: str, **settings: object) -> Iterator[Server]:
    """The whole app on ``db_url``, served on a loopback port, with a platform client
    (the ``server`` fixture; test modules with settings of their own call it too)."""
    repo = open_repository(db_url)
    app = create_app(Settings(database_url=db_url, **settings), repo=repo)  # type: ignore[arg-type]
    stack = ExitStack()
    root = stack.enter_context(serving(app))
    # The suite's default caller is the region's integration engine (a platform
    # client with system/*.cruds): it passes the gate, policy and audit like
    # everyone else.  Security tests make their own callers (Server.as_).
    tokens = app.platform.authenticator.tokens
    engine, _secret = tokens.accounts.add_client(
        "test harness", organization=None, organization_id=None, scopes_text="system/*.cruds", platform=True)
    token = tokens.issue(engine, "system/*.cruds")["access_token"]
    client = httpx.Client(base_url=root + "/fhir", timeout=30, verify=TLS,
                          headers={"content-type": "application/fhir+json", "accept": "application/fhir+json",
                                   "authorization": f"Bearer {token}"})
    try:
        yield Server(root + "/fhir", root, client, repo, app)
    finally:
        client.close()
        stack.close()
        repo.db.close()
