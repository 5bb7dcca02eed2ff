"""Presence modes over real sockets (issue 16 point 2; docs/presence.md, "Presence modes").

* counts mode: a Python client sees the exact count after joins and leaves, in
  ``presence_count`` messages at most one per ``presence_count_interval``, and no
  member list or diff ever;
* a full channel that passes its member limit falls back to counts: every
  subscriber gets one ``presence_mode`` and its list is dropped, no diff follows;
  the channel is full again once it was empty;
* ``over_limit="refuse"``: the join past the limit is refused with ``presence_full``
  (and ``max_presence_members`` in counts mode);
* hostile input: a ``presence`` update on a counts or off channel, a client sending
  the server's ``presence_count``: answered, nothing leaks;
* across nodes (an in-memory broker): the count is the cluster's.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from tornado.websocket import WebSocketClientConnection, websocket_connect

import realtime_lab
from realtime_lab import Client, LabServer, ServerOptions
from realtime_lab.broker import InMemoryBus
from realtime_lab.client.presence import PresenceView
from realtime_lab.core.authz import ChannelRule

PRESENCE_TYPES = ("presence_state", "presence_page", "presence_diff", "presence_count",
                  "presence_mode")


class Raw:
    """A raw WebSocket client that keeps every message and a PresenceView of them."""

    def __init__(self, ws: WebSocketClientConnection, user: str) -> None:
        self.ws = ws
        self.user = user
        self.view = PresenceView()
        self.got: list[dict[str, Any]] = []
        self.stamps: list[float] = []  # when each presence_count arrived

    @classmethod
    async def connect(cls, server: LabServer, user: str) -> Raw:
        ws = await websocket_connect(f"{server.url}?user={user}")
        msg = json.loads(await ws.read_message() or "{}")
        assert msg["type"] == "welcome"
        return cls(ws, user)

    def send(self, msg: dict[str, Any]) -> None:
        self.ws.write_message(json.dumps(msg))

    def kinds(self, channel: str) -> list[str]:
        return [m["type"] for m in self.got if m.get("channel") == channel]

    async def read_until(self, done: Callable[[Raw], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not done(self):
                text = await self.ws.read_message()
                if text is None:
                    raise AssertionError(f"{self.user}: the server closed the connection")
                msg = json.loads(text)
                self.got.append(msg)
                if msg["type"] == "presence_count":
                    self.stamps.append(time.monotonic())
                if msg["type"] in PRESENCE_TYPES:
                    self.view.apply(msg)

    async def subscribe(self, channel: str, rid: int = 1) -> dict[str, Any]:
        self.send({"type": "subscribe", "channel": channel, "id": rid})
        await self.read_until(lambda r: any(m.get("id") == rid for m in r.got))
        return next(m for m in self.got if m.get("id") == rid)


@pytest.fixture
async def start() -> AsyncIterator[Callable[..., Any]]:
    servers: list[LabServer] = []
    raws: list[Raw] = []
    clients: list[Client] = []

    async def make(**options: Any) -> LabServer:
        server = await realtime_lab.serve(port=0, options=ServerOptions(
            heartbeat_interval=600.0, heartbeat_timeout=600.0, **options))
        servers.append(server)
        return server

    make.raws = raws  # type: ignore[attr-defined]
    make.clients = clients  # type: ignore[attr-defined]
    yield make
    for client in clients:
        await client.close()
    for raw in raws:
        raw.ws.close()
    for server in servers:
        await server.stop()


async def _raw(start: Any, server: LabServer, user: str) -> Raw:
    raw = await Raw.connect(server, user)
    start.raws.append(raw)
    return raw


async def _until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


COUNTS_RULES = (ChannelRule("crowd-*", presence="counts"),)


async def test_counts_mode_gives_the_exact_count_throttled_and_no_member_list(start) -> None:
    interval = 0.3
    server = await start(channel_rules=COUNTS_RULES, presence_count_interval=interval)
    watcher = await realtime_lab.connect(server.url, user="watcher")
    start.clients.append(watcher)
    await watcher.subscribe("crowd-1")
    await _until(lambda: watcher.presence.count("crowd-1") == 1)
    assert watcher.presence.mode("crowd-1") == "counts"
    assert watcher.presence.channels.get("crowd-1") is None  # no member list

    spy = await _raw(start, server, "spy")
    await spy.subscribe("crowd-1")
    await spy.read_until(lambda r: r.view.count("crowd-1") == 2)
    assert spy.kinds("crowd-1")[:2] == ["subscribed", "presence_count"]

    n = 40  # a storm: every join at once
    crowd = [await _raw(start, server, f"u{i:02d}") for i in range(n)]
    t0, sent0 = time.monotonic(), server.hub.presence_modes.counts_sent
    for i, raw in enumerate(crowd):
        raw.send({"type": "subscribe", "channel": "crowd-1", "id": i})
    await spy.read_until(lambda r: r.view.count("crowd-1") == n + 2, timeout=20)
    await _until(lambda: watcher.presence.count("crowd-1") == n + 2, timeout=20)
    assert server.hub.channels["crowd-1"].presence_mode == "counts"
    assert len(server.presence("crowd-1")) == n + 2  # the server keeps the members
    # throttled: at most one count per interval (the first may come at once), counted
    # where they are sent (arrival times jitter on a busy machine)
    bound = 2 + (time.monotonic() - t0) / interval
    sent = server.hub.presence_modes.counts_sent - sent0
    assert 1 <= sent <= bound, (sent, bound)

    for raw in crowd[: n // 2]:  # half of them leave
        raw.ws.close()
    await spy.read_until(lambda r: r.view.count("crowd-1") == n // 2 + 2, timeout=20)
    await _until(lambda: watcher.presence.count("crowd-1") == n // 2 + 2, timeout=20)
    assert not {"presence_state", "presence_page", "presence_diff"} & set(spy.kinds("crowd-1"))
    # a newcomer's first count is exact at once
    late = await _raw(start, server, "late")
    await late.subscribe("crowd-1")
    await late.read_until(lambda r: r.view.count("crowd-1") is not None)
    assert late.view.count("crowd-1") == n // 2 + 3


async def test_a_full_channel_past_its_limit_falls_back_to_counts_and_says_so(start) -> None:
    limit = 5
    server = await start(channel_rules=(), presence_full_limit=limit,
                         presence_count_interval=0.1)
    first = [await _raw(start, server, f"m{i}") for i in range(limit)]
    for raw in first:
        await raw.subscribe("room")
    await first[0].read_until(lambda r: len(r.view.channels.get("room", {})) == limit)
    assert server.hub.channels["room"].presence_mode == "full"

    crosser = await _raw(start, server, "crosser")
    await crosser.subscribe("room")
    for raw in [*first, crosser]:
        await raw.read_until(lambda r: r.view.mode("room") == "counts")
        assert r_mode(raw) == {"type": "presence_mode", "channel": "room", "mode": "counts",
                               "count": limit + 1, "reason": "limit", "limit": limit}
        assert raw.view.channels.get("room") is None  # the list is dropped, not stale
        assert raw.view.count("room") == limit + 1
    watcher = first[0]
    more = [await _raw(start, server, f"x{i}") for i in range(3)]
    for raw in more:
        await raw.subscribe("room")
    await watcher.read_until(lambda r: r.view.count("room") == limit + 4)
    after = watcher.kinds("room")[watcher.kinds("room").index("presence_mode"):]
    assert set(after) <= {"presence_mode", "presence_count"}, after  # no diff after the switch
    # below the limit again: still counts (no flapping) while the channel lives
    for raw in [*more, crosser, *first[1:]]:
        raw.ws.close()
    await watcher.read_until(lambda r: r.view.count("room") == 1)
    assert server.hub.channels["room"].presence_mode == "counts"
    watcher.ws.close()
    await _until(lambda: "room" not in server.hub.channels)
    again = await _raw(start, server, "again")  # a new life of the channel: full
    await again.subscribe("room")
    await again.read_until(lambda r: r.view.channels.get("room") == {"again": {"connections": 1}})
    assert again.view.mode("room") == "full"


def c_session(server: LabServer, user: str) -> str:
    return next(s.id for s in server.hub.sessions.values() if s.user == user)


def r_mode(raw: Raw) -> dict[str, Any]:
    return next(m for m in raw.got if m["type"] == "presence_mode")


async def test_refuse_past_the_limit_answers_presence_full(start) -> None:
    rules = (ChannelRule("class-*", presence="full", presence_limit=2, over_limit="refuse"),
             ChannelRule("crowd-*", presence="counts"))
    server = await start(channel_rules=rules, max_presence_members=3)
    a, b, c = [await _raw(start, server, u) for u in "abc"]
    assert (await a.subscribe("class-1"))["type"] == "subscribed"
    assert (await b.subscribe("class-1"))["type"] == "subscribed"
    refused = await c.subscribe("class-1", rid=7)
    assert refused["type"] == "error" and refused["code"] == "presence_full"
    assert "presence_full_limit" in refused["message"]
    assert "class-1" not in server.hub.sessions[c_session(server, "c")].subscriptions
    assert len(server.presence("class-1")) == 2
    # a second tab of a member is not a new member: allowed
    a2 = await _raw(start, server, "a")
    assert (await a2.subscribe("class-1"))["type"] == "subscribed"
    # counts mode has no full-presence limit, only max_presence_members
    for raw in (a, b, c):
        assert (await raw.subscribe("crowd-1", rid=9))["type"] == "subscribed"
    d = await _raw(start, server, "d")
    refused = await d.subscribe("crowd-1", rid=3)
    assert refused["code"] == "presence_full" and "max_presence_members" in refused["message"]


async def test_hostile_presence_input_on_counts_and_off_channels(start) -> None:
    rules = (ChannelRule("crowd-*", presence="counts"), ChannelRule("quiet-*", presence="off"))
    server = await start(channel_rules=rules, presence_count_interval=0.05)
    a, b = await _raw(start, server, "a"), await _raw(start, server, "b")
    for raw in (a, b):
        await raw.subscribe("crowd-1")
        await raw.subscribe("quiet-1", rid=2)
    await a.read_until(lambda r: r.view.count("crowd-1") == 2)
    # a state change on a counts channel: kept by the server, replied, sent to nobody
    a.send({"type": "presence", "channel": "crowd-1", "state": "away", "id": 10})
    await a.read_until(lambda r: any(m.get("id") == 10 for m in r.got))
    reply = next(m for m in a.got if m.get("id") == 10)
    assert reply == {"type": "presence", "channel": "crowd-1", "id": 10, "changed": ["state"]}
    assert server.presence("crowd-1")["a"]["state"] == "away"
    a.send({"type": "presence", "channel": "quiet-1", "state": "busy", "id": 11})
    await a.read_until(lambda r: any(m.get("id") == 11 for m in r.got))
    assert next(m for m in a.got if m.get("id") == 11)["changed"] == []
    # the server's messages sent by a client: unknown types, each answered
    for rid, kind in ((12, "presence_count"), (13, "presence_mode")):
        a.send({"type": kind, "channel": "crowd-1", "count": -1, "id": rid})
        await a.read_until(lambda r, rid=rid: any(m.get("id") == rid for m in r.got))
        assert next(m for m in a.got if m.get("id") == rid)["code"] == "unknown_type"
    # a bad state or oversized meta on a counts channel: the usual codes
    a.send({"type": "presence", "channel": "crowd-1", "state": "flying", "id": 14})
    a.send({"type": "presence", "channel": "crowd-1", "meta": {"x": "y" * 5000}, "id": 15})
    await a.read_until(lambda r: any(m.get("id") == 15 for m in r.got))
    codes = {m["id"]: m.get("code") for m in a.got if m.get("id") in (14, 15)}
    assert codes == {14: "bad_presence_state", 15: "presence_meta_too_large"}
    b.send({"type": "ping", "id": 99})
    await b.read_until(lambda r: any(m.get("id") == 99 for m in r.got))
    assert not {"presence_state", "presence_diff", "presence_page"} & {
        m["type"] for m in b.got}
    assert b.view.count("crowd-1") == 2 and "quiet-1" not in b.kinds("quiet-1")[1:]
    assert b.kinds("quiet-1") == ["subscribed"]  # an off channel: no presence at all


async def test_counts_across_nodes_are_the_cluster_count() -> None:
    bus = InMemoryBus(node_ttl=0.6)
    options = ServerOptions(channel_rules=COUNTS_RULES, presence_count_interval=0.1)
    servers = [await realtime_lab.serve(broker=bus, options=options) for _ in range(2)]
    clients: list[Client] = []
    try:
        a, b = servers
        watcher = await realtime_lab.connect(a.url, user="watcher")
        clients.append(watcher)
        await watcher.subscribe("crowd-x")
        for i in range(6):
            client = await realtime_lab.connect(b.url, user=f"b{i}")
            clients.append(client)
            await client.subscribe("crowd-x")
        await _until(lambda: watcher.presence.count("crowd-x") == 7, timeout=10)
        assert clients[-1].presence.count("crowd-x") is not None
        for client in clients[1:4]:
            await client.close()
        await _until(lambda: watcher.presence.count("crowd-x") == 4, timeout=10)
        await _until(lambda: clients[-1].presence.count("crowd-x") == 4, timeout=10)
    finally:
        for client in clients:
            await client.close()
        for server in servers:
            await server.stop()
