"""The Tornado transport: the port tolerates a socket that is already gone."""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import os

import pytest

import realtime_lab
from realtime_lab import LabServer
from realtime_lab import server as server_module
from realtime_lab.core import ConnectionState
from realtime_lab.protocol.frames import apply_mask, parse_frames


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


def _masked(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + apply_mask(payload, mask)


def _upgrade_request(port: int, **extra: str) -> bytes:
    headers = {"Host": f"127.0.0.1:{port}", "Upgrade": "websocket", "Connection": "Upgrade",
               "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
               "Sec-WebSocket-Version": "13", **extra}
    lines = ["GET /ws HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items() if v]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_frames_sent_with_the_upgrade_request_are_not_lost(server: LabServer) -> None:
    """A client that does not wait for the 101: Tornado reads its first frames along with
    the request; they are handed to the connection with the socket."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(_upgrade_request(server.port)
                     + _masked(0x9, b"early ping")
                     + _masked(0x1, json.dumps({"type": "ping", "id": "early"}).encode()))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        data = b""
        async with asyncio.timeout(5):
            while True:
                frames, _ = parse_frames(data)
                texts = [json.loads(f.payload) for f in frames if f.opcode == 0x1]
                if any(t.get("id") == "early" for t in texts):
                    break
                data += await reader.read(65536)
        assert (0xA, b"early ping") in [(f.opcode, f.payload) for f in frames]
        assert [t["type"] for t in texts] == ["welcome", "pong"]
    finally:
        writer.close()


@pytest.mark.parametrize(("extra", "status"), [
    ({"Sec-WebSocket-Version": "8"}, 426),
    ({"Sec-WebSocket-Key": ""}, 400),
    ({"Upgrade": ""}, 400),
    ({"Connection": "keep-alive"}, 400),
])
async def test_bad_upgrade_requests_get_their_status(server: LabServer, extra: dict[str, str],
                                                     status: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(_upgrade_request(server.port, **extra))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
        if status == 426:
            assert b"sec-websocket-version: 13" in head.lower()
    finally:
        writer.close()
    assert server.hub.sessions == {}
