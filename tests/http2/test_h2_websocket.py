"""WebSockets over HTTP/2 streams (RFC 8441) with an independent client: h2 + wsproto.

The server listens with ``http2=True`` (h2c, prior knowledge, on the HTTP/1.1 port);
the same hub serves HTTP/1.1 clients (realtime_lab's asyncio client) beside them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from wsproto.events import CloseConnection, Ping

import realtime_lab
from realtime_lab import LabServer, ServerOptions

from .h2client import H2Client, WsStream

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def options() -> ServerOptions:
    return ServerOptions(http2=True, max_message_bytes=4 << 20, max_outbound_bytes=8 << 20)


@pytest.fixture
async def h2(server: LabServer) -> AsyncIterator[H2Client]:
    client = await H2Client().connect("127.0.0.1", server.port)
    try:
        yield client
    finally:
        await client.close()


async def open_ws(h2: H2Client, path: str = "/ws") -> WsStream:
    ws = await h2.websocket(path)
    assert ws.status == 200, (ws.status, ws.reset_code)
    welcome = await ws.recv_json()
    assert welcome["type"] == "welcome"
    return ws


async def subscribe(ws: WsStream, channel: str) -> None:
    await ws.send({"type": "subscribe", "channel": channel, "id": 1})
    await ws.recv_type("subscribed")


async def test_server_announces_extended_connect(h2: H2Client) -> None:
    assert h2.connect_protocol == 1  # SETTINGS_ENABLE_CONNECT_PROTOCOL in the first SETTINGS


async def test_h2_and_http1_clients_share_a_channel(server: LabServer, h2: H2Client) -> None:
    ws = await open_ws(h2, "/ws?user=h2-ada")
    await subscribe(ws, "room")
    old = await realtime_lab.connect(server.url, user="h1-bob")
    try:
        await old.subscribe("room")
        await old.publish("room", "from http/1.1")
        assert (await old.recv_message("room", timeout=5))["data"] == "from http/1.1"
        got = await ws.recv_type("message")
        assert got["data"] == "from http/1.1" and got["from"] == "h1-bob"
        await ws.send({"type": "publish", "channel": "room", "data": "from h2"})
        msg = await old.recv_message("room", timeout=5)
        assert msg["data"] == "from h2" and msg["from"] == "h2-ada"
        users = {s.user for s in server.hub.sessions.values()}
        assert users == {"h2-ada", "h1-bob"}
    finally:
        await old.close()


async def test_several_streams_one_connection(server: LabServer, h2: H2Client) -> None:
    streams = [await open_ws(h2, f"/ws?user=u{i}") for i in range(5)]
    assert len({ws.sid for ws in streams}) == 5
    for ws in streams:
        await subscribe(ws, "many")
    server.publish("many", {"n": 1})
    for ws in streams:
        assert (await ws.recv_type("message"))["data"] == {"n": 1}
    assert len(server.hub.sessions) == 5


async def test_messages_over_one_mebibyte(server: LabServer, h2: H2Client) -> None:
    a, b = await open_ws(h2), await open_ws(h2)
    await subscribe(a, "big")
    await subscribe(b, "big")
    text = "x" * (1536 * 1024)  # 1.5 MiB: six times the stream window, both ways
    await a.send({"type": "publish", "channel": "big", "data": text})
    for ws in (a, b):
        got = await ws.recv_type("message")
        assert got["data"] == text


async def test_slow_stream_does_not_stall_the_others(server: LabServer, h2: H2Client) -> None:
    slow, fast = await open_ws(h2, "/ws?user=slow"), await open_ws(h2, "/ws?user=fast")
    await subscribe(slow, "feed")
    await subscribe(fast, "feed")
    slow.pause()  # stops acknowledging: its stream window runs out at 256 KiB
    payload = "y" * 16 * 1024
    for i in range(64):  # 1 MiB: four windows
        server.publish("feed", {"i": i, "p": payload})
    for i in range(64):
        assert (await fast.recv_type("message"))["data"]["i"] == i
    session = next(s for s in server.hub.sessions.values() if s.user == "slow")
    assert session.port.buffered_bytes() > 0  # what the slow stream could not take waits
    slow.resume()
    for i in range(64):
        assert (await slow.recv_type("message"))["data"]["i"] == i


async def test_orderly_close(server: LabServer, h2: H2Client, wait_until) -> None:
    ws = await open_ws(h2)
    ws.close(1000, "bye")
    answer = await ws.recv()
    assert isinstance(answer, CloseConnection) and answer.code == 1000
    await asyncio.wait_for(ws.ended.wait(), 5)  # END_STREAM after the close frame
    await wait_until(lambda: not server.hub.sessions, what="the session to close")
    assert not h2.closed.is_set()  # the connection lives on
    again = await open_ws(h2)
    assert again.sid != ws.sid


async def test_abortive_close(server: LabServer, h2: H2Client, wait_until) -> None:
    closed: list[int | None] = []
    server.on("connection.closed", lambda e: closed.append(getattr(e, "code", None)))
    ws = await open_ws(h2)
    ws.reset()  # RST_STREAM: an abort, like a TCP reset
    await wait_until(lambda: not server.hub.sessions, what="the session to go")
    other = await open_ws(h2)  # the connection and its other streams live on
    await other.send({"type": "ping", "id": 7})
    assert (await other.recv_type("pong"))["id"] == 7


async def test_end_stream_is_fin(server: LabServer, h2: H2Client, wait_until) -> None:
    ws = await open_ws(h2)
    ws.end()  # END_STREAM without a close frame: the connection ends (1006)
    await wait_until(lambda: not server.hub.sessions, what="the session to go")


async def test_data_after_reset_is_ignored(server: LabServer, h2: H2Client) -> None:
    ws = await open_ws(h2)
    ws.reset()
    # DATA on the stream we reset: the server must neither fail nor drop the connection
    raw = bytes([0, 0, 4, 0, 0]) + ws.sid.to_bytes(4, "big") + b"late"
    h2.writer.write(raw)
    other = await open_ws(h2)
    await other.send({"type": "ping", "id": 1})
    assert (await other.recv_type("pong"))["id"] == 1
    assert h2.terminated is None


async def test_ping_and_reset_in_one_read(server: LabServer, h2: H2Client,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """A WebSocket ping and its stream's RST_STREAM in one read: the pong, written while
    the ping is read, is not framed on the stream h2 has already closed (h2 could not
    account for it), and nothing fails."""
    ws = await open_ws(h2)
    h2.h2.send_data(ws.sid, ws.ws.send(Ping(b"are you there")))
    h2.h2.reset_stream(ws.sid)
    h2.flush()  # one write
    other = await open_ws(h2)
    await other.send({"type": "ping", "id": 3})
    assert (await other.recv_type("pong"))["id"] == 3
    assert h2.terminated is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_http_requests_on_h2(server: LabServer, h2: H2Client) -> None:
    status, headers, body = await h2.get("/health")
    assert status == 200 and b"ok" in body.lower()
    status, headers, body = await h2.get("/")
    assert status == 200 and b"<html" in body.lower()
    assert "connection" not in headers and "transfer-encoding" not in headers
    status, _, body = await h2.get("/static/realtime-lab.js")
    assert status == 200 and len(body) > 1000
    status, _, _ = await h2.get("/no/such/page")
    assert status == 404


async def test_http1_still_served_on_the_same_port(server: LabServer) -> None:
    from tornado.httpclient import AsyncHTTPClient

    response = await AsyncHTTPClient().fetch(server.http_url + "/health")
    assert response.code == 200


async def test_connect_without_protocol_is_405(h2: H2Client) -> None:
    sid = h2.h2.get_next_available_stream_id()
    from .h2client import RequestStream

    stream = h2.streams[sid] = RequestStream(h2, sid)
    h2.h2.send_headers(sid, [(":method", "CONNECT"), (":authority", h2.authority)])
    h2.flush()
    await asyncio.wait_for(stream.ended.wait(), 5)
    assert stream.status == 405


class TestExtendedConnectOff:
    @pytest.fixture
    def options(self) -> ServerOptions:
        return ServerOptions(http2=True, http2_websockets=False)

    async def test_setting_missing_means_400(self, server: LabServer, h2: H2Client) -> None:
        assert h2.connect_protocol == 0
        # h2 (the client library) does not check the server's setting either: send anyway
        ws = await h2.websocket("/ws")
        assert ws.status == 400
        assert not server.hub.sessions
        status, _, _ = await h2.get("/health")  # ordinary requests still work
        assert status == 200


class TestLimitsPerStream:
    @pytest.fixture
    def options(self) -> ServerOptions:
        return ServerOptions(http2=True, max_connections_per_ip=3, max_message_bytes=1024)

    async def test_per_ip_limit_counts_streams(self, server: LabServer, h2: H2Client) -> None:
        streams = [await open_ws(h2) for _ in range(3)]
        extra = await h2.websocket("/ws")  # a fourth WebSocket from the same IP
        error = await extra.recv_json()
        assert error["type"] == "error" and error["code"] == "too_many_connections_from_ip"
        closing = await extra.recv()
        assert isinstance(closing, CloseConnection) and closing.code == 4104
        await streams[0].send({"type": "ping", "id": 3})  # the others are untouched
        assert (await streams[0].recv_type("pong"))["id"] == 3

    async def test_oversized_message_closes_that_stream_only(self, server: LabServer,
                                                              h2: H2Client) -> None:
        big, other = await open_ws(h2), await open_ws(h2)
        await big.send("x" * 4096)  # over max_message_bytes: 1009 for this stream alone
        closing = await big.recv()
        while not isinstance(closing, CloseConnection):
            closing = await big.recv()
        assert closing.code == 1009
        await other.send({"type": "ping", "id": 4})
        assert (await other.recv_type("pong"))["id"] == 4
