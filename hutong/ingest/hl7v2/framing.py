"""MLLP framing (HL7 v2.5.1 ch. 1 Appendix C, "MLLP Release 2").

A message travels as ``<VT> payload <FS><CR>``: start block 0x0B, end block
0x1C 0x0D.  The decoder is incremental and transport-free: the listener feeds
it whatever ``read()`` returned (any chunking, several frames per chunk) and
gets back complete frames and framing errors, in order.  What it does with
bytes outside a frame, a frame cut short by a new start block, or a frame
larger than the limit is decided here, once, so the listener only reports.

``send_messages`` / ``send_pipelined`` are a small MLLP client for tests and
benchmarks (one connection; each message is answered by one ACK frame, in
order, as MLLP requires).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

START = b"\x0b"
END = b"\x1c\x0d"
_START = 0x0B
_FS = b"\x1c"
# Bytes a sender may put between frames (line ends, padding) without it being
# an error: MLLP forbids them, but some HIS interfaces send CR LF after <FS><CR>.
_BETWEEN_FRAMES_OK = b" \t\r\n"


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete MLLP frame's payload (start and end blocks removed)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class FrameError:
    """Bytes that are not a complete frame, and why (reported to the sender, never parsed)."""

    reason: str
    raw: bytes


def frame(payload: bytes) -> bytes:
    """Wrap one message in MLLP start and end blocks."""
    return START + payload + END


class FrameDecoder:
    """Incremental MLLP decoder: ``feed`` bytes as they arrive, get frames and errors back.

    - bytes before a start block (other than whitespace): ``"data outside a frame"``;
    - a start block inside an unfinished frame: ``"new frame before end of previous"``
      for the cut-short frame, and the new frame goes on;
    - a frame growing past ``max_frame`` bytes: ``"frame exceeds N bytes"``, and
      everything up to the next start block is dropped.

    ``pending()`` is the unfinished frame's payload so far, for the listener to
    report when the peer closes mid-frame.
    """

    def __init__(self, max_frame: int = 1_048_576) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()  # payload of the current frame so far (inside) or nothing
        self._inside = False
        self._discarding = False
        self._scanned = 0  # bytes of _buf already searched for END / START

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        out: list[Frame | FrameError] = []
        view = memoryview(data)
        pos = 0
        n = len(data)
        while pos < n:
            if self._discarding:
                start = data.find(START, pos)
                if start < 0:
                    return out
                self._discarding = False
                self._inside = True
                pos = start + 1
            elif not self._inside:
                start = data.find(START, pos)
                stray = view[pos:] if start < 0 else view[pos:start]
                if stray and bytes(stray).strip(_BETWEEN_FRAMES_OK):
                    out.append(FrameError("data outside a frame", bytes(stray)))
                if start < 0:
                    return out
                self._inside = True
                pos = start + 1
            else:
                pos = self._collect(data, pos, out)
        return out

    def _collect(self, data: bytes, pos: int, out: list[Frame | FrameError]) -> int:
        """Add ``data[pos:]`` to the current frame; emit what completes; return the next position."""
        buf = self._buf
        # Search only the new bytes (plus one: an END split across two chunks).
        from_ = max(self._scanned - 1, 0)
        buf += data[pos:]
        end = buf.find(END, from_)
        start = buf.find(START, from_)
        if start >= 0 and (end < 0 or start < end):
            consumed = len(data) - (len(buf) - start) + 1  # position after that START in data
            out.append(FrameError("new frame before end of previous", bytes(buf[:start])))
            self._reset(inside=True)
            return consumed
        if end >= 0:
            consumed = len(data) - (len(buf) - end) + len(END)
            if end > self.max_frame:
                out.append(FrameError(f"frame exceeds {self.max_frame} bytes", bytes(buf[:end])))
            else:
                out.append(Frame(bytes(buf[:end])))
            self._reset(inside=False)
            return consumed
        if len(buf) > self.max_frame + len(END):
            out.append(FrameError(f"frame exceeds {self.max_frame} bytes", bytes(buf)))
            self._reset(inside=False)
            self._discarding = True
            return len(data)
        self._scanned = len(buf)
        return len(data)

    def _reset(self, *, inside: bool) -> None:
        self._buf = bytearray()
        self._scanned = 0
        self._inside = inside

    def pending(self) -> bytes:
        """The payload of a frame that has started and not ended (empty when between frames)."""
        return bytes(self._buf) if self._inside else b""


async def _read_frame(reader: asyncio.StreamReader, decoder: FrameDecoder, queue: list[Frame | FrameError]) -> bytes:
    while not queue:
        data = await reader.read(65536)
        if not data:
            tail = decoder.pending()
            raise ConnectionError("connection closed before an ACK" + (" (truncated frame)" if tail else ""))
        queue.extend(decoder.feed(data))
    item = queue.pop(0)
    if isinstance(item, FrameError):
        raise ConnectionError(f"bad MLLP frame from the server: {item.reason}")
    return item.payload


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass


async def send_messages(host: str, port: int, payloads: list[bytes], *, timeout: float = 10) -> list[bytes]:
    """Send each payload framed on one connection, waiting for its ACK; return the ACK payloads."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    decoder = FrameDecoder()
    queue: list[Frame | FrameError] = []
    acks: list[bytes] = []
    try:
        for p in payloads:
            writer.write(frame(p))
            await writer.drain()
            acks.append(await asyncio.wait_for(_read_frame(reader, decoder, queue), timeout))
    finally:
        await _close(writer)
    return acks


async def send_pipelined(host: str, port: int, payloads: list[bytes], window: int = 32, *,
                         timeout: float = 10) -> list[bytes]:
    """Like ``send_messages`` but with up to ``window`` messages sent ahead of their ACKs.

    MLLP answers in order on a connection, so the i-th ACK belongs to the i-th message.
    """
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    decoder = FrameDecoder()
    queue: list[Frame | FrameError] = []
    acks: list[bytes] = []
    slots = asyncio.Semaphore(max(window, 1))

    async def send() -> None:
        for p in payloads:
            await slots.acquire()
            writer.write(frame(p))
            await writer.drain()

    async def receive() -> None:
        while len(acks) < len(payloads):
            acks.append(await asyncio.wait_for(_read_frame(reader, decoder, queue), timeout))
            slots.release()

    try:
        sender = asyncio.ensure_future(send())
        try:
            await receive()
        finally:
            if not sender.done():
                sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    finally:
        await _close(writer)
    return acks
