"""Batched presence diffs over real sockets (issue 16 points 1 and 5).

* 2,000 clients join one presence channel at once (their lists in pages while the
  joins go on) and every client's member list, rebuilt with PresenceView from what
  it received, equals the server's; then a tenth of them leave at once, and the
  lists are exact again.
* A join followed by a leave inside one window reaches nobody (no phantom member),
  except a client whose member list listed it meanwhile: it gets the leave.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tornado.websocket import WebSocketClientConnection, websocket_connect

import realtime_lab
from realtime_lab import LabServer, ServerOptions
from realtime_lab.client.presence import PresenceView

ROOM = "room"
SUBSCRIBE = json.dumps({"type": "subscribe", "channel": ROOM})


class Member:
    """A raw WebSocket client that rebuilds the room's list from what it receives."""

    def __init__(self, ws: WebSocketClientConnection, user: str) -> None:
        self.ws = ws
        self.user = user
        self.view = PresenceView()
        self.diffs: list[dict[str, Any]] = []
        self.frames = 0
        self.ever: set[str] = set()  # every user its list ever had

    @classmethod
    async def connect(cls, server: LabServer, user: str) -> Member:
        ws = await websocket_connect(f"{server.url}?user={user}",
                                     max_message_size=16 * 1024 * 1024)
        msg = json.loads(await ws.read_message() or "{}")
        assert msg["type"] == "welcome"
        return cls(ws, user)

    def members(self) -> dict[str, Any] | None:
        return None if self.view.syncing(ROOM) else self.view.channels.get(ROOM)

    async def read_until(self, done: Any) -> None:
        """Read until ``done(self)``; the caller bounds the wait."""
        while not done(self):
            text = await self.ws.read_message()
            if text is None:
                raise AssertionError(f"{self.user}: the server closed the connection")
            msg = json.loads(text)
            if msg["type"] in ("presence_state", "presence_page", "presence_diff"):
                self.frames += 1
                if msg["type"] == "presence_diff":
                    self.diffs.append(msg)
                self.view.apply(msg)
                self.ever.update(self.view.channels.get(ROOM, ()))


@pytest.fixture
async def server_factory() -> AsyncIterator[Any]:
    servers: list[LabServer] = []

    async def start(**options: Any) -> LabServer:
        server = await realtime_lab.serve(port=0, options=ServerOptions(
            channel_rules=(), heartbeat_interval=600.0, heartbeat_timeout=600.0, **options))
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


def _enough_descriptors(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


@pytest.mark.slow
@pytest.mark.timeout(600)  # 155 s at load 10 with both cores burned; 40-60 s quiet
async def test_2000_clients_join_one_presence_channel_and_every_list_is_exact(
        server_factory: Any) -> None:
    n = 2000
    _enough_descriptors(2 * n + 200)
    # pages of 16 KiB: the newcomers' lists come in pages while the merged diffs flow
    server = await server_factory(presence_page_bytes=16 * 1024, presence_full_limit=n)
    members = []
    try:
        for i in range(n):  # connected first; then everyone subscribes at once
            members.append(await Member.connect(server, f"u{i:04d}"))
        t0 = time.perf_counter()
        for m in members:
            m.ws.write_message(SUBSCRIBE)

        def whole(m: Member) -> bool:
            got = m.members()
            return got is not None and len(got) == n

        async with asyncio.timeout(480):
            await asyncio.gather(*(m.read_until(whole) for m in members))
            while server.hub.presence_batch.pending:  # the last window's diff, if any
                await asyncio.sleep(server.options.presence_batch_window)
            await asyncio.gather(*(m.read_until(lambda m: m.members() == server.hub.presence(
                ROOM)) for m in members))
        elapsed = time.perf_counter() - t0
        truth = server.hub.presence(ROOM)
        assert len(truth) == n and all(m.members() == truth for m in members)
        frames = sum(m.frames for m in members)
        # at once this storm is n*(n-1)/2 = 1,999,000 diffs; batched, each member gets at
        # most one diff per window (plus its list)
        assert frames < n * (n - 1) // 20, frames
        assert server.hub.presence_pager.pages > 0, "the lists did not come in pages"
        print(f"\n2000 joins: every list exact after {elapsed:.1f} s, {frames} presence "
              f"frames received, {server.hub.presence_batch.stats.windows} windows")

        # a tenth leave at once: the others' lists are exact again
        leaving, staying = members[:n // 10], members[n // 10:]
        for m in leaving:
            m.ws.close()
        async with asyncio.timeout(120):
            while len(server.hub.presence(ROOM)) > n - n // 10 or \
                    server.hub.presence_batch.pending:
                await asyncio.sleep(server.options.presence_batch_window)
            truth = server.hub.presence(ROOM)
            await asyncio.gather(*(m.read_until(lambda m: m.members() == truth)
                                   for m in staying))
    finally:
        for m in members:
            m.ws.close()


async def test_a_join_then_a_leave_inside_one_window_leaves_no_phantom_member(
        server_factory: Any) -> None:
    """``blip`` subscribes and closes within one window: ``early`` (subscribed
    before) never hears of it; ``late`` subscribed between the two, so its
    presence_state listed blip: it gets the leave, and only that. Both lists end
    exact."""
    window = 3.0  # long: the join and the leave fall in one window even on a busy machine
    server = await server_factory(presence_batch_window=window)
    left = asyncio.Event()
    server.on("presence.leave", lambda e: e.user == "blip" and left.set())
    early = await Member.connect(server, "early")
    early.ws.write_message(SUBSCRIBE)
    async with asyncio.timeout(10):
        await early.read_until(lambda m: m.members() == {"early": {"connections": 1}})
    async with asyncio.timeout(window + 10):  # early's own join goes out first
        while server.hub.presence_batch.pending:
            await asyncio.sleep(0.05)
    windows = server.hub.presence_batch.stats.windows
    blip = await Member.connect(server, "blip")
    blip.ws.write_message(SUBSCRIBE)
    async with asyncio.timeout(10):
        await blip.read_until(lambda m: m.members() is not None)
    late = await Member.connect(server, "late")
    late.ws.write_message(SUBSCRIBE)
    async with asyncio.timeout(10):
        await late.read_until(lambda m: m.members() is not None)
    assert "blip" in (late.members() or {})
    blip.ws.close()
    async with asyncio.timeout(10):
        await left.wait()
    assert server.hub.presence_batch.stats.windows == windows, "not one window: see docstring"
    truth = {"early": {"connections": 1}, "late": {"connections": 1}}
    async with asyncio.timeout(window + 10):
        await asyncio.gather(early.read_until(lambda m: m.members() == truth),
                             late.read_until(lambda m: m.members() == truth))
    # early (listed before the window): the merged diff, late's join, nothing of blip;
    # late (listed in the window, after its own join and blip's): only what changed
    # after its list, blip's leave (its list had blip); no echo of its own join
    joined = {"type": "presence_diff", "channel": ROOM, "joins": {"late": {"connections": 1}},
              "leaves": {}}
    gone = {"type": "presence_diff", "channel": ROOM, "joins": {},
            "leaves": {"blip": {"connections": 0, "reason": "closed"}}}
    assert late.diffs == [gone] and early.diffs == [joined]  # no echo of early's own join
    assert "blip" not in early.ever and "blip" in late.ever
    for m in (early, late):
        m.ws.close()
