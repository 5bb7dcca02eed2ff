"""Connect tokens: a refused token stops the client; a token provider renews each attempt."""

from __future__ import annotations

import asyncio

import pytest

import realtime_lab
from realtime_lab import ConnectionClosed, ServerOptions
from realtime_lab.client import Backoff, Client, ClientState
from realtime_lab.core.security import make_token
from realtime_lab.testing import FaultProxy, RestartableServer

SECRET = "test-secret"
EAGER = Backoff(initial=0.01, max_delay=0.01, jitter="none")  # would hammer if it retried

@pytest.fixture
def lab_options() -> ServerOptions:
    return ServerOptions(heartbeat_interval=0.2, heartbeat_timeout=0.3, token_secret=SECRET)



async def test_missing_token_4001_stops_without_retry(
        lab: RestartableServer, proxy: FaultProxy) -> None:
    client = Client(proxy.url(), user="ada", reconnect=True, backoff=EAGER)
    with pytest.raises(ConnectionClosed) as info:
        await client.connect(timeout=2)
    assert info.value.code == 4001
    assert client.history[-1].state is ClientState.CLOSED and client.history[-1].code == 4001
    assert await attempts_after(proxy) == 1


async def test_token_provider_is_asked_again_for_each_reconnection(
        lab: RestartableServer) -> None:
    issued: list[str] = []

    async def fresh_token() -> str:
        issued.append(make_token(SECRET, "ada", ttl=60))
        return issued[-1]

    client = await realtime_lab.connect(lab.url, user="ada", token=fresh_token,
                                        reconnect=True, backoff=EAGER)
    try:
        await client.subscribe("room")
        await lab.restart()
        while client.reconnects == 0:
            await client.wait_open(5)
            await asyncio.sleep(0.01)
        assert len(issued) >= 2 and client.subscriptions == ["room"]
        assert lab.current.channels()[0]["subscribers"] == 1
    finally:
        await client.close()


async def attempts_after(proxy: FaultProxy, settle: float = 0.3) -> int:
    await asyncio.sleep(settle)
    return proxy.accepted
