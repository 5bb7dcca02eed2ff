"""Issue 4 gaps over real sockets: each case asserts the exact code and that a healthy
client on the same server is unaffected.

* ``droppable_priority`` = "normal" (normal messages dropped, counted, emitted; the slow
  reader stays open) and = "none" (nothing dropped; the slow reader is closed with 4100).
* ``RateLimit(per_type=...)``: publishes refused with ``rate_limited`` while pings of the
  same connection are answered, and another client's messages all get through.
* An async ``on_connect`` slower than ``Hooks.timeout``: error ``hook_timeout``, close
  4005, while an already connected client keeps receiving.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from tornado.websocket import websocket_connect

import realtime_lab
from realtime_lab import LabServer, ServerOptions
from realtime_lab.core.hooks import ConnectRequest, Hooks
from realtime_lab.middleware import RateLimit
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.protocol.frames import OP_TEXT

PAD = "x" * 4000
BATCH = 20  # ~80 KB per batch: the healthy reader stays far below its limit
MAX_MESSAGES = 5000  # ~20 MB: far more than kernel socket buffers hold
PRESSURE = {"max_outbound_bytes": 256 * 1024, "write_buffer_bytes": 32 * 1024}


async def slow_and_healthy(server: LabServer, connect: Any, raw_ws: Any,
                           wait_until: Any) -> tuple[Any, Any, Any]:
    """A healthy Client and a raw slow reader (small buffer, never reads) on "feed";
    returns (healthy, slow raw socket, slow session)."""
    healthy = await connect(user="healthy")
    await healthy.subscribe("feed")
    slow = await raw_ws(server.port, rcvbuf=4096)
    await slow.send_json({"type": "subscribe", "channel": "feed", "id": "s"})
    await wait_until(lambda: "feed" in server.hub.channels
                     and len(server.hub.channels["feed"].subscribers) == 2,
                     what="two subscribers")
    session = next(s for s in server.hub.sessions.values() if s.user != "healthy")
    return healthy, slow, session


async def publish_batch(server: LabServer, healthy: Any, sent: int, priority: str) -> int:
    """Publish BATCH messages numbered from ``sent``; the healthy subscriber must get
    each of them, in order. Returns the new count."""
    for n in range(sent, sent + BATCH):
        server.publish("feed", {"n": n, "pad": PAD}, priority=priority)
    for n in range(sent, sent + BATCH):
        msg = await healthy.recv_message("feed", timeout=5)
        assert msg["data"]["n"] == n, "the healthy subscriber missed or reordered one"
    return sent + BATCH


def slow_numbers(slow: Any) -> list[Any]:
    texts = [json.loads(f.payload) for f in slow.frames if f.opcode == OP_TEXT]
    return [m["data"]["n"] if isinstance(m["data"], dict) else m["data"]
            for m in texts if m["type"] == "message"]


# ---------------------------------------------------------------- droppable_priority


@pytest.mark.parametrize("options", [ServerOptions(droppable_priority="normal", **PRESSURE)])
async def test_droppable_normal_drops_normal_messages_instead_of_closing(
        server: LabServer, connect: Any, raw_ws: Any, wait_until: Any) -> None:
    healthy, slow, session = await slow_and_healthy(server, connect, raw_ws, wait_until)
    drops = server.events("message.dropped", maxsize=100_000)

    sent = 0
    while not len(drops):
        assert sent < MAX_MESSAGES, "the slow reader never dropped anything"
        assert session.is_open, "closed instead of dropping normal messages"
        sent = await publish_batch(server, healthy, sent, "normal")
    # a few more batches while dropping: still open, the healthy one still gets all
    for _ in range(3):
        sent = await publish_batch(server, healthy, sent, "normal")
    assert session.is_open and session.close_code is None, "dropping, not closing"

    # a high message is not droppable: it evicts normal ones and is queued
    server.publish("feed", "alert", priority="high")
    assert (await healthy.recv_message("feed", timeout=5))["data"] == "alert"
    assert session.is_open

    dropped = session.stats.dropped
    events = drops.drain()
    assert dropped > 0 and dropped == len(events) == server.hub.stats.dropped
    assert {(e.priority, e.reason, e.session) for e in events} == {
        ("normal", "queue_full", session.id)}
    assert server.hub.stats.slow_consumers == 0
    healthy_session = server.hub.sessions[healthy.session]
    assert healthy_session.stats.dropped == 0

    # The slow reader now reads all that is left: the newest normals (the oldest were
    # dropped), in order, and the alert.
    def complete() -> bool:
        got = slow_numbers(slow)
        return "alert" in got and sent - 1 in got

    while not complete():
        await slow.read_until(lambda f: f.opcode == OP_TEXT, timeout=10)
    got = slow_numbers(slow)
    numbers = [x for x in got if isinstance(x, int)]
    assert numbers == sorted(numbers) and numbers[-1] == sent - 1
    assert len(numbers) == sent - dropped, "every message is either delivered or dropped"
    assert session.is_open
    drops.close()


@pytest.mark.parametrize("options", [ServerOptions(droppable_priority="none", **PRESSURE)])
async def test_droppable_none_never_drops_and_closes_the_slow_reader_with_4100(
        server: LabServer, connect: Any, raw_ws: Any, wait_until: Any) -> None:
    healthy, slow, session = await slow_and_healthy(server, connect, raw_ws, wait_until)
    drops = server.events("message.dropped", maxsize=100_000)

    sent = 0
    while session.is_open:
        assert sent < MAX_MESSAGES, "the slow reader was never closed"
        # low priority: droppable by default, but with "none" nothing is
        sent = await publish_batch(server, healthy, sent, "low")

    assert session.close_code == CloseCode.SLOW_CONSUMER == 4100
    assert server.hub.stats.slow_consumers == 1
    assert session.stats.dropped == 0 and server.hub.stats.dropped == 0
    assert len(drops) == 0, "no message.dropped event"

    # the healthy subscriber is untouched and goes on receiving everything
    assert server.hub.sessions[healthy.session].is_open
    for _ in range(3):
        sent = await publish_batch(server, healthy, sent, "low")

    # the slow reader finally reads: a gap-free prefix, then close 4100
    assert await slow.read_close(timeout=30) == CloseCode.SLOW_CONSUMER
    got = slow_numbers(slow)
    assert got == list(range(len(got))) and 0 < len(got) < sent
    await slow.send_close(CloseCode.SLOW_CONSUMER)
    await wait_until(lambda: session.id not in server.hub.sessions, timeout=10,
                     what="the slow session to be dropped")
    assert set(server.hub.sessions) == {healthy.session}
    assert len(drops) == 0
    drops.close()


# ---------------------------------------------------------------- per-type rate limit

PUBLISH_BURST = 5
FLOOD = 30


async def read_replies(ws: Any, ids: set[str], timeout: float = 10.0) -> dict[str, Any]:
    """Read until a reply for every id in ``ids`` has arrived; return them by id."""
    replies: dict[str, Any] = {}

    async def reader() -> None:
        while not ids <= replies.keys():
            text = await ws.read_message()
            assert text is not None, f"closed with {ws.close_code}"
            msg = json.loads(text)
            if msg.get("id") in ids:
                replies[msg["id"]] = msg

    await asyncio.wait_for(reader(), timeout)
    return replies


async def test_per_type_limit_refuses_publishes_while_pings_and_others_go_through() -> None:
    # 0.001/s: no token comes back within the test, so exactly BURST publishes pass
    limiter = RateLimit(per_connection=None, per_ip=None,
                        per_type={"publish": (0.001, PUBLISH_BURST)}, max_violations=None)
    server = await realtime_lab.serve(port=0, middleware=[limiter])
    limits = server.events("limit.exceeded", maxsize=1000)
    try:
        healthy = await realtime_lab.connect(server.url, user="healthy")
        await healthy.subscribe("room")
        flooder = await websocket_connect(server.url + "?user=flooder")
        assert json.loads(await asyncio.wait_for(flooder.read_message(), 5))["type"] == "welcome"

        ids: set[str] = set()
        for i in range(FLOOD):  # publishes and pings interleaved, without waiting
            await flooder.write_message(json.dumps(
                {"type": "publish", "channel": "room", "data": ["flood", i], "id": f"p{i}"}))
            await flooder.write_message(json.dumps({"type": "ping", "id": f"g{i}"}))
            ids |= {f"p{i}", f"g{i}"}
        replies = await read_replies(flooder, ids)

        pubs = [replies[f"p{i}"] for i in range(FLOOD)]
        assert [m["type"] for m in pubs[:PUBLISH_BURST]] == ["published"] * PUBLISH_BURST
        assert all(m["type"] == "error" and m["code"] == "rate_limited"
                   for m in pubs[PUBLISH_BURST:]), pubs[PUBLISH_BURST:]
        assert all(replies[f"g{i}"]["type"] == "pong" for i in range(FLOOD)), \
            "pings are not limited"
        assert limiter.refused == FLOOD - PUBLISH_BURST
        assert flooder.close_code is None and flooder.protocol is not None, "still open"

        # the healthy client got exactly the accepted publishes
        got = [(await healthy.recv_message("room", timeout=5))["data"]
               for _ in range(PUBLISH_BURST)]
        assert got == [["flood", i] for i in range(PUBLISH_BURST)]

        # its own publishes (its own bucket) and pings all get through
        for i in range(PUBLISH_BURST):
            reply = await healthy.publish("room", ["healthy", i], ack=True)
            assert reply is not None and reply["type"] == "published"
            assert (await healthy.request({"type": "ping"}))["type"] == "pong"
        got = [(await healthy.recv_message("room", timeout=5))["data"]
               for _ in range(PUBLISH_BURST)]
        assert got == [["healthy", i] for i in range(PUBLISH_BURST)]
        server.publish("room", "server says hi")
        assert (await healthy.recv_message("room", timeout=5))["data"] == "server says hi"

        refused_users = {e.user for e in limits.drain()}
        assert refused_users <= {"flooder"}, "only the flooder was limited"
        flooder.close()
        await healthy.close()
    finally:
        limits.close()
        await server.stop()


# ---------------------------------------------------------------- on_connect timeout


async def test_async_on_connect_timeout_refuses_with_hook_timeout_and_4005() -> None:
    entered = asyncio.Event()
    never = asyncio.Event()  # never set: the hook is always slower than its timeout

    async def on_connect(req: ConnectRequest) -> Any:
        if req.user == "stuck":
            entered.set()
            await never.wait()
        return None

    server = await realtime_lab.serve(port=0, hooks=Hooks(on_connect=on_connect, timeout=0.5))
    refusals = server.events("connection.refused")
    try:
        healthy = await realtime_lab.connect(server.url, user="healthy")
        await healthy.subscribe("calm")

        stuck = await websocket_connect(server.url + "?user=stuck")
        await asyncio.wait_for(entered.wait(), 5)
        # while the hook hangs, the healthy client is served
        server.publish("calm", "during")
        assert (await healthy.recv_message("calm", timeout=5))["data"] == "during"

        got = []
        while (text := await asyncio.wait_for(stuck.read_message(), 5)) is not None:
            got.append(json.loads(text))
        assert stuck.close_code == CloseCode.CONNECT_REFUSED == 4005
        assert [(m["type"], m["code"]) for m in got] == [("error", "hook_timeout")]
        refused = await refusals.wait_for("connection.refused", timeout=5)
        assert (refused.code, refused.reason) == (4005, "hook_timeout")
        assert all(s.user != "stuck" for s in server.hub.sessions.values())

        server.publish("calm", "after")
        assert (await healthy.recv_message("calm", timeout=5))["data"] == "after"
        assert (await healthy.request({"type": "ping"}))["type"] == "pong"
        assert set(server.hub.sessions) == {healthy.session}
        await healthy.close()
    finally:
        never.set()
        refusals.close()
        await server.stop()
