"""The Pusher HTTP API with the real ``pusher`` SDK (PyPI), and pusher-js receiving."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any
from urllib.parse import urlencode

import pusher
import pytest
from pusher.errors import PusherBadAuth, PusherBadRequest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from realtime_lab import LabServer
from realtime_lab.pusher import PusherApp
from realtime_lab.pusher.auth import sign, string_to_sign

PusherJs = Any  # tests/pusher/conftest.py


def sdk(server: LabServer, app: PusherApp, secret: str | None = None) -> pusher.Pusher:
    return pusher.Pusher(app_id=app.app_id, key=app.key, secret=secret or app.secret,
                         host="127.0.0.1", port=server.port, ssl=False, timeout=5)


async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """The SDK is blocking (requests): run it off the loop the server runs on."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def test_sdk_triggers_events_that_pusher_js_receives(
        server: LabServer, app: PusherApp, pusher_js: PusherJs) -> None:
    await pusher_js.connect("a", server, user="ada")
    socket_b = await pusher_js.connect("b", server, user="bob")
    for client in ("a", "b"):
        pusher_js.send(op="subscribe", id=client, channel="orders")
        await pusher_js.expect(id=client, kind="succeeded", channel="orders")
    client = sdk(server, app)
    await call(client.trigger, ["orders", "empty-channel"], "created", {"id": 7})
    for who in ("a", "b"):
        got = await pusher_js.expect(id=who, kind="event", event="created")
        assert got["data"] == {"id": 7}
    # socket_id leaves that connection out
    await call(client.trigger, "orders", "updated", "just text", socket_id=socket_b)
    got = await pusher_js.expect(id="a", kind="event", event="updated")
    assert got["data"] == "just text"
    await call(client.trigger_batch, [
        {"channel": "orders", "name": "one", "data": {"n": 1}},
        {"channel": "orders", "name": "two", "data": json.dumps([1, 2])}])
    assert (await pusher_js.expect(id="b", kind="event", event="one"))["data"] == {"n": 1}
    assert (await pusher_js.expect(id="b", kind="event", event="two"))["data"] == [1, 2]
    # b got the batch, sent after "updated", in order: "updated" never came to it
    assert not pusher_js.seen(id="b", kind="event", event="updated")


async def test_sdk_reads_channels_and_users(server: LabServer, app: PusherApp,
                                            pusher_js: PusherJs) -> None:
    for user in ("ada", "bob"):
        await pusher_js.connect(user, server, user=user)
        pusher_js.send(op="subscribe", id=user, channel="presence-room")
        await pusher_js.expect(id=user, kind="succeeded", channel="presence-room")
    pusher_js.send(op="subscribe", id="ada", channel="news")
    await pusher_js.expect(id="ada", kind="succeeded", channel="news")
    client = sdk(server, app)
    listed = await call(client.channels_info)
    assert set(listed["channels"]) == {"presence-room", "news"}
    presence = await call(client.channels_info, prefix_filter="presence-",
                          attributes=["user_count"])
    assert presence == {"channels": {"presence-room": {"user_count": 2}}}
    info = await call(client.channel_info, "presence-room",
                      ["user_count", "subscription_count"])
    assert info == {"occupied": True, "user_count": 2, "subscription_count": 2}
    assert await call(client.channel_info, "nobody-here") == {"occupied": False}
    users = await call(client.users_info, "presence-room")
    assert sorted(u["id"] for u in users["users"]) == ["ada", "bob"]
    with pytest.raises(PusherBadRequest):
        await call(client.users_info, "news")
    with pytest.raises(PusherBadRequest):
        await call(client.channel_info, "news", ["user_count"])


async def test_a_wrong_secret_is_refused_with_401(server: LabServer, app: PusherApp) -> None:
    with pytest.raises(PusherBadAuth):
        await call(sdk(server, app, secret="not-the-secret").trigger, "a", "e", {})
    with pytest.raises(PusherBadAuth):
        await call(sdk(server, app, secret="not-the-secret").channels_info)


