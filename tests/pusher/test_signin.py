"""User sign-in (pusher:signin) with real pusher-js, messages to a user and terminating
its connections with the ``pusher`` SDK."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pusher
import pytest

from realtime_lab import LabServer
from realtime_lab.protocol.frames import OP_TEXT
from realtime_lab.pusher import PusherApp
from realtime_lab.pusher import protocol as pp
from realtime_lab.pusher.auth import authenticate_user

PusherJs = Any  # tests/pusher/conftest.py


def sdk(server: LabServer, app: PusherApp) -> pusher.Pusher:
    return pusher.Pusher(app_id=app.app_id, key=app.key, secret=app.secret,
                         host="127.0.0.1", port=server.port, ssl=False, timeout=5)


async def test_signin_send_to_user_and_terminate(server: LabServer, app: PusherApp,
                                                 pusher_js: PusherJs, wait_until: Any) -> None:
    await pusher_js.connect("tab1", server, user="ada")
    await pusher_js.connect("tab2", server, user="ada")
    await pusher_js.connect("bob", server, user="bob")
    for client in ("tab1", "tab2", "bob"):
        pusher_js.send(op="signin", id=client)
        signed = await pusher_js.expect(id=client, kind="signed_in")
        assert json.loads(signed["data"]["user_data"])["id"] in ("ada", "bob")
    user_channel = pp.hub_channel("#server-to-user-ada")
    await wait_until(lambda: (server.channel_info(user_channel) or {}).get("subscribers") == 2)
    client = sdk(server, app)
    await asyncio.to_thread(client.send_to_user, "ada", "notice", {"n": 1})
    for tab in ("tab1", "tab2"):
        got = await pusher_js.expect(id=tab, kind="user_event", event="notice")
        assert got["data"] == {"n": 1}
    assert not pusher_js.seen(id="bob", kind="user_event")
    await asyncio.to_thread(client.terminate_user_connections, "ada")
    for tab in ("tab1", "tab2"):
        await pusher_js.expect_where(lambda e, t=tab: e.get("id") == t and e.get("kind") ==
                                     "state" and e.get("current") != "connected")
    await wait_until(lambda: len(server.hub.sessions) == 1)  # bob stays


@pytest.mark.parametrize("payload", [
    {"auth": "lab-key:00", "user_data": '{"id":"ada"}'},
    {"auth": 5, "user_data": '{"id":"ada"}'},
    {"user_data": '{"id":"ada"}'},
])
async def test_bad_signins_are_refused(server: LabServer, raw_ws: Any,
                                       payload: dict[str, Any]) -> None:
    ws = await raw_ws(server.port, path="/app/lab-key?protocol=7")
    await ws.recv_json()
    await ws.send_frame(OP_TEXT, json.dumps({"event": "pusher:signin",
                                             "data": payload}).encode())
    err = await ws.recv_json()
    assert err["event"] == "pusher:error"
    assert server.hub.stats.internal_errors == 0


async def test_the_user_channel_is_its_users_only(server: LabServer, app: PusherApp,
                                                  raw_ws: Any) -> None:
    ws = await raw_ws(server.port, path="/app/lab-key?protocol=7")
    socket_id = json.loads((await ws.recv_json())["data"])["socket_id"]
    await ws.send_frame(OP_TEXT, b'{"event":"pusher:subscribe",'
                                 b'"data":{"channel":"#server-to-user-ada"}}')
    err = await ws.recv_json()
    assert err["event"] == "pusher:subscription_error"
    assert err["channel"] == "#server-to-user-ada"
    signin = authenticate_user(app, socket_id, {"id": "bob"})
    await ws.send_frame(OP_TEXT, json.dumps({"event": "pusher:signin",
                                             "data": signin}).encode())
    assert (await ws.recv_json())["event"] == "pusher:signin_success"
    await ws.send_frame(OP_TEXT, b'{"event":"pusher:subscribe",'
                                 b'"data":{"channel":"#server-to-user-ada"}}')
    assert (await ws.recv_json())["event"] == "pusher:subscription_error"  # bob is not ada
    await ws.send_frame(OP_TEXT, b'{"event":"pusher:subscribe",'
                                 b'"data":{"channel":"#server-to-user-bob"}}')
    ok = await ws.recv_json()
    assert ok == {"event": "pusher_internal:subscription_succeeded",
                  "channel": "#server-to-user-bob", "data": "{}"}
