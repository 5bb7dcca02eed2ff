"""Bad input over real sockets: each refusal has its exact code, and nobody else is disturbed.

Each test has a healthy subscriber and a publisher on the same server; after the
bad frame, the healthy subscriber must still receive a message published after it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from tornado.websocket import WebSocketClientConnection, websocket_connect

import realtime_lab
from realtime_lab import Client, LabServer, ServerOptions
from realtime_lab.protocol.frames import OP_CONTINUATION, OP_TEXT

MAX_MESSAGE = 4096


@pytest.fixture
def options() -> ServerOptions:
    # presence diffs at once: the tests read replies one by one after subscribing (batched,
    # a subscriber's own join may come back in the window's diff among them)
    return ServerOptions(max_message_bytes=MAX_MESSAGE, max_subscriptions=3,
                         presence_batch_window=0)


class Healthy:
    """A subscriber of "room" and a publisher: ``await check()`` proves delivery still works."""

    def __init__(self, subscriber: Client, publisher: Client | None, server: LabServer) -> None:
        self.subscriber = subscriber
        self.publisher = publisher
        self.server = server
        self.count = 0

    async def check(self) -> None:
        self.count += 1
        data = {"check": self.count}
        if self.publisher is not None:
            await self.publisher.publish("room", data)
        else:
            self.server.publish("room", data)
        msg = await self.subscriber.recv_message("room", timeout=5)
        assert msg["data"] == data


@pytest.fixture
async def healthy(server: LabServer, connect) -> Healthy:
    subscriber = await connect(user="healthy")
    await subscriber.subscribe("room")
    publisher = await connect(user="publisher")
    h = Healthy(subscriber, publisher, server)
    await h.check()
    return h


async def open_raw(server: LabServer) -> WebSocketClientConnection:
    ws = await websocket_connect(server.url, max_message_size=1 << 20)
    welcome = json.loads(await ws.read_message())  # type: ignore[arg-type]
    assert welcome["type"] == "welcome"
    return ws


async def reply(ws: WebSocketClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.read_message(), timeout)
    assert raw is not None, f"connection closed ({ws.close_code}, {ws.close_reason})"
    return json.loads(raw)


async def still_open(ws: WebSocketClientConnection) -> None:
    await ws.write_message('{"type":"ping","id":"alive"}')
    assert await reply(ws) == {"type": "pong", "id": "alive"}


CASES: list[tuple[str, str | bytes, str, object]] = [
    ("invalid json", '{"type": "publish", ', "bad_json", None),
    ("invalid json: single quotes", "{'type': 'ping'}", "bad_json", None),
    ("invalid json: NaN data", '{"type":"publish","channel":"room","data":NaN,"id":1}',
     "bad_json", None),
    ("empty text", "", "bad_json", None),
    ("non-object: array", '["subscribe", "room"]', "not_object", None),
    ("non-object: string", '"hello"', "not_object", None),
    ("non-object: number", "42", "not_object", None),
    ("non-object: null", "null", "not_object", None),
    ("unknown type", '{"type":"shout","id":7}', "unknown_type", 7),
    ("missing type", '{"channel":"room","id":8}', "missing_field", 8),
    ("missing channel", '{"type":"subscribe","id":9}', "missing_field", 9),
    ("missing data", '{"type":"publish","channel":"room","id":10}', "missing_field", 10),
    ("wrong-typed type", '{"type":1,"id":11}', "bad_field", 11),
    ("wrong-typed channel", '{"type":"subscribe","channel":["room"],"id":12}', "bad_field", 12),
    ("wrong-typed id", '{"type":"ping","id":{"n":1}}', "bad_field", None),
    ("bool id", '{"type":"ping","id":false}', "bad_field", None),
    ("invalid channel: space", '{"type":"subscribe","channel":"two words","id":13}',
     "bad_channel", 13),
    ("invalid channel: empty", '{"type":"subscribe","channel":"","id":14}', "bad_channel", 14),
    ("invalid channel: too long", json.dumps({"type": "subscribe", "channel": "c" * 129,
                                              "id": 15}), "bad_channel", 15),
    ("invalid channel on publish", '{"type":"publish","channel":"a/b","data":1,"id":16}',
     "bad_channel", 16),
    ("unsubscribe not subscribed", '{"type":"unsubscribe","channel":"other","id":17}',
     "not_subscribed", 17),
    ("binary frame", b"\x00\x01binary", "binary_not_supported", None),
]


@pytest.mark.parametrize(("raw", "code", "rid"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
async def test_recoverable_bad_input(server: LabServer, healthy: Healthy, raw: str | bytes,
                                     code: str, rid: object) -> None:
    ws = await open_raw(server)
    await ws.write_message(raw, binary=isinstance(raw, bytes))
    err = await reply(ws)
    assert err["type"] == "error" and err["code"] == code, err
    assert err.get("id") == rid
    assert isinstance(err["message"], str) and err["message"]
    await still_open(ws)
    await healthy.check()
    assert len(server.hub.channels["room"].subscribers) == 1
    ws.close()


async def test_too_many_subscriptions(server: LabServer, healthy: Healthy) -> None:
    ws = await open_raw(server)
    for i in range(3):
        await ws.write_message(json.dumps({"type": "subscribe", "channel": f"c{i}", "id": i}))
        assert (await reply(ws))["type"] == "subscribed"
        assert (await reply(ws))["type"] == "presence_state"
    await ws.write_message('{"type":"subscribe","channel":"c3","id":3}')
    err = await reply(ws)
    assert err["code"] == "too_many_subscriptions" and err["id"] == 3
    await still_open(ws)
    await healthy.check()
    ws.close()


async def test_frame_over_the_size_limit_closes_with_1009(server: LabServer,
                                                          healthy: Healthy) -> None:
    ws = await open_raw(server)
    await ws.write_message(json.dumps({"type": "publish", "channel": "room",
                                       "data": "x" * MAX_MESSAGE}))
    assert await asyncio.wait_for(ws.read_message(), 5) is None
    assert ws.close_code == 1009
    await healthy.check()
    # the healthy subscriber never saw the oversized message
    assert healthy.subscriber._inbox.empty()


async def test_fragmented_message_over_the_limit_closes_with_1009(
        server: LabServer, healthy: Healthy, raw_ws) -> None:
    raw = await raw_ws(server.port)
    half = b"a" * (MAX_MESSAGE // 2 + 1)
    await raw.send_frame(OP_TEXT, half, fin=False)
    await raw.send_frame(OP_CONTINUATION, half)
    assert await raw.read_close() == 1009
    await healthy.check()


async def test_invalid_utf8_text_closes_with_1007(server: LabServer, healthy: Healthy,
                                                  raw_ws) -> None:
    raw = await raw_ws(server.port)
    await raw.send_frame(OP_TEXT, b'{"type":"ping","x":"\xff\xfe"}')
    assert await raw.read_close() == 1007
    await healthy.check()


async def test_fragmented_message_within_the_limit_is_one_message(
        server: LabServer, healthy: Healthy, raw_ws) -> None:
    raw = await raw_ws(server.port)
    await raw.send_frame(OP_TEXT, b'{"type":"publish","chan', fin=False)
    await raw.send_frame(OP_CONTINUATION, b'nel":"room","data":"pieces","id":1}')
    assert (await raw.recv_json())["type"] == "welcome"
    assert await raw.recv_json() == {"type": "published", "channel": "room", "recipients": 1,
                                     "id": 1}
    assert (await healthy.subscriber.recv_message("room", timeout=5))["data"] == "pieces"
    await healthy.check()


async def test_frame_at_the_size_limit_is_accepted(server: LabServer, healthy: Healthy) -> None:
    ws = await open_raw(server)
    envelope = json.dumps({"type": "publish", "channel": "room", "data": "", "id": 1})
    data = "y" * (MAX_MESSAGE - len(envelope))
    message = json.dumps({"type": "publish", "channel": "room", "data": data, "id": 1})
    assert len(message.encode()) == MAX_MESSAGE
    await ws.write_message(message)
    assert (await reply(ws))["recipients"] == 1
    assert (await healthy.subscriber.recv_message("room", timeout=5))["data"] == data
    await healthy.check()


async def test_publishing_when_clients_may_not() -> None:
    srv = await realtime_lab.serve(port=0, client_publish=False)
    try:
        subscriber = await realtime_lab.connect(srv.url)
        await subscriber.subscribe("room")
        healthy = Healthy(subscriber, None, srv)
        ws = await open_raw(srv)
        await ws.write_message('{"type":"publish","channel":"room","data":"spam","id":1}')
        err = await reply(ws)
        assert err == {"type": "error", "code": "forbidden", "id": 1,
                       "message": err["message"]}
        await still_open(ws)
        await healthy.check()  # server-side publish still reaches subscribers
        assert srv.hub.channels["room"].messages == 1
        ws.close()
        await subscriber.close()
    finally:
        await srv.stop()


@pytest.mark.parametrize("options", [ServerOptions(max_message_bytes=MAX_MESSAGE,
                                                   error_limit=None, presence_batch_window=0)],
                         ids=["no_error_limit"])
async def test_a_burst_of_garbage_does_not_disturb_others(server: LabServer,
                                                          healthy: Healthy) -> None:
    """With ``error_limit=None`` a connection is never closed for its errors."""
    ws = await open_raw(server)
    for raw in [c[1] for c in CASES] * 5:
        await ws.write_message(raw, binary=isinstance(raw, bytes))
    errors = [await reply(ws) for _ in range(len(CASES) * 5)]
    assert all(e["type"] == "error" for e in errors)
    assert [e["code"] for e in errors] == [c[2] for c in CASES] * 5
    await still_open(ws)
    await healthy.check()


async def test_invalid_messages_up_to_the_error_limit_close_with_4008(
        server: LabServer, healthy: Healthy) -> None:
    """Default ``error_limit=(20, 10.0)``: the 20th invalid message closes the connection."""
    assert server.options.error_limit == (20, 10.0)
    ws = await open_raw(server)
    invalid = [c for c in CASES if c[2] != "not_subscribed"]  # a refusal, not bad input
    sent = [invalid[n % len(invalid)] for n in range(19)]
    for _, raw, code, _ in sent:
        await ws.write_message(raw, binary=isinstance(raw, bytes))
        assert (await reply(ws))["code"] == code
    await still_open(ws)  # valid messages are answered as usual and do not reset the count
    await ws.write_message('{"type":"shout"}')
    assert (await reply(ws))["code"] == "unknown_type"
    final = await reply(ws)
    assert final["code"] == "too_many_errors" and "20 invalid messages" in final["message"]
    assert await asyncio.wait_for(ws.read_message(), 5) is None
    assert (ws.close_code, ws.close_reason) == (4008, "too_many_errors")
    assert server.hub.stats.too_many_errors == 1
    await healthy.check()


async def test_the_python_client_stops_on_4008(server: LabServer, healthy: Healthy) -> None:
    """4008 advises STOP: a reconnecting client does not come back to send the same input."""
    opened = server.hub.stats.connections_opened
    client = await realtime_lab.connect(server.url, user="broken", reconnect=True)
    for _ in range(20):
        await client.send({"type": "shout"})
    assert await client.wait_closed(5) == 4008
    assert "not reconnecting" in (client.close_reason or "")
    codes = [m["code"] async for m in client]
    assert codes == ["unknown_type"] * 20 + ["too_many_errors"]
    assert client.connections == 1 and client.reconnects == 0
    assert server.hub.stats.connections_opened == opened + 1
    await healthy.check()
