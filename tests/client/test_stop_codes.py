"""Close codes with STOP advice: the client stops, says why, and does not hammer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

import realtime_lab
from realtime_lab import ConnectionClosed
from realtime_lab.client import Backoff, Client, ClientState
from realtime_lab.testing import FaultProxy, RestartableServer

EAGER = Backoff(initial=0.01, max_delay=0.01, jitter="none")  # would hammer if it retried


async def attempts_after(proxy: FaultProxy, settle: float = 0.3) -> int:
    """Connections the proxy saw, after leaving time for any (wrong) retry."""
    await asyncio.sleep(settle)
    return proxy.accepted


async def test_bad_user_id_4004_stops_without_retry(
        lab: RestartableServer, proxy: FaultProxy) -> None:
    client = Client(proxy.url(), user="x" * 500, reconnect=True, backoff=EAGER)
    with pytest.raises(ConnectionClosed) as info:
        await client.connect(timeout=2)
    assert info.value.code == 4004
    assert client.state is ClientState.CLOSED and client.close_code == 4004
    assert "user id" in (client.close_reason or "")
    assert "not reconnecting" in (client.close_reason or "")
    assert await attempts_after(proxy) == 1


async def test_protocol_error_1009_stops_without_retry(
        lab: RestartableServer, proxy: FaultProxy) -> None:
    client = await realtime_lab.connect(proxy.url(), user="big", reconnect=True, backoff=EAGER)
    limit = client.welcome["limits"]["max_message_bytes"]
    await client.send({"type": "publish", "channel": "room", "data": "x" * (limit + 10)})
    assert await client.wait_closed(5) == 1009
    assert client.history[-1].state is ClientState.CLOSED
    assert client.history[-1].code == 1009
    assert not any(c.state is ClientState.RECONNECTING for c in client.history)
    assert await attempts_after(proxy) == 1


async def test_too_many_errors_4008_stops_without_retry(
        lab: RestartableServer, proxy: FaultProxy) -> None:
    """``error_limit`` invalid messages (default 20 within 10 s): closed with 4008, STOP."""
    client = await realtime_lab.connect(proxy.url(), user="noisy", reconnect=True, backoff=EAGER)
    count, _window = lab.current.options.error_limit or (20, 10.0)
    for _ in range(count):
        await client.send({"type": "no_such_type"})
    assert await client.wait_closed(5) == 4008
    assert "not reconnecting" in (client.close_reason or "")
    assert not any(c.state is ClientState.RECONNECTING for c in client.history)
    codes = []
    with pytest.raises(ConnectionClosed):
        while True:
            codes.append((await client.recv(2))["code"])
    assert codes == ["unknown_type"] * count + ["too_many_errors"]
    assert await attempts_after(proxy) == 1


class Refuse(RequestHandler):
    def get(self) -> None:
        self.set_status(403)
        self.finish("no token")


@pytest.fixture
async def refusing_port() -> AsyncIterator[int]:
    """A plain HTTP server that refuses the WebSocket handshake with 403."""
    sockets = bind_sockets(0, "127.0.0.1")
    http = HTTPServer(Application([(r"/ws", Refuse)]))
    http.add_sockets(sockets)
    yield sockets[0].getsockname()[1]
    http.stop()
    await http.close_all_connections()


async def test_handshake_refused_403_stops_without_retry(refusing_port: int) -> None:
    async with FaultProxy(refusing_port) as proxy:
        client = Client(proxy.url(), reconnect=True, backoff=EAGER)
        with pytest.raises(Exception, match="403"):
            await client.connect(timeout=2)
        assert client.state is ClientState.CLOSED
        assert "HTTP 403" in (client.close_reason or "")
        assert await attempts_after(proxy) == 1


async def test_backoff_code_does_reconnect_and_max_attempts_bounds_it(
        lab: RestartableServer, proxy: FaultProxy) -> None:
    client = await realtime_lab.connect(proxy.url(), reconnect=True, max_attempts=3,
                                        backoff=Backoff(initial=0.02, factor=2, jitter="none"))
    proxy.refuse = True
    proxy.cut()
    assert await client.wait_closed(5) is None
    delays = [c.delay for c in client.history if c.state is ClientState.RECONNECTING]
    assert delays == pytest.approx([0.02, 0.04, 0.08])
    assert await attempts_after(proxy, 0.2) == 4

