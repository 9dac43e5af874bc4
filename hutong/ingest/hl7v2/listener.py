"""The MLLP listener: asyncio transport only (framing in ``framing``, the rest
in hutong.ingest.pipeline).

Each connection is served in order (HL7 original acknowledgement mode: the
sender waits for each ACK); connections are independent, so one stuck or
malicious peer never holds up another.  The blocking work (parse, map,
store) runs in a thread pool; on SQLite concurrent connections share commits
(group commit).

Back-pressure (issue 17): at most ``max_in_flight`` messages (default: the
pool's threads) are handed to the pool at once, over all connections.  A
connection whose next message finds no slot waits for one and meanwhile reads
nothing more: its bytes stay in asyncio's bounded buffer (reading pauses
past twice the stream limit) and then in the kernel's, so a sender faster
than the store is slowed by TCP flow control instead of filling the
listener's memory with queued work.  Nothing is acknowledged before its
commit, so a sender that gives up loses nothing it was told was stored.  A frame error gets a NAK and its bytes are kept as a dead
letter; an exception never reaches the event loop (the listener keeps
serving).

Sender authentication happens per connection, before any message is read:
with a TLS context the handshake demands a client certificate the
operator's CA issued (a peer speaking plain TCP, or presenting no or another
CA's certificate, is dropped by the handshake), and ``identify`` (from
hutong.security.senders) turns the certificate or the peer address into a
:class:`~hutong.ingest.hl7v2.connection.Connection` that every message on
that connection is checked against.

Several processes (issue 17): one process runs parse, map, validate, the
policy and the store's hooks on one core (the GIL), so with ``helpers`` (see
hutong.ingest.hl7v2.processes) this listener accepts every connection itself
and hands each new one, before its TLS handshake, round robin to itself or
to a helper process that serves it whole (handshake, messages, ACKs).  Each
process has its own database connections and commits (on SQLite they queue
on the one write lock, on PostgreSQL they run side by side); every guarantee
above holds per message whichever process serves it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from hutong.ingest.envelope import HL7V2, Envelope
from hutong.ingest.hl7v2.ack import for_receipt
from hutong.ingest.hl7v2.connection import Connection
from hutong.ingest.hl7v2.framing import Frame, FrameDecoder, frame
from hutong.ingest.pipeline import Ingestor

log = logging.getLogger("hutong.mllp")
READ_CHUNK = 65536
TLS_HANDSHAKE_TIMEOUT = 30.0
BACKLOG = 100  # asyncio.start_server's default

# The peer address ("host:port") and, over TLS, the verified session -> who the connection is.
Identify = Callable[[str, "ssl.SSLObject | None"], Connection]


def unauthenticated(peer: str, _tls: ssl.SSLObject | None) -> Connection:
    return Connection(peer)


class Helper(Protocol):
    """Another process serving connections this listener accepted (hutong.ingest.hl7v2.processes)."""

    @property
    def ready(self) -> bool: ...

    def hand_over(self, sock: socket.socket) -> bool:
        """Send the accepted socket to the helper; False if it could not take it."""
        ...

    def stop(self) -> None:
        """Let it finish the messages in hand and end."""
        ...


class MllpListener:
    def __init__(self, ingestor: Ingestor, *, max_frame: int = 1_048_576, idle_timeout: float = 600.0,
                 threads: int = 8, tls: ssl.SSLContext | None = None, identify: Identify = unauthenticated,
                 max_in_flight: int | None = None, helpers: list[Helper] | None = None) -> None:
        self.ingestor = ingestor
        self.helpers = list(helpers or [])
        self._turn = 0
        self._accepting: list[asyncio.Task[None]] = []
        self._handshakes: set[asyncio.Task[None]] = set()
        self.tls = tls
        self.identify = identify
        self.max_frame = max_frame
        self.idle_timeout = idle_timeout
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mllp")
        # Slots for messages in the pool; waiting for one, a connection stops reading.
        self.slots = asyncio.Semaphore(max(1, max_in_flight if max_in_flight is not None else threads))
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> asyncio.Server:
        if self.helpers:
            # Bound here (a port in use fails here), accepted by our own loop below.
            loop = asyncio.get_running_loop()
            self.server = await loop.create_server(asyncio.Protocol, host, port, start_serving=False)
            for ts in self.server.sockets:
                sock = socket.socket(fileno=os.dup(ts.fileno()))
                sock.listen(BACKLOG)  # create_server listens only once serving starts
                sock.setblocking(False)
                self._accepting.append(loop.create_task(self._accept_loop(sock)))
            return self.server
        if self.tls is not None:
            self.server = await asyncio.start_server(self._serve, host, port, limit=READ_CHUNK * 4, ssl=self.tls,
                                                     ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        else:
            self.server = await asyncio.start_server(self._serve, host, port, limit=READ_CHUNK * 4)
        return self.server

    async def _accept_loop(self, sock: socket.socket) -> None:
        """Accept connections and deal them round robin over this process and the ready helpers."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    conn, _addr = await loop.sock_accept(sock)
                except OSError as e:  # EMFILE and the like: the next accept may succeed
                    log.error("MLLP accept failed: %s (errno %s)", type(e).__name__, e.errno)
                    await asyncio.sleep(0.1)
                    continue
                ready = [h for h in self.helpers if h.ready]
                self._turn = (self._turn + 1) % (len(ready) + 1)
                if self._turn and ready[self._turn - 1].hand_over(conn):
                    conn.close()  # the helper holds its own descriptor now
                    continue
                # Its own task: a slow TLS handshake must not hold up the next accept.
                task = loop.create_task(self.accept_socket(conn))
                self._handshakes.add(task)
                task.add_done_callback(self._handshakes.discard)
        finally:
            sock.close()

    async def accept_socket(self, sock: socket.socket) -> None:
        """Serve a connection accepted elsewhere (by this listener's accept loop, or by
        another process's, handed over before the TLS handshake)."""
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        reader = asyncio.StreamReader(limit=READ_CHUNK * 4, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, self._serve, loop=loop)
        try:
            if self.tls is not None:
                await loop.connect_accepted_socket(lambda: protocol, sock, ssl=self.tls,
                                                   ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
            else:
                await loop.connect_accepted_socket(lambda: protocol, sock)
        except (OSError, ssl.SSLError, TimeoutError) as e:  # the handshake failed: the peer is dropped
            log.info("MLLP connection not accepted: %s", type(e).__name__)
            sock.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        addr = writer.get_extra_info("peername")
        peer = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) and len(addr) >= 2 else "unknown"
        loop = asyncio.get_running_loop()
        decoder = FrameDecoder(self.max_frame)
        try:
            conn = self.identify(peer, writer.get_extra_info("ssl_object"))
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(READ_CHUNK), timeout=self.idle_timeout)
                except TimeoutError:
                    break
                if not data:
                    break
                for item in decoder.feed(data):
                    async with self.slots:
                        if isinstance(item, Frame):
                            reply = await loop.run_in_executor(self.pool, self._hl7, item.payload, conn)
                        else:
                            reply = await loop.run_in_executor(self.pool, self._frame_error, item.raw,
                                                               item.reason, conn)
                    writer.write(frame(reply))
                    await writer.drain()
            tail = decoder.pending()
            if tail:
                # The peer hung up mid-frame: nobody to NAK, but the bytes are kept.
                await loop.run_in_executor(self.pool, self._frame_error, tail,
                                           "truncated frame: connection closed before the end block", conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception as e:  # never let one connection take the listener down
            log.error("MLLP connection failed: %s", type(e).__name__)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    def _hl7(self, payload: bytes, conn: Connection) -> bytes:
        """One frame's message -> envelope -> receipt -> ACK (after the commit)."""
        ing = self.ingestor
        envelope = Envelope(HL7V2, payload, ing.clock(), conn.peer, conn.as_credential())
        return for_receipt(ing.receive(envelope, ing.connection_authority(conn)))

    def _frame_error(self, raw: bytes, reason: str, conn: Connection) -> bytes:
        return for_receipt(self.ingestor.frame_error(raw, reason, conn.peer, conn))

    async def close(self) -> None:
        for task in self._accepting:
            task.cancel()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        self.pool.shutdown(wait=True)
        for h in self.helpers:
            h.stop()


class ListenerThread:
    """A listener on its own event loop in a daemon thread (beside uvicorn)."""

    def __init__(self, listener: MllpListener, host: str, port: int) -> None:
        self.listener = listener
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._failure: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(host, port), name="mllp-listener", daemon=True)

    def _run(self, host: str, port: int) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.listener.start(host, port))
        except BaseException as e:
            self._failure.append(e)
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        # Stopped: close the server and every connection, then the loop.
        self.loop.run_until_complete(self.listener.close())
        for task in asyncio.all_tasks(self.loop):
            task.cancel()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()

    def start(self) -> ListenerThread:
        self.thread.start()
        self._ready.wait()
        if self._failure:
            self.loop.close()
            raise self._failure[0]
        return self

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=30)


def start_in_thread(ingestor: Ingestor, host: str, port: int, **kw: object) -> ListenerThread:
    """Start listening; returns once the socket is bound (a port in use raises here)."""
    return ListenerThread(MllpListener(ingestor, **kw), host, port).start()  # type: ignore[arg-type]
