"""The pumps over real socket pairs: writes, backpressure, closing, reading, async handlers.

``SocketPump.write`` sends with one ``socket.send`` while nothing waits and keeps
only the rest, as whole frames, in a SendBuffer. These tests fill the kernel
buffers so that sends are partial, and check that every byte arrives once and in
order, that backpressure is visible (``buffered_bytes``, ``when_drained``), that a
close puts the close frame next (frames not started are dropped), and that the
endpoint hears ``closed`` exactly once however the connection ends. ``StreamPump``
(TLS streams) is driven the same way on a plain ``IOStream``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest
from tornado.iostream import IOStream

from realtime_lab.protocol.connection import ServerConnection
from realtime_lab.protocol.frames import (
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    apply_mask,
    build_frame,
    parse_frames,
    text_frame,
)
from realtime_lab.transports.pump import Pump, SocketPump, StreamPump


class Recorder:
    """An endpoint that keeps what it is told."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.binaries: list[bytes] = []
        self.pongs = 0
        self.closes: list[tuple[int | None, str]] = []
        self.done = asyncio.Event()
        self.reply: Callable[[str], Any] | None = None

    def receive_text(self, session: Any, text: str) -> Any:
        self.texts.append(text)
        return self.reply(text) if self.reply is not None else None

    def receive_binary(self, session: Any, data: bytes) -> None:
        self.binaries.append(data)

    def pong(self, session: Any) -> None:
        self.pongs += 1

    def closed(self, session: Any, code: int | None, reason: str) -> None:
        self.closes.append((code, reason))
        self.done.set()


