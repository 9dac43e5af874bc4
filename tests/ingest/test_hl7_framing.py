"""MLLP framing: the incremental decoder and the client, over a real socket."""

from __future__ import annotations

import asyncio

import pytest

from hutong.ingest.hl7v2.framing import (
    END,
    START,
    Frame,
    FrameDecoder,
    FrameError,
    frame,
    send_messages,
    send_pipelined,
)

A = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|||1"
B = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A08|2|P|2.5\rPID|||2"


def test_frame_wraps_in_start_and_end_blocks() -> None:
    assert START == b"\x0b" and END == b"\x1c\x0d"
    assert frame(b"abc") == b"\x0babc\x1c\x0d"


def test_one_frame_in_one_chunk() -> None:
    assert FrameDecoder().feed(frame(A)) == [Frame(A)]


def test_several_frames_in_one_chunk() -> None:
    assert FrameDecoder().feed(frame(A) + frame(B) + frame(A)) == [Frame(A), Frame(B), Frame(A)]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_any_chunking_gives_the_same_frames(size: int) -> None:
    stream = frame(A) + frame(B) + frame("张三".encode("gb18030"))
    d = FrameDecoder()
    out = []
    for i in range(0, len(stream), size):
        out += d.feed(stream[i:i + size])
    assert out == [Frame(A), Frame(B), Frame("张三".encode("gb18030"))]
    assert d.pending() == b""


def test_end_block_split_between_chunks() -> None:
    d = FrameDecoder()
    assert d.feed(START + A + b"\x1c") == []
    assert d.feed(b"\x0d" + START + B) == [Frame(A)]
    assert d.pending() == B


def test_a_lone_fs_inside_the_payload_is_data() -> None:
    assert FrameDecoder().feed(START + b"a\x1cb" + END) == [Frame(b"a\x1cb")]


def test_bytes_before_a_start_block_are_reported() -> None:
    out = FrameDecoder().feed(b"garbage" + frame(A))
    assert out == [FrameError("data outside a frame", b"garbage"), Frame(A)]


def test_garbage_between_frames_and_after() -> None:
    d = FrameDecoder()
    out = d.feed(frame(A) + b"xx" + frame(B) + b"tail")
    assert out == [Frame(A), FrameError("data outside a frame", b"xx"), Frame(B),
                   FrameError("data outside a frame", b"tail")]


def test_line_ends_between_frames_are_tolerated() -> None:
    assert FrameDecoder().feed(frame(A) + b"\r\n" + frame(B) + b"\n") == [Frame(A), Frame(B)]


def test_start_block_inside_a_frame_cuts_the_previous_one() -> None:
    d = FrameDecoder()
    out = d.feed(START + b"half a message" + frame(B))
    assert out == [FrameError("new frame before end of previous", b"half a message"), Frame(B)]


def test_truncated_frame_is_pending_when_the_peer_closes() -> None:
    d = FrameDecoder()
    assert d.feed(frame(A) + START + B[:10]) == [Frame(A)]
    assert d.pending() == B[:10]
    assert d.feed(B[10:20]) == []
    assert d.pending() == B[:20]


def test_oversize_frame_is_dropped_up_to_the_next_start_block() -> None:
    d = FrameDecoder(max_frame=10)
    out = d.feed(START + b"x" * 8)
    assert out == []
    out = d.feed(b"y" * 8)
    assert out == [FrameError("frame exceeds 10 bytes", b"x" * 8 + b"y" * 8)]
    assert d.pending() == b""
    # the rest of the oversize frame, its end block included, is dropped silently
    assert d.feed(b"z" * 100 + END + b"more") == []
    assert d.feed(frame(b"small")) == [Frame(b"small")]


def test_oversize_frame_complete_in_one_chunk() -> None:
    d = FrameDecoder(max_frame=4)
    assert d.feed(frame(b"12345") + frame(b"1234")) == [FrameError("frame exceeds 4 bytes", b"12345"),
                                                        Frame(b"1234")]


async def _ack_server(received: list[bytes]) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        d = FrameDecoder()
        while data := await reader.read(4096):
            for item in d.feed(data):
                assert isinstance(item, Frame)
                received.append(item.payload)
                writer.write(frame(b"MSA|AA|" + item.payload.split(b"|")[9]))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_send_messages_over_a_real_socket() -> None:
    async def run() -> tuple[list[bytes], list[bytes]]:
        received: list[bytes] = []
        server, port = await _ack_server(received)
        async with server:
            acks = await send_messages("127.0.0.1", port, [A, B], timeout=5)
        return acks, received

    acks, received = asyncio.run(run())
    assert received == [A, B]
    assert acks == [b"MSA|AA|1", b"MSA|AA|2"]


def test_send_pipelined_keeps_order() -> None:
    msgs = [A.replace(b"|1|P|", f"|{i}|P|".encode()) for i in range(100)]

    async def run() -> list[bytes]:
        received: list[bytes] = []
        server, port = await _ack_server(received)
        async with server:
            return await send_pipelined("127.0.0.1", port, msgs, window=8, timeout=5)

    acks = asyncio.run(run())
    assert acks == [f"MSA|AA|{i}".encode() for i in range(100)]


def test_client_reports_a_server_that_closes_without_ack() -> None:
    async def run() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(10)
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        async with server:
            await send_messages("127.0.0.1", server.sockets[0].getsockname()[1], [A], timeout=5)

    with pytest.raises(ConnectionError, match="closed before an ACK"):
        asyncio.run(run())
