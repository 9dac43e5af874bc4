"""The SMS gateway seam: how a resident's one-time sign-in code leaves the platform.

A region plugs in its operator's gateway by implementing :class:`SmsGateway`.
The one gateway shipped is :class:`OutboxGateway`, for development and tests:
it appends the message to a local JSON-lines file (mode 0600) that a
developer reads.  It does not pretend to have sent anything: its result says
``outbox``, and nothing in the platform reports such a message as delivered.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Protocol

import orjson


class SmsGateway(Protocol):
    def send(self, phone: str, text: str) -> str:
        """Hand ``text`` to the gateway for ``phone``; returns the gateway's
        disposition (e.g. ``outbox`` or a carrier message id).  Raises on failure."""
        ...


class OutboxGateway:
    """Writes each message as one JSON line ``{"time_ms", "to", "text", "status": "outbox"}``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def send(self, phone: str, text: str) -> str:
        import time

        line = orjson.dumps({"time_ms": time.time_ns() // 1_000_000, "to": phone, "text": text,
                             "status": "outbox"}) + b"\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            # The file holds live sign-in codes: readable by the platform's user only.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        return "outbox"

    def messages(self) -> list[dict[str, object]]:
        """Every message written so far (for developers and tests)."""
        if not self.path.exists():
            return []
        return [orjson.loads(line) for line in self.path.read_bytes().splitlines() if line.strip()]
