"""Security limits over real sockets: each refusal has its exact code; others are untouched.

Every test keeps a healthy client on the same server and checks it still gets its
messages after the limit was hit.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

import realtime_lab
from realtime_lab import LabServer
from realtime_lab.core.security import make_token
from realtime_lab.protocol.close_codes import CloseCode

SECRET = "test-secret"


async def raw(url: str, *, headers: dict[str, str] | None = None,
              send: list[dict[str, Any]] | None = None, timeout: float = 5.0,
              ssl_options: Any = None) -> tuple[list[dict[str, Any]], int | None]:
    """Connect, send ``send``, read until the server closes; return (messages, close code)."""
    req = HTTPRequest(url, headers=headers or {}, ssl_options=ssl_options)
    ws = await asyncio.wait_for(websocket_connect(req), timeout)
    for msg in send or []:
        await ws.write_message(json.dumps(msg))
    got: list[dict[str, Any]] = []
    while True:
        text = await asyncio.wait_for(ws.read_message(), timeout)
        if text is None:
            return got, ws.close_code
        got.append(json.loads(text))


async def still_healthy(client: Any, server: LabServer, note: str) -> None:
    server.publish("calm", note)
    assert (await client.recv_message("calm", timeout=5))["data"] == note


@pytest.fixture
async def lab(request: pytest.FixtureRequest) -> Any:
    opts = getattr(request, "param", {})
    server = await realtime_lab.serve(port=0, **opts)
    url = server.url
    if opts.get("token_secret"):
        url += "?token=" + make_token(opts["token_secret"], "healthy")
    healthy = await realtime_lab.connect(url, user="healthy")
    await healthy.subscribe("calm")
    events = server.events(maxsize=10_000)
    try:
        yield server, healthy, events
    finally:
        events.close()
        await healthy.close()
        await server.stop()


def params(**opts: Any) -> Any:
    return pytest.mark.parametrize("lab", [opts], indirect=True)


# ---------------------------------------------------------------------------- origins


@params(allowed_origins=("https://app.example.com", "https://*.trusted.org"))
async def test_origin_allow_list(lab: Any) -> None:
    server, healthy, events = lab
    for origin in ("https://app.example.com", "https://x.trusted.org"):
        ws = await websocket_connect(HTTPRequest(server.url, headers={"Origin": origin}))
        assert json.loads(await ws.read_message())["type"] == "welcome"
        ws.close()
    for origin in ("https://evil.com", "https://trusted.org.evil.com"):
        with pytest.raises(HTTPClientError) as info:
            await websocket_connect(HTTPRequest(server.url, headers={"Origin": origin}))
        assert info.value.code == 403
    refused = await events.wait_for("connection.refused", timeout=5)
    assert refused.code == 403 and refused.reason == "forbidden_origin"
    await still_healthy(healthy, server, "after origins")


@params()
async def test_default_origin_policy_is_same_host(lab: Any) -> None:
    server, healthy, _ = lab
    same = f"http://127.0.0.1:{server.port}"
    ws = await websocket_connect(HTTPRequest(server.url, headers={"Origin": same}))
    ws.close()
    with pytest.raises(HTTPClientError) as info:
        await websocket_connect(HTTPRequest(server.url, headers={"Origin": "http://other"}))
    assert info.value.code == 403
    await still_healthy(healthy, server, "after default origin")


# ---------------------------------------------------------------------------- connections


@params(max_connections=3)
async def test_max_connections_closes_with_4103(lab: Any) -> None:
    server, healthy, events = lab
    a = await realtime_lab.connect(server.url)
    b = await realtime_lab.connect(server.url)
    msgs, code = await raw(server.url)
    assert code == CloseCode.SERVER_FULL == 4103
    assert msgs == [{"type": "error", "code": "server_full",
                     "message": "the server has reached max_connections=3"}]
    limit = await events.wait_for("limit.exceeded", timeout=5)
    assert limit.limit == "max_connections" and limit.code == 4103
    await still_healthy(healthy, server, "after full")
    await a.close()
    await events.wait_for("connection.closed", timeout=5)
    c = await realtime_lab.connect(server.url)  # room again
    await c.close()
    await b.close()


@params(max_connections_per_ip=2)
async def test_max_connections_per_ip_closes_with_4104(lab: Any) -> None:
    server, healthy, events = lab
    other = await realtime_lab.connect(server.url)
    msgs, code = await raw(server.url)
    assert code == CloseCode.IP_LIMIT == 4104
    assert msgs[0]["code"] == "too_many_connections_from_ip"
    assert server.hub.admission.per_ip == {"127.0.0.1": 2}
    await still_healthy(healthy, server, "after ip limit")
    await other.close()


# ---------------------------------------------------------------------------- tokens


@params(token_secret=SECRET)
async def test_connect_token(lab: Any) -> None:
    server, healthy, events = lab
    good = make_token(SECRET, "ada", ttl=60)
    client = await realtime_lab.connect(f"{server.url}?token={good}")
    assert client.welcome["user"] == "ada", "the token's user wins"
    await client.close()
    for token, code in [(None, "unauthorized"), ("garbage", "unauthorized"),
                        (make_token("wrong", "ada"), "unauthorized"),
                        (make_token(SECRET, "ada", ttl=-1), "token_expired")]:
        url = server.url if token is None else f"{server.url}?token={token}"
        msgs, close = await raw(url)
        assert close == CloseCode.UNAUTHORIZED == 4001
        assert msgs[0]["code"] == code
    bearer = await websocket_connect(HTTPRequest(
        server.url, headers={"Authorization": f"Bearer {make_token(SECRET, 'bob')}"}))
    assert json.loads(await bearer.read_message())["user"] == "bob"
    bearer.close()
    await still_healthy(healthy, server, "after tokens")


async def test_token_verifier_callback() -> None:
    server = await realtime_lab.serve(
        port=0, token_verifier=lambda t: {"user": t[3:]} if t.startswith("ok-") else None)
    try:
        client = await realtime_lab.connect(f"{server.url}?token=ok-zoe")
        assert client.welcome["user"] == "zoe"
        msgs, code = await raw(f"{server.url}?token=nope")
        assert code == 4001 and msgs[0]["code"] == "unauthorized"
        await still_healthy(await _sub(server), server, "verifier")
        await client.close()
    finally:
        await server.stop()


async def _sub(server: LabServer) -> Any:
    client = await realtime_lab.connect(f"{server.url}?token=ok-h")
    await client.subscribe("calm")
    return client


# ---------------------------------------------------------------------------- messages


@params(max_message_bytes=1024)
async def test_message_too_big_closes_with_1009(lab: Any) -> None:
    server, healthy, _ = lab
    msgs, code = await raw(server.url, send=[{"type": "publish", "channel": "calm",
                                               "data": "x" * 2000}])
    assert code == CloseCode.MESSAGE_TOO_BIG == 1009
    await still_healthy(healthy, server, "after too big")


@params(max_subscriptions=2, max_channel_length=10)
async def test_subscription_and_channel_name_limits(lab: Any) -> None:
    server, healthy, events = lab
    msgs, code = await _requests(server, [
        {"type": "subscribe", "channel": "a", "id": 1},
        {"type": "subscribe", "channel": "b", "id": 2},
        {"type": "subscribe", "channel": "c", "id": 3},
        {"type": "subscribe", "channel": "x" * 11, "id": 4},
        {"type": "subscribe", "channel": "bad name!", "id": 5},
    ])
    errors = {m["id"]: m["code"] for m in msgs if m["type"] == "error"}
    assert errors == {3: "too_many_subscriptions", 4: "bad_channel", 5: "bad_channel"}
    limits = [e.limit for e in events.drain() if e.type == "limit.exceeded"]
    assert limits == ["max_subscriptions", "channel_name", "channel_name"]
    await still_healthy(healthy, server, "after subscription limits")


@params(publish_channels=("chat-*",))
async def test_client_publish_per_channel_pattern(lab: Any) -> None:
    server, healthy, _ = lab
    msgs, _ = await _requests(server, [
        {"type": "publish", "channel": "chat-1", "data": 1, "id": 1},
        {"type": "publish", "channel": "calm", "data": "intruder", "id": 2},
    ])
    replies = {m["id"]: m.get("code", m["type"]) for m in msgs if "id" in m}
    assert replies == {1: "published", 2: "forbidden"}
    await still_healthy(healthy, server, "after publish refusal")


async def _requests(server: LabServer, requests: list[dict[str, Any]]
                    ) -> tuple[list[dict[str, Any]], None]:
    client = await realtime_lab.connect(server.url)
    got: list[dict[str, Any]] = []
    futures = []
    for req in requests:
        futures.append(asyncio.ensure_future(client.request(req)))
    for fut in futures:
        try:
            got.append(await fut)
        except realtime_lab.RequestFailed as err:
            got.append({"type": "error", "code": err.code, "id": None})
    await client.close()
    for msg, req in zip(got, requests, strict=True):
        msg["id"] = req["id"]
    return got, None


# ---------------------------------------------------------------------------- timeouts


async def test_idle_timeout_closes_with_4105_and_a_talking_client_stays() -> None:
    server = await realtime_lab.serve(port=0, idle_timeout=0.5)  # ticks every 0.125 s
    healthy = await realtime_lab.connect(server.url)
    await healthy.subscribe("calm")
    events = server.events("limit.exceeded")
    stop = asyncio.Event()

    async def chatter() -> None:
        while not stop.is_set():
            await healthy.ping()
            await asyncio.sleep(0.05)  # pacing the client, not waiting for the server

    task = asyncio.create_task(chatter())
    try:
        msgs, code = await raw(server.url, timeout=5)
        assert code == CloseCode.IDLE_TIMEOUT == 4105
        assert msgs[-1]["code"] == "idle_timeout"
        assert (await events.wait_for(timeout=5)).limit == "idle_timeout"
        await still_healthy(healthy, server, "after idle")
    finally:
        stop.set()
        await task
        await healthy.close()
        await server.stop()


async def test_handshake_timeout_drops_silent_connections() -> None:
    server = await realtime_lab.serve(port=0, handshake_timeout=0.3)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        data = await asyncio.wait_for(reader.read(), 5)  # EOF: the server hung up
        assert data == b""
        writer.close()
    finally:
        await server.stop()


# ---------------------------------------------------------------------------- TLS


@pytest.fixture
def certs(tmp_path: Path) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed: apt-get install openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return str(cert), str(key)


async def test_tls(certs: tuple[str, str]) -> None:
    cert, key = certs
    server = await realtime_lab.serve(port=0, certfile=cert, keyfile=key)
    try:
        assert server.url.startswith("wss://")
        ctx = ssl.create_default_context(cafile=cert)
        ws = await websocket_connect(HTTPRequest(server.url, ssl_options=ctx))
        assert json.loads(await ws.read_message())["type"] == "welcome"
        ws.close()
    finally:
        await server.stop()


async def test_tokens_are_redacted_in_the_access_log(caplog: pytest.LogCaptureFixture) -> None:
    server = await realtime_lab.serve(port=0, token_secret=SECRET)
    caplog.set_level("INFO", "tornado.access")
    try:
        token = make_token(SECRET, "ada")
        client = await realtime_lab.connect(f"{server.url}?token={token}")
        await client.close()
        lines = [r.getMessage() for r in caplog.records if r.name == "tornado.access"]
        assert any("token=<redacted>" in line for line in lines)
        assert not any(token in line for line in lines)
    finally:
        await server.stop()
