"""Webhooks to a local receiver that checks them with the ``pusher`` SDK's own validation."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pusher
import pytest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

import realtime_lab
from realtime_lab import LabServer, ServerOptions
from realtime_lab.protocol.frames import OP_TEXT
from realtime_lab.pusher import PusherApp
from realtime_lab.pusher.auth import channel_auth

PusherJs = Any  # tests/pusher/conftest.py


class Receiver:
    """A webhook endpoint: validates each POST with the SDK; fails the first ``fail``."""

    def __init__(self, app: PusherApp, fail: int = 0) -> None:
        self.sdk = pusher.Pusher(app_id=app.app_id, key=app.key, secret=app.secret)
        self.fail = fail
        self.posts = 0
        self.invalid = 0
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.url = ""


class Hook(RequestHandler):
    def initialize(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def post(self) -> None:
        rec = self.receiver
        rec.posts += 1
        if rec.fail > 0:
            rec.fail -= 1
            self.set_status(503)
            return
        body = rec.sdk.validate_webhook(self.request.headers.get("X-Pusher-Key"),
                                        self.request.headers.get("X-Pusher-Signature"),
                                        self.request.body.decode())
        if body is None:
            rec.invalid += 1
            self.set_status(401)
            return
        rec.events.extend(body["events"])
        rec.changed.set()


async def wait_for(receiver: Receiver, predicate: Any, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate(receiver.events):
        remaining = deadline - loop.time()
        assert remaining > 0, f"webhooks never matched; got {receiver.events}"
        receiver.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receiver.changed.wait(), remaining)


@pytest.fixture
async def receiver(app: PusherApp) -> AsyncIterator[Receiver]:
    rec = Receiver(app, fail=1)
    sockets = bind_sockets(0, "127.0.0.1")
    http = HTTPServer(Application([(r"/hook", Hook, {"receiver": rec})]))
    http.add_sockets(sockets)
    rec.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/hook"
    try:
        yield rec
    finally:
        http.stop()
        await http.close_all_connections()


@pytest.fixture
async def hooked(receiver: Receiver, app: PusherApp) -> AsyncIterator[LabServer]:
    srv = await realtime_lab.serve(port=0, options=ServerOptions(
        pusher_apps=(app,), pusher_webhooks=(receiver.url,)))
    try:
        yield srv
    finally:
        await srv.stop()


def names(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["name"], e["channel"]) for e in events]


async def test_webhooks_are_signed_batched_and_retried(
        hooked: LabServer, receiver: Receiver, app: PusherApp, raw_ws: Any) -> None:
    ws = await raw_ws(hooked.port, path=f"/app/{app.key}?protocol=7")
    socket_id = json.loads((await ws.recv_json())["data"])["socket_id"]
    member = json.dumps({"user_id": "ada", "user_info": {"name": "Ada"}})
    await ws.send_frame(OP_TEXT, json.dumps({"event": "pusher:subscribe", "data": {
        "channel": "presence-room", "channel_data": member,
        "auth": channel_auth(app, socket_id, "presence-room", member)}}).encode())
    await ws.recv_json()  # subscription_succeeded
    await ws.send_frame(OP_TEXT, json.dumps({"event": "client-wave", "channel": "presence-room",
                                             "data": {"hi": 1}}).encode())
    await wait_for(receiver, lambda ev: ("client_event", "presence-room") in names(ev))
    assert receiver.posts >= 2  # the first POST was answered 503 and sent again
    assert receiver.invalid == 0
    assert names(receiver.events)[:2] == [("channel_occupied", "presence-room"),
                                          ("member_added", "presence-room")]
    client_event = receiver.events[2]
    assert client_event["event"] == "client-wave" and json.loads(client_event["data"]) == {
        "hi": 1}
    assert client_event["socket_id"] == socket_id and client_event["user_id"] == "ada"
    ws.close()
    await wait_for(receiver, lambda ev: ("channel_vacated", "presence-room") in names(ev))
    assert ("member_removed", "presence-room") in names(receiver.events)
    assert hooked.pusher is not None and hooked.pusher.webhooks is not None
    assert hooked.pusher.webhooks.stats.failed_tries == 1


async def test_a_dead_receiver_never_blocks_the_hub(app: PusherApp, raw_ws: Any) -> None:
    sock = bind_sockets(0, "127.0.0.1")[0]  # bound, never accepting: POSTs hang
    dead = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    srv = await realtime_lab.serve(port=0, options=ServerOptions(
        pusher_apps=(app,), pusher_webhooks=(dead,)))
    try:
        assert srv.pusher is not None and srv.pusher.webhooks is not None
        srv.pusher.webhooks.timeout = 0.5
        for i in range(20):
            ws = await raw_ws(srv.port, path=f"/app/{app.key}?protocol=7")
            await ws.recv_json()
            await ws.send_frame(OP_TEXT, json.dumps({"event": "pusher:subscribe",
                                                     "data": {"channel": f"c{i}"}}).encode())
            assert (await ws.recv_json(timeout=2))["event"] == \
                "pusher_internal:subscription_succeeded"
    finally:
        await srv.stop()
        sock.close()
