"""A presence channel larger than the slow-consumer bound stays joinable (issue 13, point 4).

Real sockets on 127.0.0.1: a newcomer (the Python client, or a raw WebSocket) joins a
channel whose member list is larger than ``max_outbound_bytes``; before pages the
server closed it with 4100 before it could read, and the client retried forever.
The members themselves are a :class:`~realtime_lab.testing.SilentMembers` on the server's
hub (their own sockets are not what is tested; 1050 of them would only slow the
suite down).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

import realtime_lab
from realtime_lab import LabServer, RequestFailed, ServerOptions
from realtime_lab.client import Client
from realtime_lab.client.presence import PresenceView
from realtime_lab.testing import SilentMembers

META = {"bio": "x" * 990}  # 1000 bytes encoded


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        await client.close()


async def newcomer(server: LabServer, clients: list[Client], user: str = "newcomer") -> Client:
    client = await realtime_lab.connect(server.url, user=user)
    clients.append(client)
    return client


async def rebuilt(client: Client, server: LabServer, timeout: float = 30.0) -> None:
    """Wait until the client's rebuilt list equals the server's (bounded); fail at
    once if the server closed a connection as a slow consumer (4100) meanwhile."""
    async with asyncio.timeout(timeout):
        while client.presence.channels.get("room") != server.presence("room") \
                or client.presence.syncing("room"):
            assert server.hub.stats.slow_consumers == 0, "closed with 4100 (slow consumer)"
            await asyncio.sleep(0.01)  # polling a condition, bounded by the timeout


async def test_the_issue_reproduction_1050_members_of_1000_bytes_at_the_defaults(
        clients: list[Client]) -> None:
    """The defaults: 1050 members with 1000 bytes of metadata each (a member list of
    about 1.07 MB, above the 1 MiB outbound bound). Before pages the newcomer was
    closed with 4100 before it could read, and retried forever. Now the list
    reaches it in pages and its rebuilt list equals the server's; the channel's
    metadata bound (1 MiB) refused the last few members' metadata with
    presence_meta_full. (The defaults but one: since presence modes a channel of 1050
    members is in counts mode by default, with no list at all; full presence up to
    2000 members keeps this a test of the list.)"""
    server = await realtime_lab.serve(port=0, presence_full_limit=2000)
    try:
        members = SilentMembers(server.hub)
        members.fill([f"m{i:04d}" for i in range(1050)], META)
        size = len(json.dumps({"type": "presence_state", "channel": "room",
                               "members": server.presence("room")}, separators=(",", ":")))
        assert size > server.hub.options.max_outbound_bytes
        client = await newcomer(server, clients)
        await client.subscribe("room")
        async with asyncio.timeout(30):  # the list arrives, or the newcomer is closed
            while len(client.presence.members("room")) < 1051 \
                    and not server.hub.stats.slow_consumers:
                await asyncio.sleep(0.01)  # polling a condition, bounded by the timeout
        assert server.hub.stats.slow_consumers == 0, "the newcomer was closed with 4100"
        await rebuilt(client, server)
        assert client.reconnects == 0 and server.hub.presence_pager.pages >= 16
        refused = [u for u, code in members.refused.items() if code == "presence_meta_full"]
        assert len(refused) == len(members.refused) and 1 <= len(refused) <= 20
        channel = server.hub.channels["room"]
        assert channel.meta_bytes <= server.hub.options.max_presence_channel_meta_bytes
        assert all("meta" not in server.presence("room")[u] for u in refused)
    finally:
        await server.stop()


async def test_members_join_leave_and_change_while_pages_are_in_flight(
        clients: list[Client]) -> None:
    """A 900 KB list against a 256 KiB outbound bound (before pages: closed with
    4100): its pages (64 KiB, one per loop turn) are in flight for many turns; in
    each of them members leave, join, change state and metadata, and open tabs. The
    newcomer received diffs between its pages, and rebuilt the server's list. (Fewer
    subscribers than ``fanout_slice_min``, so every diff is queued at once, before
    the next page; tests/core/test_presence_pages.py has the sliced case. Diffs at
    once, no batch window: each turn's diffs go between the pages; batched diffs
    with pages in flight: tests/integration/test_presence_batch.py.)"""
    server = await realtime_lab.serve(port=0, max_outbound_bytes=256 * 1024,
                                      presence_batch_window=0, presence_full_limit=2000)
    try:
        room = SilentMembers(server.hub)
        room.fill([f"m{i:04d}" for i in range(900)], META)
        members = list(room.sessions.values())
        client = await newcomer(server, clients)
        session = server.hub.sessions[client.session or ""]
        await client.subscribe("room")
        pager = server.hub.presence_pager
        turns = 0
        while pager.in_progress(session, "room"):
            # all in one loop turn, with the list in flight: a listed member leaves (one
            # whose page went out, one whose page did not), one joins, one changes
            server.hub.closed(members.pop(len(members) // 2))
            server.hub.closed(members.pop(0))
            members.append(room.join(f"late{turns}", {"n": turns}))
            server.hub.set_presence(members[10], "room", state="away", meta={"turn": turns})
            room.join(f"m{500 + turns:04d}")  # a second tab of a listed member
            turns += 1
            await asyncio.sleep(0)  # one loop turn: the next page may go out
        await rebuilt(client, server)
        assert turns >= 7, "the pages were not in flight long enough to test anything"
        kinds = []
        async with asyncio.timeout(10):
            while not kinds or kinds[-1] != ("presence_page", False):
                msg = await client.recv()
                if msg["type"] == "presence_page":
                    kinds.append((msg["type"], msg["more"]))
                elif msg["type"] == "presence_diff":
                    kinds.append((msg["type"], None))
        assert kinds[0] == ("presence_page", True)
        assert ("presence_diff", None) in kinds[1:-1]  # diffs came between the pages
        assert server.hub.stats.slow_consumers == 0
    finally:
        await server.stop()


async def test_a_reader_that_stops_holds_at_most_two_pages_then_catches_up(
        raw_ws: Any) -> None:
    """Flow control on a real socket: a newcomer (a raw WebSocket; 4 KiB receive
    buffer, and 16 KiB of send buffer on the server's side of its socket, so the
    kernels do not swallow the list) that stops reading right after it subscribed to
    a 1 MB member list is not closed; the server stops at about two pages waiting
    for it (not the whole list queued), and once it reads again it gets it all."""
    server = await realtime_lab.serve(port=0, max_outbound_bytes=256 * 1024,
                                      max_presence_meta_bytes=32 * 1024)
    try:  # 50 members of 20 KB: pages (64 KiB) of three members
        SilentMembers(server.hub).fill([f"m{i:04d}" for i in range(50)], {"bio": "y" * 20_000})
        ws = await raw_ws(server.port, path="/ws?user=newcomer", rcvbuf=4096)
        await ws.recv_json()  # welcome
        session = next(s for s in server.hub.sessions.values() if s.user == "newcomer")
        sock = session.port.sock  # type: ignore[attr-defined]  # the SocketPump's socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
        await ws.send_json({"type": "subscribe", "channel": "room", "id": 1})
        async with asyncio.timeout(10):  # the server waits for the reader
            while not session.awaiting_drain:
                assert session.is_open, f"closed with {session.close_code}"
                await asyncio.sleep(0.01)  # polling a condition, bounded by the timeout
        held = session.pending_bytes + session.port.buffered_bytes()
        assert held <= 2 * 64 * 1024 + 4096, held  # about two pages, not the list
        sent_while_stopped = session.stats.bytes_out
        assert sent_while_stopped < 400_000  # of 1 MB: the list was not queued at once
        pager = server.hub.presence_pager
        assert pager.in_progress(session, "room")
        view = PresenceView()
        async with asyncio.timeout(30):
            while "room" not in view.channels:
                msg = await ws.recv_json()
                assert msg["type"] != "error", msg
                if msg["type"].startswith("presence_"):
                    view.apply(msg)
        assert view.channels["room"] == server.presence("room")
        assert server.hub.stats.slow_consumers == 0 and not pager.in_progress(session)
        assert session.stats.bytes_out > 1_000_000
    finally:
        await server.stop()


async def test_metadata_over_the_channel_bound_is_refused_and_the_channel_stays_joinable(
        clients: list[Client]) -> None:
    """The default bound (1 MiB, all members together): 16 members of 64 KB fill it
    (members may have that much with max_presence_meta_bytes=64 KiB); the 17th's
    metadata is refused with presence_meta_full, and the channel stays joinable."""
    server = await realtime_lab.serve(port=0, options=ServerOptions(
        max_presence_meta_bytes=64 * 1024))
    try:
        SilentMembers(server.hub).fill([f"m{i:02d}" for i in range(16)], {"bio": "w" * 65_000})
        ada = await newcomer(server, clients, "ada")
        await ada.subscribe("room")
        with pytest.raises(RequestFailed) as refused:
            await ada.set_presence("room", meta={"bio": "z" * 65_000})
        assert refused.value.code == "presence_meta_full"
        assert "max_presence_channel_meta_bytes" in str(refused.value)
        assert "meta" not in server.presence("room")["ada"]
        await ada.set_presence("room", meta={"bio": "short"})  # what fits is accepted
        assert server.presence("room")["ada"]["meta"] == {"bio": "short"}
        bob = await newcomer(server, clients, "bob")
        await bob.subscribe("room")
        await rebuilt(bob, server)
    finally:
        await server.stop()
