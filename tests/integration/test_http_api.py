"""HTTP endpoints beside the WebSocket: /health, /api/channels, server-side publish."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

import realtime_lab
from realtime_lab import LabServer, ServerOptions

TOKEN = "s3cret"


@pytest.fixture
def options() -> ServerOptions:
    return ServerOptions(api_token=TOKEN)


async def fetch(server: LabServer, path: str, **kwargs: Any) -> HTTPResponse:
    return await AsyncHTTPClient().fetch(server.http_url + path, raise_error=False,
                                         request_timeout=5, **kwargs)


def body(response: HTTPResponse) -> Any:
    assert response.headers["Content-Type"].startswith("application/json")
    return json.loads(response.body)


async def post(server: LabServer, channel: str, payload: bytes | str,
               token: str | None = TOKEN) -> HTTPResponse:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return await fetch(server, f"/api/channels/{channel}/messages", method="POST",
                       body=payload, headers=headers)


async def test_health(server: LabServer, connect) -> None:
    await connect()
    response = await fetch(server, "/health")
    assert response.code == 200
    info = body(response)
    assert info["status"] == "ok" and info["version"] == realtime_lab.__version__
    assert info["connections"] == 1 and info["channels"] == 0 and info["uptime"] >= 0
    assert response.headers["Cache-Control"] == "no-store"


async def test_channels(server: LabServer, connect) -> None:
    assert body(await fetch(server, "/api/channels")) == {"channels": []}
    a, b = await connect(user="a"), await connect(user="b")
    await a.subscribe("zeta")
    await a.subscribe("alpha")
    await b.subscribe("alpha")
    channels = body(await fetch(server, "/api/channels"))["channels"]
    assert [(c["name"], c["subscribers"], c["members"]) for c in channels] == [
        ("alpha", 2, 2), ("zeta", 1, 1)]


async def test_publish_ok(server: LabServer, connect) -> None:
    client = await connect()
    await client.subscribe("news")
    response = await post(server, "news", json.dumps({"data": {"headline": "up"}}))
    assert response.code == 200
    assert body(response) == {"channel": "news", "recipients": 1}
    assert await client.recv_message("news", timeout=5) == {
        "type": "message", "channel": "news", "data": {"headline": "up"}}
    response = await post(server, "empty", json.dumps({"data": 1}))
    assert body(response) == {"channel": "empty", "recipients": 0}


@pytest.mark.parametrize(("token", "code"), [(None, 401), ("wrong", 401), ("", 401),
                                             (TOKEN + "x", 401)])
async def test_publish_wrong_token(server: LabServer, connect, token: str | None,
                                   code: int) -> None:
    client = await connect()
    await client.subscribe("news")
    response = await post(server, "news", json.dumps({"data": 1}), token=token)
    assert response.code == code
    assert body(response)["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert server.hub.channels["news"].messages == 0


@pytest.mark.parametrize(("payload", "error"), [
    (b"{not json", "bad_json"),
    (b'{"data": NaN}', "bad_json"),
    (b'{"data": Infinity}', "bad_json"),
    (b"[" * 5000, "bad_json"),
    (b'{"data": "\xff"}', "bad_json"),
    (b"", "missing_field"),
    (b"[1]", "missing_field"),
    (b'{"value": 1}', "missing_field"),
    # issue 13: JSON that parses to a value outside the data model (before: 500)
    (b'{"data": 1e400}', "bad_value"),
    (b'{"data": [18446744073709551616]}', "bad_value"),
    (b'{"data": "\\ud800"}', "bad_value"),
    (b'{"data": {"\\udc00": 1}}', "bad_value"),
])
async def test_publish_bad_body(server: LabServer, connect, payload: bytes, error: str) -> None:
    client = await connect()
    await client.subscribe("news")
    response = await post(server, "news", payload)
    assert response.code == 400
    assert body(response)["error"] == error
    assert server.hub.channels["news"].messages == 0
    assert client.state.value == "open"


async def test_publish_body_over_the_size_limit(server: LabServer, connect) -> None:
    client = await connect()
    await client.subscribe("news")
    big = json.dumps({"data": "x" * server.options.max_message_bytes})
    response = await post(server, "news", big)
    assert response.code == 400
    assert server.hub.channels["news"].messages == 0


async def test_publish_bad_channel(server: LabServer) -> None:
    response = await post(server, "bad%20name", json.dumps({"data": 1}))
    assert response.code == 400
    assert body(response)["error"] == "bad_channel"


async def test_publish_disabled_without_token() -> None:
    srv = await realtime_lab.serve(port=0)
    try:
        response = await post(srv, "news", json.dumps({"data": 1}))
        assert response.code == 403
        assert body(response)["error"] == "api_disabled"
    finally:
        await srv.stop()


async def test_cluster_without_a_broker(server: LabServer) -> None:
    response = await fetch(server, "/api/cluster")
    assert response.code == 200
    assert body(response) == {"node": None, "broker": None, "nodes": None}