def masked(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes((0x80 | opcode, 0x80 | n)) if n < 126 else struct.pack(
        "!BBH", 0x80 | opcode, 0x80 | 126, n)
    return head + mask + apply_mask(payload, mask)


def _pair(buffer: int) -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
        s.setblocking(False)
    return a, b


def make_pump(kind: str, buffer: int = 4096, close_timeout: float = 5.0,
              flush_timeout: float = 10.0,
              early: bytes = b"") -> tuple[Pump, socket.socket, Recorder]:
    a, b = _pair(buffer)
    conn = ServerConnection(max_message_bytes=1 << 20)
    if kind == "socket":
        pump: Pump = SocketPump(a, conn, "peer", close_timeout=close_timeout,
                                flush_timeout=flush_timeout, early=early)
    else:
        pump = StreamPump(IOStream(a), conn, "peer", close_timeout=close_timeout,
                          flush_timeout=flush_timeout)
        if early:
            conn.receive_data(early)
    endpoint = Recorder()
    pump.start(endpoint, "session")
    return pump, b, endpoint


KINDS = ["socket", "stream"]


async def read_all(sock: socket.socket, size: int, timeout: float = 10.0) -> bytes:
    loop = asyncio.get_running_loop()
    out = bytearray()
    async with asyncio.timeout(timeout):
        while len(out) < size:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                break
            out += chunk
    return bytes(out)


async def read_to_eof(sock: socket.socket, timeout: float = 10.0) -> bytes:
    return await read_all(sock, 1 << 40, timeout)


async def test_a_small_write_goes_straight_to_the_socket() -> None:
    pump, peer, _ = make_pump("socket", buffer=65536)
    try:
        pump.write(text_frame("hello"))
        assert pump.buffered_bytes() == 0  # the kernel took it all: nothing queued
        assert await read_all(peer, 7) == text_frame("hello")
    finally:
        pump.close(1000, "")
        peer.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_partial_sends_queue_the_rest_in_order(kind: str) -> None:
    pump, peer, _ = make_pump(kind)
    try:
        frames = [build_frame(0x2, bytes([65 + i]) * 300_000) for i in range(3)]
        pump.write(frames[0])  # far more than the socket buffers take
        backlog = pump.buffered_bytes()
        assert 0 < backlog <= len(frames[0])
        pump.write(frames[1])  # behind the backlog
        pump.write(frames[2])
        assert pump.buffered_bytes() == backlog + len(frames[1]) + len(frames[2])
        drained = asyncio.Event()
        pump.when_drained(drained.set)
        assert await read_all(peer, sum(map(len, frames))) == b"".join(frames)
        await asyncio.wait_for(drained.wait(), 5)
        assert pump.buffered_bytes() == 0
        pump.write(text_frame("after"))
        assert await read_all(peer, 7) == text_frame("after")
    finally:
        peer.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_when_drained_with_nothing_waiting_runs_soon(kind: str) -> None:
    pump, peer, _ = make_pump(kind, buffer=65536)
    drained = asyncio.Event()
    pump.when_drained(drained.set)
    await asyncio.wait_for(drained.wait(), 5)
    peer.close()


async def _read_through_close(peer: socket.socket) -> list[Any]:
    """Read until the close frame; every frame must be whole."""
    loop = asyncio.get_running_loop()
    data = b""
    async with asyncio.timeout(10):
        while True:
            data += await loop.sock_recv(peer, 65536)
            got, rest = parse_frames(data)
            if got and got[-1].opcode == OP_CLOSE:
                assert rest == b""
                return got


@pytest.mark.parametrize("batch", [1, 50])
@pytest.mark.parametrize("kind", KINDS)
async def test_discard_unsent_puts_the_close_frame_next(kind: str, batch: int) -> None:
    """Issue 13 point 10 at the transport: a slow consumer sees 4100, not a stall.

    ``batch``: frames per write (the hub joins a connection's frames into one
    write), so the frame under way may be in the middle of a chunk."""
    pump, peer, endpoint = make_pump(kind)
    frames = [text_frame(f"{i:05d}" + "x" * 995) for i in range(300)]  # 300 KB
    for start in range(0, len(frames), batch):
        pump.write(b"".join(frames[start:start + batch]))
    assert pump.buffered_bytes() > 100_000
    dropped = pump.discard_unsent()
    assert dropped > 100_000
    assert pump.buffered_bytes() < 2 * len(frames[0]), "only the frame under way is kept"
    pump.close(4100, "slow consumer")
    pump.write(text_frame("after the close"))  # nothing more once closing
    # the client finally reads: a prefix of the frames, whole, then the close frame
    got = await _read_through_close(peer)
    assert [f.payload for f in got[:-1]] == [f[4:] for f in frames[:len(got) - 1]]
    assert struct.unpack("!H", got[-1].payload[:2])[0] == 4100
    assert got[-1].payload[2:] == b"slow consumer"
    assert not endpoint.closes  # waiting for the client's close frame
    await asyncio.get_running_loop().sock_sendall(peer, masked(OP_CLOSE, b"\x10\x04"))
    await asyncio.wait_for(endpoint.done.wait(), 5)
    assert endpoint.closes == [(4100, "slow consumer")]
    assert await read_to_eof(peer) == b"", "the server closed TCP after the handshake"
    peer.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_close_goes_after_everything_written_before_it(kind: str) -> None:
    pump, peer, endpoint = make_pump(kind)
    frames = [text_frame(f"{i:05d}" + "x" * 995) for i in range(300)]
    for frame in frames:
        pump.write(frame)
    pump.close(1000, "bye")
    got = await _read_through_close(peer)
    assert [f.payload for f in got[:-1]] == [f[4:] for f in frames]
    peer.close()
    await asyncio.wait_for(endpoint.done.wait(), 5)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_client_that_never_reads_again_is_dropped_after_flush_timeout(
        kind: str) -> None:
    """Bounded by flush_timeout (reading up to the close frame) then close_timeout."""
    pump, peer, endpoint = make_pump(kind, flush_timeout=0.3, close_timeout=0.3)
    for _ in range(300):
        pump.write(text_frame("x" * 1000))
    pump.discard_unsent()
    pump.close(4100, "slow consumer")
    await asyncio.wait_for(endpoint.done.wait(), 5)
    assert endpoint.closes == [(4100, "slow consumer")]
    peer.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_close_timeout_when_the_client_never_answers(kind: str) -> None:
    pump, peer, endpoint = make_pump(kind, buffer=65536, close_timeout=0.2)
    pump.close(1001, "going away")
    await asyncio.wait_for(endpoint.done.wait(), 5)
    assert endpoint.closes == [(1001, "going away")]
    frames, _ = parse_frames(await read_to_eof(peer))
    assert [f.opcode for f in frames] == [OP_CLOSE]
    peer.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_client_close_is_answered_and_the_server_closes_tcp(kind: str) -> None:
    pump, peer, endpoint = make_pump(kind, buffer=65536)
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(peer, masked(OP_TEXT, b"hi") + masked(OP_PING, b"p")
                            + masked(OP_CLOSE, struct.pack("!H", 1000) + b"bye"))
    await asyncio.wait_for(endpoint.done.wait(), 5)
    assert endpoint.texts == ["hi"] and endpoint.closes == [(1000, "bye")]
    frames, _ = parse_frames(await read_to_eof(peer))
    assert [(f.opcode, f.payload) for f in frames] == [(0xA, b"p"), (OP_CLOSE, b"\x03\xe8")]
    pump.write(text_frame("late"))  # no error once closed
    pump.ping()
    pump.close(1000, "again")
    peer.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_dead_peer_is_reported_once_without_raising(kind: str) -> None:
    pump, peer, endpoint = make_pump(kind)
    peer.close()
    for _ in range(3):  # EPIPE / ECONNRESET on write, or EOF on read
        pump.write(build_frame(0x2, b"x" * 10_000))
    await asyncio.wait_for(endpoint.done.wait(), 5)
    pump.write(b"more")
    pump.ping()
    drained: list[bool] = []
    pump.when_drained(lambda: drained.append(True))
    await asyncio.sleep(0.05)
    assert endpoint.closes == [(None, "")] and drained == []


@pytest.mark.parametrize("kind", KINDS)
async def test_bytes_read_before_the_handover_are_not_lost(kind: str) -> None:
    pump, peer, endpoint = make_pump(kind, buffer=65536,
                                     early=masked(OP_TEXT, b"early") + masked(OP_PING, b""))
    assert endpoint.texts == ["early"]
    assert await read_all(peer, 2) == b"\x8a\x00"
    pump.close(1000, "")
    peer.close()


async def test_an_async_handler_holds_the_next_message_back() -> None:
    pump, peer, endpoint = make_pump("socket", buffer=65536)
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[None] = loop.create_future()
    endpoint.reply = lambda text: gate if text == "first" else None
    await loop.sock_sendall(peer, masked(OP_TEXT, b"first") + masked(OP_TEXT, b"second"))
    async with asyncio.timeout(5):
        while not endpoint.texts:
            await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)
    assert endpoint.texts == ["first"], "the second waits for the first to finish"
    gate.set_result(None)
    async with asyncio.timeout(5):
        while len(endpoint.texts) < 2:
            await asyncio.sleep(0.005)
    assert endpoint.texts == ["first", "second"]
    pump.close(1000, "")
    peer.close()


async def test_a_flood_is_read_over_several_loop_turns() -> None:
    flood = masked(OP_TEXT, b"x" * 100) * 5000  # 530 KB read at once
    pump, peer, endpoint = make_pump("socket", buffer=65536, early=flood)
    assert 0 < len(endpoint.texts) < 5000, "start() stops after one turn's budget"
    async with asyncio.timeout(5):
        while len(endpoint.texts) < 5000:
            await asyncio.sleep(0)
    pump.close(1000, "")
    peer.close()


async def test_a_failing_endpoint_closes_only_its_connection(caplog) -> None:
    pump, peer, endpoint = make_pump("socket", buffer=65536)

    def broken(text: str) -> None:
        raise RuntimeError("bug")

    endpoint.reply = broken
    await asyncio.get_running_loop().sock_sendall(peer, masked(OP_TEXT, b"boom"))
    await asyncio.wait_for(endpoint.done.wait(), 5)
    assert await read_to_eof(peer) == b""
    assert any("failed to handle a message" in r.getMessage() for r in caplog.records)
    peer.close()
