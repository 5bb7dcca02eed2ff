"""A large broadcast served over many loop turns, over real sockets.

The server runs with the smallest time slice (``fanout_slice_seconds=0``) and a
low ``fanout_slice_min``, so a burst to a few hundred subscribers is spread over
dozens of loop turns, as a 10,000-subscriber broadcast would be with the defaults.
Every subscriber must still get every message exactly once and in publish
order, and a connection on no channel must keep getting its replies meanwhile.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from realtime_lab import LabServer, ServerOptions
from realtime_lab.protocol.frames import OP_TEXT, parse_frames

SUBSCRIBERS = 300
MESSAGES = 20


@pytest.fixture
def options() -> ServerOptions:
    return ServerOptions(presence_channels=None, fanout_slice_seconds=0, fanout_slice_min=10)


async def read_messages(ws: Any, count: int) -> list[Any]:
    """Read ``count`` channel messages from a raw socket; return their data in order."""
    loop = asyncio.get_running_loop()
    got: list[Any] = []
    buffer = ws.buffer
    ws.buffer = b""
    while True:
        frames, buffer = parse_frames(buffer)
        for frame in frames:
            assert frame.opcode == OP_TEXT
            msg = json.loads(frame.payload)
            assert msg["type"] == "message", msg
            got.append(msg["data"])
        if len(got) >= count:
            assert not buffer
            return got
        chunk = await asyncio.wait_for(loop.sock_recv(ws.sock, 1 << 16), 20)
        assert chunk, "connection closed"
        buffer += chunk


async def test_a_sliced_broadcast_reaches_everyone_in_order(server: LabServer, raw_ws) -> None:
    hub = server.hub
    flushes = 0
    flush = hub.services.outbox.flush

    def counting_flush() -> None:
        nonlocal flushes
        flushes += 1
        flush()

    hub.services.outbox.flush = counting_flush  # type: ignore[method-assign]
    subs = []
    for start in range(0, SUBSCRIBERS, 50):  # stay under the listen backlog
        subs += await asyncio.gather(*(raw_ws(server.port) for _ in range(start, start + 50)))
    for i, ws in enumerate(subs):
        await ws.send_json({"type": "subscribe", "channel": "big", "id": i})
    for ws in subs:
        assert (await ws.recv_json())["type"] == "welcome"
        assert (await ws.recv_json())["type"] == "subscribed"
        ws.frames.clear()
    assert len(hub.channels["big"].subscribers) == SUBSCRIBERS
    publisher = await raw_ws(server.port)
    watcher = await raw_ws(server.port)
    for ws in (publisher, watcher):
        assert (await ws.recv_json())["type"] == "welcome"

    flushes = 0
    readers = [asyncio.create_task(read_messages(ws, MESSAGES)) for ws in subs]
    for i in range(MESSAGES):  # back to back: the server reads several per turn
        await publisher.send_json({"type": "publish", "channel": "big", "data": i})
    await watcher.send_json({"type": "ping", "id": "w"})
    reply = await watcher.recv_json(timeout=10)
    assert reply == {"type": "pong", "id": "w"}
    results = await asyncio.wait_for(asyncio.gather(*readers), 60)
    for got in results:
        assert got == list(range(MESSAGES))
    # The work really was spread: at least one flush per slice of SLICE_STEP sessions.
    assert flushes >= SUBSCRIBERS // 32
    assert hub.stats.slow_consumers == 0
    assert hub.stats.deliveries >= SUBSCRIBERS * MESSAGES
