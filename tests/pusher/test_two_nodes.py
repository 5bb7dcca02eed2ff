"""Pusher clients on two servers linked by a broker: one publish path, one presence."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

import realtime_lab
from realtime_lab import LabServer, ServerOptions
from realtime_lab.broker import InMemoryBus
from realtime_lab.protocol.frames import OP_TEXT
from realtime_lab.pusher import PusherApp
from realtime_lab.pusher.auth import channel_auth


@pytest.fixture
async def nodes(app: PusherApp) -> AsyncIterator[tuple[LabServer, LabServer]]:
    bus = InMemoryBus()
    opts = ServerOptions(pusher_apps=(app,))
    a = await realtime_lab.serve(port=0, options=opts, broker=bus)
    b = await realtime_lab.serve(port=0, options=opts, broker=bus)
    try:
        yield a, b
    finally:
        await a.stop()
        await b.stop()


async def _join(raw_ws: Any, server: LabServer, app: PusherApp, user: str) -> Any:
    ws = await raw_ws(server.port, path=f"/app/{app.key}?protocol=7")
    socket_id = json.loads((await ws.recv_json())["data"])["socket_id"]
    data = json.dumps({"user_id": user, "user_info": {"name": user}})
    await ws.send_frame(OP_TEXT, json.dumps({"event": "pusher:subscribe", "data": {
        "channel": "presence-hall", "channel_data": data,
        "auth": channel_auth(app, socket_id, "presence-hall", data)}}).encode())
    return ws


async def _next(ws: Any, event: str) -> dict[str, Any]:
    msg = await ws.recv_json()
    while msg["event"] != event:
        msg = await ws.recv_json()
    return msg


async def test_presence_and_client_events_cross_nodes(nodes: tuple[LabServer, LabServer],
                                                      app: PusherApp, raw_ws: Any) -> None:
    a, b = nodes
    ada = await _join(raw_ws, a, app, "ada")
    first = json.loads((await _next(ada, "pusher_internal:subscription_succeeded"))["data"])
    assert first["presence"]["ids"] == ["ada"]
    bob = await _join(raw_ws, b, app, "bob")
    second = json.loads((await _next(bob, "pusher_internal:subscription_succeeded"))["data"])
    assert sorted(second["presence"]["ids"]) == ["ada", "bob"]
    added = json.loads((await _next(ada, "pusher_internal:member_added"))["data"])
    assert added["user_id"] == "bob"  # user_info stays on bob's server (docs/pusher.md)

    await bob.send_frame(OP_TEXT, json.dumps({"event": "client-hi", "channel": "presence-hall",
                                              "data": {"from": "b"}}).encode())
    got = await _next(ada, "client-hi")
    assert json.loads(got["data"]) == {"from": "b"} and got["user_id"] == "bob"
    assert a.hub.publish("presence-hall", {"n": 1}, event="news") == 1  # ada here, bob there
    assert json.loads((await _next(bob, "news"))["data"]) == {"n": 1}
    bob.close()
    removed = json.loads((await _next(ada, "pusher_internal:member_removed"))["data"])
    assert removed == {"user_id": "bob"}
