"""A slow consumer sees its 4100 close frame when it reads again (issue 13, 10).

The close frame used to wait behind up to 64 KiB of frames the transport held
but had not handed to the kernel; Tornado drops a connection 5 s after sending
its close frame, so a client that resumed reading later got the kernel's bytes
and then a bare EOF (1006), never learning why. Now the frames not yet handed
to the kernel are dropped (whole frames only: a frame the kernel has begun
stays whole), the close frame goes next, and the server waits up to
``close_flush_timeout`` for the client to take it.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from realtime_lab import LabServer, ServerOptions
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.protocol.frames import OP_CLOSE, OP_TEXT

LIMIT = 64 * 1024
PAD = "x" * 1000
# Longer than Tornado took to drop a connection after its close frame (5 s) before
# issue 13; the server now waits close_flush_timeout (10 s) for the client to read.
PAUSE = 6.5


@pytest.fixture
def options() -> ServerOptions:
    return ServerOptions(max_outbound_bytes=LIMIT, heartbeat_interval=60,
                         heartbeat_timeout=60)


async def make_slow_consumer(server: LabServer, raw_ws, wait_until) -> tuple[object, object]:
    """A raw client that subscribes, then reads nothing while the server publishes
    until it closes that client as a slow consumer."""
    slow = await raw_ws(server.port, rcvbuf=4096)
    await slow.send_json({"type": "subscribe", "channel": "firehose", "id": 1})
    await wait_until(lambda: "firehose" in server.hub.channels, what="the subscription")
    session = next(iter(server.hub.sessions.values()))
    sent = 0
    while session.is_open:
        assert sent < 100_000, "the slow consumer was never closed"
        for _ in range(16):
            server.publish("firehose", {"n": sent, "pad": PAD})
            sent += 1
        await asyncio.sleep(0)
    assert session.close_code == CloseCode.SLOW_CONSUMER
    return slow, session


@pytest.mark.slow
async def test_slow_consumer_reading_again_gets_4100(server: LabServer, raw_ws,
                                                     wait_until) -> None:
    slow, _session = await make_slow_consumer(server, raw_ws, wait_until)
    await asyncio.sleep(PAUSE)  # the client is still not reading
    code = await slow.read_close(timeout=10)
    assert code == CloseCode.SLOW_CONSUMER
    # every frame before the close frame is whole and in order (none cut in half)
    texts = [json.loads(f.payload) for f in slow.frames if f.opcode == OP_TEXT]
    numbers = [m["data"]["n"] for m in texts if m["type"] == "message"]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert slow.frames[-1].opcode == OP_CLOSE


async def test_slow_consumer_reading_at_once_gets_4100_and_the_hub_forgets_it(
        server: LabServer, raw_ws, wait_until) -> None:
    slow, session = await make_slow_consumer(server, raw_ws, wait_until)
    assert await slow.read_close(timeout=10) == CloseCode.SLOW_CONSUMER
    await slow.send_close(CloseCode.SLOW_CONSUMER)
    await wait_until(lambda: not server.hub.sessions, timeout=10, what="the session to go")


async def test_dead_slow_consumer_is_dropped_after_close_flush_timeout(raw_ws,
                                                                      wait_until) -> None:
    import realtime_lab

    server = await realtime_lab.serve(port=0, max_outbound_bytes=LIMIT,
                                      heartbeat_interval=60, heartbeat_timeout=60,
                                      close_flush_timeout=0.5)
    try:
        slow, session = await make_slow_consumer(server, raw_ws, wait_until)
        # never reads again: the server gives up after close_flush_timeout (plus at
        # most close_timeout for its answer), it does not wait for ever
        await wait_until(lambda: not server.hub.sessions, timeout=10,
                         what="the dead slow consumer to be dropped")
    finally:
        await server.stop()