def signed_url(server: LabServer, app: PusherApp, method: str, path: str, body: bytes = b"",
               **params: Any) -> str:
    query = {"auth_key": app.key, "auth_timestamp": str(int(time.time())),
             "auth_version": "1.0", **{k: str(v) for k, v in params.items()}}
    if body:
        query["body_md5"] = hashlib.md5(body).hexdigest()
    query["auth_signature"] = sign(app.secret, string_to_sign(method, path, query))
    return f"{server.http_url}{path}?{urlencode(query)}"


async def _status(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, str]:
    try:
        response = await AsyncHTTPClient().fetch(url, method=method, body=body,
                                                 raise_error=True)
        return response.code, response.body.decode()
    except HTTPClientError as exc:
        assert exc.response is not None
        return exc.code, exc.response.body.decode()


HOSTILE_BODIES = [
    b"{not json", b"[]", b'"text"',
    b'{"name": "e", "data": "x"}',  # no channels
    b'{"name": "e", "data": "x", "channels": []}',
    b'{"name": "e", "data": "x", "channels": "a"}',
    b'{"name": "e", "data": "x", "channels": [5]}',
    b'{"name": "e", "data": "x", "channels": ["bad name!"]}',
    json.dumps({"name": "e", "data": "x", "channels": [f"c{i}" for i in range(101)]}).encode(),
    b'{"name": "", "data": "x", "channels": ["a"]}',
    b'{"name": 3, "data": "x", "channels": ["a"]}',
    json.dumps({"name": "e" * 201, "data": "x", "channels": ["a"]}).encode(),
    b'{"name": "e", "data": "x", "channels": ["a"], "socket_id": "nope"}',
    b'{"name": "e", "data": "x", "channels": ["a"], "socket_id": 12}',
]


@pytest.mark.parametrize("body", HOSTILE_BODIES)
async def test_hostile_event_bodies_get_400(server: LabServer, app: PusherApp,
                                            body: bytes) -> None:
    path = f"/apps/{app.app_id}/events"
    code, text = await _status(signed_url(server, app, "POST", path, body), "POST", body)
    assert code == 400, text
    assert text.strip()
    assert server.hub.stats.internal_errors == 0


async def test_too_large_data_gets_413_and_bad_requests_their_codes(
        server: LabServer, app: PusherApp) -> None:
    path = f"/apps/{app.app_id}/events"
    body = json.dumps({"name": "e", "channels": ["a"], "data": "x" * 20_000}).encode()
    assert (await _status(signed_url(server, app, "POST", path, body), "POST", body))[0] == 413
    bad_batch = json.dumps({"batch": [{"channel": "a", "name": "e", "data": "x"}] * 11}).encode()
    batch = f"/apps/{app.app_id}/batch_events"
    assert (await _status(signed_url(server, app, "POST", batch, bad_batch), "POST",
                          bad_batch))[0] == 400
    assert (await _status(signed_url(server, app, "GET", "/apps/nope/channels")))[0] == 404
    listing = f"/apps/{app.app_id}/channels"
    assert (await _status(signed_url(server, app, "GET", listing, info="bogus")))[0] == 400
    assert (await _status(signed_url(server, app, "GET", listing, info="user_count")))[0] == 400
    stale = signed_url(server, app, "GET", listing).replace(
        "auth_timestamp=", "auth_timestamp=1")  # breaks the time and the signature
    assert (await _status(stale))[0] == 401
    assert (await _status(f"{server.http_url}{listing}"))[0] == 401  # not signed at all
    body = b'{"name": "e", "data": "x", "channels": ["a"]}'
    tampered = signed_url(server, app, "POST", path, b'{"name": "other"}')
    assert (await _status(tampered, "POST", body))[0] == 401  # body_md5 does not match
    assert server.hub.stats.internal_errors == 0
