"""A private channel token is bound to the session: the client asks for a new one on reconnect."""

from __future__ import annotations

import asyncio

import pytest

import realtime_lab
from realtime_lab import RequestFailed, ServerOptions, sign_channel_token
from realtime_lab.client import Backoff
from realtime_lab.testing import RestartableServer

SECRET = "chan-secret"
EAGER = Backoff(initial=0.01, max_delay=0.05, jitter="none")


@pytest.fixture
def lab_options() -> ServerOptions:
    return ServerOptions(heartbeat_interval=0.2, heartbeat_timeout=0.3, channel_secret=SECRET)


async def test_token_factory_resubscribes_private_channel_after_restart(
        lab: RestartableServer) -> None:
    issued: list[str] = []

    def token_for(session: str, channel: str) -> str:
        issued.append(session)
        return sign_channel_token(SECRET, session, channel, ttl=60)

    client = await realtime_lab.connect(lab.url, user="ada", reconnect=True, backoff=EAGER)
    try:
        with pytest.raises(RequestFailed) as info:
            await client.subscribe("private-a")
        assert info.value.code == "channel_unauthorized"
        await client.subscribe("private-a", auth=token_for)
        await lab.restart()
        async with asyncio.timeout(5):
            while client.reconnects == 0 or not lab.current.channels():
                await client.wait_open(5)
                await asyncio.sleep(0.01)
        assert len(issued) == 2 and issued[0] != issued[1]
        assert client.subscriptions == ["private-a"]
        assert lab.current.channels()[0]["name"] == "private-a"
    finally:
        await client.close()
