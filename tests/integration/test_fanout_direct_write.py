"""TornadoPort's direct write path over a real socket pair.

``TornadoPort.write`` calls ``socket.send`` itself while the IOStream has nothing
buffered and hands only the unsent rest to ``IOStream.write``. These tests fill
the kernel buffers so that a send is partial, and check that every byte still
arrives once and in order, that backpressure is visible (``buffered_bytes``,
``when_drained``), and that a dead peer closes the stream without raising.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from tornado.iostream import IOStream

from realtime_lab.protocol.frames import OP_CLOSE, OP_TEXT, build_frame, parse_frames
from realtime_lab.transports.tornado_port import PING_FRAME, TornadoPort, frame_end


class _Conn:
    def __init__(self) -> None:
        self.closing = False

    def is_closing(self) -> bool:
        return self.closing


class _Handler:
    """The two things TornadoPort uses from a WebSocketHandler."""

    def __init__(self) -> None:
        self.ws_connection = _Conn()
        self.pings = 0

    def ping(self, data: bytes) -> None:
        self.pings += 1


def _pair(buffer: int = 4096) -> tuple[Any, socket.socket, IOStream]:
    a, b = socket.socketpair()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
    a.setblocking(False)
    b.setblocking(False)
    stream = IOStream(a)
    port = TornadoPort(_Handler(), stream, "peer")  # type: ignore[arg-type]
    return port, b, stream


async def _read_all(sock: socket.socket, size: int, timeout: float = 10.0) -> bytes:
    loop = asyncio.get_running_loop()
    out = bytearray()
    async with asyncio.timeout(timeout):
        while len(out) < size:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                break
            out += chunk
    return bytes(out)


async def test_small_write_goes_straight_to_the_socket() -> None:
    port, peer, stream = _pair(buffer=65536)
    try:
        assert port.direct
        port.write(b"hello")
        assert port.buffered_bytes() == 0  # nothing went through IOStream's buffer
        assert len(stream._write_futures) == 0  # and no Future was made for it
        assert await _read_all(peer, 5) == b"hello"
    finally:
        stream.close()
        peer.close()


async def test_partial_send_hands_the_rest_to_iostream_in_order() -> None:
    port, peer, stream = _pair()
    try:
        chunks = [bytes([65 + i]) * 300_000 for i in range(3)]
        port.write(chunks[0])  # far more than the socket buffers take
        backlog = port.buffered_bytes()
        assert 0 < backlog < len(chunks[0])  # part sent directly, the rest buffered
        port.write(chunks[1])  # the stream has a backlog: must queue behind it
        port.write(memoryview(chunks[2]))
        assert port.buffered_bytes() == backlog + len(chunks[1]) + len(chunks[2])
        drained = asyncio.Event()
        port.when_drained(drained.set)
        data = await _read_all(peer, sum(map(len, chunks)))
        assert data == b"".join(chunks)
        await asyncio.wait_for(drained.wait(), 5)
        assert port.buffered_bytes() == 0
        port.write(b"after")  # drained: direct again
        assert port.buffered_bytes() == 0
        assert await _read_all(peer, 5) == b"after"
    finally:
        stream.close()
        peer.close()


async def test_a_dead_peer_closes_the_stream_without_raising() -> None:
    port, peer, stream = _pair()
    closed = asyncio.Event()
    stream.set_close_callback(closed.set)
    peer.close()
    for _ in range(3):  # EPIPE / ECONNRESET: IOStream meets the error and closes
        port.write(b"x" * 10_000)
    await asyncio.wait_for(closed.wait(), 5)
    assert stream.closed()
    port.write(b"more")  # closed: silently dropped (the hub hears of it via on_close)
    port.ping()


async def test_ping_frame_and_order_with_data() -> None:
    port, peer, stream = _pair(buffer=65536)
    try:
        port.write(b"a")
        port.ping()
        port.write(b"b")
        assert await _read_all(peer, 4) == b"a" + PING_FRAME + b"b"
        port.handler.ws_connection.closing = True
        port.ping()  # a closing connection is not pinged
        port.write(b"c")
        assert await _read_all(peer, 1) == b"c"
    finally:
        stream.close()
        peer.close()


async def test_tls_like_streams_use_iostream_only() -> None:
    class OtherStream(IOStream):
        pass

    a, b = socket.socketpair()
    stream: Any = OtherStream(a)
    port = TornadoPort(_Handler(), stream, "peer")  # type: ignore[arg-type]
    try:
        assert not port.direct
        port.write(b"via iostream")
        port.ping()
        assert port.handler.pings == 1  # type: ignore[attr-defined]
        b.setblocking(False)
        assert await _read_all(b, 12) == b"via iostream"
    finally:
        stream.close()
        b.close()


def test_frame_end_finds_the_end_of_the_frame_holding_an_offset() -> None:
    small, mid, big = (build_frame(OP_TEXT, b"a" * n) for n in (10, 300, 70_000))
    data = small + mid + big
    assert frame_end(data, 0) == len(small)  # a frame starts there: that frame
    assert frame_end(data, 5) == len(small)
    assert frame_end(data, len(small)) == len(small) + len(mid)
    assert frame_end(data, len(small) + len(mid) + 1) == len(data)
    assert frame_end(data[:-1], len(small) + len(mid) + 1) == len(data) - 1  # cut short
    assert frame_end(b"\x81", 0) == 1 and frame_end(b"\x81\x7e\x00", 0) == 3


async def test_discard_unsent_drops_whole_frames_only() -> None:
    """A peer that does not read: frames pile up behind the one the kernel stopped in.
    Dropping them and writing a close frame next, the peer reads whole frames, in
    order, then the close frame."""
    port, peer, stream = _pair()
    try:
        frames = [build_frame(OP_TEXT, str(i).encode() * 400) for i in range(1000)]
        for start in range(0, len(frames), 50):
            port.write(b"".join(frames[start:start + 50]))
        backlog = port.buffered_bytes()
        dropped = port.discard_unsent()
        assert 0 < dropped < backlog  # the frame in flight stays
        assert port.buffered_bytes() == backlog - dropped
        port.write(build_frame(OP_CLOSE, b"\x10\x04"))
        got: list[Any] = []
        rest = b""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(10):
            while not got or got[-1].opcode != OP_CLOSE:
                chunk = await loop.sock_recv(peer, 65536)
                assert chunk, "EOF before the close frame"
                parsed, rest = parse_frames(rest + chunk)
                got += parsed
        assert rest == b""
        assert [build_frame(f.opcode, f.payload) for f in got[:-1]] == frames[:len(got) - 1]
        assert len(got) - 1 < len(frames)  # some were dropped
    finally:
        stream.close()
        peer.close()
