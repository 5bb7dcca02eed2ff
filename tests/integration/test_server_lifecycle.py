"""LabServer: start on the running loop, URLs, stop (1001, idempotent), port in use."""

from __future__ import annotations

import asyncio

import pytest

import realtime_lab
from realtime_lab import LabServer, PortInUseError, ServerOptions
from realtime_lab.errors import ServerNotRunning


async def test_stop_closes_clients_with_going_away(server: LabServer, connect) -> None:
    clients = [await connect(user=f"u{i}") for i in range(3)]
    for client in clients:
        await client.subscribe("room")
    assert server.running
    await server.stop()
    for client in clients:
        assert await client.wait_closed(5) == 1001
    assert server.hub.sessions == {} and server.hub.channels == {}
    assert not server.running
    await server.stop()  # idempotent
    await asyncio.gather(server.stop(), server.stop())


async def test_concurrent_stops_wait_for_the_same_stop(server: LabServer, connect) -> None:
    client = await connect()
    first = asyncio.create_task(server.stop())
    await asyncio.sleep(0)  # let the first stop begin
    assert server._stopping is not None and not server._stopping.done()
    await asyncio.wait_for(server.stop(), 5)
    await asyncio.wait_for(first, 5)
    assert server.hub.sessions == {}
    assert await client.wait_closed(5) == 1001


async def test_stop_gives_up_on_clients_that_never_answer(raw_ws) -> None:
    srv = await realtime_lab.serve(port=0, close_timeout=0.2)
    raw = await raw_ws(srv.port)
    assert len(srv.hub.sessions) == 1
    await asyncio.wait_for(srv.stop(), 5)
    assert srv.hub.sessions == {}, "stop drops sessions whose socket did not close in time"
    assert await raw.read_close() == 1001


async def test_port_in_use(server: LabServer) -> None:
    other = LabServer(host="127.0.0.1", port=server.port)
    with pytest.raises(PortInUseError, match="already in use"):
        await other.start()
    assert not other.running


async def test_start_twice_raises() -> None:
    srv = await realtime_lab.serve(port=0)
    try:
        with pytest.raises(RuntimeError):
            await srv.start()
    finally:
        await srv.stop()


async def test_restart_on_the_same_port_after_stop() -> None:
    first = await realtime_lab.serve(port=0)
    port = first.port
    await first.stop()
    second = await realtime_lab.serve(port=port)
    try:
        client = await realtime_lab.connect(second.url)
        await client.close()
    finally:
        await second.stop()


async def test_urls_and_repr(server: LabServer) -> None:
    assert server.url == f"ws://127.0.0.1:{server.port}/ws"
    assert server.http_url == f"http://127.0.0.1:{server.port}"
    assert repr(server) == f"<LabServer {server.url} connections=0>"


def test_not_started() -> None:
    srv = LabServer()
    assert not srv.running
    with pytest.raises(ServerNotRunning):
        _ = srv.port
    with pytest.raises(ServerNotRunning):
        _ = srv.url
    assert repr(srv) == "<LabServer not started connections=0>"


@pytest.mark.parametrize(("host", "shown"), [
    ("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("::", "127.0.0.1"),
    ("", "127.0.0.1"), ("::1", "[::1]"), ("localhost", "localhost"),
])
def test_url_host(host: str, shown: str) -> None:
    assert LabServer(host=host)._url_host() == shown


async def test_serve_with_option_keywords() -> None:
    srv = await realtime_lab.serve(port=0, options=ServerOptions(max_subscriptions=3),
                                   heartbeat_interval=5)
    try:
        assert srv.options.max_subscriptions == 3 and srv.options.heartbeat_interval == 5
        client = await realtime_lab.connect(srv.url)
        assert client.welcome["heartbeat"]["interval"] == 5
        await client.close()
    finally:
        await srv.stop()


async def test_async_context_manager() -> None:
    async with LabServer() as srv:
        assert srv.running
        client = await realtime_lab.connect(srv.url)
    assert not srv.running
    assert await client.wait_closed(5) == 1001


async def test_serve_forever_stops_on_cancel() -> None:
    srv = await LabServer().start()
    client = await realtime_lab.connect(srv.url)
    task = asyncio.create_task(srv.serve_forever())
    await asyncio.sleep(0)  # the task starts waiting
    assert srv.running
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert not srv.running
    assert await client.wait_closed(5) == 1001
