"""How a simulated hospital reaches the platform: MLLP for HL7 v2, HTTP for CDA.

Only the wire, as any HIS vendor's interface engine would: one MLLP
connection per institution (HL7 v2.x Appendix C: framing, one ACK per
message, in order), and ``POST /ingest/cda`` with the institution's own
OAuth2 client token (RFC 6749 section 4.4 client credentials).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import httpx

from hutong.errors import InvalidRequest
from hutong.ingest.hl7v2.framing import Frame, FrameDecoder, frame


class Mllp:
    """A persistent MLLP connection (reopened after an error)."""

    def __init__(self, host: str, port: int, timeout: float = 30) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._sock: socket.socket | None = None
        self._decoder = FrameDecoder()

    def send(self, payload: bytes) -> bytes:
        """The ACK of one message; raises OSError when the connection fails."""
        try:
            return self._send(payload)
        except OSError:
            self.close()
            raise

    def _send(self, payload: bytes) -> bytes:
        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self._decoder = FrameDecoder()
        self._sock.sendall(frame(payload))
        while True:
            data = self._sock.recv(65536)
            if not data:
                raise ConnectionError("the platform closed the MLLP connection before its ACK")
            for item in self._decoder.feed(data):
                if isinstance(item, Frame):
                    return item.payload
                raise ConnectionError(f"bad MLLP frame from the platform: {item.reason}")

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    client_id: str
    client_secret: str


class CdaPoster:
    """POSTs CDA documents as one institution's system client."""

    def __init__(self, http: httpx.Client, creds: ClientCredentials) -> None:
        self.http, self.creds = http, creds
        self._token: str | None = None
        self._expires = 0.0

    def _bearer(self) -> str:
        if self._token is None or time.monotonic() > self._expires:
            try:
                r = self.http.post("/auth/token", data={"grant_type": "client_credentials"},
                                   auth=(self.creds.client_id, self.creds.client_secret))
            except httpx.HTTPError as e:
                raise ConnectionError(f"POST /auth/token failed: {type(e).__name__}") from None
            if r.status_code != 200:
                raise InvalidRequest("HT-0402", f"the platform refused the institution's client credentials "
                                                f"(HTTP {r.status_code})")
            body = r.json()
            self._token = str(body["access_token"])
            self._expires = time.monotonic() + max(float(body.get("expires_in", 300)) - 30, 10)
        return self._token

    def post(self, xml: bytes) -> int:
        """HTTP status of one document (201 stored, 200 already stored, 422/409 dead letter, 403 refused)."""
        for attempt in (0, 1):
            try:
                r = self.http.post("/ingest/cda", content=xml, headers={
                    "content-type": "application/hl7-cda+xml", "authorization": f"Bearer {self._bearer()}"})
            except httpx.HTTPError as e:
                raise ConnectionError(f"POST /ingest/cda failed: {type(e).__name__}") from None
            if r.status_code == 401 and attempt == 0:
                self._token = None  # expired early (a restarted platform): one fresh token
                continue
            return r.status_code
        return 401
