"""The Tornado transport: the port tolerates a socket that is already gone."""

from __future__ import annotations

import errno
import json

import pytest

import realtime_lab
from realtime_lab import LabServer
from realtime_lab import server as server_module
from realtime_lab.core import ConnectionState


async def test_port_after_the_socket_closed(server: LabServer, connect, wait_until) -> None:
    client = await connect()
    session = server.hub.sessions[client.session]
    port = session.port
    assert port.remote == "127.0.0.1"
    assert port.buffered_bytes() == 0
    drained: list[bool] = []
    port.when_drained(lambda: drained.append(True))
    await wait_until(lambda: drained == [True], what="the drained callback")
    await client.close()
    await wait_until(lambda: session.state is ConnectionState.CLOSED, what="the close")
    # none of these may raise once the stream is closed
    port.write(b"\x81\x00")
    port.ping()
    port.when_drained(lambda: drained.append(False))
    assert drained == [True]


@pytest.mark.parametrize("query", ["?user=" + "u" * 129, "?user="])
async def test_bad_user_id_closes_with_4004(server: LabServer, raw_ws, query: str) -> None:
    raw = await raw_ws(server.port, path="/ws" + query)
    await raw.send_json({"type": "ping", "id": 1})  # ignored: there is no session
    assert await raw.read_close() == 4004
    texts = [json.loads(f.payload) for f in raw.frames if f.opcode == 0x1]
    assert texts == [{"type": "error", "code": "bad_user",
                      "message": "user id must be 1 to 128 characters"}], "no welcome, no pong"
    assert server.hub.sessions == {} and server.hub.stats.connections_opened == 0


async def test_other_bind_errors_are_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EACCES, "permission denied")

    monkeypatch.setattr(server_module, "bind_sockets", refuse)
    srv = LabServer()
    with pytest.raises(PermissionError):
        await srv.start()
    assert not srv.running


async def test_stop_before_start_is_a_no_op() -> None:
    srv = LabServer()
    await srv.stop()
    assert not srv.running


async def test_static_route_serves_nothing_outside(server: LabServer) -> None:
    from tornado.httpclient import AsyncHTTPClient

    response = await AsyncHTTPClient().fetch(server.http_url + "/static/../server.py",
                                             raise_error=False, request_timeout=5)
    assert response.code in (403, 404)


async def test_client_connect_to_a_closed_port_fails() -> None:
    srv = await realtime_lab.serve(port=0)
    port = srv.port
    await srv.stop()
    with pytest.raises(OSError):
        await realtime_lab.connect(f"ws://127.0.0.1:{port}/ws", timeout=5)
