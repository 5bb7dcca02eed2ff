"""Concurrency: 200 subscribers, 20 publishers x 50 messages at once; exactly once, in order.

Most subscribers are raw sockets parsing frames themselves (so the test measures
the server, not 200 Python clients' decoding); a few are the real client.

On a busy machine the test can take minutes: every wait is bounded by ``STALL``
seconds without progress (a hang), never by the test's total duration. The server's
heartbeat is pushed out of the way: in this one process 200 readers and the server
share a starved event loop, and a ping behind a real client's 1200-frame backlog
can wait longer than the 20 s heartbeat timeout (4101), which is not what this
test is about.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import realtime_lab
from realtime_lab import Client, LabServer, ServerOptions
from realtime_lab.protocol.frames import OP_TEXT, parse_frames

SUBSCRIBERS = 200
CLIENT_SUBSCRIBERS = 10  # of which real realtime_lab Clients; the rest raw sockets
PUBLISHERS = 20
PER_PUBLISHER = 50
TOTAL = PUBLISHERS * PER_PUBLISHER
STALL = 30.0  # seconds without any progress: a hang, not a slow machine


@pytest.fixture
def options() -> ServerOptions:
    return ServerOptions(heartbeat_interval=1000.0)  # no pings during the test


async def connect_clients(server: LabServer, count: int, prefix: str) -> list[Client]:
    clients: list[Client] = []
    for start in range(0, count, 50):  # stay under the listen backlog
        batch = [realtime_lab.connect(server.url, user=f"{prefix}{i}")
                 for i in range(start, min(count, start + 50))]
        clients += await asyncio.gather(*batch)
    return clients


def record(seen: dict[int, list[int]], msg: dict[str, Any]) -> None:
    assert msg["channel"] == "load"
    seen[msg["data"]["p"]].append(msg["data"]["i"])


async def collect_client(client: Client) -> dict[int, list[int]]:
    """Read TOTAL channel messages; return each publisher's sequence numbers in arrival order."""
    seen: dict[int, list[int]] = {p: [] for p in range(PUBLISHERS)}
    count = 0
    while count < TOTAL:
        # any message is progress: on a busy machine the 190 presence diffs ahead of
        # the first channel message can take longer than STALL all together
        msg = await client.recv(timeout=STALL)
        if msg["type"] == "message":
            record(seen, msg)
            count += 1
    return seen


async def collect_raw(ws: Any) -> dict[int, list[int]]:
    """The same from a raw socket, until TOTAL messages and then a pong (nothing after)."""
    loop = asyncio.get_running_loop()
    seen: dict[int, list[int]] = {p: [] for p in range(PUBLISHERS)}
    count = 0
    buffer = ws.buffer
    while True:
        frames, buffer = parse_frames(buffer)
        for frame in frames:
            assert frame.opcode == OP_TEXT
            msg = json.loads(frame.payload)
            if msg["type"] == "message":
                record(seen, msg)
                count += 1
            elif msg["type"] == "pong":
                assert count == TOTAL, f"pong after {count} messages"
                return seen
        if count == TOTAL and not buffer:
            await ws.send_json({"type": "ping", "id": "end"})
        chunk = await asyncio.wait_for(loop.sock_recv(ws.sock, 1 << 16), STALL)
        assert chunk, "connection closed"
        buffer += chunk


async def publish_all(client: Client, p: int) -> None:
    for i in range(PER_PUBLISHER):
        await client.publish("load", {"p": p, "i": i})


@pytest.mark.slow
@pytest.mark.timeout(300)  # bounds a hang; a busy machine makes the test slow, not wrong
async def test_every_subscriber_gets_every_message_once_in_order(server: LabServer,
                                                                 raw_ws) -> None:
    subscribers = await connect_clients(server, CLIENT_SUBSCRIBERS, "sub")
    publishers = await connect_clients(server, PUBLISHERS, "pub")
    raws = [await raw_ws(server.port) for _ in range(SUBSCRIBERS - CLIENT_SUBSCRIBERS)]
    try:
        await asyncio.gather(*(c.subscribe("load") for c in subscribers))
        for i, ws in enumerate(raws):
            await ws.send_json({"type": "subscribe", "channel": "load", "id": i})
        for ws in raws:  # the welcome, the reply, the presence state
            assert (await ws.recv_json(STALL))["type"] == "welcome"
            assert (await ws.recv_json(STALL))["type"] == "subscribed"
            assert (await ws.recv_json(STALL))["type"] == "presence_state"
            ws.frames.clear()
        assert len(server.hub.channels["load"].subscribers) == SUBSCRIBERS

        readers = [asyncio.create_task(collect_client(c)) for c in subscribers]
        readers += [asyncio.create_task(collect_raw(ws)) for ws in raws]
        await asyncio.gather(*(publish_all(c, p) for p, c in enumerate(publishers)))
        results = await asyncio.gather(*readers)  # each fails after STALL s without progress

        expected = list(range(PER_PUBLISHER))
        assert len(results) == SUBSCRIBERS
        for seen in results:
            assert all(seq == expected for seq in seen.values()), seen
        # the real clients have nothing more queued for the channel either
        await asyncio.gather(*(c.ping() for c in subscribers))
        for client in subscribers:
            while not client._inbox.empty():
                extra = client._inbox.get_nowait()
                assert extra is None or extra["type"] != "message", extra
        assert server.hub.stats.slow_consumers == 0
        assert server.hub.channels["load"].messages == TOTAL
    finally:
        await asyncio.gather(*(c.close() for c in subscribers + publishers))
