"""A fragmented message that never ends is bounded in memory and in frames (issue 13, 3).

The reader kept one list entry per frame of a fragmented message and counted
only payload bytes against ``max_message_bytes``, so endless empty continuation
frames (6 bytes each on the wire) grew the server's memory without limit
(+35 MB for 5 million frames). Now a message's bytes are kept in one buffer
(an empty frame costs nothing) and a message of more than
``max_message_fragments`` frames is refused with 1009.
"""

from __future__ import annotations

import asyncio
import os
import struct
import tracemalloc

import pytest

from realtime_lab import LabServer, ServerOptions
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.protocol.frames import OP_BINARY, OP_CONTINUATION, OP_TEXT

BATCH = 2048
LIMIT = 65536  # ServerOptions.max_message_fragments


def test_the_fragment_limit_has_a_documented_default() -> None:
    assert ServerOptions().max_message_fragments == LIMIT
    with pytest.raises(ValueError):
        ServerOptions(max_message_fragments=0)


def empty_continuations(count: int) -> bytes:
    """``count`` masked, empty, non-final continuation frames (6 bytes each)."""
    frame = bytes((OP_CONTINUATION, 0x80)) + os.urandom(4)
    return frame * count


async def send_raw(ws, data: bytes) -> bool:
    """Send bytes on the raw socket; False once the server has closed it."""
    try:
        await asyncio.get_running_loop().sock_sendall(ws.sock, data)
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


@pytest.mark.parametrize("opcode", [OP_BINARY, OP_TEXT])
async def test_endless_empty_continuations_are_closed_with_1009(
        server: LabServer, raw_ws, opcode: int) -> None:
    ws = await raw_ws(server.port)
    await ws.send_frame(opcode, b"a", fin=False)
    sent = 0
    while sent < 3 * LIMIT and await send_raw(ws, empty_continuations(BATCH)):
        sent += BATCH
    assert await ws.read_close(timeout=10) == CloseCode.MESSAGE_TOO_BIG
    frame = ws.frames[-1]
    (code,) = struct.unpack("!H", frame.payload[:2])
    assert code == 1009 and b"fragments" in frame.payload[2:]


async def test_many_fragments_under_the_limit_still_make_one_message(
        server: LabServer, raw_ws) -> None:
    """A message in many small fragments (as Autobahn 9.5.x sends) is still delivered."""
    ws = await raw_ws(server.port)
    await ws.recv_json()  # welcome
    text = b'{"type":"ping","id":7}'
    await ws.send_frame(OP_TEXT, text[:1], fin=False)
    for i in range(1, len(text)):
        await ws.send_frame(OP_CONTINUATION, b"", fin=False)
        await ws.send_frame(OP_CONTINUATION, text[i:i + 1], fin=i == len(text) - 1)
    assert await ws.recv_json() == {"type": "pong", "id": 7}


async def test_memory_of_an_unfinished_message_does_not_grow_with_its_frames(
        server: LabServer, raw_ws, wait_until) -> None:
    """30,000 empty continuation frames of one message (under the frame limit): the
    server's Python heap grows
    by far less than the 240 KB the list of frames took (the message holds 1 byte)."""
    ws = await raw_ws(server.port)
    await ws.recv_json()  # welcome
    await ws.send_frame(OP_BINARY, b"a", fin=False)
    await ws.send_frame(OP_CONTINUATION, b"", fin=False)  # the first frames
    frames = 30_000
    assert frames < LIMIT
    payload = empty_continuations(frames)
    ping = b"\x89\x80" + os.urandom(4)  # an empty ping: answered once every frame is read
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        assert await send_raw(ws, payload + ping)
        await ws.read_until(lambda f: f.opcode == 0xA, timeout=30)  # the pong
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 100_000, f"the server's heap grew by {grown} bytes for {frames} empty frames"
    session = next(iter(server.hub.sessions.values()))
    assert session.is_open
