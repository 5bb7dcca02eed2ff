"""Priorities under pressure over real sockets: a slow reader still gets control and high
messages, low ones are dropped (counted, emitted), and a healthy subscriber gets everything."""

from __future__ import annotations

import json
from typing import Any

import pytest

from realtime_lab import LabServer, ServerOptions
from realtime_lab.protocol.frames import OP_TEXT

PAD = "x" * 4000
MAX_LOWS = 5000  # ~20 MB: far more than kernel buffers hold


@pytest.fixture
def options() -> ServerOptions:
    return ServerOptions(max_outbound_bytes=256 * 1024, write_buffer_bytes=32 * 1024)


async def test_slow_reader_gets_control_and_high_first_and_lows_are_dropped(
        server: LabServer, connect: Any, raw_ws: Any, wait_until: Any) -> None:
    healthy = await connect(user="healthy")
    await healthy.subscribe("feed")
    slow = await raw_ws(server.port, rcvbuf=4096)
    await slow.send_json({"type": "subscribe", "channel": "feed", "id": "s"})
    await wait_until(lambda: len(server.hub.channels.get("feed", {}).subscribers) == 2
                     if "feed" in server.hub.channels else False, what="two subscribers")
    session = next(s for s in server.hub.sessions.values() if s.user != "healthy")
    drops = server.events("message.dropped", maxsize=100_000)

    sent = 0
    healthy_got = 0
    while not len(drops):
        assert sent < MAX_LOWS, "the slow reader never dropped anything"
        for _ in range(20):
            server.publish("feed", {"n": sent, "pad": PAD}, priority="low")
            sent += 1
        while healthy_got < sent:  # the healthy one reads everything as it comes
            msg = await healthy.recv_message("feed", timeout=5)
            assert msg["data"]["n"] == healthy_got
            healthy_got += 1
    assert session.is_open, "dropping lows, not closing"
    queued_lows = session.pending.counts()["low"]
    assert queued_lows > 0
    await slow.send_json({"type": "ping", "id": "control"})
    await wait_until(lambda: session.pending.counts()["control"] == 1, what="pong queued")
    server.publish("feed", "alert", priority="high")
    dropped = session.stats.dropped
    assert dropped == len(drops) and {e.priority for e in drops.drain()} == {"low"}
    assert server.hub.stats.dropped == dropped

    # Now the slow client reads everything that is left.
    order: list[Any] = []

    def done() -> bool:
        return sum(isinstance(x, int) for x in order) == sent - dropped

    while not done() or "control" not in order or "alert" not in order:
        frame = await slow.read_until(lambda f: f.opcode == OP_TEXT, timeout=10)
        msg = json.loads(frame.payload)
        if msg["type"] == "pong":
            order.append(msg["id"])
        elif msg["type"] == "message":
            data = msg["data"]
            order.append(data["n"] if isinstance(data, dict) else data)
    lows = [x for x in order if isinstance(x, int)]
    assert lows == sorted(lows) and lows[-1] == sent - 1, "the oldest lows were dropped"
    after_pong = len([x for x in order[order.index("control"):] if isinstance(x, int)])
    assert after_pong >= queued_lows, "the pong overtook every low queued before it"
    assert order.index("control") < order.index("alert"), "control before high"
    assert len(order) == sent - dropped + 2

    # the healthy subscriber got every message, alert included
    assert (await healthy.recv_message("feed", timeout=5))["data"] == "alert"
    assert healthy_got == sent
