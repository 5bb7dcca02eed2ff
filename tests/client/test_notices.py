"""The client's own notices (a resubscribe refused after a reconnect) survive a full inbox."""

from __future__ import annotations

import asyncio

import pytest

import realtime_lab
from realtime_lab import ServerOptions, sign_channel_token
from realtime_lab.client import Backoff, ClientState
from realtime_lab.client.inbox import Inbox
from realtime_lab.testing import RestartableServer

SECRET = "chan-secret"
EAGER = Backoff(initial=0.01, max_delay=0.05, jitter="none")


@pytest.fixture
def lab_options() -> ServerOptions:
    return ServerOptions(heartbeat_interval=0.2, heartbeat_timeout=0.3, channel_secret=SECRET,
                         presence_channels=None)


async def test_refused_resubscribe_is_reported_even_when_the_inbox_is_full(
        lab: RestartableServer) -> None:
    client = await realtime_lab.connect(lab.url, user="ada", reconnect=True, backoff=EAGER,
                                        inbox_size=3)
    try:
        await client.subscribe("room")
        # a fixed token is bound to this session: after a reconnect it is refused
        token = sign_channel_token(SECRET, client.session or "", "private-a", ttl=60)
        await client.subscribe("private-a", auth=token)
        for n in range(3):
            await client.publish("room", n, ack=True)  # echoed to us: fills the inbox
        assert client._inbox.full()

        await lab.restart()
        async with asyncio.timeout(10):
            while client.reconnects == 0 or client.state is not ClientState.OPEN:
                await client.wait_open(10)
                await asyncio.sleep(0.01)
        assert client.subscriptions == ["room"]
        assert client._inbox.qsize() == 4, "the notice goes past the bound, it is not dropped"

        received = [await client.recv(2) for _ in range(4)]
        assert [m["data"] for m in received[:3]] == [0, 1, 2], "order is kept"
        notice = received[3]
        assert (notice["type"], notice["code"], notice["channel"]) == (
            "error", "channel_unauthorized", "private-a")
        assert "resubscribe to 'private-a' refused" in notice["message"]
    finally:
        await client.close()


async def test_inbox_put_waits_when_full_but_a_notice_does_not() -> None:
    inbox = Inbox(2)
    await inbox.put({"n": 1})
    inbox.put_nowait({"n": 2})
    assert inbox.full()
    with pytest.raises(asyncio.QueueFull):
        inbox.put_nowait({"n": 3})
    blocked = asyncio.create_task(inbox.put({"n": 3}))
    await asyncio.sleep(0)
    assert not blocked.done()
    inbox.put_notice({"notice": True})
    assert inbox.qsize() == 3
    assert await inbox.get() == {"n": 1}
    assert inbox.get_nowait() == {"n": 2}
    assert not blocked.done(), "still full: the notice counts"
    assert await inbox.get() == {"notice": True}
    await asyncio.wait_for(blocked, 1)
    assert inbox.get_nowait() == {"n": 3}
    assert inbox.empty()
    with pytest.raises(asyncio.QueueEmpty):
        inbox.get_nowait()
