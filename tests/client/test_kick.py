"""A channel the server removes the client from (``hub.kick``) is forgotten, not resubscribed.

The server sends ``{"type":"unsubscribed","channel":...,"reason":"kicked"}`` without
an ``id`` (docs/presence.md). The Python client, like the browser client, drops the
channel, its presence view, its recovery position and the presence it set, hands
the notice to ``recv()``, and does not subscribe again after a reconnect.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import realtime_lab
from realtime_lab import ServerOptions
from realtime_lab.client import Backoff, Client, ClientState
from realtime_lab.core.history import HistoryRule
from realtime_lab.testing import FaultProxy, RestartableServer

EAGER = Backoff(initial=0.01, max_delay=0.05, jitter="none")


@pytest.fixture
def lab_options() -> ServerOptions:
    return ServerOptions(heartbeat_interval=0.2, heartbeat_timeout=0.3,
                         max_outbound_bytes=64 * 1024 * 1024,
                         history=(HistoryRule("room", size=1000, ttl=60),))


async def next_of(client: Client, mtype: str, timeout: float = 5.0) -> dict[str, Any]:
    """The next message of type ``mtype`` (others are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await client.recv()
            if msg["type"] == mtype:
                return msg


async def reopened(client: Client, reconnects: int, timeout: float = 10.0) -> None:
    """Wait until the client is OPEN again after reconnection number ``reconnects``."""
    async with asyncio.timeout(timeout):
        while client.reconnects < reconnects or client.state is not ClientState.OPEN:
            await client.wait_open(timeout)
            await asyncio.sleep(0.01)


def subscribed_at(lab: RestartableServer, channel: str, session: str | None) -> bool:
    chan = lab.current.hub.channels.get(channel)
    return chan is not None and session in chan.subscribers


async def test_kicked_channel_is_forgotten_and_not_resubscribed_after_a_restart(
        lab: RestartableServer) -> None:
    ada = await realtime_lab.connect(lab.url, user="ada", reconnect=True, backoff=EAGER)
    bob = await realtime_lab.connect(lab.url, user="bob")
    try:
        await ada.subscribe("room")
        await ada.subscribe("lobby")
        await ada.set_presence("room", state="away")
        await bob.subscribe("room")
        await bob.publish("room", "before", ack=True)
        assert (await ada.recv_message("room", 5))["data"] == "before"
        async with asyncio.timeout(5):
            while ada.presence.members("room") != ["ada", "bob"]:
                await ada.recv()
        assert "room" in ada.positions and ada._presence_restore.wanted

        assert lab.current.hub.kick("room", "ada") == 1
        notice = await next_of(ada, "unsubscribed")
        assert notice == {"type": "unsubscribed", "channel": "room", "reason": "kicked"}
        assert ada.subscriptions == ["lobby"]
        assert "room" not in ada.presence.channels
        assert "room" not in ada.positions
        assert "room" not in ada._presence_restore.wanted
        assert ada.state is ClientState.OPEN, "a kick does not close the connection"

        await lab.restart()
        await reopened(ada, 1)
        assert ada.subscriptions == ["lobby"]
        assert subscribed_at(lab, "lobby", ada.session)
        assert not subscribed_at(lab, "room", ada.session), "the kicked channel came back"
        assert "room" not in ada.presence.channels
        # a message to room on the new server does not reach ada; one to lobby does
        lab.current.publish("room", "after")
        lab.current.publish("lobby", "marker")
        msg = await ada.recv_message(timeout=5)
        assert (msg["channel"], msg["data"]) == ("lobby", "marker")
    finally:
        await ada.close()
        await bob.close()


async def test_subscribing_again_after_a_kick_is_remembered(lab: RestartableServer) -> None:
    ada = await realtime_lab.connect(lab.url, user="ada", reconnect=True, backoff=EAGER)
    try:
        await ada.subscribe("room")
        lab.current.hub.kick("room", "ada")
        await next_of(ada, "unsubscribed")
        assert ada.subscriptions == []
        await ada.subscribe("room")
        assert ada.subscriptions == ["room"]
        lab.current.publish("room", 1)
        assert (await ada.recv_message("room", 5))["offset"] is not None
        assert "room" in ada.positions, "positions are tracked again"
        await lab.restart()
        await reopened(ada, 1)
        assert subscribed_at(lab, "room", ada.session)
    finally:
        await ada.close()


async def test_a_kick_right_after_the_subscribed_reply_wins(lab: RestartableServer) -> None:
    """The server kicks as soon as it subscribed us: reply and notice arrive together.

    The reader marks the channel wanted when it reads the reply, before it reads the
    notice; ``subscribe()`` resuming afterwards must not want the channel again.
    """
    hub = lab.current.hub
    loop = asyncio.get_running_loop()

    def kick_now(event: Any) -> None:
        if event.user == "ada" and event.channel == "room":
            loop.call_soon(hub.kick, "room", "ada")  # right after the subscribe is handled

    lab.current.on("channel.subscribed", kick_now)
    ada = await realtime_lab.connect(lab.url, user="ada", reconnect=True, backoff=EAGER)
    try:
        reply = await ada.subscribe("room")
        assert reply["type"] == "subscribed"
        await next_of(ada, "unsubscribed")
        assert ada.subscriptions == []
        assert "room" not in ada.presence.channels and "room" not in ada.positions
        await lab.restart()
        await reopened(ada, 1)
        assert not subscribed_at(lab, "room", ada.session)
    finally:
        await ada.close()


# ada reads 12 MB through an inbox of 2: on a busy machine that takes longer than the
# module's 0.3 s heartbeat timeout, and the server would close her for not answering
# a ping stuck behind the backlog. This test needs no fast heartbeat: the default one.
# presence diffs at once (no batch window): the diff queued in the same turn as the kick
# is the straggler to test (a batched one goes out at the window's end, to members only)
BACKED_UP = ServerOptions(max_outbound_bytes=64 * 1024 * 1024, presence_batch_window=0,
                          history=(HistoryRule("room", size=1000, ttl=60),))


@pytest.mark.parametrize("lab_options", [BACKED_UP], ids=["default-heartbeat"])
async def test_messages_queued_before_the_kick_are_not_tracked(lab: RestartableServer) -> None:
    """The notice is control priority: on a backed-up connection it overtakes channel
    messages and presence diffs already queued. Those still reach ``recv()`` but revive
    no position and no presence list."""
    ada = await realtime_lab.connect(lab.url, user="ada", reconnect=True, backoff=EAGER,
                                     inbox_size=2)
    try:
        await ada.subscribe("room")
        session = lab.current.hub.sessions[ada.session or ""]
        blob = "x" * 60_000
        for n in range(200):  # 12 MB: more than the socket buffers while ada does not read
            lab.current.publish("room", {"n": n, "blob": blob})
        # a presence diff (high priority) queued in the same turn, also overtaken
        assert lab.current.hub.set_member("room", "ada", state="busy") == ["state"]
        assert session.pending, "the frames wait in the server's queue (same loop turn)"
        assert lab.current.hub.kick("room", "ada") == 1
        got: list[str] = []
        async with asyncio.timeout(60):  # bounds a hang; 2 s on a quiet machine
            while "unsubscribed" not in got or got.count("message") < 200 \
                    or "presence_diff" not in got:
                got.append((await ada.recv())["type"])
        after = got[got.index("unsubscribed"):]
        assert after.count("message") > 0, f"the notice did not overtake queued messages: {got}"
        assert "presence_diff" in after, f"the notice did not overtake the diff: {got}"
        assert ada.subscriptions == []
        assert "room" not in ada.positions, "a straggler revived the recovery position"
        assert "room" not in ada.presence.channels
    finally:
        await ada.close()


async def test_unsubscribed_while_its_resubscribe_is_in_flight_is_left_at_the_server(
        lab: RestartableServer) -> None:
    """``unsubscribe()`` while reconnecting only forgets the channel locally; if the
    resubscribe had already reached the server, the restore unsubscribes it there."""
    async with FaultProxy(lab.port) as proxy:
        ada = await realtime_lab.connect(proxy.url(), user="ada", reconnect=True,
                                         backoff=EAGER)
        try:
            await ada.subscribe("room")
            await ada.subscribe("lobby")
            proxy.refuse = True
            await lab.restart()
            unsubscribed: list[asyncio.Future[Any]] = []
            states: list[ClientState] = []

            def unsubscribe_now(event: Any) -> None:
                # the server took the resubscribe; its reply is still in the slow proxy
                if event.channel == "room" and not unsubscribed:
                    states.append(ada.state)
                    unsubscribed.append(asyncio.ensure_future(ada.unsubscribe("room")))

            lab.current.on("channel.subscribed", unsubscribe_now)
            proxy.delay = 0.2
            proxy.refuse = False
            await reopened(ada, 1)
            assert states == [ClientState.CONNECTING], "not unsubscribed during the restore"
            await asyncio.wait_for(unsubscribed[0], 5)
            assert ada.subscriptions == ["lobby"]
            assert subscribed_at(lab, "lobby", ada.session)
            assert not subscribed_at(lab, "room", ada.session), "left subscribed at the server"
        finally:
            await ada.close()
