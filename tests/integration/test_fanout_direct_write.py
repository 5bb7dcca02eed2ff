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

from realtime_lab.transports.tornado_ws import PING_FRAME, TornadoPort


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
