"""Issue 13, point 1: a value one subscriber's wire format cannot carry, over real sockets.

The exact reproduction: a channel of more than ``fanout_slice_min`` (1000)
subscribers, one of them on the ``realtime-lab.v1.msgpack`` subprotocol, and a
JSON client publishing ``18446744073709551616`` (2**64, more than MessagePack
carries). Before the fix the sliced fan-out raised ``OverflowError`` and its
job stayed at the head of the fan-out queue: every later broadcast, on every
channel and for new clients too, waited behind it forever, while publishers
still got ``published``. With 1000 subscribers or fewer the same publish was
half delivered and answered with ``internal_error``.

Now such a value is refused at the edge with ``bad_value`` before anything is
delivered, and a canary on another channel keeps getting every message.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import struct
from typing import Any

import msgpack
import pytest

from realtime_lab import LabServer, ServerOptions
from realtime_lab.protocol.frames import OP_BINARY, OP_CLOSE, OP_TEXT

MSGPACK = "realtime-lab.v1.msgpack"
BAD_PUBLISH = '{"type":"publish","channel":"big","data":18446744073709551616,"id":"bad"}'


@pytest.fixture
def options() -> ServerOptions:
    return ServerOptions()  # the defaults: fanout_slice_min=1000, error_limit=(20, 10 s)


async def recv(ws: Any, timeout: float = 10.0) -> dict[str, Any]:
    """The next message of a raw connection, JSON text or MessagePack binary."""
    frame = await ws.read_until(lambda f: f.opcode in (OP_TEXT, OP_BINARY, OP_CLOSE), timeout)
    if frame.opcode == OP_CLOSE:
        code = struct.unpack("!H", frame.payload[:2])[0] if frame.payload else None
        raise AssertionError(f"connection closed with {code}")
    if frame.opcode == OP_BINARY:
        return msgpack.unpackb(frame.payload)  # type: ignore[no-any-return]
    return json.loads(frame.payload)  # type: ignore[no-any-return]


async def recv_type(ws: Any, mtype: str, timeout: float = 10.0) -> dict[str, Any]:
    while True:
        msg = await recv(ws, timeout)
        if msg["type"] == mtype:
            return msg


async def send(ws: Any, message: dict[str, Any]) -> None:
    if ws.binary:
        await ws.send_frame(OP_BINARY, msgpack.packb(message))
    else:
        await ws.send_json(message)


async def subscriber(raw_ws: Any, port: int, channel: str, *, binary: bool = False) -> Any:
    """A raw connection subscribed to ``channel`` (welcome and subscribed read)."""
    ws = await raw_ws(port, subprotocol=MSGPACK if binary else None, timeout=20)
    ws.binary = binary
    assert (await recv(ws))["type"] == "welcome"
    await send(ws, {"type": "subscribe", "channel": channel})
    assert (await recv_type(ws, "subscribed"))["channel"] == channel
    return ws


async def subscribers(raw_ws: Any, port: int, channel: str, count: int) -> list[Any]:
    out: list[Any] = []
    for start in range(0, count, 50):  # 50 handshakes at a time
        batch = range(start, min(start + 50, count))
        out += await asyncio.gather(*(subscriber(raw_ws, port, channel) for _ in batch))
    return out


async def publish(publisher: Any, channel: str, data: Any, rid: str) -> dict[str, Any]:
    await send(publisher, {"type": "publish", "channel": channel, "data": data, "id": rid})
    while True:
        reply = await recv(publisher)
        if reply.get("id") == rid:
            return reply


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_exact_reproduction_over_1000_subscribers(server: LabServer, raw_ws) -> None:
    assert server.hub.options.fanout_slice_min == 1000
    port = server.port
    group = await subscribers(raw_ws, port, "big", 1000)
    binary = await subscriber(raw_ws, port, "big", binary=True)  # the 1001st, on msgpack
    canary = await subscriber(raw_ws, port, "other")
    publisher = await raw_ws(port)
    publisher.binary = False
    await recv(publisher)  # welcome
    assert len(server.hub.channels["big"].subscribers) == 1001

    await publisher.send_frame(OP_TEXT, BAD_PUBLISH.encode())
    reply = await recv(publisher)
    # before: {"type": "published", "recipients": 1001} and a wedged fan-out queue
    assert reply["type"] == "error", reply
    assert reply["code"] == "bad_value" and reply["id"] == "bad", reply
    assert "18446744073709551616" in reply["message"]

    # the canary on another channel gets every message, and so do new clients
    assert (await publish(publisher, "other", "canary-1", "c1"))["recipients"] == 1
    assert (await recv_type(canary, "message"))["data"] == "canary-1"
    newcomer = await subscriber(raw_ws, port, "other")
    assert (await publish(publisher, "other", "canary-2", "c2"))["recipients"] == 2
    for ws in (canary, newcomer):
        assert (await recv_type(ws, "message"))["data"] == "canary-2"

    # the big channel works, and nothing of the refused publish reached anyone
    assert (await publish(publisher, "big", "after", "a"))["recipients"] == 1001
    for ws in [*group, binary]:  # the first channel message each one gets
        assert (await recv_type(ws, "message"))["data"] == "after"
    health = server.hub.stats
    assert health.errors_sent == 1


BAD_VALUES = [
    pytest.param("18446744073709551616", "out of range", id="2**64"),
    pytest.param("-9223372036854775809", "out of range", id="-2**63-1"),
    pytest.param("1e400", "finite", id="1e400"),
    pytest.param('"\\ud800"', "surrogate", id="lone-surrogate"),
    pytest.param('{"\\udc00": 1}', "surrogate", id="surrogate-key"),
    pytest.param("[" * 100 + "]" * 100, "deep", id="depth-100"),
]


@pytest.mark.parametrize(("data", "reason"), BAD_VALUES)
async def test_small_channel_is_not_half_delivered(server: LabServer, raw_ws, data: str,
                                                   reason: str) -> None:
    """With 1000 subscribers or fewer, the old code delivered the publish to the JSON
    subscribers before the msgpack one and answered ``internal_error``."""
    port = server.port
    before = await subscribers(raw_ws, port, "big", 3)
    binary = await subscriber(raw_ws, port, "big", binary=True)
    after = await subscribers(raw_ws, port, "big", 3)
    publisher = await raw_ws(port)
    publisher.binary = False
    await recv(publisher)
    text = f'{{"type":"publish","channel":"big","data":{data},"id":7}}'
    await publisher.send_frame(OP_TEXT, text.encode())
    reply = await recv(publisher)
    assert reply["type"] == "error" and reply["code"] == "bad_value", reply
    assert reply["id"] == 7 and reason in reply["message"], reply
    assert (await publish(publisher, "big", "after", "a"))["recipients"] == 7
    for ws in [*before, binary, *after]:  # the first channel message each one gets
        assert (await recv_type(ws, "message"))["data"] == "after"


async def test_msgpack_publisher_reaches_json_subscribers_and_back(server: LabServer,
                                                                   raw_ws) -> None:
    """What every format carries still flows both ways: the largest integers of the
    range, bytes, floats, Unicode and 64 levels of nesting."""
    port = server.port
    text_sub = await subscriber(raw_ws, port, "mix")
    binary_sub = await subscriber(raw_ws, port, "mix", binary=True)
    nested: Any = "leaf"
    for _ in range(63):
        nested = [nested]
    data = {"max": 2**64 - 1, "min": -(2**63), "f": 1.5e308, "s": "ñ😀\u2028", "deep": nested}
    for publisher in (text_sub, binary_sub):  # echo_to_sender: both get each message
        await send(publisher, {"type": "publish", "channel": "mix", "data": data, "id": 1})
        for ws in (text_sub, binary_sub):
            got: dict[str, Any] = {}
            while "message" not in got or (ws is publisher and "published" not in got):
                msg = await recv(ws)
                got[msg["type"]] = msg
            assert got["message"]["data"] == data
            if ws is publisher:
                assert got["published"]["recipients"] == 2


@pytest.mark.parametrize("options", [ServerOptions(fanout_slice_min=5, fanout_slice_seconds=0)])
async def test_a_fan_out_job_that_raises_never_stops_delivery(server: LabServer, raw_ws,
                                                              caplog) -> None:
    """A fault injected into the sliced fan-out (a server bug: queueing one frame raises).
    The job is dropped and logged; a canary on another channel, the channel itself and a
    new client all get every later message."""
    port, hub = server.port, server.hub
    group = await subscribers(raw_ws, port, "big", 15)
    victim_ws = await subscriber(raw_ws, port, "big", binary=True)
    group += await subscribers(raw_ws, port, "big", 14)
    canary = await subscriber(raw_ws, port, "other")
    publisher = await raw_ws(port)
    publisher.binary = False
    await recv(publisher)
    victim = next(s for s in hub.sessions.values() if s.wire.codec == "msgpack")
    enqueue = hub.services.outbox.enqueue

    def failing(session: Any, frame: bytes, *args: Any) -> bool:
        if session is victim and b"poison" in frame:
            raise RuntimeError("injected: queueing this frame fails")
        return enqueue(session, frame, *args)

    hub.services.outbox.enqueue = failing
    await send(publisher, {"type": "publish", "channel": "big", "data": "poison"})
    assert (await publish(publisher, "other", "canary-1", "c1"))["recipients"] == 1
    assert (await recv_type(canary, "message"))["data"] == "canary-1"
    newcomer = await subscriber(raw_ws, port, "big")
    assert (await publish(publisher, "big", "after", "a"))["recipients"] == 31
    for ws in [*group, victim_ws, newcomer]:
        while (msg := await recv_type(ws, "message"))["data"] == "poison":
            pass  # those before the failure got it; nobody after it did
        assert msg["data"] == "after"
    assert hub.stats.fanouts_failed == 1
    assert sum("was dropped" in r.getMessage() for r in caplog.records) == 1


async def test_2000_bad_publishes_are_closed_with_4008_and_log_little(server: LabServer,
                                                                      raw_ws) -> None:
    """The issue's flood: 2000 publishes of values that decode but cannot be re-encoded.
    Before: each got internal_error and a 1.5 KB traceback (3 MB of log), the error
    limit did not count them and the connection stayed open. Now: bad_value, counted,
    closed with 4008 after 20; what the server logs is measured in bytes."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logger = logging.getLogger("realtime_lab")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        await subscriber(raw_ws, server.port, "big", binary=True)
        flood = await raw_ws(server.port)
        await recv(flood)  # welcome
        values = ["18446744073709551616", "1e400", '"\\ud800"']
        text = '{{"type":"publish","channel":"big","data":{},"id":{}}}'
        await flood.send_bytes(b"".join(
            flood.client_frame(OP_TEXT, text.format(values[i % 3], i).encode())
            for i in range(2000)))
        codes = []
        while True:
            frame = await flood.read_until(lambda f: f.opcode in (OP_TEXT, OP_CLOSE), 20)
            if frame.opcode == OP_CLOSE:
                break
            codes.append(json.loads(frame.payload)["code"])
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert struct.unpack("!H", frame.payload[:2])[0] == 4008
    assert codes == ["bad_value"] * 20 + ["too_many_errors"]
    assert server.hub.stats.internal_errors == 0
    logged = out.getvalue()
    assert "Traceback" not in logged and len(logged) < 2000, logged

