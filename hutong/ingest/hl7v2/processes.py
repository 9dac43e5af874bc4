"""Helper processes behind one MLLP port (issue 17: HL7 v2 on every core).

One Python process parses, maps, validates and runs the store's write hooks
on one core (the GIL), however many threads it has.  :func:`start` runs the
listener in this process and ``processes - 1`` helper processes (spawned,
never forked: the parent has threads and database connections).  The
listener accepts every connection and hands each new one, before its TLS
handshake, round robin to itself or a ready helper (``SCM_RIGHTS`` over a
socket pair, :func:`socket.send_fds`); that process then serves the
connection whole: handshake, sender identification, every message and ACK.
So the port is bound once (a port in use still fails at start), a helper
not yet started or gone is skipped, and every guarantee of
hutong.ingest.hl7v2.listener holds per message in whichever process serves
it: each builds its own ingestor, database pool and audit log with ``build``.

A helper ends when the listener's end of its socket pair closes (the parent
stopped or was killed, even with SIGKILL): it stops taking connections,
finishes the messages it has in hand (each is acknowledged only after its
commit, so a sender never loses an acknowledged message) and exits.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import multiprocessing
import signal
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hutong.ingest.hl7v2.listener import Identify, ListenerThread, MllpListener, unauthenticated
from hutong.ingest.pipeline import Ingestor

log = logging.getLogger("hutong.mllp")
READY = b"R"         # helper -> listener: serving
CONNECTION = b"C"    # listener -> helper: a connection (its descriptor rides along)
STOP_WAIT_S = 10.0   # a stopping helper's time to finish the messages in hand


@dataclass(frozen=True, slots=True)
class Served:
    """What one listener process serves with, built in that process."""

    ingestor: Ingestor
    tls: ssl.SSLContext | None = None
    identify: Identify = unauthenticated


# Builds a process's Served from picklable arguments; a module-level function
# (a spawned helper imports it by name).
Build = Callable[..., Served]


class HelperProcess:
    """The listener's side of one helper process."""

    def __init__(self, build: Build, args: tuple[Any, ...], listener_kw: dict[str, Any], name: str) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ctx = multiprocessing.get_context("spawn")
        self.proc = ctx.Process(target=_helper_main, args=(build, args, theirs, listener_kw), name=name,
                                daemon=True)
        self.proc.start()
        theirs.close()
        self.chan = ours
        self._ready = threading.Event()
        self._gone = threading.Event()
        self._send = threading.Lock()
        threading.Thread(target=self._watch, name=f"{name}-watch", daemon=True).start()

    def _watch(self) -> None:
        try:
            while True:
                b = self.chan.recv(1)
                if not b:
                    break
                if b == READY:
                    self._ready.set()
                    log.info("MLLP helper process %d serving", self.proc.pid)
        except OSError:
            pass
        self._gone.set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and not self._gone.is_set()

    def hand_over(self, sock: socket.socket) -> bool:
        try:
            with self._send:
                socket.send_fds(self.chan, [CONNECTION], [sock.fileno()])
            return True
        except OSError:
            self._gone.set()
            return False

    def stop(self, wait: float = STOP_WAIT_S) -> None:
        """Close our end (the helper finishes what it has and exits), then wait for it."""
        try:
            self.chan.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.chan.close()
        self.proc.join(wait)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(wait)


def _helper_main(build: Build, args: tuple[Any, ...], chan: socket.socket, listener_kw: dict[str, Any]) -> None:
    """A helper process: serve the connections the listener hands over until it goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the parent's to handle
    served = build(*args)
    listener = MllpListener(served.ingestor, tls=served.tls, identify=served.identify, **listener_kw)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    tasks: set[asyncio.Task[None]] = set()

    def serve(sock: socket.socket) -> None:
        task = loop.create_task(listener.accept_socket(sock))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def receive() -> None:
        try:
            while True:
                msg, fds, _flags, _addr = socket.recv_fds(chan, 1, 4)
                if not msg:
                    break
                for fd in fds:
                    loop.call_soon_threadsafe(serve, socket.socket(fileno=fd))
        except OSError:
            pass
        loop.call_soon_threadsafe(loop.stop)

    threading.Thread(target=receive, name="mllp-handover", daemon=True).start()
    chan.sendall(READY)
    try:
        loop.run_forever()
        # The listener is gone: finish the messages in hand (each ACK after its commit), then close.
        loop.run_until_complete(listener.close())
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
        chan.close()


def start(build: Build, args: tuple[Any, ...], host: str, port: int, *, processes: int = 1,
          **listener_kw: Any) -> ListenerThread:
    """The listener on ``host:port`` in this process (beside uvicorn) with
    ``processes - 1`` helper processes; returns once the port is bound."""
    served = build(*args)
    helpers = [HelperProcess(build, args, listener_kw, f"mllp-{n}") for n in range(1, max(1, processes))]

    def stop_helpers() -> None:
        for h in helpers:
            h.stop()

    # Before multiprocessing's own exit hook terminates them (atexit runs last-registered first).
    atexit.register(stop_helpers)
    listener = MllpListener(served.ingestor, tls=served.tls, identify=served.identify, helpers=list(helpers),
                            **listener_kw)
    try:
        return ListenerThread(listener, host, port).start()
    except BaseException:
        stop_helpers()
        raise
