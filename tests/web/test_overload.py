"""A full server answers 503 with Retry-After at once instead of letting
requests wait until they time out (issue 17, "Bad input and races"), on SQLite
and PostgreSQL; nothing acknowledged is lost and nothing refused is stored.

The store is held busy by a real write transaction (on SQLite it holds the
database's write lock; on PostgreSQL the locks of the requests' conditional
creates, hutong.store.sql.SqlWriter.lock_key), so the first requests stay in
flight for as long as the test wants, and HUTONG_MAX_IN_FLIGHT is 2.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from harness import Server, serve_app

from hutong.config import Settings
from hutong.errors import ConfigError
from hutong.store.repository import Writer

SYSTEM = "urn:oid:2.16.156.10011.1.99.560"
SENDERS = 12
LIMIT = 2


@pytest.fixture
def busy_server(db_url: str) -> Iterator[Server]:
    yield from serve_app(db_url, max_in_flight=LIMIT)


def _criteria(i: int) -> str:
    return urlencode([("identifier", f"{SYSTEM}|OVL{i:03d}")])


class Held:
    """A write transaction that holds the store until released."""

    def __init__(self, server: Server) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

        def hold(w: Writer) -> None:
            for i in range(SENDERS + 1):  # the conditional creates' locks (PostgreSQL: advisory locks)
                w.lock_key("Patient?" + _criteria(i))
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


def _create(server: Server, i: int) -> tuple[int, dict[str, str], dict[str, Any], float]:
    body = {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": f"OVL{i:03d}"}],
            "name": [{"family": "孙", "given": [f"负载{i}"]}]}
    t0 = time.monotonic()
    with httpx.Client(base_url=server.url, timeout=30, headers=dict(server.client.headers)) as c:
        r = c.post("/Patient", content=json.dumps(body), headers={"if-none-exist": _criteria(i)})
    return r.status_code, dict(r.headers), r.json(), time.monotonic() - t0


def _stored(server: Server, i: int) -> int:
    r = server.client.get("/Patient", params={"identifier": f"{SYSTEM}|OVL{i:03d}"})
    assert r.status_code == 200, r.text
    return len(r.json().get("entry", []))


def test_a_full_server_answers_503_with_retry_after_at_once_and_loses_nothing(busy_server: Server) -> None:
    server = busy_server
    results: dict[int, Any] = {}

    def send(i: int) -> None:
        try:
            results[i] = _create(server, i)
        except BaseException as e:  # a timeout is a failure of the test, reported below
            results[i] = e

    threads = [threading.Thread(target=send, args=(i,)) for i in range(SENDERS)]
    with Held(server):
        for t in threads:
            t.start()
        # While the store is held, every request beyond the limit is answered, and fast.
        deadline = time.monotonic() + 15
        while len(results) < SENDERS - LIMIT and time.monotonic() < deadline:
            time.sleep(0.01)
        answered_while_held = dict(results)
        # The server still answers its health check and a portal page says so in Chinese.
        assert httpx.get(server.root + "/healthz", timeout=5).status_code == 200
        page = httpx.get(server.root + "/", timeout=5)
        assert page.status_code == 503 and page.headers["retry-after"] == "1"
        assert "服务器繁忙" in page.text and page.headers["content-type"].startswith("text/html")
    for t in threads:
        t.join(60)
    assert len(answered_while_held) == SENDERS - LIMIT, answered_while_held
    for res in answered_while_held.values():
        assert not isinstance(res, BaseException), res
        status, headers, body, elapsed = res
        assert status == 503 and headers["retry-after"] == "1", (status, body)
        assert body["issue"][0]["details"]["coding"][0]["code"] == "HT-0560"
        assert body["issue"][0]["code"] == "transient" and elapsed < 10
    assert all(not isinstance(r, BaseException) for r in results.values()), results
    accepted = [i for i, r in results.items() if r[0] in (200, 201)]
    refused = [i for i, r in results.items() if r[0] == 503]
    assert len(accepted) == LIMIT and len(refused) == SENDERS - LIMIT, {i: r[0] for i, r in results.items()}
    # Every acknowledged create is stored; nothing refused was.
    assert [_stored(server, i) for i in accepted] == [1] * LIMIT
    assert [_stored(server, i) for i in refused] == [0] * len(refused)
    # Retried once the load has passed, the refused ones are stored.
    for i in refused:
        assert _create(server, i)[0] == 201
    assert [_stored(server, i) for i in range(SENDERS)] == [1] * SENDERS


def test_the_limit_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUTONG_MAX_IN_FLIGHT", "7")
    assert Settings.from_env("sqlite:///x.db").max_in_flight == 7
    monkeypatch.setenv("HUTONG_MAX_IN_FLIGHT", "-1")
    with pytest.raises(ConfigError) as e:
        Settings.from_env("sqlite:///x.db")
    assert e.value.code == "HT-0561"
