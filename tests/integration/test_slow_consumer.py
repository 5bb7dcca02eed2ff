"""A client that stops reading is closed at its byte limit; everyone else gets everything.

The slow client is a raw socket with a small receive buffer that does the
WebSocket handshake, subscribes, and then never reads. The server publishes
until the hub closes it with 4100; meanwhile a healthy subscriber must receive
every message, and no connection's queued bytes (hub pending list, transport
buffer) may ever exceed ``max_outbound_bytes``.
"""

from __future__ import annotations

import json

import pytest

from realtime_lab import LabServer, ServerOptions
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.protocol.frames import OP_TEXT

LIMIT = 64 * 1024
PAD = "x" * 1000
BATCH = 16  # ~16 KiB per batch: the healthy client is never near the limit
MAX_MESSAGES = 40_000  # ~40 MB: far more than any kernel socket buffers hold


@pytest.fixture
def options() -> ServerOptions:
    return ServerOptions(max_outbound_bytes=LIMIT)


def check_bounded(server: LabServer) -> int:
    """Assert every connection's queued bytes (hub queue + transport buffer) are within
    the limit; return the largest."""
    largest = 0
    for session in server.hub.sessions.values():
        pending = session.pending_bytes
        buffered = session.port.buffered_bytes()
        assert pending + buffered <= LIMIT, f"{session.id}: {pending} + {buffered} bytes"
        largest = max(largest, pending + buffered)
    return largest


@pytest.mark.slow
async def test_slow_consumer_is_closed_and_others_get_everything(
        server: LabServer, connect, raw_ws, wait_until) -> None:
    healthy = await connect(user="healthy")
    await healthy.subscribe("firehose")
    slow = await raw_ws(server.port, rcvbuf=4096)
    await slow.send_json({"type": "subscribe", "channel": "firehose", "id": 1})
    await wait_until(lambda: len(server.hub.channels["firehose"].subscribers) == 2,
                     what="the slow client's subscription")
    slow_session = next(s for s in server.hub.sessions.values() if s.user != "healthy")

    sent = 0
    largest_buffer = 0

    async def publish_batch() -> None:
        nonlocal sent, largest_buffer
        for _ in range(BATCH):
            server.publish("firehose", {"n": sent, "pad": PAD})
            sent += 1
            check_bounded(server)
        # the healthy subscriber reads the whole batch before the next one
        for n in range(sent - BATCH, sent):
            msg = await healthy.recv_message("firehose", timeout=5)
            assert msg["data"]["n"] == n
        largest_buffer = max(largest_buffer, check_bounded(server))

    while slow_session.is_open:
        assert sent < MAX_MESSAGES, "the slow consumer was never closed"
        await publish_batch()

    assert slow_session.close_code == CloseCode.SLOW_CONSUMER
    assert server.hub.stats.slow_consumers == 1
    assert slow_session.pending_bytes == 0
    assert largest_buffer > LIMIT // 2, "the transport buffer did fill up before the close"

    # Publishing goes on; the healthy one is untouched.
    for _ in range(10):
        await publish_batch()
    healthy_session = server.hub.sessions[healthy.session]
    assert healthy_session.is_open
    # the closing session gets nothing more and is not counted as a recipient
    assert server.publish("firehose", {"n": sent, "pad": ""}) == 1
    assert (await healthy.recv_message("firehose", timeout=5))["data"]["n"] == sent

    # The slow client finally reads: a gap-free prefix of the messages, then close 4100.
    assert await slow.read_close(timeout=30) == CloseCode.SLOW_CONSUMER
    texts = [json.loads(f.payload) for f in slow.frames if f.opcode == OP_TEXT]
    got = [m["data"]["n"] for m in texts if m["type"] == "message"]
    assert got == list(range(len(got))) and len(got) < sent
    await slow.send_close(CloseCode.SLOW_CONSUMER)
    await wait_until(lambda: slow_session.id not in server.hub.sessions, timeout=10,
                     what="the slow session to be dropped")
    assert set(server.hub.sessions) == {healthy.session}
    assert list(server.hub.channels["firehose"].subscribers) == [healthy.session]
